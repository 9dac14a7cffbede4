"""``@flow``, ``Flow``, ``FlowContext`` and the registry of flows by name."""

from __future__ import annotations

import inspect
import os
import random as _random
import threading
import uuid as _uuid
import warnings
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs

from .codec import remember_flow_module
from .commands import Command, check_name, unstorable
from .durations import Duration, to_duration
from .errors import FlowNotRegisteredError, InvalidTypeError, InvalidValueError
from .guards import MAX_RECOVERIES, check_max_recoveries, check_timeout
from .limits import Limit, check_limits
from .schedules import Schedule
from .starts import Debounce, Exclusive

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

    from .handle import FlowHandle
    from .publishing import Published
    from .results import FlowResult

R = TypeVar("R")
#: What ``ctx.streams`` holds where a stream was closed (a flow stepped by hand).
CLOSED = "<closed>"
FlowBody = Callable[["FlowContext"], Generator[Command, Any, R]]


class _Driver(Protocol):
    """What a runner gives the context: replay state and recorded values."""

    @property
    def is_replaying(self) -> bool: ...

    def value(self, kind: str, make: Callable[[], Any]) -> Any: ...

    def set_custom_status(self, value: Any) -> None: ...


@attrs.define
class FlowContext:
    """What a flow body gets: ``ctx.input``, ``ctx.flow_id``, ``ctx.name``.

    Construct one directly to step a flow by hand in a unit test:

    >>> gen = onboarding(FlowContext(input={"email": "a@b.c"}, flow_id="t-1", name="onboarding"))
    >>> next(gen)
    Step(name='send-welcome', retry=None)
    """

    input: Any = None
    flow_id: str = "local"
    name: str = "local"
    _driver: _Driver | None = attrs.field(default=None, init=False, repr=False, eq=False)
    #: What a run's body publishes with its next write (``Hand`` sets it).
    _published: Published | None = attrs.field(default=None, init=False, repr=False, eq=False)
    #: The last value given to ``set_custom_status`` in this run (``None`` before).
    custom_status: Any = attrs.field(default=None, init=False, repr=False, eq=False)
    #: Outside a run (a flow stepped by hand): the events set and the values
    #: written to each stream (``CLOSED`` where it was closed).
    events: dict[str, Any] = attrs.field(factory=dict, init=False, repr=False, eq=False)
    streams: dict[str, list[Any]] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @property
    def is_replaying(self) -> bool:
        """True while recorded commands are fed back (for logs that should not repeat)."""
        return self._driver is not None and self._driver.is_replaying

    def now(self) -> datetime:
        """The current UTC time, recorded the first time and the same on every replay."""
        make: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731
        if self._driver is None:
            return make()
        result: datetime = self._driver.value("now", make)
        return result

    def uuid4(self) -> _uuid.UUID:
        """A random version-4 UUID, recorded and the same on every replay."""
        if self._driver is None:
            return _uuid.uuid4()
        result: _uuid.UUID = self._driver.value("uuid4", _uuid.uuid4)
        return result

    def random(self) -> float:
        """A float in [0, 1), recorded and the same on every replay."""
        if self._driver is None:
            return _random.random()
        result: float = self._driver.value("random", _random.random)
        return result

    def set_custom_status(self, value: Any) -> None:
        """Publish a small JSON value (progress for a UI), stored with the flow's next
        write and readable as ``get_flow(id).custom_status`` without running the flow.

        >>> ctx.set_custom_status({"done": 3, "of": 10})

        ``SerializationError`` (here, at the call) for a value JSON cannot hold.
        Outside a run (a flow stepped by hand) the value is kept on the context as
        ``ctx.custom_status``.
        """
        if self._driver is None:
            self.custom_status = value
            return
        self._driver.set_custom_status(value)
        self.custom_status = value

    def set_event(self, key: str, value: Any) -> None:
        """Publish *value* (JSON) as this flow's event *key*, stored with the flow's
        next write (the last value set wins): ``get_event(flow_id, key, store=...)``
        reads it from anywhere. Outside a run it is kept in ``ctx.events``."""
        self._publish("event", key, value)

    def write_stream(self, key: str, value: Any) -> None:
        """Add *value* (JSON) to this flow's stream *key*, stored with the flow's next
        write, once (a replay writes nothing again): ``read_stream`` iterates it."""
        self._publish("stream", key, value)

    def close_stream(self, key: str) -> None:
        """End this flow's stream *key*: ``read_stream`` stops at it."""
        self._publish("close", key, None)

    def _publish(self, kind: str, key: str, value: Any) -> None:
        if self._published is not None:
            self._published.add(kind, key, value, self.flow_id)
        elif self._driver is not None:
            return  # a replay check (``replay.py``) writes nothing
        elif kind == "event":
            self.events[key] = value
        else:
            self.streams.setdefault(key, []).append(value if kind == "stream" else CLOSED)


