"""Pure handlers: a live decision of the interpreter, what the runner knows now
(``View``) and the event it reports (``Returned``, ``Raised``, ``Fired``, or none
at first) in; the effects to carry out (``effects.py``) out.

No store, no clock, no thread, no sleep and no exception used for control flow:
every rule here has this one owner (the retry policy and its inline backoff, when
a wait resolves, parks or expires), and its tests need neither store nor thread
(``tests/test_handlers.py``). ``driver.py`` carries the effects out with today's
IO (``CORE.md``, slice 1).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from . import codec
from .codec import ErrorInfo
from .commands import AnyResult, Child, Retry, Sleep, Suspend
from .effects import (
    BUFFERED,
    DURABLE,
    GO_ON,
    Adopt,
    Call,
    CancelFlow,
    Effect,
    Event,
    Finish,
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
from .errors import ChildFlowError, SerializationError, SignalValidationError
from .interpreter import (
    AwaitAny,
    AwaitChild,
    AwaitCondition,
    AwaitSignal,
    AwaitTimer,
    ContinueNew,
    RecordVersion,
    RunStep,
    structured,
)
from .records import (
    COMPLETED,
    CONSUMED,
    EXPIRED,
    FAILED,
    REJECTED,
    RETRYING,
    WAITING,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
)
from .status import FINISHED, Status

#: A retry backoff up to this long keeps the flow in hand (``Timer``); a longer one
#: parks it (``status="suspended"``, ``wake_at`` set) so that no process is held.
INLINE_BACKOFF = timedelta(seconds=2)


def retry_plan(retry: Retry | None, exc: BaseException, attempts: int, now: float) -> float | None:
    """When the next try of a step whose try number *attempts* raised *exc* is due,
    or ``None`` when it is not tried again (no ``Retry``, spent, or not retried on)."""
    if retry is None or not retry.should_retry(exc, attempts):
        return None
    return now + retry.delay_after(attempts).total_seconds()


def run_step(d: RunStep, view: View, event: Event = None) -> list[Effect]:
    """A step: call its function (after a stored backoff ran out), then record its
    value or its failure (retried by its ``Retry``, else thrown at the ``yield``)."""
    command, record = d.command, view.record
    if not isinstance(event, Returned | Raised):  # first, or after a Timer (Fired)
        waiting = record is not None and record.wake_at is not None and record.wake_at > view.now
        if event is None and waiting:  # parked for a backoff that has not run out
            assert record is not None and record.wake_at is not None
            return [Park(command.name, "retry", record.wake_at)]
        attempts = record.attempts if record is not None else 0
        started = view.now if record is None or record.started_at is None else record.started_at
        return [Call(d.position, command.fn, attempts + 1, started)]
    call = event.call
    if isinstance(event, Raised):
        exc = event.exc
        error = ErrorInfo.from_exception(exc).encode()
        wake = retry_plan(command.retry, exc, call.attempt, view.now)
        if wake is None:
            return _failed(d.position, "step", command.name, exc, error, call, view.now)
        retrying = StoredRecord(
            d.position, "step", command.name, RETRYING, error=error,
            attempts=call.attempt, started_at=call.started, wake_at=wake,
        )  # fmt: skip
        if wake - view.now > INLINE_BACKOFF.total_seconds():
            return [Record(retrying), Park(command.name, "retry", wake)]
        return [Record(retrying, DURABLE), Timer(wake)]  # attempts survive a crash
    assert isinstance(event, Returned)
    what = f"the result of step {command.name!r} in flow {view.flow_id!r}"
    try:
        encoded = codec.encode(event.value, what=what)
    except SerializationError as exc:
        # Recorded as the step's failure (not retried): a replay throws the same at
        # this step without calling it, and a flow that catches it goes on.
        error = ErrorInfo.from_exception(exc).encode()
        return _failed(d.position, "step", command.name, exc, error, call, view.now)
    done = StoredRecord(
        d.position, "step", command.name, COMPLETED, result=encoded,
        attempts=call.attempt, started_at=call.started, finished_at=view.now,
    )  # fmt: skip
    return [Record(done, DURABLE), Resolve(codec.decode(encoded))]


def _failed(
    position: int, kind: str, name: str, exc: BaseException, error: str, call: Call, now: float
) -> list[Effect]:
    failed = StoredRecord(
        position, kind, name, FAILED, error=error,
        attempts=call.attempt, started_at=call.started, finished_at=now,
    )  # fmt: skip
    return [Record(failed, DURABLE), Throw(exc)]


def await_condition(d: AwaitCondition, view: View, event: Event = None) -> list[Effect]:
    """A ``WaitUntil``: check its condition; resolve with a truthy value, else park
    until the next check (or expire once its deadline passed). A condition that
    raises, or whose value cannot be stored, fails the wait at its ``yield``."""
    command = d.command
    record = view.record
    if not isinstance(event, Returned | Raised):
        attempts = record.attempts if record is not None else 0
        return [Call(d.position, command.condition, attempts + 1, view.now)]
    now = event.call.started
    if record is None:
        deadline = None if command.timeout is None else now + command.timeout.total_seconds()
        record = StoredRecord(
            d.position, "wait_until", command.name, WAITING, started_at=now, deadline=deadline
        )
    checked = record.attempts + 1
    if isinstance(event, Raised):
        return _condition_failed(record, event.exc, checked, now)
    assert isinstance(event, Returned)
    if event.value:
        what = f"the value of WaitUntil {command.name!r} in flow {view.flow_id!r}"
        try:
            encoded = codec.encode(event.value, what=what)
        except SerializationError as exc:
            return _condition_failed(record, exc, checked, now)
        done = record._replace(state=COMPLETED, result=encoded, attempts=checked, finished_at=now)
        return [Record(done, GO_ON), Resolve(codec.decode(encoded))]
    if record.deadline is not None and now >= record.deadline:
        expired = record._replace(state=EXPIRED, attempts=checked, finished_at=now)
        return [Record(expired), Finish(Status.EXPIRED, command.name, "wait_until")]
    wake = now + command.every.total_seconds()
    if record.deadline is not None:
        wake = min(wake, record.deadline)
    waiting = record._replace(attempts=checked, wake_at=wake)
    return [Record(waiting), Park(command.name, "wait_until", wake, record.deadline)]


def _condition_failed(
    record: StoredRecord, exc: BaseException, checked: int, now: float
) -> list[Effect]:
    """A condition raised, or its value cannot be stored: recorded as the wait's
    failure and thrown into the flow (a replay throws it without calling it)."""
    failed = record._replace(
        state=FAILED, error=ErrorInfo.from_exception(exc).encode(),
        attempts=checked, finished_at=now,
    )  # fmt: skip
    return [Record(failed, DURABLE), Throw(exc)]


def await_timer(d: AwaitTimer, view: View, event: Event = None) -> list[Effect]:
    """A ``Sleep``: resolve once its wake time came, else park until then."""
    command, record, now = d.command, view.record, view.now
    if record is None:
        record = StoredRecord(
            d.position, "sleep", command.name, WAITING, started_at=now,
            wake_at=command.wake_at(now),
        )  # fmt: skip
    assert record.wake_at is not None
    if now >= record.wake_at:
        done = record._replace(state=COMPLETED, result="null", attempts=1, finished_at=now)
        return [Record(done, GO_ON), Resolve(None)]
    return [Record(record), Park(command.name, "sleep", record.wake_at)]


def await_signal(d: AwaitSignal, view: View, event: Event = None) -> list[Effect]:
    """A ``Suspend``: take the oldest pending signal of its name that arrived in time
    and fits its schema (the others are rejected, with the reason); with none, park
    until the deadline, or expire once it passed. The park or the expiry is written
    only if no such signal arrived meanwhile (the store checks it in the same
    write), so a signal stored in time is never lost."""
    command, now = d.command, view.now
    record = view.record
    if record is None:
        deadline = None if command.timeout is None else now + command.timeout.total_seconds()
        record = StoredRecord(
            d.position, "suspend", command.name, WAITING, started_at=now, deadline=deadline
        )
    deadline = record.deadline
    effects: list[Effect] = []
    for signal in view.pending(command.name):
        if deadline is not None and signal.created_at > deadline:
            late = SignalUpdate(signal.id, REJECTED, error="it arrived after the wait's deadline")
            effects.append(Take(late))
            continue
        try:
            payload = codec.decode_stored(
                signal.payload,
                flow_id=view.flow_id,
                position=None,
                column=f"payload of signal {signal.id}",
            )
            value = codec.structure(payload, command.schema)
        except Exception as exc:
            reason = codec.structure_error_text(exc)
            refused = SignalValidationError(view.flow_id, signal.name, command.schema, reason)
            effects.append(Take(SignalUpdate(signal.id, REJECTED, error=reason), refused))
            continue
        done = record._replace(state=COMPLETED, result=signal.payload, attempts=1, finished_at=now)
        taken = SignalUpdate(signal.id, CONSUMED, position=d.position)
        effects += [Take(taken), Record(done, GO_ON), Resolve(value)]
        return effects
    if deadline is not None and now >= deadline:
        expired = record._replace(state=EXPIRED, finished_at=now)
        finish = Finish(Status.EXPIRED, command.name, "suspend", command.name)
        return [*effects, Record(expired), finish]
    if d.record is None:  # parked here before: the stored record stands as it is
        effects.append(Record(record))
    park = Park(command.name, "suspend", deadline, deadline, command.name)
    return [*effects, park]


#: The status a child that is gone from the store reads as (deleted by hand: ``prune``
#: and ``delete`` keep a child while its parent is unfinished): its parent's
#: ``yield`` raises ``ChildFlowError`` instead of waiting forever.
MISSING_CHILD = "deleted"


def child_id_of(record: StoredRecord) -> str:
    """The id of the child flow a ``Child`` record (waiting) names."""
    found = codec.decode_stored(
        record.result, flow_id="?", position=record.position, column="result"
    )
    return str(found["flow_id"])


def child_outcome(
    record: StoredRecord, child: StoredFlow, now: float
) -> tuple[StoredRecord, Any, BaseException | None]:
    """The record of a finished (or missing) child, and the value or the
    ``ChildFlowError`` it gives its parent."""
    if child.status == Status.COMPLETED:
        done = record._replace(state=COMPLETED, result=child.result, attempts=1, finished_at=now)
        value = codec.decode_stored(child.result, flow_id=child.id, position=None, column="result")
        return done, value, None
    error = ChildFlowError(child.id, child.status, child.error)
    failed = record._replace(
        state=FAILED, result=None, error=ErrorInfo.from_exception(error).encode(),
        attempts=1, finished_at=now,
    )  # fmt: skip
    return failed, None, error


def ended(child: StoredFlow) -> bool:
    """Whether a child's parent can take its outcome now."""
    return child.status in FINISHED or child.status == MISSING_CHILD


