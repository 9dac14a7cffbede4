"""What a user relies on from the worker: due flows advance, nothing else is touched,
bad flows never stop it, ``stop()`` leaves flows resumable, many processes share a file.

In-process tests run on every store with a fake clock ("24h" takes no time); the
cross-process ones run ``tests/worker_procs.py`` in real subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    Flow,
    FlowClosedError,
    FlowContext,
    InvalidTypeError,
    InvalidValueError,
    Registry,
    Retry,
    Sleep,
    Step,
    Suspend,
    WaitUntil,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

REPO = Path(__file__).resolve().parent.parent
WORKER_LOG = "crux_gen.worker"


class Effects:
    """Counts how many times each side effect (and each replay of a body) ran."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, name: str, value: Any = None) -> Any:
        with self._lock:
            self.counts[name] += 1
        return value


def waiter(effects: Effects, name: str, *, timeout: str | None = "24h") -> Flow[Any]:
    """Step ``a``, wait for signal ``go``, step ``b``. Not in the default registry."""

    @flow(name, registry=Registry())
    def body(ctx: FlowContext) -> Any:
        effects(f"{ctx.flow_id}:replay")
        yield Step("a", lambda: effects(f"{ctx.flow_id}:a"))
        yield Suspend("go", timeout=timeout)
        return (yield Step("b", lambda: effects(f"{ctx.flow_id}:b", "done")))

    return body


