"""Cron schedules: ``@flow(..., schedule=Schedule("0 2 * * *", tz="Europe/Paris"))``.

Every worker that registers a scheduled flow fires its due ticks at the start of
each pass, by the store's clock (:func:`fire_schedules`): each tick starts one
flow with the id ``sched:<name>:<tick>`` and the input ``{"scheduled_for":
<tick>}``, ``<tick>`` the firing instant in UTC ISO 8601 with ``Z``. Creating
that flow is insert-or-ignore by its id, so any number of workers fire a tick
once. The flow is created due and not run here: a worker claims it as it claims
any due flow (the same pass, usually).

The schedule's state lives in the store (``stores/base.Schedules``: one row per
name): its cron and zone, whether it is paused, the last tick fired with the
flow it started, and ``next_tick``, the earliest tick not yet handled. A worker
fires the ticks from ``next_tick`` up to now, then moves ``next_tick`` past now
only if no other worker moved it meanwhile (compare-and-set): a tick is fired
before the state says so, so a crash between the two fires it again at the next
pass, under the same id, which starts nothing twice.

The rules (API.md, "Schedules"):

- Ticks come from cronsim (5-field cron) over the wall clock of ``tz``: a tick in
  a daylight-saving gap fires at the first valid instant after it (``30 2 * * *``
  in Paris on the spring day fires at 03:00, 01:00 UTC); a repeated hour fires
  once, at its first occurrence. Two wall ticks that land on one instant fire once.
- A schedule seen for the first time fires nothing from before that pass.
- A tick is on time for a minute (:data:`ON_TIME`, the cron's own resolution): a
  pass within a minute of a tick fires it whatever ``catchup`` says. Ticks
  missed for longer (no worker ran) fire, oldest first, when at most
  ``max(catchup, ON_TIME)`` old; older ones are skipped, with one log line.
- ``overlap="skip"``: a tick while the flow of the last fired tick is unfinished
  is skipped and logged (a catch-up of several ticks so fires the first only);
  ``"allow"`` fires every tick. ``"queue"`` fires every tick, but each tick's
  flow waits, as ``Exclusive(on_conflict="queue")`` does, until the scheduled
  run before it has finished (one exclusive key per schedule: ``QUEUE_KEY``).
- A paused schedule fires nothing; resuming it starts from the next tick after
  the resume (the ticks of the pause are not caught up).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from . import codec
from .durations import format_duration, to_duration
from .errors import (
    FlowNameConflictError,
    FlowNotFoundError,
    InvalidTypeError,
    InvalidValueError,
)
from .records import NewPending, StoredSchedule
from .status import FINISHED
from .stores.caps import caps_of

if TYPE_CHECKING:
    from .stores.base import Schedules, Store

    class ScheduleStore(Store, Schedules, Protocol):
        """A store with ``Caps.schedules``."""


__all__ = [
    "ON_TIME",
    "OVERLAPS",
    "Schedule",
    "backfill",
    "fire_schedules",
    "flow_id_of",
    "pause",
    "resume",
    "schedule_store",
    "tick_id",
    "trigger",
]

log = logging.getLogger("crux_gen.schedules")

#: Told the name of each flow a tick created: ``observe.flow_started``, put here by
#: ``observe`` (this module may not import it: ``flow`` imports this one).
TICK_STARTED: list[Callable[[str], None]] = []

#: How long a tick stays on time whatever ``catchup`` says: a cron names minutes.
ON_TIME = timedelta(minutes=1)
#: ``overlap`` values: ``"queue"`` waits as ``Exclusive(on_conflict="queue")`` does.
OVERLAPS = ("skip", "allow", "queue")
#: The most ticks one ``backfill`` starts (a wider range: an error saying so).
MAX_BACKFILL = 10_000
_UTC = timezone.utc
#: How far before a start ``Schedule.ticks`` reads wall ticks (longer than a gap).
_GAP_MARGIN = 3 * 3600.0
#: Stores (by ``id``) a worker was told about already: they keep no schedules.
_WARNED: set[int] = set()


def _valid_cron(instance: object, attribute: object, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidTypeError("Schedule cron", value, "is not a str; give one like '0 2 * * *'")
    if len(value.split()) != 5:
        raise InvalidValueError(
            "Schedule cron",
            value,
            "is not a cron of 5 fields (minute hour day month weekday), e.g. '0 2 * * *'",
        )
    try:
        CronSim(value, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise InvalidValueError(
            "Schedule cron", value, f"is not a cron ({exc}); e.g. '0 2 * * *'"
        ) from None


def _valid_zone(instance: object, attribute: object, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidTypeError("Schedule tz", value, "is not a str; give an IANA zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValueError(
            "Schedule tz",
            value,
            "is not a time zone known here; give an IANA name such as 'Europe/Paris' or 'UTC'",
        ) from None


def _valid_overlap(instance: object, attribute: object, value: Any) -> None:
    if value not in OVERLAPS:
        raise InvalidValueError("Schedule overlap", value, "must be 'skip', 'allow' or 'queue'")


def _catchup(value: object) -> timedelta:
    return to_duration(value, what="Schedule catchup")


@attrs.frozen
class Schedule:
    """When a flow starts by itself: a 5-field *cron* in the zone *tz* (IANA name).

    >>> @flow("nightly-report", schedule=Schedule("0 2 * * *", tz="Europe/Paris"))
    ... def nightly_report(ctx):
    ...     day = ctx.input["scheduled_for"]     # "2026-03-29T00:00:00Z"

    *catchup* is how old a missed tick may be and still fire (a duration; default
    ``"0s"``: only on-time ticks); *overlap* is ``"skip"`` (default: no tick while
    the previous scheduled run is unfinished), ``"allow"`` or ``"queue"`` (each
    tick's flow waits for the previous scheduled run to finish). Bad values raise
    ``InvalidValueError`` / ``InvalidTypeError`` naming them, here.
    """

    cron: str = attrs.field(validator=_valid_cron)
    tz: str = attrs.field(default="UTC", kw_only=True, validator=_valid_zone)
    catchup: timedelta = attrs.field(default=timedelta(0), kw_only=True, converter=_catchup)
    overlap: str = attrs.field(default="skip", kw_only=True, validator=_valid_overlap)

    def ticks(self, start: float) -> Iterator[float]:
        """The ticks at or after *start* (UTC seconds), in order, each once."""
        zone = ZoneInfo(self.tz)
        # From a little earlier: a wall tick in a gap just before *start*'s wall
        # time lands at the gap's end, which may be *start* itself.
        wall = datetime.fromtimestamp(start - _GAP_MARGIN, zone).replace(tzinfo=None)
        last = -math.inf
        for local in CronSim(self.cron, wall):
            tick = _instant(local, zone)
            if tick >= start and tick > last:
                last = tick
                yield tick

    def first_tick(self, start: float) -> float:
        """The first tick at or after *start*."""
        return next(self.ticks(start))


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """The instant of the naive wall time *wall* in *zone*: its first occurrence
    when the hour repeats; the first valid instant after it when it falls in a gap."""
    while True:
        aware = wall.replace(tzinfo=zone, fold=0)
        moment = aware.astimezone(_UTC)
        if moment.astimezone(zone).replace(tzinfo=None) == wall:
            return moment.timestamp()
        wall = wall.replace(second=0) + timedelta(minutes=1)  # in a gap: walk out of it


def tick_id(tick: float) -> str:
    """A tick as its id: the instant in UTC ISO 8601 with ``Z`` (seconds)."""
    return datetime.fromtimestamp(math.floor(tick), _UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def flow_id_of(name: str, tick: float) -> str:
    """The id of the flow the tick *tick* of schedule *name* starts."""
    return f"sched:{name}:{tick_id(tick)}"


class _Scheduled(Protocol):
    """A scheduled ``Flow`` as this module reads it."""

    @property
    def name(self) -> str: ...
    @property
    def schedule(self) -> Schedule | None: ...


def schedule_store(store: object) -> ScheduleStore:
    """*store* as a store that keeps schedules; ``InvalidTypeError`` naming it if not."""
    if not caps_of(store).schedules:
        raise InvalidTypeError(
            "store", store, "keeps no schedules; use MemoryStore, SQLiteStore or PostgresStore"
        )
    return cast("ScheduleStore", store)


def fire_schedules(store: Store, flows: Iterable[_Scheduled], now: float) -> int:
    """Fire the due ticks of every flow of *flows* with a ``schedule`` at *now* (the
    store's clock); how many flows this call created."""
    scheduled = [(f.name, f.schedule) for f in flows if f.schedule is not None]
    if not scheduled:
        return 0
    if not caps_of(store).schedules:
        if id(store) not in _WARNED:
            _WARNED.add(id(store))
            log.warning(
                "%s keeps no schedules: %s fire nothing on it",
                caps_of(store).where, ", ".join(name for name, _ in scheduled),
            )  # fmt: skip
        return 0
    keeper = cast("ScheduleStore", store)
    return sum(_fire(keeper, name, schedule, now) for name, schedule in scheduled)


def _fire(store: ScheduleStore, name: str, schedule: Schedule, now: float) -> int:
    """Fire schedule *name*'s due ticks, as the module's docstring says."""
    row = store.get_schedule(name)
    if row is None or (row.cron, row.tz) != (schedule.cron, schedule.tz):
        row = store.register_schedule(name, schedule.cron, schedule.tz, schedule.first_tick(now))
    if row.paused or row.next_tick > now:
        return 0
    oldest = now - max(schedule.catchup, ON_TIME).total_seconds()
    _log_too_old(name, schedule, row.next_tick, oldest)
    last_tick, last_flow, created = row.last_tick, row.last_flow, 0
    for tick in itertools.takewhile(lambda t: t <= now, schedule.ticks(max(row.next_tick, oldest))):
        if schedule.overlap == "skip" and _unfinished(store, last_flow):
            log.info(
                "schedule %s: tick %s skipped: flow %s of an earlier tick is unfinished",
                name, tick_id(tick), last_flow, extra={"flow_name": name},
            )  # fmt: skip
            continue
        flow_id = flow_id_of(name, tick)
        queue = schedule.overlap == "queue"
        created += _start_flow(store, name, flow_id, tick_id(tick), now, queue=queue)
        last_tick, last_flow = tick, flow_id
    upcoming = schedule.first_tick(math.floor(now) + 1)
    fired = last_tick if last_tick != row.last_tick else None
    store.advance_schedule(name, row.next_tick, upcoming, fired, last_flow)
    return created


def _log_too_old(name: str, schedule: Schedule, start: float, oldest: float) -> None:
    """Log the ticks from *start* that are older than *oldest* (never fired)."""
    late = list(
        itertools.islice(itertools.takewhile(lambda t: t < oldest, schedule.ticks(start)), 1001)
    )
    if late:
        count = f"{len(late)}" if len(late) <= 1000 else "over 1000"
        log.warning(
            "schedule %s: %s missed tick(s) from %s on skipped: older than its catchup (%s)",
            name, count, tick_id(late[0]), format_duration(schedule.catchup),
            extra={"flow_name": name},
        )  # fmt: skip


def _unfinished(store: Store, flow_id: str | None) -> bool:
    if flow_id is None:
        return False
    try:
        return store.load(flow_id).status not in FINISHED
    except FlowNotFoundError:  # deleted since
        return False


def queue_key(name: str) -> str:
    """The exclusive key of schedule *name*'s ``overlap="queue"``: its flows wait
    for each other, and for no flow started otherwise (a user's ``Exclusive`` key
    is ``[name]`` or ``[name, "<str>"]``, never this)."""
    return json.dumps([name, None])


def _start_flow(
    store: Store, name: str, flow_id: str, scheduled_for: str, now: float, *, queue: bool = False
) -> int:
    """Create the flow *flow_id* of *name* ``"pending"`` and due (``Store.enqueue``,
    as ``Flow.start``), insert-or-ignore: 1 when this call created it, 0 when it was
    there already. With *queue* (``overlap="queue"``) it waits, as an ``Exclusive``
    queue does, behind the schedule's unfinished flow.

    The one place a schedule creates a flow.
    """
    try:
        store.load(flow_id)
        return 0  # fired already (the usual case of a second worker: no write)
    except FlowNotFoundError:
        pass
    encoded = codec.encode({"scheduled_for": scheduled_for}, what=f"the input of {flow_id!r}")
    new = NewPending(flow_id, name, encoded, exclusive=queue_key(name) if queue else None)
    try:
        found = store.enqueue(new, now)
    except FlowNameConflictError as exc:  # the id is another flow's: never overwritten
        log.error("schedule %s: %s", name, exc, extra={"flow_name": name})
        return 0
    # Made by this call (another worker between the load and the enqueue: not).
    if found.created:
        for told in TICK_STARTED:
            told(name)
    return int(found.created)


def _stored(store: ScheduleStore, name: str) -> StoredSchedule:
    row = store.get_schedule(name)
    if row is None:
        raise InvalidValueError(
            "schedule",
            name,
            "is not stored; a worker that registers the flow stores its schedule "
            "(crux-gen schedules lists them)",
        )
    return row


def pause(name: str, *, store: Store) -> StoredSchedule:
    """Pause the schedule *name* for every worker; the row as stored now."""
    keeper = schedule_store(store)
    _stored(keeper, name)
    keeper.pause_schedule(name, True)
    return _stored(keeper, name)


def resume(name: str, *, store: Store) -> StoredSchedule:
    """Resume the schedule *name*: it fires from the first tick at or after now."""
    keeper = schedule_store(store)
    row = _stored(keeper, name)
    upcoming = Schedule(row.cron, tz=row.tz).first_tick(store.clock.time())
    keeper.pause_schedule(name, False, upcoming)
    return _stored(keeper, name)


def trigger(name: str, *, store: Store) -> tuple[str, bool]:
    """Start one run of schedule *name* now (its tick: now, to the second), paused
    or not, under no overlap rule: ``(flow id, created)``."""
    keeper = schedule_store(store)
    _stored(keeper, name)
    now = store.clock.time()
    flow_id = flow_id_of(name, now)
    return flow_id, bool(_start_flow(keeper, name, flow_id, tick_id(now), now))


def backfill(name: str, start: datetime, end: datetime, *, store: Store) -> list[tuple[str, bool]]:
    """Start the flow of every tick of schedule *name* with *start* <= tick < *end*,
    oldest first, insert-or-ignore (running it again starts nothing twice), under
    no overlap rule; its state is left as it is. ``(flow id, created)`` per tick."""
    keeper = schedule_store(store)
    row = _stored(keeper, name)
    first, stop = start.timestamp(), end.timestamp()
    if stop <= first:
        raise InvalidValueError("backfill --to", end.isoformat(), "is not after --from")
    ticks = Schedule(row.cron, tz=row.tz).ticks(first)
    due: Sequence[float] = list(
        itertools.islice(itertools.takewhile(lambda t: t < stop, ticks), MAX_BACKFILL + 1)
    )
    if len(due) > MAX_BACKFILL:
        raise InvalidValueError(
            "backfill range",
            f"{start.isoformat()} .. {end.isoformat()}",
            f"holds more than {MAX_BACKFILL} ticks; backfill it in shorter ranges",
        )
    now = store.clock.time()
    done = []
    for tick in due:
        flow_id = flow_id_of(name, tick)
        done.append((flow_id, bool(_start_flow(keeper, name, flow_id, tick_id(tick), now))))
    return done