def refused(position: int, kind: str, name: str, exc: Exception, now: float) -> list[Effect]:
    """A command whose own value cannot be stored (a child's input, ContinueAsNew's)
    or whose child the store refused: recorded as its failure and thrown at its
    ``yield`` (a replay throws the same)."""
    failed = StoredRecord(
        position, kind, name, FAILED, error=ErrorInfo.from_exception(exc).encode(),
        attempts=1, started_at=now, finished_at=now,
    )  # fmt: skip
    return [Record(failed, DURABLE), Throw(exc)]


def new_child(command: Child, view: View) -> NewChild:
    """The child flow a ``Child`` starts: its ``flow_id=`` or a new id, its name and
    its input as JSON text (``SerializationError`` when the input cannot be stored)."""
    what = f"the input of child flow {command.name!r} of {view.flow_id!r}"
    text = codec.encode(command.input, what=what)
    return NewChild(command.flow_id or view.new_id(), command.name, text)


def await_child(d: AwaitChild, view: View, event: Event = None) -> list[Effect]:
    """A ``Child``: start the child flow (in the write that records it), run it,
    and take its value or its failure once it ended, else park until it does (its
    end makes the parent due)."""
    command, record, now = d.command, view.record, view.now
    if isinstance(event, Refused):  # its id is taken: thrown at the yield
        return refused(d.position, "child", command.name, event.exc, now)
    if record is None:
        try:
            fresh = new_child(command, view)
        except SerializationError as exc:
            return refused(d.position, "child", command.name, exc, now)
        record = StoredRecord(
            d.position, "child", command.name, WAITING,
            result=codec.encode({"flow_id": fresh.flow_id}, what="a child id"), started_at=now,
        )  # fmt: skip
        return [StartChild((fresh,), record), Adopt(fresh.flow_id, command.flow)]
    if not isinstance(event, Settled):
        return [Adopt(child_id_of(record), command.flow)]
    child = event.children[child_id_of(record)]
    if not ended(child):
        return [Park(child.id, "child", None, children=(child.id,))]
    done, value, error = child_outcome(record, child, now)
    return [Record(done, GO_ON), Resolve(value) if error is None else Throw(error)]


