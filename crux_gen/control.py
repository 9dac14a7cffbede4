"""Acting on stored flows without running them: signal, cancel, inspect.

Each function's *store* is a store object, or a SQLite file's path or a
``postgresql://`` URL opened for the call (:mod:`crux_gen.opening`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import codec, observe
from .clock import when
from .codec import ErrorInfo
from .errors import CorruptRecordError, CruxError, InvalidTypeError, InvalidValueError
from .flow import check_flow_id
from .names import check_name, unstorable
from .opening import StorePath, using
from .records import COMPLETED, StoredFlow, StoredRecord
from .results import FlowInfo, FlowSummary, HistoryEntry, SignalInfo
from .signals import check_payload
from .status import Status
from .views import info_of
from .waits import NEEDS_RECORDS, waiting_for, waits_of

if TYPE_CHECKING:
    from .stores.base import Store, StoreAdmin

from .stores.base_pause import Pausing


def signal_flow(
    flow_id: str,
    name: str,
    payload: Any,
    *,
    store: Store | StorePath,
    key: str | None = None,
    validate: bool = False,
) -> bool:
    """Durably record signal *name* with *payload* for flow *flow_id*, from any process;
    ``True`` once stored.

    >>> signal_flow(flow_id, "email-verified", {"verified_at": "2026-11-24T10:00:00Z"}, store=store)
    True

    A signal sent before the flow reaches its ``Suspend`` is kept until then. With
    *key* (a webhook's delivery id, a link's token), a second signal carrying the
    same key for the same flow stores nothing and returns ``False``: a link clicked
    twice or a retried delivery is answered, not consumed twice. With *validate*,
    a payload that does not fit the schema of the ``Suspend`` the flow is parked on
    is a ``SignalValidationError`` and nothing is stored (``signals.check_payload``:
    a flow not parked on that wait takes the signal unchecked, as without it).
    Raises ``FlowNotFoundError``, ``FlowClosedError`` (finished, or its wait
    expired), ``SerializationError`` (nothing stored), or ``InvalidTypeError`` /
    ``InvalidValueError`` for a flow id, signal name or key that is not a non-empty str.
    """
    check_flow_id(flow_id)
    check_name(name, what="signal name")
    if key is not None:
        check_name(key, what="signal key")
    encoded = codec.encode(payload, what=f"the payload of signal {name!r} for flow {flow_id!r}")
    trace = observe.trace()  # the request's, for the slice it wakes to link to
    with using(store) as opened:
        if validate:
            check_payload(opened, flow_id, name, encoded)
        now = opened.clock.time()
        return opened.add_signal(flow_id, name, encoded, now, key=key, trace=trace) is not None


def cancel_flow(flow_id: str, reason: str, *, store: Store | StorePath) -> bool:
    """Cancel an unfinished flow; ``False`` (and nothing changed) if it had finished.

    >>> cancel_flow(flow_id, "account deleted", store=store)
    True

    A flow running in another process stops at its next command boundary. A flow
    id that is not a non-empty str is an ``InvalidTypeError`` / ``InvalidValueError``.
    """
    check_flow_id(flow_id)
    text = str(reason)
    problem = unstorable(text)
    if problem is not None:
        raise InvalidValueError("cancel reason", text, problem)
    with using(store) as opened:
        return bool(opened.cancel(flow_id, text, opened.clock.time()))


def pause_flow(flow_id: str, *, store: Store | StorePath) -> bool:
    """Pause an unfinished flow: ``True``; ``False`` (nothing changed) when it is
    paused already.

    >>> pause_flow(flow_id, store=store)
    True

    A paused flow (status ``"paused"``) is never claimed: no worker runs it, and
    ``resume`` or ``Flow.run`` of its id returns its ``FlowResult`` with status
    ``"paused"`` without running anything. A flow running in another process
    stops at its next command boundary, as with ``cancel_flow`` (the step in hand
    finishes and is recorded). Signals sent meanwhile are stored, and timers and
    deadlines keep counting: see :func:`unpause_flow`. Its children keep running;
    it holds no slot of a ``Limit``. Raises ``FlowNotFoundError``, or
    ``FlowClosedError`` for a finished flow.
    """
    check_flow_id(flow_id)
    with using(store) as opened:
        return bool(pausing(opened).pause(flow_id, opened.clock.time()))


def unpause_flow(flow_id: str, *, store: Store | StorePath) -> bool:
    """Send a paused flow back to what it was: ``True``; ``False`` (nothing changed)
    when it is not paused (finished ones included).

    >>> unpause_flow(flow_id, store=store)
    True

    A flow parked on a wait is suspended again with its wake time and deadline:
    a timer that came, or a signal it waits for that arrived while it was paused,
    makes it due at once, and a wait whose deadline passed expires when it runs.
    A flow that was running (or pending and due) is due at once; one pending with
    a later due time runs then. Raises ``FlowNotFoundError``.
    """
    check_flow_id(flow_id)
    with using(store) as opened:
        return bool(pausing(opened).unpause(flow_id, opened.clock.time()))


def pausing(store: Any) -> Pausing:
    """*store* as a ``Pausing`` store; ``CruxError`` naming it when it is not one."""
    if not isinstance(store, Pausing):
        raise CruxError(f"store {store!r} has no pause() and unpause(): it cannot pause flows")
    return store


def retry_flow(flow_id: str, *, store: StoreAdmin | StorePath) -> None:
    """Make a ``"failed"``, ``"cancelled"`` or ``"expired"`` flow run again from
    where it stopped; the next worker pass or ``resume`` runs it.

    >>> retry_flow(flow_id, store=store)

    Every completed step and consumed signal is kept (a signal left unused when
    it ended is pending again). A failed flow runs the command that failed it
    again (``crux-gen retry``); a cancelled one goes on from where it was
    cancelled, with its descendants cancelled with it (retried too); a wait with
    a timeout the flow was parked on or that expired is waited for again, its
    timeout counted from the retry. Any other status is a ``FlowStateError`` (a
    ``CruxError``) and nothing changes; an unknown id a ``FlowNotFoundError``.
    """
    check_flow_id(flow_id)
    with using(store) as opened:
        opened.retry_failed(flow_id, opened.clock.time())


def get_flow(flow_id: str, *, store: Store | StorePath) -> FlowInfo:
    """The stored state of a flow, its history and its signals, without running it.

    >>> get_flow(flow_id, store=store).history[0].result
    {'to': 'ada@example.com', 'template': 'welcome'}

    A stored value that cannot be decoded (changed outside crux_gen) is a
    ``CorruptRecordError`` naming the flow, the position and the column.
    """
    check_flow_id(flow_id)
    with using(store) as opened:
        return info_of(opened.load(flow_id))


def consumed_in_this_run(info: FlowInfo) -> dict[int, int]:
    """Position in the current run's history -> the id of the signal its wait
    consumed (``crux-gen show``, the dashboard).

    A signal row keeps the position of the wait that consumed it but not the run:
    after ``ContinueAsNew`` a signal an earlier run consumed names a position the
    current run may hold again. It is credited to the current record at that
    position only when that record is a completed ``Suspend`` of the signal's name
    holding its payload (or an ``Any`` that the signal won), begun no later than the
    signal was consumed; of several, the last consumed.
    """
    if info.run == 1:
        return {s.position: s.id for s in info.signals if s.position is not None}
    at = {entry.position: entry for entry in info.history}
    found: dict[int, SignalInfo] = {}
    for sig in info.signals:
        entry = at.get(sig.position) if sig.position is not None else None
        if entry is None or entry.state != COMPLETED or not took(entry, sig):
            continue
        began, consumed = entry.started_at, sig.consumed_at
        if began is not None and consumed is not None and consumed < began:
            continue  # consumed before this run's record began: an earlier run's
        best = found.get(entry.position)
        if best is None or consumed_key(sig) > consumed_key(best):
            found[entry.position] = sig
    return {position: sig.id for position, sig in found.items()}


def consumed_key(sig: SignalInfo) -> tuple[float, int]:
    """Order signals by when they were consumed, then by id."""
    return (sig.consumed_at.timestamp() if sig.consumed_at else -math.inf, sig.id)


def took(entry: HistoryEntry, sig: SignalInfo) -> bool:
    """Whether the completed wait *entry* holds what consuming *sig* records."""
    if entry.kind == "suspend":
        return bool(entry.name == sig.name and entry.result == sig.payload)
    if entry.kind == "any" and isinstance(entry.result, dict):
        return bool(
            entry.result.get("name") == sig.name and entry.result.get("value") == sig.payload
        )
    return False


def list_flows(
    *,
    store: StoreAdmin | StorePath,
    status: str | None = None,
    name: str | None = None,
    limit: int = 100,
    before: FlowSummary | datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[FlowSummary]:
    """Stored flows, newest update first (ties by ``flow_id``, descending), without
    their history.

    >>> page = list_flows(store=store, status="suspended", limit=50)
    >>> more = list_flows(store=store, status="suspended", limit=50, before=page[-1])

    *before* the last ``FlowSummary`` of a page gives the next page by keyset on
    ``(updated_at, flow_id)``: each page is one index range, as fast at the
    100,000th flow as at the first, and paging sees every flow exactly once, also
    when many were updated at the same instant. *before* a datetime gives the
    flows updated strictly earlier (to the microsecond, as ``updated_at`` shows
    them), so ``before=page[-1].updated_at`` skips the others of that instant.
    *since* (inclusive) and *until* (exclusive) bound ``updated_at``:
    ``since=now - timedelta(hours=1)`` is the last hour's.
    """
    status = check_status(status)
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise InvalidTypeError("list_flows limit", limit, "must be an int")
    if limit < 1:
        raise InvalidValueError("list_flows limit", limit, "must be a positive int")
    bound = keyset(before)
    low, high = time_bound("since", since), time_bound("until", until)
    with using(store) as opened:
        return list_page(
            opened, status=status, name=name, limit=limit, before=bound, since=low, until=high
        )


def iter_flows(
    *,
    store: StoreAdmin | StorePath,
    status: str | None = None,
    name: str | None = None,
    before: FlowSummary | datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 100,
) -> Iterator[FlowSummary]:
    """Every flow ``list_flows`` with these filters would list, newest update
    first, read *page_size* at a time (exact keyset paging: each flow once), so
    100,000 flows never sit in memory at once.

    >>> failed = sum(1 for f in iter_flows(store=store, status="failed"))
    """
    first = list_flows(
        store=store,
        status=status,
        name=name,
        limit=page_size,
        before=before,
        since=since,
        until=until,
    )  # fmt: skip: checks every argument before the first flow is yielded
    return _pages(store, first, check_status(status), name, page_size, since, until)


def _pages(
    store: StoreAdmin | StorePath,
    page: list[FlowSummary],
    status: str | None,
    name: str | None,
    size: int,
    since: datetime | None,
    until: datetime | None,
) -> Iterator[FlowSummary]:
    low, high = time_bound("since", since), time_bound("until", until)
    yield from page
    if len(page) < size:
        return
    with using(store) as opened:
        while len(page) == size:
            page = list_page(
                opened, status=status, name=name, limit=size, before=keyset(page[-1]),
                since=low, until=high,
            )  # fmt: skip
            yield from page


def count_flows(
    *,
    store: StoreAdmin | StorePath,
    status: str | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many flows ``list_flows`` with these filters would list, counted in the
    store (no row is read out).

    >>> count_flows(store=store, status="failed")
    40
    """
    status = check_status(status)
    low, high = time_bound("since", since), time_bound("until", until)
    with using(store) as opened:
        return int(opened.count(status=status, name=name, since=low, until=high))


