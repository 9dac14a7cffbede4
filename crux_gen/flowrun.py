"""One run of one flow in an executor's hands, with no IO of its own.

A :class:`FlowRun` holds the flow's interpreter and context, the decision in hand
with the records it emitted, and the write it buffers. ``feed`` advances it with
an event (a call's result, a timer, signals that arrived, children that settled)
through the pure handlers (``handlers.py``) until it needs the executor: a write,
a call after its guard, a timer, children to adopt. The executor (``executor.py``)
does that IO and reports each outcome back (``settle``).
"""

from __future__ import annotations

import heapq
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from . import codec, observe
from .clock import Clock, when
from .codec import ErrorInfo
from .commands import COMMAND_TYPES, All, Step, describe
from .durations import format_duration
from .effects import (
    DURABLE,
    Adopt,
    Arrived,
    Call,
    CancelFlow,
    Effect,
    Event,
    Finish,
    NewRun,
    Park,
    Quiet,
    Record,
    Refused,
    Resolve,
    StartChild,
    Take,
    Throw,
    Timer,
    View,
)
from .errors import SerializationError
from .flow import Flow, FlowContext
from .guards import parked_wake, stopper
from .handlers import HANDLERS
from .interpreter import Failed, Finished, Interpreter, RunAll
from .publishing import step_write
from .records import (
    COMPLETED,
    PENDING,
    CommitOutcome,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from .results import FlowResult
from .status import Status

log = logging.getLogger("crux_gen")

_RUNNING = Status.RUNNING.value


class ParkingWarning(UserWarning):
    """A flow yielded a command from a ``finally``/``with`` block while it was parked."""


class FlowRun:
    """One run of one flow by the holder of its lease (*owner*); *parent* is the
    run that adopted it (its end settles the parent's wait)."""

    def __init__(
        self,
        flow: Flow[Any],
        stored: StoredFlow,
        owner: str,
        clock: Clock,
        *,
        parent: FlowRun | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.flow = flow
        self.flow_id = stored.id
        self.owner = owner
        self.clock = clock
        self.parent = parent
        self.should_stop, self.timeout_at = stopper(should_stop, flow.timeout, stored, clock)
        self.status = stored.status  # as stored: a claim changes no status
        # The write in the making.
        self.records: dict[int, StoredRecord] = {}
        self.updates: list[SignalUpdate] = []
        self.custom: str | None = None  # set since the last write (JSON text)
        self.start: StartChild | None = None
        self.end: dict[str, Any] | None = None  # a park's, an end's or a next run's fields
        self.durable = False  # a record in it is a call's outcome (a step's result)
        self._ahead = False  # the write in flight carries the records ahead of a park
        # What the decision in hand asked for, carried out after the write.
        self.calls: list[Call] = []
        self.timers: dict[int, float] = {}  # position (-1: the decision) -> when
        self.new_timers: list[int] = []
        self.adopt: dict[str, Flow[Any]] = {}
        self.cancels: list[CancelFlow] = []
        self.in_flight = 0  # calls submitted, not answered
        self.step_parts: set[str] = set()  # steps holding a limit's slot (``steplimits``)
        self.awaiting: set[str] = set()  # adopted children still running in the loop
        self.adopted: list[str] = []  # every child of the last adoption, for ``Settled``
        # How it ended.
        self.result: FlowResult | None = None
        self.released = False  # the store dropped the lease (parked, finished, cancelled)
        self.paused = False  # stopped at a command boundary (``should_stop``)
        self.continued: str | None = None  # ContinueAsNew: the next run's input
        self.following: FlowRun | None = None  # ... and the run that took over
        self.observed: Any = None  # an observer's own (its slice's span: ``observe.py``)
        # The decision in hand and the records it emitted or was replayed with.
        self.decision: Any = None
        self._handler: Callable[[Any, View, Event], list[Effect]] | None = None
        self.held: dict[int, StoredRecord] = {}
        self._advancing = False  # the body runs (ctx.now() & co. record)
        self.pending = Pending(s for s in stored.signals if s.state == PENDING)
        self._drain, self._peek = self.pending.drain, self.pending.peek  # (each view's)
        self.ctx = FlowContext(
            input=codec.decode_stored(
                stored.input, flow_id=stored.id, position=None, column="input"
            ),
            flow_id=stored.id,
            name=stored.name,
        )
        self.interp = Interpreter(
            flow.fn(self.ctx), stored.records, flow_id=stored.id, flow_name=stored.name
        )
        self.ctx._driver = self

    # -- what the context asks ---------------------------------------------------

    @property
    def is_replaying(self) -> bool:
        return self.interp.is_replaying

    def set_custom_status(self, value: Any) -> None:
        self.custom = codec.encode(value, what=f"the custom status of flow {self.flow_id!r}")

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        if not self._advancing:
            # Called by a step's (or condition's) own function: the step's result is
            # what gets recorded, so the value is fresh and takes no position.
            return self.clock.now() if kind == "now" else make()
        found, value = self.interp.recorded_value(kind)
        if found:
            return value
        made = self.clock.now() if kind == "now" else make()  # ctx.now() reads the store's clock
        now = self.clock.time()
        self.records[value] = StoredRecord(
            value, kind, kind, COMPLETED, result=codec.encode(made, what=f"ctx.{kind}()"),
            attempts=1, started_at=now, finished_at=now,
        )  # fmt: skip
        return made

    # -- advancing ---------------------------------------------------------------

    @property
    def outstanding(self) -> bool:
        """Whether the decision in hand waits for something asked of the executor."""
        return bool(
            self.calls or self.in_flight or self.timers or self.adopt or self.awaiting
            or self.end is not None or self.start is not None
        )  # fmt: skip

    @property
    def wants_round(self) -> bool:
        """Whether the executor has IO to do for this run in its next round."""
        if self.result is not None:
            return False
        return bool(
            self.paused or self.end is not None or self.start is not None or self.calls
            or self.adopt or self.cancels or self.new_timers or self.durable
        )  # fmt: skip

    def feed(self, event: Event) -> None:
        """Advance with *event* (``None`` at first) until the run needs the executor."""
        now = self.clock.time()
        while self.result is None:
            if self.decision is None:
                if not self._next_decision():
                    return
                event = None
            assert self._handler is not None
            quiet = type(event) is Quiet
            self._apply(self._handler(self.decision, self._view(now), event), now)
            event = None
            if self.decision is None:
                continue  # resolved: the body goes on
            if self.outstanding:
                return
            if quiet:
                raise RuntimeError(f"the handler of {self.decision!r} stalled")
            event = Quiet()

    def keep(self, event: Event) -> None:
        """A call's result that came in after the run was cut short: only the
        records it gives are kept (to be written); the flow does not go on."""
        if self.decision is None or self._handler is None:
            return
        for effect in self._handler(self.decision, self._view(self.clock.time()), event):
            if type(effect) is Record:
                record = effect.record
                self.records[record.position] = self.held[record.position] = record

    def _view(self, now: float) -> View:
        held = self.held
        record = held.get(self.decision.position)
        return View(self.flow_id, now, record, self._drain, self._peek, records=held)

    def _next_decision(self) -> bool:
        """The body's next live decision into hand; ``False`` when the run ends
        (finished, failed, or stopping at this command boundary)."""
        self._advancing = True
        try:
            decision = self.interp.next_decision()
        finally:
            self._advancing = False
        if isinstance(decision, Finished):
            self.end = _finished(decision.value, self.flow_id)
            return False
        if isinstance(decision, Failed):
            error = ErrorInfo.from_exception(decision.exception).encode()
            self.end = {"status": Status.FAILED.value, "error": error}
            return False
        if self.should_stop is not None and self.should_stop():
            self.paused = True
            return False
        self.decision = decision
        self._handler = HANDLERS[decision.__class__]
        if isinstance(decision, RunAll):
            self.held = {r.position: r for r in decision.records or ()}
        else:
            record = getattr(decision, "record", None)
            self.held = {} if record is None else {record.position: record}
        return True

    def _apply(self, effects: list[Effect], now: float) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Record:
                record = effect.record  # type: ignore[union-attr]
                self.records[record.position] = self.held[record.position] = record
                if effect.write == DURABLE:  # type: ignore[union-attr]
                    self.durable = True
            elif kind is Call:
                self.calls.append(effect)  # type: ignore[arg-type]
            elif kind is Resolve:
                self.interp.resolve(effect.value)  # type: ignore[union-attr]
                self.decision = None
            elif kind is Throw:
                self.interp.fail(effect.exc)  # type: ignore[union-attr]
                self.decision = None
            elif kind is Take:
                self.updates.append(effect.update)  # type: ignore[union-attr]
                if effect.warning is not None:  # type: ignore[union-attr]
                    log.warning("%s", effect.warning)  # type: ignore[union-attr]
            elif kind is Timer:
                self._timer(effect, now)  # type: ignore[arg-type]
            elif kind is StartChild:
                record = effect.record  # type: ignore[union-attr]
                self.records[record.position] = self.held[record.position] = record
                self.start = effect  # type: ignore[assignment]
            elif kind is Adopt:
                self.adopt[effect.flow_id] = effect.flow  # type: ignore[union-attr]
            elif kind is CancelFlow:
                self.cancels.append(effect)  # type: ignore[arg-type]
            else:
                self.end = _end_fields(effect, self.timeout_at)  # type: ignore[arg-type]

    def _timer(self, timer: Timer, now: float) -> None:
        """A short retry backoff: the run stays in hand until *timer* runs out."""
        _log_retry(self, timer, now)
        self.timers[timer.position] = timer.at
        self.new_timers.append(timer.position)

    # -- the write and its outcome -------------------------------------------------

    def write(self) -> Write | None:
        """What this run writes in the executor's round, or ``None``: nothing."""
        fields = self.end or {}
        custom = self.custom
        if len(self.records) > 1:  # in position order, as the store appends them
            self.records = dict(sorted(self.records.items()))
        if self.durable and (fields.get("wait_signal") or fields.get("wait_signals")):
            # A park that signals may bounce (nothing written) must not hold back a
            # step's result: a crash after the bounce would run the step again. The
            # records before the wait go first; the wait's own go with the park.
            assert self.decision is not None
            wait = self.decision.position
            ahead = tuple(r for p, r in self.records.items() if p < wait)
            if ahead:
                self._ahead = True
                return Write(ahead)
        children = _traced(self, self.start.children if self.start is not None else ())
        if fields or self.updates or custom is not None or children:
            return Write(
                records=tuple(self.records.values()),
                signals=tuple(self.updates),
                custom_status=custom,
                children=children,
                **fields,
            )
        if self.records:  # a step's commit, the hot path (with what the body published)
            return step_write(tuple(self.records.values()), self.ctx._published)
        return None

    def settle(self, write: Write, outcome: CommitOutcome) -> Event:
        """*write* was answered with *outcome*: the event it gives the run
        (``Arrived``: nothing was written), or ``None``."""
        if outcome.signals:  # a park or an expiry found signals it waits for
            self.pending.add(outcome.signals)
            self.end = None
            return Arrived()
        self.durable = False
        if self._ahead:  # the records ahead of a park: the park is written next
            self._ahead = False
            for record in write.records:
                del self.records[record.position]
            if outcome.status != _RUNNING:
                self.cancelled(outcome)
            self.status = outcome.status
            return None
        self.records.clear()
        self.updates.clear()
        self.start = None
        if write.custom_status is not None and self.custom is write.custom_status:
            self.custom = None  # (a step on another thread may have set a newer one)
        target = write.status or _RUNNING
        if outcome.status != target:  # cancelled meanwhile; the store dropped the lease
            self.cancelled(outcome)
            return None
        self.status = target
        end, self.end = self.end, None
        if end is None:
            return None
        if "continue_as_new" in end:
            self.continued = end["continue_as_new"]
            return None
        self.released = True
        self.result = FlowResult(
            self.flow_id,
            Status(target),
            value=codec.decode(end.get("result")),
            error=ErrorInfo.decode(end.get("error")),
            waiting_for=end.get("waiting_for"),
            wake_at=when(end.get("wake_at")),
        )
        return None

    def refused(self, exc: Exception) -> Event:
        """The store refused the children this write starts: nothing was written;
        the calls and adoptions that were to follow it are dropped."""
        start, self.start = self.start, None
        self.calls.clear()
        self.adopt.clear()
        return Refused(exc, start)

    def cancelled(self, outcome: CommitOutcome) -> None:
        """The flow was cancelled or paused meanwhile (the store dropped the lease,
        except for a pause seen by a lease check: the run lets go of it)."""
        self.released = outcome.status != Status.PAUSED
        self.calls.clear()
        self.adopt.clear()
        self.result = FlowResult(self.flow_id, outcome.status, cancel_reason=outcome.cancel_reason)


class Pending:
    """A run's pending signals by name, each a heap by id (first in, first out), so
    a flow draining thousands of queued signals takes each in O(log n)."""

    def __init__(self, signals: Iterable[StoredSignal]) -> None:
        self._by_name: dict[str, list[tuple[int, StoredSignal]]] = {}
        self._seen: set[int] = set()
        self.add(signals)

    def add(self, signals: Iterable[StoredSignal]) -> None:
        for signal in signals:
            if signal.id not in self._seen:
                self._seen.add(signal.id)
                heapq.heappush(self._by_name.setdefault(signal.name, []), (signal.id, signal))

    def drain(self, name: str) -> Iterator[StoredSignal]:
        """The pending signals named *name*, oldest first, each taken off the list
        as it is drawn (a handler answers each with a ``Take``)."""
        waiting = self._by_name.get(name)
        while waiting:
            yield heapq.heappop(waiting)[1]

    def peek(self, name: str) -> StoredSignal | None:
        waiting = self._by_name.get(name)
        return waiting[0][1] if waiting else None


def close_body(run: FlowRun) -> None:
    """Close *run*'s body (its ``finally`` blocks run), warning of the commands it
    yields meanwhile (they are not run)."""
    for command in run.interp.close():
        what = (
            describe(command.kind, command.name)
            if isinstance(command, COMMAND_TYPES)
            else f"{type(command).__name__} (not a command)"
        )
        warnings.warn(
            f"flow {run.flow_id!r} ({run.flow.name}) yielded {what} while parking "
            "(from a finally or with block); it was not run. Put side effects in steps, "
            "compensation in except blocks",
            ParkingWarning,
            stacklevel=3,
        )


def _traced(run: FlowRun, children: tuple[NewChild, ...]) -> tuple[NewChild, ...]:
    """*children*, each carrying the context of *run*'s slice (instrumented: their
    slices are then children of its span)."""
    if not children or run.observed is None:
        return children
    trace = observe.slice_trace(run)
    return tuple(child._replace(trace=trace) for child in children)


def _log_retry(run: FlowRun, timer: Timer, now: float) -> None:
    """A step of *run* failed and is tried again when *timer* runs out."""
    if not log.isEnabledFor(logging.INFO):
        return
    decision = run.decision
    position = decision.position if timer.position < 0 else timer.position
    command = decision.command
    if isinstance(command, All):
        command = command.commands[position - decision.position - 1]
    assert isinstance(command, Step)
    retry = command.retry
    tried = run.held[position].attempts
    log.info(
        "flow %s: step %r failed (try %d of %d), retrying in %s",
        run.flow_id, command.name, tried, retry.attempts if retry else 1,
        format_duration(timedelta(seconds=max(0.0, timer.at - now))),
        extra={
            "flow_id": run.flow_id, "flow_name": run.flow.name,
            "step": command.name, "attempt": tried,
        },
    )  # fmt: skip


def _finished(value: Any, flow_id: str) -> dict[str, Any]:
    """The fields of the write that ends a flow that returned *value*."""
    try:
        result = codec.encode(value, what=f"the return value of flow {flow_id!r}")
    except SerializationError as exc:
        return {"status": Status.FAILED.value, "error": ErrorInfo.from_exception(exc).encode()}
    return {"status": Status.COMPLETED.value, "result": result}


def _end_fields(effect: Park | Finish | NewRun, timeout_at: float | None) -> dict[str, Any]:
    """The fields of the write that parks, ends or continues the flow (a park of a
    flow that times out at *timeout_at* is due then at the latest)."""
    if type(effect) is Park:
        return {
            "status": Status.SUSPENDED.value,
            "waiting_for": effect.waiting_for,
            "wait_kind": effect.kind,
            "wake_at": parked_wake(effect.wake_at, timeout_at),
            "deadline": effect.deadline,
            "wait_signal": effect.wait_signal,
            "wait_children": effect.children,
            "wait_signals": effect.signals,
        }
    if type(effect) is Finish:
        return {
            "status": effect.status.value,
            "waiting_for": effect.waiting_for,
            "wait_kind": effect.kind,
            "wait_signal": effect.wait_signal,
        }
    assert type(effect) is NewRun
    return {"continue_as_new": effect.input}
