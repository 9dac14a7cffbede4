"""What observing flows costs a durable step on SQLite: instrumentation off and on.

1. *µs per durable step, off and on, side by side*: flows of 20 steps started
   pending, then ``Worker(store).run_once()`` runs them all, timed, two ways
   alternating within each round (the order turns every round): *off* (no
   ``instrument()``: ``crux_gen.observe.OBSERVER is None``, the default) and *on*
   (``crux_gen.otel.instrument()`` with the OpenTelemetry SDK's ``TracerProvider``
   exporting every span through a ``SimpleSpanProcessor`` to an exporter that drops
   it, and a ``MeterProvider`` whose ``InMemoryMetricReader`` aggregates every
   measurement, collected once after the timed pass). Logging stays at its default
   (nothing configured: the records' level is off). Medians of µs per step and of
   the per-round ratio on/off. The target: on ≤ 1.20x off.
2. *off against before the seam*: what the seam costs while off cannot be timed as a
   difference (the code without it is gone), so it is counted: the off path adds,
   per step attempt, one lambda around the step's call and one ``is None`` test, and
   per slice four seam calls that return at once (``slice_started``,
   ``slice_ended``, ``flow_started``, a worker pass's ``store_in_use``) and two
   ``Logger.isEnabledFor``; each is timed on its own (``timeit``, best of 5) and
   their sum over the flows and steps of the off pass is divided by that pass's
   time. The target: ≤ 3%.

Both SQLite modes, one after the other in the same run: ``FULL`` (the store's
default: a durable step is an fsync'd one, as every other durable-step target in
``bench/`` counts it) is the target's, ``NORMAL`` (no fsync a step: the SDK's cost
stands out most) is reported beside it. The seam's share while off is taken of the
fastest step measured (``NORMAL``'s).

    python bench/observability.py [--quick] [--json] [--dir PATH] [--rounds N]
        [--flows N] [--steps N] [--mode FULL,NORMAL]
"""

from __future__ import annotations

import logging
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, flow, observe
from crux_gen.effects import Call
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

try:  # the otel extra (the test extra pins it)
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from crux_gen.otel import instrument, uninstrument
except ImportError as exc:  # said in the document: report.py shows "not measured"
    MISSING: str | None = f"{exc}: pip install -e '.[otel]'"
    SpanExporter = object  # type: ignore[assignment,misc]
else:
    MISSING = None

ON_TARGET = 1.20  # a step instrumented (spans and metrics) over one not
OFF_TARGET = 0.03  # the seam's share of a step while off


