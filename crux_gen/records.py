"""What a store holds and what the runner asks it to write: plain frozen records.

Payloads (input, step results, signal payloads, errors) arrive here already
encoded as JSON text; stores never see Python objects of the user's. Times are
UTC seconds since the epoch (floats), compared as numbers in the stores' indexes.

History records and signals are named tuples rather than attrs classes: a resume
builds one per recorded command, and ``_make(row)`` is several times cheaper.
"""

from __future__ import annotations

import secrets
from typing import Any, NamedTuple

import attrs

# Record states.
COMPLETED = "completed"  # the command's outcome is recorded (result)
FAILED = "failed"  # a step failed for good (error); replay re-raises it
WAITING = "waiting"  # a Suspend / WaitUntil / Sleep was reached and has not resolved
RETRYING = "retrying"  # a step failed, tries remain; ``attempts`` and ``wake_at`` kept
EXPIRED = "expired"  # the wait's deadline passed
#: States a record may leave (its owner rewrites it); the others are final.
UNRESOLVED = frozenset({WAITING, RETRYING})

# Signal states.
PENDING = "pending"
CONSUMED = "consumed"
REJECTED = "rejected"
UNUSED = "unused"  # still pending when the flow finished: kept, never consumed


class StoredRecord(NamedTuple):
    """One entry of a flow's history, at *position* (0, 1, 2, …)."""

    position: int
    kind: str
    name: str
    state: str
    result: str | None = None
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    wake_at: float | None = None
    deadline: float | None = None


class StoredSignal(NamedTuple):
    """A signal sent to a flow."""

    id: int
    flow_id: str
    name: str
    payload: str
    state: str
    created_at: float
    error: str | None = None
    consumed_at: float | None = None
    position: int | None = None
    key: str | None = None  # the sender's idempotency key: one signal per key and flow
    #: The W3C trace context active where it was sent (``crux_gen.observe.trace``).
    trace: str | None = None


@attrs.frozen
class SignalUpdate:
    """Mark signal *id* consumed (at *position*) or rejected (with *error*)."""

    id: int
    state: str
    error: str | None = None
    position: int | None = None


@attrs.frozen
class StoredFlow:
    """A flow's row, and (from ``claim``/``load``) its whole history and signals."""

    id: str
    name: str
    status: str
    input: str
    created_at: float
    updated_at: float
    result: str | None = None
    error: str | None = None
    cancel_reason: str | None = None
    waiting_for: str | None = None
    wait_kind: str | None = None
    wake_at: float | None = None
    deadline: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    parent_id: str | None = None  # the flow that started this one with ``Child``
    run: int = 1  # 1, 2, …: ``ContinueAsNew`` starts the next run of the same id
    custom_status: str | None = None  # JSON text of ``ctx.set_custom_status``
    priority: int = 0  # among due flows a worker takes higher first (``Flow.start``)
    blocked_by: str | None = None  # what a due flow waits for (an exclusive holder, a limit)
    #: ``Exclusive``: the JSON ``[name, key]`` of every flow started under it, and
    #: of the one started, unfinished flow that holds it (``holds``: unique).
    exclusive_key: str | None = None
    holds: str | None = None
    #: ``Debounce``: the JSON ``[name, key]`` of the pending flow later starts
    #: replace (unique), and the latest time its due time may move to.
    debounce_key: str | None = None
    debounce_cap: float | None = None
    #: ``Limit``: until when a flow blocked by a rate waits (``None``: a flow blocked
    #: by a full concurrency limit waits for a slot to free), and the key due flows
    #: are taken round-robin across (the first keyed limit's JSON ``[name, key]``).
    blocked_until: float | None = None
    fair_key: str | None = None
    #: The W3C trace context of the request that started it (``crux_gen.observe``:
    #: compact JSON ``{"traceparent": ..., "tracestate": ...}``; ``None``: none).
    trace: str | None = None
    #: Claims in a row after a runner's lease lapsed with nothing recorded since its
    #: claim (``@flow(max_recoveries=)``; any record resets it), and when the
    #: lease now held (or last held) was taken.
    recoveries: int = 0
    claimed_at: float | None = None
    records: tuple[StoredRecord, ...] = ()  # of the current run
    signals: tuple[StoredSignal, ...] = ()
    children: tuple[str, ...] = ()  # ids of the flows it started (``load`` only), oldest first


class NewChild(NamedTuple):
    """A child flow a write creates (``Child``): its id, flow name and JSON input,
    and the trace context of the slice that starts it."""

    flow_id: str
    name: str
    input: str
    trace: str | None = None


