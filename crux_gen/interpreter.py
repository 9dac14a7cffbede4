"""The sans-IO core: drive a flow's generator against its recorded history.

The interpreter takes the generator and the history in and hands decisions out.
It never touches a store, a clock or a step function: the runner executes a
live decision and reports the outcome with :meth:`Interpreter.resolve` or
:meth:`Interpreter.fail`, then asks for the next decision.

    interp = Interpreter(gen, history, flow_id="7f3a", flow_name="onboarding")
    decision = interp.next_decision()   # RunStep | AwaitSignal | ... | Finished | Failed
    interp.resolve(value)               # or interp.fail(exc)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

import attrs

from . import codec
from .commands import (
    COMMAND_TYPES,
    All,
    AnyResult,
    Child,
    Command,
    ContinueAsNew,
    Sleep,
    Step,
    Suspend,
    Version,
    WaitUntil,
    describe,
)
from .commands import Any as AnyOf
from .errors import NonDeterminismError, SignalValidationError, StepFailedError
from .records import COMPLETED, FAILED, StoredRecord


@attrs.frozen
class RunStep:
    """Run the step's function (again, if *record* holds failed attempts)."""

    position: int
    command: Step
    record: StoredRecord | None


@attrs.frozen
class AwaitSignal:
    """Feed the flow a pending signal for the ``Suspend``, or park it."""

    position: int
    command: Suspend
    record: StoredRecord | None


@attrs.frozen
class AwaitCondition:
    """Check the ``WaitUntil`` condition, or park until the next check."""

    position: int
    command: WaitUntil
    record: StoredRecord | None


@attrs.frozen
class AwaitTimer:
    """Resolve the ``Sleep`` if it is due, or park until it is."""

    position: int
    command: Sleep
    record: StoredRecord | None


@attrs.frozen
class AwaitChild:
    """Start the child flow (when *record* is ``None``), run or wait for it."""

    position: int
    command: Child
    record: StoredRecord | None


@attrs.frozen
class AwaitAny:
    """Resolve the ``Any`` with the first of its branches that happened, or park."""

    position: int
    command: AnyOf
    record: StoredRecord | None


@attrs.frozen
class RunAll:
    """Run the unfinished branches of the ``All`` at *position* (its header record);
    *records* are the header's and the branches' (positions + 1 …), or ``None``
    when it was never reached."""

    position: int
    command: All
    records: tuple[StoredRecord, ...] | None


@attrs.frozen
class RecordVersion:
    """A ``Version`` reached for the first time: record ``latest`` and go on."""

    position: int
    command: Version


@attrs.frozen
class ContinueNew:
    """End this run; start the next one of the same flow with the command's input."""

    position: int
    command: ContinueAsNew


@attrs.frozen
class Finished:
    """The flow returned *value*."""

    value: Any


@attrs.frozen
class Failed:
    """The flow body raised *exception* (uncaught)."""

    exception: BaseException


class _Abandoned(BaseException):
    """Thrown into a generator that ignores ``GeneratorExit``, to end it."""


Decision = (
    RunStep | AwaitSignal | AwaitCondition | AwaitTimer | AwaitChild | AwaitAny | RunAll
    | RecordVersion | ContinueNew | Finished | Failed
)  # fmt: skip
_COMMAND_CLASSES = frozenset(COMMAND_TYPES)
_LIVE: dict[str, Any] = {
    "step": RunStep, "suspend": AwaitSignal, "wait_until": AwaitCondition, "sleep": AwaitTimer,
    "child": AwaitChild, "any": AwaitAny,
    "continue_as_new": lambda position, command, record: ContinueNew(position, command),
}  # fmt: skip
_RESOLVED = (COMPLETED, FAILED)


def _value_decoders() -> dict[str, Any]:
    return {
        "now": lambda v: datetime.fromisoformat(v),
        "uuid4": lambda v: uuid.UUID(v),
        "random": float,
    }


_DECODE_VALUE = _value_decoders()


