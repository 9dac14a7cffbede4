"""``Retry``: when a failing step is tried again, and how long after each failure."""

from __future__ import annotations

import typing
from datetime import timedelta
from typing import Literal

import attrs

from .durations import MAX_DURATION, to_duration, to_optional_duration
from .errors import InvalidTypeError, InvalidValueError

Backoff = Literal["exponential", "fixed", "linear"]
_BACKOFFS = ("exponential", "fixed", "linear")


def _retry_on(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidTypeError(
                "Retry retry_on", item, "is not an exception class; give one or a tuple of them"
            )
    return tuple(items)


def _attempts(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError("Retry attempts", value, "is not an int; give an int of 1 or more")
    if value < 1:
        raise InvalidValueError("Retry attempts", value, "must be an int of 1 or more")


def _backoff(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if value not in _BACKOFFS:
        raise InvalidValueError("Retry backoff", value, f"must be one of {', '.join(_BACKOFFS)}")


def _retry_delay(value: object) -> timedelta:
    return to_duration(value, what="Retry delay")


def _retry_max_delay(value: object) -> timedelta | None:
    return to_optional_duration(value, what="Retry max_delay")


@attrs.frozen
class Retry:
    """Retry a failing step: ``Retry(attempts=3, backoff="exponential", delay="1s")``.

    ``attempts`` counts the first try. Attempts are persisted, so a crash does not
    reset them. The delay before try *n+1* is ``delay`` ("fixed"), ``delay * n``
    ("linear") or ``delay * 2**(n-1)`` ("exponential"), capped at ``max_delay``.
    Only exceptions that are instances of ``retry_on`` are retried.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    backoff: Backoff = attrs.field(default="exponential", validator=_backoff)
    delay: timedelta = attrs.field(default=timedelta(seconds=1), converter=_retry_delay)
    max_delay: timedelta | None = attrs.field(default=None, converter=_retry_max_delay)
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_retry_on
    )

    def delay_after(self, failures: int) -> timedelta:
        """The wait before the next try, after *failures* failed tries (1 or more):
        never more than ``max_delay``, nor than 100 years (``MAX_DURATION``).

        >>> Retry(backoff="exponential", delay="1s").delay_after(3)
        datetime.timedelta(seconds=4)
        """
        if self.backoff == "fixed":
            factor = 1
        elif self.backoff == "linear":
            factor = max(failures, 1)
        else:
            factor = 2 ** min(max(failures - 1, 0), 64)
        cap = MAX_DURATION if self.max_delay is None else min(self.max_delay, MAX_DURATION)
        if self.delay.total_seconds() * factor >= cap.total_seconds():
            return cap  # checked in float seconds: a timedelta this long would overflow
        return self.delay * factor

    def should_retry(self, exc: BaseException, failures: int) -> bool:
        """Whether to try again after *failures* failed tries ending with *exc*."""
        return failures < self.attempts and isinstance(exc, self.retry_on)
