"""The narrow protocol every store implements.

A store keeps flows, their history records and their signals, as JSON text it
never interprets. Writes by a runner are fenced by its lease *owner* token.
All times are UTC seconds since the epoch. ``crux_gen.stores.memory`` is the reference
semantics; ``tests/test_store_contract.py`` runs one suite against every store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, runtime_checkable

from crux_gen.clock import Clock, when
from crux_gen.commands import VALUE_KINDS
from crux_gen.errors import FlowClosedError, FlowStateError
from crux_gen.records import FAILED, CommitOutcome, StoredFlow, StoredRecord, StoredSignal, Write
from crux_gen.status import FINISHED, Status, transition


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

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        """Take the lease and load the flow with its whole history and signals.

        Raises ``FlowNotFoundError`` or ``FlowBusyError``. A finished flow is
        returned unclaimed. The flow row comes back as it stood before the claim
        (status and wait fields), with the new lease; signals are the pending ones.
        Records of completed or failed commands may leave out their timings and
        attempts (replay does not need them; ``load`` has everything).
        With *only_if_due* (the worker), checking that the flow is still due (as
        ``due`` at *now*) and claiming it are one atomic step: a suspended flow
        that is not due raises ``FlowBusyError``, a finished one ``FlowClosedError``,
        and nothing changes.
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

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        """Ids that start with *prefix*, in order, at most *limit* (the CLI's short ids)."""
        ...

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        """Make a ``"failed"`` flow due again from the command that failed it.

        Drops the records from position ``retry_from(records)`` on (the failed
        command and any ``ctx.now()``-style values recorded after it; nothing if
        the body raised), keeps every other record and signal, and sets the flow
        ``"suspended"`` with ``wake_at=now`` and no error, so the next resume or
        worker pass runs it. Returns the dropped records. Raises
        ``FlowNotFoundError``, or ``FlowStateError`` (nothing changed) unless the
        flow is ``"failed"``.
        """
        ...

    def prune(self, finished_before: float) -> int:
        """Delete finished flows last updated before *finished_before*, with their
        records and signals; return how many flows were deleted."""
        ...

    def close(self) -> None:
        """Release what the store holds open in this thread."""
        ...


def lease_is_live(flow: StoredFlow, now: float) -> bool:
    """True while someone holds the flow's lease."""
    return flow.lease_owner is not None and (flow.lease_expires or 0.0) > now


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


def retry_status(flow_id: str, status: str) -> Status:
    """The status a retried flow takes; ``FlowStateError`` unless it is ``"failed"``."""
    try:
        return transition(status, "retry")
    except ValueError:
        raise FlowStateError(flow_id, status, "only a failed flow can be retried") from None


def retry_from(records: tuple[StoredRecord, ...] | list[StoredRecord]) -> int:
    """How many records a retried flow keeps: all of them up to the command whose
    failure ended the flow.

    That command is the last failed record when nothing but ``ctx.now()``-style
    values was recorded after it (its exception propagated, perhaps through an
    ``except`` block that re-raised or wrapped it). When a step or wait was
    recorded after the last failure (the flow caught it and went on), or there is
    no failed record, the body itself raised: every record is kept, and the next
    run replays them all and runs the body again from where it raised.
    """
    for record in reversed(records):
        if record.state == FAILED:
            return record.position
        if record.kind not in VALUE_KINDS:
            break
    return len(records)