class Interpreter:
    """Replay *history* into *gen*, then hand out live decisions one at a time."""

    def __init__(
        self,
        gen: Generator[Command, Any, Any],
        history: Sequence[StoredRecord],
        *,
        flow_id: str,
        flow_name: str,
    ) -> None:
        self._gen = gen
        self._history = history
        self._recorded = len(history)
        self.flow_id = flow_id
        self.flow_name = flow_name
        self.position = 0
        self._throw: BaseException | None = None
        self._send: Any = None
        self._divergence: NonDeterminismError | None = None
        # Every recorded result, decoded up front by json's C scanner (several times
        # cheaper than one json.loads per record on a long history); a corrupt one is
        # a CorruptRecordError naming its position.
        self._values = codec.decode_many([r.result for r in history], flow_id=flow_id)

    @property
    def is_replaying(self) -> bool:
        """True while recorded commands are being fed back."""
        return self.position < self._recorded

    def resolve(self, value: Any) -> None:
        """The live command evaluates to *value*."""
        self._send, self._throw = value, None

    def fail(self, exc: BaseException) -> None:
        """The live command raises *exc* at its ``yield``."""
        self._send, self._throw = None, exc

    def next_decision(self) -> Decision:
        """Advance the generator to the next command that needs the runner."""
        gen = self._gen
        history = self._history
        values = self._values
        recorded = self._recorded
        # What the next resumption sends or throws, in locals while replaying (one
        # pass of this loop per recorded command: it is a resume's hot path).
        throw, value = self._throw, self._send
        self._throw = self._send = None
        while True:
            try:
                if throw is not None:
                    exc, throw = throw, None
                    command = gen.throw(exc)
                else:
                    command = gen.send(value)
            except StopIteration as stop:
                self._check_divergence()
                self._check_history_consumed("returned")
                return Finished(stop.value)
            except Exception as exc:
                self._check_divergence()
                self._check_history_consumed(f"raised {type(exc).__name__}")
                return Failed(exc)
            value = None
            if self._divergence is not None:
                raise self._divergence
            if command.__class__ not in _COMMAND_CLASSES and not isinstance(command, COMMAND_TYPES):
                throw = TypeError(
                    f"flow {self.flow_id!r} ({self.flow_name}) yielded {command!r}; yield "
                    "Step, Suspend, WaitUntil, Sleep, All, Any, Child, Version or ContinueAsNew"
                )
                continue
            position = self.position  # ctx.now() & co. may have taken positions
            cls = command.__class__
            if cls is Version or cls is All:
                found: RecordVersion | RunAll | _Replayed
                if isinstance(command, Version):
                    found = self._version(command, position)
                else:
                    assert isinstance(command, All)
                    found = self._all(command, position)
                if isinstance(found, _Replayed):
                    value, throw = found.value, found.throw
                    continue
                return found
            self.position = position + 1
            if position >= recorded:
                return _LIVE[command.kind](position, command, None)  # type: ignore[no-any-return]
            record = history[position]
            if record.kind != command.kind or record.name != command.name:
                raise self._diverged(position, record, describe(command.kind, command.name))
            state = record.state
            if state == COMPLETED:
                if command.__class__ is Step:
                    value = values[position]
                else:
                    value, throw = self._recorded_value(command, position)
            elif state == FAILED:
                throw = rebuild_exception(record, flow_id=self.flow_id)
            else:
                return _LIVE[command.kind](position, command, record)  # type: ignore[no-any-return]

    def recorded_value(self, kind: str) -> tuple[bool, Any]:
        """For ``ctx.now()`` & co: ``(True, value)`` when replaying, else ``(False, position)``.

        Either way the call takes the next position in history.
        """
        position = self.position
        self.position += 1
        if position >= self._recorded:
            return False, position
        record = self._history[position]
        if record.kind != kind:
            self._divergence = self._diverged(position, record, describe(kind, kind))
            raise self._divergence
        return True, _DECODE_VALUE[kind](self._values[position])

    def close(self) -> list[Command]:
        """Close the generator (its ``finally`` blocks run); return commands it yielded
        while closing, which are not run."""
        ignored: list[Command] = []
        for _ in range(100):
            try:
                command = self._gen.throw(GeneratorExit)
            except (GeneratorExit, StopIteration):
                return ignored
            except Exception:
                return ignored
            ignored.append(command)
        # It swallows GeneratorExit and yields on: end it with an exception it does
        # not catch, or (if it catches even that) leave it for the garbage collector.
        with contextlib.suppress(BaseException):
            self._gen.throw(_Abandoned)
        with contextlib.suppress(BaseException):
            self._gen.close()
        return ignored

    def _diverged(self, position: int, record: StoredRecord, new: str) -> NonDeterminismError:
        return NonDeterminismError(
            self.flow_id, self.flow_name, position, describe(record.kind, record.name), new
        )

    def _check_history_consumed(self, how: str) -> None:
        """A body that ends with recorded commands left over took another path."""
        if self.position < self._recorded:
            record = self._history[self.position]
            raise self._diverged(self.position, record, f"the end of the flow (it {how})")

    def _check_divergence(self) -> None:
        # A helper like ctx.now() may have diverged inside the generator, and the
        # flow may have caught the error: it is raised here regardless.
        if self._divergence is not None:
            raise self._divergence

    def _recorded_value(self, command: Command, position: int) -> tuple[Any, BaseException | None]:
        """What the recorded command at *position* evaluates to: ``(value, None)``,
        or ``(None, error)`` for a signal its ``Suspend``'s schema now refuses."""
        value = self._values[position]
        if isinstance(command, AnyOf):
            return any_result(command, value, flow_id=self.flow_id)
        if isinstance(command, Suspend) and command.schema is not None:
            return structured(command, value, flow_id=self.flow_id)
        return value, None

    def _version(self, command: Version, position: int) -> RecordVersion | _Replayed:
        """A ``Version`` takes a position only when it is recorded there (or live):
        history that went past this point before the line existed replays as ``0``."""
        if position >= self._recorded:
            self.position = position + 1
            return RecordVersion(position, command)
        record = self._history[position]
        if record.kind == "version" and record.name == command.name:
            self.position = position + 1
            return _Replayed(self._values[position], None)
        return _Replayed(0, None)

    def _all(self, command: All, position: int) -> RunAll | _Replayed:
        """An ``All`` takes its header's position and one per branch after it."""
        count = len(command.commands)
        self.position = position + 1 + count
        if position >= self._recorded:
            return RunAll(position, command, None)
        header = self._history[position]
        if header.kind != "all" or header.name != command.name:
            raise self._diverged(position, header, describe("all", command.name))
        records = tuple(self._history[position : position + 1 + count])
        branches = records[1:]
        if len(branches) == count and all(r.state in _RESOLVED for r in branches):
            for branch, record in zip(command.commands, branches, strict=True):
                if record.kind != branch.kind or record.name != branch.name:
                    raise self._diverged(record.position, record, describe("all", command.name))
            for record in branches:  # the first failure in list order is thrown
                if record.state == FAILED:
                    return _Replayed(None, rebuild_exception(record, flow_id=self.flow_id))
            return _Replayed([self._values[r.position] for r in branches], None)
        return RunAll(position, command, records)


