"""The one injectable clock every timer, deadline and lease reads."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

from .durations import Duration, to_duration
from .errors import InvalidValueError


class Clock(Protocol):
    """What the runner and stores need of time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def time(self) -> float:
        """The current time as UTC seconds since the epoch (what stores compare)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait *seconds* (a fake clock just moves forward)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        """The wall-clock time, aware UTC."""
        return datetime.now(timezone.utc)

    def time(self) -> float:
        """The wall-clock time, seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds*."""
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told: ``clock.advance("24h")``. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise InvalidValueError(
                "FakeClock start", start, "is not timezone-aware; give an aware datetime (UTC)"
            )
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The fake time, aware UTC."""
        with self._lock:
            return self._now

    def time(self) -> float:
        """The fake time, seconds since the epoch."""
        return self.now().timestamp()

    def sleep(self, seconds: float) -> None:
        """Move the fake time forward by *seconds*, at once."""
        if seconds > 0:
            self.advance(timedelta(seconds=seconds))

    def advance(self, duration: Duration) -> datetime:
        """Move time forward by *duration*; return the new time."""
        step = to_duration(duration, what="advance")
        with self._lock:
            self._now += step
            return self._now


SYSTEM_CLOCK = SystemClock()


def when(ts: float | None) -> datetime | None:
    """A stored timestamp (UTC seconds since the epoch) as an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)
