"""OpenTelemetry spans (issue 22): one per slice and per step attempt, none for
replayed commands; the trace context stored with a flow and a signal carried to
the slices they cause, across processes. Spans go to the SDK's in-memory
exporter through a ``TracerProvider`` given to ``instrument()``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from crux_gen import (
    All,
    Child,
    FakeClock,
    Retry,
    Step,
    Suspend,
    flow,
    resume,
    signal_flow,
)
from crux_gen.otel import instrument, uninstrument
from crux_gen.otel.spans import from_text
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

from . import pg

REPO = Path(__file__).resolve().parents[1]


class Traced:
    """The provider ``instrument()`` was given and the spans it exported."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]


@pytest.fixture
def traced() -> Iterator[Traced]:
    made = Traced()
    instrument(tracer_provider=made.provider)
    try:
        yield made
    finally:
        uninstrument()


@pytest.fixture(params=["memory", "sqlite"])
def local_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore(clock=FakeClock())
        return
    store = SQLiteStore(tmp_path / "crux.db", clock=FakeClock())
    yield store
    store.close()


def ids(ctx: Any) -> tuple[int, int] | None:
    """A span context's trace and span ids (``None``: no context)."""
    return None if ctx is None else (ctx.trace_id, ctx.span_id)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


# -- a flow signalled from a span in another process ---------------------------------

SIGNALLER = textwrap.dedent(
    """
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from crux_gen import PostgresStore, signal_flow
    from crux_gen.otel import instrument
    from crux_gen.stores.sqlite import SQLiteStore

    kind, where, schema, flow_id = sys.argv[1:5]
    provider = TracerProvider()
    instrument(tracer_provider=provider)
    store = SQLiteStore(where) if kind == "sqlite" else PostgresStore(where, schema=schema)
    with provider.get_tracer("webhook").start_as_current_span("webhook") as span:
        assert signal_flow(flow_id, "go", {"ok": True}, store=store)
    store.close()
    ctx = span.get_span_context()
    print(json.dumps({"trace_id": ctx.trace_id, "span_id": ctx.span_id}))
    """
)


@flow("otel-parks")
def parks(ctx: Any) -> Any:
    one = yield Step("one", lambda: 1)
    two = yield Step("two", lambda: 2)
    got = yield Suspend("go")
    three = yield Step("three", lambda: 3)
    return [one, two, got, three]


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    """A store another process opens too, and the arguments that open it there."""
    if request.param == "sqlite":
        path = tmp_path / "crux.db"
        store: Any = SQLiteStore(path, clock=FakeClock())
        args = ["sqlite", str(path), ""]
    else:
        server = request.getfixturevalue("pg_server")
        schema = request.getfixturevalue("pg_schema")
        store = pg.store_class()(server.url, schema=schema, clock=FakeClock())
        args = ["postgres", server.url, schema]
    yield store, args
    store.close()


