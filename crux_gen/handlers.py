"""Pure handlers: a live decision of the interpreter, what the runner knows now
(``View``) and the event it reports (``Returned``, ``Raised``, ``Fired``, or none
at first) in; the effects to carry out (``effects.py``) out.

No store, no clock, no thread, no sleep and no exception used for control flow:
every rule has one owner (a step's attempts and retry policy: ``attempts.py``;
child flows, ``Any`` and ``All``: ``branches.py``; the waits, here), and their
tests need neither store nor thread (``tests/test_handlers.py``). The executor
(``executor.py``) carries the effects out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import codec
from .attempts import INLINE_BACKOFF, refused, retry_plan, run_step
from .branches import (
    MISSING_CHILD,
    await_any,
    await_child,
    child_id_of,
    child_outcome,
    ended,
    new_child,
    run_all,
)
from .codec import ErrorInfo
from .effects import (
    BUFFERED,
    DURABLE,
    GO_ON,
    OUTCOMES,
    Call,
    Effect,
    Event,
    Finish,
    NewRun,
    Park,
    Raised,
    Record,
    Resolve,
    Returned,
    Take,
    Throw,
    View,
)
from .errors import SerializationError, SignalValidationError
from .interpreter import (
    AwaitAny,
    AwaitChild,
    AwaitCondition,
    AwaitSignal,
    AwaitTimer,
    ContinueNew,
    RecordVersion,
    RunAll,
    RunStep,
)
from .records import (
    COMPLETED,
    CONSUMED,
    EXPIRED,
    FAILED,
    REJECTED,
    WAITING,
    SignalUpdate,
    StoredRecord,
)
from .schemas import schema_note
from .status import Status

__all__ = [
    "HANDLERS",
    "INLINE_BACKOFF",
    "MISSING_CHILD",
    "await_any",
    "await_child",
    "await_condition",
    "await_signal",
    "await_timer",
    "child_id_of",
    "child_outcome",
    "continue_new",
    "ended",
    "new_child",
    "record_version",
    "refused",
    "retry_plan",
    "run_all",
    "run_step",
]


def await_condition(d: AwaitCondition, view: View, event: Event = None) -> list[Effect]:
    """A ``WaitUntil``: check its condition; resolve with a truthy value, else park
    until the next check (or expire once its deadline passed). A condition that
    raises, or whose value cannot be stored, fails the wait at its ``yield``."""
    command = d.command
    record = view.record
    if not isinstance(event, OUTCOMES):
        attempts = record.attempts if record is not None else 0
        name = command.name
        return [Call(d.position, command.condition, attempts + 1, view.now, (), name, "condition")]
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
            d.position, "suspend", command.name, WAITING,
            result=schema_note(command.schema), started_at=now, deadline=deadline,
        )  # fmt: skip
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
        expired = record._replace(state=EXPIRED, result=None, finished_at=now)
        finish = Finish(Status.EXPIRED, command.name, "suspend", command.name)
        return [*effects, Record(expired), finish]
    if d.record is None:  # parked here before: the stored record stands as it is
        effects.append(Record(record))
    park = Park(command.name, "suspend", deadline, deadline, command.name)
    return [*effects, park]


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


#: The handler of each live decision of the interpreter.
HANDLERS: dict[type, Callable[[Any, View, Event], list[Effect]]] = {
    RunStep: run_step,
    AwaitSignal: await_signal,
    AwaitChild: await_child,
    AwaitAny: await_any,
    AwaitCondition: await_condition,
    AwaitTimer: await_timer,
    RecordVersion: record_version,
    ContinueNew: continue_new,
    RunAll: run_all,
}
