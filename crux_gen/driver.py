"""The flow driver: one run of one flow by the holder of its lease.

It joins interpreter, store, clock and step functions: it executes each live
decision of the interpreter (calls a step function, takes a signal, checks a
condition or a timer), writes the outcome through the store, and feeds it back.
``runner.py`` claims flows and hands them to a :class:`Driver`.
"""

from __future__ import annotations

import heapq
import logging
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import when
from .codec import ErrorInfo
from .commands import COMMAND_TYPES, describe
from .durations import format_duration
from .errors import (
    SerializationError,
    SignalValidationError,
)
from .flow import Flow, FlowContext
from .interpreter import (
    AwaitCondition,
    AwaitSignal,
    AwaitTimer,
    Failed,
    Finished,
    Interpreter,
    RunStep,
)
from .records import (
    COMPLETED,
    CONSUMED,
    EXPIRED,
    FAILED,
    PENDING,
    REJECTED,
    RETRYING,
    WAITING,
    CommitOutcome,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from .results import FlowResult
from .status import FINISHED, Status

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")

#: A retry backoff up to this long sleeps in the runner's thread; a longer one parks
#: the flow (``status="suspended"``, ``wake_at`` set) so that no process is held.
INLINE_BACKOFF = timedelta(seconds=2)


_RUNNING = Status.RUNNING.value


class ParkingWarning(UserWarning):
    """A flow yielded a command from a ``finally``/``with`` block while it was parked."""


class Stop(Exception):
    """Internal: the run ends with *result* (parked, finished or cancelled)."""

    def __init__(self, result: FlowResult) -> None:
        self.result = result


class Driver:
    """One run of one flow by the holder of its lease."""

    def __init__(
        self,
        flow: Flow[Any],
        store: Store,
        stored: StoredFlow,
        owner: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.flow = flow
        self.should_stop = should_stop
        self.store = store
        self.clock = store.clock
        self.flow_id = stored.id
        self.owner = owner
        self.status = stored.status  # as stored: a claim changes no status
        self.released = False  # the store dropped our lease (parked, finished, cancelled)
        self._in_step = False  # a step's or condition's function is running
        self._records: dict[int, StoredRecord] = {}
        self._signal_updates: list[SignalUpdate] = []
        # Pending signals by name, each a heap by id (first in, first out), so a
        # flow draining thousands of queued signals takes each in O(log n).
        self._pending: dict[str, list[tuple[int, StoredSignal]]] = {}
        self._seen: set[int] = set()
        self._add_pending(s for s in stored.signals if s.state == PENDING)
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

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        if self._in_step:
            # Called by a step's (or condition's) own function: the step's result is
            # what gets recorded, so the value is fresh and takes no position.
            return self.clock.now() if kind == "now" else make()
        found, value = self.interp.recorded_value(kind)
        if found:
            return value
        made = self.clock.now() if kind == "now" else make()  # ctx.now() reads the store's clock
        now = self._now()
        self._records[value] = StoredRecord(
            value,
            kind,
            kind,
            COMPLETED,
            result=codec.encode(made, what=f"ctx.{kind}()"),
            attempts=1,
            started_at=now,
            finished_at=now,
        )
        return made

    # -- writing -----------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.time()

    def _commit(self, now: float | None = None, **fields: Any) -> CommitOutcome:
        """Write what this run has buffered (and *fields*: a park or an end).

        When the store answers with signals that arrived (a park or an expiry
        asked with ``wait_signal``), nothing was written and the buffer is kept.
        """
        records = tuple(self._records.values())
        if fields or self._signal_updates:
            write = Write(records=records, signals=tuple(self._signal_updates), **fields)
        else:
            write = Write(records)  # a step's commit, the hot path
        at = self._now() if now is None else now
        outcome = self.store.commit(self.flow_id, self.owner, at, write)
        if outcome.signals:  # a signal arrived: nothing was applied
            return outcome
        self._records.clear()
        self._signal_updates.clear()
        target = fields.get("status") or _RUNNING
        if outcome.status != target:  # cancelled meanwhile; the store dropped our lease
            self.released = True
            raise self._cancelled(outcome)
        self.status = target
        if target != _RUNNING:
            self.released = True
        return outcome

    def _cancelled(self, outcome: CommitOutcome) -> Stop:
        return Stop(FlowResult(self.flow_id, outcome.status, cancel_reason=outcome.cancel_reason))

    def _end(self, status: Status, **fields: Any) -> Stop | None:
        """Write the final or parked state; the result to stop with, or ``None``
        when signals the flow waits for arrived (nothing written: take one)."""
        outcome = self._commit(status=status.value, **fields)
        if outcome.signals:
            self._add_pending(outcome.signals)
            return None
        return Stop(
            FlowResult(
                self.flow_id,
                status,
                value=codec.decode(fields.get("result")),
                error=ErrorInfo.decode(fields.get("error")),
                waiting_for=fields.get("waiting_for"),
                wake_at=when(fields.get("wake_at")),
            )
        )

    def _stop_with(self, status: Status, **fields: Any) -> Stop:
        stop = self._end(status, **fields)
        assert stop is not None  # only a write with wait_signal can come back
        return stop

    def _park(self, name: str, kind: str, wake_at: float | None, **fields: Any) -> Stop:
        return self._stop_with(
            Status.SUSPENDED, waiting_for=name, wait_kind=kind, wake_at=wake_at, **fields
        )

    def _close(self) -> None:
        for command in self.interp.close():
            what = (
                describe(command.kind, command.name)
                if isinstance(command, COMMAND_TYPES)
                else f"{type(command).__name__} (not a command)"
            )
            warnings.warn(
                f"flow {self.flow_id!r} ({self.flow.name}) yielded {what} while parking "
                "(from a finally or with block); it was not run. Put side effects in steps, "
                "compensation in except blocks",
                ParkingWarning,
                stacklevel=2,
            )

    def _guard(self) -> None:
        """Before any step function or condition is called: this runner still holds
        the lease (else ``LeaseLostError``: it calls and writes nothing more) and
        the flow is not cancelled (else the run stops here)."""
        outcome = self.store.check_lease(self.flow_id, self.owner, self._now())
        if outcome.status in FINISHED:
            raise self._cancelled(outcome)

    def _go_on(self) -> None:
        """A resumed flow went past the wait it was parked at: write it (and what
        is buffered) at once, so the stored flow stops saying it waits — a signal
        for a later wait must not be refused by the deadline of this one."""
        if self.status != _RUNNING:
            self._commit()

    # -- the loop ----------------------------------------------------------------

    def drive(self) -> FlowResult:
        try:
            while True:
                decision = self.interp.next_decision()
                if (
                    self.should_stop is not None
                    and not isinstance(decision, Finished | Failed)
                    and self.should_stop()
                ):
                    raise self._pause()
                if isinstance(decision, RunStep):
                    self._step(decision)
                elif isinstance(decision, AwaitSignal):
                    self._signal(decision)
                elif isinstance(decision, AwaitCondition):
                    self._condition(decision)
                elif isinstance(decision, AwaitTimer):
                    self._timer(decision)
                elif isinstance(decision, Finished):
                    self._finish(decision.value)
                else:
                    assert isinstance(decision, Failed)
                    raise self._stop_with(
                        Status.FAILED, error=ErrorInfo.from_exception(decision.exception).encode()
                    )
        except Stop as stop:
            self._close()  # finally blocks of the flow run now, after the write
            return stop.result

    def _pause(self) -> Stop:
        """Stop before the next live command (a worker is stopping): write what this
        run computed; the caller drops the lease, so the flow stays due."""
        if self._records or self._signal_updates:
            self._commit()
        return Stop(FlowResult(self.flow_id, Status(self.status), name=self.flow.name))

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a step's or condition's function (``ctx`` helpers inside it record nothing)."""
        self._guard()
        self._in_step = True
        try:
            return fn()
        finally:
            self._in_step = False

    def _finish(self, value: Any) -> None:
        try:
            result = codec.encode(value, what=f"the return value of flow {self.flow_id!r}")
        except SerializationError as exc:
            raise self._stop_with(
                Status.FAILED, error=ErrorInfo.from_exception(exc).encode()
            ) from None
        raise self._stop_with(Status.COMPLETED, result=result)

    def _step(self, d: RunStep) -> None:
        command, record = d.command, d.record
        retry = command.retry
        failures = record.attempts if record is not None else 0
        now = self._now()
        started = record.started_at if record is not None else now
        if record is not None and record.wake_at is not None and record.wake_at > now:
            raise self._park(command.name, "retry", record.wake_at)
        while True:
            try:
                value = self._call(command.fn)
            except Stop:
                raise
            except Exception as exc:
                failures += 1
                now = self._now()
                error = ErrorInfo.from_exception(exc).encode()
                if retry is not None and retry.should_retry(exc, failures):
                    wait = retry.delay_after(failures)
                    wake = now + wait.total_seconds()
                    self._records[d.position] = StoredRecord(
                        d.position, "step", command.name, RETRYING, error=error,
                        attempts=failures, started_at=started, wake_at=wake,
                    )  # fmt: skip
                    if wait > INLINE_BACKOFF:
                        raise self._park(command.name, "retry", wake) from None
                    self._commit(now)  # attempts survive a crash
                    log.info(
                        "flow %s: step %r failed (try %d of %d), retrying in %s",
                        self.flow_id, command.name, failures, retry.attempts,
                        format_duration(wait),
                    )  # fmt: skip
                    self.clock.sleep(wait.total_seconds())
                    continue
                self._fail_step(d.position, command.name, exc, error, failures, started, now)
                return
            what = f"the result of step {command.name!r} in flow {self.flow_id!r}"
            now = self._now()
            try:
                encoded = codec.encode(value, what=what)
            except SerializationError as exc:
                # Recorded as the step's failure (not retried): a replay throws the
                # same at this step without calling it, and a flow that catches it
                # goes on with an unbroken history.
                error = ErrorInfo.from_exception(exc).encode()
                self._fail_step(d.position, command.name, exc, error, failures + 1, started, now)
                return
            self._records[d.position] = StoredRecord(
                d.position, "step", command.name, COMPLETED, result=encoded,
                attempts=failures + 1, started_at=started, finished_at=now,
            )  # fmt: skip
            self._commit(now)
            self.interp.resolve(codec.decode(encoded))
            return

    def _fail_step(
        self,
        position: int,
        name: str,
        exc: Exception,
        error: str,
        attempts: int,
        started: float | None,
        now: float,
    ) -> None:
        self._records[position] = StoredRecord(
            position, "step", name, FAILED, error=error,
            attempts=attempts, started_at=started, finished_at=now,
        )  # fmt: skip
        self._commit(now)
        self.interp.fail(exc)

    def _add_pending(self, signals: Iterable[StoredSignal]) -> None:
        for signal in signals:
            if signal.id not in self._seen:
                self._seen.add(signal.id)
                heapq.heappush(self._pending.setdefault(signal.name, []), (signal.id, signal))

    def _next_pending(self, name: str) -> StoredSignal | None:
        """The oldest pending signal named *name*, taken off the pending list."""
        waiting = self._pending.get(name)
        return heapq.heappop(waiting)[1] if waiting else None

    def _signal(self, d: AwaitSignal) -> None:
        command, record = d.command, d.record
        if record is None:
            now = self._now()
            deadline = None if command.timeout is None else now + command.timeout.total_seconds()
            record = StoredRecord(
                d.position, "suspend", command.name, WAITING, started_at=now, deadline=deadline
            )
        deadline = record.deadline
        while True:
            while (signal := self._next_pending(command.name)) is not None:
                if deadline is not None and signal.created_at > deadline:
                    self._reject(signal, "it arrived after the wait's deadline")
                    continue
                try:
                    value = codec.structure(codec.decode(signal.payload), command.schema)
                except Exception as exc:
                    reason = codec.structure_error_text(exc)
                    log.warning(
                        "%s",
                        SignalValidationError(self.flow_id, signal.name, command.schema, reason),
                    )
                    self._reject(signal, reason)
                    continue
                now = self._now()
                self._records[d.position] = record._replace(
                    state=COMPLETED, result=signal.payload, attempts=1, finished_at=now
                )
                self._signal_updates.append(SignalUpdate(signal.id, CONSUMED, position=d.position))
                self._go_on()
                self.interp.resolve(value)
                return
            # No signal in hand: park, or expire once the deadline passed; either
            # write happens only if no signal arrived meanwhile (the store checks
            # atomically), so a signal stored in time is never lost.
            now = self._now()
            if deadline is not None and now >= deadline:
                self._records[d.position] = record._replace(state=EXPIRED, finished_at=now)
                stop = self._end(
                    Status.EXPIRED,
                    waiting_for=command.name,
                    wait_kind="suspend",
                    wait_signal=command.name,
                )
            else:
                if d.record is None:
                    self._records[d.position] = record
                else:  # parked here before: the stored record stands as it is
                    self._records.pop(d.position, None)
                stop = self._end(
                    Status.SUSPENDED,
                    waiting_for=command.name,
                    wait_kind="suspend",
                    wake_at=deadline,
                    deadline=deadline,
                    wait_signal=command.name,
                )
            if stop is not None:
                raise stop

    def _reject(self, signal: StoredSignal, reason: str) -> None:
        self._signal_updates.append(SignalUpdate(signal.id, REJECTED, error=reason))

    def _condition(self, d: AwaitCondition) -> None:
        command, record = d.command, d.record
        now = self._now()
        if record is None:
            deadline = None if command.timeout is None else now + command.timeout.total_seconds()
            record = StoredRecord(
                d.position, "wait_until", command.name, WAITING, started_at=now, deadline=deadline
            )
        try:
            value = self._call(command.condition)
        except Stop:
            raise
        except Exception as exc:
            self._fail_condition(record, exc, now)
            return
        if value:
            what = f"the value of WaitUntil {command.name!r} in flow {self.flow_id!r}"
            try:
                encoded = codec.encode(value, what=what)
            except SerializationError as exc:
                self._fail_condition(record, exc, now)
                return
            self._records[d.position] = record._replace(
                state=COMPLETED, result=encoded, attempts=record.attempts + 1, finished_at=now
            )
            self._go_on()
            self.interp.resolve(codec.decode(encoded))
            return
        if record.deadline is not None and now >= record.deadline:
            self._records[d.position] = record._replace(
                state=EXPIRED, attempts=record.attempts + 1, finished_at=now
            )
            raise self._stop_with(Status.EXPIRED, waiting_for=command.name, wait_kind="wait_until")
        wake = now + command.every.total_seconds()
        if record.deadline is not None:
            wake = min(wake, record.deadline)
        self._records[d.position] = record._replace(attempts=record.attempts + 1, wake_at=wake)
        raise self._park(command.name, "wait_until", wake, deadline=record.deadline)

    def _fail_condition(self, record: StoredRecord, exc: Exception, now: float) -> None:
        """A condition raised, or its value cannot be stored: recorded as the wait's
        failure and thrown into the flow (a replay throws it without calling it)."""
        self._records[record.position] = record._replace(
            state=FAILED, error=ErrorInfo.from_exception(exc).encode(),
            attempts=record.attempts + 1, finished_at=now,
        )  # fmt: skip
        self._commit(now)
        self.interp.fail(exc)

    def _timer(self, d: AwaitTimer) -> None:
        command, record = d.command, d.record
        now = self._now()
        if record is None:
            record = StoredRecord(
                d.position, "sleep", command.name, WAITING, started_at=now,
                wake_at=now + command.duration.total_seconds(),
            )  # fmt: skip
        assert record.wake_at is not None
        if now >= record.wake_at:
            self._records[d.position] = record._replace(
                state=COMPLETED, result="null", attempts=1, finished_at=now
            )
            self._go_on()
            self.interp.resolve(None)
            return
        self._records[d.position] = record
        raise self._park(command.name, "sleep", record.wake_at)
