"""pause_flow / unpause_flow and the "paused" status, on every store: a paused
flow is never claimed, a running one stops at its next command boundary,
signals are stored and deadlines keep counting while it is paused, and on
unpause whatever became due runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from crux_gen import (
    Child,
    Exclusive,
    FakeClock,
    FlowClosedError,
    FlowContext,
    FlowNotFoundError,
    Limit,
    Sleep,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    list_flows,
    pause_flow,
    resume,
    signal_flow,
    unpause_flow,
)
from crux_gen.limits import make_gate
from crux_gen.testing import FlowHarness
from crux_gen.worker import Worker


class Calls(Counter[str]):
    def __call__(self, name: str, value: Any = None) -> Any:
        self[name] += 1
        return value if value is not None else name


CALLS = Calls()


@flow("pause-approval")
def approval(ctx: FlowContext) -> Any:
    yield Step("draft", lambda: CALLS("draft"))
    answer = yield Suspend("approve", timeout="1h")
    yield Step("publish", lambda: CALLS("publish"))
    return answer


@flow("pause-sleeper")
def sleeper(ctx: FlowContext) -> Any:
    yield Sleep("nap", "1h")
    return (yield Step("after-nap", lambda: CALLS("after-nap")))


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


def due(store: Any) -> list[str]:
    return list(store.due(store.clock.time(), 100))


def test_a_paused_suspended_flow_is_never_claimed_and_keeps_its_signals(store: Any) -> None:
    r = approval.run(store=store)
    assert r.status == "suspended"
    assert pause_flow(r.flow_id, store=store) is True
    assert get_flow(r.flow_id, store=store).status == "paused"
    # A signal is stored while it is paused; nothing claims the flow meanwhile.
    assert signal_flow(r.flow_id, "approve", "yes", store=store) is True
    assert due(store) == []
    assert Worker(store, [approval]).run_once() == 0
    held = resume(r.flow_id, store=store, flows=[approval])
    assert held.status == "paused"  # resume returns where it stands, running nothing
    assert Counter({"draft": 1}) == CALLS
    assert [s.state for s in get_flow(r.flow_id, store=store).signals] == ["pending"]
    # Unpaused: suspended again, and the signal that came makes it due at once.
    assert unpause_flow(r.flow_id, store=store) is True
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.waiting_for) == ("suspended", "approve")
    assert due(store) == [r.flow_id]
    done = resume(r.flow_id, store=store, flows=[approval])
    assert (done.status, done.value) == ("completed", "yes")
    assert Counter({"draft": 1, "publish": 1}) == CALLS


def test_pause_and_unpause_answer_false_when_there_is_nothing_to_do(store: Any) -> None:
    r = approval.run(store=store)
    assert unpause_flow(r.flow_id, store=store) is False  # not paused
    assert get_flow(r.flow_id, store=store).status == "suspended"
    assert pause_flow(r.flow_id, store=store) is True
    before = store.load(r.flow_id)
    assert pause_flow(r.flow_id, store=store) is False  # paused already
    assert store.load(r.flow_id) == before
    assert unpause_flow(r.flow_id, store=store) is True
    assert unpause_flow(r.flow_id, store=store) is False


def test_a_finished_flow_cannot_be_paused_and_an_unknown_one_is_not_found(store: Any) -> None:
    r = approval.run(store=store)
    signal_flow(r.flow_id, "approve", "ok", store=store)
    assert resume(r.flow_id, store=store, flows=[approval]).status == "completed"
    with pytest.raises(FlowClosedError, match="completed"):
        pause_flow(r.flow_id, store=store)
    assert get_flow(r.flow_id, store=store).status == "completed"
    assert unpause_flow(r.flow_id, store=store) is False
    with pytest.raises(FlowNotFoundError):
        pause_flow("no-such-flow", store=store)
    with pytest.raises(FlowNotFoundError):
        unpause_flow("no-such-flow", store=store)


def test_a_running_flow_stops_at_its_next_command_boundary(store: Any) -> None:
    calls = Calls()

    @flow("pause-mid-run")
    def mid(ctx: FlowContext) -> Any:
        yield Step("one", lambda: calls("one"))
        yield Step("two", lambda: (pause_flow(ctx.flow_id, store=store), calls("two"))[1])
        return (yield Step("three", lambda: calls("three")))

    r = mid.run(store=store, flow_id="pause-me")
    assert r.status == "paused"
    info = get_flow("pause-me", store=store)
    assert [h.name for h in info.history] == ["one", "two"]  # the step in hand was recorded
    assert info.status == "paused"
    assert store.load("pause-me").lease_owner is None  # let go: nothing holds it
    assert due(store) == []
    assert unpause_flow("pause-me", store=store) is True
    assert get_flow("pause-me", store=store).status == "running"
    assert due(store) == ["pause-me"]  # due at once, nobody holds it
    done = mid.run(resume="pause-me", store=store)
    assert (done.status, done.value) == ("completed", "three")
    assert calls == Counter({"one": 1, "two": 1, "three": 1})


def test_a_deadline_passed_while_paused_expires_the_wait_once_unpaused(
    store: Any, clock: FakeClock
) -> None:
    r = approval.run(store=store)
    pause_flow(r.flow_id, store=store)
    clock.advance("2h")
    with pytest.raises(FlowClosedError, match="expired"):
        signal_flow(r.flow_id, "approve", "late", store=store)
    assert due(store) == []
    unpause_flow(r.flow_id, store=store)
    assert due(store) == [r.flow_id]
    assert resume(r.flow_id, store=store, flows=[approval]).status == "expired"


def test_a_timer_keeps_counting_while_paused(store: Any, clock: FakeClock) -> None:
    r = sleeper.run(store=store)
    pause_flow(r.flow_id, store=store)
    clock.advance("30m")
    assert unpause_flow(r.flow_id, store=store) is True
    assert due(store) == []  # its timer comes at the hour, as before
    pause_flow(r.flow_id, store=store)
    clock.advance("31m")
    assert due(store) == []  # came while paused
    unpause_flow(r.flow_id, store=store)
    assert due(store) == [r.flow_id]
    assert resume(r.flow_id, store=store, flows=[sleeper]).value == "after-nap"


def test_a_pending_flow_paused_is_not_run_and_is_pending_again_once_unpaused(
    store: Any, clock: FakeClock
) -> None:
    handle = sleeper.start(store=store)
    assert pause_flow(handle.flow_id, store=store) is True
    clock.advance("20m")
    assert due(store) == []
    assert Worker(store, [sleeper]).run_once() == 0
    unpause_flow(handle.flow_id, store=store)
    assert get_flow(handle.flow_id, store=store).status == "pending"
    assert due(store) == [handle.flow_id]
    assert Worker(store, [sleeper]).run_once() == 1
    assert get_flow(handle.flow_id, store=store).status == "suspended"  # at its nap


def test_a_paused_flow_can_be_cancelled_and_is_listed_as_paused(store: Any) -> None:
    a, b = approval.run(store=store), approval.run(store=store)
    pause_flow(a.flow_id, store=store)
    pause_flow(b.flow_id, store=store)
    listed = list_flows(store=store, status="paused")
    assert sorted(s.flow_id for s in listed) == sorted([a.flow_id, b.flow_id])
    assert cancel_flow(a.flow_id, "no longer needed", store=store) is True
    assert get_flow(a.flow_id, store=store).status == "cancelled"
    assert unpause_flow(a.flow_id, store=store) is False
    assert [s.flow_id for s in list_flows(store=store, status="paused")] == [b.flow_id]


def test_a_paused_parents_child_keeps_running_and_wakes_it_once_unpaused(store: Any) -> None:
    calls = Calls()

    @flow("pause-child")
    def kid(ctx: FlowContext) -> Any:
        yield Suspend("ready")
        return (yield Step("build", lambda: calls("build", "built")))

    @flow("pause-parent")
    def parent(ctx: FlowContext) -> Any:
        got = yield Child(kid, input=None)
        return (yield Step("use", lambda: calls("use", f"used {got}")))

    r = parent.run(store=store)
    [child_id] = get_flow(r.flow_id, store=store).children
    assert pause_flow(r.flow_id, store=store) is True
    signal_flow(child_id, "ready", None, store=store)
    assert resume(child_id, store=store, flows=[kid]).value == "built"  # not paused
    assert due(store) == []  # the parent is paused
    unpause_flow(r.flow_id, store=store)
    assert due(store) == [r.flow_id]  # the child's end made it due
    assert resume(r.flow_id, store=store, flows=[parent]).value == "used built"
    assert calls == Counter({"build": 1, "use": 1})


PAUSE_ONE = Limit("pause-lim-one", concurrency=1)


@flow("pause-limited", limits=[PAUSE_ONE])
def limited(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


def test_a_paused_flow_holds_no_slot_and_waits_for_none(store: Any) -> None:
    now = store.clock.time()
    gate = make_gate(lambda name: limited.limits)
    ids = [limited.start(input=n, store=store).flow_id for n in range(3)]
    [holder] = store.claim_due(now, 10, "w1", gate=gate)
    blocked = sorted(set(ids) - {holder.id})
    assert store.claim_due(now, 10, "w2", gate=gate) == []  # the one slot is held
    assert get_flow(blocked[0], store=store).blocked_by == "limit pause-lim-one"
    # The holder paused: its slot goes back once its runner lets go of the lease
    # (tests/test_pause_slots.py: not before, while its step in hand runs).
    assert pause_flow(holder.id, store=store) is True
    store.release(holder.id, "w1")
    # A blocked flow paused lets go of its block: unpaused, it asks again.
    assert pause_flow(blocked[1], store=store) is True
    assert get_flow(blocked[1], store=store).blocked_by is None
    [next_one] = store.claim_due(now + 1, 10, "w2", gate=gate)
    assert next_one.id == blocked[0]
    assert unpause_flow(blocked[1], store=store) is True
    assert get_flow(blocked[1], store=store).status == "pending"
    assert store.claim_due(now + 2, 10, "w3", gate=gate) == []  # the slot is taken again
    assert get_flow(blocked[1], store=store).blocked_by == "limit pause-lim-one"


def test_the_harness_pauses_and_unpauses_its_flow() -> None:
    harness = FlowHarness(approval)
    assert harness.run().status == "suspended"
    assert harness.pause() is True
    harness.signal("approve", "yes")
    assert harness.run().status == "paused"
    assert Counter({"draft": 1}) == CALLS
    assert harness.unpause() is True
    assert (harness.run().status, harness.result.value) == ("completed", "yes")


def _account(input: Any) -> str:
    return str(input["account"])


@flow("pause-exclusive", exclusive=Exclusive(key=_account))
def exclusive(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


def test_a_paused_queued_flow_rejoins_the_queue_as_it_stands_when_unpaused(store: Any) -> None:
    a = exclusive.start(input={"account": "x"}, store=store).flow_id
    b = exclusive.start(input={"account": "x"}, store=store).flow_id
    c = exclusive.start(input={"account": "x"}, store=store).flow_id
    assert [store.load(f).blocked_by for f in (b, c)] == [a, a]
    assert pause_flow(b, store=store) is True
    cancel_flow(a, "done with it", store=store)  # the key passes to c, past the paused b
    key = store.load(a).exclusive_key
    assert (store.load(c).holds, store.load(c).blocked_by) == (key, None)
    unpause_flow(b, store=store)
    assert (store.load(b).status, store.load(b).blocked_by) == ("pending", c)
    assert due(store) == [c]
    # Paused again, and its holder gone meanwhile: unpaused, b holds the key itself.
    pause_flow(b, store=store)
    cancel_flow(c, "done with it too", store=store)
    unpause_flow(b, store=store)
    assert (store.load(b).holds, store.load(b).blocked_by) == (key, None)
    assert due(store) == [b]
