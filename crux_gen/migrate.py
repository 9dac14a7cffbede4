"""Copy every flow from one store to another: ``crux-gen migrate --from crux.db --to
postgresql://...``, or from Python::

    from crux_gen.migrate import migrate
    report = migrate(SQLiteStore("crux.db"), PostgresStore("postgresql://app@db/app"))

Each flow goes over whole, with its history, its signals (ids, states and keys
kept) and its status, lease cleared, through ``StoreAdmin.put_flow``, then its
events and streams (``Caps.streams``); then the target's copy is read back and
its record and signal counts and its :func:`checksum` compared with the source's.
Suspended flows then continue on the target's workers; the source is left as it
was.

- It refuses to start (:class:`MigrationError`, nothing copied) while a runner
  holds a live lease on any source flow, by the source's clock: stop the workers
  first, and anything else that writes to the source (a web process sending
  signals), so nothing changes while it copies.
- A flow already in the target with the same checksum is skipped, so running it
  again after an interruption finishes the job; one with other content is an
  error naming it (after every other flow was copied), never overwritten.
- Limits (``Limit``) start afresh on the target: no slot is copied (it refuses
  to start while a lease is live, and a slot counts only under a live lease),
  nor a rate's state (the target's budget starts full: at most one burst more);
  a flow a limit blocked arrives due (``blocked_by`` cleared), its limit taken
  again by the target's workers.
- The source is read in pages of *batch* flows through ``list_flows`` (keyset on
  ``updated_at``, every flow once even when many share one ``updated_at``), one
  flow's history at a time: memory stays flat however many flows there are.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, cast

import attrs

from .clock import when
from .errors import CruxError, FlowNotFoundError, InvalidTypeError, InvalidValueError
from .limits import unblocked
from .records import StoredFlow
from .status import Status
from .stores.base import Schedules, Store, StoreAdmin
from .stores.base_streams import Streams
from .stores.caps import caps_of, missing_members
from .stores.rules import lease_is_live

__all__ = ["DEFAULT_BATCH", "MigrationError", "MigrationReport", "checksum", "migrate", "walk"]

#: How many flows one ``list_flows`` call reads by default.
DEFAULT_BATCH = 500

#: How many flows an error message names before it says "and N more".
SHOWN = 5


class MigrationError(CruxError):
    """A migration that refused to start, or found flows it could not copy.

    It says which flows and what to do. *report* is what was done before it
    stopped (``None`` when nothing was: a refusal to start).
    """

    def __init__(self, message: str, report: MigrationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@attrs.frozen
class MigrationReport:
    """What :func:`migrate` did.

    *copied* flows were written to the target now; *skipped* ones were there
    already with the same checksum (an earlier run). *by_status*, *records* and
    *signals* count every flow of the source now verified in the target, copied
    or skipped. *seconds* is how long it took. *schedules* counts the cron
    schedules copied (their state: paused, last and next tick), each replacing the
    target's of that name.
    """

    copied: int
    skipped: int
    by_status: Mapping[str, int]
    records: int
    signals: int
    seconds: float
    schedules: int = 0

    @property
    def flows(self) -> int:
        """How many flows of the source the target now holds, verified."""
        return self.copied + self.skipped


class MigrationStore(Store, StoreAdmin, Protocol):
    """What :func:`migrate` needs of both stores: ``Store`` and ``StoreAdmin``."""


# -- what a flow is, to compare two stores' copies ------------------------------------

_LEASE = frozenset({"lease_owner", "lease_expires"})
# ``children`` is read from the other flows' ``parent_id`` (each child's own row,
# compared when that child is copied), so a parent copied before its children
# would read back without them.
_ROW_FIELDS = tuple(
    f.name
    for f in attrs.fields(StoredFlow)
    if f.name not in {"records", "signals", "children", *_LEASE}
)


def _plain(value: Any) -> Any:
    """*value* with every number a float, so 1000 and 1000.0 (an int time kept by
    one store, a float column in another) compare equal."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def canonical(flow: StoredFlow) -> str:
    """The flow as one canonical JSON text: its row without the lease, every record
    (by position) and every signal (by id), each field by name."""
    data: dict[str, Any] = {name: _plain(getattr(flow, name)) for name in _ROW_FIELDS}
    data["records"] = [
        {k: _plain(v) for k, v in r._asdict().items()}
        for r in sorted(flow.records, key=lambda r: r.position)
    ]
    data["signals"] = [
        {k: _plain(v) for k, v in s._asdict().items()}
        for s in sorted(flow.signals, key=lambda s: s.id)
    ]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def checksum(flow: StoredFlow) -> str:
    """The sha256 (hex) of :func:`canonical`: equal for two stores' copies of a flow
    exactly when everything but the lease is the same, history and signals included."""
    return hashlib.sha256(canonical(flow).encode("utf-8", "surrogatepass")).hexdigest()


