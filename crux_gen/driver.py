"""The flow driver: one run of one flow by the holder of its lease.

It joins interpreter, store, clock and step functions: it executes each live
decision of the interpreter (calls a step function, takes a signal, checks a
condition or a timer), writes the outcome through the store, and feeds it back.
``runner.py`` claims flows and hands them to a :class:`Driver`.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import when
from .codec import ErrorInfo
from .commands import COMMAND_TYPES, Child, Step, describe
from .durations import format_duration
from .effects import (
    DURABLE,
    GO_ON,
    Adopt,
    Arrived,
    Call,
    CancelFlow,
    Event,
    Finish,
    Fired,
    NewRun,
    Park,
    Raised,
    Record,
    Refused,
    Resolve,
    Returned,
    Settled,
    StartChild,
    Take,
    Throw,
    Timer,
    View,
)
from .errors import (
    FlowBusyError,
    FlowClosedError,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowNotFoundError,
    SerializationError,
)
from .flow import Flow, FlowContext
from .handlers import (
    HANDLERS,
    MISSING_CHILD,
    child_id_of,
    child_outcome,
    ended,
    new_child,
    run_step,
)
from .interpreter import (
    Failed,
    Finished,
    Interpreter,
    RunAll,
    RunStep,
    rebuild_exception,
)
from .records import (
    COMPLETED,
    FAILED,
    PENDING,
    REJECTED,
    RETRYING,
    WAITING,
    CommitOutcome,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
    all_header_result,
)
from .results import FlowResult
from .status import FINISHED, Status

UNRESOLVED_STATES = (WAITING, RETRYING)

#: A store's refusals of a child a write would start (its id is taken): thrown at
#: the parent's ``yield`` instead of failing the run (or looping on it).
CHILD_REFUSALS = (FlowNameConflictError, FlowIdTakenError)

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")


_RUNNING = Status.RUNNING.value


class ParkingWarning(UserWarning):
    """A flow yielded a command from a ``finally``/``with`` block while it was parked."""


class Stop(Exception):
    """Internal: the run ends with *result* (parked, finished or cancelled), or
    goes on as the flow's next run (*continued*, ``ContinueAsNew``)."""

    def __init__(self, result: FlowResult, *, continued: bool = False) -> None:
        self.result = result
        self.continued = continued


