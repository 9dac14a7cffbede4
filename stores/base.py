"""The narrow protocol every store implements.

A store keeps flows, their history records and their signals, as JSON text it
never interprets. Writes by a runner are fenced by its lease *owner* token.
All times are UTC seconds since the epoch. ``crux_gen.stores.memory`` is the reference
semantics; ``tests/test_store_contract.py`` runs one suite against every store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

from crux_gen.clock import Clock, when
from crux_gen.commands import VALUE_KINDS
from crux_gen.errors import (
    CruxError,
    FlowClosedError,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowStateError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    RecordConflictError,
    StoreError,
)
from crux_gen.records import (
    COMPLETED,
    FAILED,
    UNRESOLVED,
    WAITING,
    Commit,
    CommitOutcome,
    NewChild,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
    all_header_result,
)
from crux_gen.status import FINISHED, Status, transition

#: ``list_flows``'s *before*: ``None``, an ``updated_at`` (strictly older), or the
#: keyset ``(updated_at, id)`` of the last flow of a page.
Before = float | tuple[float, str] | None

#: The largest ``LIMIT`` every store takes (a 64-bit integer); more is the same.
MAX_LIMIT = 2**63 - 1


@runtime_checkable
class Store(Protocol):
    """What the runner and the worker need of a store: a new backend implements
    these first (``MemoryStore`` is the reference semantics).

    Flows compose: a write may start child flows (``Write.children``), each with
    ``parent_id`` naming the writer; ``load`` lists a flow's ``children``. A flow
    with a parent that finishes (by a commit or ``cancel``) makes a suspended
    parent due at once, in the same transaction; cancelling a flow cancels its
    unfinished descendants. ``Write.continue_as_new`` starts the next ``run`` of
    the same flow id with a fresh history; earlier runs' records are kept apart
    (``past_records``) until the flow is deleted or pruned.

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
        live). A finished flow is returned unclaimed. ``children`` is left empty
        (``load`` fills it); the records are those of the current run only. Records of completed or
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
        outcome carries those signals; ``write.wait_signals`` does the same for
        any of several names (the pending signals of all of them, oldest first).
        A flow cancelled meanwhile keeps ``"cancelled"``: the records (and the
        custom status) are written, no child is started, nothing continues as
        new, the lease is released, and the outcome says ``"cancelled"``.
        ``RecordConflictError`` for a record at a gap or over a resolved record
        (nothing applied).

        Composition, all in the same transaction:

        - ``write.custom_status`` (JSON text) replaces the flow's custom status;
          ``None`` leaves it.
        - ``write.children`` are inserted ``"running"``, unclaimed, with
          ``parent_id`` = *flow_id*, run 1, ``created_at`` = ``updated_at`` = *now*.
          One whose id is stored already under the same name is left as it is
          (a replayed ``Child``); under another name it is a
          ``FlowNameConflictError`` and nothing of the write is applied.
        - ``write.wait_children``: a park (``"suspended"``) finding any of those
          flows finished is written with ``wake_at`` = *now* (or the write's
          earlier ``wake_at``), so it is due at once.
        - ``write.continue_as_new`` (JSON text; only with ``status=None``, else
          ``InvalidValueError`` and nothing applied): after the rest of the write,
          the current run's records move to the past runs, the flow takes that
          input, ``run`` + 1, no records, ``"running"`` with no result, error or
          wait, still leased by *owner*; the outcome is ``"running"``. Pending
          signals stay pending.
        - A flow with a parent that finishes makes the parent due at once: a
          suspended parent whose ``wake_at`` is unset or later gets ``wake_at`` =
          *now*.

        A park with ``wait_kind="any"`` keeps in ``waiting_for`` the JSON array of
        the signal names it waits for (``due`` when one of them is pending); it
        must be such an array (``InvalidValueError``, nothing applied).
        """
        ...

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        """Group commit: apply the writes of several flows in one transaction (one
        fsync), each exactly as ``commit`` would.

        Returns one entry per item, in order: its ``CommitOutcome``, or the error
        ``commit`` would have raised for it (``LeaseLostError``,
        ``RecordConflictError``, ``FlowNameConflictError``: ``ITEM_ERRORS``), in
        which case nothing of that item was applied and the others were. A write
        no store may apply (``check_write``: ``InvalidValueError``) is raised
        before anything of the batch is applied. A failure of the store itself (``StoreError``) is
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
        """Read the flow with its history (of the current run) and signals, and the
        ids of its ``children`` (flows whose ``parent_id`` it is, oldest created
        first, then by id); ``FlowNotFoundError`` if absent."""
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
        ``commit``) and calls nothing more.

        In the same transaction every unfinished descendant (children, their
        children, …, through finished ones too) is cancelled with the reason
        ``f"its parent flow {flow_id!r} was cancelled: {reason}"``, and a suspended
        parent of *flow_id* is made due at once (as when a child finishes by a
        commit). Nothing of that happens when *flow_id* was finished already."""
        ...

    def due(self, now: float, limit: int) -> list[str]:
        """Ids of flows a worker should run now, oldest wake-up first: suspended
        flows whose timer is due or whose awaited signal is pending (``wait_kind``
        ``"suspend"``: the signal named ``waiting_for``; ``"any"``: one of the
        names of the JSON array ``waiting_for``), and running flows nobody holds
        (a crashed runner's, once its lease lapsed). A flow waiting for children
        (``"child"``) is due by its ``wake_at`` only, which a finishing child sets."""
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
        before: Before = None,
        version: tuple[str, int] | None = None,
    ) -> list[StoredFlow]:
        """Flows without their history (nor ``children``), newest update first (ties
        by id, descending); with *before* a float, only those updated strictly
        earlier; with *before* a keyset ``(updated_at, id)`` (the last row's: exact
        paging, each flow seen once also when many share an ``updated_at``), only
        those after it in that order.

        With *version* ``(name, n)``, only flows whose current run recorded the
        ``Version`` *name* completed with the value *n*; ``n=0`` means the flows
        whose current run has no ``Version`` record of that name (the old branch).
        """
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
        """Delete one finished flow with its records (of every run) and signals:
        ``True``; ``False``
        when no such flow is stored; ``FlowStateError`` (nothing changed) for an
        unfinished one."""
        ...

    def prune(self, finished_before: float) -> int:
        """Delete finished flows last updated before *finished_before*, with their
        records (of every run) and signals; return how many flows were deleted.
        Their children are left: each is pruned on its own once finished."""
        ...

    def put_flow(self, flow: StoredFlow) -> None:
        """Insert one whole flow, as ``load`` returned it from another store: its row
        (``parent_id``, ``run`` and ``custom_status`` too), every record of its
        current run and every signal (with its id, state and key) exactly as given,
        but with the lease cleared (``crux_gen.migrate``). Earlier runs' records
        are not part of a ``StoredFlow`` and are not copied; ``children`` is
        ignored (each child carries its own ``parent_id``).

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


def check_version(version: Any) -> tuple[str, int] | None:
    """``list_flows``'s *version* filter checked: ``None`` or ``(name, n)``, n >= 0."""
    if version is None:
        return None
    if (
        not isinstance(version, tuple)
        or len(version) != 2
        or not isinstance(version[0], str)
        or not isinstance(version[1], int)
        or isinstance(version[1], bool)
    ):
        raise InvalidTypeError("list_flows version", version, "is not a (name, int) pair")
    if version[1] < 0:
        raise InvalidValueError("list_flows version", version, "must have a number >= 0")
    return version


def version_matches(records: Sequence[StoredRecord], version: tuple[str, int]) -> bool:
    """Whether a run's *records* pass ``list_flows``'s *version* filter (``MemoryStore``;
    the SQL stores say the same in ``listing_query``)."""
    name, number = version
    mine = [r for r in records if r.kind == VERSION_KIND and r.name == name]
    if number == 0:
        return not mine
    return any(r.state == COMPLETED and r.result == str(number) for r in mine)


def listing_query(
    columns: str,
    mark: str,
    *,
    status: str | None,
    name: str | None,
    limit: int,
    before: Before,
    version: tuple[str, int] | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of ``list_flows`` (*mark* is the driver's placeholder):
    newest update first, filtered, keyset-paged by ``before`` (never an OFFSET).
    *version* is matched against the records of each flow's current run (the
    ``records`` table holds no other run)."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in ((f"status = {mark}", status), (f"name = {mark}", name)):
        if value is not None:
            where.append(clause)
            params.append(value)
    before = check_before(before)
    if isinstance(before, tuple):
        # (updated_at, id) < (u, i), spelled so that any index on updated_at bounds it.
        where.append(f"updated_at <= {mark} AND (updated_at < {mark} OR id < {mark})")
        params.extend([before[0], before[0], before[1]])
    elif before is not None:
        where.append(f"updated_at < {mark}")
        params.append(before)
    version = check_version(version)
    if version is not None:
        found = (
            "SELECT 1 FROM records r WHERE r.flow_id = flows.id "
            f"AND r.kind = '{VERSION_KIND}' AND r.name = {mark}"
        )
        if version[1] == 0:
            where.append(f"NOT EXISTS ({found})")
            params.append(version[0])
        else:
            where.append(f"EXISTS ({found} AND r.state = '{COMPLETED}' AND r.result = {mark})")
            params.extend([version[0], str(version[1])])
    query = f"SELECT {columns} FROM flows"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += f" ORDER BY updated_at DESC, id DESC LIMIT {mark}"
    return query, [*params, min(int(limit), MAX_LIMIT)]


def check_before(before: Any) -> Before:
    """``list_flows``'s *before* checked: ``None``, a finite number, or a pair
    ``(number, id)``; else ``InvalidTypeError`` / ``InvalidValueError`` naming it."""
    if before is None:
        return None
    moment = before[0] if isinstance(before, tuple) and len(before) == 2 else before
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise InvalidTypeError(
            "list_flows before", before, "is not an updated_at nor an (updated_at, id) pair"
        )
    if not math.isfinite(moment):
        raise InvalidValueError("list_flows before", before, "is not a finite time")
    if moment is before:
        return float(moment)
    if not isinstance(before[1], str):
        raise InvalidTypeError("list_flows before", before, "has an id that is not a str")
    return (float(moment), before[1])


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
ITEM_ERRORS = (LeaseLostError, RecordConflictError, FlowNameConflictError, FlowIdTakenError)

#: The record kind of a ``Version`` command (``list_flows(version=...)``).
VERSION_KIND = "version"

#: Wait kinds the stores read: ``"any"`` keeps a JSON array of signal names in
#: ``waiting_for`` (due when one is pending); ``"child"`` is due by ``wake_at`` only.
WAIT_ANY = "any"
WAIT_CHILD = "child"


def check_write(flow_id: str, write: Write) -> None:
    """Refuse a write no store may apply (``InvalidValueError``), before anything
    of it (or of its batch) is: ``continue_as_new`` with a status, or a park on
    ``wait_kind="any"`` whose ``waiting_for`` is not a JSON array of names."""
    if write.continue_as_new is not None and write.status is not None:
        raise InvalidValueError(
            f"flow {flow_id!r} write continue_as_new",
            write.status,
            "comes with a status; continuing as new keeps the flow running (status=None)",
        )
    if write.wait_kind == WAIT_ANY and write.status == Status.SUSPENDED:
        try:
            names = json.loads(write.waiting_for or "")
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidValueError(
                f"flow {flow_id!r} write waiting_for",
                write.waiting_for,
                'must be a JSON array of signal names with wait_kind "any"',
            )


def any_names(waiting_for: str | None) -> list[str] | None:
    """The signal names a ``wait_kind="any"`` park waits for; ``None`` when the list
    is unreadable (a corrupt row): then any pending signal wakes the flow, whose
    runner parks it again with a list it wrote, or reports what else is corrupt
    (a corrupt row never strands its flow, nor fails the due query of others)."""
    try:
        names = json.loads(waiting_for or "")
    except (ValueError, RecursionError):
        return None
    if not isinstance(names, list):
        return None
    return [n for n in names if isinstance(n, str)]


def awaited_names(write: Write) -> list[str]:
    """The signal names whose pending signals stop *write* (``wait_signal`` and
    ``wait_signals``), in order, each once."""
    names = [] if write.wait_signal is None else [write.wait_signal]
    return list(dict.fromkeys([*names, *write.wait_signals]))


def child_cancel_reason(flow_id: str, reason: str) -> str:
    """The cancel reason of a descendant of *flow_id* cancelled with it."""
    return f"its parent flow {flow_id!r} was cancelled: {reason}"


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


def retry_plan(
    records: tuple[StoredRecord, ...] | list[StoredRecord],
) -> tuple[int, tuple[StoredRecord, ...]]:
    """What a retried flow keeps of *records*: ``(keep, reset)``. The records from
    position *keep* on are dropped; each record of *reset* is written over the one
    at its position.

    The command whose failure ended the flow is the last record that is not a
    ``ctx.now()``-style value (its exception propagated, perhaps through an
    ``except`` block that re-raised or wrapped it):

    - a failed record: it is dropped (with the values after it), and the next run
      runs that command again;
    - a branch of an ``All`` whose failure was thrown at its ``yield``: the ``All``
      and its failed branches are reset to waiting and every other branch is kept,
      so the next run runs only the failed branches again;
    - anything else (the flow caught the failure and went on, or there is none):
      the body itself raised; every record is kept, and the next run replays them
      all and runs the body again from where it raised.
    """
    last = len(records) - 1
    while last >= 0 and records[last].kind in VALUE_KINDS:
        last -= 1
    if last < 0:
        return len(records), ()
    block = all_block(records, last)
    if block is not None:
        header, end = block
        failed = [r for r in records[header + 1 : end + 1] if r.state == FAILED]
        if not failed:
            return len(records), ()
        waiting = records[header]._replace(
            state=WAITING, result=all_header_result(end - header), finished_at=None
        )
        reset = [
            r._replace(state=WAITING, error=None, attempts=0, finished_at=None, wake_at=None)
            for r in failed
        ]
        return end + 1, (waiting, *reset)
    if records[last].state == FAILED:
        return records[last].position, ()
    return len(records), ()


def all_block(records: Sequence[StoredRecord], index: int) -> tuple[int, int] | None:
    """``(header, last)``, the indexes of the ``All`` whose branch record is at
    *index*, or ``None`` when that record is no ``All``'s branch."""
    header = index
    while header >= 0 and records[header].kind in ("step", "child"):
        header -= 1
    if header < 0 or header == index or records[header].kind != "all":
        return None
    head = records[header]
    try:
        count = json.loads(head.result or "null")["branches"]
    except (ValueError, TypeError, KeyError):
        # Written before headers held their count: the branches are the records
        # written with the header, in the same write (the same start time).
        count = 0
        while (
            header + count + 1 < len(records)
            and records[header + count + 1].kind in ("step", "child")
            and records[header + count + 1].started_at == head.started_at
        ):
            count += 1
    if not isinstance(count, int) or not header < index <= header + count < len(records):
        return None
    return header, header + count


def check_child(parent_id: str, child: NewChild, found: tuple[str, str | None] | None) -> None:
    """Refuse a child whose id is taken: by a flow of another name
    (``FlowNameConflictError``), or by a flow that is not *parent_id*'s child
    (``FlowIdTakenError``: a child has one parent, which its end wakes). *found*
    is the stored flow's ``(name, parent_id)``, ``None`` when the id is new."""
    if found is None:
        return
    name, parent = found
    if name != child.name:
        raise FlowNameConflictError(child.flow_id, name, child.name)
    if parent != parent_id:
        raise FlowIdTakenError(child.flow_id, parent, parent_id)


def deletable(flow_id: str, status: str, parent: tuple[str, str] | None) -> None:
    """Refuse to delete an unfinished flow, or a child whose parent is unfinished
    (it may still wait for the child: *parent* is its ``(id, status)``)."""
    if status not in FINISHED:
        raise FlowStateError(
            flow_id, status, "only a finished flow can be deleted; cancel it first"
        )
    if parent is not None and parent[1] not in FINISHED:
        raise FlowStateError(
            flow_id,
            status,
            f"its parent flow {parent[0]!r} is {parent[1]} and may still wait for it; "
            "delete it once its parent has finished",
        )