# -- reading a whole store ------------------------------------------------------------


def walk(store: StoreAdmin, batch: int = DEFAULT_BATCH) -> Iterator[StoredFlow]:
    """Every flow of *store* once (rows without history), newest update first, read
    ``batch`` at a time through ``list_flows(limit=, before=)``.

    ``before=`` is strict, so a page that ends inside a group of flows updated at
    the same instant would lose the rest of the group: the flows above the
    page's last ``updated_at`` are given, then that whole group is read (flows
    updated at or before it, in pages growing until the group ends), and the walk
    goes on strictly below it.
    """
    bound: float | None = None
    while True:
        page = store.list_flows(limit=batch, before=bound)
        if len(page) < batch:
            yield from page
            return
        last = page[-1].updated_at
        yield from (f for f in page if f.updated_at > last)
        limit = batch
        while True:
            group = store.list_flows(limit=limit, before=math.nextafter(last, math.inf))
            if len(group) < limit or group[-1].updated_at < last:
                break
            limit *= 2
        yield from (f for f in group if f.updated_at == last)
        bound = last


def _named(flows: list[StoredFlow], more: int, detail: Callable[[StoredFlow], str]) -> str:
    shown = ", ".join(f"{f.id} ({f.name}{detail(f)})" for f in flows[:SHOWN])
    rest = more + len(flows) - min(len(flows), SHOWN)
    return shown + (f" and {rest} more" if rest else "")


def _leased(flows: list[StoredFlow], count: int) -> str:
    def detail(f: StoredFlow) -> str:
        until = when(f.lease_expires)
        return f", runner {f.lease_owner} until {until:%Y-%m-%d %H:%M:%S} UTC" if until else ""

    return _named(flows, count - len(flows), detail)


# -- migrate --------------------------------------------------------------------------

#: The methods :func:`migrate` calls on both stores, checked in this order before
#: anything is read (the first one missing is named).
CALLS = ("list_flows", "load", "put_flow")


