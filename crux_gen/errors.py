"""One exception tree: every error crux_gen raises derives from :class:`CruxError`.

Each error keeps its data as attributes and builds its message from them.
:class:`ErrorInfo` is a failure as stored, and raised again on replay.
"""

from __future__ import annotations

import reprlib
import warnings
from typing import Any

import attrs

from . import exception_data, jsontext


class _SafeRepr(reprlib.Repr):
    """``reprlib`` with limits, and ints past Python's decimal limit described."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 80
        self.maxlong = 80
        self.maxother = 100
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 5

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than int-to-str allows
            return f"<int of about {int(x.bit_length() * 0.30103) + 1} digits>"


_SAFE_REPR = _SafeRepr()


def short_repr(value: object, limit: int = 200) -> str:
    """A ``repr`` of *value* for a message: at most *limit* characters, never raising.

    >>> short_repr(10**5000)
    '<int of about 5001 digits>'

    Containers are shown to a few levels and items, strings cut; an object
    whose own ``repr`` raises is shown by its type.
    """
    try:
        shown = _SAFE_REPR.repr(value)
    except Exception:
        shown = f"<{type(value).__qualname__} object>"
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


class CruxError(Exception):
    """The root of every error crux_gen raises."""


class _BadArgument(CruxError):
    """*what* names the argument, *value* is what was given and *problem* says what
    is wrong with it and what to give instead."""

    def __init__(self, what: str, value: object, problem: str) -> None:
        self.what = what
        self.value = value
        self.problem = problem
        super().__init__(f"{what} {short_repr(value)} {problem}")


class InvalidValueError(_BadArgument, ValueError):
    """A bad argument: of the right type, but a value crux_gen cannot take.

    >>> Sleep("nap", "99999999999d")
    InvalidValueError: Sleep duration '99999999999d' is longer than 100 years (36525 days), ...
    """


class InvalidTypeError(_BadArgument, TypeError):
    """A bad argument: not of a type crux_gen can take.

    >>> signal_flow(b"7f3a", "go", None, store=store)
    InvalidTypeError: flow id b'7f3a' is a bytes, not a str; give the id as a str
    """


class FlowNotFoundError(CruxError, LookupError):
    """No flow with this id is stored."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(
            f"no flow with id {flow_id!r} in this store; check the id, or the store path"
        )


class FlowClosedError(CruxError):
    """The flow is finished (or its wait has expired) and takes no more signals."""

    def __init__(self, flow_id: str, status: str, detail: str = "") -> None:
        self.flow_id = flow_id
        self.status = status
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"flow {flow_id!r} is {status}{extra}; it takes no more signals or runs")


class FlowStateError(CruxError, ValueError):
    """The flow's status does not allow this (e.g. retrying a flow that did not fail)."""

    def __init__(self, flow_id: str | None, status: str, wanted: str) -> None:
        self.flow_id = flow_id
        self.status = status
        self.wanted = wanted
        which = f"flow {flow_id!r} is" if flow_id else "a flow that is"
        super().__init__(f"{which} {status}; {wanted}")


class FlowBusyError(CruxError):
    """Another runner holds the flow's lease right now."""

    def __init__(self, flow_id: str, lease_expires: Any = None) -> None:
        self.flow_id = flow_id
        self.lease_expires = lease_expires
        until = f" until {lease_expires.isoformat()}" if lease_expires is not None else ""
        super().__init__(
            f"flow {flow_id!r} is being run by another runner (lease held{until}); "
            "try again later, or let the worker advance it"
        )


class LeaseLostError(CruxError):
    """This runner's lease was taken over (it expired); it may write nothing more."""

    def __init__(self, flow_id: str, owner: str) -> None:
        self.flow_id = flow_id
        self.owner = owner
        super().__init__(
            f"flow {flow_id!r}: runner {owner!r} lost its lease (it expired and another "
            "runner took the flow); nothing more was written by this runner"
        )


class FlowNameConflictError(CruxError):
    """A flow id already belongs to a flow of another name."""

    def __init__(self, flow_id: str, stored_name: str, requested_name: str) -> None:
        self.flow_id = flow_id
        self.stored_name = stored_name
        self.requested_name = requested_name
        super().__init__(
            f"flow id {flow_id!r} belongs to flow {stored_name!r}, not {requested_name!r}; "
            "use another id, or run it with the flow it belongs to"
        )