@attrs.frozen
class Write:
    """One atomic write by the lease holder.

    *records* are appended, or replace an unresolved record at their position;
    *signals* change state. With *status* ``None`` the flow goes on running (a
    step's commit); otherwise the flow row takes *status* and the wait fields,
    and the lease is released. With *wait_signal*, if a pending signal of that
    name exists (other than those in *signals*), nothing at all is applied and
    the pending signals are returned: the runner consumes one and writes again;
    *wait_signals* does the same for any of several names (an ``Any``).

    *children* are flows to create (``Child``): ``"running"``, unclaimed, with this
    flow as their parent; one whose id exists already under the same name is left
    as it is. With *wait_children*, a park finding any of those flows finished
    is written due at once (``wake_at`` = now). *custom_status* (JSON text) replaces
    the flow's custom status; ``None`` leaves it. *continue_as_new* (JSON text) ends
    the current run after applying the rest: its records are kept as a past run,
    and the flow starts run + 1 with that input, no records, still running and
    still leased by the writer.
    """

    records: tuple[StoredRecord, ...] = ()
    signals: tuple[SignalUpdate, ...] = ()
    status: str | None = None
    result: str | None = None
    error: str | None = None
    waiting_for: str | None = None
    wait_kind: str | None = None
    wake_at: float | None = None
    deadline: float | None = None
    wait_signal: str | None = None
    wait_signals: tuple[str, ...] = ()
    children: tuple[NewChild, ...] = ()
    wait_children: tuple[str, ...] = ()
    custom_status: str | None = None
    continue_as_new: str | None = None
    #: Slots of limited steps (``"step N"``) whose attempt this write stores: given
    #: back in its transaction.
    free_slots: tuple[str, ...] = ()
    #: Slots the limited steps of the flow's next calls take (``(part, SlotAsk)``),
    #: all or none, in its transaction; none free: ``CommitOutcome.blocked``.
    take_slots: tuple[tuple[str, Any], ...] = ()
    #: ``ctx.set_event``s since the last write (``(key, JSON text)``, the last per
    #: key) and the body's stream writes (``(key, tag, JSON text or None: closed)``,
    #: a tag the same on every replay: stored once): ``stores/base_streams.py``.
    events: tuple[tuple[str, str], ...] = ()
    streams: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def is_limited_step(self) -> bool:
        """A step's result, giving back its slots and taking the next limited step's:
        stores write it as a step (its fenced record) and pass the slots along."""
        return (
            bool(self.free_slots and self.take_slots)
            and len(self.records) == 1
            and self.status is None
            and not self.signals
            and self.continue_as_new is None
            and self.custom_status is None
            and not self.children
            and not self.wait_signals
            and not self.wait_children
            and not self.events
            and not self.streams
        )

    @property
    def is_step(self) -> bool:
        """One record and nothing else: a step's result, which stores write on their
        hot path (one fenced statement)."""
        return not self.events and not self.streams and self._is_record_alone()

    @property
    def is_published_step(self) -> bool:
        """A step's result and what the body published before it (events, stream
        writes), nothing else: SQL stores write its fenced record and those in one
        transaction, without the general path's reads (``sql_publish.published_step``)."""
        return bool(self.events or self.streams) and self._is_record_alone()

    def _is_record_alone(self) -> bool:
        return (
            len(self.records) == 1
            and self.status is None
            and not self.signals
            and self.continue_as_new is None
            and self.custom_status is None
            and not self.children
            and not self.wait_signals
            and not self.wait_children
            and not self.free_slots
            and not self.take_slots
        )


@attrs.frozen
class CommitOutcome:
    """What a commit found: the flow's stored status, and signals that arrived."""

    status: str
    signals: tuple[StoredSignal, ...] = ()
    cancel_reason: str | None = None
    #: ``Write.take_slots`` found a slot full: the write was applied, then the flow
    #: was marked blocked and let go of its slots and its lease.
    blocked: bool = False


class Commit(NamedTuple):
    """One flow's write in a round's commit (``Store.commit_many``): the arguments
    of ``Store.commit``."""

    flow_id: str
    owner: str
    now: float
    write: Write


class LeaseCheck(NamedTuple):
    """One runner's check before it calls a step function (``Store.check_leases``):
    the arguments of ``Store.check_lease``."""

    flow_id: str
    owner: str
    now: float


class StoredSchedule(NamedTuple):
    """A schedule's stored state (``Schedules``): its cron and zone as the workers
    last registered them, whether it is paused, the last tick fired (UTC seconds)
    with the flow that tick started, and *next_tick*, the earliest tick not yet
    handled (every tick before it was fired or skipped)."""

    name: str
    cron: str
    tz: str
    paused: bool
    last_tick: float | None
    last_flow: str | None
    next_tick: float


def all_header_result(branches: int) -> str:
    """The result an ``All``'s header record holds: how many branch records follow
    it (``retry_failed`` finds the branches of a failed ``All`` by it)."""
    return f'{{"branches":{branches}}}'


def new_flow_id() -> str:
    """An unguessable flow id (128 random bits, hex): for a new flow and a child."""
    return secrets.token_hex(16)


#: What ``Exclusive(on_conflict=...)`` does when its key is held.
QUEUE, SKIP, CANCEL = "queue", "skip", "cancel"


@attrs.frozen
class NewPending:
    """A flow to create ``"pending"`` (``Flow.start``), unclaimed, due at now +
    *delay* seconds, with its *priority*.

    *exclusive* (the JSON ``[name, key]`` of an ``Exclusive``): when a started,
    unfinished flow holds that key, *on_conflict* decides (``QUEUE``: created
    blocked by the holder; ``SKIP``: nothing created, the holder returned;
    ``CANCEL``: the holder cancelled, reason ``"replaced by <id>"``).
    *debounce* (the JSON ``[name, key]`` of a ``Debounce``): a pending, unclaimed
    flow of that key takes this input and the new due time instead, never later
    than *max_wait* seconds after the first of those starts (its ``debounce_cap``).
    """

    flow_id: str
    name: str
    input: str
    priority: int = 0
    delay: float = 0.0
    exclusive: str | None = None
    on_conflict: str = QUEUE
    debounce: str | None = None
    max_wait: float | None = None
    fair_key: str | None = None
    trace: str | None = None  # ``StoredFlow.trace``


@attrs.frozen
class Enqueued:
    """What ``Store.enqueue`` did: the flow that stands for the start (the new one,
    or the existing one it found), and whether it was created."""

    flow: StoredFlow
    created: bool
