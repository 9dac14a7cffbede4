"""Test flows in milliseconds: :class:`FlowHarness` runs a flow on a ``MemoryStore``
with a fake clock, so a 24-hour timeout is one ``advance("25h")`` away.

    from crux_gen.testing import FlowHarness

    def test_unverified_users_expire_after_a_day():
        h = FlowHarness(onboarding, input={"email": "a@b.c", "name": "Ada"},
                        fakes={"send-welcome": None})
        h.run()
        assert h.status == "suspended" and h.waiting_for == "email-verified"
        h.advance("25h")
        h.run()
        assert h.status == "expired"
        assert h.steps_called == ["send-welcome"]

With pytest, the fixtures ``crux_clock``, ``crux_store`` and ``crux_harness`` come
from :mod:`crux_gen.pytest_plugin`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .clock import Clock, FakeClock
from .codec import ErrorInfo
from .commands import All, Child, Command, Step, WaitUntil
from .commands import Any as AnyOf
from .control import cancel_flow, get_flow, pause_flow, signal_flow, unpause_flow
from .durations import Duration
from .errors import FlowBusyError, FlowNotFoundError, InvalidTypeError, InvalidValueError
from .flow import Flow, FlowContext, check_flow_id
from .handle import FlowHandle
from .limits import Blocked, make_gate
from .results import FlowInfo, FlowResult
from .runner import new_flow_id
from .status import Status

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

__all__ = ["FlowHarness"]

#: The lease owner a harness takes a flow's limits under, before it runs it.
HARNESS = "flow-harness"


class FlowHarness:
    """Run *flow* in a test: on a ``MemoryStore`` (or *store*) with a ``FakeClock``
    (or *clock*), recording which steps ran and replacing some by fakes.

    >>> h = FlowHarness(onboarding, input={"email": "a@b.c"},
    ...                 fakes={"first-week-plan": lambda: "a plan"})
    >>> h.run().status
    'suspended'
    >>> h.signal("email-verified", {"verified_at": "2026-11-24T10:00:00Z"})
    >>> h.run().value
    {...}

    *fakes* maps a ``Step`` (or ``WaitUntil``) name to what runs instead of its
    function: a zero-argument callable (called), an exception instance or class
    (raised), or any other value (returned). The flow's code is otherwise
    unchanged; ``ctx.now()`` reads the fake clock.
    """

    def __init__(
        self,
        flow: Flow[Any],
        *,
        input: Any = None,
        fakes: Mapping[str, Any] | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        flow_id: str | None = None,
    ) -> None:
        if not isinstance(flow, Flow):
            raise InvalidTypeError(
                "FlowHarness flow",
                flow,
                "is not a Flow; FlowHarness needs a Flow: a function decorated with @flow(name)",
            )
        if fakes is not None and not isinstance(fakes, Mapping):
            raise InvalidTypeError(
                "FlowHarness fakes", fakes, "is not a mapping; give a dict of step name -> fake"
            )
        from crux_gen.stores.base import Store as StoreProtocol
        from crux_gen.stores.caps import missing_members

        if store is not None and missing_members(store, StoreProtocol):
            raise InvalidTypeError(
                "FlowHarness store",
                store,
                "is not a store; give MemoryStore() or SQLiteStore(path)",
            )
        if clock is not None and not callable(getattr(clock, "time", None)):
            raise InvalidTypeError(
                "FlowHarness clock", clock, "is not a clock; give FakeClock() (or leave it out)"
            )
        if flow_id is not None:
            check_flow_id(flow_id)
        if store is None:
            from crux_gen.stores.memory import MemoryStore

            clock = clock if clock is not None else FakeClock()
            store = MemoryStore(clock=clock)
        elif clock is not None and clock is not store.clock:
            raise InvalidValueError(
                "FlowHarness clock",
                clock,
                "is not the clock of the store given; give a store or a clock, or a store "
                "built on that clock",
            )
        self.flow = flow
        self.input = input
        self.fakes: dict[str, Any] = dict(fakes or {})
        self.store: Store = store
        self.clock: Clock = store.clock
        self.flow_id: str = flow_id or new_flow_id()
        #: Names of the step functions (or their fakes) actually called, in order,
        #: counting repeats and retries; replayed steps are not called.
        self.steps_called: list[str] = []
        #: The ``FlowResult`` of the last :meth:`run`, ``None`` before the first.
        self.result: FlowResult | None = None
        self._flow: Flow[Any] = self._wrapped(flow)

    # -- driving -----------------------------------------------------------------

    def run(self) -> FlowResult:
        """Start the flow (the first time) or resume it, until it suspends or finishes.

        A flow with a ``Debounce`` is started ``"pending"``, due after its period
        (as ``Flow.run`` does): ``run`` leaves it pending until the fake clock
        reaches its due time (``advance``), then runs it."""
        stored = self._stored()
        if (
            self.flow.debounce is not None
            and stored is not None
            and stored.status == Status.PENDING
            and stored.wake_at is not None
            and stored.wake_at > self.clock.now()
        ):
            self.result = FlowResult(stored.flow_id, stored.status, wake_at=stored.wake_at)
            return self.result
        if self.flow.limits and not self._take_limits(stored):
            info = self.info  # blocked: left as it is, info().blocked_by names the limit
            self.result = FlowResult(info.flow_id, info.status, waiting_for=info.waiting_for)
            return self.result
        self.result = self._flow.run(input=self.input, store=self.store, flow_id=self.flow_id)
        return self.result

    def _take_limits(self, stored: FlowInfo | None) -> bool:
        """Take the flow's ``Limit``s in the store as a worker's claim does (a slot,
        a rate's turn); ``False`` when one blocks it. A flow not yet stored is
        started ``"pending"`` first; one that is not due runs as ``run`` runs it."""
        if stored is None:
            self._flow.start(input=self.input, store=self.store, flow_id=self.flow_id)
        elif stored.status.finished:
            return True
        gate = make_gate(lambda name: self.flow.limits)
        try:
            self.store.claim(self.flow_id, HARNESS, self.clock.time(), gate=gate)
        except Blocked:
            return False
        except FlowBusyError:
            return True  # not due: replayed as run replays it
        self.store.release(self.flow_id, HARNESS)  # the slot stays: the run's lease holds it
        return True

    def start(self, input: Any = None, *, priority: int = 0) -> FlowHandle:
        """Start the flow as ``Flow.start`` does, with *input* (its ``Exclusive`` and
        ``Debounce`` apply): a debounced start while the flow is pending replaces its
        input and moves its due time. The harness follows the flow the start
        stands for (``flow_id``, ``input``); the next :meth:`run` runs it if due.
        """
        if self._stored() is None:
            handle = self._flow.start(
                input=input, store=self.store, flow_id=self.flow_id, priority=priority
            )
        else:
            handle = self._flow.start(input=input, store=self.store, priority=priority)
        self.flow_id, self.input = handle.flow_id, input
        return handle

    def signal(self, name: str, payload: Any = None, *, key: str | None = None) -> bool:
        """Send signal *name* (as ``signal_flow``); the next :meth:`run` takes it.

        With *key* (as ``signal_flow``'s), a second signal carrying the same key
        stores nothing and ``False`` is returned: a webhook delivered twice.
        """
        return signal_flow(self.flow_id, name, payload, store=self.store, key=key)

    def advance(self, duration: Duration) -> datetime:
        """Move the fake clock forward (``"24h"``, seconds, a timedelta); the new time."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise InvalidTypeError(
                "FlowHarness clock",
                self.clock,
                "cannot advance; advance() needs a FakeClock (the default, or a store on one)",
            )
        moved: datetime = advance(duration)
        return moved

    def cancel(self, reason: str = "cancelled in a test") -> bool:
        """Cancel the flow (as ``cancel_flow``)."""
        return cancel_flow(self.flow_id, reason, store=self.store)

    def pause(self) -> bool:
        """Pause the flow (as ``pause_flow``): :meth:`run` returns it ``"paused"``,
        running nothing, until :meth:`unpause`."""
        return pause_flow(self.flow_id, store=self.store)

    def unpause(self) -> bool:
        """Send the paused flow back to what it was (as ``unpause_flow``)."""
        return unpause_flow(self.flow_id, store=self.store)

    def retry(self) -> None:
        """Make the failed, cancelled or expired flow due again from where it stopped
        (as ``retry_flow``); the next :meth:`run` runs it."""
        from crux_gen.stores.base import StoreAdmin

        if not isinstance(self.store, StoreAdmin):
            raise InvalidTypeError(
                "FlowHarness store",
                self.store,
                "has no retry_failed(); use a store that has one (MemoryStore, SQLiteStore)",
            )
        self.store.retry_failed(self.flow_id, self.clock.now().timestamp())

    # -- reading -----------------------------------------------------------------

    @property
    def info(self) -> FlowInfo:
        """The stored flow, its history and signals (as ``get_flow``)."""
        return get_flow(self.flow_id, store=self.store)

    def _stored(self) -> FlowInfo | None:
        try:
            return self.info
        except FlowNotFoundError:  # not started yet
            return None

    @property
    def status(self) -> Status | None:
        """The stored status; ``None`` before the first :meth:`run`."""
        info = self._stored()
        return None if info is None else info.status

    @property
    def value(self) -> Any:
        """The flow's return value once completed, else ``None``."""
        info = self._stored()
        return None if info is None else info.value

    @property
    def error(self) -> ErrorInfo | None:
        """Why the flow failed (type, message, traceback), else ``None``."""
        info = self._stored()
        return None if info is None else info.error

    @property
    def waiting_for(self) -> str | None:
        """The name of the command the flow is parked at, else ``None``."""
        info = self._stored()
        return None if info is None else info.waiting_for

    @property
    def custom_status(self) -> Any:
        """The flow's last ``ctx.set_custom_status`` value, else ``None``."""
        info = self._stored()
        return None if info is None else info.custom_status

    @property
    def children(self) -> tuple[str, ...]:
        """Ids of the child flows it started (``Child``), oldest first."""
        info = self._stored()
        return () if info is None else info.children

    @property
    def now(self) -> datetime:
        """The fake clock's time."""
        return self.clock.now()

    def __repr__(self) -> str:
        return f"FlowHarness({self.flow.name!r}, flow_id={self.flow_id!r}, status={self.status})"

    # -- the wrapped flow --------------------------------------------------------

    def _wrapped(self, flow: Flow[Any]) -> Flow[Any]:
        """*flow* under the same name, its commands passed through :meth:`_command`
        (child flows too: fakes and ``steps_called`` cover them)."""

        def body(ctx: FlowContext) -> Generator[Command, Any, Any]:
            return self._body(flow, ctx)

        return Flow(flow.name, body, exclusive=flow.exclusive, debounce=flow.debounce)

    def _body(self, flow: Flow[Any], ctx: FlowContext) -> Generator[Command, Any, Any]:
        """The flow's own generator, with Step and WaitUntil functions swapped for
        recording (and faking) ones before the interpreter sees them. Sends, throws
        and closes pass through, so the flow behaves exactly as when run directly."""
        inner = flow.fn(ctx)
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                command = inner.send(send) if throw is None else inner.throw(throw)
            except StopIteration as stop:
                return stop.value
            command = self._command(command)
            try:
                send, throw = (yield command), None
            except BaseException as exc:  # GeneratorExit too: the flow's finally blocks run
                send, throw = None, exc

    def _command(self, command: Any) -> Any:
        if isinstance(command, Step):
            return attrs.evolve(command, fn=self._stand_in(command.name, command.fn, True))
        if isinstance(command, WaitUntil):
            condition = self._stand_in(command.name, command.condition, False)
            return attrs.evolve(command, condition=condition)
        if isinstance(command, Child):
            return attrs.evolve(command, flow=self._wrapped(command.flow))
        if isinstance(command, All | AnyOf):
            return attrs.evolve(command, commands=[self._command(c) for c in command.commands])
        return command

    def _stand_in(self, name: str, fn: Callable[[], Any], is_step: bool) -> Callable[[], Any]:
        fake_given = name in self.fakes
        fake = self.fakes.get(name)

        def call() -> Any:
            if is_step:
                self.steps_called.append(name)
            if not fake_given:
                return fn()
            if isinstance(fake, BaseException) or (
                isinstance(fake, type) and issubclass(fake, BaseException)
            ):
                raise fake
            return fake() if callable(fake) else fake

        return call
