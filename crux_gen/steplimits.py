"""Limits on steps (``Step(..., limits=[...])``), for the executor: a step's slots
are taken in the store just before its function is called and given back in the
transaction that stores the outcome of that attempt, so a slot is held only while
the function runs (each retry takes one again). A step that finds a slot full parks its flow
holding nothing: the store marks the flow blocked, gives back its slots and its
lease in one transaction, and the flow is due again when a slot frees; its next
run replays up to the step and asks again.

This costs one transaction per limited step (the take; the give-back goes with
the write of the attempt's outcome), none for a step without limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .effects import Call
from .errors import CruxError
from .limits import SlotAsk, asks_for
from .records import Write

if TYPE_CHECKING:
    from .flowrun import FlowRun


def part(position: int) -> str:
    """The store's name of the slots of the step at *position*."""
    return f"step {position}"


def take(store: Any, run: FlowRun, calls: list[Call], now: float) -> bool:
    """Take the slots of the limited *calls* of *run* (all or none); ``False``: the
    store parked the flow blocked (no lease, no slot held)."""
    taking = getattr(store, "take_step", None)
    if taking is None:
        raise CruxError(
            f"{type(store).__name__} keeps no limits: Step(..., limits=[...]) needs one"
        )
    asks: list[tuple[str, SlotAsk]] = [
        (part(call.position), ask) for call in calls for ask in asks_for(call.limits, run.ctx.input)
    ]
    if not taking(run.flow_id, run.owner, asks, now):
        return False
    run.step_parts.update(part(call.position) for call in calls)
    return True


def with_give_back(run: FlowRun, write: Write) -> Write:
    """*write*, giving back (in its own transaction) the slots of the limited steps
    whose attempt it stores (``Write.free_slots``)."""
    parts = tuple(
        name for name in (part(r.position) for r in write.records) if name in run.step_parts
    )
    return attrs.evolve(write, free_slots=parts) if parts else write


def given_back(run: FlowRun, write: Write) -> None:
    """*write* was stored: the slots it gave back are no longer *run*'s."""
    run.step_parts.difference_update(write.free_slots)
