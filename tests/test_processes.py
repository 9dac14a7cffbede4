"""What a user relies on across processes: real subprocesses on one SQLite file.

The flows and the subprocesses' entry points are in ``tests/procs.py``. Steps
append fsync'd lines to a side-effect log, so each test counts exactly how many
times each step ran, and in which process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FlowBusyError,
    FlowClosedError,
    cancel_flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parent.parent

#: Process B of the signal test: it knows the flow's id and the store, not its code.
SIGNAL_ONLY = """
import json, sys
from crux_gen import default_registry, signal_flow
from crux_gen.stores.sqlite import SQLiteStore
signal_flow(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), store=SQLiteStore(sys.argv[1]))
print(json.dumps({"registered": default_registry.names(), "modules": sorted(
    m for m in sys.modules if m.startswith("tests"))}))
"""

#: A webhook process that forgot to import the flow's module.
RESUME_WITHOUT_CODE = """
import json, sys
from crux_gen import FlowNotRegisteredError, resume
from crux_gen.stores.sqlite import SQLiteStore
try:
    resume(sys.argv[2], store=SQLiteStore(sys.argv[1]))
except FlowNotRegisteredError as exc:
    print(json.dumps({"error": "FlowNotRegisteredError", "name": exc.name}))
"""


# -- helpers ------------------------------------------------------------------------


class Procs:
    """Starts subprocesses in the repository root; kills any left at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = str(tmp / "crux.db")
        self.log = str(tmp / "effects.log")
        self.started: list[subprocess.Popen[str]] = []

    def spawn(
        self,
        *args: str,
        sleep: dict[str, float] | None = None,
        gate: dict[str, str] | None = None,
        code: str | None = None,
    ) -> subprocess.Popen[str]:
        """``python -m tests.procs ARGS`` (or ``python -c CODE ARGS``) on this test's db
        (*sleep* and *gate*: ``CRUX_TEST_SLEEP`` and ``CRUX_TEST_GATE`` of procs.py)."""
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CRUX_TEST_SLEEP": json.dumps(sleep or {}),
            "CRUX_TEST_GATE": json.dumps(gate or {}),
        }
        head = ["-c", code] if code is not None else ["-m", "tests.procs", args[0]]
        rest = args if code is not None else args[1:]
        proc = subprocess.Popen(
            [sys.executable, *head, self.db, *rest],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 20) -> list[dict[str, Any]]:
        """Wait for *proc* to exit 0; the JSON lines it printed."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{proc.args} did not exit within {timeout} s; stderr:\n{err}")
        assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}; stderr:\n{err}"
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def run(self, *args: str, **kw: Any) -> list[dict[str, Any]]:
        return self.finish(self.spawn(*args, **kw))

    def effects(self) -> list[tuple[int, str, str, str]]:
        """The side-effect log: (pid, flow id, step, "start" | "done") per line."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            rows = [line.split() for line in f]
        return [(int(pid), fid, step, phase) for _, pid, fid, step, phase in rows]

    def race(self, n: int, *args: str, **kw: Any) -> list[dict[str, Any]]:
        """Start *n* processes, wait till all stand at the start line, then let them
        all go at once; the first line each printed."""
        ready, go = self.tmp / "ready", self.tmp / "go"
        ready.mkdir()
        racers = [self.spawn(*args, "--ready", str(ready), "--go", str(go), **kw) for _ in range(n)]
        wait_for(lambda: len(list(ready.iterdir())) == n, f"{n} processes at the start line")
        go.touch()
        return [self.finish(p)[0] for p in racers]

    def first_time(self, flow_id: str, step: str) -> float:
        """When *step* of *flow_id* first started (the clock of the process that ran it)."""
        with open(self.log) as f:
            rows = [line.split() for line in f]
        return min(float(t) for t, _, fid, s, _ in rows if fid == flow_id and s == step)

    def step_times(self, flow_id: str, phase: str = "done") -> Counter[str]:
        """How many times each step of *flow_id* reached *phase*."""
        return Counter(s for _, f, s, p in self.effects() if f == flow_id and p == phase)

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.communicate()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.cleanup()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll *check* every 10 ms until it is truthy; fail naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def lease_expired(store: SQLiteStore, flow_id: str) -> bool:
    expires = store.load(flow_id).lease_expires
    return expires is None or expires < time.time()