class FlowIdTakenError(CruxError):
    """A ``Child``'s ``flow_id`` names a flow that is not this parent's child (a
    top-level flow, or another parent's child): raised at the parent's ``yield``.
    A child has one parent, the flow whose ``Child`` started it."""

    def __init__(self, flow_id: str, parent_id: str | None, requested_by: str) -> None:
        self.flow_id = flow_id
        self.parent_id = parent_id
        self.requested_by = requested_by
        owner = "a top-level flow" if parent_id is None else f"a child of flow {parent_id!r}"
        super().__init__(
            f"flow id {flow_id!r} is taken: it is {owner}, not of flow {requested_by!r}; "
            "a Child's flow_id must be new (or already this flow's child): give another id"
        )


class FlowNotRegisteredError(CruxError, LookupError):
    """No ``@flow`` with this name is registered in this process.

    >>> resume(flow_id, store=store)
    FlowNotRegisteredError: no flow named 'onboarding' is registered (needed by flow '7f3a');
    import the module that defines @flow("onboarding") or pass flows=[...]

    *hint* is the fix that applies where the error is raised or reported; it may
    hold ``{name}``, replaced by the flow's name. The default (:data:`PYTHON_HINT`)
    fits a Python caller of ``resume`` or ``Worker``; a caller that knows better
    (the ``crux-gen worker`` command: "pass the module that defines it as MODULE")
    gives its own, or swaps it on a caught error with :meth:`with_hint`.
    """

    #: The fix for a Python caller of ``resume(...)`` or ``Worker(...)``.
    PYTHON_HINT = 'import the module that defines @flow("{name}") or pass flows=[...]'

    def __init__(self, name: str, flow_id: str | None = None, *, hint: str | None = None) -> None:
        self.name = name
        self.flow_id = flow_id
        self.hint = (self.PYTHON_HINT if hint is None else hint).replace("{name}", name)
        of = f" (needed by flow {flow_id!r})" if flow_id else ""
        super().__init__(f"no flow named {name!r} is registered{of}; {self.hint}")

    def with_hint(self, hint: str) -> FlowNotRegisteredError:
        """The same error with *hint* as its fix (``{name}`` is replaced by the name).

        >>> raise exc.with_hint("pass the module that defines it as MODULE") from None
        """
        return type(self)(self.name, self.flow_id, hint=hint)


class NonDeterminismError(CruxError):
    """The flow yielded a different command than history recorded at that position."""

    def __init__(self, flow_id: str, name: str, position: int, recorded: str, new: str) -> None:
        self.flow_id = flow_id
        self.name = name
        self.position = position
        self.recorded = recorded
        self.new = new
        super().__init__(
            f"flow {flow_id!r} ({name}) at position {position} recorded {recorded} but the "
            f"code now yields {new}; deploy code that yields the recorded command, or "
            "start a new flow (the stored flow was left untouched)"
        )


class SerializationError(CruxError, TypeError):
    """A value could not be stored as JSON (nothing was stored).

    >>> signal_flow(flow_id, "go", {"sock": socket.socket()}, store=store)
    SerializationError: the payload of signal 'go' for flow '7f3a' cannot be stored as JSON: ...

    The message shows the value cut short (``short_repr``), so building it never
    fails, however huge, deep or odd the value.
    """

    def __init__(self, what: str, value: Any, reason: str) -> None:
        self.what = what
        self.value = value
        self.reason = reason
        super().__init__(
            f"{what} cannot be stored as JSON: {reason} (value {short_repr(value)}); return "
            "JSON-able data: dicts, lists, str, int, float, bool, None, datetimes, attrs classes"
        )


class SignalValidationError(CruxError, ValueError):
    """A signal's payload does not fit the schema of the ``Suspend`` it is for."""

    def __init__(self, flow_id: str, signal: str, schema: Any, reason: str) -> None:
        self.flow_id = flow_id
        self.signal = signal
        self.schema = schema
        self.reason = reason
        schema_name = getattr(schema, "__qualname__", repr(schema))
        super().__init__(
            f"flow {flow_id!r}: signal {signal!r} does not fit schema {schema_name}: "
            f"{reason}; the signal was kept as rejected and the flow still waits"
        )


