"""Regenerate docs/trace.png, the README's picture of one flow's trace.

    .venv/bin/python docs/trace.py [--out docs/trace.png]

Records the spans of one flow with ``crux_gen.otel`` and the SDK's in-memory
exporter: an ``order`` flow started in a request's span runs two steps and parks
on its ``paid`` signal; a webhook's span signals it; a worker pass (no span of its
own) runs the rest, whose ``ship`` step fails once and then succeeds, calling a
carrier's API in a span of its own. Draws those spans as a timeline (an SVG: a
row per span, indented under its parent, the idle time between slices shortened,
a dashed arrow for each link) and saves it with Debian's headless Chromium
(``/usr/bin/chromium``; Playwright from the ``test`` extra).
``tests/test_trace_picture.py`` does the same into a temporary folder.
"""

from __future__ import annotations

import argparse
import html
import os
import tempfile
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from crux_gen import FlowContext, Registry, Retry, Step, Suspend, flow, signal_flow
from crux_gen.otel import instrument, uninstrument
from crux_gen.stores.memory import MemoryStore
from crux_gen.worker import Worker

CHROMIUM = "/usr/bin/chromium"
OUT = Path(__file__).resolve().parent / "trace.png"
registry = Registry()
#: The tracer of the app's own spans (the requests, the carrier's API call).
TRACER: list[Any] = []


def work(seconds: float) -> None:
    time.sleep(seconds)  # what a step's call takes, so that its bar has a length


def ship(tries: list[int]) -> dict[str, str]:
    tries.append(1)
    with TRACER[0].start_as_current_span("POST carrier /shipments", kind=SpanKind.CLIENT):
        work(0.03)
        if len(tries) == 1:
            raise ConnectionError("carrier timed out")
    return {"tracking": "TRK-1"}


@flow("order", registry=registry)
def order(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    tries: list[int] = []
    yield Step("reserve-stock", lambda: work(0.04))
    yield Step("request-payment", lambda: work(0.06))
    paid = yield Suspend("paid")
    shipped = yield Step("ship", lambda: ship(tries), retry=Retry(attempts=3, delay=0))
    return {"paid": paid, **shipped}


def record() -> list[ReadableSpan]:
    """The spans of one ``order`` flow, from its request to its end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    TRACER[:] = [provider.get_tracer("shop")]
    instrument(tracer_provider=provider)
    try:
        store = MemoryStore()
        with TRACER[0].start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            work(0.01)
            started = order.run(input={"item": "kettle"}, store=store)
            work(0.01)
        time.sleep(0.2)  # parked: days, in production
        with TRACER[0].start_as_current_span("POST /webhooks/payments", kind=SpanKind.SERVER):
            work(0.01)
            signal_flow(started.flow_id, "paid", {"amount": 49}, store=store)
        time.sleep(0.2)  # until a worker's pass
        Worker(store, [order]).run_once()
    finally:
        uninstrument()
        provider.shutdown()
    return list(exporter.get_finished_spans())


# -- the picture ------------------------------------------------------------------------

LABEL, WIDTH, ROW, TOP, GAP = 330, 600, 28, 58, 70  # pixels


def rows(spans: Sequence[ReadableSpan]) -> list[tuple[int, ReadableSpan]]:
    """``(depth, span)`` in the order of a trace view: each span under its parent."""
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    out: list[tuple[int, ReadableSpan]] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            out.append((depth, span))
            walk(span.context.span_id if span.context is not None else None, depth + 1)

    walk(None, 0)
    return out


def timeline(spans: Sequence[ReadableSpan]) -> Any:
    """A function from a time (ns) to x: busy time to scale, each idle stretch
    between spans shortened to ``GAP`` pixels; and the idle stretches' x."""
    busy: list[list[int]] = []
    for start, end in sorted((s.start_time or 0, s.end_time or 0) for s in spans):
        if busy and start <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], end)
        else:
            busy.append([start, end])
    total = sum(end - start for start, end in busy) or 1
    scale = (WIDTH - GAP * (len(busy) - 1)) / total
    offsets, x = [], 0.0
    for start, end in busy:
        offsets.append((start, end, x))
        x += (end - start) * scale + GAP

    def at(t: int) -> float:
        for start, end, x0 in offsets:
            if t <= end:
                return LABEL + x0 + max(0, t - start) * scale
        return LABEL + WIDTH

    gaps = [LABEL + x0 - GAP for _, _, x0 in offsets[1:]]
    return at, gaps