def await_any(d: AwaitAny, view: View, event: Event = None) -> list[Effect]:
    """An ``Any``: start its children (in the write that records it) and run them;
    then the first event by the store's clock wins (among signals at one instant
    the first sent, by id; a signal before a timer or a child; then list order)
    and is recorded and given to the flow (a losing child is cancelled with
    ``cancel_losers``); with none, park until a signal, the first timer or a child's
    end. A signal that fits no schema is rejected, with the reason."""
    command, now = d.command, view.now
    branches = command.commands
    if isinstance(event, Refused):  # an id is taken: thrown at the yield
        return refused(d.position, "any", command.name, event.exc, now)
    record = view.record
    if record is None:
        children: dict[str, str] = {}
        new: list[NewChild] = []
        adopt: list[Effect] = []
        for index, branch in enumerate(branches):
            if isinstance(branch, Child):
                try:
                    fresh = new_child(branch, view)
                except SerializationError as exc:
                    return refused(d.position, "any", command.name, exc, now)
                children[str(index)] = fresh.flow_id
                new.append(fresh)
                adopt.append(Adopt(fresh.flow_id, branch.flow))
        timers = [b.wake_at(now) for b in branches if isinstance(b, Sleep)]
        record = StoredRecord(
            d.position, "any", command.name, WAITING,
            result=codec.encode({"children": children}, what="child ids") if children else None,
            started_at=now, wake_at=min(timers) if timers else None,
        )  # fmt: skip
        if new:  # the children exist (and the record names them) before they run
            return [StartChild(tuple(new), record), *adopt]
    child_ids = _any_children(record, view.flow_id)
    if child_ids and not isinstance(event, Settled):  # run them (again after arrivals)
        flows = {i: b.flow for i, b in enumerate(branches) if isinstance(b, Child)}
        return [Adopt(child_id, flows[index]) for index, child_id in child_ids.items()]
    settled = event.children if isinstance(event, Settled) else {}
    started = record.started_at if record.started_at is not None else now
    effects: list[Effect] = []
    best: tuple[float, float, int] | None = None
    for index, branch in enumerate(branches):
        at: float | None = None
        order = float("inf")
        if isinstance(branch, Suspend):
            signal = view.peek(branch.name)
            while signal is not None:
                _, misfit = structured(branch, _payload(signal, view), flow_id=view.flow_id)
                if misfit is None:
                    break
                next(iter(view.pending(branch.name)))  # drawn: rejected
                reason = str(getattr(misfit, "reason", misfit))
                effects.append(Take(SignalUpdate(signal.id, REJECTED, error=reason), misfit))
                signal = view.peek(branch.name)
            if signal is not None:
                at, order = signal.created_at, signal.id
        elif isinstance(branch, Sleep):
            wake = branch.wake_at(started)
            if wake <= now:
                at = wake
        else:
            child = settled[child_ids[index]]
            if ended(child):
                at = child.updated_at
        if at is not None and (best is None or (at, order, index) < best):
            best = (at, order, index)
    if best is None:
        names = [b.name for b in branches if isinstance(b, Suspend)]
        waits = [b.wake_at(started) for b in branches if isinstance(b, Sleep)]
        if d.record is None and not child_ids:  # else the stored record stands
            effects.append(Record(record))
        park = Park(
            codec.encode(names, what="signal names"), "any", min(waits) if waits else None,
            children=tuple(child_ids.values()), signals=tuple(names),
        )  # fmt: skip
        return [*effects, park]
    return [*effects, *_any_won(d, record, best[2], settled, child_ids, view)]