def check_status(status: str | None) -> str | None:
    """A status filter as its bare value; an ``InvalidValueError`` naming the choices."""
    if status is None:
        return None
    try:
        return Status(status).value
    except ValueError:
        choices = ", ".join(s.value for s in Status)
        raise InvalidValueError("list_flows status", status, f"is none of {choices}") from None


def time_bound(what: str, moment: object) -> float | None:
    """*since* / *until* as the stores take them: the first stored time that shows
    as *moment* or later (see :func:`first_time_at`)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise InvalidTypeError(f"list_flows {what}", moment, "must be a datetime")
    if moment.tzinfo is None:
        raise InvalidValueError(f"list_flows {what}", moment, "must be timezone-aware (UTC)")
    return first_time_at(moment)


def list_page(
    store: StoreAdmin,
    *,
    status: str | None,
    name: str | None,
    limit: int,
    before: float | tuple[float, str] | None,
    since: float | None = None,
    until: float | None = None,
) -> list[FlowSummary]:
    """``list_flows`` with *before*, *since* and *until* as the stores take them (see
    :func:`keyset`): the dashboard's next-page link carries that exact keyset."""
    rows = store.list_flows(
        status=status, name=name, limit=limit, before=before, since=since, until=until
    )
    return summaries(store, rows)


