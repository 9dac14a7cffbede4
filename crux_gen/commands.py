"""The commands a flow yields to the interpreter. Each is a frozen attrs class,
validated where it is written, so a bad duration fails at the ``yield`` line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import attrs

from .durations import MAX_DURATION, to_duration, to_optional_duration
from .errors import InvalidTypeError, InvalidValueError

Backoff = Literal["exponential", "fixed", "linear"]
_BACKOFFS = ("exponential", "fixed", "linear")


def check_name(value: object, *, what: str) -> str:
    """Return *value* if it can name a command, a flow or a signal, else raise.

    >>> check_name("send-welcome", what="Step name")
    'send-welcome'

    ``InvalidTypeError`` for anything but a ``str``; ``InvalidValueError`` for a
    blank string, or one holding a lone surrogate (which no store can keep).
    """
    if not isinstance(value, str):
        raise InvalidTypeError(what, value, "is not a str; give a non-empty string")
    if not value.strip():
        raise InvalidValueError(what, value, "is blank; give a non-empty string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValueError(
                what, value, "holds a lone surrogate, which no store can keep as text"
            ) from None
    return value


def _valid_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_name(value, what=f"{type(instance).__name__} {attribute.name}")


def _callable(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise InvalidTypeError(
            f"{type(instance).__name__} {attribute.name}",
            value,
            "is not callable; give a zero-argument callable (a function or a lambda)",
        )


def _retry_on(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidTypeError(
                "Retry retry_on", item, "is not an exception class; give one or a tuple of them"
            )
    return tuple(items)


def _attempts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError("Retry attempts", value, "is not an int; give an int of 1 or more")
    if value < 1:
        raise InvalidValueError("Retry attempts", value, "must be an int of 1 or more")


def _backoff(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in _BACKOFFS:
        raise InvalidValueError("Retry backoff", value, f"must be one of {', '.join(_BACKOFFS)}")


def _retry_delay(value: object) -> timedelta:
    return to_duration(value, what="Retry delay")


def _retry_max_delay(value: object) -> timedelta | None:
    return to_optional_duration(value, what="Retry max_delay")


def _suspend_timeout(value: object) -> timedelta | None:
    return to_optional_duration(value, what="Suspend timeout")


def _wait_every(value: object) -> timedelta:
    return to_duration(value, what="WaitUntil every")


def _wait_timeout(value: object) -> timedelta | None:
    return to_optional_duration(value, what="WaitUntil timeout")


def _sleep_duration(value: object) -> timedelta:
    return to_duration(value, what="Sleep duration")


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


def _retry(value: object) -> Retry | None:
    if value is None or isinstance(value, Retry):
        return value
    raise InvalidTypeError("Step retry", value, "is not a Retry; give Retry(...) or None")


@attrs.frozen
class Step:
    """Run ``fn()`` once and persist its return value; on replay return it unrun.

    >>> plan = yield Step("first-week-plan", lambda: make_plan(name), retry=Retry(3))
    """

    name: str = attrs.field(validator=_valid_name)
    fn: Callable[[], Any] = attrs.field(validator=_callable, repr=False)
    retry: Retry | None = attrs.field(default=None, kw_only=True, converter=_retry)

    kind = "step"

    def __init__(self, name: str, fn: Callable[[], Any], *, retry: Retry | None = None) -> None:
        # Written by hand (attrs keeps a class's own __init__), because a replay
        # builds one Step per recorded step: the same conversion and checks, in the
        # same order, as the fields declare, at half the cost of the generated one.
        if retry is not None:
            retry = _retry(retry)
        if type(name) is not str or not name.isascii() or not name or name.isspace():
            check_name(name, what=f"{type(self).__name__} name")
        if not callable(fn):
            _callable(self, _STEP_FIELDS.fn, fn)
        _set_step_name(self, name)
        _set_step_fn(self, fn)
        _set_step_retry(self, retry)


_STEP_FIELDS = attrs.fields(Step)
# The slots' own setters: a frozen class refuses setattr, and these are the
# cheapest way past that (what attrs' generated __init__ does, minus a lookup).
_set_step_name = Step.__dict__["name"].__set__
_set_step_fn = Step.__dict__["fn"].__set__
_set_step_retry = Step.__dict__["retry"].__set__


@attrs.frozen
class Suspend:
    """Wait for the signal *name*; evaluate to its payload.

    >>> v = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")

    The payload is structured into *schema* (attrs class, dataclass, or any type
    cattrs can structure) when given. With *timeout*, the flow expires when no
    signal arrives in time, counted from when the flow first reached this command.
    """

    name: str = attrs.field(validator=_valid_name)
    schema: Any = attrs.field(default=None, kw_only=True)
    timeout: timedelta | None = attrs.field(
        default=None,
        kw_only=True,
        converter=_suspend_timeout,
    )

    kind = "suspend"


@attrs.frozen
class WaitUntil:
    """Wait until ``condition()`` returns a truthy value; evaluate to that value.

    >>> paid = yield WaitUntil("invoice-paid", lambda: api.is_paid(inv), every="10m")

    When the condition is falsy the flow parks and is due again after *every*.
    With *timeout*, the flow expires when the condition is not met in time.
    """

    name: str = attrs.field(validator=_valid_name)
    condition: Callable[[], Any] = attrs.field(validator=_callable, repr=False)
    every: timedelta = attrs.field(
        default=timedelta(minutes=1),
        kw_only=True,
        converter=_wait_every,
    )
    timeout: timedelta | None = attrs.field(
        default=None,
        kw_only=True,
        converter=_wait_timeout,
    )

    kind = "wait_until"


@attrs.frozen
class Sleep:
    """A durable timer: ``yield Sleep("cool-off", "2d")`` parks the flow for two days."""

    name: str = attrs.field(validator=_valid_name)
    duration: timedelta = attrs.field(converter=_sleep_duration)

    kind = "sleep"


Command = Step | Suspend | WaitUntil | Sleep
COMMAND_TYPES: tuple[type, ...] = (Step, Suspend, WaitUntil, Sleep)

#: Kinds of history records made by the determinism helpers ``ctx.now()`` & co.
VALUE_KINDS = ("now", "uuid4", "random")


def describe(kind: str, name: str) -> str:
    """How a command is named in messages: ``Step('charge-card')``, ``ctx.now()``."""
    if kind in VALUE_KINDS:
        return f"ctx.{kind}()"
    label = {"step": "Step", "suspend": "Suspend", "wait_until": "WaitUntil", "sleep": "Sleep"}
    return f"{label.get(kind, kind)}({name!r})"
