"""``crux-gen show``'s lines of a flow's events and streams (``crux_gen.streams``),
every stored string escaped and folded as the rest of ``show``."""

from __future__ import annotations

from typing import Any

from .format import clean, fold_all, value_lines

PAD = "       "


def published_lines(data: dict[str, list[dict[str, Any]]], *, full: bool, fit: int) -> list[str]:
    """The ``events (N)`` and ``streams (N)`` parts of ``show`` (none when empty)."""
    lines: list[str] = []
    if data["events"]:
        lines += ["", f"events ({len(data['events'])})"]
        for event in data["events"]:
            lines.append(f"  {clean(repr(event['key']))}  set {clean(event['set_at'])}")
            lines += value_lines("value", event["value"], PAD, full=full, fit=fit)
    if data["streams"]:
        lines += ["", f"streams ({len(data['streams'])})"]
        for stream in data["streams"]:
            values = stream["values"]
            state = "closed" if stream["closed"] else "open"
            lines.append(f"  {clean(repr(stream['key']))}  {len(values)} values, {state}")
            lines += value_lines("values", values, PAD, full=full, fit=fit)
    return fold_all(lines, fit)
