"""``GET /metrics`` on the dashboard, over real HTTP, parsed with prometheus_client's
own parser: the store's counts always, this process's metrics when instrumented."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from crux_gen import FakeClock, FlowContext, Registry, Retry, Step, Suspend, flow
from crux_gen.cli.ui import ThreadingServer
from crux_gen.otel import instrument, uninstrument
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.ui import make_app, promtext
from crux_gen.worker import Worker


@pytest.fixture(params=["memory", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    s = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)
    yield s
    s.close()


class Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(app)``: the app's address on 127.0.0.1, served in a thread."""
    servers: list[Any] = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, server_class=ThreadingServer, handler_class=Quiet)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def scrape(url: str) -> tuple[str, dict[tuple[str, frozenset[Any]], float]]:
    """The content type of ``url/metrics`` and each sample: (name, labels) -> value."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        kind = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return kind, samples


def shop(registry: Registry) -> Any:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) % 2:
            raise ConnectionError("down")
        return "ok"

    @flow("pm-shop", registry=registry)
    def order(ctx: FlowContext) -> Any:
        yield Step("charge", flaky, retry=Retry(attempts=2, backoff="fixed", delay="0s"))
        if ctx.input == "wait":
            yield Suspend("go")
        return "done"

    return order


def test_metrics_has_the_store_counts_always(db: Any, serve: Any) -> None:
    order = shop(Registry())
    for given in ("wait", "wait", None):
        order.run(store=db, input=given)
    for _ in range(2):
        order.start(store=db, input="wait")
    url = serve(make_app(db, allow_actions=True, token="s3cret"))  # read-only page: no token
    kind, samples = scrape(url)
    assert kind.startswith("text/plain; version=")
    counts = db.count_flows()
    for status in ("pending", "running", "suspended", "completed", "failed"):
        assert samples[("crux_flows", frozenset({("status", status)}))] == counts.get(status, 0)
    assert counts == {"pending": 2, "suspended": 2, "completed": 1}
    assert samples[("crux_flows_due", frozenset())] == 2 == len(db.due(db.clock.time(), 100))
    assert not [name for name, _ in samples if name.startswith("crux_steps")]  # not instrumented


def test_metrics_adds_the_process_counters_and_histograms_when_instrumented(
    db: Any, clock: FakeClock, serve: Any
) -> None:
    order = shop(Registry())
    instrument(meter_provider=MeterProvider())
    try:
        order.run(store=db, input=None)
        order.start(store=db, input="wait")
        clock.advance("2s")
        assert Worker(db, [order]).run_once() == 1
        _, samples = scrape(serve(make_app(db)))
    finally:
        uninstrument()
    name = ("crux_flow_name", "pm-shop")
    assert samples[("crux_flows_started_total", frozenset({name}))] == 2
    assert samples[("crux_flows_finished_total", frozenset({name, ("status", "completed")}))] == 1
    assert samples[("crux_steps_total", frozenset({name, ("outcome", "ok")}))] == 2
    assert samples[("crux_steps_total", frozenset({name, ("outcome", "retry")}))] == 2
    assert samples[("crux_step_duration_seconds_count", frozenset({name}))] == 4
    assert samples[("crux_step_duration_seconds_bucket", frozenset({name, ("le", "+Inf")}))] == 4
    assert samples[("crux_flow_schedule_lag_seconds_count", frozenset({name}))] == 1
    assert samples[("crux_flow_schedule_lag_seconds_sum", frozenset({name}))] == 2.0
    lag_buckets = {
        dict(labels)["le"]: value
        for (sample, labels), value in samples.items()
        if sample == "crux_flow_schedule_lag_seconds_bucket"
    }
    assert (lag_buckets["1.0"], lag_buckets["2.5"]) == (0, 1)
    assert samples[("crux_flows", frozenset({("status", "suspended")}))] == 1


def test_metrics_without_prometheus_client_says_what_to_install(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(promtext, "AVAILABLE", False)
    url = serve(make_app(MemoryStore()))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url + "/metrics", timeout=10)
    assert caught.value.code == 501
    assert "pip install 'crux-gen[prometheus]'" in caught.value.read().decode()
