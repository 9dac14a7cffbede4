"""The concurrent worker (``Worker(concurrency=N)``, ``crux-gen worker --concurrency N``)
and its shared writes (one transaction per round of its loop): flows overlap, each
step still runs once and is durable
before its flow goes on, writes share transactions, a refused write fails alone,
and a worker SIGKILLed at random moments loses nothing and repeats only steps
whose records it had not committed.

In-process tests run on every store; the crash test runs real worker processes
(``tests/worker_procs.py``).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    Flow,
    FlowContext,
    InvalidTypeError,
    InvalidValueError,
    Registry,
    Retry,
    Sleep,
    Step,
    StoreError,
    Suspend,
    codec,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.records import Commit
from crux_gen.runner import new_flow_id
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

from .test_worker import Effects, _spawn_worker, wait_until


def queued(store: Any, f: Flow[Any], input: Any = None) -> str:
    """Store a new flow of *f* that no runner holds: due for the next worker pass
    (nothing of it runs here)."""
    flow_id = new_flow_id()
    store.start(flow_id, f.name, codec.encode(input, what="input"), "test", store.clock.time())
    store.release(flow_id, "test")
    return flow_id


# -- overlapping flows ---------------------------------------------------------------


def test_steps_of_different_flows_run_at_the_same_time(store: Any) -> None:
    """Eight flows whose first step waits at one barrier: it opens only when all
    eight steps run at once (a sequential worker breaks it: every flow fails)."""
    barrier = threading.Barrier(8, timeout=20)
    effects = Effects()

    @flow("c-meet", registry=Registry())
    def meet(ctx: FlowContext) -> Any:
        first = yield Step("meet", lambda: barrier.wait() >= 0)
        second = yield Step("after", lambda: effects(f"{ctx.flow_id}:after", ctx.flow_id))
        return [first, second]

    ids = [queued(store, meet) for _ in range(8)]
    worker = Worker(store, [meet], concurrency=8)
    assert worker.run_once() == 8
    for fid in ids:
        info = get_flow(fid, store=store)
        assert (info.status, info.value) == ("completed", [True, fid])
        assert effects.counts[f"{fid}:after"] == 1
    assert not barrier.broken


def test_a_slow_step_holds_up_no_other_flow(store: Any) -> None:
    """One flow's step waits until every other flow has finished: with two or more
    threads it is released; nothing else is waiting for it."""
    others_done = threading.Event()
    finished: list[str] = []
    lock = threading.Lock()

    @flow("c-slow", registry=Registry())
    def slow(ctx: FlowContext) -> Any:
        return (yield Step("wait", lambda: others_done.wait(timeout=20)))

    @flow("c-quick", registry=Registry())
    def quick(ctx: FlowContext) -> Any:
        for i in range(3):
            yield Step(f"s{i}", lambda i=i: i)

        def note() -> str:
            with lock:
                finished.append(ctx.flow_id)
                if len(finished) == 6:
                    others_done.set()
            return "ok"

        return (yield Step("note", note))

    slow_id = queued(store, slow)
    quick_ids = [queued(store, quick) for _ in range(6)]
    assert Worker(store, [slow, quick], concurrency=2).run_once() == 7
    assert get_flow(slow_id, store=store).value is True  # not timed out
    assert sorted(finished) == sorted(quick_ids)


def test_a_flow_signalled_while_a_slow_step_runs_advances_at_once(store: Any) -> None:
    """``run_forever`` with a long poll: a slow step is in hand when another flow
    gets its signal; ``wake()`` makes the worker take it now, beside the slow one."""
    release = threading.Event()

    @flow("c-slow-one", registry=Registry())
    def slow(ctx: FlowContext) -> Any:
        return (yield Step("wait", lambda: release.wait(timeout=30)))

    @flow("c-waits", registry=Registry())
    def waits(ctx: FlowContext) -> Any:
        got = yield Suspend("go")
        return (yield Step("use", lambda: f"got {got}"))

    parked = waits.run(store=store).flow_id
    slow_id = queued(store, slow)
    worker = Worker(store, [slow, waits], concurrency=2)
    thread = threading.Thread(target=worker.run_forever, kwargs={"poll": "1h"})
    thread.start()
    try:
        wait_until(lambda: store.load(slow_id).lease_owner is not None, 10, "the slow step runs")
        signal_flow(parked, "go", "now", store=store)
        worker.wake()
        wait_until(
            lambda: get_flow(parked, store=store).status == "completed", 10, "the other flow ends"
        )
        assert get_flow(slow_id, store=store).status == "running"  # still in its step
    finally:
        release.set()
        worker.stop()
        thread.join(timeout=30)
    assert get_flow(parked, store=store).value == "got now"
    assert get_flow(slow_id, store=store).status == "completed"


def test_every_store_runs_many_flows_concurrently_each_step_once(store: Any) -> None:
    effects = Effects()

    @flow("c-chain", registry=Registry())
    def chain(ctx: FlowContext) -> Any:
        out = []
        for i in range(5):
            out.append((yield Step(f"s{i}", lambda i=i: effects(f"{ctx.flow_id}:s{i}", i))))
        got = yield Suspend("go")
        yield Sleep("nap", "1m")
        out.append((yield Step("last", lambda: effects(f"{ctx.flow_id}:last", got))))
        return out

    ids = [queued(store, chain) for _ in range(20)]
    worker = Worker(store, [chain], concurrency=6)
    assert worker.run_once() == 20
    assert {get_flow(fid, store=store).status for fid in ids} == {"suspended"}
    for fid in ids:
        signal_flow(fid, "go", fid[:4], store=store)
    assert worker.run_once() == 20  # each takes its signal, then parks at the sleep
    assert store.clock is not None
    store.clock.advance("2m")
    assert worker.run_once() == 20
    for fid in ids:
        info = get_flow(fid, store=store)
        assert (info.status, info.value) == ("completed", [0, 1, 2, 3, 4, fid[:4]])
        assert [r.name for r in info.history] == ["s0", "s1", "s2", "s3", "s4", "go", "nap", "last"]
    assert set(effects.counts.values()) == {1}
    assert len(effects.counts) == 20 * 6
    assert worker.run_once() == 0


def test_a_failing_and_a_retried_step_behave_as_with_one_thread(store: Any) -> None:
    tries = Counter[str]()

    def flaky(flow_id: str) -> str:
        tries[flow_id] += 1
        if tries[flow_id] < 3:
            raise ConnectionError("try again")
        return "ok"

    @flow("c-flaky", registry=Registry())
    def flaky_flow(ctx: FlowContext) -> Any:
        got = yield Step(
            "call",
            lambda: flaky(ctx.flow_id),
            retry=Retry(attempts=3, backoff="fixed", delay="10m"),
        )
        if ctx.input == "fail":
            yield Step("boom", lambda: 1 / 0)
        return got

    ok = queued(store, flaky_flow)
    bad = queued(store, flaky_flow, "fail")
    worker = Worker(store, [flaky_flow], concurrency=4)
    for _ in range(3):
        worker.run_once()
        store.clock.advance("11m")
    assert (get_flow(ok, store=store).status, get_flow(ok, store=store).value) == (
        "completed",
        "ok",
    )
    failed = get_flow(bad, store=store)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.type == "builtins.ZeroDivisionError"
    assert tries == Counter({ok: 3, bad: 3})


def test_stop_lets_every_flow_in_hand_finish_its_step_and_leaves_them_due(store: Any) -> None:
    started = threading.Barrier(5, timeout=20)
    go_on = threading.Event()
    effects = Effects()

    @flow("c-stop", registry=Registry())
    def stopping(ctx: FlowContext) -> Any:
        def first() -> int:
            started.wait()
            go_on.wait(timeout=20)
            return effects(f"{ctx.flow_id}:first", 1)

        yield Step("first", first)
        return (yield Step("second", lambda: effects(f"{ctx.flow_id}:second", 2)))

    ids = [queued(store, stopping) for _ in range(4)]
    worker = Worker(store, [stopping], concurrency=4)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    started.wait()  # all four are in their first step
    worker.stop()
    go_on.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    for fid in ids:
        stored = store.load(fid)
        assert stored.status == "running" and stored.lease_owner is None
        assert [r.name for r in stored.records] == ["first"]  # recorded before stopping
    assert Worker(store, [stopping], concurrency=4).run_once() == 4
    assert {get_flow(fid, store=store).status for fid in ids} == {"completed"}
    assert set(effects.counts.values()) == {1} and len(effects.counts) == 8


def test_a_flow_whose_code_is_missing_is_skipped_and_the_others_run(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @flow("c-known", registry=Registry())
    def known(ctx: FlowContext) -> Any:
        return (yield Step("one", lambda: 1))

    @flow("c-unknown", registry=Registry())
    def unknown(ctx: FlowContext) -> Any:
        return (yield Step("one", lambda: 1))

    lost = queued(store, unknown)
    ids = [queued(store, known) for _ in range(3)]
    worker = Worker(store, [known], concurrency=3)
    with caplog.at_level(logging.ERROR, logger="crux_gen.worker"):
        assert worker.run_once() == 3
        assert worker.run_once() == 0  # the unknown one is skipped, not claimed again
    assert {get_flow(fid, store=store).status for fid in ids} == {"completed"}
    stored = store.load(lost)
    assert stored.status == "running" and stored.lease_owner is None
    assert sum("c-unknown" in r.getMessage() for r in caplog.records) == 1


# -- batches -------------------------------------------------------------------------


class Counting:
    """A store that counts the calls the worker makes (and may hold a batch back)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.clock = store.clock
        self.lease_ttl = store.lease_ttl
        self.calls: Counter[str] = Counter()
        self.batch_sizes: list[int] = []
        self.claimed: list[int] = []  # how many flows each claim_due took
        self.hold_first_batch: threading.Event | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if callable(attr):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attr(*args, **kwargs)

            return counted
        return attr

    def claim_due(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["claim_due"] += 1
        claimed = self.store.claim_due(*args, **kwargs)
        self.claimed.append(len(claimed))
        return claimed

    def _batch(self, size: int) -> None:
        self.batch_sizes.append(size)
        if self.hold_first_batch is not None and len(self.batch_sizes) == 1:
            assert self.hold_first_batch.wait(timeout=20)

    def commit(self, *item: Any) -> Any:  # a batch of one goes to the store's own commit
        self.calls["commit"] += 1
        self._batch(1)
        return self.store.commit(*item)

    def commit_many(self, batch: Sequence[Commit]) -> list[Any]:
        self.calls["commit_many"] += 1
        self._batch(len(batch))
        return list(self.store.commit_many(batch))


def test_due_flows_are_claimed_in_one_call_and_their_writes_grouped(store: Any) -> None:
    barrier = threading.Barrier(8, timeout=20)

    @flow("c-batch", registry=Registry())
    def batch(ctx: FlowContext) -> Any:
        yield Step("meet", lambda: barrier.wait() >= 0)
        return (yield Step("two", lambda: 2))

    ids = [queued(store, batch) for _ in range(8)]
    counting = Counting(store)
    worker = Worker(counting, [batch], concurrency=8)
    assert worker.run_once() == 8
    assert counting.claimed[0] == 8 and sum(counting.claimed) == 8  # all in one claim
    assert counting.calls["claim"] == 0  # never one flow at a time
    # Per flow: the first step's record (the guard of the second step), then the
    # second's with the end: one write per live step.
    assert sum(counting.batch_sizes) == 8 * 2
    assert worker.writes == 16
    assert {get_flow(fid, store=store).status for fid in ids} == {"completed"}


def test_results_that_come_in_while_a_round_is_written_share_the_next_one(store: Any) -> None:
    """The executor writes the records that became ready in one round in one
    transaction: results that come in while a round's write is held go out
    together in the next one."""
    go = threading.Event()
    lock = threading.Lock()
    returned: Counter[str] = Counter()

    @flow("c-share", registry=Registry())
    def share(ctx: FlowContext) -> Any:
        def step() -> int:
            if not ctx.input["first"]:
                assert go.wait(timeout=20)
            with lock:
                returned[ctx.flow_id] += 1
            return 1

        return (yield Step("s", step))

    ids = [queued(store, share, {"first": True})]
    ids += [queued(store, share, {"first": False}) for _ in range(5)]
    counting = Counting(store)
    counting.hold_first_batch = threading.Event()
    worker = Worker(counting, [share], concurrency=6)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    wait_until(lambda: counting.batch_sizes == [1], 10, "the first flow's write is held")
    go.set()
    wait_until(lambda: sum(returned.values()) == 6, 10, "the five others returned meanwhile")
    time.sleep(0.2)  # (their results are queued right after their functions return)
    counting.hold_first_batch.set()
    runner.join(timeout=20)
    assert counting.batch_sizes == [1, 5]
    assert (worker.batches, worker.writes) == (2, 6)
    assert counting.calls["commit"] == 1 and counting.calls["commit_many"] == 1
    assert {get_flow(fid, store=store).status for fid in ids} == {"completed"}


def test_a_refused_write_fails_only_its_own_flow_and_the_others_complete(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    barrier = threading.Barrier(4, timeout=20)
    victim: list[str] = []

    @flow("c-refused", registry=Registry())
    def refused(ctx: FlowContext) -> Any:
        def step() -> int:
            if ctx.flow_id == victim[0]:  # another runner takes its lease meanwhile
                store.release(ctx.flow_id, store.load(ctx.flow_id).lease_owner)
                store.claim(ctx.flow_id, "thief", store.clock.time())
            barrier.wait()
            return 1

        return (yield Step("s", step))

    ids = [queued(store, refused) for _ in range(4)]
    victim.append(ids[2])
    worker = Worker(store, [refused], concurrency=4)
    with caplog.at_level(logging.WARNING, logger="crux_gen.worker"):
        assert worker.run_once() == 3
    assert [get_flow(i, store=store).status for i in ids] == ["completed"] * 2 + [
        "running",
        "completed",
    ]
    assert store.load(ids[2]).records == ()  # nothing of the refused write
    lost = [r for r in caplog.records if ids[2] in r.getMessage()]
    assert len(lost) == 1 and "lease" in lost[0].getMessage()


def test_a_write_alone_goes_out_through_the_stores_own_commit(store: Any) -> None:
    @flow("c-alone", registry=Registry())
    def alone(ctx: FlowContext) -> Any:
        yield Step("a", lambda: 1)
        return (yield Step("b", lambda: 2))

    fid = queued(store, alone)
    counting = Counting(store)
    assert Worker(counting, [alone], concurrency=4).run_once() == 1
    assert counting.calls["commit_many"] == 0
    assert counting.batch_sizes == [1, 1]  # step a's record (step b's guard); b's and the end
    assert get_flow(fid, store=store).value == 2


def test_a_store_failure_of_a_round_writes_nothing_of_it_and_its_flows_stay_due(
    store: Any,
) -> None:
    barrier = threading.Barrier(3, timeout=20)
    runs: Counter[str] = Counter()
    lock = threading.Lock()
    failed: list[str] = []

    class Failing(Counting):
        """The first write of the pass (one flow's, or a round's) fails."""

        def _fail(self, ids: list[str]) -> None:
            failed.extend(ids)
            raise StoreError("the disk is full; nothing of this write was applied")

        def commit(self, *item: Any) -> Any:
            if not failed:
                self._fail([item[0]])
            return super().commit(*item)

        def commit_many(self, batch: Sequence[Commit]) -> list[Any]:
            if not failed:
                self._fail([c.flow_id for c in batch])
            return super().commit_many(batch)

    @flow("c-full-disk", registry=Registry())
    def full(ctx: FlowContext) -> Any:
        def step() -> int:
            with lock:
                runs[ctx.flow_id] += 1
            if runs[ctx.flow_id] == 1:
                barrier.wait()  # the three results come in together
            return 1

        return (yield Step("s", step))

    ids = [queued(store, full) for _ in range(3)]
    worker = Worker(Failing(store), [full], concurrency=3)
    with pytest.raises(StoreError, match="disk is full"):
        worker.run_once()
    assert failed and all(store.load(i).records == () for i in failed)
    assert [store.load(i).lease_owner for i in ids] == [None] * 3  # due for the next pass
    assert worker.run_once() == len(failed)
    assert {get_flow(i, store=store).status for i in ids} == {"completed"}
    # What the failed write held was not recorded: those steps ran again, no other.
    assert runs == Counter({i: 2 if i in failed else 1 for i in ids})


def test_a_store_error_in_a_concurrent_pass_ends_it_after_the_flows_in_hand(
    store: Any,
) -> None:
    class Away(Counting):
        def claim_due(self, *args: Any, **kwargs: Any) -> Any:
            if self.calls["claim_due"] >= 1:
                raise StoreError("the server went away")
            return super().claim_due(*args, **kwargs)

    @flow("c-away", registry=Registry())
    def away(ctx: FlowContext) -> Any:
        return (yield Step("one", lambda: 1))

    ids = [queued(store, away) for _ in range(3)]
    worker = Worker(Away(store), [away], concurrency=2)
    with pytest.raises(StoreError, match="went away"):
        worker.run_once()
    done = [fid for fid in ids if get_flow(fid, store=store).status == "completed"]
    assert len(done) == 2  # the two claimed ran to the end; the third stays due
    assert len(store.due(store.clock.time(), 10)) == 1


# -- arguments -------------------------------------------------------------------------


def test_concurrency_must_be_a_positive_int() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidValueError, match=r"Worker concurrency.*0"):
        Worker(store, concurrency=0)
    with pytest.raises(InvalidTypeError, match=r"Worker concurrency.*'8'"):
        Worker(store, concurrency="8")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="Worker concurrency"):
        Worker(store, concurrency=True)
    assert "concurrency=4" in repr(Worker(store, concurrency=4))