@attrs.frozen
class Flow(Generic[R]):
    """A named, registered flow. Call it with a ``FlowContext`` to get the raw
    generator; ``.run(...)`` runs it durably on a store."""

    name: str
    fn: FlowBody[R] = attrs.field(repr=False)
    #: When the flow starts by itself (``@flow(..., schedule=Schedule(...))``).
    schedule: Schedule | None = attrs.field(default=None, kw_only=True)
    #: Flow control (``@flow(..., exclusive=..., debounce=...)``): how starts of
    #: this flow are let through.
    exclusive: Exclusive | None = attrs.field(default=None, kw_only=True, repr=False)
    debounce: Debounce | None = attrs.field(default=None, kw_only=True, repr=False)
    #: ``@flow(..., limits=[...])``: the ``Limit``s a run of this flow holds a slot of.
    limits: tuple[Limit, ...] = attrs.field(default=(), kw_only=True, repr=False)
    #: ``@flow(..., retention="30d")``: how long a finished flow of this name is
    #: kept before a worker deletes it (``crux_gen.retention``); ``None``: forever.
    retention: timedelta | None = attrs.field(default=None, kw_only=True, repr=False)
    #: ``@flow(..., timeout="1h")``: a flow unfinished that long after it was created
    #: is cancelled (``crux_gen.guards``); ``None``: never.
    timeout: timedelta | None = attrs.field(default=None, kw_only=True, repr=False)
    #: ``@flow(..., max_recoveries=5)``: lapsed leases in a row with nothing recorded
    #: before a claim ends the flow with ``PoisonFlowError``.
    max_recoveries: int = attrs.field(default=MAX_RECOVERIES, kw_only=True, repr=False)

    def __call__(self, ctx: FlowContext) -> Generator[Command, Any, R]:
        return self.fn(ctx)

    def run(
        self,
        *,
        input: Any = None,
        store: Store | str | os.PathLike[str],
        flow_id: str | None = None,
        resume: str | None = None,
        concurrency: int | None = None,
    ) -> FlowResult:
        """Start (or, with ``resume=flow_id``, continue) this flow in the caller's thread
        until it suspends or finishes.

        >>> r = onboarding.run(input={"email": "user@example.com"}, store=SQLiteStore("crux.db"))
        >>> r.status, r.waiting_for
        ('suspended', 'email-verified')

        *store* may also be a SQLite file's path (made if missing) or a
        ``postgresql://`` URL: that store is opened for this call and closed after
        (pass a store object to keep its connections between calls).

        *concurrency* is how many steps of one ``All`` run at the same time (threads;
        default 8). Child flows it starts run in this thread too, each until it
        suspends or finishes.
        """
        if flow_id is not None:
            check_flow_id(flow_id)
        if resume is not None:
            check_flow_id(resume)
        return RUNNER[0](
            self, store=store, input=input, flow_id=flow_id, resume=resume, concurrency=concurrency
        )

    def start(
        self,
        *,
        input: Any = None,
        store: Store | str | os.PathLike[str],
        flow_id: str | None = None,
        priority: int = 0,
    ) -> FlowHandle:
        """Create this flow ``"pending"`` (due now) without running it; a worker
        runs it. Returns a ``FlowHandle`` (``.flow_id``, ``.info()``, ``.result()``).

        >>> h = onboarding.start(input={"email": "user@example.com"}, store=store, priority=5)
        >>> Worker(store=store).run_once()     # takes higher priority first

        Idempotent by *flow_id*, as ``run``: an id stored already for this flow
        creates nothing and returns its handle (another flow's name:
        ``FlowNameConflictError``). *input* and *flow_id* are checked as ``run``
        checks them; *priority* is an ``int`` (higher is taken first among due
        flows; default 0), else ``InvalidTypeError`` / ``InvalidValueError``.
        The flow's ``Exclusive`` and ``Debounce`` apply (see ``@flow``).
        """
        return STARTER[0](self, store=store, input=input, flow_id=flow_id, priority=priority)