def migrate(
    source: MigrationStore,
    target: MigrationStore,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every flow of *source* into *target* (both stores), verify each copy,
    and say what was done; see the module's docstring.

    *progress*, if given, is called with (flows done, flows in all) before each
    flow is copied.

    Raises :class:`MigrationError`: before anything is copied when a runner holds
    a live lease on a source flow; as soon as a copy reads back different from
    its source, or a runner takes a flow meanwhile; after the walk when flows were
    in the target already with other content (its ``report`` says what was done).
    ``StoreError`` from either store is raised as it comes (flows copied before it
    stay, and are skipped by the next run).
    """
    _check_arguments(source, target, batch)
    tally = _Tally(time.monotonic())
    total = _count_unleased(source, batch)  # 1. nothing is copied while a runner holds one
    seen: set[str] = set()
    for row in walk(source, batch):  # 2. copy, read back, compare
        if row.id in seen:  # moved up the listing meanwhile: copied already
            continue
        seen.add(row.id)
        if progress is not None:
            progress(len(seen), total)
        try:
            flow = source.load(row.id)
        except FlowNotFoundError:  # deleted meanwhile (a prune)
            continue
        if lease_is_live(flow, source.clock.time()):
            raise MigrationError(
                f"a runner took flow {flow.id} ({flow.name}) during the migration "
                f"(runner {flow.lease_owner}); stop every worker on the source and run "
                f"migrate again: the {tally.copied + tally.skipped} flows done so far are "
                "kept and will be skipped",
                tally.report(),
            )
        if _copy(flow, target, tally):
            _copy_streams(source, target, flow.id)
    tally.schedules = _copy_schedules(source, target)
    return tally.finish()


def _copy_schedules(source: MigrationStore, target: MigrationStore) -> int:
    """Copy every schedule's state from *source* to *target* (both must keep
    schedules, else nothing is copied): how many."""
    if not (caps_of(source).schedules and caps_of(target).schedules):
        return 0
    rows = cast(Schedules, source).list_schedules()
    for row in rows:
        cast(Schedules, target).put_schedule(row)
    return len(rows)


def _check_arguments(source: object, target: object, batch: object) -> None:
    """Refuse a *batch* that is not a positive int, or a store without ``CALLS``."""
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise InvalidTypeError("migrate batch", batch, "is not an int; give a number of flows")
    if batch < 1:
        raise InvalidValueError("migrate batch", batch, "must be at least 1")
    for role, store in (("source", source), ("target", target)):
        lacking = missing_members(store, MigrationStore)
        missing = [m for m in CALLS if m in lacking]
        if missing:
            raise InvalidTypeError(
                f"migrate {role}", store, f"is not a crux_gen store (it has no {missing[0]})"
            )


def _count_unleased(source: MigrationStore, batch: int) -> int:
    """How many flows *source* holds; ``MigrationError`` when a runner holds a live
    lease on any of them (by the source's clock)."""
    now = source.clock.time()
    total = leased_count = 0
    leased: list[StoredFlow] = []
    for row in walk(source, batch):
        total += 1
        if lease_is_live(row, now):
            leased_count += 1
            if len(leased) < SHOWN:
                leased.append(row)
    if leased_count:
        raise MigrationError(
            f"{leased_count} flow{'s are' if leased_count != 1 else ' is'} held by a runner on "
            f"the source: {_leased(leased, leased_count)}; stop the workers (and anything "
            "resuming flows) and run migrate again once the leases are released or lapse; "
            "nothing was copied"
        )
    return total


def _copy(flow: StoredFlow, target: MigrationStore, tally: _Tally) -> bool:
    """Put *flow* into *target* and read it back, or find it there already (the
    same: skipped; other content: a conflict, left as it is: ``False``)."""
    flow = unblocked(flow)
    want = checksum(flow)
    try:
        there = target.load(flow.id)
    except FlowNotFoundError:
        target.put_flow(flow)
        there = target.load(flow.id)
        got = checksum(there)
        counts = (len(there.records), len(there.signals))
        if counts != (len(flow.records), len(flow.signals)) or got != want:
            raise MigrationError(
                f"flow {flow.id} ({flow.name}) reads back from the target other than it was "
                f"copied ({len(flow.records)} records and {len(flow.signals)} signals "
                f"copied, {counts[0]} and {counts[1]} read back; "
                f"checksum {want[:12]} copied, {got[:12]} read back): the target store "
                "does not keep what it is given; stop and check it",
                tally.report(),
            ) from None
        tally.copied += 1
    else:
        if checksum(there) != want:
            tally.conflict_count += 1
            if len(tally.conflicts) < SHOWN:
                tally.conflicts.append(flow)
            return False
        tally.skipped += 1
    tally.by_status[flow.status] = tally.by_status.get(flow.status, 0) + 1
    tally.records += len(flow.records)
    tally.signals += len(flow.signals)
    return True


def _copy_streams(source: MigrationStore, target: MigrationStore, flow_id: str) -> None:
    """Copy *flow_id*'s events and stream entries (both stores must keep them:
    ``Caps.streams``); entries the target has already are left as they are."""
    if not (caps_of(source).streams and caps_of(target).streams):
        return
    events = cast(Streams, source).flow_events(flow_id)
    entries = cast(Streams, source).flow_streams(flow_id)
    if events or entries:
        cast(Streams, target).put_streams(flow_id, events, entries)


@attrs.define
class _Tally:
    """What :func:`migrate` has done so far."""

    started: float
    copied: int = 0
    skipped: int = 0
    records: int = 0
    signals: int = 0
    by_status: dict[str, int] = attrs.Factory(dict)
    conflicts: list[StoredFlow] = attrs.Factory(list)
    conflict_count: int = 0
    schedules: int = 0

    def report(self) -> MigrationReport:
        by_status = self.by_status
        ordered: dict[str, int] = {
            s.value: by_status[s.value] for s in Status if s.value in by_status
        }
        ordered.update((k, v) for k, v in sorted(by_status.items()) if k not in ordered)
        return MigrationReport(
            self.copied,
            self.skipped,
            ordered,
            self.records,
            self.signals,
            time.monotonic() - self.started,
            self.schedules,
        )

    def finish(self) -> MigrationReport:
        """The report, or ``MigrationError`` naming the flows found with other content."""
        result = self.report()
        count = self.conflict_count
        if count:
            named = _named(self.conflicts, count - len(self.conflicts), lambda f: "")
            raise MigrationError(
                f"{count} flow{'s are' if count != 1 else ' is'} in the target "
                f"already with other content: {named}; they were left as they are (the other "
                f"{result.flows} flows were copied or there already): migrate into an empty "
                "store, or delete those flows from the target",
                result,
            )
        return result
