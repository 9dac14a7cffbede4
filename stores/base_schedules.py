"""The protocol of a store that keeps cron schedules (``Caps.schedules``),
importable from ``stores.base`` too."""

from __future__ import annotations

from typing import Protocol

from crux_gen.records import StoredSchedule


class Schedules(Protocol):
    """A store with ``Caps.schedules``: the state of cron schedules, shared by every
    worker (``crux_gen.schedules`` decides; the store keeps one row per name).

    Every call is atomic; times are UTC seconds since the epoch.
    """

    def register_schedule(self, name: str, cron: str, tz: str, next_tick: float) -> StoredSchedule:
        """The schedule *name*, stored first with *next_tick* (not paused, nothing
        fired) when absent; a stored one with another *cron* or *tz* takes them and
        *next_tick* (its ticks start again from there). The row as stored now."""
        ...

    def advance_schedule(
        self,
        name: str,
        seen: float,
        next_tick: float,
        last_tick: float | None = None,
        last_flow: str | None = None,
    ) -> bool:
        """Move ``next_tick`` from *seen* to *next_tick* (and, when *last_tick* is
        given, set ``last_tick`` and ``last_flow``) only if it is still *seen*:
        ``False`` when another worker moved it first, or there is no such schedule."""
        ...

    def pause_schedule(self, name: str, paused: bool, next_tick: float | None = None) -> bool:
        """Set ``paused`` (and ``next_tick`` when given); ``False`` when *name* is
        not stored."""
        ...

    def get_schedule(self, name: str) -> StoredSchedule | None:
        """The schedule *name*, or ``None``."""
        ...

    def list_schedules(self) -> list[StoredSchedule]:
        """Every stored schedule, by name."""
        ...

    def put_schedule(self, schedule: StoredSchedule) -> None:
        """Store *schedule* as given, replacing one of that name (``crux-gen migrate``)."""
        ...
