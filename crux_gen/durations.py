"""Durations: ``"500ms"``, ``"10s"``, ``"30m"``, ``"24h"``, ``"2d"``, compounds of
them (``"1h30m"``, ``"2d12h"``), a timedelta or a number of seconds.

:func:`to_duration` reads them; :func:`format_duration` writes one back in the
same compact form (``"1h30m"``, never ``"1:30:00"``), which ``to_duration`` reads.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .errors import InvalidValueError

Duration = str | int | float | timedelta

#: The longest duration crux_gen takes: 100 years (36,525 days). Every wake-up
#: time and deadline then stays a date that ``datetime`` can hold, for any store.
MAX_DURATION = timedelta(days=36525)
_MAX_SECONDS = MAX_DURATION.total_seconds()
_MAX_MICROS = MAX_DURATION // timedelta(microseconds=1)
_TOO_LONG = "is longer than 100 years (36525 days), the longest duration crux_gen takes"
_NOT_A_DURATION = (
    'is not a duration (try "500ms", "10s", "30m", "24h", "2d", "1h30m", a timedelta or a '
    "number of seconds)"
)

# Largest first: a compound names each unit once, in this order ("1h30m", not "30m1h").
_US_PER = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1000}
_ORDER = list(_US_PER)
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def _parse(text: str) -> Decimal | None:
    """Return the microseconds *text* names (``"1h30m"`` -> 5400000000), or ``None``.

    Counted exactly (no float rounding), so ``format_duration``'s text reads back
    as the very same ``timedelta``."""
    micros = Decimal(0)
    end = 0
    last = -1
    for match in _PART.finditer(text):
        if match.start() != end:
            return None
        rank = _ORDER.index(match.group(2))
        if rank <= last:  # a unit twice, or out of order
            return None
        last = rank
        micros += Decimal(match.group(1)) * _US_PER[match.group(2)]
        end = match.end()
    if last < 0 or text[end:].strip():
        return None
    return micros


def to_duration(value: object, *, what: str = "duration") -> timedelta:
    """Convert *value* to a ``timedelta`` from zero to 100 years.

    >>> to_duration("24h")
    datetime.timedelta(days=1)
    >>> to_duration("1h30m")
    datetime.timedelta(seconds=5400)

    A string is one or more of a number and a unit (``ms``, ``s``, ``m``, ``h``,
    ``d``), largest unit first and each unit once: ``"500ms"``, ``"1.5h"``,
    ``"2d12h"``, ``"1m30s"``. Anything else than such a string, a ``timedelta``
    or a finite number of seconds, from zero to 100 years (:data:`MAX_DURATION`,
    36,525 days), raises ``InvalidValueError`` (a ``ValueError``) naming *what*
    and the bad value.
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
        micros = _parse(value)
        if micros is None:
            raise InvalidValueError(what, value, _NOT_A_DURATION)
        if micros > _MAX_MICROS:
            raise InvalidValueError(what, value, _TOO_LONG)
        return timedelta(microseconds=round(micros))
    if seconds is None:
        raise InvalidValueError(what, value, _NOT_A_DURATION)
    if seconds > _MAX_SECONDS:
        raise InvalidValueError(what, value, _TOO_LONG)
    return timedelta(seconds=seconds)


def to_optional_duration(value: object, *, what: str = "duration") -> timedelta | None:
    """Like :func:`to_duration`, but let ``None`` through.

    >>> to_optional_duration(None, what="Suspend timeout") is None
    True
    """
    return None if value is None else to_duration(value, what=what)


def format_duration(value: timedelta | float) -> str:
    """Write *value* (a ``timedelta`` or seconds) compactly, as :func:`to_duration` reads it.

    >>> format_duration(timedelta(minutes=90)), format_duration(0.5), format_duration(30)
    ('1h30m', '500ms', '30s')

    Exact to the microsecond, largest unit first, zero units left out: ``"2d3h"``,
    ``"1m30s"``, ``"1.5s"``, ``"0s"``; a negative value gets a leading ``-``.
    """
    if isinstance(value, timedelta):
        micros = value // timedelta(microseconds=1)
    else:
        if not math.isfinite(value):
            return str(value)
        micros = round(value * 1_000_000)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        return sign + _decimal(micros, 1000) + "ms" if micros else "0s"
    parts = [sign]
    rest = micros
    for unit, size in list(_US_PER.items())[:-1]:
        count, rest = divmod(rest, size)
        if unit == "s" and count:
            parts.append(_decimal(count * size + rest, size) + "s")  # "1.5s", "1m30.25s"
        elif unit == "s" and rest:
            parts.append(_decimal(rest, 1000) + "ms")  # "1m500ms", not "1m0.5s"
        elif count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _decimal(micros: int, size: int) -> str:
    """Write *micros* / *size* with no trailing zeros: ``1500000, 1000000`` -> ``"1.5"``."""
    whole, frac = divmod(micros, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def approximate(seconds: float) -> str:
    """A duration in at most two units, for people: ``12ms``, ``4.2s``, ``3m5s``,
    ``2h30m``, ``3d4h`` (the CLI's and the dashboard's "took" and "ago")."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            big, rest = divmod(whole, size)
            small = rest // sub_size
            return f"{big}{unit}{small}{sub}" if small else f"{big}{unit}"
    return f"{whole}s"


#: Plain seconds given as text (``"90"``), which ``to_duration`` takes as a number.
SECONDS_TEXT = re.compile(r"\s*\d+(\.\d+)?\s*")


def moment_of(text: str, now: datetime, *, what: str) -> datetime:
    """*text* as a moment: an age before *now* (``"90m"``, ``"2d"``; plain digits are
    seconds) or an ISO 8601 time (UTC when it names no zone; a trailing ``Z`` on every
    Python); else ``InvalidValueError`` naming *what* (the CLI's ``--since`` and the
    dashboard's ``since`` read it so).

    >>> moment_of("1h", datetime(2026, 1, 1, 10, tzinfo=timezone.utc), what="since")
    datetime.datetime(2026, 1, 1, 9, 0, tzinfo=datetime.timezone.utc)
    """
    value = text.strip()
    try:
        age = to_duration(float(value) if SECONDS_TEXT.fullmatch(value) else value, what=what)
        return now - age
    except (InvalidValueError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        raise InvalidValueError(
            what, text, 'is neither an age ("1h", "2d", "90m") nor an ISO 8601 time '
            '("2026-11-24T10:00:00Z")',
        ) from None  # fmt: skip
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