def colour(span: ReadableSpan) -> str:
    if span.status.status_code == StatusCode.ERROR:
        return "#d64545"
    if span.name.startswith("flow "):
        return "#3b6fd4"
    if span.name.startswith(("step ", "wait ")):
        return "#34a36a"
    return "#8a5cc7" if span.kind == SpanKind.CLIENT else "#8c8c8c"


def note(span: ReadableSpan) -> str:
    """What a row says after the span's name: its kind and crux attributes."""
    a = dict(span.attributes or {})
    parts = [span.kind.name]
    if "crux.flow.run" in a:
        parts.append(f"run {a['crux.flow.run']}, {a.get('crux.flow.status', '')}")
    if "crux.step.attempt" in a:
        parts.append(f"attempt {a['crux.step.attempt']}")
    if span.status.status_code == StatusCode.ERROR:
        parts.append("ERROR")
    return " · ".join(parts)


def svg(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an SVG timeline: a row per span, a dashed arrow per link."""
    at, gaps = timeline(spans)
    laid = rows(spans)
    height = TOP + ROW * len(laid) + 56
    where: dict[int, tuple[float, float, float]] = {}  # span id -> x0, x1, y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + WIDTH + 20}" '
        f'height="{height}" font-family="DejaVu Sans, sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker>'
        "</defs>",
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">One flow\'s trace, '
        "drawn from the spans crux_gen.otel recorded</text>",
        '<text x="10" y="36" fill="#555" font-size="11">started in a request, parked on a '
        "signal, signalled by a webhook, finished by a worker (its first ship attempt "
        "failed)</text>",
    ]
    for x in gaps:
        out.append(
            f'<rect x="{x + 6:.1f}" y="{TOP - 8}" width="{GAP - 12}" height="{ROW * len(laid)}" '
            'fill="#f1f1f1"/>'
            f'<text x="{x + GAP / 2:.1f}" y="{TOP + ROW * len(laid) + 14}" fill="#777" '
            'text-anchor="middle" font-size="10">idle (shortened)</text>'
        )
    for n, (depth, span) in enumerate(laid):
        y = TOP + n * ROW
        x0, x1 = at(span.start_time or 0), at(span.end_time or 0)
        if span.context is not None:
            where[span.context.span_id] = (x0, x1, y)
        label = html.escape(span.name)
        out.append(
            f'<text x="{10 + 16 * depth}" y="{y + 12}">{label} '
            f'<tspan fill="#777" font-size="10">{html.escape(note(span))}</tspan></text>'
            f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 2):.1f}" height="16" rx="3" '
            f'fill="{colour(span)}"/>'
        )
    for span in spans:
        end = where.get(span.context.span_id) if span.context is not None else None
        for link in span.links:
            start = where.get(link.context.span_id)
            if start is not None and end is not None:
                out.append(
                    f'<path d="M{start[1]:.1f},{start[2] + 8} L{end[0] - 2:.1f},{end[2] + 8}" '
                    'stroke="#444" stroke-dasharray="4 3" fill="none" '
                    'marker-end="url(#arrow)"/>'
                )
    out.append(
        f'<text x="10" y="{height - 22}" fill="#555" font-size="11">blue: a slice (flow '
        "&lt;name&gt;), green: a step attempt, red: status ERROR, grey: the app's own "
        "requests, purple: a client span made in a step</text>"
        f'<text x="10" y="{height - 8}" fill="#555" font-size="11">indented: a child span; '
        "dashed arrow: a link (the signal that woke the slice)</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def png(picture: str, out: Path, tmpdir: str | None = None) -> None:
    """Save the SVG *picture* as a PNG at *out*, drawn by headless Chromium (given
    *tmpdir* as its TMPDIR: under a long one its SingletonSocket cannot be made)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox"],
            env={**os.environ, "TMPDIR": tmpdir or tempfile.gettempdir()},
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 600})
            page.set_content(f"<!doctype html><body style='margin:0'>{picture}</body>")
            page.locator("svg").screenshot(path=str(out))
        finally:
            browser.close()


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    png(svg(record()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
