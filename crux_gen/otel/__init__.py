"""OpenTelemetry for crux_gen: spans per flow slice and step attempt, metrics, and
the trace context carried from the request that started or signalled a flow to
the slices it causes (``pip install 'crux-gen[otel]'``).

>>> from crux_gen.otel import instrument
>>> instrument()          # the global tracer and meter providers

Nothing here is imported by the core: uninstrumented, crux_gen never imports
OpenTelemetry, and the seam it leaves (``crux_gen.observe``) costs one ``is None``
test per slice and per step attempt. Call ``instrument()`` once at start-up, before
workers start (a worker's step pool reads it when it is made).
"""

from __future__ import annotations

from typing import Any

from .. import observe
from .metrics import Metrics
from .observer import OtelObserver
from .spans import Spans

__all__ = ["instrument", "uninstrument"]


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Make spans with *tracer_provider* and metrics with *meter_provider* (each
    ``None``: OpenTelemetry's global one) for every flow this process runs, starts
    or signals from now on. Called again, the new providers replace the old."""
    observe.set_observer(OtelObserver(Spans(tracer_provider), Metrics(meter_provider)))


def uninstrument() -> None:
    """Stop observing: no spans, no metrics from now on (flows in hand keep theirs)."""
    observe.set_observer(None)