def summaries(store: StoreAdmin, rows: Sequence[StoredFlow]) -> list[FlowSummary]:
    """The ``FlowSummary`` of each row, with its ``waits`` (one read of the
    unresolved records of the rows that need them: an ``Any``, ``All``, ``Child``)."""
    wanted = [r.id for r in rows if r.status == Status.SUSPENDED and r.wait_kind in NEEDS_RECORDS]
    records = store.wait_records(wanted) if wanted else {}
    return [summary_of(row, records.get(row.id, ())) for row in rows]


def keyset(before: object) -> float | tuple[float, str] | None:
    """``list_flows``'s *before* as the stores take it: a ``FlowSummary`` as its exact
    ``(updated_at, flow_id)``, a datetime as the first stored time that shows as it
    or later (so "strictly older" holds to the microsecond a summary shows). A
    ``FlowSummary`` made by hand carries no exact time: it counts as its datetime."""
    if before is None:
        return None
    if isinstance(before, FlowSummary):
        exact = before._updated_ts
        if exact is None:  # made by hand: its shown time is all there is
            return first_time_at(before.updated_at)
        return (exact, before.flow_id)
    if not isinstance(before, datetime):
        raise InvalidTypeError(
            "list_flows before", before, "must be a FlowSummary (the last of a page) or a datetime"
        )
    if before.tzinfo is None:
        raise InvalidValueError("list_flows before", before, "must be timezone-aware (UTC)")
    return first_time_at(before)