def is_stopped(pid: int) -> bool:
    """True once every thread of *pid* is stopped (``kill`` only queues the signal)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.exists():  # no procfs: give the signal a moment
        time.sleep(0.05)
        return True
    states = []
    for task in tasks.iterdir():
        with open(task / "stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return all(state in "tT" for state in states)


def stop_outside_a_write(proc: subprocess.Popen[str], db: str) -> None:
    """SIGSTOP *proc*, at a moment it holds no write lock on *db* (its lease keeper
    might be renewing), so that others can go on writing while it is frozen."""
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        for _ in range(100):
            os.kill(proc.pid, signal.SIGSTOP)
            wait_for(lambda: is_stopped(proc.pid), "the process to stop", 5)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:  # frozen mid-write: let it finish, try again
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.005)
        pytest.fail("could not stop the process outside a write transaction")
    finally:
        probe.close()


# -- tests --------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["resume", "run"])
def test_a_flow_started_in_one_process_is_signalled_from_another_and_resumed_in_a_third(
    procs: Procs, via: str
) -> None:
    [started] = procs.run("start", "--flow", "onboarding", "--log", procs.log)
    assert started["outcome"] == "suspended"
    assert started["waiting_for"] == "email-verified"
    flow_id = started["flow_id"]

    [signalled] = procs.run(
        flow_id, "email-verified", json.dumps({"verified_at": "2026-11-24T10:00:00Z"}),
        code=SIGNAL_ONLY,
    )  # fmt: skip
    assert signalled == {"registered": [], "modules": []}  # it never saw the flow's code

    [resumed] = procs.run("resume", flow_id, "--via", via, "--name", "xproc-onboarding")
    assert resumed["outcome"] == "completed"
    assert resumed["value"] == {
        "structured": True,  # the payload reached the flow as an EmailVerified
        "verified_at": "2026-11-24T10:00:00Z",
        "ran_by": [resumed["pid"], resumed["pid"]],
    }
    steps = ["send-welcome", "first-week-plan", "schedule-checkins"]
    assert procs.step_times(flow_id, "start") == dict.fromkeys(steps, 1)
    assert procs.step_times(flow_id, "done") == dict.fromkeys(steps, 1)
    assert [(pid, step) for pid, _, step, phase in procs.effects() if phase == "done"] == [
        (started["pid"], "send-welcome"),
        (resumed["pid"], "first-week-plan"),
        (resumed["pid"], "schedule-checkins"),
    ]
    info = get_flow(flow_id, store=SQLiteStore(procs.db))
    assert [s.state for s in info.signals] == ["consumed"]


def test_a_resume_from_a_process_without_the_flows_code_leaves_the_flow_waiting(
    procs: Procs,
) -> None:
    [started] = procs.run("start", "--flow", "onboarding", "--log", procs.log)
    flow_id = started["flow_id"]
    store = SQLiteStore(procs.db)
    before = get_flow(flow_id, store=store)

    [failed] = procs.run(flow_id, code=RESUME_WITHOUT_CODE)

    assert failed == {"error": "FlowNotRegisteredError", "name": "xproc-onboarding"}
    after = get_flow(flow_id, store=store)
    assert (after.status, after.waiting_for, after.wake_at, after.deadline) == (
        "suspended", "email-verified", before.wake_at, before.deadline,
    )  # fmt: skip
    assert after.deadline is not None  # the 24 h timeout still counts from the first run
    assert after.history == before.history
    signal_flow(flow_id, "email-verified", {"verified_at": "now"}, store=store)
    [resumed] = procs.run("resume", flow_id)
    assert resumed["outcome"] == "completed"
    assert procs.step_times(flow_id, "start")["send-welcome"] == 1


def test_a_step_killed_midway_runs_again_and_the_steps_before_it_do_not(
    procs: Procs,
) -> None:
    flow_id = "killed-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "4", "--flow-id", flow_id, "--lease-ttl", "1s",
        sleep={"step-3": 60},
    )  # fmt: skip
    wait_for(lambda: procs.step_times(flow_id, "start")["step-3"], "step-3 to start")
    os.kill(a.pid, signal.SIGKILL)
    a.communicate(timeout=10)
    assert a.returncode == -signal.SIGKILL

    store = SQLiteStore(procs.db, lease_ttl="1s")
    assert not lease_expired(store, flow_id), "the dead runner's lease should still be live"
    with pytest.raises(FlowBusyError):
        resume(flow_id, store=store)

    wait_for(lambda: lease_expired(store, flow_id), "the dead runner's lease to expire", 5)
    [resumed] = procs.run("resume", flow_id, "--lease-ttl", "1s")
    assert resumed["outcome"] == "completed"
    assert [r["pid"] for r in resumed["value"]] == [a.pid, a.pid, resumed["pid"], resumed["pid"]]
    once = {"step-1": 1, "step-2": 1, "step-3": 1, "step-4": 1}
    assert procs.step_times(flow_id, "start") == {**once, "step-3": 2}  # killed, then again
    assert procs.step_times(flow_id, "done") == once


def test_of_six_processes_resuming_one_flow_at_once_exactly_one_runs_it(procs: Procs) -> None:
    flow_id = "race-1"
    [started] = procs.run(
        "start", "--log", procs.log, "--steps", "4", "--wait-at", "2", "--flow-id", flow_id
    )
    assert started["outcome"] == "suspended"
    signal_flow(flow_id, "go", {"n": 1}, store=SQLiteStore(procs.db))

    slow = {"step-2": 0.2, "step-3": 0.2, "step-4": 0.2}
    outcomes = procs.race(6, "resume", flow_id, sleep=slow)

    assert sorted(o["outcome"] for o in outcomes) == ["busy"] * 5 + ["completed"]
    [winner] = [o for o in outcomes if o["outcome"] == "completed"]
    # The losers are told at once, not after waiting for the winner's run.
    assert max(o["t"] for o in outcomes if o["outcome"] == "busy") < winner["t"] - 0.3
    assert procs.step_times(flow_id, "start") == dict.fromkeys(
        ["step-1", "step-2", "step-3", "step-4"], 1
    )
    assert {pid for pid, _, step, _ in procs.effects() if step != "step-1"} == {winner["pid"]}
    assert get_flow(flow_id, store=SQLiteStore(procs.db)).status == "completed"


def test_processes_starting_one_flow_id_at_once_start_it_only_once(procs: Procs) -> None:
    flow_id = "order-1234"  # say, an idempotency key from a webhook delivered four times
    slow = {"step-1": 0.2, "step-2": 0.2}
    outcomes = procs.race(
        4, "start", "--log", procs.log, "--steps", "2", "--flow-id", flow_id, sleep=slow
    )

    assert sorted(o["outcome"] for o in outcomes) == ["busy"] * 3 + ["completed"]
    [winner] = [o for o in outcomes if o["outcome"] == "completed"]
    assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1}
    assert {pid for pid, _, _, _ in procs.effects()} == {winner["pid"]}
    store = SQLiteStore(procs.db)
    assert [f.id for f in store.list_flows()] == [flow_id]


def test_threads_sharing_one_store_each_run_their_own_flow(procs: Procs) -> None:
    started = procs.run(
        "start", "--log", procs.log, "--steps", "3", "--wait-at", "2", "--count", "8"
    )
    assert [s["outcome"] for s in started] == ["suspended"] * 8
    flow_ids = [s["flow_id"] for s in started]

    outcomes = procs.run("threads", *flow_ids, sleep={"step-2": 0.05, "step-3": 0.05})

    assert {o["flow_id"]: o["outcome"] for o in outcomes} == dict.fromkeys(flow_ids, "completed")
    steps = ["step-1", "step-2", "step-3"]
    for flow_id in flow_ids:
        assert procs.step_times(flow_id, "start") == dict.fromkeys(steps, 1), flow_id
        assert procs.step_times(flow_id, "done") == dict.fromkeys(steps, 1), flow_id
    store = SQLiteStore(procs.db)
    for flow_id in flow_ids:
        info = get_flow(flow_id, store=store)
        assert info.status == "completed"
        assert [h.name for h in info.history] == ["step-1", "go", "step-2", "step-3"]


def test_a_store_keeps_working_in_forked_children_and_in_the_parent_after_them(
    procs: Procs,
) -> None:
    lines = procs.run("fork", "--log", procs.log, "--children", "3")

    parent = [line for line in lines if line["who"] == "parent"]
    children = sorted((c for c in lines if c["who"] == "child"), key=lambda c: c["flow_id"])
    assert parent == [
        {"who": "parent", "flow_id": "parent-before", "outcome": "suspended"},
        {"who": "parent", "flow_id": "parent-during", "outcome": "completed"},
        {"who": "parent", "children": [0, 0, 0]},
        {"who": "parent", "flow_id": "parent-before", "outcome": "completed"},
        {"who": "parent", "flow_id": "parent-after", "outcome": "completed"},
    ]
    assert [(c["flow_id"], c["started"], c["outcome"]) for c in children] == [
        (f"child-{n}", "suspended", "completed") for n in range(3)
    ]
    store = SQLiteStore(procs.db)
    flows = ["parent-before", "child-0", "child-1", "child-2"]
    for flow_id in flows:
        assert get_flow(flow_id, store=store).status == "completed"
        assert procs.step_times(flow_id, "start") == dict.fromkeys(
            ["step-1", "step-2", "step-3"], 1
        ), flow_id
    for flow_id in ["parent-during", "parent-after"]:
        assert get_flow(flow_id, store=store).status == "completed"
        assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1}, flow_id
    # Each child ran its flow in its own process, not in the parent's.
    pids = {fid: {pid for pid, f, _, _ in procs.effects() if f == fid} for fid in flows}
    assert len({frozenset(p) for p in pids.values()}) == 4


def test_a_step_longer_than_the_lease_keeps_the_flow_from_other_runners(procs: Procs) -> None:
    flow_id = "renewed-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--flow-id", flow_id, "--lease-ttl", "1s",
        sleep={"step-2": 6},
    )  # fmt: skip
    wait_for(lambda: procs.step_times(flow_id, "start")["step-2"], "step-2 to start")
    step_started = procs.first_time(flow_id, "step-2")
    # (6 s: B's own start-up took over 3 s on 2 busy cores, and B must try while A's
    # step still runs, more than 2 s in.)
    b = procs.spawn("keep-resuming", flow_id, "--lease-ttl", "1s")

    [ran] = procs.finish(a)
    tries = procs.finish(b)

    assert ran["outcome"] == "completed"
    busy = [t["t"] - step_started for t in tries if t["outcome"] == "busy"]
    assert busy and max(busy) > 2.0, f"B should be refused long after the 1 s lease: {busy}"
    assert all(t["outcome"] == "busy" for t in tries[:-1])
    assert tries[-1]["outcome"] == "completed"  # the finished flow, read back, not run
    assert {pid for pid, _, _, _ in procs.effects()} == {a.pid}
    assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1, "step-3": 1}


def test_a_runner_that_lost_its_lease_writes_nothing_more(procs: Procs) -> None:
    flow_id = "fenced-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--flow-id", flow_id, "--lease-ttl", "1s",
        sleep={"step-2": 2},
    )  # fmt: skip
    wait_for(lambda: procs.step_times(flow_id, "start")["step-2"], "step-2 to start")
    stop_outside_a_write(a, procs.db)  # its lease keeper is frozen too
    store = SQLiteStore(procs.db, lease_ttl="1s")
    wait_for(lambda: lease_expired(store, flow_id), "A's lease to expire", 5)

    [b] = procs.run("resume", flow_id, "--lease-ttl", "1s")
    assert b["outcome"] == "completed"
    assert [r["pid"] for r in b["value"]] == [a.pid, b["pid"], b["pid"]]
    written_by_b = get_flow(flow_id, store=store)

    os.kill(a.pid, signal.SIGCONT)
    [lost] = procs.finish(a)

    assert lost["outcome"] == "lease-lost"
    after = get_flow(flow_id, store=store)
    assert after == written_by_b
    assert after.status == "completed"
    assert after.history[1].result == {"step": "step-2", "pid": b["pid"]}
    # A's step-2 did finish its work (at least once), but its result was never stored.
    assert [(pid == a.pid, step, phase) for pid, _, step, phase in procs.effects()] == [
        (True, "step-1", "start"), (True, "step-1", "done"),
        (True, "step-2", "start"),
        (False, "step-2", "start"), (False, "step-2", "done"),
        (False, "step-3", "start"), (False, "step-3", "done"),
        (True, "step-2", "done"),
    ]  # fmt: skip


def test_a_runner_frozen_between_its_lease_check_and_a_step_call_makes_that_call_only(
    procs: Procs,
) -> None:
    """The README's lease rule, at its one window: a lease check and the call after
    it are not one act. A is frozen there (its step called, none of the step's work
    begun) past its 1 s lease; B takes the flow over and completes it. Woken, A makes
    that one call, late: its result is never recorded, A calls nothing after it and
    ends with ``LeaseLostError``, and no completed step ran twice but that one."""
    flow_id = "window-1"
    gate = str(procs.tmp / "step-2")
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--flow-id", flow_id, "--lease-ttl", "1s",
        gate={"step-2": gate},
    )  # fmt: skip
    wait_for(lambda: os.path.exists(gate + ".entered"), "A to call step-2")
    stop_outside_a_write(a, procs.db)  # its lease keeper is frozen too
    Path(gate + ".go").touch()  # A goes on only once it is woken
    store = SQLiteStore(procs.db, lease_ttl="1s")
    wait_for(lambda: lease_expired(store, flow_id), "A's lease to expire", 5)

    [b] = procs.run("resume", flow_id, "--lease-ttl", "1s")
    assert b["outcome"] == "completed"
    written_by_b = get_flow(flow_id, store=store)
    assert [r["pid"] for r in b["value"]] == [a.pid, b["pid"], b["pid"]]

    os.kill(a.pid, signal.SIGCONT)
    [lost] = procs.finish(a)

    assert lost["outcome"] == "lease-lost"
    assert get_flow(flow_id, store=store) == written_by_b  # A wrote nothing
    assert written_by_b.history[1].result == {"step": "step-2", "pid": b["pid"]}
    # step-1 ran once (A), step-3 once (B); step-2 twice: B's, recorded, and A's
    # late call, whose work began only after B had completed the flow.
    assert [(pid == a.pid, step, phase) for pid, _, step, phase in procs.effects()] == [
        (True, "step-1", "start"), (True, "step-1", "done"),
        (False, "step-2", "start"), (False, "step-2", "done"),
        (False, "step-3", "start"), (False, "step-3", "done"),
        (True, "step-2", "start"), (True, "step-2", "done"),
    ]  # fmt: skip


def test_a_signal_sent_while_another_process_runs_the_flow_is_consumed_when_it_gets_there(
    procs: Procs,
) -> None:
    flow_id = "early-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--wait-at", "2", "--flow-id", flow_id,
        sleep={"step-1": 0.5},
    )  # fmt: skip
    wait_for(lambda: procs.step_times(flow_id, "start")["step-1"], "step-1 to start")
    signal_flow(flow_id, "go", {"early": True}, store=SQLiteStore(procs.db))

    [ran] = procs.finish(a)

    assert ran["outcome"] == "completed"  # it never parked
    assert ran["value"][1] == {"early": True}
    assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1, "step-3": 1}


def test_a_flow_cancelled_from_another_process_stops_after_the_step_in_hand(
    procs: Procs,
) -> None:
    flow_id = "cancelled-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--flow-id", flow_id, sleep={"step-2": 0.5}
    )
    wait_for(lambda: procs.step_times(flow_id, "start")["step-2"], "step-2 to start")
    store = SQLiteStore(procs.db)
    assert cancel_flow(flow_id, "customer left", store=store) is True

    [ran] = procs.finish(a)

    assert ran["outcome"] == "cancelled"
    info = get_flow(flow_id, store=store)
    assert (info.status, info.cancel_reason) == ("cancelled", "customer left")
    assert [(h.name, h.state) for h in info.history] == [
        ("step-1", "completed"),
        ("step-2", "completed"),  # the step in hand finished and was recorded
    ]
    assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1}
    assert resume(flow_id, store=store).status == "cancelled"  # and it stays so


def test_a_runner_that_lost_its_lease_during_a_retry_backoff_calls_the_step_no_more(
    procs: Procs,
) -> None:
    """A card charged twice: the step failed, its runner slept out the backoff,
    was frozen past its lease; another runner charged and completed; the first,
    woken, must not charge again."""
    flow_id = "backoff-1"
    store = SQLiteStore(procs.db, lease_ttl="1s")
    a = procs.spawn(
        "start", "--log", procs.log, "--flow", "retry", "--flow-id", flow_id, "--lease-ttl", "1s"
    )
    wait_for(
        lambda: (
            procs.step_times(flow_id)["charge"]
            and [h.state for h in get_flow(flow_id, store=store).history] == ["retrying"]
        ),
        "the first try to fail and its backoff to start",
    )
    stop_outside_a_write(a, procs.db)
    wait_for(lambda: lease_expired(store, flow_id), "A's lease to expire", 5)
    retry_at = get_flow(flow_id, store=store).history[0].wake_at
    assert retry_at is not None
    wait_for(lambda: time.time() > retry_at.timestamp(), "the backoff to pass", 5)

    [b] = procs.run("resume", flow_id, "--lease-ttl", "1s")
    assert b["outcome"] == "completed"
    os.kill(a.pid, signal.SIGCONT)
    [lost] = procs.finish(a)

    assert lost["outcome"] == "lease-lost"
    assert [(pid == a.pid, step, phase) for pid, _, step, phase in procs.effects()] == [
        (True, "charge", "start"), (True, "charge", "done"),  # failed: the backoff began
        (False, "charge", "start"), (False, "charge", "done"),  # B charged, once
    ]  # fmt: skip
    info = get_flow(flow_id, store=store)
    assert (info.status, info.value) == ("completed", {"step": "charge", "pid": b["pid"]})
    assert info.history[0].attempts == 2


def test_a_flow_cancelled_between_two_steps_never_starts_the_next_one(procs: Procs) -> None:
    flow_id = "between-1"
    a = procs.spawn("start", "--log", procs.log, "--flow", "between", "--flow-id", flow_id)
    wait_for(lambda: os.path.exists(procs.log + ".between"), "the body to be between steps")
    store = SQLiteStore(procs.db)
    assert cancel_flow(flow_id, "customer left", store=store) is True
    Path(procs.log + ".go").touch()

    [ran] = procs.finish(a)

    assert ran["outcome"] == "cancelled"
    assert procs.step_times(flow_id, "start") == {"step-1": 1}  # step-2 never started
    info = get_flow(flow_id, store=store)
    assert (info.status, info.cancel_reason) == ("cancelled", "customer left")
    assert [(h.name, h.state) for h in info.history] == [("step-1", "completed")]
    assert store.load(flow_id).lease_owner is None


def test_a_signal_sent_in_time_while_another_process_resumes_the_flow_is_not_lost(
    procs: Procs,
) -> None:
    """Process B resumes a flow parked at a 6 s wait and is slow to replay; a signal
    sent in time meanwhile is consumed although B reaches the wait after its
    deadline, and a signal sent after the deadline is refused while B holds it."""
    flow_id = "deadline-1"
    [parked] = procs.run("start", "--log", procs.log, "--flow", "deadline", "--flow-id", flow_id)
    assert parked["outcome"] == "suspended"
    b = procs.spawn("resume", flow_id)
    wait_for(lambda: os.path.exists(procs.log + ".replaying"), "B to be replaying")
    store = SQLiteStore(procs.db)
    signal_flow(flow_id, "go", {"in": "time"}, store=store)
    deadline = store.load(flow_id).deadline
    assert deadline is not None
    wait_for(lambda: time.time() > deadline + 0.05, "the deadline to pass", 10)
    with pytest.raises(FlowClosedError, match="expired"):
        signal_flow(flow_id, "go", {"too": "late"}, store=store)
    Path(procs.log + ".go").touch()

    [ran] = procs.finish(b)

    assert (ran["outcome"], ran["value"]) == ("completed", {"in": "time"})
    info = get_flow(flow_id, store=store)
    assert [(s.payload, s.state) for s in info.signals] == [({"in": "time"}, "consumed")]
