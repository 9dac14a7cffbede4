"""``GET /metrics``: the dashboard's store, and this process's metrics, in the
Prometheus text format (``prometheus_client``; ``pip install 'crux-gen[prometheus]'``).

Always, read from the store at each scrape: ``crux_flows{status=...}`` (every
status, 0 included) and ``crux_flows_due`` (at most ``observe.DUE_CAP``). When
this process is instrumented (``crux_gen.otel.instrument()``), also what it counted
since: ``crux_flows_started_total``, ``crux_flows_finished_total{status}``,
``crux_steps_total{outcome}``, and the histograms ``crux_step_duration_seconds``
and ``crux_flow_schedule_lag_seconds``, each labelled ``crux_flow_name`` (the
OpenTelemetry names, with ``.`` as ``_`` and Prometheus's unit and ``_total``
suffixes, as OpenTelemetry's Prometheus exporter writes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import observe
from ..status import Status
from ..stores.caps import caps_of
from .wsgi import Response

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )

    AVAILABLE = True
except ImportError:  # pragma: no cover - prometheus_client is in the test extra
    AVAILABLE = False

#: The most flows of one status counted on a store that cannot count in one query.
COUNT_CAP = 1000
#: The process's counters and histograms: (OpenTelemetry name, Prometheus name, help).
COUNTERS = (
    ("crux.flows.started", "crux_flows_started", "Flows this process created"),
    ("crux.flows.finished", "crux_flows_finished", "Flows that finished here, by status"),
    ("crux.steps", "crux_steps", "Step attempts run here, by outcome"),
)
HISTOGRAMS = (
    ("crux.step.duration", "crux_step_duration_seconds", "How long a step attempt ran"),
    ("crux.flow.schedule_lag", "crux_flow_schedule_lag_seconds", "From due to claimed"),
)
MISSING = (
    "/metrics serves Prometheus text with prometheus_client, which is not installed: "
    "pip install 'crux-gen[prometheus]' (or prometheus_client)\n"
)


def metrics_page(store: Any) -> Response:
    """The text of ``/metrics`` (501 saying what to install without prometheus_client)."""
    if not AVAILABLE:
        return Response(501, MISSING.encode(), "text/plain; charset=utf-8")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(store))
    return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


class _Collector:
    """What one scrape reads: the store's gauges, then the process's tally."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        flows = GaugeMetricFamily("crux_flows", "Flows in the store, by status", labels=["status"])
        for status, count in status_counts(self.store).items():
            flows.add_metric([status], count)
        yield flows
        due = observe.due_count(self.store)
        if due is not None:
            yield GaugeMetricFamily("crux_flows_due", "Flows due now in the store", value=due)
        tally = getattr(getattr(observe.OBSERVER, "metrics", None), "tally", None)
        if tally is not None:
            yield from _tallied(tally)


def status_counts(store: Any) -> dict[str, int]:
    """How many flows each status has: one GROUP BY on a store that ``counts``,
    else one page of at most ``COUNT_CAP`` per status."""
    statuses = [s.value for s in Status]
    if caps_of(store).counts:
        found: dict[str, int] = store.count_flows()
        return {s: found.get(s, 0) for s in statuses}
    return {s: len(store.list_flows(status=s, limit=COUNT_CAP)) for s in statuses}


def _tallied(tally: Any) -> Iterator[Metric]:
    counters, histograms = tally.snapshot()
    for otel_name, name, text in COUNTERS:
        rows = [(labels, value) for (n, labels), value in counters.items() if n == otel_name]
        family = CounterMetricFamily(name, text, labels=_label_names(rows))
        for labels, value in sorted(rows):
            family.add_metric([v for _, v in labels], value)
        yield family
    for otel_name, name, text in HISTOGRAMS:
        rows = [(labels, data) for (n, labels), data in histograms.items() if n == otel_name]
        histogram = HistogramMetricFamily(name, text, labels=_label_names(rows), unit="seconds")
        bounds = tally.buckets.get(otel_name, ())
        for labels, (counts, total) in sorted(rows, key=lambda row: row[0]):
            buckets, running = [], 0
            for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                running += count
                buckets.append((bound, running))
            histogram.add_metric([v for _, v in labels], buckets, total)
        yield histogram


def _label_names(rows: list[tuple[Any, Any]]) -> list[str]:
    """Prometheus label names of *rows*' labels (``crux.flow.name``: ``crux_flow_name``)."""
    keys = [k for k, _ in rows[0][0]] if rows else ["crux.flow.name"]
    return [k.replace(".", "_") for k in keys]
