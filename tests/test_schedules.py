"""Cron schedules (API.md, "Schedules"): what a user relies on, driven by the store's
fake clock and ``Worker.run_once()`` (a simulated week takes milliseconds).

Each test registers its scheduled flows in a registry of its own and gives them
to its workers, so no other test's worker fires them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    InvalidTypeError,
    InvalidValueError,
    MemoryStore,
    Schedule,
    SQLiteStore,
    Step,
    Suspend,
    flow,
    signal_flow,
)
from crux_gen.flow import Flow, Registry
from crux_gen.schedules import backfill, fire_schedules, pause, resume, tick_id, trigger
from crux_gen.worker import Worker

UTC = timezone.utc


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks(schedule: Schedule, start: datetime, count: int) -> list[str]:
    found = schedule.ticks(start.timestamp())
    return [tick_id(next(found)) for _ in range(count)]


def scheduled(schedule: Schedule, ran: list[str], name: str = "report") -> Flow[Any]:
    """A flow under *schedule* whose one step notes the tick it serves in *ran*."""

    @flow(name, schedule=schedule, registry=Registry())
    def report(ctx: Any) -> Any:
        served = ctx.input["scheduled_for"]
        return (yield Step("note", lambda: ran.append(served) or served))

    return report


@pytest.fixture(params=["memory", "sqlite"])
def local_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Any:
    if request.param == "memory":
        return MemoryStore(clock=clock)
    return SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)


# -- Schedule: validated where it is written ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"cron": "0 2 * *"}, "'0 2 * *'"),  # four fields
        ({"cron": "0 0 2 * * *"}, "'0 0 2 * * *'"),  # six: seconds are not cron
        ({"cron": "61 2 * * *"}, "'61 2 * * *'"),
        ({"cron": "0 2 31 2 *"}, "'0 2 31 2 *'"),  # a day February never has
        ({"cron": "0 2 * * *", "tz": "Europe/Pariss"}, "'Europe/Pariss'"),
        ({"cron": "0 2 * * *", "tz": "../etc/passwd"}, "'../etc/passwd'"),
        ({"cron": "0 2 * * *", "catchup": "soon"}, "'soon'"),
        ({"cron": "0 2 * * *", "overlap": "sometimes"}, "'sometimes'"),
    ],
)
def test_a_bad_schedule_is_refused_at_construction_naming_the_value(
    kwargs: dict[str, Any], named: str
) -> None:
    cron = kwargs.pop("cron")
    with pytest.raises(InvalidValueError) as caught:
        Schedule(cron, **kwargs)
    assert named in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_schedule_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(InvalidTypeError, match="Schedule cron 7"):
        Schedule(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="is not a Schedule"):
        flow("x", schedule="0 2 * * *", registry=Registry())  # type: ignore[arg-type]


def test_another_overlap_is_refused_naming_it() -> None:
    with pytest.raises(InvalidValueError, match=r"'wait'.*'skip', 'allow' or 'queue'"):
        Schedule("0 2 * * *", overlap="wait")


def test_a_schedule_reads_its_durations_and_defaults() -> None:
    s = Schedule("0 2 * * *")
    assert (s.tz, s.catchup, s.overlap) == ("UTC", timedelta(0), "skip")
    assert Schedule("0 2 * * *", catchup="6h").catchup == timedelta(hours=6)


# -- ticks across daylight-saving days (the contract's rules; cronsim underneath) ---------


def test_paris_spring_gap_tick_fires_at_the_first_valid_instant_after_it() -> None:
    # 2026-03-29: Paris jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    assert ticks(Schedule("30 2 * * *", tz="Europe/Paris"), at(2026, 3, 28), 3) == [
        "2026-03-28T01:30:00Z",  # 02:30 CET
        "2026-03-29T01:00:00Z",  # 03:00 CEST, the gap's end
        "2026-03-30T00:30:00Z",  # 02:30 CEST
    ]


def test_paris_autumn_repeated_hour_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25: 02:00-03:00 happens twice in Paris (CEST, then CET).
    assert ticks(Schedule("30 2 * * *", tz="Europe/Paris"), at(2026, 10, 24), 3) == [
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",  # 02:30 CEST, the first one; not 01:30Z (CET) too
        "2026-10-26T01:30:00Z",
    ]
    # Every half hour: each wall time once, so the second 02:00 and 02:30 are not fired.
    assert ticks(Schedule("*/30 * * * *", tz="Europe/Paris"), at(2026, 10, 24, 23), 6) == [
        "2026-10-24T23:00:00Z",  # 01:00 CEST
        "2026-10-24T23:30:00Z",
        "2026-10-25T00:00:00Z",  # 02:00 CEST
        "2026-10-25T00:30:00Z",  # 02:30 CEST
        "2026-10-25T02:00:00Z",  # 03:00 CET
        "2026-10-25T02:30:00Z",
    ]


def test_new_york_spring_gap_and_autumn_repeat() -> None:
    # 2026-03-08: 02:00 EST -> 03:00 EDT. 2026-11-01: 01:00-02:00 twice (EDT, then EST).
    ny = "America/New_York"
    assert ticks(Schedule("30 2 * * *", tz=ny), at(2026, 3, 7), 3) == [
        "2026-03-07T07:30:00Z",
        "2026-03-08T07:00:00Z",  # 03:00 EDT
        "2026-03-09T06:30:00Z",
    ]
    assert ticks(Schedule("30 1 * * *", tz=ny), at(2026, 10, 31), 3) == [
        "2026-10-31T05:30:00Z",
        "2026-11-01T05:30:00Z",  # 01:30 EDT only
        "2026-11-02T06:30:00Z",
    ]
    # Every 15 minutes through the gap: two wall ticks never fire one instant twice.
    spring = ticks(Schedule("*/15 * * * *", tz=ny), at(2026, 3, 8, 6, 30), 4)
    assert spring == [
        "2026-03-08T06:30:00Z",
        "2026-03-08T06:45:00Z",
        "2026-03-08T07:00:00Z",  # 03:00 EDT (02:00-02:45 fall in the gap: this instant)
        "2026-03-08T07:15:00Z",
    ]


def test_a_dst_day_fires_once_per_day_through_a_worker(local_store: Any, clock: FakeClock) -> None:
    clock.advance(at(2026, 3, 27, 12) - clock.now())
    ran: list[str] = []
    worker = Worker(local_store, [scheduled(Schedule("30 2 * * *", tz="Europe/Paris"), ran)])
    for _ in range(4 * 24 * 4):  # four days, a pass every 15 minutes
        worker.run_once()
        clock.advance("15m")
    assert ran == [
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
        "2026-03-31T00:30:00Z",
    ]


# -- firing -----------------------------------------------------------------------------


def test_a_nightly_schedule_fires_once_a_night_over_a_simulated_week(
    store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 6, 1, 12) - clock.now())
    ran: list[str] = []
    nightly = scheduled(Schedule("0 2 * * *", tz="Europe/Paris"), ran, name="nightly")
    workers = [Worker(store, [nightly]) for _ in range(2)]  # two workers, one store
    for _ in range(7 * 24):
        for worker in workers:
            worker.run_once()
        clock.advance("1h")
    nights = [f"2026-06-{day:02d}T00:00:00Z" for day in range(2, 9)]  # 02:00 CEST
    assert ran == nights  # each night's step ran once, in order
    flows = store.list_flows(name="nightly", limit=50)
    assert sorted(f.id for f in flows) == [f"sched:nightly:{n}" for n in nights]
    assert {f.status for f in flows} == {"completed"}
    assert store.load("sched:nightly:2026-06-02T00:00:00Z").input == (
        '{"scheduled_for":"2026-06-02T00:00:00Z"}'
    )
    row = store.get_schedule("nightly")
    assert (tick_id(row.last_tick), tick_id(row.next_tick)) == (nights[-1], "2026-06-09T00:00:00Z")


def test_firing_creates_the_flow_due_and_runs_nothing(local_store: Any, clock: FakeClock) -> None:
    clock.advance(at(2026, 1, 1, 1, 59) - clock.now())
    ran: list[str] = []
    report = scheduled(Schedule("0 2 * * *"), ran)
    assert fire_schedules(local_store, [report], clock.time()) == 0
    clock.advance("1m")
    assert fire_schedules(local_store, [report], clock.time()) == 1
    assert fire_schedules(local_store, [report], clock.time()) == 0  # fired already
    assert ran == []
    assert local_store.due(clock.time(), 10) == ["sched:report:2026-01-01T02:00:00Z"]
    assert Worker(local_store, [report]).run_once() == 1
    assert ran == ["2026-01-01T02:00:00Z"]


def test_a_schedule_seen_first_fires_nothing_from_before_that_pass(
    local_store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 1, 1, 2, 0, 30) - clock.now())  # 30 s after a tick
    ran: list[str] = []
    worker = Worker(local_store, [scheduled(Schedule("0 2 * * *", catchup="7d"), ran)])
    worker.run_once()
    assert ran == []
    assert tick_id(local_store.get_schedule("report").next_tick) == "2026-01-02T02:00:00Z"
    clock.advance("1d")
    worker.run_once()
    assert ran == ["2026-01-02T02:00:00Z"]


def test_a_late_pass_fires_a_tick_within_the_minute_and_skips_an_older_one(
    local_store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.advance(at(2026, 1, 1, 1) - clock.now())
    ran: list[str] = []
    worker = Worker(local_store, [scheduled(Schedule("0 2 * * *"), ran)])  # catchup 0s
    worker.run_once()
    clock.advance("1h50s")  # 02:00:50: on time
    worker.run_once()
    assert ran == ["2026-01-01T02:00:00Z"]
    clock.advance(timedelta(days=1, seconds=80))  # 02:02:10 the next day: missed
    with caplog.at_level(logging.WARNING, logger="crux_gen.schedules"):
        worker.run_once()
    assert ran == ["2026-01-01T02:00:00Z"]
    assert "1 missed tick(s) from 2026-01-02T02:00:00Z on skipped" in caplog.text
    assert tick_id(local_store.get_schedule("report").next_tick) == "2026-01-03T02:00:00Z"


def test_catchup_fires_missed_ticks_in_the_window_oldest_first_and_logs_older_ones(
    local_store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.advance(at(2026, 1, 1, 0, 0) - clock.now())
    ran: list[str] = []
    hourly = scheduled(Schedule("0 * * * *", catchup="3h", overlap="allow"), ran)
    worker = Worker(local_store, [hourly])
    worker.run_once()
    assert ran == ["2026-01-01T00:00:00Z"]
    clock.advance("10h")  # the workers were down: 01:00 … 10:00 were not fired
    with caplog.at_level(logging.WARNING, logger="crux_gen.schedules"):
        worker.run_once()
    assert ran[1:] == [f"2026-01-01T{h:02d}:00:00Z" for h in (7, 8, 9, 10)]
    assert "6 missed tick(s) from 2026-01-01T01:00:00Z on skipped" in caplog.text
    assert local_store.count(name="report") == 5


def test_catchup_under_overlap_skip_fires_the_oldest_and_skips_the_rest(
    local_store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.advance(at(2026, 1, 1, 0, 0) - clock.now())
    ran: list[str] = []
    worker = Worker(local_store, [scheduled(Schedule("0 * * * *", catchup="1d"), ran)])
    worker.run_once()
    clock.advance("3h")
    with caplog.at_level(logging.INFO, logger="crux_gen.schedules"):
        worker.run_once()
    # 01:00 fired (not run yet when 02:00 came up), so 02:00 and 03:00 were skipped.
    assert ran == ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]
    assert "tick 2026-01-01T02:00:00Z skipped" in caplog.text
    assert "tick 2026-01-01T03:00:00Z skipped" in caplog.text


def test_overlap_skip_skips_ticks_while_the_previous_run_is_unfinished(
    local_store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 1, 1, 0, 30) - clock.now())

    @flow("waits", schedule=Schedule("0 * * * *", catchup="1h"), registry=Registry())
    def waits(ctx: Any) -> Any:
        return (yield Suspend("done"))

    worker = Worker(local_store, [waits])
    for _ in range(3):  # 00:30, 01:30, 02:30: the 01:00 run waits; 02:00 is skipped
        worker.run_once()
        clock.advance("1h")
    assert [f.id for f in local_store.list_flows(name="waits")] == [
        "sched:waits:2026-01-01T01:00:00Z"
    ]
    signal_flow("sched:waits:2026-01-01T01:00:00Z", "done", 1, store=local_store)
    worker.run_once()  # 03:30: it finishes; 03:00 was skipped already
    clock.advance("30m")
    worker.run_once()  # 04:00 fires
    assert sorted(f.id for f in local_store.list_flows(name="waits")) == [
        "sched:waits:2026-01-01T01:00:00Z",
        "sched:waits:2026-01-01T04:00:00Z",
    ]


def test_overlap_queue_fires_every_tick_and_each_waits_for_the_run_before_it(
    local_store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 1, 1, 0, 30) - clock.now())

    queue_hourly = Schedule("0 * * * *", catchup="1h", overlap="queue")

    @flow("queued", schedule=queue_hourly, registry=Registry())
    def queued(ctx: Any) -> Any:
        return (yield Suspend("done"))

    worker = Worker(local_store, [queued])
    for _ in range(3):  # 00:30, 01:30, 02:30: 01:00 runs and waits; 02:00 queues behind it
        worker.run_once()
        clock.advance("1h")
    first, second = "sched:queued:2026-01-01T01:00:00Z", "sched:queued:2026-01-01T02:00:00Z"
    rows = {f.id: (f.status, f.blocked_by) for f in local_store.list_flows(name="queued")}
    assert rows == {first: ("suspended", None), second: ("pending", first)}
    signal_flow(first, "done", 1, store=local_store)
    worker.run_once()  # 03:30: the first finishes, the second starts, 03:00 queues behind it
    rows = {f.id: (f.status, f.blocked_by) for f in local_store.list_flows(name="queued")}
    assert rows == {
        first: ("completed", None),
        second: ("suspended", None),
        "sched:queued:2026-01-01T03:00:00Z": ("pending", second),
    }


def test_overlap_allow_fires_every_tick_while_runs_wait(local_store: Any, clock: FakeClock) -> None:
    clock.advance(at(2026, 1, 1, 0, 30) - clock.now())

    @flow(
        "waits", schedule=Schedule("0 * * * *", catchup="1h", overlap="allow"), registry=Registry()
    )
    def waits(ctx: Any) -> Any:
        return (yield Suspend("done"))

    worker = Worker(local_store, [waits])
    for _ in range(4):
        worker.run_once()
        clock.advance("1h")
    assert local_store.count(name="waits", status="suspended") == 3


def test_pause_stops_every_worker_and_resume_starts_from_the_next_tick(
    local_store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 1, 1, 0, 30) - clock.now())
    ran: list[str] = []
    hourly = scheduled(Schedule("0 * * * *", catchup="1d", overlap="allow"), ran)
    one, two = Worker(local_store, [hourly]), Worker(local_store, [hourly])
    one.run_once()
    assert pause("report", store=local_store).paused is True
    for _ in range(3):  # 01:00, 02:00, 03:00 come and go, paused
        clock.advance("1h")
        one.run_once()
        two.run_once()
    assert ran == []
    row = resume("report", store=local_store)
    assert (row.paused, tick_id(row.next_tick)) == (False, "2026-01-01T04:00:00Z")
    clock.advance("30m")
    two.run_once()
    assert ran == ["2026-01-01T04:00:00Z"]  # the paused ticks are not caught up


def test_a_changed_cron_starts_again_from_its_next_tick(local_store: Any, clock: FakeClock) -> None:
    clock.advance(at(2026, 1, 1, 0, 30) - clock.now())
    ran: list[str] = []
    Worker(local_store, [scheduled(Schedule("0 * * * *"), ran)]).run_once()
    redeployed = Worker(local_store, [scheduled(Schedule("15 * * * *"), ran)])
    redeployed.run_once()
    assert local_store.get_schedule("report").cron == "15 * * * *"
    clock.advance("45m")  # 01:15
    redeployed.run_once()
    assert ran == ["2026-01-01T01:15:00Z"]


def test_trigger_starts_one_run_now_and_backfill_every_tick_once(
    local_store: Any, clock: FakeClock
) -> None:
    clock.advance(at(2026, 3, 30, 12, 0, 5) - clock.now())
    ran: list[str] = []
    nightly = scheduled(Schedule("0 2 * * *", tz="Europe/Paris"), ran)
    worker = Worker(local_store, [nightly])
    worker.run_once()
    assert trigger("report", store=local_store) == ("sched:report:2026-03-30T12:00:05Z", True)
    done = backfill("report", at(2026, 3, 27, 1), at(2026, 3, 30), store=local_store)
    assert done == [  # from <= tick < to: 27 March's 01:00Z is in, 30 March's is not
        ("sched:report:2026-03-27T01:00:00Z", True),
        ("sched:report:2026-03-28T01:00:00Z", True),
        ("sched:report:2026-03-29T01:00:00Z", True),
    ]
    again = backfill("report", at(2026, 3, 27, 1), at(2026, 3, 30), store=local_store)
    assert [made for _, made in again] == [False, False, False]  # idempotent
    worker.run_once()
    assert sorted(ran) == [
        "2026-03-27T01:00:00Z",
        "2026-03-28T01:00:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T12:00:05Z",
    ]
    with pytest.raises(InvalidValueError, match="'nope' is not stored"):
        trigger("nope", store=local_store)
    with pytest.raises(InvalidValueError, match="is not after --from"):
        backfill("report", at(2026, 3, 2), at(2026, 3, 1), store=local_store)


def test_a_store_without_schedules_is_told_once_and_the_worker_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Plain:  # forwards the Store protocol, keeps no schedules
        def __init__(self, inner: MemoryStore) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "caps":
                raise AttributeError(name)
            return getattr(self._inner, name)

    store = Plain(MemoryStore(clock=clock))
    worker = Worker(store, [scheduled(Schedule("* * * * *"), [])])  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="crux_gen.schedules"):
        assert worker.run_once() == 0
        assert worker.run_once() == 0
    assert caplog.text.count("keeps no schedules") == 1
