"""Limits on steps (``Step(..., limits=[...])``), for the executor: a step's slots
are taken in the store just before its function is called and given back in the
transaction that stores the outcome of that attempt, so a slot is held only while
the function runs (each retry takes one again). A step that finds a slot full parks its flow
holding nothing: the store marks the flow blocked, gives back its slots and its
lease in one transaction, and the flow is due again when a slot frees; its next
run replays up to the step and asks again.

Both go with the writes the executor makes anyway: the take with the write that
clears the step to run (the step before's outcome), the give-back with the
write of its own outcome. Only a limited step with no write before it (the first
call after a claim) takes its slots in a transaction of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import attrs

from .effects import Call
from .errors import CruxError
from .limits import SlotAsk, asks_for
from .records import Write
from .stores.caps import caps_of

if TYPE_CHECKING:
    from crux_gen.stores.base_limits import Limits

    from .flowrun import FlowRun


def part(position: int) -> str:
    """The store's name of the slots of the step at *position*."""
    return f"step {position}"


def asks_of(run: FlowRun, calls: list[Call]) -> list[tuple[str, SlotAsk]]:
    """The asks of the limited *calls* of *run* not taken yet, each with its part."""
    return [
        (part(call.position), ask)
        for call in calls
        if part(call.position) not in run.step_parts
        for ask in asks_for(call.limits, run.ctx.input)
    ]


def take(store: Any, run: FlowRun, calls: list[Call], now: float) -> bool:
    """Take the slots of the limited *calls* of *run* (all or none); ``False``: the
    store parked the flow blocked (no lease, no slot held)."""
    if not caps_of(store).limits:
        raise CruxError(
            f"{type(store).__name__} keeps no limits: Step(..., limits=[...]) needs one"
        )
    asks: list[tuple[str, SlotAsk]] = [
        (part(call.position), ask) for call in calls for ask in asks_for(call.limits, run.ctx.input)
    ]
    if not cast("Limits", store).take_step(run.flow_id, run.owner, asks, now):
        return False
    run.step_parts.update(part(call.position) for call in calls)
    return True


def prepared(run: FlowRun, write: Write) -> Write:
    """*write*, giving back (in its own transaction) the slots of the limited steps
    whose attempt it stores (``Write.free_slots``), and taking those of the limited
    steps it clears to run next (``Write.take_slots``): no transaction of its own."""
    parts = tuple(
        name for name in (part(r.position) for r in write.records) if name in run.step_parts
    )
    takes: tuple[tuple[str, SlotAsk], ...] = ()
    if write.status is None and write.continue_as_new is None:
        takes = tuple(asks_of(run, [c for c in run.calls if c.limits]))
    if parts or takes:
        return attrs.evolve(write, free_slots=parts, take_slots=takes)
    return write


def settled(run: FlowRun, write: Write, blocked: bool) -> None:
    """*write* was stored: the slots it gave back are no longer *run*'s, those it
    took are (unless a slot was full: *blocked*, the flow let go of everything)."""
    run.step_parts.difference_update(write.free_slots)
    if not blocked:
        run.step_parts.update(name for name, _ in write.take_slots)
