"""A step's attempts: call its function, record its value or its failure, and the
retry policy (``retry_plan``, with the inline backoff) that says when it is tried
again. Pure: effects out (``effects.py``), used by the step handler and by each
step of an ``All`` (``branches.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from . import codec
from .codec import ErrorInfo
from .commands import Retry
from .effects import (
    DURABLE,
    OUTCOMES,
    Call,
    Effect,
    Event,
    Park,
    Raised,
    Record,
    Resolve,
    Returned,
    Throw,
    Timer,
    View,
)
from .errors import SerializationError
from .interpreter import RunStep
from .records import COMPLETED, FAILED, RETRYING, StoredRecord

log = logging.getLogger("crux_gen")

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
    if not isinstance(event, OUTCOMES):  # first, or after a Timer (Fired)
        waiting = record is not None and record.wake_at is not None and record.wake_at > view.now
        if event is None and waiting:  # parked for a backoff that has not run out
            assert record is not None and record.wake_at is not None
            return [Park(command.name, "retry", record.wake_at)]
        attempts = record.attempts if record is not None else 0
        started = view.now if record is None or record.started_at is None else record.started_at
        return [Call(d.position, command.fn, attempts + 1, started, command.limits, command.name)]
    call = event.call
    if isinstance(event, Raised):
        exc = event.exc
        error = ErrorInfo.from_exception(exc).encode()
        wake = retry_plan(command.retry, exc, call.attempt, view.now)
        if event.took is not None:  # the crux_gen logger logs DEBUG
            outcome = "failed" if wake is None else "retry"
            _log_attempt(view.flow_id, command.name, event, outcome, type(exc).__name__)
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
        if event.took is not None:
            _log_attempt(view.flow_id, command.name, event, "failed", type(exc).__name__)
        # Recorded as the step's failure (not retried): a replay throws the same at
        # this step without calling it, and a flow that catches it goes on.
        error = ErrorInfo.from_exception(exc).encode()
        return _failed(d.position, "step", command.name, exc, error, call, view.now)
    done = StoredRecord(
        d.position, "step", command.name, COMPLETED, result=encoded,
        attempts=call.attempt, started_at=call.started, finished_at=view.now,
    )  # fmt: skip
    if event.took is not None:
        _log_attempt(view.flow_id, command.name, event, "ok", None)
    return [Record(done, DURABLE), Resolve(codec.decode(encoded))]


def _log_attempt(
    flow_id: str, step: str, event: Returned | Raised, outcome: str, error: str | None
) -> None:
    """The DEBUG line of one step attempt: *outcome* is ``ok``, ``retry`` (it raised
    *error*, a class name, and is tried again) or ``failed`` (the step's end).
    Nothing is built while DEBUG is off (the attempt is timed for an observer)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    took = event.took or 0.0
    log.debug(
        "flow %s: step %r attempt %d took %s: %s",
        flow_id, step, event.call.attempt,
        f"{took * 1000:.1f}ms" if took < 1 else f"{took:.2f}s",
        outcome if error is None else f"{outcome} ({error})",
        extra={
            "flow_id": flow_id, "step": step, "attempt": event.call.attempt,
            "duration": took, "outcome": outcome, "error": error,
        },
    )  # fmt: skip


def _failed(
    position: int, kind: str, name: str, exc: BaseException, error: str, call: Call, now: float
) -> list[Effect]:
    failed = StoredRecord(
        position, kind, name, FAILED, error=error,
        attempts=call.attempt, started_at=call.started, finished_at=now,
    )  # fmt: skip
    return [Record(failed, DURABLE), Throw(exc)]


def refused(position: int, kind: str, name: str, exc: Exception, now: float) -> list[Effect]:
    """A command whose own value cannot be stored (a child's input, ContinueAsNew's)
    or whose child the store refused: recorded as its failure and thrown at its
    ``yield`` (a replay throws the same)."""
    failed = StoredRecord(
        position, kind, name, FAILED, error=ErrorInfo.from_exception(exc).encode(),
        attempts=1, started_at=now, finished_at=now,
    )  # fmt: skip
    return [Record(failed, DURABLE), Throw(exc)]
