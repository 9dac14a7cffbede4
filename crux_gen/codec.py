"""The one cattrs converter: every value crux_gen stores goes through here as JSON.

Nothing is ever pickled. Datetimes are ISO strings, UUIDs strings, enums their
values, attrs classes and dataclasses dicts.
"""

from __future__ import annotations

import json
import traceback as tb
import uuid
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

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_loads = json.loads
_PLAIN = (str, int, float, bool, type(None))


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed


def _plain(value: Any) -> bool:
    """True when *value* is JSON as it is (a fast path that skips cattrs)."""
    if isinstance(value, _PLAIN):
        return True
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if type(value) is list:
        return all(_plain(v) for v in value)
    return False


def encode(value: Any, *, what: str) -> str:
    """Encode *value* as JSON text; ``SerializationError`` naming *what* if it cannot be."""
    try:
        data = value if _plain(value) else converter.unstructure(value)
        return _dumps(data)
    except (TypeError, ValueError, RecursionError, cattrs.BaseValidationError) as exc:
        raise SerializationError(what, value, str(exc)) from exc


def decode(text: str | None) -> Any:
    """Decode JSON text (``None`` stays ``None``)."""
    return None if text is None else _loads(text)


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
        kind = type(exc)
        name = kind.__qualname__
        module = kind.__module__
        return cls(
            type=f"{module}.{name}",
            message=str(exc),
            traceback="".join(tb.format_exception(kind, exc, exc.__traceback__)),
        )

    def encode(self) -> str:
        return _dumps(attrs.asdict(self))

    @classmethod
    def decode(cls, text: str | None) -> ErrorInfo | None:
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
