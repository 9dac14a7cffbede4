"""The commands a flow yields to the interpreter. Each is a frozen attrs class,
validated where it is written, so a bad duration fails at the ``yield`` line.

``Retry`` (a step's retry policy, :mod:`crux_gen.retry`) and the name checks
(:mod:`crux_gen.names`) live in modules of their own and are importable from here
too."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import attrs

from .durations import to_duration, to_optional_duration
from .errors import InvalidTypeError, InvalidValueError
from .limits import Limit, check_limits
from .names import check_name as check_name
from .names import unstorable as unstorable
from .retry import Backoff as Backoff
from .retry import Retry as Retry


def _valid_name(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    check_name(value, what=f"{type(instance).__name__} {attribute.name}")


def _callable(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if not callable(value):
        raise InvalidTypeError(
            f"{type(instance).__name__} {attribute.name}",
            value,
            "is not callable; give a zero-argument callable (a function or a lambda)",
        )


def _suspend_timeout(value: object) -> timedelta | None:
    return to_optional_duration(value, what="Suspend timeout")


def _wait_every(value: object) -> timedelta:
    return to_duration(value, what="WaitUntil every")


def _wait_timeout(value: object) -> timedelta | None:
    return to_optional_duration(value, what="WaitUntil timeout")


def _sleep_duration(value: object) -> timedelta:
    return to_duration(value, what="Sleep duration")


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
    fn: Callable[[], typing.Any] = attrs.field(validator=_callable, repr=False)
    retry: Retry | None = attrs.field(default=None, kw_only=True, converter=_retry)
    #: ``Step(..., limits=[...])``: the ``Limit``s whose slot the step function holds
    #: while it runs (each attempt takes one again).
    limits: tuple[Limit, ...] = attrs.field(default=(), kw_only=True, repr=False)

    kind = "step"

    def __init__(
        self,
        name: str,
        fn: Callable[[], typing.Any],
        *,
        retry: Retry | None = None,
        limits: Iterable[Limit] | None = None,
    ) -> None:
        # Written by hand (attrs keeps a class's own __init__), because a replay
        # builds one Step per recorded step: the same conversion and checks, in the
        # same order, as the fields declare, at half the cost of the generated one.
        if retry is not None:
            retry = _retry(retry)
        if (
            type(name) is not str
            or not name.isascii()
            or not name
            or name.isspace()
            or "\x00" in name
        ):
            check_name(name, what=f"{type(self).__name__} name")
        if not callable(fn):
            _callable(self, _STEP_FIELDS.fn, fn)
        _set_step_name(self, name)
        _set_step_fn(self, fn)
        _set_step_retry(self, retry)
        _set_step_limits(self, check_limits(limits, what=f"Step({name!r})") if limits else ())


_STEP_FIELDS = attrs.fields(Step)
# The slots' own setters: a frozen class refuses setattr, and these are the
# cheapest way past that (what attrs' generated __init__ does, minus a lookup).
_set_step_name = Step.__dict__["name"].__set__
_set_step_fn = Step.__dict__["fn"].__set__
_set_step_retry = Step.__dict__["retry"].__set__
_set_step_limits = Step.__dict__["limits"].__set__


@attrs.frozen
class Suspend:
    """Wait for the signal *name*; evaluate to its payload.

    >>> v = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")

    The payload is structured into *schema* (attrs class, dataclass, or any type
    cattrs can structure) when given. With *timeout*, the flow expires when no
    signal arrives in time, counted from when the flow first reached this command.
    """

    name: str = attrs.field(validator=_valid_name)
    schema: typing.Any = attrs.field(default=None, kw_only=True)
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
    condition: Callable[[], typing.Any] = attrs.field(validator=_callable, repr=False)
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


def _optional_sleep_duration(value: object) -> timedelta | None:
    return None if value is None else _sleep_duration(value)


def _sleep_until(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidTypeError(
            "Sleep until", value, "is not a datetime; give a timezone-aware datetime"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValueError(
            "Sleep until",
            value,
            "is a naive datetime; give a timezone-aware one (e.g. tzinfo=timezone.utc), "
            "so that every host reads the same moment",
        )
    return value


@attrs.frozen
class Sleep:
    """A durable timer: ``yield Sleep("cool-off", "2d")`` parks the flow for two days;
    ``yield Sleep("monday-9am", until=monday)`` until a timezone-aware moment (one
    already past resolves at once)."""

    name: str = attrs.field(validator=_valid_name)
    duration: timedelta | None = attrs.field(default=None, converter=_optional_sleep_duration)
    until: datetime | None = attrs.field(default=None, kw_only=True, converter=_sleep_until)

    kind = "sleep"

    def __attrs_post_init__(self) -> None:
        if (self.duration is None) == (self.until is None):
            raise InvalidValueError(
                f"Sleep {self.name!r}",
                (self.duration, self.until),
                "needs a duration or until=, exactly one of them: "
                'Sleep("nap", "2d") or Sleep("nap", until=datetime(..., tzinfo=timezone.utc))',
            )

    def wake_at(self, started: float) -> float:
        """When the timer is up, for a flow that first reached it at *started*."""
        if self.until is not None:
            return self.until.timestamp()
        assert self.duration is not None
        return started + self.duration.total_seconds()


def _is_flow(value: object) -> bool:
    return callable(getattr(value, "fn", None)) and isinstance(getattr(value, "name", None), str)


def _child_flow(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if not _is_flow(value):
        raise InvalidTypeError(
            "Child flow", value, "is not a Flow; give a function decorated with @flow"
        )


def _child_flow_id(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if value is not None:
        check_name(value, what="Child flow_id")


@attrs.frozen
class Child:
    """Start the flow *flow* as a child of this one and wait for it; evaluate to its
    return value (``ChildFlowError`` when it ends failed, expired or cancelled).

    >>> report = yield Child(build_report, input={"month": "2026-11"})

    The child gets a fresh unguessable id, or *flow_id*; on replay it is the same
    child, never a second one. The parent waits holding no process and is due
    again as soon as the child finishes.
    """

    flow: typing.Any = attrs.field(validator=_child_flow)
    input: typing.Any = attrs.field(default=None)
    flow_id: str | None = attrs.field(default=None, kw_only=True, validator=_child_flow_id)

    kind = "child"

    @property
    def name(self) -> str:
        """The child flow's name (what its history record is called)."""
        return str(self.flow.name)