class StepFailedError(CruxError):
    """A recorded step failure whose original exception class cannot be rebuilt."""

    def __init__(self, step: str, type: str, message: str, traceback: str = "") -> None:
        self.step = step
        self.type = type
        self.message = message
        self.traceback = traceback
        super().__init__(f"step {step!r} failed with {type}: {message}")


class ChildFlowError(CruxError):
    """A child flow (``Child``) ended ``failed``, ``expired`` or ``cancelled``:
    raised at the parent's ``yield``, with the child's *flow_id*, *status* and
    *error* (an ``ErrorInfo``, or ``None``)."""

    def __init__(self, flow_id: str, status: str, error: str | None = None) -> None:
        self.flow_id = flow_id
        self.status = status
        self.error_record = error  # the child's error as stored (JSON text), or None
        detail = ""
        info = self.error
        if info is not None:
            detail = f": {info.type}: {info.message}"
        super().__init__(f"child flow {flow_id!r} ended {status}{detail}")

    @property
    def error(self) -> ErrorInfo | None:
        """The child's error (``crux_gen.ErrorInfo``), or ``None``."""
        try:
            return ErrorInfo.decode(self.error_record, flow_id=self.flow_id)
        except CruxError:
            return None


class StoreError(CruxError):
    """The store cannot be read or written (full disk, read-only file, lost
    connection, not a crux_gen store); the message names the file or server."""


class StoreBusyError(StoreError):
    """Another writer kept the store locked for longer than its busy timeout."""


class StoreSchemaError(StoreError):
    """The store was written by a newer crux_gen, or is not a crux_gen store."""


class RecordConflictError(StoreError):
    """A record was written at a position that is already taken, or past a gap."""

    def __init__(self, flow_id: str, position: int, recorded: int) -> None:
        self.flow_id = flow_id
        self.position = position
        self.recorded = recorded
        super().__init__(
            f"flow {flow_id!r}: a record at position {position} conflicts with the "
            f"{recorded} recorded command(s); nothing was written"
        )


class CorruptRecordError(CruxError):
    """A stored value cannot be decoded: it names the flow, the position and the column."""

    def __init__(self, flow_id: str, position: int | None, column: str, reason: str) -> None:
        self.flow_id = flow_id
        self.position = position
        self.column = column
        self.reason = reason
        at = f" at position {position}" if position is not None else ""
        super().__init__(
            f"flow {flow_id!r}{at}: stored {column} cannot be decoded ({reason}); the row "
            "was changed outside crux_gen or written by an incompatible version"
        )


class MissingDependencyError(CruxError, ImportError):
    """An optional part of crux_gen is used without the packages it needs."""

    def __init__(self, what: str, extra: str, missing: str) -> None:
        self.what = what
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{what} needs {missing}, which is not installed; pip install 'crux-gen[{extra}]'"
        )


