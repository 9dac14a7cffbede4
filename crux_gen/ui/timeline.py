"""The flow page's timeline: one row per recorded command, its label as HTML text
(which wraps or ellipsises, and never overlaps another row's, also for 20 parallel
branches and on a phone) beside a bar drawn in a small SVG of its own, placed
along the time the shown records span.

A bar's *x* and *width* are in the SVG's own units, 0 to ``TRACK``; each bar also
carries its start and end (``data-start``, ``data-end``: epoch seconds) and the
rows their span (``t0``, ``t1``), so the page's script places every bar again
when records after the last it shows arrive (:func:`place`, mirrored in
``static/ui.js``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import attrs

from ..commands import VALUE_KINDS, describe
from ..durations import approximate
from ..results import HistoryEntry

#: The width of a bar's track in its SVG's units.
TRACK = 1000
#: The longest label (an ``All`` of 20 branches names them all): cut there with "…",
#: whole in the row's tooltip.
LABEL = 80
#: The narrowest bar (an instant command, such as ``ctx.now()``).
MIN_BAR = 5


@attrs.frozen
class Bar:
    """One recorded command's row: its label, its bar and its marks."""

    position: int
    name: str
    label: str
    whole: str
    state: str
    x: float
    width: float
    start: float
    end: float
    attempts: int
    title: str
    retried: bool


@attrs.frozen
class Timeline:
    """The rows, the span they are placed along (*t0* to *t1*, epoch seconds) and
    that span as text."""

    bars: tuple[Bar, ...]
    t0: float
    t1: float
    start: str
    end: str
    span: str


def place(start: float, end: float, t0: float, t1: float) -> tuple[float, float]:
    """A bar's ``(x, width)`` on the track for a command from *start* to *end*."""
    scale = TRACK / (t1 - t0) if t1 > t0 else 0.0
    x = min((start - t0) * scale, TRACK - MIN_BAR)
    width = min(max((end - start) * scale, MIN_BAR), TRACK - x)
    return round(x, 2), round(width, 2)


def timeline(
    entries: Sequence[HistoryEntry],
    now: datetime,
    *,
    created: datetime | None,
    updated: datetime | None,
) -> Timeline:
    """Lay out one row per entry, along the time from *created* (the flow's
    creation, when the rows start at its first command) or the first entry's
    start, to *updated* (its last update, when the rows end at its last) or the
    last entry's end; a command still waiting or retrying lasts until *now*."""
    spans: list[tuple[datetime, datetime]] = []
    cursor = created or next((e.started_at for e in entries if e.started_at), now)
    for entry in entries:
        start = entry.started_at or cursor
        end = entry.finished_at or (now if entry.state in ("waiting", "retrying") else start)
        end = max(end, start)
        spans.append((start, end))
        cursor = end
    first = min([s for s, _ in spans] + ([created] if created else []), default=now)
    last = max([e for _, e in spans] + ([updated] if updated else []), default=now)
    t0, t1 = first.timestamp(), max(last.timestamp(), first.timestamp())
    bars = []
    for entry, (start, end) in zip(entries, spans, strict=True):
        x, width = place(start.timestamp(), end.timestamp(), t0, t1)
        bars.append(
            Bar(
                position=entry.position,
                name=entry.name,
                label=cut(f"#{entry.position} {describe(entry.kind, entry.name)}"),
                whole=f"#{entry.position} {describe(entry.kind, entry.name)}",
                state=entry.state,
                x=x,
                width=width,
                start=start.timestamp(),
                end=end.timestamp(),
                attempts=entry.attempts,
                title=bar_title(entry, start, end),
                retried=entry.attempts > 1,
            )
        )
    return Timeline(
        bars=tuple(bars),
        t0=t0,
        t1=t1,
        start=at(first),
        end=at(last),
        span=approximate(t1 - t0),
    )


def cut(label: str) -> str:
    """*label* at most ``LABEL`` characters long."""
    return label if len(label) <= LABEL else label[: LABEL - 1] + "…"


def at(moment: datetime) -> str:
    """A moment as ``2026-01-01 10:00:00Z`` (UTC)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def bar_title(entry: HistoryEntry, start: datetime, end: datetime) -> str:
    """The bar's tooltip: what it is, its state, how long, how many attempts."""
    facts = [describe(entry.kind, entry.name), entry.state]
    if entry.kind not in VALUE_KINDS:
        verb = "waited" if entry.kind in ("suspend", "sleep", "wait_until") else "took"
        facts.append(f"{verb} {approximate((end - start).total_seconds())}")
    if entry.attempts > 1:
        facts.append(f"{entry.attempts} attempts")
    return ", ".join(facts)
