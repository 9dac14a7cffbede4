"""The narrow protocols every store implements: ``Store`` (what the runner and the
worker need) and ``StoreAdmin`` (what operators need), with ``Caps`` (what a store
declares it can do beyond them).

A store keeps flows, their history records and their signals, as JSON text it
never interprets. Writes by a runner are fenced by its lease *owner* token.
All times are UTC seconds since the epoch. ``crux_gen.stores.memory`` is the reference
semantics; ``tests/test_store_contract.py`` runs one suite against every store.
The rules every store applies alike are in ``stores/rules.py`` (writes, leases,
signals, retry) and ``stores/listing.py`` (``list_flows``); they are importable
from here too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from crux_gen.clock import Clock
from crux_gen.errors import CruxError
from crux_gen.limits import Gate
from crux_gen.records import (
    Commit,
    CommitOutcome,
    Enqueued,
    LeaseCheck,
    NewPending,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)

from .base_limits import Limits as Limits
from .base_pause import Pausing as Pausing
from .base_schedules import Schedules as Schedules
from .base_signals import SignalAsk as SignalAsk
from .base_signals import Signals as Signals
from .browse import ErrorGroup
from .caps import Caps, caps_of
from .listing import (
    MAX_LIMIT,
    VERSION_KIND,
    Before,
    check_before,
    check_version,
    listing_query,
    version_matches,
)
from .rules import (
    ITEM_ERRORS,
    RUNNING_OUTCOME,
    WAIT_ANY,
    WAIT_CHILD,
    all_block,
    any_names,
    awaited_names,
    check_child,
    check_records,
    check_signal_allowed,
    check_write,
    child_cancel_reason,
    deletable,
    flow_exists,
    lease_is_live,
    lease_outcome,
    new_flow,
    retry_plan,
    retry_status,
)

__all__ = [
    "ITEM_ERRORS",
    "MAX_LIMIT",
    "RUNNING_OUTCOME",
    "VERSION_KIND",
    "WAIT_ANY",
    "WAIT_CHILD",
    "Before",
    "Caps",
    "Limits",
    "Schedules",
    "Store",
    "StoreAdmin",
    "all_block",
    "any_names",
    "awaited_names",
    "caps_of",
    "check_before",
    "check_child",
    "check_records",
    "check_signal_allowed",
    "check_version",
    "check_write",
    "child_cancel_reason",
    "deletable",
    "flow_exists",
    "lease_is_live",
    "lease_outcome",
    "listing_query",
    "new_flow",
    "retry_plan",
    "retry_status",
    "version_matches",
]


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
    #: What the store can do beyond this protocol (``stores/caps.py``); callers
    #: read it through ``caps_of``, which describes a store without it too.
    caps: Caps

    def start(
        self, flow_id: str, name: str, input: str, owner: str, now: float, *,
        trace: str | None = None,
    ) -> StoredFlow:  # fmt: skip
        """Create the flow ``"running"`` and claimed by *owner*, with *trace* (the
        trace context of its start, ``StoredFlow.trace``), or claim it if it
        exists with the same *name* (its trace kept).

        Raises ``FlowNameConflictError`` if the id belongs to another flow name,
        ``FlowBusyError`` if another owner's lease is live. A finished (or paused)
        flow is returned unclaimed (``lease_owner != owner``).
        """
        ...

    def enqueue(self, new: NewPending, now: float) -> Enqueued:
        """Create the flow *new* ``"pending"`` and unclaimed, due at *now* +
        ``new.delay`` with ``new.priority`` (``Flow.start``), in one transaction;
        nothing of it runs. A flow stored under ``new.flow_id`` already is
        returned as it is (``created`` false); under another name it is a
        ``FlowNameConflictError``.

        ``new.exclusive``: the flow holding that key (``holds``; the one started,
        unfinished flow of the key) decides by ``new.on_conflict``: ``"queue"``
        creates the flow not due, ``blocked_by`` the holder's id (when the holder
        finishes, by a commit or a cancel, the queued flow of the key with the
        highest priority, then the oldest, holds the key and is due at once, in
        the same transaction); ``"skip"`` creates nothing and returns the holder;
        ``"cancel"`` cancels the holder (reason ``"replaced by <new id>"``) and the
        new flow holds the key. With no holder the new flow holds it.

        ``new.debounce``: a pending flow of that key nobody holds takes
        ``new.input``, ``new.priority`` and the due time *now* + ``new.delay``
        (never later than its first start + ``new.max_wait``) and is returned
        (``created`` false); one claimed or gone on since lets go of the key and a
        new flow is created. Racing starts of one key, from any process, leave one
        holder and one pending debounced flow per key."""
        ...

    def claim(
        self,
        flow_id: str,
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
        gate: Gate | None = None,
    ) -> StoredFlow:
        """Take the lease and load the flow with its whole history and its pending
        signals (oldest first). Nothing but the lease changes: status and wait
        fields stay as they were, so a run that writes nothing leaves the flow
        exactly as it found it.

        Raises ``FlowNotFoundError`` or ``FlowBusyError`` (another owner's lease is
        live). A finished or paused flow is returned unclaimed. ``children`` is left empty
        (``load`` fills it); the records are those of the current run only. Records of completed or
        failed commands may leave out their timings and attempts (replay does not
        need them; ``load`` has everything). With *only_if_due* (the worker),
        checking that the flow is still due (as ``due`` at *now*) and claiming it
        are one atomic step: a suspended flow that is not due raises
        ``FlowBusyError``, a finished one ``FlowClosedError``, and nothing changes.
        With *gate* (implies *only_if_due*), the flow's limits are taken as
        ``claim_due`` takes them; a flow they block is marked so and
        ``crux_gen.limits.Blocked`` (a ``FlowBusyError``) raised.
        """
        ...

    def check_leases(self, batch: Sequence[LeaseCheck]) -> list[CommitOutcome | CruxError]:
        """Before step functions run: for each ``(flow_id, owner, now)`` of *batch*,
        in order, ``LeaseLostError`` unless *owner* holds the flow's lease (a lapsed
        lease nobody took is renewed), else the flow's status and cancel reason
        (``"cancelled"`` means: call nothing more). ``rules.lease_outcome`` decides.

        One read for the whole batch (the checks of a concurrent worker's runners).
        An item's ``LeaseLostError`` is returned in its place, as ``commit_many``
        returns its item errors; a failure of the store itself (``StoreError``) is
        raised. An empty batch reads nothing.
        """
        ...

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        """``check_leases`` of one flow, its ``LeaseLostError`` raised."""
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
        self,
        now: float,
        limit: int,
        owner: str,
        *,
        exclude: Collection[str] = (),
        gate: Gate | None = None,
    ) -> list[StoredFlow]:
        """Claim up to *limit* flows that are due at *now* (as ``due``: higher
        priority first, then round-robin across the ``fair_key`` values of a keyed
        limit, then the earliest due, leaving out the ids in *exclude*) for *owner*
        in one transaction, then load them as ``claim`` does (history and pending
        signals) in one read.

        *gate* gives the ``SlotAsk``s of a flow's limits (by its name and stored
        input): each flow takes them in the same transaction (a slot of a
        concurrency limit, counted while its lease is live; a GCRA turn of a rate)
        before its lease, else it is not claimed and is marked ``blocked_by`` the
        limit (with ``blocked_until`` its turn for a rate) and leaves the due scan
        until a slot frees or its turn comes. A commit that parks or ends a flow,
        and its cancel, give its slots back and make the next flow blocked by each
        due (highest priority, then the longest blocked), in that transaction.

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
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None,
        trace: str | None = None,
    ) -> StoredSignal | None:  # fmt: skip
        """Store a pending signal (with *trace*, the trace context it was sent in:
        ``StoredSignal.trace``); ``FlowNotFoundError``, or ``FlowClosedError``
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

    def close(self) -> None:
        """Release what the store holds open in this thread."""
        ...


@runtime_checkable
class StoreAdmin(Protocol):
    """What operators need on top of :class:`Store`: listings, retry, prune."""

    def due(self, now: float, limit: int) -> list[str]:
        """Ids of flows a worker should run now, higher ``priority`` first, then the
        oldest wake-up: pending flows (``Flow.start``) whose due time came and
        that nothing blocks (``blocked_by``), suspended
        flows whose timer is due or whose awaited signal is pending (``wait_kind``
        ``"suspend"``: the signal named ``waiting_for``; ``"any"``: one of the
        names of the JSON array ``waiting_for``), and running flows nobody holds
        (a crashed runner's, once its lease lapsed). A flow waiting for children
        (``"child"``) is due by its ``wake_at`` only, which a finishing child sets.

        Read-only: what a worker claims is ``Store.claim_due``'s (one statement
        finds and claims); this is for operators and tools.
        """
        ...

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: Before = None,
        version: tuple[str, int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFlow]:
        """Flows without their history (nor ``children``), newest update first (ties
        by id, descending); with *before* a float, only those updated strictly
        earlier; with *before* a keyset ``(updated_at, id)`` (the last row's: exact
        paging, each flow seen once also when many share an ``updated_at``), only
        those after it in that order. *since* (inclusive) and *until* (exclusive)
        bound ``updated_at``.

        With *version* ``(name, n)``, only flows whose current run recorded the
        ``Version`` *name* completed with the value *n*; ``n=0`` means the flows
        whose current run has no ``Version`` record of that name (the old branch).
        """
        ...

    def count(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """How many flows ``list_flows`` with these filters and no limit would list:
        counted in the store (one ``COUNT(*)`` on the SQL stores), no row read out."""
        ...

    def wait_records(self, flow_ids: Sequence[str]) -> dict[str, tuple[StoredRecord, ...]]:
        """The unresolved records (``waiting``, ``retrying``) of the current run of
        each flow of *flow_ids*, by position: what an ``Any``, ``All`` or ``Child``
        park waits on, for ``list_flows``'s ``waits``. One read for all of them; a
        flow with none, or not stored, is left out."""
        ...

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        """Ids that start with *prefix*, in order, at most *limit* (the CLI's short ids)."""
        ...

    def browse_flows(
        self,
        *,
        limit: int = 100,
        before: Before = None,
        status: str | None = None,
        name: str | None = None,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
        top_level: bool = False,
        error: tuple[str, str] | None = None,
    ) -> list[StoredFlow]:
        """``list_flows`` (same order, same keyset *before*) for the dashboard, with
        more filters, all combined: ids starting with *id_prefix*; updated at or
        after *since* and strictly before *until*; with *top_level*, only flows no
        ``Child`` started; with *error* ``(type, message)``, only failed flows whose
        stored error has exactly that type and message (``stores/browse.py``)."""
        ...

    def error_groups(self, *, limit: int = 100) -> list[ErrorGroup]:
        """The failed flows grouped by their error's type and message, with how many
        and the latest ``updated_at``, the most frequent first (then the latest); an
        error that is not readable JSON counts under ``browse.UNREADABLE``."""
        ...

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        """Make a ``"failed"``, ``"cancelled"`` or ``"expired"`` flow due again
        from where it stopped (``rules.retry_plan``: the failed command, or a timed
        wait parked on or expired, is dropped and runs again), keeping every other
        record and signal (those marked unused are pending again), and set it
        ``"suspended"`` with ``wake_at=now``, no error and no cancel reason, so the
        next resume or worker pass runs it; a cancelled flow's descendants
        cancelled with it (``rules.cancelled_with``) too. Returns the dropped
        records. Raises ``FlowNotFoundError``, or ``FlowStateError`` (nothing
        changed) for any other status.
        """
        ...

    def delete(self, flow_id: str) -> bool:
        """Delete one finished flow with its records (of every run) and signals:
        ``True``; ``False``
        when no such flow is stored; ``FlowStateError`` (nothing changed) for an
        unfinished one."""
        ...

    def prune(
        self,
        finished_before: float | None = None,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete finished flows last updated before *finished_before* (``None``:
        any time), of *status* (a finished one; ``None``: any finished) and flow
        *name* when given, with their records (of every run) and signals; return
        how many flows were deleted. A child whose parent is unfinished is kept;
        children are left: each is pruned on its own once finished.

        With *limit* (an int of 1 or more), at most that many, the least recently
        updated first: a worker's retention deletes one small batch at a time. Two
        prunes at once never both count one flow. With *dry_run*, delete nothing
        and return how many it would delete (``crux-gen prune --dry-run``)."""
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
