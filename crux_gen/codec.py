"""The one cattrs converter: every value crux_gen stores goes through here as JSON.

Nothing is ever pickled. Datetimes are ISO strings, UUIDs strings, enums their
values, attrs classes and dataclasses dicts.
"""

from __future__ import annotations

import json
import traceback as tb
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs

from .errors import SerializationError

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

_loads = json.loads


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
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


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


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed


def encode(value: Any, *, what: str) -> str:
    """Encode *value* as JSON text; ``SerializationError`` naming *what* if it cannot be."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError, cattrs.BaseValidationError) as exc:
        raise SerializationError(what, value, str(exc)) from exc


def decode_many(texts: list[str | None]) -> list[Any]:
    """Decode many JSON texts in one parse (a resume decodes its whole history so)."""
    if not texts:
        return []
    return list(_loads("[" + ",".join("null" if t is None else t for t in texts) + "]"))


def decode(text: str | None) -> Any:
    """Decode JSON text we wrote (``None`` stays ``None``)."""
    if text is None:
        return None
    try:
        return _scan(text, 0)[0]  # the C scanner alone: no whitespace checks around it
    except StopIteration:
        return _loads(text)  # leading whitespace, or not JSON: json's own error


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


@attrs.frozen
class ErrorInfo:
    """A failure as stored: the exception's ``module.qualname``, message and traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture *exc*'s type, message and formatted traceback."""
        kind = type(exc)
        name = kind.__qualname__
        module = kind.__module__
        return cls(
            type=f"{module}.{name}",
            message=str(exc),
            traceback="".join(tb.format_exception(kind, exc, exc.__traceback__)),
        )

    def encode(self) -> str:
        """This error as JSON text, as stores keep it."""
        return _dumps(attrs.asdict(self))

    @classmethod
    def decode(cls, text: str | None) -> ErrorInfo | None:
        """Read back what :meth:`encode` wrote (``None`` stays ``None``)."""
        if text is None:
            return None
        data = _loads(text)
        return cls(
            type=data.get("type", ""),
            message=data.get("message", ""),
            traceback=data.get("traceback", ""),
        )


def utc(value: datetime | None) -> datetime | None:
    """Normalize an aware datetime to UTC."""
    return None if value is None else value.astimezone(timezone.utc)