def _payload(signal: StoredSignal, view: View) -> Any:
    return codec.decode_stored(
        signal.payload, flow_id=view.flow_id, position=None, column=f"payload of signal {signal.id}"
    )


def _any_children(record: StoredRecord, flow_id: str) -> dict[int, str]:
    """An ``Any`` record's children: branch index -> child flow id."""
    if not record.result:
        return {}
    state = codec.decode_stored(
        record.result, flow_id=flow_id, position=record.position, column="result"
    )
    return {int(k): v for k, v in (state.get("children") or {}).items()}


def _any_won(
    d: AwaitAny,
    record: StoredRecord,
    index: int,
    settled: dict[str, StoredFlow],
    child_ids: dict[int, str],
    view: View,
) -> list[Effect]:
    """Branch *index* of an ``Any`` won: the signal it takes, its record, the losing
    children it cancels, and what the flow gets at its ``yield``."""
    command, now = d.command, view.now
    branch = command.commands[index]
    effects: list[Effect] = []
    error: BaseException | None = None
    done = record._replace(state=COMPLETED, attempts=1, finished_at=now)
    if isinstance(branch, Suspend):
        signal = next(iter(view.pending(branch.name)))  # the one peeked: taken
        payload = _payload(signal, view)
        value, _ = structured(branch, payload, flow_id=view.flow_id)
        effects.append(Take(SignalUpdate(signal.id, CONSUMED, position=d.position)))
        result: dict[str, Any] = {"index": index, "name": branch.name, "value": payload}
    elif isinstance(branch, Sleep):
        value = None
        result = {"index": index, "name": branch.name, "value": None}
    else:
        done, value, error = child_outcome(record, settled[child_ids[index]], now)
        result = {"index": index, "name": branch.name, "value": value}
    if error is None:
        done = done._replace(result=codec.encode(result, what="an Any result"))
    effects.append(Record(done, GO_ON))
    if command.cancel_losers:
        reason = f"it lost the Any of flow {view.flow_id!r}"
        for other, child_id in child_ids.items():
            if other != index and not ended(settled[child_id]):
                effects.append(CancelFlow(child_id, reason))
    if error is not None:
        return [*effects, Throw(error)]
    return [*effects, Resolve(AnyResult(index, branch.name, value))]


