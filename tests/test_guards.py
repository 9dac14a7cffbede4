"""The two guards of one flow (issue 23): ``@flow(timeout=)`` cancels a flow
unfinished that long after it was created (its children with it), found by the
worker's due scan through the parked flow's ``wake_at``; ``@flow(max_recoveries=)``
ends a flow whose runners keep losing its lease with nothing recorded ``"failed"``
with ``PoisonFlowError`` instead of running it again. On every store, with a fake
clock (no sleeping); the real crashes (``os._exit``, SIGKILL) are in
``test_guards_procs.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

from crux_gen import (
    Child,
    CruxError,
    FlowClosedError,
    FlowContext,
    PoisonFlowError,
    Sleep,
    Step,
    Suspend,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.clock import FakeClock
from crux_gen.errors import InvalidTypeError, InvalidValueError
from crux_gen.flow import Registry, flow
from crux_gen.migrate import migrate
from crux_gen.records import COMPLETED, WAITING, StoredRecord, Write
from crux_gen.worker import Worker

REGISTRY = Registry()
CALLS: list[str] = []
CLOCK: list[FakeClock] = []


def called(name: str, value: Any = None) -> Any:
    CALLS.append(name)
    return value


@pytest.fixture(autouse=True)
def _fresh(clock: FakeClock) -> Any:
    CALLS.clear()
    CLOCK[:] = [clock]
    yield
    CLOCK.clear()


@flow("gd-waiter", registry=REGISTRY)
def waiter(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


@flow("gd-parent", registry=REGISTRY, timeout="1h")
def parent(ctx: FlowContext) -> Any:
    """Waits for its child, which waits for a signal: both parked, nothing due."""
    return (yield Child(waiter, flow_id=f"{ctx.flow_id}-child"))


@flow("gd-long-wait", registry=REGISTRY, timeout="1h")
def long_wait(ctx: FlowContext) -> Any:
    """A month-long wait, under an hour's timeout."""
    return (yield Suspend("go", timeout="30d"))


@flow("gd-in-time", registry=REGISTRY, timeout="1h")
def in_time(ctx: FlowContext) -> Any:
    got = yield Suspend("go")
    return (yield Step("after", lambda: called("after", got)))


def slow_step() -> str:
    CALLS.append("slow")
    CLOCK[0].advance("2h")  # the deadline passes while the step is in hand
    return "slow done"


@flow("gd-slow", registry=REGISTRY, timeout="1h")
def slow(ctx: FlowContext) -> Any:
    first = yield Step("slow", slow_step)
    second = yield Step("next", lambda: called("next"))
    return [first, second]


@flow("gd-napper", registry=REGISTRY, timeout="30m")
def napper(ctx: FlowContext) -> Any:
    yield Sleep("nap", "10m")
    return (yield Step("woke", lambda: called("woke", "woke")))


@flow("gd-steps", registry=REGISTRY, max_recoveries=2)
def steps(ctx: FlowContext) -> Any:
    return (yield Step("work", lambda: called("work", "worked")))


FLOWS = [waiter, parent, long_wait, in_time, slow, napper, steps]


def worker(store: Any) -> Worker:
    return Worker(store, FLOWS)


# -- the options ------------------------------------------------------------------------


def test_timeout_and_max_recoveries_are_checked_at_decoration() -> None:
    registry = Registry()

    def body(ctx: FlowContext) -> Any:
        yield Step("s", lambda: 1)

    plain = flow("gd-plain", registry=registry)(body)
    assert (plain.timeout, plain.max_recoveries) == (None, 10)
    assert flow("gd-str", registry=registry, timeout="1h")(body).timeout == timedelta(hours=1)
    given = timedelta(minutes=5)
    assert flow("gd-td", registry=registry, timeout=given)(body).timeout == given
    assert flow("gd-secs", registry=registry, timeout=90)(body).timeout == timedelta(seconds=90)
    assert flow("gd-zero", registry=registry, max_recoveries=0)(body).max_recoveries == 0
    for bad, error in (
        ("1 hour", InvalidValueError),
        ("0s", InvalidValueError),
        (0, InvalidValueError),
        (-5, InvalidValueError),
        (timedelta(0), InvalidValueError),
        (True, InvalidTypeError),
        ([1], InvalidTypeError),
    ):
        with pytest.raises(error) as caught:
            flow("gd-bad", registry=registry, timeout=bad)
        assert "@flow('gd-bad') timeout" in str(caught.value) and repr(bad) in str(caught.value)
    for bad, error in (
        (-1, InvalidValueError),
        (1.5, InvalidTypeError),
        ("5", InvalidTypeError),
        (True, InvalidTypeError),
        (None, InvalidTypeError),
    ):
        with pytest.raises(error) as caught:
            flow("gd-bad", registry=registry, max_recoveries=bad)  # type: ignore[arg-type]
        text = str(caught.value)
        assert "@flow('gd-bad') max_recoveries" in text and repr(bad) in text
        assert isinstance(caught.value, CruxError)
    assert "gd-bad" not in registry


# -- timeout ----------------------------------------------------------------------------


