"""Tracing: one order's trace, from the web request that started it, through the
payment webhook that signalled it from another process, to the worker that
finished it later, each printed by OpenTelemetry's console exporter.

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/pip install --config-settings editable_mode=strict -e '.[otel]'
    .venv/bin/python examples/tracing.py

runs the story on a SQLite file in a temporary directory (``--db PATH`` to keep
it), each stage in a process of its own, as a web app, a webhook handler and a
worker would be:

1. ``start``: a span ``POST /orders`` (the web framework's, here made by hand)
   starts the ``order`` flow with ``Flow.run``; its slice (``flow order``) runs the
   steps ``reserve-stock`` and ``request-payment`` under it, then parks on the
   ``paid`` signal. The request's trace context is stored with the flow.
2. ``pay``: a span ``POST /webhooks/payments`` signals the flow; its context is
   stored with the signal.
3. ``work``: a worker pass, with no span of its own, runs the rest: its slice is a
   child of ``POST /orders`` (the same trace, however many days later) and links
   to the webhook's span; ``step ship``'s own client span nests under it.

Each stage prints its spans as one JSON object a line (the console exporter); the
demo then prints the trace they make together as a tree. Run one stage yourself::

    .venv/bin/python examples/tracing.py --db orders.db start          # prints the flow id
    .venv/bin/python examples/tracing.py --db orders.db pay FLOW_ID
    .venv/bin/python examples/tracing.py --db orders.db work
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from crux_gen import FlowContext, Step, Suspend, flow, signal_flow
from crux_gen.otel import instrument
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

#: The tracer of this app's own spans (the requests, the carrier's API call).
tracer = trace.get_tracer("examples.tracing")


def setup(service: str) -> TracerProvider:
    """This process's provider: every finished span printed on stdout, one JSON
    object a line, and crux_gen instrumented with it."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))

    def one_line(span: ReadableSpan) -> str:
        return str(span.to_json(indent=None)) + os.linesep

    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
    trace.set_tracer_provider(provider)
    instrument(tracer_provider=provider)
    return provider


# -- The flow ----------------------------------------------------------------------------


def ship(order: dict[str, Any]) -> dict[str, Any]:
    # A call to the carrier's API: an instrumented HTTP client's span would nest under
    # the step's span the same way, because the step's span is current here.
    with tracer.start_as_current_span("POST carrier /shipments", kind=SpanKind.CLIENT) as span:
        span.set_attribute("order.item", order["item"])
        return {"tracking": f"TRK-{order['item'].upper()}"}


@flow("order")
def order_flow(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    order = ctx.input
    yield Step("reserve-stock", lambda: {"item": order["item"], "reserved": True})
    yield Step("request-payment", lambda: {"amount": order["amount"]})
    payment = yield Suspend("paid")
    shipment = yield Step("ship", lambda: ship(order))
    return {"paid": payment, **shipment}


# -- The stages, each run in a process of its own -----------------------------------------


def stage(args: argparse.Namespace) -> None:
    provider = setup(f"orders-{args.stage}")
    store = SQLiteStore(args.db)
    try:
        if args.stage == "start":
            with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
                order = {"item": "kettle", "amount": 49}
                result = order_flow.run(input=order, store=store)
            print(f"flow id {result.flow_id} {result.status}")
        elif args.stage == "pay":
            with tracer.start_as_current_span("POST /webhooks/payments", kind=SpanKind.SERVER):
                signal_flow(args.flow_id, "paid", {"amount": 49}, store=store)
            print(f"signalled {args.flow_id}")
        elif args.stage == "work":
            print(f"worker ran {Worker(store, [order_flow]).run_once()} slice(s)")
    finally:
        store.close()
        provider.shutdown()


# -- The demo: the three stages, then the trace they made --------------------------------


def spans_in(output: str) -> list[dict[str, Any]]:
    """The spans a stage printed (its lines that are JSON objects)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def tree(spans: list[dict[str, Any]]) -> list[str]:
    """The spans as an indented tree, each with its kind, process and links."""
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    known = {s["context"]["span_id"] for s in spans}
    for span in sorted(spans, key=lambda s: s["start_time"]):
        parent = span["parent_id"] if span["parent_id"] in known else None
        by_parent.setdefault(parent, []).append(span)
    names = {s["context"]["span_id"]: s["name"] for s in spans}
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in by_parent.get(parent, []):
            kind = span["kind"].removeprefix("SpanKind.")
            service = span["resource"]["attributes"]["service.name"]
            links = [names.get(link["context"]["span_id"], "?") for link in span["links"]]
            linked = f"  (linked to {', '.join(links)})" if links else ""
            lines.append(f"{'  ' * depth}{span['name']} [{kind}, {service}]{linked}")
            walk(span["context"]["span_id"], depth + 1)

    walk(None, 0)
    return lines


def demo(db: str) -> None:
    """The whole story, each stage in a fresh process; then the trace as a tree."""

    def run(*stage_args: str) -> str:
        cmd = [sys.executable, __file__, "--db", db, *stage_args]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(f"== {' '.join(stage_args)}")
        print(out, end="")
        return out

    started = run("start")
    flow_id = started.split("flow id ", 1)[1].split()[0]
    paid = run("pay", flow_id)
    worked = run("work")
    spans = spans_in(started) + spans_in(paid) + spans_in(worked)
    print(f"== the trace of flow {flow_id}, from three processes:")
    for line in tree(spans):
        print(line)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--db", help="the SQLite file (default: one in a temporary directory)")
    sub = p.add_subparsers(dest="stage")
    sub.add_parser("start")
    sub.add_parser("pay").add_argument("flow_id")
    sub.add_parser("work")
    args = p.parse_args(argv)
    if args.stage is not None:
        if args.db is None:
            p.error(f"{args.stage} needs --db PATH (the file the other stages use)")
        stage(args)
    elif args.db is not None:
        demo(args.db)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            demo(str(Path(tmp) / "orders.db"))


if __name__ == "__main__":
    main()
