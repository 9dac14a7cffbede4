"""The contract suite's part for the schedules a store keeps (``base.Schedules``,
``Caps.schedules``): every store (memory, SQLite, PostgreSQL, the ``store`` fixture
of ``tests/conftest.py``) answers alike, through the protocol only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from crux_gen import FakeClock, MemoryStore, SQLiteStore
from crux_gen.migrate import migrate
from crux_gen.records import StoredSchedule
from crux_gen.stores.caps import caps_of


def test_every_store_keeps_schedules_and_says_so(store: Any) -> None:
    assert caps_of(store).schedules is True
    assert store.list_schedules() == []
    assert store.get_schedule("nightly") is None


def test_register_stores_a_schedule_once_and_returns_the_stored_row(store: Any) -> None:
    first = store.register_schedule("nightly", "0 2 * * *", "Europe/Paris", 100.0)
    assert first == StoredSchedule("nightly", "0 2 * * *", "Europe/Paris", False, None, None, 100.0)
    # A second worker registering the same schedule changes nothing (its next tick
    # is another one: the stored one stands).
    again = store.register_schedule("nightly", "0 2 * * *", "Europe/Paris", 500.0)
    assert again == first
    assert store.get_schedule("nightly") == first
    assert store.list_schedules() == [first]


def test_a_changed_cron_or_zone_takes_the_new_next_tick_and_keeps_the_rest(store: Any) -> None:
    store.register_schedule("nightly", "0 2 * * *", "UTC", 100.0)
    assert store.advance_schedule("nightly", 100.0, 200.0, 100.0, "sched:nightly:a")
    store.pause_schedule("nightly", True)
    moved = store.register_schedule("nightly", "0 3 * * *", "UTC", 300.0)
    assert moved == StoredSchedule(
        "nightly", "0 3 * * *", "UTC", True, 100.0, "sched:nightly:a", 300.0
    )
    zoned = store.register_schedule("nightly", "0 3 * * *", "Asia/Tokyo", 400.0)
    assert (zoned.tz, zoned.next_tick, zoned.last_tick) == ("Asia/Tokyo", 400.0, 100.0)


def test_advance_moves_the_next_tick_only_from_the_value_seen(store: Any) -> None:
    store.register_schedule("hourly", "0 * * * *", "UTC", 3600.0)
    # Two workers saw 3600: the first moves it, the second finds it moved.
    assert store.advance_schedule("hourly", 3600.0, 7200.0, 3600.0, "sched:hourly:1") is True
    assert store.advance_schedule("hourly", 3600.0, 7200.0, 3600.0, "sched:hourly:1") is False
    row = store.get_schedule("hourly")
    assert (row.next_tick, row.last_tick, row.last_flow) == (7200.0, 3600.0, "sched:hourly:1")
    # Without a fired tick, the last one fired stays.
    assert store.advance_schedule("hourly", 7200.0, 10800.0) is True
    row = store.get_schedule("hourly")
    assert (row.next_tick, row.last_tick, row.last_flow) == (10800.0, 3600.0, "sched:hourly:1")
    assert store.advance_schedule("nope", 0.0, 1.0) is False
    assert store.get_schedule("nope") is None


def test_pause_and_resume_are_stored_and_resume_may_move_the_next_tick(store: Any) -> None:
    store.register_schedule("a", "0 2 * * *", "UTC", 100.0)
    store.register_schedule("b", "0 2 * * *", "UTC", 100.0)
    assert store.pause_schedule("a", True) is True
    assert store.get_schedule("a").paused is True
    assert store.get_schedule("a").next_tick == 100.0
    assert store.get_schedule("b").paused is False  # only the one named
    assert store.pause_schedule("a", False, 900.0) is True
    assert (store.get_schedule("a").paused, store.get_schedule("a").next_tick) == (False, 900.0)
    assert store.pause_schedule("missing", True) is False
    assert [s.name for s in store.list_schedules()] == ["a", "b"]


def test_put_schedule_stores_a_row_as_given_replacing_one_of_its_name(store: Any) -> None:
    row = StoredSchedule("r", "*/5 * * * *", "America/New_York", True, 50.0, "sched:r:x", 60.0)
    store.put_schedule(row)
    assert store.get_schedule("r") == row
    newer = row._replace(paused=False, next_tick=120.0)
    store.put_schedule(newer)
    assert store.list_schedules() == [newer]


def test_schedule_names_and_values_are_kept_as_given(store: Any) -> None:
    # Parameters only: quotes and percent signs are plain text in every store.
    name = 'it\'s 100% "nightly"; DROP TABLE schedules --'
    store.register_schedule(name, "0 2 * * *", "UTC", 1.5)
    assert store.get_schedule(name).name == name
    assert store.advance_schedule(name, 1.5, 2.5, 1.5, "sched:%s:'x'")
    assert store.get_schedule(name).last_flow == "sched:%s:'x'"


def test_migrate_copies_every_schedule_with_its_state(store: Any, clock: FakeClock) -> None:
    store.register_schedule("a", "0 2 * * *", "Europe/Paris", 100.0)
    store.advance_schedule("a", 100.0, 200.0, 100.0, "sched:a:x")
    store.register_schedule("b", "*/5 * * * *", "UTC", 300.0)
    store.pause_schedule("b", True)
    target = MemoryStore(clock=clock)
    report = migrate(store, target)
    assert report.schedules == 2
    assert target.list_schedules() == store.list_schedules()
    assert target.get_schedule("b").paused is True


def test_a_version_5_sqlite_file_gets_the_schedules_table_and_keeps_its_flows(
    tmp_path: Path,
) -> None:
    from crux_gen.stores.sqlite_schema import MIGRATIONS

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 6):  # a file as version 5 left it
        MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 5")
    conn.execute(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at) "
        "VALUES ('f1', 'demo', 'running', 'null', 1.0, 1.0)"
    )
    conn.close()

    store = SQLiteStore(path, clock=FakeClock())
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == 11
    flow = store.load(
        "f1"
    )  # through versions 6 (flow control), 8 (limits) 9 (traces) and 10 (recoveries)
    assert (flow.name, flow.priority, flow.blocked_by, flow.fair_key) == ("demo", 0, None, None)
    assert flow.trace is None
    assert store.register_schedule("n", "0 2 * * *", "UTC", 1.0).next_tick == 1.0
    store.close()
