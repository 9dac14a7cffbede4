"""What a user relies on from the clocks: aware UTC times, a fake clock that moves only
when told (and is safe to move from many threads), the system clock's real time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from crux_gen import FakeClock, InvalidValueError, SystemClock
from crux_gen.clock import when


def test_a_fake_clock_starts_on_new_year_2026_utc_and_moves_only_when_told() -> None:
    clock = FakeClock()
    start = clock.now()
    assert start == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert start.utcoffset() == timedelta(0)
    time.sleep(0.01)
    assert clock.now() == start
    assert clock.time() == start.timestamp()


def test_a_fake_clock_started_in_another_zone_reads_in_utc() -> None:
    paris_nine = datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    clock = FakeClock(paris_nine)
    assert clock.now() == paris_nine
    assert clock.now().tzinfo == timezone.utc and clock.now().hour == 8


def test_a_fake_clock_refuses_a_naive_start() -> None:
    with pytest.raises(InvalidValueError, match=r"is not timezone-aware"):
        FakeClock(datetime(2026, 1, 1))


def test_advance_takes_any_duration_and_returns_the_new_time() -> None:
    clock = FakeClock()
    start = clock.now()
    assert clock.advance("24h") == start + timedelta(hours=24)
    assert clock.advance(timedelta(minutes=30)) == start + timedelta(hours=24, minutes=30)
    assert clock.advance(90) == start + timedelta(hours=24, minutes=31, seconds=30)
    assert clock.advance("500ms") == clock.now()
    assert clock.now() - start == timedelta(hours=24, minutes=31, seconds=30, milliseconds=500)


def test_advance_names_a_bad_duration_and_leaves_the_time_alone() -> None:
    clock = FakeClock()
    start = clock.now()
    with pytest.raises(ValueError, match=r"advance 'soon-ish' is not a duration"):
        clock.advance("soon-ish")
    with pytest.raises(ValueError, match=r"advance -1"):
        clock.advance(-1)
    assert clock.now() == start


def test_a_fake_sleep_moves_the_time_at_once_and_never_backwards() -> None:
    clock = FakeClock()
    start = clock.now()
    began = time.monotonic()
    clock.sleep(3600)
    assert time.monotonic() - began < 1
    assert clock.now() == start + timedelta(hours=1)
    clock.sleep(0)
    clock.sleep(-5)
    assert clock.now() == start + timedelta(hours=1)


def test_a_fake_clock_advanced_from_many_threads_loses_no_step() -> None:
    clock = FakeClock()
    start = clock.now()

    def tick() -> None:
        for _ in range(500):
            clock.advance("1s")

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() - start == timedelta(seconds=8 * 500)


def test_the_system_clock_reads_real_aware_utc_time_and_sleeps_for_real() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs(now.timestamp() - time.time()) < 5
    assert abs(clock.time() - time.time()) < 5
    began = time.monotonic()
    clock.sleep(0.05)
    assert time.monotonic() - began >= 0.045
    began = time.monotonic()
    clock.sleep(0)
    clock.sleep(-1)
    assert time.monotonic() - began < 0.05


def test_stored_timestamps_read_back_as_aware_utc_datetimes() -> None:
    assert when(None) is None
    moment = datetime(2026, 11, 24, 10, 0, 0, 250000, tzinfo=timezone.utc)
    back = when(moment.timestamp())
    assert back == moment and back is not None and back.tzinfo == timezone.utc
