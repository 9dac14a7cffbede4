"""The metrics of ``crux_gen.otel.instrument()``, read back through the SDK's
``InMemoryMetricReader``: what each counter counted, each histogram recorded, and
the gauge of due flows, for flows run by ``Flow.run``, a worker and ``Flow.start``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from crux_gen import (
    Child,
    FakeClock,
    FlowContext,
    Registry,
    Retry,
    Step,
    Suspend,
    flow,
    signal_flow,
)
from crux_gen.otel import instrument, uninstrument
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker


@pytest.fixture(params=["memory", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    s = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)
    yield s
    s.close()


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    found = InMemoryMetricReader()
    instrument(meter_provider=MeterProvider(metric_readers=[found]))
    yield found
    uninstrument()


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[Any], Any]:
    """The data points of metric *name*, by their attributes (none: ``{}``)."""
    data = reader.get_metrics_data()
    found: dict[frozenset[Any], Any] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[frozenset((point.attributes or {}).items())] = point
    return found


def values(reader: InMemoryMetricReader, name: str) -> dict[tuple[str, ...], Any]:
    """Counter values by the values of their attributes, sorted by key."""
    return {
        tuple(v for _, v in sorted(attrs)): p.value for attrs, p in points(reader, name).items()
    }


def test_a_flow_run_by_flow_run_and_a_worker_counts_its_start_steps_lag_and_end(
    db: Any, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    registry = Registry()
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("down")
        return "ok"

    def broken() -> None:
        raise ValueError("no")

    @flow("m-order", registry=registry)
    def order(ctx: FlowContext) -> Any:
        yield Step("flaky", flaky, retry=Retry(attempts=3, backoff="fixed", delay="0s"))
        yield Suspend("paid")
        with contextlib.suppress(ValueError):
            yield Step("broken", broken)
        return (yield Step("ship", lambda: "shipped"))

    flow_id = order.run(store=db).flow_id
    assert values(reader, "crux.flows.started") == {("m-order",): 1}
    assert values(reader, "crux.steps") == {("m-order", "ok"): 1, ("m-order", "retry"): 1}
    assert values(reader, "crux.flows.finished") == {}  # parked: not finished
    assert points(reader, "crux.flow.schedule_lag") == {}  # created running: no wait

    signal_flow(flow_id, "paid", {}, store=db)
    clock.advance("3s")  # the signal waits 3 s for a worker
    assert Worker(db, [order]).run_once() == 1

    assert values(reader, "crux.flows.started") == {("m-order",): 1}  # not again
    # The replayed "flaky" counts nothing; "broken" failed, "ship" ran.
    assert values(reader, "crux.steps") == {
        ("m-order", "ok"): 2, ("m-order", "retry"): 1, ("m-order", "failed"): 1,
    }  # fmt: skip
    assert values(reader, "crux.flows.finished") == {("m-order", "completed"): 1}
    durations = points(reader, "crux.step.duration")
    (duration,) = durations.values()
    assert duration.count == 4 and duration.sum >= 0  # one per attempt that ran
    assert dict(next(iter(durations))) == {"crux.flow.name": "m-order"}
    (lag,) = points(reader, "crux.flow.schedule_lag").values()
    assert (lag.count, lag.sum) == (1, 3.0)


def test_starts_count_only_the_flows_they_created(
    db: Any, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    registry = Registry()

    @flow("m-kid", registry=registry)
    def kid(ctx: FlowContext) -> Any:
        return (yield Step("k", lambda: 1))

    @flow("m-parent", registry=registry)
    def parent(ctx: FlowContext) -> Any:
        a = yield Child(kid)
        b = yield Child(kid)
        return a + b

    @flow("m-queued", registry=registry)
    def queued(ctx: FlowContext) -> Any:
        yield Suspend("never")

    assert parent.run(store=db, flow_id="p-1").value == 2
    assert parent.run(store=db, flow_id="p-1").value == 2  # the same flow, found
    queued.start(store=db, flow_id="q-1")
    queued.start(store=db, flow_id="q-1")  # found: not created again
    queued.start(store=db)
    assert values(reader, "crux.flows.started") == {
        ("m-kid",): 2, ("m-parent",): 1, ("m-queued",): 2,
    }  # fmt: skip
    assert values(reader, "crux.flows.finished") == {
        ("m-kid", "completed"): 2, ("m-parent", "completed"): 1,
    }  # fmt: skip
    clock.advance("7s")  # the two queued flows wait 7 s for a worker
    assert Worker(db, [queued]).run_once() == 2
    (lag,) = points(reader, "crux.flow.schedule_lag").values()
    assert (lag.count, lag.sum) == (2, 14.0)


def test_the_due_gauge_counts_the_due_flows_of_the_stores_workers_run(
    db: Any, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    registry = Registry()

    @flow("m-due", registry=registry)
    def due(ctx: FlowContext) -> Any:
        yield Suspend("go")

    worker = Worker(db, [due])
    assert worker.run_once() == 0  # nothing due yet; the store is in use from now on
    ids = [due.start(store=db).flow_id for _ in range(3)]
    (gauge,) = points(reader, "crux.flows.due").values()
    assert gauge.value == 3
    assert worker.run_once() == 3  # each parks on its signal
    (gauge,) = points(reader, "crux.flows.due").values()
    assert gauge.value == 0
    signal_flow(ids[0], "go", {}, store=db)
    (gauge,) = points(reader, "crux.flows.due").values()
    assert gauge.value == 1
    uninstrument()  # the gauge of metrics no longer in place reports nothing
    assert points(reader, "crux.flows.due") == {}


def test_a_store_that_cannot_count_is_left_out_of_the_gauge(
    clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    class Broken(MemoryStore):
        def due(self, now: float, limit: int) -> list[str]:
            raise OSError("the disk is gone")

    good, bad = MemoryStore(clock=clock), Broken(clock=clock)
    registry = Registry()

    @flow("m-gauge", registry=registry)
    def waiting(ctx: FlowContext) -> Any:
        yield Suspend("go")

    for store in (good, bad):
        Worker(store, [waiting]).run_once()
    waiting.start(store=good)
    found = points(reader, "crux.flows.due")
    assert [p.value for p in found.values()] == [1]  # the broken store raised nothing


def test_nothing_is_counted_once_uninstrumented(db: Any, reader: InMemoryMetricReader) -> None:
    registry = Registry()

    @flow("m-off", registry=registry)
    def off(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: 1))

    off.run(store=db)
    uninstrument()
    off.run(store=db)
    assert values(reader, "crux.flows.started") == {("m-off",): 1}
    assert values(reader, "crux.steps") == {("m-off", "ok"): 1}
