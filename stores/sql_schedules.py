"""``SqlSchedules``: the ``Schedules`` capability of the SQL stores, one table
``schedules`` (schema version 7 on SQLite, 6 on PostgreSQL), written once over
``SqlStore``'s connection hooks; ``stores/memory_schedules.py`` is the reference."""

from __future__ import annotations

from typing import Any

from crux_gen.records import StoredSchedule

from .sql import C, SqlStore

COLUMNS = "name, cron, tz, paused, last_tick, last_flow, next_tick"
_INSERT = (
    f"INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, 0, NULL, NULL, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
_RETARGET = (
    "UPDATE schedules SET cron = ?, tz = ?, next_tick = ? WHERE name = ? AND (cron <> ? OR tz <> ?)"
)
_ONE = f"SELECT {COLUMNS} FROM schedules WHERE name = ?"
_ALL = f"SELECT {COLUMNS} FROM schedules ORDER BY name"
_ADVANCE = "UPDATE schedules SET next_tick = ? WHERE name = ? AND next_tick = ?"
_ADVANCE_FIRED = (
    "UPDATE schedules SET next_tick = ?, last_tick = ?, last_flow = ? "
    "WHERE name = ? AND next_tick = ?"
)
_PAUSE = "UPDATE schedules SET paused = ?, next_tick = COALESCE(?, next_tick) WHERE name = ?"
_PUT = (
    f"INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, tz = excluded.tz, "
    "paused = excluded.paused, last_tick = excluded.last_tick, "
    "last_flow = excluded.last_flow, next_tick = excluded.next_tick"
)


def _schedule(row: tuple[Any, ...]) -> StoredSchedule:
    name, cron, tz, paused, last_tick, last_flow, next_tick = row
    return StoredSchedule(name, cron, tz, bool(paused), last_tick, last_flow, next_tick)


class SqlSchedules(SqlStore[C]):
    """``SqlStore`` with the schedules table; every statement has parameters only."""

    def _q(self, query: str) -> str:
        """*query* in the store's dialect (its parameter mark for ``?``)."""
        mark = self._sql.dialect.mark
        return query if mark == "?" else query.replace("?", mark)

    def register_schedule(self, name: str, cron: str, tz: str, next_tick: float) -> StoredSchedule:
        def body(conn: C) -> StoredSchedule:
            self._run(conn, self._q(_INSERT), (name, cron, tz, next_tick))
            self._run(conn, self._q(_RETARGET), (cron, tz, next_tick, name, cron, tz))
            return _schedule(self._run(conn, self._q(_ONE), (name,)).fetchone())

        return self._atomically(body)

    def advance_schedule(
        self,
        name: str,
        seen: float,
        next_tick: float,
        last_tick: float | None = None,
        last_flow: str | None = None,
    ) -> bool:
        if last_tick is None:
            return self._execute(self._q(_ADVANCE), (next_tick, name, seen)) == 1
        params = (next_tick, last_tick, last_flow, name, seen)
        return self._execute(self._q(_ADVANCE_FIRED), params) == 1

    def pause_schedule(self, name: str, paused: bool, next_tick: float | None = None) -> bool:
        return self._execute(self._q(_PAUSE), (int(bool(paused)), next_tick, name)) == 1

    def get_schedule(self, name: str) -> StoredSchedule | None:
        rows = self._all(self._q(_ONE), (name,))
        return _schedule(rows[0]) if rows else None

    def list_schedules(self) -> list[StoredSchedule]:
        return [_schedule(row) for row in self._all(_ALL)]

    def put_schedule(self, schedule: StoredSchedule) -> None:
        name, cron, tz, paused, last_tick, last_flow, next_tick = schedule
        params = (name, cron, tz, int(bool(paused)), last_tick, last_flow, next_tick)
        self._execute(self._q(_PUT), params)
