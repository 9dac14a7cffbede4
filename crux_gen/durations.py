"""Durations: ``"500ms"``, ``"10s"``, ``"30m"``, ``"24h"``, ``"2d"``, a timedelta or seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import InvalidValueError

Duration = str | int | float | timedelta

#: The longest duration crux_gen takes: 100 years (36,525 days). Every wake-up
#: time and deadline then stays a date that ``datetime`` can hold, for any store.
MAX_DURATION = timedelta(days=36525)
_MAX_SECONDS = MAX_DURATION.total_seconds()
_TOO_LONG = "is longer than 100 years (36525 days), the longest duration crux_gen takes"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def to_duration(value: object, *, what: str = "duration") -> timedelta:
    """Convert *value* to a ``timedelta`` from zero to 100 years.

    >>> to_duration("24h")
    datetime.timedelta(days=1)

    Anything else than a duration string, a ``timedelta`` or a finite number of
    seconds, from zero to 100 years (:data:`MAX_DURATION`, 36,525 days), raises
    ``InvalidValueError`` (a ``ValueError``) naming *what* and the bad value.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise InvalidValueError(what, value, "is negative; use a duration of zero or more")
        if value > MAX_DURATION:
            raise InvalidValueError(what, value, _TOO_LONG)
        return value
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValueError(what, value, "is not a finite number of seconds")
        if value < 0:
            raise InvalidValueError(what, value, "is negative; use a duration of zero or more")
        seconds = value
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]  # inf at worst
    if seconds is None:
        raise InvalidValueError(
            what,
            value,
            'is not a duration (try "500ms", "10s", "30m", "24h", "2d", a timedelta or a '
            "number of seconds)",
        )
    if seconds > _MAX_SECONDS:
        raise InvalidValueError(what, value, _TOO_LONG)
    return timedelta(seconds=seconds)


def to_optional_duration(value: object, *, what: str = "duration") -> timedelta | None:
    """Like :func:`to_duration`, but let ``None`` through.

    >>> to_optional_duration(None, what="Suspend timeout") is None
    True
    """
    return None if value is None else to_duration(value, what=what)
