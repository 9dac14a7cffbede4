"""JSON text as every store keeps it: the primitives under ``codec`` and ``ErrorInfo``.

A leaf: it imports nothing of crux_gen, so ``errors`` (``ErrorInfo`` reads and writes
JSON) and ``codec`` (which raises crux_gen's errors) both build on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

#: The deepest nesting of lists and dicts (and of attrs classes, dataclasses… as
#: they are stored) a stored value may have: ``[[1]]`` is 2 deep. Deeper values
#: are a ``SerializationError``. Far under Python's recursion limit, so whatever
#: is stored decodes again, even inside a resume's one parse of a whole history.
MAX_DEPTH = 200
SHALLOW = 2 * MAX_DEPTH  # JSON text this short cannot nest deeper: each level takes 2 characters


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (crux_gen never stores it)")


# What every stored text is read with: json's C scanner, refusing the NaN and
# Infinity that json accepts by default (encode refuses them: a row holding one
# was written by something else).
decoder = json.JSONDecoder(parse_constant=_no_constant)
loads: Callable[[str], Any] = decoder.decode


def _not_plain(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain JSON")


# Plain JSON only (no converter hook), for what an ErrorInfo keeps of an exception:
# what it encodes decodes back to the same types (but tuples, which become lists).
plain_dumps: Callable[[Any], str] = json.JSONEncoder(
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


def refusal(text: str) -> str | None:
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
        len(text) > SHALLOW
        and text.count("[") + text.count("{") > MAX_DEPTH
        and _depth(text) > MAX_DEPTH
    ):
        return f"it is nested deeper than {MAX_DEPTH} levels of lists and dicts"
    return None


def reason(exc: BaseException) -> str:
    """Why encoding or decoding failed, in a few words, never raising."""
    if isinstance(exc, RecursionError):
        return f"it is nested deeper than {MAX_DEPTH} levels, or it contains itself"
    try:
        return str(exc)[:300] or type(exc).__name__
    except Exception:
        return type(exc).__name__


def plain(value: Any) -> tuple[bool, Any]:
    """``(True, value as JSON gives it back)`` when *value* can be stored as plain JSON."""
    try:
        text = plain_dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False, None
    if refusal(text) is not None:
        return False, None
    return True, loads(text)


def safe_text(value: str) -> str:
    """*value* with lone surrogates escaped, so any store can keep it."""
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
