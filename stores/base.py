"""The narrow protocol every store implements.

A store keeps flows, their history records and their signals, as JSON text it
never interprets. Writes by a runner are fenced by its lease *owner* token.
All times are UTC seconds since the epoch. ``crux_gen.stores.memory`` is the reference
semantics; ``tests/test_store_contract.py`` runs one suite against every store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

from crux_gen.clock import Clock, when
from crux_gen.commands import VALUE_KINDS
from crux_gen.errors import (
    CruxError,
    FlowClosedError,
    FlowStateError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    RecordConflictError,
    StoreError,
)
from crux_gen.records import (
    FAILED,
    UNRESOLVED,
    Commit,
    CommitOutcome,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, Status, transition


@runtime_checkable
class Store(Protocol):
    """What the runner and the worker need of a store: a new backend implements
    these first (``MemoryStore`` is the reference semantics).

    Leases fence every write: only the *owner* that holds a flow's lease may
    commit for it. A claim takes the lease and changes nothing else; the flow's
    status moves only when a commit (or ``cancel``) applies an event of the
    transition table in ``crux_gen.status``. Records are append-only except
    for unresolved ones (``waiting``, ``retrying``), which their owner may
    rewrite: a record at a gap, or over a resolved record, is a
    ``RecordConflictError`` and nothing of that write is applied.
    """

    clock: Clock
    lease_ttl: timedelta

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        """Create the flow ``"running"`` and claimed by *owner*, or claim it if it
        exists with the same *name*.

        Raises ``FlowNameConflictError`` if the id belongs to another flow name,
        ``FlowBusyError`` if another owner's lease is live. A finished flow is
        returned unclaimed (``lease_owner != owner``).
        """
        ...

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        """Take the lease and load the flow with its whole history and its pending
        signals (oldest first). Nothing but the lease changes: status and wait
        fields stay as they were, so a run that writes nothing leaves the flow
        exactly as it found it.

        Raises ``FlowNotFoundError`` or ``FlowBusyError`` (another owner's lease is
        live). A finished flow is returned unclaimed. Records of completed or
        failed commands may leave out their timings and attempts (replay does not
        need them; ``load`` has everything). With *only_if_due* (the worker),
        checking that the flow is still due (as ``due`` at *now*) and claiming it
        are one atomic step: a suspended flow that is not due raises
        ``FlowBusyError``, a finished one ``FlowClosedError``, and nothing changes.
        """
        ...

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        """Before a step function runs: ``LeaseLostError`` unless *owner* holds the
        lease (a lapsed lease nobody took is renewed), else the flow's status and
        cancel reason (``"cancelled"`` means: call nothing more)."""
        ...

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        """Extend *owner*'s lease; ``False`` when it holds the lease no more."""
        ...

    def release(self, flow_id: str, owner: str) -> None:
        """Drop *owner*'s lease if it still holds it; nothing else changes."""
        ...

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """Apply *write* atomically if *owner* holds the lease, else ``LeaseLostError``.

        The flow's status moves by ``status.after_write(status, write.status)``, the
        transition table; a step's write (``status=None``) makes a suspended flow
        ``"running"`` and clears its wait fields; any other status releases the
        lease. With ``write.wait_signal``, if a pending signal of that name exists
        (other than those the write itself updates), nothing is applied and the
        outcome carries those signals. A flow cancelled meanwhile keeps
        ``"cancelled"``: the records are written, the lease released, and the
        outcome says ``"cancelled"``. ``RecordConflictError`` for a record at a
        gap or over a resolved record (nothing applied).
        """
        ...

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        """Group commit: apply the writes of several flows in one transaction (one
        fsync), each exactly as ``commit`` would.

        Returns one entry per item, in order: its ``CommitOutcome``, or the error
        ``commit`` would have raised for it (``LeaseLostError``,
        ``RecordConflictError``), in which case nothing of that item was applied
        and the others were. A failure of the store itself (``StoreError``) is
        raised and nothing of the batch is applied. Two items for one flow are
        applied in order.
        """
        ...

    def claim_due(
        self, now: float, limit: int, owner: str, *, exclude: Collection[str] = ()
    ) -> list[StoredFlow]:
        """Claim up to *limit* flows that are due at *now* (as ``due``, oldest
        first, leaving out the ids in *exclude*) for *owner* in one transaction,
        then load them as ``claim`` does (history and pending signals) in one read.

        Each flow gets its own lease with the *owner* token; a flow another worker
        claimed or advanced since the due query is left out, never an error.
        """
        ...

    def load(self, flow_id: str) -> StoredFlow:
        """Read the flow with its history and signals; ``FlowNotFoundError`` if absent."""
        ...

    def add_signal(
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None
    ) -> StoredSignal | None:
        """Store a pending signal; ``FlowNotFoundError``, or ``FlowClosedError``
        for a finished flow or one whose wait's deadline has passed. With *key*, a
        signal sent before with the same key for the same flow means nothing is
        stored and ``None`` is returned (checked before the flow's state, so a
        retried delivery to a flow that has finished since is a quiet ``None``)."""
        ...

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        """Mark an unfinished flow cancelled; ``False`` if it was finished. A runner
        holding the flow keeps its lease until it sees the cancel (``check_lease``,
        ``commit``) and calls nothing more."""
        ...

    def due(self, now: float, limit: int) -> list[str]:
        """Ids of flows a worker should run now, oldest wake-up first: suspended
        flows whose timer is due or whose awaited signal is pending, and running
        flows nobody holds (a crashed runner's, once its lease lapsed)."""
        ...

    def close(self) -> None:
        """Release what the store holds open in this thread."""
        ...


