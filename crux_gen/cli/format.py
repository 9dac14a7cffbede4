"""How the CLI turns stored values into terminal text: escaping, widths, cuts, tables.

Everything a store holds is text someone else wrote (a flow's name, a step's
result, an error echoing user input). :func:`clean` makes it inert before it
reaches a terminal; :func:`echo` applies it to every line the CLI prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import click

import crux_gen

from ..codec import ErrorInfo
from ..durations import approximate

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


span = approximate


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
    widths = column_widths(headers, rows, fit, shrink)
    return [row_line(row, widths) for row in [headers, *rows]]


def column_widths(
    headers: Sequence[str], rows: Sequence[Sequence[str]], fit: int, shrink: dict[int, int]
) -> list[int]:
    """The widths :func:`table` gives its columns (*rows* escaped already); a list
    printed page by page keeps those of its first page."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    total = sum(widths) + 2 * (len(widths) - 1)
    while total > fit:
        candidates = [i for i, least in shrink.items() if widths[i] > least]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        total -= 1
    return widths


def row_line(row: Sequence[str], widths: Sequence[int]) -> str:
    """One line of a table: each (escaped) cell cut to its column's width."""
    cells = [cut(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
    return "  ".join(cells).rstrip()


_MARKERS = re.compile(r"^ *[\^~]+ *$")  # a traceback's ^^^^ under the code it points at


def fold(line: str, fit: int, hang: int | None = None) -> list[str]:
    """Wrap *line* (already escaped) into lines of at most *fit* characters, losing
    nothing: at a space where it can, inside a long word where it must.

    Continuation lines are indented by *hang* spaces; by default two more than
    *line*'s own indent, or 9 for an unindented ``label    value`` line of ``show``.
    A line that fits is returned as it is; a traceback's line of ``^`` markers is
    cut instead (they point into the code line above, which is wrapped).
    """
    if len(line) <= fit:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    if _MARKERS.match(line):
        return [cut(line, fit)] if lead < fit - 1 else []
    if hang is None:
        hang = lead + 2 if lead else 9
    hang = min(hang, fit // 2)
    start = min(lead, fit // 2)  # where the text of the line being filled starts
    rest = " " * start + line[lead:]
    lines = []
    while len(rest) > fit:
        # Break at a space past the continuation's indent (an earlier break gains
        # nothing: "flow     <a long id>" keeps its label beside the id's start).
        at = rest.rfind(" ", max(start, hang) + 1, fit + 1)
        if at == -1 or not rest[start:at].strip():
            at = fit  # no space to break at: break the word
        lines.append(rest[:at].rstrip(" "))
        rest = " " * hang + rest[at:].lstrip(" ")
        start = hang
    if rest.strip():
        lines.append(rest.rstrip(" "))
    return lines


def fold_all(lines: Sequence[str], fit: int) -> list[str]:
    """Fold every line of *lines* that is longer than *fit* (see :func:`fold`)."""
    return [piece for line in lines for piece in fold(line, fit)]


def traceback_lines(traceback: str, indent: str, *, full: bool = True) -> list[str]:
    """Split a stored traceback into escaped lines (at its ``\\n`` only: a
    ``\\r`` or any other control character inside a line is escaped); unless
    *full*, a run of crux_gen's own frames is one line saying how many are hidden."""
    if not traceback:
        return []
    lines = traceback.rstrip("\n").split("\n")
    if not full:
        lines = hide_own_frames(lines)
    return [indent + clean(line) for line in lines]


_FRAME = re.compile(r'^  File "(?P<path>.*)", line \d+, in ')
# Every folder crux_gen's modules are found in: a checkout's crux_gen/ run from the
# repository root has no stores/ (crux_gen/__init__.py extends __path__ with the
# installed link tree, which has it).
_PACKAGES = [os.path.abspath(folder) for folder in crux_gen.__path__]


def is_own_frame(path: str) -> bool:
    """Tell whether a traceback's *path* is a module of the crux_gen package: below a
    ``crux_gen`` folder (the one it was recorded in, on any machine), naming a
    module this crux_gen has (so a user's ``crux_gen/app.py`` is not one)."""
    parts = re.split(r"[/\\]", path)
    if "crux_gen" not in parts[:-1]:
        return False
    last = len(parts) - 1 - parts[::-1].index("crux_gen")
    inside = parts[last + 1 :]
    if inside in _FORMER_MODULES:
        return True
    return any(
        path.startswith(package + os.sep) or os.path.isfile(os.path.join(package, *inside))
        for package in _PACKAGES
    )


#: Modules of earlier versions of crux_gen, which tracebacks stored by them name.
_FORMER_MODULES = (["driver.py"], ["group_commit.py"])


def hide_own_frames(lines: Sequence[str], note: Callable[[int], str] | None = None) -> list[str]:
    """Replace each run of crux_gen's own frames in a traceback's *lines* (a
    ``File "…", line N, in f`` line and the source lines below it) with one line,
    *note* of the run's length: by default ``  (2 crux_gen frames hidden; --full
    shows them)`` (the dashboard says its own)."""
    note = note or _hidden_note
    shown: list[str] = []
    hidden = 0
    hiding = False
    for line in lines:
        frame = _FRAME.match(line)
        if frame is not None:
            hiding = is_own_frame(frame.group("path"))
        elif hiding and not line.startswith("    "):
            hiding = False
        if hiding:
            hidden += frame is not None
            continue
        if hidden:
            shown.append(note(hidden))
            hidden = 0
        shown.append(line)
    if hidden:
        shown.append(note(hidden))
    return shown


def _hidden_note(count: int) -> str:
    if count == 1:
        return "  (1 crux_gen frame hidden; --full shows it)"
    return f"  ({count} crux_gen frames hidden; --full shows them)"


def error_text(error: ErrorInfo) -> str:
    """Write ``type: message``, escaped, on one line."""
    return clean(f"{error.type}: {error.message}")


def error_lines(
    error: ErrorInfo, indent: str, *, with_traceback: bool, full: bool = True
) -> list[str]:
    """Write an error as ``error: type: message`` and (when asked) its traceback below
    (unless *full*, with crux_gen's own frames hidden)."""
    lines = [f"{indent}error: {error_text(error)}"]
    if with_traceback:
        lines += traceback_lines(error.traceback, indent + "  ", full=full)
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


class JsonList:
    """A JSON list written one item at a time, as :func:`to_json` with ``indent=2``
    would write the whole list: a stream of 100,000 flows is never held at once."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, item: Any) -> None:
        """Write *item* (the list's ``[`` first)."""
        body = "\n".join("  " + line for line in to_json(item, indent=2).split("\n"))
        click.echo(("[\n" if self.count == 0 else ",\n") + body, nl=False)
        self.count += 1

    def close(self) -> None:
        """End the list (``[]`` when empty)."""
        click.echo("\n]" if self.count else "[]")