class Driver:
    """One run of one flow by the holder of its lease."""

    def __init__(
        self,
        flow: Flow[Any],
        store: Store,
        stored: StoredFlow,
        owner: str,
        should_stop: Callable[[], bool] | None = None,
        *,
        concurrency: int = 8,
    ) -> None:
        self.flow = flow
        self.concurrency = concurrency
        self.continued = False  # ended with ContinueAsNew: the runner starts the next run
        self._custom_status: str | None = None  # set since the last write (JSON text)
        self.should_stop = should_stop
        self.store = store
        self.clock = store.clock
        self.flow_id = stored.id
        self.owner = owner
        self.status = stored.status  # as stored: a claim changes no status
        self.released = False  # the store dropped our lease (parked, finished, cancelled)
        self._in_step = False  # a step's or condition's function is running
        self._in_branches = False  # an All's steps are running (the body waits at its yield)
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

    def set_custom_status(self, value: Any) -> None:
        self._custom_status = codec.encode(
            value, what=f"the custom status of flow {self.flow_id!r}"
        )

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        if self._in_step or self._in_branches:
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
        custom = self._custom_status
        if fields or self._signal_updates or custom is not None:
            write = Write(
                records=records,
                signals=tuple(self._signal_updates),
                custom_status=custom,
                **fields,
            )
        else:
            write = Write(records)  # a step's commit, the hot path
        at = self._now() if now is None else now
        outcome = self.store.commit(self.flow_id, self.owner, at, write)
        if outcome.signals:  # a signal arrived: nothing was applied
            return outcome
        self._records.clear()
        self._signal_updates.clear()
        if custom is self._custom_status:  # (a branch thread may have set a newer one)
            self._custom_status = None
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
        the lease (else ``LeaseLostError``: no call starts after a failed check, and
        nothing more is written) and the flow is not cancelled (else the run stops
        here). A runner frozen between this check and the call still makes that one
        call when it wakes; its result is never recorded (the write is fenced)."""
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
                handle = _HANDLERS.get(decision.__class__)
                if handle is not None:
                    handle(self, decision)
                elif isinstance(decision, Finished):
                    self._finish(decision.value)
                else:
                    assert isinstance(decision, Failed)
                    raise self._stop_with(
                        Status.FAILED, error=ErrorInfo.from_exception(decision.exception).encode()
                    )
        except Stop as stop:
            self.continued = stop.continued
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

    def _handle(self, decision: Any) -> None:
        """Carry out the effects of the decision's handler (``handlers.py``) until it
        is settled: a call runs here (after the guard) and its outcome goes back to
        the handler; each record is written when it says; a park or an end stops the
        run (``Stop``)."""
        handler = HANDLERS[decision.__class__]
        record: StoredRecord | None = getattr(decision, "record", None)
        event: Event = None
        time = self.clock.time
        while True:
            now = time()
            view = View(self.flow_id, now, record, self._drain, peek=self._peek_pending)
            effects = handler(decision, view, event)
            event = None
            adopted: dict[str, StoredFlow] = {}
            for effect in effects:
                if type(effect) is Record:
                    record = effect.record
                    self._records[record.position] = record
                    if effect.write == DURABLE:
                        self._commit(now)
                    elif effect.write == GO_ON:
                        self._go_on()
                elif type(effect) is Call:
                    try:
                        event = Returned(self._call(effect.fn), effect)
                    except Stop:
                        raise
                    except Exception as exc:
                        event = Raised(exc, effect)
                elif type(effect) is Resolve:
                    self.interp.resolve(effect.value)
                elif type(effect) is Throw:
                    self.interp.fail(effect.exc)
                elif type(effect) is Timer:
                    assert record is not None
                    self._retrying(decision.command, record, effect.at - now)
                    event = Fired()
                elif type(effect) is StartChild:
                    record = effect.record
                    self._records[record.position] = record
                    try:
                        self._commit(now, children=effect.children)
                    except CHILD_REFUSALS as exc:  # nothing was written
                        event = Refused(exc)
                        break
                elif type(effect) is Adopt:
                    self._run_inline(effect.flow, effect.flow_id)
                    adopted[effect.flow_id] = self._load_child(effect.flow_id)
                elif type(effect) is CancelFlow:
                    self.store.cancel(effect.flow_id, effect.reason, now)
                elif type(effect) is Take:
                    self._signal_updates.append(effect.update)
                    if effect.warning is not None:
                        log.warning("%s", effect.warning)
                elif type(effect) is Park or type(effect) is Finish:
                    stop = self._settle(effect)
                    if stop is not None:
                        raise stop
                    event = Arrived()  # signals it waits for arrived: nothing was written
                    break
                else:
                    assert type(effect) is NewRun
                    self._commit(now, continue_as_new=effect.input)
                    result = FlowResult(self.flow_id, Status.RUNNING, name=self.flow.name)
                    raise Stop(result, continued=True)
            if adopted and event is None:
                event = Settled(adopted)
            if event is None:
                return

    def _settle(self, effect: Park | Finish) -> Stop | None:
        """Write a park or an end; ``None`` when signals the write waits for arrived
        (nothing was written; they are pending now)."""
        if type(effect) is Park:
            return self._end(
                Status.SUSPENDED,
                waiting_for=effect.waiting_for,
                wait_kind=effect.kind,
                wake_at=effect.wake_at,
                deadline=effect.deadline,
                wait_signal=effect.wait_signal,
                wait_children=effect.children,
                wait_signals=effect.signals,
            )
        assert type(effect) is Finish
        return self._end(
            effect.status,
            waiting_for=effect.waiting_for,
            wait_kind=effect.kind,
            wait_signal=effect.wait_signal,
        )

    def _retrying(self, command: Step, record: StoredRecord, wait: float) -> None:
        """A short backoff: sleep it out here (the retrying record is written)."""
        retry = command.retry
        log.info(
            "flow %s: step %r failed (try %d of %d), retrying in %s",
            self.flow_id, command.name, record.attempts, retry.attempts if retry else 1,
            format_duration(timedelta(seconds=wait)),
        )  # fmt: skip
        self.clock.sleep(max(0.0, wait))

    def _payload(self, signal: StoredSignal) -> Any:
        """A signal's payload, or ``CorruptRecordError`` naming the flow and signal."""
        return codec.decode_stored(
            signal.payload,
            flow_id=self.flow_id,
            position=None,
            column=f"payload of signal {signal.id}",
        )

    def _add_pending(self, signals: Iterable[StoredSignal]) -> None:
        for signal in signals:
            if signal.id not in self._seen:
                self._seen.add(signal.id)
                heapq.heappush(self._pending.setdefault(signal.name, []), (signal.id, signal))

    def _next_pending(self, name: str) -> StoredSignal | None:
        """The oldest pending signal named *name*, taken off the pending list."""
        waiting = self._pending.get(name)
        return heapq.heappop(waiting)[1] if waiting else None

    def _drain(self, name: str) -> Iterator[StoredSignal]:
        """The pending signals named *name*, oldest first, each taken off the pending
        list as it is drawn (a handler answers each with a ``Take``)."""
        while (signal := self._next_pending(name)) is not None:
            yield signal

    def _reject(self, signal: StoredSignal, reason: str) -> None:
        self._signal_updates.append(SignalUpdate(signal.id, REJECTED, error=reason))

    # -- composition ---------------------------------------------------------------

    def _refuse(self, position: int, kind: str, name: str, exc: Exception, now: float) -> None:
        """A command whose own value cannot be stored (a child's input, ContinueAsNew's):
        recorded as its failure and thrown at its ``yield`` (a replay throws the same)."""
        self._records[position] = StoredRecord(
            position, kind, name, FAILED, error=ErrorInfo.from_exception(exc).encode(),
            attempts=1, started_at=now, finished_at=now,
        )  # fmt: skip
        self._commit(now)
        self.interp.fail(exc)

    def _run_inline(self, flow: Flow[Any], child_id: str) -> None:
        """Run a child flow in this thread until it suspends or finishes (another
        runner may have it: then it is left to that one)."""
        from .runner import resume  # the runner imports this module

        with contextlib.suppress(FlowBusyError, FlowClosedError, FlowNotFoundError):
            resume(
                child_id,
                store=self.store,
                flows=[flow],
                should_stop=self.should_stop,
                only_if_due=True,
                concurrency=self.concurrency,
            )

    def _child_outcome(
        self, position: int, record: StoredRecord, child: StoredFlow
    ) -> tuple[StoredRecord, Any, BaseException | None]:
        """The record of a finished child, and the value or error it gives the parent."""
        return child_outcome(record, child, self._now())

    def _load_child(self, child_id: str) -> StoredFlow:
        """The child flow as stored; one that is gone (deleted by hand: ``prune`` and
        ``delete`` keep a child while its parent is unfinished) reads as a child that
        ended ``"deleted"``, which its parent's ``yield`` raises as a
        ``ChildFlowError`` instead of waiting forever."""
        try:
            return self.store.load(child_id)
        except FlowNotFoundError:
            return StoredFlow(child_id, "?", MISSING_CHILD, "null", 0.0, self._now())

    def _peek_pending(self, name: str) -> StoredSignal | None:
        waiting = self._pending.get(name)
        return waiting[0][1] if waiting else None

    def _all(self, d: RunAll) -> None:
        command = d.command
        branches = command.commands
        first = d.position + 1
        if d.records is None:
            now = self._now()
            records = [
                StoredRecord(
                    d.position, "all", command.name, WAITING,
                    result=all_header_result(len(branches)), started_at=now,
                ),
                *(
                    StoredRecord(first + offset, branch.kind, branch.name, WAITING, started_at=now)
                    for offset, branch in enumerate(branches)
                ),
            ]  # fmt: skip
            self._start_children(records, branches, first, now)
            header, *rest = records
        else:
            header, *rest = d.records
            # A child branch reset by a retry (its child had failed) starts a new child.
            unstarted = [
                r for r in rest if r.kind == "child" and r.state == WAITING and r.result is None
            ]
            if unstarted:
                self._start_children(unstarted, branches, first, self._now())
                rest = [next((u for u in unstarted if u.position == r.position), r) for r in rest]
        current: dict[int, StoredRecord] = {r.position: r for r in rest}
        errors: dict[int, BaseException] = {}
        # Steps first, at the same time, each record committed as it finishes.
        todo = [
            (first + offset, branch)
            for offset, branch in enumerate(branches)
            if isinstance(branch, Step) and current[first + offset].state in UNRESOLVED_STATES
        ]
        if todo:
            self._run_branches(todo, current, errors)
        # Then children, each run here until it suspends or finishes.
        waiting_children: list[str] = []
        for offset, branch in enumerate(branches):
            position = first + offset
            record = current[position]
            if isinstance(branch, Child) and record.state == WAITING:
                child_id = child_id_of(record)
                self._run_inline(branch.flow, child_id)
                child = self._load_child(child_id)
                if ended(child):
                    done, _, error = self._child_outcome(position, record, child)
                    current[position] = done
                    self._records[position] = done
                    if error is not None:
                        errors[position] = error
                else:
                    waiting_children.append(child_id)
        retry_wakes = [
            r.wake_at for r in current.values() if r.state == RETRYING and r.wake_at is not None
        ]
        if waiting_children or retry_wakes:
            raise self._park(
                command.name,
                "all",
                min(retry_wakes) if retry_wakes else None,
                wait_children=tuple(waiting_children),
            )
        now = self._now()
        self._records[d.position] = header._replace(
            state=COMPLETED, result=all_header_result(len(branches)), attempts=1, finished_at=now
        )
        self._go_on()
        for position in sorted(current):  # the first failure in list order is thrown
            record = current[position]
            if record.state == FAILED:
                self.interp.fail(
                    errors.get(position) or rebuild_exception(record, flow_id=self.flow_id)
                )
                return
        self.interp.resolve(
            [
                codec.decode_stored(
                    current[p].result, flow_id=self.flow_id, position=p, column="result"
                )
                for p in sorted(current)
            ]
        )

    def _start_children(
        self, records: list[StoredRecord], branches: tuple[Any, ...], first: int, now: float
    ) -> None:
        """Write *records* (an ``All``'s, at positions from *first*) with a child flow
        for each child branch record that has none yet, in one write: each gets a
        fresh id (or its ``flow_id=``) in its result. A branch whose input cannot be
        stored, or whose id the store refuses (taken), is recorded as failed instead;
        the others go on. *records* is updated in place."""
        new: list[NewChild] = []
        for index, record in enumerate(records):
            if record.kind != "child" or record.result is not None:
                continue
            branch = branches[record.position - first]
            assert isinstance(branch, Child)
            try:
                fresh = new_child(branch, View(self.flow_id, now, record))
            except SerializationError as exc:
                records[index] = self._failed(record, exc, now)
                continue
            new.append(fresh)
            records[index] = record._replace(
                result=codec.encode({"flow_id": fresh.flow_id}, what="a child id")
            )
        for record in records:
            self._records[record.position] = record
        while True:
            try:
                self._commit(now, children=tuple(new))
                return
            except CHILD_REFUSALS as exc:  # that branch fails; the others go on
                new = [c for c in new if c.flow_id != exc.flow_id]
                for index, record in enumerate(records):
                    if (
                        record.kind == "child"
                        and record.state == WAITING
                        and child_id_of(record) == exc.flow_id
                    ):
                        records[index] = self._failed(record, exc, now)
                        self._records[record.position] = records[index]

    @staticmethod
    def _failed(record: StoredRecord, exc: Exception, now: float) -> StoredRecord:
        return record._replace(
            state=FAILED, result=None, attempts=1, finished_at=now,
            error=ErrorInfo.from_exception(exc).encode(),
        )  # fmt: skip

    def _run_branches(
        self,
        todo: list[tuple[int, Step]],
        current: dict[int, StoredRecord],
        errors: dict[int, BaseException],
    ) -> None:
        """Run an ``All``'s steps on a pool of threads; each record is committed as
        it finishes (commits made at the same time share one transaction)."""
        from .group_commit import GroupCommit  # (imports the stores' base)

        shared = self.store if isinstance(self.store, GroupCommit) else GroupCommit(self.store)
        stops: list[BaseException] = []
        lock = threading.Lock()

        def commit(record: StoredRecord) -> None:
            outcome = shared.commit(self.flow_id, self.owner, self._now(), Write((record,)))
            if outcome.status != _RUNNING:  # cancelled meanwhile: the store dropped our lease
                self.released = True
                raise self._cancelled(outcome)

        def run(position: int, command: Step) -> None:
            try:
                final, error = self._branch(position, command, current[position], commit)
            except BaseException as exc:  # a cancel, a lost lease, a store error, an exit
                with lock:
                    stops.append(exc)
                return
            with lock:
                current[position] = final
                if error is not None:
                    errors[position] = error

        self._in_branches = True
        try:
            with ThreadPoolExecutor(
                min(len(todo), self.concurrency), thread_name_prefix="crux-all"
            ) as pool:
                for position, command in todo:
                    pool.submit(run, position, command)
        finally:
            self._in_branches = False
        if stops:  # the others finished and were recorded; the run ends with the first
            raise stops[0]

    def _branch(
        self,
        position: int,
        command: Step,
        record: StoredRecord,
        commit: Callable[[StoredRecord], None],
    ) -> tuple[StoredRecord, BaseException | None]:
        """One step of an ``All``, in a pool thread: its final record (completed,
        failed, or retrying with a wake-up past the inline backoff) and its error.
        The step's handler decides (its retry policy is ``handlers.run_step``'s);
        every record it emits is committed at once (``commit``: a group commit)."""
        decision = RunStep(position, command, record)
        event: Event = None
        while True:
            effects = run_step(decision, View(self.flow_id, self._now(), record), event)
            event = None
            for effect in effects:
                if type(effect) is Record:
                    record = effect.record
                    commit(record)
                elif type(effect) is Call:
                    self._guard()
                    try:
                        event = Returned(effect.fn(), effect)
                    except Exception as exc:
                        event = Raised(exc, effect)
                elif type(effect) is Timer:
                    self.clock.sleep(max(0.0, effect.at - self._now()))
                    event = Fired()
                elif type(effect) is Throw:
                    return record, effect.exc
                elif type(effect) is Resolve:
                    return record, None
                else:
                    assert type(effect) is Park  # a backoff past the inline one
                    return record, None
            assert event is not None


#: The driver's method for each live decision of the interpreter.
_HANDLERS: dict[type, Callable[[Driver, Any], None]] = {
    **{kind: Driver._handle for kind in HANDLERS},
    RunAll: Driver._all,
}
