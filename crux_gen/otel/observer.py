"""The observer ``instrument()`` puts in place: each point of the core's seam
(``crux_gen.observe``) told to the spans and to the metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .metrics import Metrics
from .spans import Spans

if TYPE_CHECKING:
    from ..calls import Crash
    from ..effects import Call, Event
    from ..flowrun import FlowRun
    from ..records import StoredFlow, StoredRecord
    from ..stores.base import Store


class OtelObserver:
    """Spans and metrics of what this process runs (``crux_gen.observe.Observer``)."""

    def __init__(self, spans: Spans, metrics: Metrics) -> None:
        self.spans = spans
        self.metrics = metrics

    def trace(self) -> str | None:
        return self.spans.trace()

    def slice_trace(self, run: FlowRun) -> str | None:
        return self.spans.slice_trace(run)

    def flow_started(self, name: str) -> None:
        self.metrics.flow_started(name)

    def slice_started(self, run: FlowRun, stored: StoredFlow, store: Store, now: float) -> None:
        self.spans.slice_started(run, stored)
        self.metrics.slice_started(run, stored, store, now)

    def slice_ended(self, run: FlowRun, status: str) -> None:
        self.spans.slice_ended(run, status)
        self.metrics.slice_ended(run, status)

    def attempt(
        self, run: FlowRun, call: Call, inner: Callable[[Call], Event | Crash]
    ) -> Event | Crash:
        return self.spans.attempt(run, call, inner)  # (metrics: ``attempt_ended``)

    def attempt_ended(self, run: FlowRun, event: Any, record: StoredRecord | None) -> None:
        self.metrics.attempt_ended(run, event, record)

    def store_in_use(self, store: Store) -> None:
        self.metrics.store_in_use(store)