@attrs.frozen
class _Replayed:
    """A compound command resolved from history: what to send or throw."""

    value: Any
    throw: BaseException | None


def structured(command: Suspend, value: Any, *, flow_id: str) -> tuple[Any, BaseException | None]:
    """A signal's payload structured into *command*'s schema: ``(value, None)``, or
    ``(None, SignalValidationError)`` when it does not fit."""
    if command.schema is None:
        return value, None
    try:
        return codec.structure(value, command.schema), None
    except Exception as exc:
        return None, SignalValidationError(
            flow_id, command.name, command.schema, codec.structure_error_text(exc)
        )


def any_result(command: AnyOf, value: Any, *, flow_id: str) -> tuple[Any, BaseException | None]:
    """The ``AnyResult`` an ``Any``'s recorded result (``{"index", "name", "value"}``)
    stands for; a winning ``Suspend``'s payload is structured into its schema."""
    index = value["index"]
    branch = command.commands[index]
    payload = value.get("value")
    if isinstance(branch, Suspend):
        payload, error = structured(branch, payload, flow_id=flow_id)
        if error is not None:
            return None, error
    return AnyResult(index, value["name"], payload), None


def rebuild_exception(record: StoredRecord, *, flow_id: str | None = None) -> BaseException:
    """The failure *record* holds, to throw at the same ``yield`` again on replay.

    >>> gen.throw(rebuild_exception(record, flow_id=flow_id))

    An instance of the recorded class whenever that class is there without
    importing anything (a record never imports a module), made without its
    ``__init__``, ``args`` and attributes restored (see
    :meth:`ErrorInfo.rebuild <crux_gen.codec.ErrorInfo.rebuild>`), so the flow's
    ``except`` takes the same branch as on the first run; :class:`StepFailedError`
    and a warning when it cannot be. An error column that is not an error record
    is a ``CorruptRecordError`` naming *flow_id* and the record's position.
    """
    info = codec.ErrorInfo.decode(record.error, flow_id=flow_id, position=record.position)
    if info is None:  # a failed record without its error: nothing to rebuild
        return StepFailedError(record.name, "builtins.Exception", "(no error recorded)")
    return info.rebuild(record.name)
