"""``MemorySchedules``: the ``Schedules`` capability of ``MemoryStore`` (a dict of
``StoredSchedule`` under the store's lock), the reference semantics of
``stores/sql_schedules.py``."""

from __future__ import annotations

import threading

from crux_gen.records import StoredSchedule


class MemorySchedules:
    """Schedules by name, under the store's ``_lock``."""

    _lock: threading.RLock
    _schedules: dict[str, StoredSchedule]

    def register_schedule(self, name: str, cron: str, tz: str, next_tick: float) -> StoredSchedule:
        with self._lock:
            found = self._schedules.get(name)
            if found is None:
                found = StoredSchedule(name, cron, tz, False, None, None, next_tick)
            elif (found.cron, found.tz) != (cron, tz):
                found = found._replace(cron=cron, tz=tz, next_tick=next_tick)
            self._schedules[name] = found
            return found

    def advance_schedule(
        self,
        name: str,
        seen: float,
        next_tick: float,
        last_tick: float | None = None,
        last_flow: str | None = None,
    ) -> bool:
        with self._lock:
            found = self._schedules.get(name)
            if found is None or found.next_tick != seen:
                return False
            found = found._replace(next_tick=next_tick)
            if last_tick is not None:
                found = found._replace(last_tick=last_tick, last_flow=last_flow)
            self._schedules[name] = found
            return True

    def pause_schedule(self, name: str, paused: bool, next_tick: float | None = None) -> bool:
        with self._lock:
            found = self._schedules.get(name)
            if found is None:
                return False
            found = found._replace(paused=bool(paused))
            if next_tick is not None:
                found = found._replace(next_tick=next_tick)
            self._schedules[name] = found
            return True

    def get_schedule(self, name: str) -> StoredSchedule | None:
        with self._lock:
            return self._schedules.get(name)

    def list_schedules(self) -> list[StoredSchedule]:
        with self._lock:
            return [self._schedules[name] for name in sorted(self._schedules)]

    def put_schedule(self, schedule: StoredSchedule) -> None:
        with self._lock:
            self._schedules[schedule.name] = StoredSchedule(*schedule)
