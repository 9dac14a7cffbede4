"""The one cattrs converter: every value crux_gen stores goes through here as JSON.

Nothing is ever pickled. Datetimes are ISO strings, UUIDs strings, enums their
values, attrs classes and dataclasses dicts.
"""

from __future__ import annotations

import json
import re
import sys
import traceback as tb
import types
import uuid
import warnings
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from itertools import repeat
from typing import Any, cast

import attrs
import cattrs

from .errors import (
    CorruptRecordError,
    CruxError,
    SerializationError,
    StepFailedError,
    short_repr,
)

#: The deepest nesting of lists and dicts (and of attrs classes, dataclasses… as
#: they are stored) a stored value may have: ``[[1]]`` is 2 deep. Deeper values
#: are a ``SerializationError``. Far under Python's recursion limit, so whatever
#: is stored decodes again, even inside a resume's one parse of a whole history.
MAX_DEPTH = 200
_SHALLOW = 2 * MAX_DEPTH  # JSON text this short cannot nest deeper: each level takes 2 characters

converter = cattrs.Converter()
converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
converter.register_structure_hook(datetime, lambda v, _: _to_datetime(v))
converter.register_unstructure_hook(date, lambda d: d.isoformat())
converter.register_structure_hook(date, lambda v, _: date.fromisoformat(v))
converter.register_unstructure_hook(timedelta, lambda d: d.total_seconds())
converter.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=v))
converter.register_unstructure_hook(uuid.UUID, str)
converter.register_structure_hook(uuid.UUID, lambda v, _: uuid.UUID(str(v)))


def _unstructure_set(value: set[Any] | frozenset[Any]) -> list[Any]:
    items = [converter.unstructure(v) for v in value]
    try:
        return sorted(items)  # a stable order, so equal sets store equal JSON
    except TypeError:
        return items


converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, (set, frozenset)), _unstructure_set
)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (crux_gen never stores it)")


# What every stored text is read with: json's C scanner, refusing the NaN and
# Infinity that json accepts by default (encode refuses them: a row holding one
# was written by something else).
_decoder = json.JSONDecoder(parse_constant=_no_constant)
_loads: Callable[[str], Any] = _decoder.decode


def _default(value: Any) -> Any:
    """What JSON cannot encode as it is (datetimes, sets, attrs classes…) goes
    through the converter; the encoder itself stays in C for plain data."""
    data = converter.unstructure(value)
    if data is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return data


_encoder = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=_default
)
_dumps: Callable[[Any], str] = _encoder.encode
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def _build_fast_dumps() -> Callable[[Any], str]:
    """``JSONEncoder.encode`` builds its C encoder on every call; build it once.
    (No circular check: a cycle ends in ``RecursionError``, reported as such.)
    Falls back to the plain encoder where the C one is missing or differs."""
    try:
        from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]

        if c_make_encoder is None or c_encode_basestring is None:
            return _dumps
        make = c_make_encoder(
            None, _default, c_encode_basestring, None, ":", ",", False, False, False
        )

        def fast(value: Any) -> str:
            if isinstance(value, str):
                return str(c_encode_basestring(value))
            return "".join(make(value, 0))

        sample = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": (1,)}}
        if fast(sample) != _dumps(sample):
            return _dumps
        return fast
    except Exception:  # pragma: no cover - other Pythons
        return _dumps


_dumps = _build_fast_dumps()


def _not_plain(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain JSON")


# Plain JSON only (no converter hook), for what an ErrorInfo keeps of an exception:
# what it encodes decodes back to the same types (but tuples, which become lists).
_plain_dumps: Callable[[Any], str] = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=_not_plain
).encode