def test_a_parked_flow_is_cancelled_at_its_timeout_by_a_worker_pass_with_its_child(
    store: Any, clock: FakeClock
) -> None:
    r = parent.run(store=store)
    created = get_flow(r.flow_id, store=store).created_at
    child_id = f"{r.flow_id}-child"
    assert (r.status, get_flow(child_id, store=store).status) == ("suspended", "suspended")
    # The parked parent is due when it times out: the due scan finds it there.
    assert get_flow(r.flow_id, store=store).wake_at == created + timedelta(hours=1)
    clock.advance("59m")
    assert worker(store).run_once() == 0  # nothing due yet
    assert get_flow(r.flow_id, store=store).status == "suspended"
    clock.advance("2m")
    assert worker(store).run_once() == 1
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.cancel_reason) == ("cancelled", "timed out")
    child = get_flow(child_id, store=store)
    assert child.status == "cancelled"
    assert child.cancel_reason == f"its parent flow {r.flow_id!r} was cancelled: timed out"


def test_a_flow_parked_on_a_long_suspend_is_cancelled_at_its_timeout(
    store: Any, clock: FakeClock
) -> None:
    r = long_wait.run(store=store)
    info = get_flow(r.flow_id, store=store)
    assert info.wake_at == info.created_at + timedelta(hours=1)  # not the wait's 30 days
    clock.advance("1h")
    assert worker(store).run_once() == 1
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.cancel_reason) == ("cancelled", "timed out")
    with pytest.raises(FlowClosedError):  # the wait is over: a signal now is refused
        signal_flow(r.flow_id, "go", "late", store=store)


def test_a_flow_that_finishes_in_time_is_not_cancelled(store: Any, clock: FakeClock) -> None:
    r = in_time.run(store=store)
    clock.advance("30m")
    signal_flow(r.flow_id, "go", "ok", store=store)
    assert worker(store).run_once() == 1
    clock.advance("2h")
    assert worker(store).run_once() == 0
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.value, info.cancel_reason) == ("completed", "ok", None)
    assert CALLS == ["after"]


def test_a_step_in_hand_at_the_deadline_is_recorded_then_the_flow_is_cancelled(
    store: Any, clock: FakeClock
) -> None:
    r = slow.run(store=store)
    assert (r.status, r.cancel_reason) == ("cancelled", "timed out")
    assert CALLS == ["slow"]  # the next step never ran
    info = get_flow(r.flow_id, store=store)
    assert info.status == "cancelled"
    assert [(h.name, h.state, h.result) for h in info.history] == [
        ("slow", "completed", "slow done")
    ]


def test_a_timer_after_the_timeout_wakes_the_flow_at_its_timeout_and_resume_cancels_it(
    store: Any, clock: FakeClock
) -> None:
    r = napper.run(store=store)
    created = get_flow(r.flow_id, store=store).created_at
    assert r.wake_at == created + timedelta(minutes=10)  # its own wake comes first
    clock.advance("10m")
    assert worker(store).run_once() == 1
    assert get_flow(r.flow_id, store=store).status == "completed"

    late = napper.run(store=store)
    clock.advance("31m")  # no worker ran meanwhile: resume itself cancels it
    again = resume(late.flow_id, store=store, flows=FLOWS)
    assert (again.status, again.cancel_reason) == ("cancelled", "timed out")
    assert CALLS == ["woke"]


def test_a_started_flow_not_run_before_its_timeout_is_cancelled_unrun(
    store: Any, clock: FakeClock
) -> None:
    handle = in_time.start(store=store)
    clock.advance("2h")
    assert worker(store).run_once() == 1
    info = get_flow(handle.flow_id, store=store)
    assert (info.status, info.cancel_reason, info.history) == ("cancelled", "timed out", ())


# -- recoveries: the store's count --------------------------------------------------------


def lapse(store: Any, clock: FakeClock) -> None:
    clock.advance(store.lease_ttl + timedelta(seconds=1))


def test_each_claim_after_a_lapsed_lease_with_nothing_recorded_counts_one(
    store: Any, clock: FakeClock
) -> None:
    store.start("f1", "gd-steps", "null", "w0", clock.time())
    assert store.load("f1").recoveries == 0
    for n, owner in enumerate(("w1", "w2", "w3"), start=1):
        lapse(store, clock)
        claimed = store.claim("f1", owner, clock.time())
        assert claimed.recoveries == n == store.load("f1").recoveries
        assert claimed.claimed_at == clock.time()
    # The same runner taking its own lapsed lease again, or a lease let go: no count.
    lapse(store, clock)
    assert store.claim("f1", "w3", clock.time()).recoveries == 3
    store.release("f1", "w3")
    assert store.claim("f1", "w4", clock.time()).recoveries == 3