def _branches(
    what: str, allowed: tuple[type, ...], names: str
) -> Callable[[object], tuple[typing.Any, ...]]:
    def convert(value: object) -> tuple[typing.Any, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise InvalidTypeError(what, value, f"is not a list; give a list of {names}")
        items = tuple(value)
        for item in items:
            if not isinstance(item, allowed):
                raise InvalidTypeError(f"{what} item", item, f"is not one of {names}")
        return items

    return convert


def _all_commands(value: object) -> tuple[typing.Any, ...]:
    return _branches("All commands", (Step, Child), "Step or Child")(value)


def branch_names(commands: tuple[typing.Any, ...]) -> str:
    """How a list of commands is named in history: ``step:a|child:report``."""
    return "|".join(f"{c.kind}:{c.name}" for c in commands)


@attrs.frozen
class All:
    """Run *commands* (``Step``s and ``Child``ren) at the same time; evaluate to their
    values in the given order.

    >>> sizes = yield All([Step(f"resize-{n}", partial(resize, n)) for n in names])

    Each result is recorded as it finishes. If any fails, the others still finish
    and are recorded, then the first failure in list order is thrown at the
    ``yield``. On replay only the unfinished branches run.
    """

    commands: tuple[Step | Child, ...] = attrs.field(converter=_all_commands)

    kind = "all"

    @property
    def name(self) -> str:
        return branch_names(self.commands)


def _any_commands(value: object) -> tuple[typing.Any, ...]:
    items = _branches("Any commands", (Suspend, Sleep, Child), "Suspend, Sleep or Child")(value)
    if not items:
        raise InvalidValueError("Any commands", value, "is empty; give at least one wait")
    for item in items:
        if isinstance(item, Suspend) and item.timeout is not None:
            raise InvalidValueError(
                f"Any branch Suspend({item.name!r}) timeout",
                item.timeout,
                'is not for use inside Any; add a Sleep branch: Any([Suspend("x"), '
                'Sleep("give-up", "24h")])',
            )
    return items


@attrs.frozen
class AnyResult:
    """Which branch of an ``Any`` happened first: its *index* in the list, its
    *name*, and its *value* (a signal's payload, ``None`` for a ``Sleep``, a
    child's return value)."""

    index: int
    name: str
    value: typing.Any


@attrs.frozen
class Any:
    """Wait for the first of *commands* (``Suspend``, ``Sleep``, ``Child``) to
    happen; evaluate to an :class:`AnyResult`.

    >>> winner = yield Any([Suspend("approved"), Suspend("rejected"), Sleep("give-up", "3d")])

    The first by the store's clock and signal order wins. The others are dropped:
    their signals stay pending, a losing child keeps running unless
    *cancel_losers*. ``Any([Suspend("x"), Sleep("t", "24h")])`` is a wait with a
    timeout that returns to the flow instead of ending it ``"expired"``.
    """

    commands: tuple[Suspend | Sleep | Child, ...] = attrs.field(converter=_any_commands)
    cancel_losers: bool = attrs.field(default=False, kw_only=True)

    kind = "any"

    @property
    def name(self) -> str:
        return branch_names(self.commands)


def _latest(instance: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError("Version latest", value, "is not an int; give an int of 1 or more")
    if value < 1:
        raise InvalidValueError("Version latest", value, "must be an int of 1 or more")


@attrs.frozen
class Version:
    """A change point in a flow's code: evaluate to *latest* for a flow that reaches
    it for the first time, to the recorded value on replay, and to ``0`` for a flow
    whose history passed this point before the line existed.

    >>> if (yield Version("new-pricing", latest=2)) >= 2: ...
    """

    name: str = attrs.field(validator=_valid_name)
    latest: int = attrs.field(kw_only=True, validator=_latest)

    kind = "version"


@attrs.frozen
class ContinueAsNew:
    """End this run and start the same flow id afresh with *input* and an empty
    history (an endless loop keeps a bounded history).

    >>> yield ContinueAsNew(input={"cursor": cursor})
    """

    input: typing.Any = attrs.field(default=None)

    kind = "continue_as_new"
    name = "continue-as-new"


Command = Step | Suspend | WaitUntil | Sleep | All | Any | Child | Version | ContinueAsNew
COMMAND_TYPES: tuple[type, ...] = (
    Step, Suspend, WaitUntil, Sleep, All, Any, Child, Version, ContinueAsNew,
)  # fmt: skip

#: Kinds of history records made by the determinism helpers ``ctx.now()`` & co.
VALUE_KINDS = ("now", "uuid4", "random")


def describe(kind: str, name: str) -> str:
    """How a command is named in messages: ``Step('charge-card')``, ``ctx.now()``."""
    if kind in VALUE_KINDS:
        return f"ctx.{kind}()"
    if kind in ("all", "any"):
        return f"{kind.capitalize()}([{', '.join(_branch_text(b) for b in name.split('|'))}])"
    if kind == "continue_as_new":
        return "ContinueAsNew(...)"
    return f"{_LABELS.get(kind, kind)}({name!r})"


_LABELS = {
    "step": "Step", "suspend": "Suspend", "wait_until": "WaitUntil", "sleep": "Sleep",
    "child": "Child", "version": "Version",
}  # fmt: skip


def _branch_text(branch: str) -> str:
    kind, _, name = branch.partition(":")
    return describe(kind, name) if name else branch