def test_a_flow_started_in_a_request_and_signalled_from_another_process_is_one_trace(
    traced: Traced, shared_store: tuple[Any, list[str]]
) -> None:
    store, args = shared_store
    with traced.tracer.start_as_current_span("request") as request:
        parked = parks.run(store=store)
    assert parked.status == "suspended"
    assert ids(from_text(store.load(parked.flow_id).trace)) == ids(request.get_span_context())

    done = subprocess.run(
        [sys.executable, "-c", SIGNALLER, *args, parked.flow_id],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    webhook = json.loads(done.stdout)
    signal = store.load(parked.flow_id).signals[0]
    assert from_text(signal.trace) is not None  # stored with the signal, for the worker

    assert Worker(store, [parks]).run_once() == 1  # a worker, later, with no span of its own
    assert store.load(parked.flow_id).status == "completed"

    first, second = sorted(traced.named("flow otel-parks"), key=lambda s: s.start_time or 0)
    root = request.get_span_context()
    # The request's slice: a child of the request, synchronous in it.
    assert parent_id(first) == root.span_id and trace_id(first) == root.trace_id
    assert first.kind == SpanKind.INTERNAL
    assert dict(first.attributes or {}) == {
        "crux.flow.id": parked.flow_id, "crux.flow.name": "otel-parks",
        "crux.flow.run": 1, "crux.flow.status": "suspended",
    }  # fmt: skip
    # The worker's slice: a child of the start's context, linked to the webhook's.
    assert parent_id(second) == root.span_id and trace_id(second) == root.trace_id
    assert second.kind == SpanKind.CONSUMER
    assert (second.attributes or {})["crux.flow.status"] == "completed"
    assert [(link.context.trace_id, link.context.span_id) for link in second.links] == [
        (webhook["trace_id"], webhook["span_id"])
    ]
    assert dict(second.links[0].attributes or {})["crux.signal.name"] == "go"
    # Steps under the slice that ran them; the replayed one and two make no span.
    steps = {s.name: s for s in traced.spans() if s.name.startswith("step ")}
    assert sorted(steps) == ["step one", "step three", "step two"]
    assert [s.name for s in traced.spans()].count("step one") == 1
    assert parent_id(steps["step one"]) == parent_id(steps["step two"]) == span_id(first)
    assert parent_id(steps["step three"]) == span_id(second)
    assert (steps["step three"].attributes or {})["crux.step.position"] == 3
    assert all(s.status.status_code == StatusCode.UNSET for s in steps.values())


# -- attempts, branches, children ------------------------------------------------------


@flow("otel-retries")
def retries(ctx: Any) -> Any:
    tries: list[int] = []

    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("the service said no")
        return len(tries)

    return (yield Step("call", flaky, retry=Retry(attempts=3, delay=0)))


def test_a_failed_attempt_then_a_success_are_two_step_spans(
    traced: Traced, local_store: Any
) -> None:
    result = retries.run(store=local_store)
    assert (result.status, result.value) == ("completed", 2)
    first, second = sorted(traced.named("step call"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {})["crux.step.attempt"] for s in (first, second)] == [1, 2]
    assert first.status.status_code == StatusCode.ERROR
    assert "ConnectionError: the service said no" in (first.status.description or "")
    [event] = first.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ConnectionError"
    assert second.status.status_code == StatusCode.UNSET and not second.events
    slice_ = traced.one("flow otel-retries")
    assert parent_id(first) == parent_id(second) == span_id(slice_)


#: The tracer a step function makes its own spans with.
USER_TRACER: list[Any] = []
THREADS: list[str] = []  # where the branches ran


@flow("otel-fans-out")
def fans_out(ctx: Any) -> Any:
    def branch(n: int) -> int:  # a user's own span (what an HTTP client's would be)
        THREADS.append(threading.current_thread().name)
        with USER_TRACER[0].start_as_current_span(f"inner {n}"):
            return n

    return (yield All([Step(f"branch-{n}", lambda n=n: branch(n)) for n in range(3)]))


def test_all_branches_are_sibling_step_spans_and_a_step_function_s_spans_nest_under_it(
    traced: Traced, local_store: Any
) -> None:
    USER_TRACER[:] = [traced.provider.get_tracer("user-code")]
    # concurrency=3: the branches run on the pool's threads, each under its own span.
    result = fans_out.run(store=local_store, concurrency=3)
    assert result.value == [0, 1, 2]
    assert len(THREADS) == 3 and all(t.startswith("crux-step-") for t in THREADS), THREADS
    THREADS.clear()
    slice_ = traced.one("flow otel-fans-out")
    branches = [traced.one(f"step branch-{n}") for n in range(3)]
    assert {parent_id(b) for b in branches} == {span_id(slice_)}
    for n, step in enumerate(branches):
        assert parent_id(traced.one(f"inner {n}")) == span_id(step)
        assert trace_id(traced.one(f"inner {n}")) == trace_id(slice_)


@flow("otel-child")
def child_flow(ctx: Any) -> Any:
    first = yield Step("child-step", lambda: ctx.input * 2)
    more = yield Suspend("more")
    return first + more


@flow("otel-parent")
def parent_flow(ctx: Any) -> Any:
    return (yield Child(child_flow, 21))


def test_a_child_s_slices_are_under_its_parent_s_slice_in_the_loop_and_in_a_worker_later(
    traced: Traced, local_store: Any
) -> None:
    with traced.tracer.start_as_current_span("request") as request:
        parked = parent_flow.run(store=local_store)
    assert parked.status == "suspended"
    parent_slice = traced.one("flow otel-parent")
    assert parent_id(parent_slice) == request.get_span_context().span_id
    adopted = traced.one("flow otel-child")  # run in the parent's loop
    assert parent_id(adopted) == span_id(parent_slice) and adopted.kind == SpanKind.INTERNAL
    assert parent_id(traced.one("step child-step")) == span_id(adopted)
    [child_id] = local_store.load(parked.flow_id).children
    stored = local_store.load(child_id)
    assert ids(from_text(stored.trace)) == ids(parent_slice.context)  # the parent's slice's context

    traced.exporter.clear()
    assert signal_flow(child_id, "more", 1, store=local_store)
    worker = Worker(local_store, [parent_flow, child_flow])
    while worker.run_once():
        pass
    assert resume(parked.flow_id, store=local_store).value == 43
    later = traced.one("flow otel-child")  # a worker's slice, days later
    assert parent_id(later) == span_id(parent_slice) and later.kind == SpanKind.CONSUMER
    assert trace_id(later) == request.get_span_context().trace_id
    assert not traced.named("step child-step")  # replayed: no span
    woken = traced.one("flow otel-parent")
    assert parent_id(woken) == request.get_span_context().span_id


# -- trace context: what is stored, and when ------------------------------------------


def test_trace_is_none_without_an_active_span_and_nothing_is_stored(
    traced: Traced, local_store: Any
) -> None:
    from crux_gen import observe

    assert observe.trace() is None
    handle = parks.start(store=local_store)
    assert local_store.load(handle.flow_id).trace is None
    with traced.tracer.start_as_current_span("request") as request:
        text = observe.trace()
        started = parks.start(store=local_store)
    assert text is not None and json.loads(text)["traceparent"].startswith("00-")
    assert ids(from_text(local_store.load(started.flow_id).trace)) == ids(
        request.get_span_context()
    )


def test_a_stored_trace_that_cannot_be_read_gives_a_root_span_not_an_error(
    traced: Traced, local_store: Any
) -> None:
    from crux_gen.records import NewPending

    for n, text in enumerate(["not json", '{"traceparent": "00-zz"}', "[1]", ""]):
        local_store.enqueue(NewPending(f"odd-{n}", "otel-retries", "null", trace=text), 0.0)
        assert resume(f"odd-{n}", store=local_store).status == "completed"
    slices = traced.named("flow otel-retries")
    assert len(slices) == 4 and all(s.parent is None for s in slices)


def test_a_bare_traceparent_is_read_as_the_start_s_context(traced: Traced) -> None:
    with traced.tracer.start_as_current_span("request") as request:
        pass
    ctx = request.get_span_context()
    bare = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
    assert ids(from_text(bare)) == ids(ctx)


def test_uninstrumented_nothing_is_stored_and_opentelemetry_is_never_imported(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        """
        import sys
        import crux_gen
        from crux_gen import Child, Step, Suspend, flow, signal_flow
        from crux_gen.stores.sqlite import SQLiteStore

        @flow("kid")
        def kid(ctx):
            return (yield Step("k", lambda: 1))

        @flow("plain")
        def plain(ctx):
            yield Step("a", lambda: 1)
            yield Child(kid)
            return (yield Suspend("go"))

        store = SQLiteStore(sys.argv[1])
        run = plain.run(store=store)
        signal_flow(run.flow_id, "go", 2, store=store)
        assert crux_gen.resume(run.flow_id, store=store).value == 2
        started = plain.start(store=store)
        flows = [store.load(run.flow_id), store.load(started.flow_id)]
        flows.append(store.load(flows[0].children[0]))
        assert [f.trace for f in flows] == [None] * 3, [f.trace for f in flows]
        assert [s.trace for s in flows[0].signals] == [None]
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "plain.db")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
