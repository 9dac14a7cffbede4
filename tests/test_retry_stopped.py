"""retry_flow of cancelled and expired flows, on every store: they go on from where
they stopped, every completed step and consumed signal kept; an expired wait is
waited for again with its timeout counted from the retry; any other status is
refused with nothing changed."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from crux_gen import (
    Child,
    CruxError,
    FakeClock,
    FlowContext,
    FlowNotFoundError,
    FlowStateError,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    pause_flow,
    resume,
    retry_flow,
    signal_flow,
)
from crux_gen.records import StoredRecord, Write


class Calls(Counter[str]):
    def __call__(self, name: str, value: Any = None) -> Any:
        self[name] += 1
        return value if value is not None else name


def test_a_cancelled_flow_retried_runs_its_remaining_steps_only(store: Any) -> None:
    calls = Calls()

    @flow("retry-cancelled")
    def three(ctx: FlowContext) -> Any:
        yield Step("one", lambda: calls("one"))
        yield Step("two", lambda: (cancel_flow(ctx.flow_id, "oops", store=store), calls("two"))[1])
        return (yield Step("three", lambda: calls("three")))

    r = three.run(store=store, flow_id="retry-me")
    assert (r.status, r.cancel_reason) == ("cancelled", "oops")
    assert retry_flow("retry-me", store=store) is None
    info = get_flow("retry-me", store=store)
    assert (info.status, info.cancel_reason) == ("suspended", None)
    assert [h.name for h in info.history] == ["one", "two"]  # every completed step kept
    assert store.due(store.clock.time(), 10) == ["retry-me"]
    done = resume("retry-me", store=store, flows=[three])
    assert (done.status, done.value) == ("completed", "three")
    assert calls == Counter({"one": 1, "two": 1, "three": 1})


def test_a_cancelled_wait_keeps_its_consumed_signal_and_its_unused_ones_wait_again(
    store: Any,
) -> None:
    calls = Calls()

    @flow("retry-cancelled-wait")
    def two_waits(ctx: FlowContext) -> Any:
        first = yield Suspend("first")
        yield Step("between", lambda: calls("between"))
        second = yield Suspend("second")
        return [first, second]

    r = two_waits.run(store=store)
    signal_flow(r.flow_id, "first", 1, store=store)
    assert resume(r.flow_id, store=store, flows=[two_waits]).status == "suspended"
    # Cancelled while parked on its second wait: that wait is waited for again.
    cancel_flow(r.flow_id, "by mistake", store=store)
    retry_flow(r.flow_id, store=store)
    assert resume(r.flow_id, store=store, flows=[two_waits]).waiting_for == "second"
    signal_flow(r.flow_id, "second", 2, store=store)
    done = resume(r.flow_id, store=store, flows=[two_waits])
    assert (done.status, done.value) == ("completed", [1, 2])
    assert calls == Counter({"between": 1})
    states = [(s.name, s.state) for s in get_flow(r.flow_id, store=store).signals]
    assert states == [("first", "consumed"), ("second", "consumed")]


def test_a_signal_left_unused_by_the_cancel_is_pending_again(store: Any) -> None:
    @flow("retry-unused")
    def later(ctx: FlowContext) -> Any:
        yield Suspend("start")
        return (yield Suspend("go"))

    r = later.run(store=store)
    signal_flow(r.flow_id, "go", "early", store=store)  # before its wait
    cancel_flow(r.flow_id, "stop", store=store)
    assert [s.state for s in get_flow(r.flow_id, store=store).signals] == ["unused"]
    retry_flow(r.flow_id, store=store)
    assert [s.state for s in get_flow(r.flow_id, store=store).signals] == ["pending"]
    signal_flow(r.flow_id, "start", None, store=store)
    assert resume(r.flow_id, store=store, flows=[later]).value == "early"


def test_an_expired_wait_is_waited_for_again_with_a_fresh_timeout(
    store: Any, clock: FakeClock
) -> None:
    calls = Calls()

    @flow("retry-expired")
    def approval(ctx: FlowContext) -> Any:
        yield Step("draft", lambda: calls("draft"))
        answer = yield Suspend("approve", timeout="1h")
        return (yield Step("publish", lambda: calls("publish", f"published {answer}")))

    r = approval.run(store=store)
    clock.advance("2h")
    assert resume(r.flow_id, store=store, flows=[approval]).status == "expired"
    clock.advance("1d")
    retry_flow(r.flow_id, store=store)
    parked = resume(r.flow_id, store=store, flows=[approval])
    assert (parked.status, parked.waiting_for) == ("suspended", "approve")
    assert parked.wake_at == clock.now() + timedelta(hours=1)
    clock.advance("50m")  # within the fresh hour, counted from the retry
    signal_flow(r.flow_id, "approve", "yes", store=store)
    done = resume(r.flow_id, store=store, flows=[approval])
    assert (done.status, done.value) == ("completed", "published yes")
    assert calls == Counter({"draft": 1, "publish": 1})


def test_a_retried_wait_expires_again_when_its_fresh_timeout_passes(
    store: Any, clock: FakeClock
) -> None:
    @flow("retry-expired-twice")
    def approval(ctx: FlowContext) -> Any:
        return (yield Suspend("approve", timeout="1h"))

    r = approval.run(store=store)
    clock.advance("61m")
    assert resume(r.flow_id, store=store, flows=[approval]).status == "expired"
    retry_flow(r.flow_id, store=store)
    assert resume(r.flow_id, store=store, flows=[approval]).status == "suspended"
    clock.advance("61m")
    assert resume(r.flow_id, store=store, flows=[approval]).status == "expired"


def test_retrying_a_cancelled_parent_retries_the_children_cancelled_with_it(
    store: Any,
) -> None:
    calls = Calls()

    @flow("retry-kid")
    def kid(ctx: FlowContext) -> Any:
        yield Suspend("ready")
        return (yield Step("build", lambda: calls("build", "built")))

    @flow("retry-parent")
    def parent(ctx: FlowContext) -> Any:
        got = yield Child(kid, input=None)
        return (yield Step("use", lambda: calls("use", f"used {got}")))

    r = parent.run(store=store)
    [child_id] = get_flow(r.flow_id, store=store).children
    cancel_flow(r.flow_id, "pulled", store=store)
    assert get_flow(child_id, store=store).status == "cancelled"
    retry_flow(r.flow_id, store=store)
    assert get_flow(child_id, store=store).status == "suspended"
    assert resume(child_id, store=store, flows=[kid]).status == "suspended"  # its wait
    signal_flow(child_id, "ready", None, store=store)
    assert resume(child_id, store=store, flows=[kid]).value == "built"
    assert resume(r.flow_id, store=store, flows=[parent]).value == "used built"
    assert calls == Counter({"build": 1, "use": 1})


@pytest.mark.parametrize("status", ["running", "pending", "suspended", "completed", "paused"])
def test_retry_of_any_other_status_raises_and_changes_nothing(store: Any, status: str) -> None:
    @flow("retry-refused")
    def waits(ctx: FlowContext) -> Any:
        yield Step("one", lambda: 1)
        return (yield Suspend("go"))

    if status == "pending":
        flow_id = waits.start(store=store).flow_id
    else:
        flow_id = waits.run(store=store).flow_id
    if status == "completed":
        signal_flow(flow_id, "go", 1, store=store)
        resume(flow_id, store=store, flows=[waits])
    elif status == "running":
        store.claim(flow_id, "someone", store.clock.time())
        store.commit(flow_id, "someone", store.clock.time(), _step_write())
    elif status == "paused":
        pause_flow(flow_id, store=store)
    before = store.load(flow_id)
    assert before.status == status
    with pytest.raises(FlowStateError, match="only a failed, cancelled or expired") as raised:
        retry_flow(flow_id, store=store)
    assert isinstance(raised.value, CruxError)
    assert store.load(flow_id) == before


def test_retry_of_an_unknown_flow_is_not_found(store: Any) -> None:
    with pytest.raises(FlowNotFoundError):
        retry_flow("no-such-flow", store=store)


def _step_write() -> Write:
    """A write that moves a suspended flow to running (a step past its wait)."""
    return Write((StoredRecord(1, "step", "x", "completed", result="1"),))