_SURROGATE = re.compile("[\ud800-\udfff]")
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET_OR_QUOTE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def _depth(text: str) -> int:
    """How deep lists and dicts nest in JSON text we encoded, counted up to
    ``MAX_DEPTH + 1``: enough to tell whether it is too deep.

    All in C-speed bytes operations (a Python loop per character would cost more
    than the encoding): drop escaped backslashes and quotes, keep only quotes and
    brackets, drop what lies inside strings, then peel innermost ``[]`` pairs off,
    one level per pass.
    """
    data = text.encode("utf-8", "surrogatepass")  # brackets and quotes stay one byte
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    data = data.translate(_SQUARE, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in data:  # strings holding brackets: keep what lies between strings
        data = b"".join(data.split(b'"')[::2])
    depth = 0
    while data and depth <= MAX_DEPTH:
        data = data.replace(b"[]", b"")
        depth += 1
    return depth


def _refusal(text: str) -> str | None:
    """Why JSON text we encoded cannot be stored as it is, or ``None`` when it can.

    Cheap for the common case (a step's small result): ASCII text holds no
    surrogate, and text of ``2 * MAX_DEPTH`` characters or fewer cannot nest deeper.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            found = _SURROGATE.search(text)
            return (
                f"it holds a lone surrogate {found.group() if found else ''!r}, which is not "
                "text (as from os.listdir on a name that is not UTF-8); decode such bytes "
                "with errors='replace', or keep them as os.fsencode(name).hex()"
            )
    if (
        len(text) > _SHALLOW
        and text.count("[") + text.count("{") > MAX_DEPTH
        and _depth(text) > MAX_DEPTH
    ):
        return f"it is nested deeper than {MAX_DEPTH} levels of lists and dicts"
    return None


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"it is nested deeper than {MAX_DEPTH} levels, or it contains itself"
    try:
        return str(exc)[:300] or type(exc).__name__
    except Exception:
        return type(exc).__name__


def encode(value: Any, *, what: str) -> str:
    """Encode *value* as JSON text, or raise ``SerializationError`` naming *what*.

    >>> encode({"to": "ada@example.com", "n": 3}, what="the result of step 'send'")
    '{"to":"ada@example.com","n":3}'

    Refused, so that every store keeps exactly the same values and every stored
    value decodes again: what JSON cannot hold (objects, NaN), lone surrogates,
    ints past Python's int-to-str digit limit, and nesting deeper than
    :data:`MAX_DEPTH`. The error's message never fails to build.
    """
    try:
        text = _dumps(value)
    except (TypeError, ValueError, RecursionError, cattrs.BaseValidationError) as exc:
        raise SerializationError(what, value, _reason(exc)) from exc
    if len(text) <= _SHALLOW and text.isascii():
        return text  # the per-step hot path: no surrogate, too short to nest too deep
    refused = _refusal(text)
    if refused is not None:
        raise SerializationError(what, value, refused)
    return text


def decode_many(
    texts: list[str | None], *, flow_id: str | None = None, column: str = "result"
) -> list[Any]:
    """Decode many JSON texts at C speed (a resume decodes its whole history so).

    >>> decode_many(['"a"', None, "[1]"], flow_id="7f3a")
    ['a', None, [1]]

    Text ``i`` is the record at position ``i`` of flow *flow_id*; when any is not
    one JSON value, ``CorruptRecordError`` names the first such position and
    *column*. Each text is scanned on its own and must end where its value ends:
    texts are never joined, so two corrupt rows (``[1`` and ``2],3``) cannot read
    as values nobody recorded.
    """
    if not texts:
        return []
    plain = cast("list[str]", texts)
    if None in texts:
        plain = ["null" if t is None else t for t in texts]
    try:
        # The C scanner once per text. (A text it cannot start on raises
        # StopIteration, which ends the map early: the lengths then differ.)
        scanned = list(map(_scan, plain, repeat(0)))
        if len(scanned) == len(plain):
            values, ends = zip(*scanned, strict=True)
            if list(ends) == list(map(len, plain)):
                return list(values)
    except (ValueError, RecursionError):
        pass
    # Whitespace around a value (json's own reading accepts it), or a corrupt text:
    # decode each, naming the first that is not JSON.
    where = "(unknown)" if flow_id is None else flow_id
    return [
        decode_stored(text, flow_id=where, position=position, column=column)
        for position, text in enumerate(texts)
    ]


def decode(text: str | None) -> Any:
    """Decode JSON text we wrote (``None`` stays ``None``).

    >>> decode('{"n":[1,2]}')
    {'n': [1, 2]}
    """
    if text is None:
        return None
    try:
        value, end = _scan(text, 0)  # the C scanner alone: no whitespace checks around it
    except StopIteration:
        return _loads(text)  # leading whitespace, or not JSON: json's own error
    if end != len(text):
        return _loads(text)  # trailing whitespace, or more than one value: json decides
    return value


def decode_stored(text: str | None, *, flow_id: str, position: int | None, column: str) -> Any:
    """Decode a stored column, or raise ``CorruptRecordError`` naming where it is.

    >>> decode_stored(row.result, flow_id=row.flow_id, position=row.position, column="result")

    *position* is the record's position in the flow's history, ``None`` for a
    column of the flow itself (``input``, ``result``). ``None`` stays ``None``.
    """
    try:
        return decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, the int digit limit
        raise CorruptRecordError(flow_id, position, column, _reason(exc)) from None


def structure(data: Any, schema: Any) -> Any:
    """Structure plain *data* into *schema* (``None`` or ``Any`` leaves it as it is)."""
    if schema is None or schema is Any:
        return data
    return converter.structure(data, schema)


def structure_error_text(exc: BaseException) -> str:
    """A one-paragraph account of why structuring failed (cattrs groups flattened)."""
    if isinstance(exc, cattrs.BaseValidationError):
        lines = cattrs.transform_error(exc)
        return "; ".join(lines) if lines else str(exc)
    return f"{type(exc).__name__}: {exc}"


def _slot_names(kind: type) -> list[str]:
    """Data an exception keeps outside its ``__dict__``: slots, and the fields of
    builtin bases (``OSError.filename``, ``StopIteration.value``…)."""
    names: list[str] = []
    for klass in kind.__mro__[:-1]:  # not object
        for name, attr in vars(klass).items():
            slot = isinstance(attr, types.MemberDescriptorType | types.GetSetDescriptorType)
            if slot and name != "args" and not name.startswith("__") and name not in names:
                names.append(name)
    return names


def _plain(value: Any) -> tuple[bool, Any]:
    """``(True, value as JSON gives it back)`` when *value* can be stored as plain JSON."""
    try:
        text = _plain_dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False, None
    if _refusal(text) is not None:
        return False, None
    return True, _loads(text)


def _text(value: str) -> str:
    """*value* with lone surrogates escaped, so any store can keep it."""
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__qualname__}: str() raised>"


def _traceback_text(exc: BaseException) -> str:
    try:
        return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        return ""


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
        args_ok, args = _plain(exc.args)
        attributes: dict[str, Any] = {}
        found: dict[str, Any] = {}
        for name in _slot_names(kind):
            try:
                found[name] = getattr(exc, name)
            except Exception:
                continue
        found.update(getattr(exc, "__dict__", {}))
        for name, value in found.items():
            if isinstance(name, str) and (not name.startswith("__") or name == "__notes__"):
                ok, plain = _plain(value)
                attributes[_text(name)] = plain if ok else None
        return cls(
            type=_text(f"{kind.__module__}.{kind.__qualname__}"),
            message=_text(_exception_text(exc)),
            traceback=_text(_traceback_text(exc)),
            args=tuple(args) if args_ok else None,
            attributes=attributes or None,
        )

    def encode(self) -> str:
        """This error as JSON text, as stores keep it.

        >>> ErrorInfo("builtins.ValueError", "bad").encode()
        '{"type":"builtins.ValueError","message":"bad","traceback":""}'
        """
        data: dict[str, Any] = {
            "type": _text(self.type),
            "message": _text(self.message),
            "traceback": _text(self.traceback),
        }
        if self.args is not None:
            data["args"] = list(self.args)
        if self.attributes is not None:
            data["attributes"] = self.attributes
        try:
            return _plain_dumps(data)
        except (TypeError, ValueError, RecursionError):  # built by hand with odd values
            data.pop("args", None)
            data.pop("attributes", None)
            return _plain_dumps(data)

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
        data = decode_stored(text, flow_id=where, position=position, column=column)
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
        kind, why = _exception_class(self.type)
        if kind is not None:
            rebuilt = _instance(kind, self)
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


#: The namespaces of the modules that define registered flows, by module name: a
#: flow module run from a file (not in ``sys.modules``) still has its classes rebuilt.
_flow_modules: dict[str, dict[str, Any]] = {}


def remember_flow_module(fn: Callable[..., Any]) -> None:
    """Let replay rebuild the exception classes of the module that defines the flow
    body *fn* (``@flow`` calls it), also when that module is not in ``sys.modules``.

    >>> remember_flow_module(onboarding_body)
    """
    module, namespace = getattr(fn, "__module__", None), getattr(fn, "__globals__", None)
    if isinstance(module, str) and isinstance(namespace, dict):
        _flow_modules[module] = namespace


def _exception_class(name: str) -> tuple[type[Exception] | None, str]:
    """The ``Exception`` subclass that *name* (``module.qualname``) names, else
    ``None`` and why.

    Nothing is imported and no code runs: the module must already be in
    ``sys.modules`` (``builtins`` always is; so is every module a registered
    flow's module imports, and that module itself) or be the module of a
    registered flow (:func:`remember_flow_module`), and each name is read from a
    ``__dict__``, so neither a module's ``__getattr__`` (a lazy import) nor a
    metaclass is called.
    """
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return None, "is not a module.qualname"
    for cut in range(len(parts) - 1, 0, -1):  # the longest module name first
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        namespace: Any = (
            vars(module) if isinstance(module, types.ModuleType) else _flow_modules.get(module_name)
        )
        obj: Any = namespace.get(parts[cut]) if isinstance(namespace, dict) else None
        for attr in parts[cut + 1 :]:
            obj = vars(obj).get(attr) if isinstance(obj, type) else None
        if obj is None:
            continue
        if isinstance(obj, type) and issubclass(obj, Exception):
            if obj.__module__.split(".")[0] == "crux_gen" and not issubclass(obj, CruxError):
                # crux_gen's own control flow (the driver's Stop, say) is never thrown
                # into a flow because a row names it.
                return None, "is an internal class of crux_gen, not an error it raises"
            return obj, ""
        return None, "is not an Exception subclass"
    return None, "is in no module imported here (a record never imports one)"


_MISSING = object()


def _instance(kind: type[Exception], info: ErrorInfo) -> BaseException | None:
    """An instance of *kind* as *info* recorded it, made without ``__init__``; ``None``
    when the class refuses to be made so, or the result cannot even be shown."""
    args = (info.message,) if info.args is None else info.args
    try:
        try:
            exc = kind.__new__(kind, *args)
        except Exception:
            exc = kind.__new__(kind)
        exc.args = args
        for name, value in (info.attributes or {}).items():
            try:
                if getattr(exc, name, _MISSING) != value:  # OSError.filename2: None stays unset
                    object.__setattr__(exc, name, value)  # past a frozen class's __setattr__
            except Exception:  # a read-only property: what it shows comes from the rest
                continue
        str(exc)
    except Exception:
        return None
    return exc


def utc(value: datetime | None) -> datetime | None:
    """Normalize an aware datetime to UTC."""
    return None if value is None else value.astimezone(timezone.utc)
