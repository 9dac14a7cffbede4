"""The replay check: does a flow's recorded history still replay against new code?

It is what ``crux-gen replay`` runs for every unfinished flow before a deploy,
and it needs no CLI:

    problem = replay_check(store.load(flow_id), onboarding.fn)
    if problem is not None:
        print(problem.kind, problem.text)   # "diverges", "position 0: recorded …"

The check runs no step and writes nothing: it feeds the recorded results back
into the flow's body and stops at the first command (or ``ctx.now()`` & co.)
that is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from . import codec
from .commands import describe
from .errors import CorruptRecordError, NonDeterminismError
from .flow import FlowContext
from .interpreter import Failed, Interpreter
from .records import StoredFlow

#: What ``NonDeterminismError.new`` says when a body ends before its history does.
_END_RETURNED = "the end of the flow (it returned)"
_END_RAISED = "the end of the flow (it raised "


@attrs.frozen
class ReplayProblem:
    """Why a flow's history does not replay against the code.

    ``kind`` is ``"diverges"`` (the code takes another path than the recorded one:
    ``NonDeterminismError`` on resume), ``"raises"`` (the code raises while
    replaying, past its recorded history) or ``"corrupt"`` (a stored value cannot
    be read back). ``position`` is where, when known; ``text`` says it all in one
    sentence: ``position 2: recorded Sleep('nap'), the code now returns``.
    """

    kind: str
    position: int | None
    text: str
    #: The ``NonDeterminismError`` or ``CorruptRecordError`` found (``"diverges"``,
    #: ``"corrupt"``), for a caller that raises it (``fork_flow``).
    error: Exception | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


class _ReachedLive(BaseException):
    """Replay got past the recorded history (raised inside the flow's generator;
    a BaseException, so the flow's ``except Exception`` blocks let it through)."""


class _ReplayDriver:
    """What ``ctx.now()`` & co. read during a replay check: recorded values only."""

    def __init__(self, interp: Interpreter) -> None:
        self.interp = interp

    @property
    def is_replaying(self) -> bool:
        return self.interp.is_replaying

    def set_custom_status(self, value: Any) -> None:
        """Publishing a status writes nothing here (a replay check writes nothing)."""

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        found, value = self.interp.recorded_value(kind)
        if not found:
            raise _ReachedLive
        return value


def replay_check(stored: StoredFlow, fn: Callable[[FlowContext], Any]) -> ReplayProblem | None:
    """Replay *stored*'s history against the flow body *fn* (``Flow.fn``): ``None``
    when it replays cleanly up to its live edge, else the :class:`ReplayProblem`.

    Runs no step and writes nothing: it stops at the first decision that is not
    recorded.
    """
    try:
        flow_input = codec.decode_stored(
            stored.input, flow_id=stored.id, position=None, column="input"
        )
        ctx = FlowContext(input=flow_input, flow_id=stored.id, name=stored.name)
        interp = Interpreter(fn(ctx), stored.records, flow_id=stored.id, flow_name=stored.name)
    except CorruptRecordError as exc:
        return _corrupt(exc)
    ctx._driver = _ReplayDriver(interp)
    try:
        decision = interp.next_decision()
    except NonDeterminismError as exc:
        return ReplayProblem(
            "diverges",
            exc.position,
            f"position {exc.position}: recorded {exc.recorded}, the code now {_now_does(exc)}",
            exc,
        )
    except _ReachedLive:
        return None
    except CorruptRecordError as exc:
        return _corrupt(exc)
    except Exception as exc:  # a record this code cannot read back, for one
        return ReplayProblem("raises", None, f"replay failed: {_exception_text(exc)}")
    finally:
        interp.close()
    if not isinstance(decision, Failed):
        return None  # a live command (or, with nothing recorded, the end): the edge
    # The body raised with its whole history consumed (the interpreter reports an
    # end before that as a NonDeterminismError): the code now fails where it did not.
    position = interp.position
    raised = _exception_text(decision.exception)
    if position == 0:
        return ReplayProblem(
            "raises", 0, f"position 0: the code raises {raised} before its first command"
        )
    last = stored.records[position - 1]
    return ReplayProblem(
        "raises",
        position - 1,
        f"position {position - 1}: after {describe(last.kind, last.name)} "
        f"the code now raises {raised}",
    )


def _corrupt(exc: CorruptRecordError) -> ReplayProblem:
    where = f"position {exc.position}: " if exc.position is not None else ""
    return ReplayProblem(
        "corrupt", exc.position, f"{where}stored {exc.column} cannot be decoded ({exc.reason})", exc
    )


def _now_does(exc: NonDeterminismError) -> str:
    """Say what the code does instead of the recorded command: ``yields Step('b')``,
    ``returns``, or ``raises KeyError: 'gone'``."""
    if exc.new == _END_RETURNED:
        return "returns"
    if exc.new.startswith(_END_RAISED):
        # Raised while the body's own exception was being handled: that is its context.
        cause = exc.__context__
        if isinstance(cause, Exception):
            return f"raises {_exception_text(cause)}"
        return "raises " + exc.new[len(_END_RAISED) :].rstrip(")")
    return f"yields {exc.new}"


def _exception_text(exc: BaseException) -> str:
    """Write ``KeyError: 'gone'``; the bare type name when the message is empty."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
