"""The one cattrs converter: every value crux_gen stores goes through here as JSON.

Nothing is ever pickled. Datetimes are ISO strings, UUIDs strings, enums their
values, attrs classes and dataclasses dicts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from itertools import repeat
from typing import Any, cast

import cattrs

from .errors import CorruptRecordError, SerializationError
from .errors import ErrorInfo as ErrorInfo  # its home is errors; kept importable from here
from .exception_data import remember_flow_module as remember_flow_module
from .jsontext import MAX_DEPTH as MAX_DEPTH
from .jsontext import SHALLOW as _SHALLOW
from .jsontext import decoder as _decoder
from .jsontext import loads as _loads
from .jsontext import reason as _reason
from .jsontext import refusal as _refusal

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


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed


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


def utc(value: datetime | None) -> datetime | None:
    """Normalize an aware datetime to UTC."""
    return None if value is None else value.astimezone(timezone.utc)