class Dropped(SpanExporter):  # type: ignore[misc,valid-type]
    """An exporter that takes every span and keeps none (counting them)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@flow("bench-observed")
def observed(ctx: Any) -> Any:
    for i in range(ctx.input["steps"]):
        yield Step(f"s{i}", lambda: {"ok": True})


def one_pass(path: Path, flows: int, steps: int, mode: str) -> float:
    """Seconds for one worker pass over *flows* pending flows of *steps* steps."""
    store = SQLiteStore(fresh(path), synchronous=mode)
    for _ in range(flows):
        observed.start(input={"steps": steps}, store=store)
    worker = Worker(store, [observed])  # made after instrument(): its pool reads it
    t0 = time.perf_counter()
    while worker.run_once():
        pass
    took = time.perf_counter() - t0
    assert store.count(status="completed") == flows
    store.close()
    return took


def on_pass(path: Path, flows: int, steps: int, mode: str) -> tuple[float, int, int]:
    """``one_pass`` instrumented: seconds, the spans exported, the steps counted."""
    exporter = Dropped()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        took = one_pass(path, flows, steps, mode)
    finally:
        uninstrument()
    counted = steps_counted(reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return took, exporter.spans, counted


def steps_counted(reader: InMemoryMetricReader) -> int:
    """The sum of the ``crux.steps`` counter the reader collected."""
    data = reader.get_metrics_data()
    return sum(
        int(point.value)
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "crux.steps"
        for point in metric.data.data_points  # type: ignore[union-attr]
    )


def seam_costs() -> dict[str, float]:
    """Seconds the off path adds: per step attempt, per slice (``observe`` off)."""
    assert observe.OBSERVER is None
    call = Call(0, lambda: None, 1, 0.0, (), "s")
    inner = lambda c: c  # noqa: E731 (the call a Calls runs: ``_run``)
    wrapped = observe.observed_calls(inner)
    log = logging.getLogger("crux_gen")

    class Run:
        observed = None

    run: Any = Run()

    def best(stmt: Any, n: int = 200_000) -> float:
        return min(timeit.repeat(stmt, number=n, repeat=5)) / n

    lambda_cost = best(lambda: wrapped(run, call)) - best(lambda: inner(call))
    is_none = best(lambda: observe.OBSERVER is not None) - best(lambda: None)
    per_slice = (
        best(lambda: observe.slice_started(run, None, None, 0.0))  # type: ignore[arg-type]
        + best(lambda: observe.slice_ended(run, "completed"))
        + best(lambda: observe.flow_started("bench-observed"))
        + best(lambda: observe.store_in_use(None))  # type: ignore[arg-type]
        + 2 * best(lambda: log.isEnabledFor(logging.INFO))
        - 6 * best(lambda: None)
    )
    return {"per_attempt_s": max(0.0, lambda_cost + is_none), "per_slice_s": max(0.0, per_slice)}


def measure(
    out: Out,
    where: Path | None,
    mode: str,
    rounds: int,
    flows: int,
    steps: int,
    doc: dict[str, Any],
) -> dict[str, Any]:
    """Off and on interleaved on SQLite *mode*: µs a step each, and the ratio."""
    out.line(f"SQLite {mode}:")
    off_s: list[float] = []
    on_s: list[float] = []
    with workdir(where, "crux-bench-obs-") as d:
        for r in range(rounds):
            for arm in ("off", "on") if r % 2 == 0 else ("on", "off"):
                if arm == "off":
                    off_s.append(one_pass(d / "off.db", flows, steps, mode))
                    continue
                took, spans, counted = on_pass(d / "on.db", flows, steps, mode)
                assert counted == flows * steps, counted  # crux.steps: one an attempt
                on_s.append(took)
                doc["spans_per_pass"] = spans  # a slice span a flow, a step span an attempt
            out.line(
                f"round {r + 1}: off {off_s[-1] / (flows * steps) * 1e6:.1f} µs, "
                f"on {on_s[-1] / (flows * steps) * 1e6:.1f} µs a step"
            )
    per_step = flows * steps
    ratio = median([b / a for a, b in zip(off_s, on_s, strict=True)])
    off_us, on_us = median(off_s) / per_step * 1e6, median(on_s) / per_step * 1e6
    return {
        "off_us_per_step": off_us,
        "on_us_per_step": on_us,
        "added_us_per_step": on_us - off_us,
        "ratio": ratio,
        "samples": [b / a for a, b in zip(off_s, on_s, strict=True)],
        "target": ON_TARGET,
        "meets_target": ratio <= ON_TARGET,
        "off_s": off_s,
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--flows", type=int, default=None, help="flows a pass (default 50)")
    p.add_argument("--steps", type=int, default=20, help="steps a flow (default 20)")
    p.add_argument(
        "--mode",
        default="FULL,NORMAL",
        help="SQLite synchronous modes, the first the target's (default FULL,NORMAL)",
    )
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (2 if args.quick else 7)
    flows = args.flows or (10 if args.quick else 50)
    steps = args.steps
    modes = [m.strip().upper() for m in args.mode.split(",")]
    if not modes or any(m not in ("FULL", "NORMAL") for m in modes):
        p.error(f"--mode: {args.mode!r} is not a list of FULL and NORMAL")
    doc: dict[str, Any] = {
        "bench": "observability",
        "machine": machine(),
        "rounds": rounds,
        "flows": flows,
        "steps": steps,
        "mode": modes[0],
        "modes": modes,
    }
    if MISSING is not None:
        out.line(f"the OpenTelemetry SDK is not installed ({MISSING}): nothing measured")
        out.emit({**doc, "skipped": True, "note": f"the OpenTelemetry SDK is missing ({MISSING})"})
        return
    out.line(
        f"{flows} flows of {steps} steps a pass, one worker, SQLite {'/'.join(modes)}; "
        f"{rounds} rounds, off and on interleaved"
    )
    for mode in modes:
        doc["on" if mode == modes[0] else f"on_{mode.lower()}"] = measure(
            out, args.dir, mode, rounds, flows, steps, doc
        )
    # The seam's share of the fastest step measured (NORMAL's, when it ran): the largest.
    off_s = min((doc[k]["off_s"] for k in doc if k.startswith("on")), key=median)
    per_step = flows * steps
    costs = seam_costs()
    seam_s = costs["per_attempt_s"] * per_step + costs["per_slice_s"] * flows
    share = seam_s / median(off_s)
    doc["off"] = {
        "per_attempt_ns": costs["per_attempt_s"] * 1e9,
        "per_slice_ns": costs["per_slice_s"] * 1e9,
        "seam_us_per_step": seam_s / per_step * 1e6,
        "share": share,
        "target": OFF_TARGET,
        "meets_target": share <= OFF_TARGET,
    }
    for mode in modes:
        m = doc["on" if mode == modes[0] else f"on_{mode.lower()}"]
        out.line(
            f"{mode}: on {m['on_us_per_step']:.1f} µs vs off {m['off_us_per_step']:.1f} µs "
            f"a step: {m['ratio']:.3f}x (target ≤ {ON_TARGET:g}x)"
        )
    out.line(
        f"off: the seam costs {costs['per_attempt_s'] * 1e9:.0f} ns an attempt, "
        f"{costs['per_slice_s'] * 1e9:.0f} ns a slice: {share:.2%} of a step "
        f"(target ≤ {OFF_TARGET:.0%})"
    )
    out.emit(doc)


if __name__ == "__main__":
    main()