def _str_keyed(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


@attrs.frozen
class ErrorInfo:
    """A failure as stored: the exception's ``module.qualname``, message, traceback,
    and what replay needs to raise it again: its ``args`` and the attributes it
    carried that JSON can hold (``None`` where nothing was recorded).

    >>> ErrorInfo.from_exception(KeyError("sku-1"))
    ErrorInfo(type='builtins.KeyError', message="'sku-1'", traceback='...', args=('sku-1',), ...)
    """

    type: str
    message: str
    traceback: str = ""
    args: tuple[Any, ...] | None = attrs.field(default=None, hash=False)
    attributes: dict[str, Any] | None = attrs.field(default=None, hash=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture *exc*: its type, message, formatted traceback, ``args`` (when JSON
        can hold them) and attributes (each one JSON cannot hold kept as ``None``).

        >>> info = ErrorInfo.from_exception(exc)
        """
        kind = type(exc)
        args_ok, args = jsontext.plain(exc.args)
        attributes: dict[str, Any] = {}
        found: dict[str, Any] = {}
        for name in exception_data.slot_names(kind):
            try:
                found[name] = getattr(exc, name)
            except Exception:
                continue
        found.update(getattr(exc, "__dict__", {}))
        for name, value in found.items():
            if isinstance(name, str) and (not name.startswith("__") or name == "__notes__"):
                ok, plain = jsontext.plain(value)
                attributes[jsontext.safe_text(name)] = plain if ok else None
        return cls(
            type=jsontext.safe_text(f"{kind.__module__}.{kind.__qualname__}"),
            message=jsontext.safe_text(exception_data.exception_text(exc)),
            traceback=jsontext.safe_text(exception_data.traceback_text(exc)),
            args=tuple(args) if args_ok else None,
            attributes=attributes or None,
        )

    def encode(self) -> str:
        """This error as JSON text, as stores keep it.

        >>> ErrorInfo("builtins.ValueError", "bad").encode()
        '{"type":"builtins.ValueError","message":"bad","traceback":""}'
        """
        data: dict[str, Any] = {
            "type": jsontext.safe_text(self.type),
            "message": jsontext.safe_text(self.message),
            "traceback": jsontext.safe_text(self.traceback),
        }
        if self.args is not None:
            data["args"] = list(self.args)
        if self.attributes is not None:
            data["attributes"] = self.attributes
        try:
            return jsontext.plain_dumps(data)
        except (TypeError, ValueError, RecursionError):  # built by hand with odd values
            data.pop("args", None)
            data.pop("attributes", None)
            return jsontext.plain_dumps(data)

    @classmethod
    def decode(
        cls,
        text: str | None,
        *,
        flow_id: str | None = None,
        position: int | None = None,
        column: str = "error",
    ) -> ErrorInfo | None:
        """Read back what :meth:`encode` wrote (``None`` stays ``None``), or raise
        ``CorruptRecordError`` naming *flow_id*, *position* and *column*.

        >>> ErrorInfo.decode(record.error, flow_id=flow_id, position=record.position)

        Records written before ``args`` and ``attributes`` were kept read back
        with both ``None``.
        """
        if text is None:
            return None
        where = "(unknown)" if flow_id is None else flow_id
        try:
            data = jsontext.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, the int digit limit
            raise CorruptRecordError(where, position, column, jsontext.reason(exc)) from None
        problem = None
        if not isinstance(data, dict):
            problem = f"a JSON {type(data).__name__}, not an object"
        elif not isinstance(data.get("type"), str):
            problem = "its type is not a string"
        elif not all(isinstance(data.get(k, ""), str) for k in ("message", "traceback")):
            problem = "its message or traceback is not a string"
        elif not isinstance(data.get("args"), list | None):
            problem = "its args are not a list"
        elif data.get("attributes") is not None and not _str_keyed(data["attributes"]):
            problem = "its attributes are not an object"
        if problem is not None:
            raise CorruptRecordError(where, position, column, f"{problem}: {short_repr(data)}")
        args = data.get("args")
        return cls(
            type=data["type"],
            message=data.get("message", ""),
            traceback=data.get("traceback", ""),
            args=None if args is None else tuple(args),
            attributes=data.get("attributes"),
        )

    def rebuild(self, step: str = "?") -> BaseException:
        """The recorded exception again, for replay to throw at the same ``yield``.

        >>> raise info.rebuild("charge-card")

        An instance of the recorded class whenever that class is there without
        importing anything: a builtin, or a class of a module already imported
        (the module of a registered flow, and every module it imports, is). It is
        built without calling its ``__init__``, with its ``args`` and attributes
        restored, so an ``except ThatClass:`` takes the same branch as on the
        first run. **Reading a record never imports a module**: any other record
        gives :class:`StepFailedError` (with the recorded type, message and
        traceback) and a warning naming the class.
        """
        kind, why = exception_data.exception_class(self.type)
        if (
            kind is not None
            and kind.__module__.split(".")[0] == "crux_gen"
            and not issubclass(kind, CruxError)
        ):
            # crux_gen's own control flow (the executor's classes, say) is never thrown into
            # a flow because a row names it.
            kind, why = None, "is an internal class of crux_gen, not an error it raises"
        if kind is not None:
            args = (self.message,) if self.args is None else self.args
            rebuilt = exception_data.instance(kind, args, self.attributes)
            if rebuilt is not None:
                return rebuilt
            why = "cannot be rebuilt from what was recorded"
        warnings.warn(
            f"step {step!r} recorded a failure of class {self.type}, which {why}; the "
            f"replay raises StepFailedError instead, which an `except` naming "
            f"{self.type.rsplit('.', 1)[-1]} does not catch. Import the module that "
            "defines it in the module of your flows: a stored record never imports one",
            UserWarning,
            stacklevel=3,
        )
        return StepFailedError(step, self.type, self.message, self.traceback)