@runtime_checkable
class StoreAdmin(Protocol):
    """What operators need on top of :class:`Store`: listings, retry, prune."""

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: float | None = None,
    ) -> list[StoredFlow]:
        """Flows without their history, newest update first; with *before*, only
        those updated strictly earlier (keyset paging: pass the last row's
        ``updated_at``)."""
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

    def delete(self, flow_id: str) -> bool:
        """Delete one finished flow with its records and signals: ``True``; ``False``
        when no such flow is stored; ``FlowStateError`` (nothing changed) for an
        unfinished one."""
        ...

    def prune(self, finished_before: float) -> int:
        """Delete finished flows last updated before *finished_before*, with their
        records and signals; return how many flows were deleted."""
        ...

    def put_flow(self, flow: StoredFlow) -> None:
        """Insert one whole flow, as ``load`` returned it from another store: its row,
        every record and every signal (with its id, state and key) exactly as given,
        but with the lease cleared (``crux_gen.migrate``).

        Atomic: all of it or nothing. Raises ``StoreError`` (nothing written) when a
        flow with this id is stored already or a signal id is taken by another
        flow's signal, ``RecordConflictError`` when the records are not at positions
        0, 1, 2, …, and ``InvalidValueError`` (:func:`new_flow`) when a signal names
        another flow or two signals share an id or a key. Signals sent later get
        ids above every id put here.
        """
        ...


def check_records(
    flow_id: str, existing: dict[int, str], count: int, records: tuple[StoredRecord, ...]
) -> None:
    """Refuse a write whose records leave a gap or replace a resolved record.

    *existing* maps the positions the write touches to their stored states (only
    those that exist); *count* is how many records the flow has.
    """
    for record in records:
        position = record.position
        state = existing.get(position)
        if state is None:
            if position != count:
                raise RecordConflictError(flow_id, position, count)
            count += 1
            existing[position] = record.state
        elif state not in UNRESOLVED:
            raise RecordConflictError(flow_id, position, count)
        else:
            existing[position] = record.state


def new_flow(flow: StoredFlow) -> StoredFlow:
    """Check a flow given to ``put_flow`` and return it with its lease cleared.

    Its records must be at positions 0, 1, 2, … (else ``RecordConflictError``), and
    its signals must be its own, with distinct ids and keys (else
    ``InvalidValueError``); nothing is checked against what a store holds.
    """
    if not isinstance(flow, StoredFlow):
        raise InvalidTypeError("put_flow flow", flow, "is not a StoredFlow (what load returns)")
    check_records(flow.id, {}, 0, flow.records)
    ids: set[int] = set()
    keys: set[str] = set()
    for signal in flow.signals:
        if signal.flow_id != flow.id:
            raise InvalidValueError(
                f"put_flow signal {signal.id}", signal.flow_id, f"is not the flow {flow.id!r}"
            )
        if signal.id in ids:
            raise InvalidValueError("put_flow signal id", signal.id, "is given twice")
        if signal.key is not None and signal.key in keys:
            raise InvalidValueError("put_flow signal key", signal.key, "is given twice")
        ids.add(signal.id)
        if signal.key is not None:
            keys.add(signal.key)
    return attrs.evolve(flow, lease_owner=None, lease_expires=None)


def flow_exists(flow_id: str, where: str) -> StoreError:
    """The error of ``put_flow`` for an id *where* (a store) holds already."""
    return StoreError(
        f"flow {flow_id!r} is stored in {where} already; put_flow writes new flows only "
        "(nothing was written)"
    )


def listing_query(
    columns: str,
    mark: str,
    *,
    status: str | None,
    name: str | None,
    limit: int,
    before: float | None,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of ``list_flows`` (*mark* is the driver's placeholder):
    newest update first, filtered, keyset-paged by ``before`` (never an OFFSET)."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        (f"status = {mark}", status),
        (f"name = {mark}", name),
        (f"updated_at < {mark}", before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    query = f"SELECT {columns} FROM flows"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += f" ORDER BY updated_at DESC, id DESC LIMIT {mark}"
    return query, [*params, int(limit)]


def lease_outcome(
    flow_id: str,
    owner: str,
    row: tuple[Any, ...] | None,
    now: float,
    renew: Callable[[], bool],
) -> CommitOutcome:
    """``check_lease`` from the flow's ``(status, lease_owner, cancel_reason,
    lease_expires)`` *row*: ``LeaseLostError`` unless *owner* holds the lease (a
    lapsed lease nobody took is renewed with *renew*), else status and reason."""
    if row is None or row[1] != owner:
        raise LeaseLostError(flow_id, owner)
    status, _, cancel_reason, expires = row
    if (expires or 0.0) <= now and not renew():
        raise LeaseLostError(flow_id, owner)  # lapsed, and taken meanwhile
    if status == Status.RUNNING:
        return RUNNING_OUTCOME
    return CommitOutcome(status, cancel_reason=cancel_reason)


#: The errors ``commit_many`` hands back for one item (nothing of it applied)
#: instead of raising them over the whole batch.
ITEM_ERRORS = (LeaseLostError, RecordConflictError)


#: What a commit that keeps the flow running answers (one object, no allocation).
RUNNING_OUTCOME = CommitOutcome(Status.RUNNING.value)


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
