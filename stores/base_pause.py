"""The protocol of a store that can pause a flow (``pause_flow``), importable from
``stores.base`` too. ``MemoryStore``, ``SQLiteStore`` and ``PostgresStore`` are."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Pausing(Protocol):
    """Pause and unpause a flow. A paused flow (status ``"paused"``) keeps its row
    as it was (wait fields, wake time, deadline); the due scan never finds it and a
    claim leaves it unclaimed (a worker's ``claim(only_if_due=True)``:
    ``FlowBusyError``). A runner holding it learns it at its next ``check_lease``
    or ``commit`` (status ``"paused"``) and stops; its write is applied as to the
    flow the paused one was, then the flow is paused again and the lease dropped
    (a write that ends the flow ends it). Signals are stored while it is paused
    (those for a wait whose deadline passed are refused, as for a suspended
    flow); a child that finishes makes a paused parent waiting for it due once
    unpaused; a cancel cancels it."""

    def pause(self, flow_id: str, now: float) -> bool:
        """Pause an unfinished flow, letting go of its limits' slots and blocks:
        ``True``; ``False`` (nothing changed) when it is paused already;
        ``FlowNotFoundError``, or ``FlowClosedError`` when it is finished."""
        ...

    def unpause(self, flow_id: str, now: float) -> bool:
        """Send a paused flow back to what it was (``status.unpause_event``):
        ``True``; ``False`` (nothing changed) when it is not paused;
        ``FlowNotFoundError``. What became due meanwhile is due at once."""
        ...
