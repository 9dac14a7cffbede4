"""The narrow protocol every store implements.

A store keeps flows, their history records and their signals, as JSON text it
never interprets. Writes by a runner are fenced by its lease *owner* token.
All times are UTC seconds since the epoch. ``stores.memory`` is the reference
semantics; ``tests/test_store_contract.py`` runs one suite against every store.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from crux_gen.clock import Clock
from crux_gen.errors import FlowClosedError
from crux_gen.records import CommitOutcome, StoredFlow, StoredSignal, Write
from crux_gen.status import FINISHED, Status


@runtime_checkable
class Store(Protocol):
    """What the runner, the worker and the CLI need of a store."""

    clock: Clock
    lease_ttl: timedelta

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        """Create the flow claimed by *owner*, or claim it if it exists (same *name*).

        Raises ``FlowNameConflictError`` if the id belongs to another flow name,
        ``FlowBusyError`` if another owner's lease is live. A finished flow is
        returned unclaimed (``lease_owner != owner``).
        """
        ...

    def claim(self, flow_id: str, owner: str, now: float) -> StoredFlow:
        """Take the lease and load the flow with its whole history and signals.

        Raises ``FlowNotFoundError`` or ``FlowBusyError``. A finished flow is
        returned unclaimed. The flow row comes back as it stood before the claim
        (status and wait fields), with the new lease; signals are the pending ones.
        """
        ...

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        """Extend *owner*'s lease; ``False`` when it holds the lease no more."""
        ...

    def release(self, flow_id: str, owner: str, *, restore: StoredFlow | None = None) -> None:
        """Drop *owner*'s lease if it still holds it. With *restore* (the flow as
        claimed, when the run wrote nothing), a running flow gets back its status
        and wait fields."""
        ...

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """Apply *write* atomically if *owner* holds the lease, else ``LeaseLostError``.

        A flow cancelled meanwhile keeps status ``"cancelled"``: the records are
        written, the lease released, and the outcome says ``"cancelled"``.
        """
        ...

    def load(self, flow_id: str) -> StoredFlow:
        """Read the flow with its history and signals; ``FlowNotFoundError`` if absent."""
        ...

    def add_signal(self, flow_id: str, name: str, payload: str, now: float) -> StoredSignal:
        """Store a pending signal; ``FlowNotFoundError``, or ``FlowClosedError``
        for a finished flow or one whose wait's deadline has passed."""
        ...

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        """Mark an unfinished flow cancelled; ``False`` if it was finished."""
        ...

    def due(self, now: float, limit: int) -> list[str]:
        """Ids of flows a worker should run now, oldest wake-up first."""
        ...

    def list_flows(
        self, *, status: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[StoredFlow]:
        """Flows without their history, newest update first."""
        ...

    def close(self) -> None:
        """Release what the store holds open in this thread."""
        ...


def lease_is_live(flow: StoredFlow, now: float) -> bool:
    """True while someone holds the flow's lease."""
    return flow.lease_owner is not None and (flow.lease_expires or 0.0) > now


def when(ts: float | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def check_signal_allowed(
    flow_id: str, status: str, deadline: float | None, waiting_for: str | None, now: float
) -> None:
    """Refuse a signal for a finished flow, or one whose wait's deadline has passed."""
    if status in FINISHED:
        raise FlowClosedError(flow_id, status)
    if status == Status.SUSPENDED and deadline is not None and deadline <= now:
        expired_at = when(deadline)
        assert expired_at is not None
        raise FlowClosedError(
            flow_id, "expired", f"its wait {waiting_for!r} timed out at {expired_at.isoformat()}"
        )
