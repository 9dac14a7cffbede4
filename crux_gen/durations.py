"""Durations: ``"500ms"``, ``"10s"``, ``"30m"``, ``"24h"``, ``"2d"``, a timedelta or seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

Duration = str | int | float | timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def to_duration(value: object, *, what: str = "duration") -> timedelta:
    """Convert *value* to a ``timedelta``.

    >>> to_duration("24h")
    datetime.timedelta(days=1)

    Anything else than a duration string, a ``timedelta`` or a finite, non-negative
    number of seconds raises ``ValueError`` naming the bad value.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"{what} {value!r} is negative; use a duration of zero or more")
        return value
    if isinstance(value, bool):
        raise ValueError(f'{what} {value!r} is not a duration (try "30m", "24h" or seconds)')
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what} {value!r} is not a finite, non-negative number of seconds")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(
        f"{what} {value!r} is not a duration "
        '(try "500ms", "10s", "30m", "24h", "2d", a timedelta or a number of seconds)'
    )


def to_optional_duration(value: object, *, what: str = "duration") -> timedelta | None:
    """Like :func:`to_duration`, but let ``None`` through."""
    return None if value is None else to_duration(value, what=what)