class _StartFlow(Protocol):
    def __call__(
        self,
        flow: Flow[Any],
        *,
        store: Store | str | os.PathLike[str],
        input: Any = None,
        flow_id: str | None = None,
        priority: int = 0,
    ) -> FlowHandle: ...


def _no_starter(flow: Flow[Any], **kwargs: Any) -> FlowHandle:
    raise RuntimeError("crux_gen.starting is not imported")  # pragma: no cover - import crux_gen


#: What ``Flow.start`` calls: ``crux_gen.starting`` puts its ``start_flow`` here.
STARTER: list[_StartFlow] = [_no_starter]


class _RunFlow(Protocol):
    def __call__(
        self,
        flow: Flow[Any],
        *,
        store: Store | str | os.PathLike[str],
        input: Any = None,
        flow_id: str | None = None,
        resume: str | None = None,
        concurrency: int | None = None,
    ) -> FlowResult: ...


def _no_runner(flow: Flow[Any], **kwargs: Any) -> FlowResult:
    raise RuntimeError("crux_gen.runner is not imported")  # pragma: no cover - import crux_gen


#: What ``Flow.run`` calls: ``crux_gen.runner`` puts its ``run_flow`` here when it
#: is imported (``import crux_gen`` does), so this module needs no import of it.
RUNNER: list[_RunFlow] = [_no_runner]


class FlowReplacedWarning(UserWarning):
    """A flow name was registered again for another function (``module.qualname``):
    the later one replaces the earlier, and every stored flow of that name resumes
    with it. The same function registered again (its module re-imported or
    reloaded, a notebook cell run again) is not warned about."""


def _function_name(fn: object) -> str:
    """``module.qualname`` of *fn*, as the warning names it."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', None) or repr(fn)}"


class Registry:
    """Flows by name. ``@flow`` registers into the default registry."""

    def __init__(self) -> None:
        self._flows: dict[str, Flow[Any]] = {}
        self._lock = threading.Lock()

    def add(self, flow: Flow[Any]) -> None:
        """Register *flow* under its name, replacing an earlier flow of that name;
        a ``FlowReplacedWarning`` names both functions when they differ."""
        with self._lock:
            earlier = self._flows.get(flow.name)
            self._flows[flow.name] = flow
        if earlier is not None:
            before, now = _function_name(earlier.fn), _function_name(flow.fn)
            if before != now:
                warnings.warn(
                    FlowReplacedWarning(
                        f"flow name {flow.name!r} was registered for {before} and now for "
                        f"{now}: the later replaces the earlier, and stored flows named "
                        f"{flow.name!r} resume with it; give one of them another name"
                    ),
                    stacklevel=3,
                )

    def get(self, name: str, *, flow_id: str | None = None, hint: str | None = None) -> Flow[Any]:
        """The flow registered as *name*; ``FlowNotRegisteredError`` naming it if none
        (with *hint* as the fix it gives, see :class:`FlowNotRegisteredError`)."""
        try:
            return self._flows[name]
        except KeyError:
            raise FlowNotRegisteredError(name, flow_id, hint=hint) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._flows)

    def __contains__(self, name: object) -> bool:
        return name in self._flows


default_registry = Registry()


def flow(
    name: str,
    *,
    registry: Registry | None = None,
    schedule: Schedule | None = None,
    exclusive: Exclusive | None = None,
    debounce: Debounce | None = None,
    limits: Sequence[Limit] | None = None,
    retention: Duration | None = None,
    timeout: Duration | None = None,
    max_recoveries: int = MAX_RECOVERIES,
) -> Callable[[FlowBody[R]], Flow[R]]:
    """Make a generator function ``fn(ctx)`` a registered :class:`Flow` named *name*.

    >>> @flow("onboarding")
    ... def onboarding(ctx):
    ...     yield Step("send-welcome", lambda: send_welcome(ctx.input["email"]))

    Registering a name again replaces the earlier flow. With *schedule*, every
    worker that registers the flow starts it at each tick (``crux_gen.schedules``).
    *exclusive* (an ``Exclusive``) and *debounce* (a ``Debounce``) control how its
    starts are let through (``Flow.start``, ``Flow.run``). *limits* (``Limit``s)
    bound how many runs of it a worker takes at once and how often, across every
    worker on the store; a second ``Limit`` of one name with other settings is a
    ``ValueError``. *retention* (``"30d"``, a ``timedelta``, seconds; ``None``,
    the default, keeps them forever): workers delete the finished flows of this
    name last updated longer ago than that (``crux_gen.retention``). *timeout*
    (``"1h"``) and *max_recoveries* (an ``int`` >= 0): see ``crux_gen.guards``.
    """
    check_name(name, what="flow name")
    held = check_limits(limits, what=f"@flow({name!r})")
    keep = check_retention(name, retention)
    limit, tries = check_timeout(name, timeout), check_max_recoveries(name, max_recoveries)
    _check_kinds(name, schedule, exclusive, debounce)

    def decorate(fn: FlowBody[R]) -> Flow[R]:
        check_flow_function(name, fn)
        made = Flow(
            name,
            fn,
            schedule=schedule,
            exclusive=exclusive,
            debounce=debounce,
            limits=held,
            retention=keep,
            timeout=limit,
            max_recoveries=tries,
        )
        (registry or default_registry).add(made)
        remember_flow_module(fn)  # replay rebuilds the error classes it defines
        return made

    return decorate


def _check_kinds(name: str, schedule: object, exclusive: object, debounce: object) -> None:
    """``@flow``'s *schedule*, *exclusive* and *debounce*: ``None`` or their class."""
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InvalidTypeError(
            f"flow {name!r} schedule", schedule, "is not a Schedule; give Schedule('0 2 * * *')"
        )
    for what, value, kind in (
        ("exclusive", exclusive, Exclusive),
        ("debounce", debounce, Debounce),
    ):
        if value is not None and not isinstance(value, kind):
            raise InvalidTypeError(
                f"@flow({name!r}) {what}",
                value,
                f"is not a {kind.__name__}; give {kind.__name__}(...)",
            )


