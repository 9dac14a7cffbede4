"""The promise, one test per rule and per defect found, on every store.

A completed step never runs again, a signal received in time is never lost or
used twice, and a replay takes the same path through the flow body as the
first run. (Cross-process versions of these live in ``test_processes.py``.)
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    All,
    Child,
    FakeClock,
    FlowClosedError,
    FlowContext,
    LeaseLostError,
    ParkingWarning,
    Retry,
    Sleep,
    Step,
    StoreError,
    Suspend,
    WaitUntil,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.executor import Executor
from crux_gen.stores.sqlite import SQLiteStore


class HookedClock(FakeClock):
    """A fake clock that runs *on_sleep* (once) when a runner sleeps out a backoff."""

    on_sleep: Callable[[], None] | None = None

    def sleep(self, seconds: float) -> None:
        hook, self.on_sleep = self.on_sleep, None
        super().sleep(seconds)
        if hook is not None:
            hook()


@pytest.fixture
def clock() -> FakeClock:
    return HookedClock()


# -- a completed step never runs again ------------------------------------------------


def test_a_runner_that_lost_its_lease_in_a_backoff_calls_the_step_no_more(
    store: Any, clock: HookedClock
) -> None:
    charges: list[str] = []

    def charge() -> str:
        charges.append("charge")
        if len(charges) == 1:
            raise ConnectionError("the card processor timed out")
        return f"charged on try {len(charges)}"

    @flow("charge-once")
    def body(ctx: FlowContext) -> Any:
        return (yield Step("charge", charge, retry=Retry(attempts=3, backoff="fixed", delay="1s")))

    other: list[Any] = []

    def another_runner_takes_over() -> None:
        # The first runner is frozen in its backoff past its lease; another resumes.
        clock.advance(store.lease_ttl * 2)
        other.append(resume("fixed-1", store=store, flows=[body]))

    clock.on_sleep = another_runner_takes_over
    with pytest.raises(LeaseLostError):
        body.run(store=store, flow_id="fixed-1")

    assert [(r.status, r.value) for r in other] == [("completed", "charged on try 2")]
    assert charges == ["charge", "charge"]  # not a third time by the first runner
    info = get_flow("fixed-1", store=store)
    assert (info.status, info.value, info.history[0].attempts) == (
        "completed",
        "charged on try 2",
        2,
    )


def test_a_flow_cancelled_between_two_steps_never_starts_the_next(store: Any) -> None:
    between, go = threading.Event(), threading.Event()
    ran: list[str] = []

    @flow("cancel-between")
    def body(ctx: FlowContext) -> Any:
        yield Step("one", lambda: ran.append("one"))
        between.set()
        assert go.wait(10)
        yield Step("two", lambda: ran.append("two"))

    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(body.run(store=store, flow_id="c-1")))
    runner.start()
    assert between.wait(10)
    assert cancel_flow("c-1", "customer left", store=store) is True
    go.set()
    runner.join(10)

    assert [(r.status, r.cancel_reason) for r in results] == [("cancelled", "customer left")]
    assert ran == ["one"]
    info = get_flow("c-1", store=store)
    assert [(h.name, h.state) for h in info.history] == [("one", "completed")]
    assert store.load("c-1").lease_owner is None


def test_a_cancel_is_seen_before_a_wait_until_condition_is_called(store: Any) -> None:
    checked: list[str] = []

    @flow("cancel-condition")
    def body(ctx: FlowContext) -> Any:
        yield Step("one", lambda: "x")
        cancel_flow(ctx.flow_id, "stop", store=store)  # lands while the body runs
        yield WaitUntil("ready", lambda: checked.append("checked") or True)

    r = body.run(store=store)
    assert (r.status, checked) == ("cancelled", [])


# -- a signal received in time is never lost --------------------------------------------


def test_a_signal_stored_in_time_while_the_flow_replays_is_consumed_past_the_deadline(
    store: Any, clock: FakeClock
) -> None:
    hook: list[Callable[[], None]] = []

    @flow("late-replay")
    def body(ctx: FlowContext) -> Any:
        yield Step("one", lambda: 1)
        if ctx.is_replaying and hook:
            hook.pop()()  # meanwhile, in another process: a signal, then time passes
        return (yield Suspend("approved", timeout="1h"))

    r = body.run(store=store)
    assert r.status == "suspended"
    clock.advance("59m")

    def signal_in_time_then_time_passes() -> None:
        signal_flow(r.flow_id, "approved", {"ok": True}, store=store)
        clock.advance("2m")

    hook.append(signal_in_time_then_time_passes)
    r = body.run(resume=r.flow_id, store=store)
    assert (r.status, r.value) == ("completed", {"ok": True})
    assert [s.state for s in get_flow(r.flow_id, store=store).signals] == ["consumed"]


def test_a_zero_timeout_wait_takes_a_signal_sent_in_the_step_before_it(store: Any) -> None:
    @flow("zero-timeout")
    def body(ctx: FlowContext) -> Any:
        yield Step("ask", lambda: signal_flow(ctx.flow_id, "answer", 42, store=store))
        return (yield Suspend("answer", timeout=0))

    r = body.run(store=store)
    assert (r.status, r.value) == ("completed", 42)


def test_a_late_signal_for_a_claimed_flow_past_its_deadline_is_refused(
    store: Any, clock: FakeClock
) -> None:
    refused: list[BaseException] = []

    @flow("late-claimed")
    def body(ctx: FlowContext) -> Any:
        yield Step("one", lambda: 1)
        if ctx.is_replaying:
            try:
                signal_flow(ctx.flow_id, "approved", "too late", store=store)
            except FlowClosedError as exc:
                refused.append(exc)
        return (yield Suspend("approved", timeout="1h"))

    r = body.run(store=store)
    clock.advance("2h")
    r = body.run(resume=r.flow_id, store=store)

    assert r.status == "expired"
    assert len(refused) == 1 and "expired" in str(refused[0])
    assert get_flow(r.flow_id, store=store).signals == ()  # nothing stored


def test_thousands_of_queued_signals_are_drained_in_linear_work(store: Any) -> None:
    n = 2400
    returned = {"signals": 0}
    commit = store.commit

    def counting_commit(*args: Any, **kwargs: Any) -> Any:
        outcome = commit(*args, **kwargs)
        returned["signals"] += len(outcome.signals)
        return outcome

    @flow("drain")
    def body(ctx: FlowContext) -> Any:
        total = 0
        for _ in range(n):
            total += yield Suspend("tick")
        return total

    r = body.run(store=store, flow_id="drain-1")
    for i in range(n):
        signal_flow("drain-1", "tick", i, store=store)
    store.commit = counting_commit
    r = body.run(resume="drain-1", store=store)

    assert (r.status, r.value) == ("completed", sum(range(n)))
    # Each signal is handed to the runner a bounded number of times (it was
    # handed out again by every park: 2,400 signals took n²/2 = 2.9 million).
    assert returned["signals"] <= n
    states = {s.state for s in get_flow("drain-1", store=store).signals}
    assert states == {"consumed"}


@pytest.mark.parametrize("end", ["completed", "failed", "expired", "cancelled"])
def test_signals_still_pending_when_a_flow_finishes_are_kept_as_unused(
    store: Any, clock: FakeClock, end: str
) -> None:
    @flow("leaves-signals")
    def body(ctx: FlowContext) -> Any:
        yield Suspend("go", timeout="1h")
        if ctx.input == "fail":
            raise RuntimeError("the flow fails")
        return "done"

    r = body.run(store=store, input="fail" if end == "failed" else None)
    signal_flow(r.flow_id, "other", "never awaited", store=store)
    if end == "expired":
        clock.advance("2h")
    elif end == "cancelled":
        cancel_flow(r.flow_id, "stop", store=store)
    else:
        signal_flow(r.flow_id, "go", 1, store=store)
    r = body.run(resume=r.flow_id, store=store)
    assert r.status == end
    states = {s.name: s.state for s in get_flow(r.flow_id, store=store).signals}
    assert states["other"] == "unused"
    assert store.due(clock.time() + 10**6, 10) == []  # never a reason to run it


# -- replays take the same path ---------------------------------------------------------


def test_a_failing_wait_until_condition_is_thrown_in_and_replayed_without_calling_it(
    store: Any, clock: FakeClock
) -> None:
    calls: list[str] = []

    def condition() -> bool:
        calls.append("condition")
        raise KeyError("no such order")

    @flow("failing-condition")
    def body(ctx: FlowContext) -> Any:
        try:
            yield WaitUntil("paid", condition, every="1m")
        except KeyError:
            caught = True
        yield Sleep("nap", "1h")
        return caught

    r = body.run(store=store)
    assert r.status == "suspended" and calls == ["condition"]
    history = get_flow(r.flow_id, store=store).history
    assert [(h.name, h.state) for h in history] == [("paid", "failed"), ("nap", "waiting")]
    clock.advance("2h")
    r = body.run(resume=r.flow_id, store=store)
    assert (r.status, r.value) == ("completed", True)
    assert calls == ["condition"]


# -- parking edge cases -------------------------------------------------------------------


def test_a_finally_yielding_a_non_command_while_parking_still_parks(store: Any) -> None:
    @flow("odd-finally")
    def body(ctx: FlowContext) -> Any:
        try:
            return (yield Suspend("go"))
        finally:
            yield "cleanup"  # not a command

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = body.run(store=store)
    assert (r.status, r.waiting_for) == ("suspended", "go")
    assert any(
        issubclass(w.category, ParkingWarning) and "str (not a command)" in str(w.message)
        for w in caught
    )
    assert get_flow(r.flow_id, store=store).status == "suspended"


def test_a_body_that_swallows_generator_exit_still_parks(store: Any) -> None:
    @flow("stubborn")
    def body(ctx: FlowContext) -> Any:
        while True:
            try:
                yield Suspend("go")
            except GeneratorExit:
                continue  # keeps yielding after close(): Python calls that a RuntimeError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = body.run(store=store)
    assert (r.status, r.waiting_for) == ("suspended", "go")
    assert any(issubclass(w.category, ParkingWarning) for w in caught)
    assert get_flow(r.flow_id, store=store).status == "suspended"


# -- I/O failures ---------------------------------------------------------------------------


def _limit_pages(store: SQLiteStore, pages: int | None) -> None:
    """Make the file full (no page past *pages*), or give it room again."""
    conn = store._conn()
    conn.execute(f"PRAGMA max_page_count = {pages or 1073741823}")


def test_a_full_disk_is_a_store_error_naming_the_file_and_the_step_runs_once_after(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "full.db", clock=clock, lease_ttl="10s")
    ran: list[int] = []

    @flow("fills-the-disk")
    def body(ctx: FlowContext) -> Any:
        yield Step("small", lambda: "ok")
        big = yield Step("big", lambda: ran.append(1) or "x" * 200_000)
        return len(big)

    first = body.run(store=store, flow_id="full-1", input=None)
    assert first.status == "completed"  # warm the file up, then fill it
    used = store._conn().execute("PRAGMA page_count").fetchone()[0]
    _limit_pages(store, used)

    with pytest.raises(StoreError, match=r"full\.db.*full") as info:
        body.run(store=store, flow_id="full-2")
    assert "Check free disk space" in str(info.value)
    assert ran == [1, 1]
    assert [h.name for h in get_flow("full-2", store=store).history] == ["small"]

    _limit_pages(store, None)  # space returns
    clock.advance("11s")  # the lease left behind, if any, has lapsed
    r = resume("full-2", store=store, flows=[body])
    assert (r.status, r.value) == ("completed", 200_000)
    assert ran == [1, 1, 1]  # the interrupted step ran once more, the completed one never
    r = resume("full-2", store=store, flows=[body])
    assert ran == [1, 1, 1]


def test_a_read_only_store_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ro.db")

    @flow("read-only")
    def body(ctx: FlowContext) -> Any:
        return (yield Step("one", lambda: 1))

    store._conn().execute("PRAGMA query_only = 1")
    with pytest.raises(StoreError, match=r"ro\.db.*readonly"):
        body.run(store=store, flow_id="ro-1")
    store._conn().execute("PRAGMA query_only = 0")
    assert [f.id for f in store.list_flows()] == []  # nothing half-written


def test_code_that_now_returns_early_is_non_determinism_and_leaves_the_flow_untouched(
    store: Any,
) -> None:
    from crux_gen import NonDeterminismError

    ran: list[str] = []

    @flow("shortened")
    def before(ctx: FlowContext) -> Any:
        yield Step("one", lambda: ran.append("one"))
        yield Step("two", lambda: ran.append("two"))
        return (yield Suspend("go"))

    r = before.run(store=store)
    stored = store.load(r.flow_id)

    @flow("shortened")
    def after(ctx: FlowContext) -> Any:  # a deploy dropped step "two"
        yield Step("one", lambda: ran.append("one"))
        return "done early"

    with pytest.raises(NonDeterminismError, match=r"position 1 recorded Step\('two'\)"):
        after.run(resume=r.flow_id, store=store)
    assert store.load(r.flow_id) == stored  # not completed, nothing written
    assert ran == ["one", "two"]


def test_a_retry_is_logged_with_a_compact_duration(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("timed out")
        return "ok"

    @flow("logged-retry")
    def body(ctx: FlowContext) -> Any:
        return (yield Step("call", flaky, retry=Retry(attempts=2, backoff="fixed", delay="1500ms")))

    with caplog.at_level("INFO", logger="crux_gen"):
        assert body.run(store=store).value == "ok"
    [line] = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert line.endswith("retrying in 1.5s"), line


@flow("taken-then-parked")
def _taken_then_parked(ctx: FlowContext) -> Any:
    yield Step("s", lambda: 1)
    first = yield Suspend("a")
    second = yield Suspend("b")
    again = yield Suspend("a")
    return [first, second, again]


def test_a_signal_taken_before_a_park_is_consumed_with_its_record_if_the_park_fails(
    store: Any,
) -> None:
    """Found hunting the PostgreSQL stress: a step's result goes ahead of a park that
    may bounce, and the record of a ``Suspend`` taken between them went with it while
    its signal's consumption waited for the park. A crash (here a store error)
    between the two writes left the record holding the signal and the signal
    pending: the next ``Suspend`` of that name took it a second time."""
    _taken_then_parked.start(store=store, flow_id="tp")
    signal_flow("tp", "a", "a1", store=store)
    commit = store.commit

    def crash_at_the_park(flow_id: str, owner: str, now: float, write: Any) -> Any:
        if write.status is not None:
            raise StoreError("the server went away before the park")
        return commit(flow_id, owner, now, write)

    store.commit = crash_at_the_park
    with pytest.raises(StoreError):
        _taken_then_parked.run(resume="tp", store=store)
    store.commit = commit
    stored = get_flow("tp", store=store)
    taken = {r.position for r in store.load("tp").records if r.name == "a"}
    assert [(s.state, s.position) for s in stored.signals] == [("consumed", 1)]
    assert taken == {1}
    signal_flow("tp", "b", "b1", store=store)
    signal_flow("tp", "a", "a2", store=store)
    assert _taken_then_parked.run(resume="tp", store=store).value == ["a1", "b1", "a2"]


def test_a_child_whose_lease_another_runner_took_does_not_throw_away_its_parents_steps(
    store: Any, clock: FakeClock
) -> None:
    """Found hunting the PostgreSQL stress: an ``All``'s child run in the parent's loop
    lost its lease (its process stalled, another worker took the child), and the
    parent's whole tree was let go, the result of its step that had just returned
    with it: the step ran again. Only the child's run stops; the parent keeps its
    step and waits for the child, which its new runner finishes."""
    a_runs: list[int] = []
    stolen = threading.Event()

    def slow() -> str:  # the child's step: meanwhile another runner takes the child
        if not stolen.is_set():
            clock.advance("1h")  # its lease lapsed (by the store's clock) ...
            store.claim("tl-kid", "thief", clock.time())  # ... and the thief took it
            stolen.set()
        return "kid"

    def a() -> str:  # the parent's step, in flight until after the child's write
        assert stolen.wait(10)
        time.sleep(0.3)
        a_runs.append(1)
        return "a"

    @flow("tl-kid")
    def kid(ctx: FlowContext) -> Any:
        return (yield Step("slow", slow))

    @flow("tl-parent")
    def parent(ctx: FlowContext) -> Any:
        return (yield All([Step("a", a), Step("b", lambda: "b"), Child(kid, flow_id="tl-kid")]))

    first = parent.run(store=store, flow_id="tl")
    assert first.status == "suspended"  # waiting for the child its thief holds
    assert [r.state for r in store.load("tl").records if r.name == "a"] == ["completed"]
    store.release("tl-kid", "thief")  # the thief's process ended: the child is due
    assert resume("tl-kid", store=store).status == "completed"
    assert resume("tl", store=store).value == ["a", "b", "kid"]
    assert a_runs == [1]  # the parent's step ran once


@flow("wound-down")
def _wound_down(ctx: FlowContext) -> Any:
    first = yield Suspend("a")
    yield Step("after", lambda: None)
    again = yield Suspend("a")
    return [first, again]


def test_a_run_wound_down_by_an_interrupted_step_writes_the_signals_it_took(store: Any) -> None:
    """A step function interrupted (``KeyboardInterrupt``, ``SystemExit``) winds the
    loop down: every run in hand writes what it holds. A run that had just taken a
    signal wrote the ``Suspend``'s record without the signal's consumption, and the
    next ``Suspend`` of that name took the same signal again."""
    _wound_down.start(store=store, flow_id="wd")
    signal_flow("wd", "a", "a1", store=store)
    executor = Executor(store, concurrency=2)
    executor.take(_wound_down, store.claim("wd", "o", store.clock.time()), "o")
    executor._crash = KeyboardInterrupt()  # another flow's step was interrupted (Calls)
    with pytest.raises(KeyboardInterrupt):
        executor.step()  # the run had taken "a1" and was to call "after"
    executor.let_go()
    assert [(s.state, s.position) for s in get_flow("wd", store=store).signals] == [("consumed", 0)]
    signal_flow("wd", "a", "a2", store=store)
    assert _wound_down.run(resume="wd", store=store).value == ["a1", "a2"]