def test_any_record_since_the_claim_resets_the_count(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "gd-steps", "null", "w0", t)
    lapse(store, clock)
    store.claim("f1", "w1", clock.time())
    lapse(store, clock)
    assert store.claim("f1", "w2", clock.time()).recoveries == 2
    now = clock.time()
    step = StoredRecord(0, "step", "work", COMPLETED, '"x"', attempts=1, started_at=now)
    store.commit("f1", "w2", now, Write((step,)))  # a step's record (the one-statement path)
    lapse(store, clock)
    assert store.claim("f1", "w3", clock.time()).recoveries == 0
    # A wait written, then resolved in place by a later runner: records too.
    now = clock.time()
    wait = StoredRecord(1, "suspend", "go", WAITING, started_at=now)
    store.commit("f1", "w3", now, Write((wait,)))
    lapse(store, clock)
    assert store.claim("f1", "w4", clock.time()).recoveries == 0
    lapse(store, clock)
    now = clock.time()
    assert store.claim("f1", "w5", now).recoveries == 1  # w4 recorded nothing
    done = wait._replace(state=COMPLETED, result='"ok"', attempts=1, finished_at=now)
    store.commit("f1", "w5", now, Write((done,)))
    lapse(store, clock)
    assert store.claim("f1", "w6", clock.time()).recoveries == 0


def test_a_park_and_a_retry_reset_the_count(store: Any, clock: FakeClock) -> None:
    store.start("f1", "gd-steps", "null", "w0", clock.time())
    for owner in ("w1", "w2"):
        lapse(store, clock)
        store.claim("f1", owner, clock.time())
    now = clock.time()
    park = Write((), status="suspended", waiting_for="go", wait_kind="suspend")
    store.commit("f1", "w2", now, park)
    assert store.load("f1").recoveries == 0
    failed = Write((), status="failed", error='{"type":"x.Y","message":"m","traceback":""}')
    for owner in ("w3", "w4"):
        store.claim("f1", owner, clock.time())
        lapse(store, clock)
    store.claim("f1", "w5", clock.time())
    assert store.load("f1").recoveries == 2
    store.commit("f1", "w5", clock.time(), failed)
    store.retry_failed("f1", clock.time())
    assert store.load("f1").recoveries == 0


def test_migrate_copies_the_count(store: Any, target: Any, clock: FakeClock) -> None:
    store.start("f1", "gd-steps", "null", "w0", clock.time())
    for owner in ("w1", "w2"):
        lapse(store, clock)
        store.claim("f1", owner, clock.time())
    store.release("f1", "w2")
    migrate(store, target)
    copied = target.load("f1")
    assert (copied.recoveries, copied.lease_owner) == (2, None)
    assert copied.claimed_at == store.load("f1").claimed_at


# -- recoveries: the poison flow ----------------------------------------------------------


def test_a_claim_above_max_recoveries_fails_the_flow_with_poison_flow_error_unrun(
    store: Any, clock: FakeClock
) -> None:
    handle = steps.start(store=store)
    for n in range(3):  # runners that died in the step: claimed, nothing recorded
        assert store.claim(handle.flow_id, f"dead-{n}", clock.time()).recoveries == n
        lapse(store, clock)
    assert worker(store).run_once() == 1
    info = get_flow(handle.flow_id, store=store)
    assert info.status == "failed" and CALLS == []
    assert info.error is not None and info.error.type == "crux_gen.guards.PoisonFlowError"
    assert f"flow {handle.flow_id!r} (gd-steps): 3 claims in a row" in info.error.message
    assert "max_recoveries=2" in info.error.message
    # retry: the count starts again, and the flow runs.
    store.retry_failed(handle.flow_id, clock.time())
    assert worker(store).run_once() == 1
    info = get_flow(handle.flow_id, store=store)
    assert (info.status, info.value, CALLS) == ("completed", "worked", ["work"])


def test_a_claim_at_max_recoveries_still_runs_the_flow(store: Any, clock: FakeClock) -> None:
    handle = steps.start(store=store)
    for n in range(2):
        assert store.claim(handle.flow_id, f"dead-{n}", clock.time()).recoveries == n
        lapse(store, clock)
    assert worker(store).run_once() == 1
    info = get_flow(handle.flow_id, store=store)
    assert (info.status, info.value, CALLS) == ("completed", "worked", ["work"])
    assert store.load(handle.flow_id).recoveries == 0  # its end was recorded


def test_poison_flow_error_is_exported_and_a_crux_error() -> None:
    import crux_gen

    assert "PoisonFlowError" in crux_gen.__all__
    exc = PoisonFlowError("f1", "gd-steps", 3, 2)
    assert isinstance(exc, CruxError)
    assert attrs.has(type(exc)) is False and exc.recoveries == 3


def test_a_concurrent_worker_ends_a_poisoned_and_a_timed_out_flow_in_one_pass(
    store: Any, clock: FakeClock
) -> None:
    poisoned = steps.start(store=store).flow_id
    for n in range(3):
        store.claim(poisoned, f"dead-{n}", clock.time())
        lapse(store, clock)
    late = parent.run(store=store).flow_id
    fine = steps.start(store=store).flow_id
    clock.advance("1h")
    assert Worker(store, FLOWS, concurrency=4).run_once() == 3
    assert get_flow(poisoned, store=store).status == "failed"
    assert get_flow(late, store=store).cancel_reason == "timed out"
    assert get_flow(f"{late}-child", store=store).status == "cancelled"
    assert (get_flow(fine, store=store).status, CALLS) == ("completed", ["work"])