def record_version(d: RecordVersion, view: View, event: Event = None) -> list[Effect]:
    """A ``Version`` reached for the first time: its ``latest``, recorded."""
    latest = d.command.latest
    record = StoredRecord(
        d.position, "version", d.command.name, COMPLETED, result=str(latest),
        attempts=1, started_at=view.now, finished_at=view.now,
    )  # fmt: skip
    return [Record(record, BUFFERED), Resolve(latest)]


def continue_new(d: ContinueNew, view: View, event: Event = None) -> list[Effect]:
    """``ContinueAsNew``: this run ends and the next starts with the command's input;
    an input that cannot be stored fails the command at its ``yield``."""
    now = view.now
    try:
        text = codec.encode(
            d.command.input, what=f"the input of ContinueAsNew in flow {view.flow_id!r}"
        )
    except SerializationError as exc:
        failed = StoredRecord(
            d.position, "continue_as_new", d.command.name, FAILED,
            error=ErrorInfo.from_exception(exc).encode(), attempts=1,
            started_at=now, finished_at=now,
        )  # fmt: skip
        return [Record(failed, DURABLE), Throw(exc)]
    record = StoredRecord(
        d.position, "continue_as_new", d.command.name, COMPLETED, result=text,
        attempts=1, started_at=now, finished_at=now,
    )  # fmt: skip
    return [Record(record), NewRun(text)]


#: The handler of each live decision that has one (the rest are still the driver's).
HANDLERS: dict[type, Callable[[Any, View, Event], list[Effect]]] = {
    RunStep: run_step,
    AwaitSignal: await_signal,
    AwaitChild: await_child,
    AwaitAny: await_any,
    AwaitCondition: await_condition,
    AwaitTimer: await_timer,
    RecordVersion: record_version,
    ContinueNew: continue_new,
}