def start_waiting(f: Flow[Any], store: Any, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        r = f.run(input={}, store=store)
        assert r.status == "suspended"
        ids.append(r.flow_id)
    return ids


def status(flow_id: str, store: Any) -> str:
    return str(get_flow(flow_id, store=store).status)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll *check* until true; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


# -- what is due ---------------------------------------------------------------------


def test_a_flow_whose_signal_arrived_is_advanced(store: Any) -> None:
    effects = Effects()
    f = waiter(effects, "w-signal")
    (fid,) = start_waiting(f, store)
    worker = Worker(store, [f])
    assert worker.run_once() == 0
    signal_flow(fid, "go", {}, store=store)
    assert worker.run_once() == 1
    assert status(fid, store) == "completed"
    assert effects.counts[f"{fid}:b"] == 1
    assert worker.run_once() == 0


def test_flows_that_are_not_due_are_not_replayed(store: Any) -> None:
    effects = Effects()
    f = waiter(effects, "w-not-due")
    ids = start_waiting(f, store, 5)
    signal_flow(ids[0], "some-other-signal", {}, store=store)  # not what it waits for
    before = effects.counts.copy()
    assert Worker(store, [f]).run_once() == 0
    assert effects.counts == before
    assert all(status(fid, store) == "suspended" for fid in ids)


def test_a_passed_deadline_expires_the_flow(store: Any, clock: FakeClock) -> None:
    effects = Effects()
    f = waiter(effects, "w-deadline", timeout="24h")
    (fid,) = start_waiting(f, store)
    worker = Worker(store, [f])
    clock.advance("23h")
    assert worker.run_once() == 0
    clock.advance("2h")
    assert worker.run_once() == 1
    info = get_flow(fid, store=store)
    assert (info.status, info.waiting_for, info.wake_at) == ("expired", "go", None)
    assert effects.counts[f"{fid}:b"] == 0
    with pytest.raises(FlowClosedError):
        signal_flow(fid, "go", {}, store=store)
    assert worker.run_once() == 0


def test_due_sleeps_wait_until_rechecks_and_parked_retries_are_advanced(
    store: Any, clock: FakeClock
) -> None:
    effects = Effects()
    ready = {"now": False}
    failures = {"left": 1}
    registry = Registry()

    @flow("w-sleep", registry=registry)
    def sleeper(ctx: FlowContext) -> Any:
        yield Sleep("nap", "1h")
        return (yield Step("after-nap", lambda: effects("after-nap", 1)))

    @flow("w-poll", registry=registry)
    def poller(ctx: FlowContext) -> Any:
        def condition() -> bool:
            effects("check")
            return ready["now"]

        yield WaitUntil("ready", condition, every="10m")
        return (yield Step("after-ready", lambda: effects("after-ready", 2)))

    def flaky_call() -> int:
        effects("flaky")
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("down")
        return 3

    @flow("w-retry", registry=registry)
    def flaky(ctx: FlowContext) -> Any:
        retry = Retry(attempts=3, backoff="fixed", delay="1m")
        return (yield Step("call", flaky_call, retry=retry))

    flows = [sleeper, poller, flaky]
    ids = {f.name: f.run(input={}, store=store).flow_id for f in flows}
    assert all(status(fid, store) == "suspended" for fid in ids.values())
    worker = Worker(store, flows)
    assert worker.run_once() == 0

    clock.advance("10m")  # the retry (1m) and the re-check (10m) are due, the sleep is not
    assert worker.run_once() == 2
    assert status(ids["w-retry"], store) == "completed"
    assert status(ids["w-poll"], store) == "suspended"
    assert status(ids["w-sleep"], store) == "suspended"

    ready["now"] = True
    clock.advance("50m")
    assert worker.run_once() == 2
    assert {status(fid, store) for fid in ids.values()} == {"completed"}
    assert effects.counts == Counter({"check": 3, "flaky": 2, "after-nap": 1, "after-ready": 1})


def test_a_crashed_runners_flow_is_taken_over_once_its_lease_expires(
    store: Any, clock: FakeClock
) -> None:
    effects = Effects()
    f = waiter(effects, "w-crashed")
    (parked,) = start_waiting(f, store)
    signal_flow(parked, "go", {}, store=store)
    now = clock.now().timestamp()
    store.claim(parked, "runner-that-crashed", now)  # claimed, then the process died
    store.start("never-finished", f.name, "{}", "another-crashed-runner", now)  # died mid-run
    worker = Worker(store, [f])
    assert worker.run_once() == 0  # the leases are live: not due
    clock.advance(store.lease_ttl * 1.01)
    assert worker.run_once() == 2
    assert status(parked, store) == "completed"
    assert status("never-finished", store) == "suspended"
    assert effects.counts[f"{parked}:a"] == 1
    assert effects.counts["never-finished:a"] == 1


class StaleDue:
    """A store whose due query answers with a fixed, stale list of ids (as another
    worker's query did, a moment before this worker advanced those flows)."""

    def __init__(self, store: Any, ids: list[str]) -> None:
        self._store = store
        self._ids = ids

    def due(self, now: float, limit: int) -> list[str]:
        return self._ids[:limit]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_flow_advanced_by_another_worker_since_the_due_query_is_left_alone(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    effects = Effects()
    f = waiter(effects, "w-stale")
    parked, held, done = start_waiting(f, store, 3)
    store.claim(held, "other-worker", clock.now().timestamp())  # running elsewhere right now
    signal_flow(done, "go", {}, store=store)
    assert Worker(store, [f]).run_once() == 1  # finished: no longer due
    before = effects.counts.copy()
    caplog.set_level(logging.DEBUG, logger=WORKER_LOG)
    assert Worker(StaleDue(store, [parked, held, done]), [f]).run_once() == 0
    assert effects.counts == before  # nothing replayed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (status(parked, store), status(done, store)) == ("suspended", "completed")


# -- logging and bad flows -----------------------------------------------------------


def test_two_log_lines_per_flow_advanced_with_id_name_and_status(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # One as the worker takes the flow in (its status as claimed), one as it leaves.
    effects = Effects()
    f = waiter(effects, "w-logged")
    ids = start_waiting(f, store, 2)
    for fid in ids:
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    assert Worker(store, [f]).run_once() == 2
    lines = [r for r in caplog.records if r.name == WORKER_LOG]
    assert len(lines) == 4
    for fid in ids:
        taken, ended = [r for r in lines if fid in r.getMessage()]
        assert taken.getMessage() == (
            f"flow {fid} (w-logged): run 1 taken in (stored as suspended, waiting for 'go')"
        )
        assert ended.getMessage() == f"flow {fid} (w-logged): completed"
        fields = [
            (r.__dict__["flow_id"], r.__dict__["flow_name"], r.__dict__["status"])
            for r in (taken, ended)
        ]
        assert fields == [(fid, "w-logged", "suspended"), (fid, "w-logged", "completed")]
        assert (taken.__dict__["waiting_for"], ended.__dict__["waiting_for"]) == ("go", None)


def test_a_poison_flow_fails_once_and_never_blocks_the_others(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    effects = Effects()
    registry = Registry()

    @flow("w-poison", registry=registry)
    def poison(ctx: FlowContext) -> Any:
        yield Step("a", lambda: effects("poison-a"))
        yield Suspend("go")
        raise RuntimeError("the flow body is broken")

    good = waiter(effects, "w-good")
    (bad,) = start_waiting(poison, store)
    good_ids = start_waiting(good, store, 3)
    for fid in [bad, *good_ids]:
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    worker = Worker(store, [poison, good], batch=1)
    assert worker.run_once() == 4
    info = get_flow(bad, store=store)
    assert info.status == "failed"
    assert info.error is not None and "the flow body is broken" in info.error.message
    assert all(status(fid, store) == "completed" for fid in good_ids)
    assert worker.run_once() == 0  # failed once, for good
    assert any(bad in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


def test_an_unregistered_flow_is_reported_and_skipped_for_a_while(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    effects = Effects()
    ghost = waiter(effects, "w-ghost")  # in a registry the worker does not see
    good = waiter(effects, "w-known")
    (ghost_id,) = start_waiting(ghost, store)
    good_ids = start_waiting(good, store, 3)
    for fid in [ghost_id, *good_ids]:
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    worker = Worker(store, [good], batch=1, skip_for="5m")

    assert worker.run_once() == 3  # the skipped flow does not starve a batch of one
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert ghost_id in errors[0] and "w-ghost" in errors[0] and "import" in errors[0]
    info = get_flow(ghost_id, store=store)  # untouched: still waiting, signal kept
    assert info.status == "suspended"
    assert [s.state for s in info.signals] == ["pending"]

    caplog.clear()
    assert worker.run_once() == 0
    assert not caplog.records  # not retried on every tick
    clock.advance("6m")
    assert worker.run_once() == 0
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # tried again

    assert Worker(store, [ghost]).run_once() == 1  # a worker that imports it
    assert status(ghost_id, store) == "completed"


def test_non_determinism_is_reported_and_the_flow_left_for_fixed_code(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    effects = Effects()
    v1 = waiter(effects, "w-changed")

    @flow("w-changed", registry=Registry())
    def v2(ctx: FlowContext) -> Any:
        yield Step("renamed", lambda: effects("renamed"))
        yield Suspend("go")

    good = waiter(effects, "w-steady")
    (changed,) = start_waiting(v1, store)
    (steady,) = start_waiting(good, store)
    for fid in (changed, steady):
        signal_flow(fid, "go", {}, store=store)
    history = get_flow(changed, store=store).history
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    worker = Worker(store, [v2, good])

    assert worker.run_once() == 1
    assert status(steady, store) == "completed"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and changed in errors[0] and "renamed" in errors[0]
    info = get_flow(changed, store=store)
    assert (info.status, info.history) == ("suspended", history)
    assert effects.counts["renamed"] == 0
    assert worker.run_once() == 0  # skipped for a while

    assert Worker(store, [v1]).run_once() == 1  # the fixed code resumes it
    assert status(changed, store) == "completed"


def test_a_lost_lease_is_reported_and_the_worker_goes_on(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    effects = Effects()

    def slow_step(flow_id: str) -> str:
        effects("slow")
        clock.advance(store.lease_ttl * 2)  # so long that the lease expired...
        store.claim(flow_id, "another-runner", clock.now().timestamp())  # ...and was taken
        return "late"

    @flow("w-lease-lost", registry=Registry())
    def lost(ctx: FlowContext) -> Any:
        yield Suspend("go")
        yield Step("slow", lambda: slow_step(ctx.flow_id))
        yield Step("after", lambda: effects("after"))

    good = waiter(effects, "w-unaffected")
    (lost_id,) = start_waiting(lost, store)
    (good_id,) = start_waiting(good, store)
    for fid in (lost_id, good_id):
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    Worker(store, [lost, good]).run_once()
    assert status(good_id, store) == "completed"
    assert effects.counts["slow"] == 1 and effects.counts["after"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(lost_id in w and "lost its lease" in w for w in warnings)


# -- stop ----------------------------------------------------------------------------


def test_stop_lets_the_step_in_hand_finish_and_leaves_the_flow_due(store: Any) -> None:
    effects = Effects()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        assert release.wait(10)
        return effects("slow", "slow-done")

    @flow("w-stoppable", registry=Registry())
    def stoppable(ctx: FlowContext) -> Any:
        yield Suspend("go")
        yield Step("slow", slow)
        return (yield Step("after", lambda: effects("after", "finished")))

    (fid,) = start_waiting(stoppable, store)
    signal_flow(fid, "go", {}, store=store)
    worker = Worker(store, [stoppable])
    thread = threading.Thread(target=worker.run_forever, kwargs={"poll": "10ms"})
    thread.start()
    assert started.wait(10)
    worker.stop()
    release.set()
    thread.join(10)
    assert not thread.is_alive()

    assert effects.counts == Counter({"slow": 1})  # finished and recorded; "after" not run
    stored = store.load(fid)
    assert (stored.status, stored.lease_owner) == ("running", None)
    assert fid in store.due(store.clock.now().timestamp(), 10)
    assert Worker(store, [stoppable]).run_once() == 1
    assert get_flow(fid, store=store).value == "finished"
    assert effects.counts == Counter({"slow": 1, "after": 1})


def test_stop_before_run_forever_starts_returns_at_once(store: Any) -> None:
    worker = Worker(store)
    worker.stop()
    thread = threading.Thread(target=worker.run_forever, kwargs={"poll": "1h"})
    thread.start()
    thread.join(5)
    assert not thread.is_alive()


def test_worker_arguments_are_checked(store: Any) -> None:
    # Each is a CruxError as well as the builtin (tests/test_errors.py has the full list).
    with pytest.raises(InvalidValueError, match="batch 0"):
        Worker(store, batch=0)
    with pytest.raises(InvalidTypeError, match="batch '10'"):
        Worker(store, batch="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="soon"):
        Worker(store).run_forever(poll="soon")
    with pytest.raises(InvalidTypeError, match=r"crux\.db"):
        Worker("crux.db")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"give flows=\[w-one\]"):
        Worker(store, flows=waiter(Effects(), "w-one"))  # type: ignore[arg-type]


# -- real time, real processes --------------------------------------------------------


@flow("w-web-verify")
def web_verify(ctx: FlowContext) -> Any:
    """Registered in the default registry, as an app's flows are once imported."""
    yield Suspend("verified")
    return (yield Step("welcome", lambda: f"welcome {ctx.input['email']}"))


@pytest.fixture
def worker_thread(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start ``Worker.run_forever`` in a thread on a real-clock SQLite file."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(store: Any, flows: list[Flow[Any]], poll: str) -> Worker:
        worker = Worker(store, flows)
        thread = threading.Thread(target=worker.run_forever, kwargs={"poll": poll}, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, thread in running:
        worker.stop()
        thread.join(10)


def test_a_worker_polling_every_second_picks_up_a_signal_within_one_poll(
    tmp_path: Path, worker_thread: Callable[..., Worker]
) -> None:
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL")
    fid = web_verify.run(input={"email": "a@example.com"}, store=store).flow_id
    worker_thread(store, [web_verify], "1s")
    time.sleep(0.05)  # the worker's first pass has found nothing due
    signal_flow(fid, "verified", {}, store=store)
    took = wait_until(lambda: status(fid, store) == "completed", 5, "the flow completes")
    assert took < 1.75  # one poll, and a little slack for a busy machine


def test_wake_starts_the_next_pass_now(
    tmp_path: Path, worker_thread: Callable[..., Worker]
) -> None:
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL")
    fid = web_verify.run(input={"email": "a@example.com"}, store=store).flow_id
    worker = worker_thread(store, [web_verify], "1h")
    time.sleep(0.05)
    signal_flow(fid, "verified", {}, store=store)
    worker.wake()
    assert wait_until(lambda: status(fid, store) == "completed", 5, "completes") < 1


def test_signal_then_resume_in_a_web_request_thread(tmp_path: Path) -> None:
    path = tmp_path / "crux.db"
    fid = web_verify.run(input={"email": "b@example.com"}, store=SQLiteStore(path)).flow_id
    outcome: dict[str, Any] = {}

    def request() -> None:  # a WSGI request thread: its own store object, the code importable
        store = SQLiteStore(path)
        signal_flow(fid, "verified", {}, store=store)
        outcome["result"] = resume(fid, store=store)

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(10)
    result = outcome["result"]
    assert (result.status, result.value, result.name) == (
        "completed",
        "welcome b@example.com",
        "w-web-verify",
    )


def _spawn_worker(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_procs", "worker", str(db), *args],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _effects(path: Path) -> Counter[tuple[str, str, str]]:
    """(flow id, step, start|done) -> how many times, from the side-effect log."""
    if not path.exists():
        return Counter()
    return Counter(tuple(line.split()[1:]) for line in path.read_text().splitlines())  # type: ignore[misc]


def test_four_worker_processes_share_200_flows_and_run_each_step_once(tmp_path: Path) -> None:
    from tests.worker_procs import chain

    db, log = tmp_path / "crux.db", tmp_path / "effects.log"
    store = SQLiteStore(db, synchronous="NORMAL")
    ids = [chain.run(input={"log": str(log)}, store=store).flow_id for _ in range(200)]
    procs = [_spawn_worker(db, "--poll", "50ms") for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None and json.loads(p.stdout.readline())["ready"]
        for fid in ids:  # while the workers poll
            signal_flow(fid, "go", {}, store=store)
        wait_until(
            lambda: len(store.list_flows(status="completed", limit=1000)) == 200,
            60,
            "all flows complete",
        )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=30) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err

    effects = _effects(log)
    for fid in ids:
        for step in ("one", "two", "three"):
            assert effects[(fid, step, "start")] == effects[(fid, step, "done")] == 1
    advanced = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    per_flow = Counter(a["flow_id"] for a in advanced)
    # Two worker passes per flow (the signal, then the sleep): each by exactly one worker.
    assert per_flow == Counter({fid: 2 for fid in ids})
    assert Counter(a["status"] for a in advanced) == Counter(suspended=200, completed=200)


def test_a_flow_whose_worker_was_killed_mid_step_is_finished_by_another(tmp_path: Path) -> None:
    from tests.worker_procs import chain

    db, log = tmp_path / "crux.db", tmp_path / "effects.log"
    store = SQLiteStore(db, synchronous="NORMAL")
    fid = chain.run(input={"log": str(log), "nap": "0s"}, store=store).flow_id
    signal_flow(fid, "go", {}, store=store)
    doomed = _spawn_worker(db, "--lease-ttl", "1s", env={"CRUX_TEST_HANG": "two"})
    try:
        wait_until(lambda: _effects(log)[(fid, "two", "start")] == 1, 30, "step two starts")
    finally:
        doomed.kill()
        doomed.communicate(timeout=10)
    worker = Worker(store, [chain])
    wait_until(lambda: worker.run_once() == 1, 10, "the lease expires and the flow is taken over")
    assert status(fid, store) == "completed"
    effects = _effects(log)
    assert effects[(fid, "one", "done")] == 1
    assert effects[(fid, "two", "start")] == 2  # interrupted, so run again (at least once)
    assert effects[(fid, "two", "done")] == 1
    assert effects[(fid, "three", "done")] == 1
