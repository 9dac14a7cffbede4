"""``current_step()``: which step attempt runs on this thread, for the step
function itself (an idempotency key for an external API, a log line).

A context variable holds the attempt's run and ``Call`` while the step function
runs (``Calls`` sets it around each step attempt, on whichever thread runs it:
the loop's own, or a pool thread for an ``All`` branch); ``current_step()``
builds the ``StepInfo`` only when it is asked for, so a step that never asks
pays for a set and a reset of the variable.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import attrs

from .effects import Call

__all__ = ["StepInfo", "current_step", "in_step"]

R = TypeVar("R")


@attrs.frozen
class StepInfo:
    """The step attempt running on this thread.

    ``position`` is the step's position in the flow's history, 0-based as
    ``get_flow`` shows it; ``attempt`` counts the step's tries as the store
    records them (1, 2, … across retries). ``f"{flow_id}:{position}"`` is the same
    for every attempt, every replay and every process: a stable idempotency key.
    """

    flow_id: str
    name: str
    position: int
    attempt: int


#: ``(run, call)`` of the step attempt running in this context, else ``None``.
_RUNNING: ContextVar[tuple[Any, Call] | None] = ContextVar("crux_gen_step", default=None)


def current_step() -> StepInfo | None:
    """The step attempt this code runs in, or ``None`` outside a step function (in
    a flow body, a ``WaitUntil`` condition, after the step returned).

    >>> info = current_step()
    >>> stripe.Charge.create(..., idempotency_key=f"{info.flow_id}:{info.position}")
    """
    running = _RUNNING.get()
    if running is None:
        return None
    run, call = running
    return StepInfo(run.flow_id, call.name, call.position, call.attempt)


def in_step(inner: Callable[[Any, Call], R]) -> Callable[[Any, Call], R]:
    """*inner* (how ``Calls`` runs a call for a run), with ``current_step()`` set
    while it runs a step's call (not a condition's)."""
    put, reset = _RUNNING.set, _RUNNING.reset

    def run(key: Any, call: Call) -> R:
        if call.kind != "step":
            return inner(key, call)
        token = put((key, call))
        try:
            return inner(key, call)
        finally:
            reset(token)

    return run
