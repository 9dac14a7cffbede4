"""Spans: one ``flow <name>`` per slice, one ``step <name>`` per step attempt, one
``wait <name>`` per check of a ``WaitUntil``'s condition; and the trace context
stored with flows and signals (the README's "Observability", "Traces", is the
convention in full).

- A slice's span is a child of the context the flow was started in (stored with
  it: a worker days later continues the request's trace), or, for a child flow
  adopted into its parent's loop, of the parent's slice span (the context stored
  with a child is that slice's too). It links to the stored context of each
  pending signal it was claimed with (the requests that woke it) and to the span
  active where it runs when that is not its parent (a ``resume`` from another
  request). Its kind is ``INTERNAL`` when it runs inside a span of this process
  (``Flow.run`` in a request) or under its parent's slice, ``CONSUMER`` otherwise
  (a worker took it from the store: messaging's *process* span).
- A step attempt's span is a child of its slice's span and the current span while
  the step function runs (on the pool's thread too), so spans the function makes
  nest under it; a failed attempt records its exception and has status ``ERROR``.
- Stored trace context: the W3C ``traceparent`` (and ``tracestate`` when not empty)
  as compact JSON, ``{"traceparent":"00-…-…-01"}``: the W3C propagator's carrier
  (not the global propagator's: baggage is never stored). A bare ``traceparent``
  is read too; text that is neither is ignored (no parent), never an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.status import Status, StatusCode

from ..calls import Crash
from ..effects import Raised
from ..status import Status as FlowStatus

if TYPE_CHECKING:
    from ..effects import Call, Event
    from ..flowrun import FlowRun
    from ..records import StoredFlow

#: The instrumentation scope of every span.
SCOPE = "crux_gen"
PROPAGATOR = TraceContextTextMapPropagator()


def to_text(ctx: Context | None = None) -> str | None:
    """The W3C trace context of *ctx* (``None``: the current one) as compact JSON,
    or ``None`` when it holds no valid span."""
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=ctx)
    return json.dumps(carrier, separators=(",", ":"), sort_keys=True) if carrier else None


def from_text(text: str | None) -> SpanContext | None:
    """The span context stored as *text* (``to_text``'s, or a bare ``traceparent``),
    or ``None`` when there is none or it cannot be read."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        found = {"traceparent": text}
    if not isinstance(found, dict):
        return None
    carrier = {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}
    span_context = trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


class Slice:
    """A slice's span and the context that has it current (``FlowRun.observed``)."""

    __slots__ = ("context", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.context = trace.set_span_in_context(span)


class Spans:
    """The spans of what this process runs, made with *tracer_provider*'s tracer
    (``None``: the global provider's, as it is when each span is made)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)

    def trace(self) -> str | None:
        return to_text()

    def slice_trace(self, run: FlowRun) -> str | None:
        observed = run.observed
        return to_text(observed.context) if isinstance(observed, Slice) else None

    def slice_started(self, run: FlowRun, stored: StoredFlow) -> None:
        here = trace.get_current_span().get_span_context()
        links: list[Link] = []
        above = run.parent.observed if run.parent is not None else None
        if isinstance(above, Slice):  # adopted into its parent's loop
            parent, kind = above.context, SpanKind.INTERNAL
        else:
            kind = SpanKind.INTERNAL if here.is_valid else SpanKind.CONSUMER
            start = from_text(stored.trace)
            if start is not None:
                parent = trace.set_span_in_context(NonRecordingSpan(start))
                if here.is_valid and here.span_id != start.span_id:
                    links.append(Link(here, {"crux.link": "resumed"}))
            else:  # started untraced: the span it runs in, if any
                parent = otel_context.get_current() if here.is_valid else Context()
        for signal in stored.signals:
            woke = from_text(signal.trace) if signal.state == "pending" else None
            if woke is not None:
                attributes = {"crux.link": "signal", "crux.signal.name": signal.name}
                links.append(Link(woke, {**attributes, "crux.signal.id": signal.id}))
        span = self.tracer.start_span(
            f"flow {stored.name}",
            context=parent,
            kind=kind,
            links=links,
            attributes={
                "crux.flow.id": stored.id,
                "crux.flow.name": stored.name,
                "crux.flow.run": stored.run,
            },
        )
        run.observed = Slice(span)

    def slice_ended(self, run: FlowRun, status: str) -> None:
        observed = run.observed
        if not isinstance(observed, Slice):
            return
        span = observed.span
        span.set_attribute("crux.flow.status", status)
        if status == FlowStatus.FAILED:
            span.set_status(Status(StatusCode.ERROR, "the flow failed"))
        span.end()

    def attempt(
        self, run: FlowRun, call: Call, inner: Callable[[Call], Event | Crash]
    ) -> Event | Crash:
        observed = run.observed
        if not isinstance(observed, Slice):  # (a slice begun before instrument())
            return inner(call)
        if call.kind == "step":
            name, count = f"step {call.name}", "crux.step.attempt"
        else:  # a WaitUntil's condition: one span per check
            name, count = f"wait {call.name}", "crux.wait.check"
        span = self.tracer.start_span(
            name,
            context=observed.context,
            kind=SpanKind.INTERNAL,
            attributes={
                "crux.flow.id": run.flow_id,
                count: call.attempt,
                "crux.step.position": call.position,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, observed.context))
        try:
            event = inner(call)
        finally:
            otel_context.detach(token)
        if isinstance(event, Raised | Crash):
            span.record_exception(event.exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(event.exc).__name__}: {event.exc}"))
        span.end()
        return event