def first_time_at(moment: datetime) -> float:
    """The smallest float *t* with ``when(t) >= moment``: stored times below it show
    (rounded to the microsecond) as earlier than *moment*, the others do not."""

    def shown(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, timezone.utc)

    t = moment.timestamp()
    while shown(t) < moment:  # only where floats are coarser than a microsecond
        t = math.nextafter(t, math.inf)
    # The boundary is within half a microsecond below; bisect over floats (``shown``
    # never goes back as its argument grows).
    low = t - 1e-6
    if low == t or shown(low) >= moment:  # coarse floats: step one by one
        while shown(nxt := math.nextafter(t, -math.inf)) >= moment:
            t = nxt
        return t
    high = t  # shown(low) < moment <= shown(high)
    while True:
        mid = low + (high - low) / 2
        if mid in (low, high):
            return high
        if shown(mid) >= moment:
            high = mid
        else:
            low = mid


def summary_of(row: StoredFlow, records: Sequence[StoredRecord] = ()) -> FlowSummary:
    """The ``FlowSummary`` of a stored flow row (*records*: its unresolved records,
    for the ``waits`` of an ``Any``, ``All`` or ``Child``)."""
    created = when(row.created_at)
    updated = when(row.updated_at)
    assert created is not None and updated is not None
    waits = waits_of(row, records)
    return FlowSummary(
        flow_id=row.id,
        name=row.name,
        status=row.status,
        waiting_for=waiting_for(row, waits),
        wake_at=when(row.wake_at),
        created_at=created,
        updated_at=updated,
        waits=waits,
        custom_status=lenient(lambda: codec.decode_stored(
            row.custom_status, flow_id=row.id, position=None, column="custom_status"
        )),
        error=lenient(lambda: ErrorInfo.decode(row.error, flow_id=row.id)),
        cancel_reason=row.cancel_reason,
        parent_id=row.parent_id,
        run=row.run,
        priority=row.priority,
        blocked_by=row.blocked_by,
        _updated_ts=row.updated_at,
    )  # fmt: skip


def lenient(read: Callable[[], Any]) -> Any:
    """*read*'s value, or ``None`` when a stored value cannot be decoded (a list
    goes on past a corrupt row; ``get_flow`` names it)."""
    try:
        return read()
    except CorruptRecordError:
        return None


def delete_flow(flow_id: str, *, store: StoreAdmin | StorePath) -> bool:
    """Delete a finished flow with its history and signals; ``True`` when deleted,
    ``False`` when no such flow is stored (deleting twice is harmless).

    >>> delete_flow(flow_id, store=store)
    True

    An unfinished flow is a ``FlowStateError`` and stays as it is: cancel it first.
    """
    check_flow_id(flow_id)
    with using(store) as opened:
        return bool(opened.delete(flow_id))
