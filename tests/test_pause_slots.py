"""A paused flow's ``Limit`` slot, on every store: the slot goes back when its
runner actually stops, never while the step in hand still runs; so a flow paused
and unpaused before its runner's next step keeps its slot, and a concurrency
limit of 1 never has two flows inside steps at once."""

from __future__ import annotations

import threading
from typing import Any

from crux_gen import FlowContext, Limit, Step, flow, get_flow, pause_flow, unpause_flow
from crux_gen.limits import make_gate
from crux_gen.worker import Worker

ONE = Limit("pause-slot-one", concurrency=1)


class Inside:
    """Which flows are inside a step function, and the most ever at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: set[str] = set()
        self.log: list[tuple[str, str]] = []
        self.most = 0

    def enter(self, who: str) -> None:
        with self.lock:
            self.now.add(who)
            self.log.append(("enter", who))
            self.most = max(self.most, len(self.now))

    def exit(self, who: str) -> None:
        with self.lock:
            self.now.discard(who)
            self.log.append(("exit", who))


INSIDE = Inside()
STORE: list[Any] = []  # the test's store, for the step functions


def first(who: str, flow_id: str) -> str:
    INSIDE.enter(f"{who}.first")
    try:
        if who == "a":  # paused and unpaused with its step in hand; another flow due
            store = STORE[0]
            assert pause_flow(flow_id, store=store) is True
            assert unpause_flow(flow_id, store=store) is True
            slotted.start(input="b", store=store, flow_id="slot-b")
        return who
    finally:
        INSIDE.exit(f"{who}.first")


def second(who: str) -> str:
    INSIDE.enter(f"{who}.second")
    try:
        if who == "a":  # another worker's pass meanwhile: b waits for the slot
            store = STORE[0]
            worker = threading.Thread(target=Worker(store, [slotted]).run_once)
            worker.start()
            worker.join()
        return who
    finally:
        INSIDE.exit(f"{who}.second")


@flow("pause-slotted", limits=[ONE])
def slotted(ctx: FlowContext) -> Any:
    yield Step("first", lambda: first(ctx.input, ctx.flow_id))
    return (yield Step("second", lambda: second(ctx.input)))


def test_a_flow_paused_and_unpaused_between_steps_keeps_its_slot(store: Any) -> None:
    STORE[:] = [store]
    INSIDE.__init__()  # type: ignore[misc]
    a = slotted.run(input="a", store=store, flow_id="slot-a")
    assert (a.status, a.value) == ("completed", "a")
    assert INSIDE.most == 1, INSIDE.log  # never two flows inside steps at once
    # b waited for the slot while a ran; a's end let it through.
    assert get_flow("slot-b", store=store).status == "pending"
    assert Worker(store, [slotted]).run_once() == 1
    assert get_flow("slot-b", store=store).status == "completed"
    assert INSIDE.most == 1, INSIDE.log
    assert [who for what, who in INSIDE.log if what == "enter"] == [
        "a.first",
        "a.second",
        "b.first",
        "b.second",
    ]


def test_a_paused_holders_slot_goes_back_when_its_runner_lets_go(store: Any) -> None:
    now = store.clock.time()
    gate = make_gate(lambda name: slotted.limits)
    ids = [slotted.start(input=n, store=store).flow_id for n in ("x", "y")]
    [holder] = store.claim_due(now, 10, "w1", gate=gate)
    [other] = set(ids) - {holder.id}
    assert store.claim_due(now, 10, "w2", gate=gate) == []
    # Paused while its runner holds the lease (a step in hand): the slot stays.
    assert pause_flow(holder.id, store=store) is True
    assert store.claim_due(now + 1, 10, "w2", gate=gate) == []
    assert get_flow(other, store=store).blocked_by == "limit pause-slot-one"
    # Its runner sees the pause at its next boundary and lets go: the slot is back.
    store.release(holder.id, "w1")
    [taken] = store.claim_due(now + 2, 10, "w2", gate=gate)
    assert taken.id == other
    assert get_flow(holder.id, store=store).status == "paused"


STEP_ONE = Limit("pause-step-slot-one", concurrency=1)
SEEN: list[list[Any]] = []


def held_now() -> list[Any]:
    store = STORE[0]
    return [(u.label, u.held) for u in store.limit_usage(store.clock.time())]


def limited_step(flow_id: str) -> str:
    store = STORE[0]
    SEEN.append(held_now())
    pause_flow(flow_id, store=store)
    SEEN.append(held_now())  # paused, its step in hand still running: still held
    unpause_flow(flow_id, store=store)
    return "done"


@flow("pause-step-slotted")
def step_slotted(ctx: FlowContext) -> Any:
    return (yield Step("limited", lambda: limited_step(ctx.flow_id), limits=[STEP_ONE]))


def test_a_limited_step_keeps_its_slot_while_its_flow_is_paused(store: Any) -> None:
    STORE[:] = [store]
    SEEN.clear()
    r = step_slotted.run(store=store)
    assert (r.status, r.value) == ("completed", "done")
    assert SEEN == [[("limit pause-step-slot-one", 1)]] * 2
    assert held_now() == []  # given back with the step's record