def test_a_cli_worker_with_concurrency_runs_flows_at_once(tmp_path: Path) -> None:
    """``crux-gen worker MODULE --concurrency 4``: four flows meet at a barrier of four
    (in the worker's process), so they ran at the same time."""
    (tmp_path / "meetflows.py").write_text(
        "import threading\n"
        "from crux_gen import Step, flow\n"
        "barrier = threading.Barrier(4, timeout=20)\n"
        "@flow('meet')\n"
        "def meet(ctx):\n"
        "    return (yield Step('meet', lambda: barrier.wait() >= 0))\n"
    )
    db = tmp_path / "crux.db"
    sys.path.insert(0, str(tmp_path))
    try:
        import meetflows  # type: ignore[import-not-found]

        store = SQLiteStore(db)
        ids = [queued(store, meetflows.meet) for _ in range(4)]
    finally:
        sys.path.remove(str(tmp_path))
    for fid in ids:
        store.release(fid, store.load(fid).lease_owner or "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "worker", "meetflows", "--db", str(db),
         "--concurrency", "4", "--poll", "50ms"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: {get_flow(f, store=store).status for f in ids} == {"completed"},
            30,
            "the four flows complete",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert {get_flow(f, store=store).value for f in ids} == {True}
    assert "concurrency 4" in err
    bad = subprocess.run(
        [sys.executable, "-m", "crux_gen", "worker", "meetflows", "--db", str(db),
         "--concurrency", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert "--concurrency" in bad.stderr and "0 is less than 1" in bad.stderr


# -- crash test ----------------------------------------------------------------------


def _runs(log: Path) -> list[tuple[int, str, str, str]]:
    """(pid, flow id, step, start|done) per line of the side-effect log."""
    rows: list[tuple[int, str, str, str]] = []
    if not log.exists():
        return rows
    for line in log.read_text().splitlines():
        pid, flow_id, step, what = line.split()
        rows.append((int(pid), flow_id, step, what))
    return rows


def test_a_concurrent_worker_killed_at_random_moments_repeats_only_uncommitted_steps(
    tmp_path: Path,
) -> None:
    """SIGKILL a ``--concurrency 16`` worker again and again at random moments and
    start another: every flow completes with every step recorded once, and a step
    runs again only in a process that was killed before its record was committed
    (in that process it was the flow's last step: the next one never started)."""
    from tests.worker_procs import many

    db, log = tmp_path / "crux.db", tmp_path / "effects.log"
    store = SQLiteStore(db, synchronous="NORMAL")
    steps = 20
    ids = []
    for _ in range(64):
        ids.append(queued(store, many, {"log": str(log), "steps": steps, "pause": 0.01}))
    rng = random.Random(20261201)
    killed: set[int] = set()
    rounds = 0
    while rounds < 40:
        rounds += 1
        proc = _spawn_worker(db, "--concurrency", "16", "--lease-ttl", "400ms", "--poll", "20ms")
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        if {get_flow(f, store=store).status for f in ids} == {"completed"}:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            break
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        proc.communicate(timeout=30)
        killed.add(ready["pid"])
    else:
        raise AssertionError("the flows did not complete within 40 worker runs")
    assert len(killed) >= 3, "the worker was barely killed: the test proves little"

    for fid in ids:
        info = get_flow(fid, store=store)
        assert info.status == "completed", (fid, info.status)
        assert info.value == [f"s{i}" for i in range(steps)]
        assert [r.name for r in info.history] == [f"s{i}" for i in range(steps)]

    starts: dict[tuple[str, str], list[int]] = defaultdict(list)
    last_step_in: dict[tuple[int, str], int] = {}  # (pid, flow) -> last step index started
    for pid, fid, step, what in _runs(log):
        if what == "start":
            starts[fid, step].append(pid)
            index = int(step[1:])
            last_step_in[pid, fid] = max(last_step_in.get((pid, fid), -1), index)
    repeated = 0
    for fid in ids:
        for i in range(steps):
            pids = starts[fid, f"s{i}"]
            assert pids, (fid, i)
            for earlier in pids[:-1]:  # every run but the last was cut short
                repeated += 1
                assert earlier in killed, (fid, i, earlier)
                # ... before its record was committed: that process never went on to
                # the flow's next step (the record is written before the next command).
                assert last_step_in[earlier, fid] == i, (fid, i, earlier)
    assert repeated > 0, "no kill cut a step short: the test proves little"
    # Each kill cuts at most one step per flow in hand.
    assert repeated <= 16 * len(killed)


def test_a_worker_killed_in_the_middle_of_an_all_reruns_only_the_unfinished_branch(
    tmp_path: Path,
) -> None:
    """SIGKILL while one branch of an ``All`` hangs and the other three are done: the
    next worker runs that branch again and none of the others."""
    from tests.worker_procs import fan

    db, log = tmp_path / "crux.db", tmp_path / "effects.log"
    store = SQLiteStore(db, synchronous="NORMAL")
    fid = queued(store, fan, {"log": str(log)})
    doomed = _spawn_worker(db, "--lease-ttl", "1s", env={"CRUX_TEST_HANG": "c"})
    try:

        def states() -> dict[str, str]:
            return {r.name: r.state for r in store.load(fid).records}

        # Three branches recorded (a step's "done" line comes before its record),
        # the fourth hanging in its function.
        wait_until(
            lambda: (
                [states().get(n) for n in ("a", "b", "d")] == ["completed"] * 3
                and (fid, "c", "start") in {tuple(r[1:]) for r in _runs(log)}
            ),
            30,
            "three branches recorded, the fourth hanging",
        )
        recorded = states()
        assert recorded["c"] == "waiting"
    finally:
        doomed.kill()
        doomed.communicate(timeout=10)
    worker = Worker(store, [fan])
    wait_until(lambda: worker.run_once() == 1, 10, "the lease lapses and the flow is taken over")
    info = get_flow(fid, store=store)
    assert info.status == "completed" and info.value == ["a", "b", "c", "d", "after"]
    starts = Counter((r[2]) for r in _runs(log) if r[1] == fid and r[3] == "start")
    assert starts == Counter({"a": 1, "b": 1, "c": 2, "d": 1, "after": 1})