def check_retention(name: str, value: object) -> timedelta | None:
    """``@flow(name, retention=value)`` checked: ``None``, or a duration above zero
    (``InvalidValueError`` naming the flow and the bad value)."""
    if value is None:
        return None
    what = f"@flow({name!r}) retention"
    below = isinstance(value, timedelta) and value <= timedelta(0)
    if below or (isinstance(value, int | float) and not isinstance(value, bool) and value <= 0):
        raise InvalidValueError(what, value, _RETENTION_ABOVE_ZERO)
    keep = to_duration(value, what=what)
    if keep <= timedelta(0):  # "0s"
        raise InvalidValueError(what, value, _RETENTION_ABOVE_ZERO)
    return keep


_RETENTION_ABOVE_ZERO = (
    "is not above zero; give how long finished flows are kept, such as '30d' "
    "(or None to keep them forever)"
)


#: What every refusal of a flow function says to give instead.
FLOW_FUNCTION = "a generator function taking one argument, ctx (def f(ctx): ... yield Step(...))"


def check_flow_function(name: str, fn: object) -> None:
    """Refuse, at ``@flow``, a function the runner could not drive: not a generator
    function (a plain ``def`` without ``yield``, an ``async def``, not callable), or
    one that cannot be called with the one argument ``ctx`` (``def f()``, ``def f(ctx,
    x)``). ``InvalidTypeError`` names the flow, the function and what to give."""
    what = f"@flow({name!r}) function"
    shown = getattr(fn, "__qualname__", None) or fn
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidTypeError(
            what, shown, f"is an async def; crux_gen drives sync flows: give {FLOW_FUNCTION}"
        )
    if not inspect.isgeneratorfunction(fn):
        kind = "a function without yield" if callable(fn) else f"of type {type(fn).__name__}"
        raise InvalidTypeError(
            what, shown, f"is {kind}, not a generator function; give {FLOW_FUNCTION}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - a generator function has one
        return
    try:
        signature.bind(None)
    except TypeError:
        raise InvalidTypeError(
            what,
            shown,
            f"takes {signature}, so it cannot be called with ctx alone; give {FLOW_FUNCTION}",
        ) from None


def check_flow_id(value: object) -> str:
    """Return *value* if it can be a flow id, else raise naming it.

    >>> check_flow_id("7f3a0c")
    '7f3a0c'

    ``InvalidTypeError`` (a ``TypeError``) for anything but a ``str`` (an int, bytes,
    ``None``); ``InvalidValueError`` (a ``ValueError``) for the empty string, or one
    holding a character some store cannot keep (a NUL, a lone surrogate). Nothing
    is stored before this check passes.
    """
    if not isinstance(value, str):
        raise InvalidTypeError(
            "flow id", value, f"is a {type(value).__name__}, not a str; give the id as a str"
        )
    if not value:
        raise InvalidValueError("flow id", value, "is empty; give a non-empty str")
    problem = unstorable(value)
    if problem is not None:
        raise InvalidValueError("flow id", value, problem)
    return value
