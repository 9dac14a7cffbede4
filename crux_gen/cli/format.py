"""How the CLI turns stored values into terminal text: escaping, widths, cuts, tables.

Everything a store holds is text someone else wrote (a flow's name, a step's
result, an error echoing user input). :func:`clean` makes it inert before it
reaches a terminal; :func:`echo` applies it to every line the CLI prints.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import click

from ..codec import ErrorInfo

ELLIPSIS = "…"

# C0 controls, DEL, C1 controls, and the bidi embeddings, overrides and isolates:
# characters a terminal obeys (or reorders text by) instead of showing.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What JSON leaves raw in a string (it escapes C0 itself): made \uXXXX escapes.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """Show every control and bidi override character of *text* as an escape
    (``\\x1b``, ``\\u009b``, ``\\n``), so it prints as inert text on one line:
    an ESC character becomes the four characters ``\\x1b``."""
    return _UNSAFE.sub(_visible, text)


def echo(line: str = "", *, err: bool = False) -> None:
    """Print one line, escaped (the CLI's lines carry no newlines of their own)."""
    click.echo(clean(line), err=err)


def width() -> int:
    """Return the terminal's width (80 when output is not a terminal)."""
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def cut(text: str, limit: int) -> str:
    """Put *text* on one line of at most *limit* characters, ``…`` marking a cut."""
    text = " ".join(text.split("\n"))
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Encode *value* as JSON: readable non-ASCII text, but every control character and bidi
    override escaped (``\\u009b``), so the text is safe for a terminal."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def at(moment: datetime | None) -> str:
    """Write a moment as ``2026-01-01 10:00:00Z`` (UTC)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    """Write a duration in at most two units: ``12ms``, ``4.2s``, ``3m5s``, ``2h30m``."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            big, rest = divmod(whole, size)
            small = rest // sub_size
            return f"{big}{unit}{small}{sub}" if small else f"{big}{unit}"
    return f"{whole}s"


def relative(moment: datetime | None, now: datetime) -> str:
    """Say when *moment* is from *now*: ``in 23h59m``, ``5m ago`` or ``now``."""
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], fit: int, shrink: dict[int, int]
) -> list[str]:
    """Rows as aligned columns within *fit* characters: the columns in *shrink*
    (index -> narrowest width) give up characters, widest first, each cell cut with ``…``.
    Cells are escaped first, so widths count what the terminal shows."""
    rows = [[clean(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    total = sum(widths) + 2 * (len(widths) - 1)
    while total > fit:
        candidates = [i for i, least in shrink.items() if widths[i] > least]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        total -= 1
    lines = []
    for row in [headers, *rows]:
        cells = [cut(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def traceback_lines(traceback: str, indent: str) -> list[str]:
    """Split a stored traceback into escaped lines (at its ``\\n`` only: a
    ``\\r`` or any other control character inside a line is escaped)."""
    if not traceback:
        return []
    return [indent + clean(line) for line in traceback.rstrip("\n").split("\n")]


def error_text(error: ErrorInfo) -> str:
    """Write ``type: message``, escaped, on one line."""
    return clean(f"{error.type}: {error.message}")


def error_lines(error: ErrorInfo, indent: str, *, with_traceback: bool) -> list[str]:
    """Write an error as ``error: type: message`` and (when asked) its traceback below."""
    lines = [f"{indent}error: {error_text(error)}"]
    if with_traceback:
        lines += traceback_lines(error.traceback, indent + "  ")
    return lines


def value_lines(
    label: str, value: Any, indent: str, *, full: bool, fit: int, sep: str = ": "
) -> list[str]:
    """*value* as JSON after ``label:``: cut to one line, or (*full*) pretty-printed."""
    head = f"{indent}{label}{sep}"
    if full:
        text = to_json(value, indent=2).split("\n")
        return [head + text[0], *(indent + "  " + line for line in text[1:])]
    return [head + cut(to_json(value), max(fit - len(head), 10))]
