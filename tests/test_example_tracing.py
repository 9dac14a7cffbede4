"""examples/tracing.py runs for real: its three stages in processes of their own,
their spans printed by OpenTelemetry's console exporter make one trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from crux_gen.otel.spans import from_text
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tracing.py"


def run_example(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def hex_id(value: int) -> str:
    return f"0x{value:032x}" if value >= 2**64 else f"0x{value:016x}"


def test_the_tracing_example_prints_one_trace_from_three_processes(tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    done = run_example(tmp_path, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    spans = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    names = [s["name"] for s in spans]
    # One span per slice and per step attempt: the replayed steps make none.
    assert sorted(names) == sorted([
        "POST /orders", "flow order", "step reserve-stock", "step request-payment",
        "POST /webhooks/payments", "flow order", "step ship", "POST carrier /shipments",
    ])  # fmt: skip
    by_name = {s["name"]: s for s in spans}
    request, webhook = by_name["POST /orders"], by_name["POST /webhooks/payments"]
    first, second = sorted(
        (s for s in spans if s["name"] == "flow order"), key=lambda s: s["start_time"]
    )

    def service(span: dict[str, Any]) -> str:
        return str(span["resource"]["attributes"]["service.name"])

    # The request's slice, in the request; the worker's, later in another process,
    # a child of the same request (the context stored with the flow).
    trace_id = request["context"]["trace_id"]
    assert (service(first), service(second)) == ("orders-start", "orders-work")
    for slice_, kind, status in (
        (first, "INTERNAL", "suspended"),
        (second, "CONSUMER", "completed"),
    ):
        assert slice_["context"]["trace_id"] == trace_id
        assert slice_["parent_id"] == request["context"]["span_id"]
        assert slice_["kind"] == f"SpanKind.{kind}"
        assert slice_["attributes"]["crux.flow.name"] == "order"
        assert slice_["attributes"]["crux.flow.status"] == status
    assert first["attributes"]["crux.flow.id"] == second["attributes"]["crux.flow.id"]
    # The worker's slice links to the webhook's span (another process, another trace).
    assert webhook["context"]["trace_id"] != trace_id
    [link] = second["links"]
    assert link["context"]["span_id"] == webhook["context"]["span_id"]
    assert link["attributes"]["crux.signal.name"] == "paid"
    assert first["links"] == []
    # Steps under the slice that ran them; the carrier call under its step.
    for step in ("step reserve-stock", "step request-payment"):
        assert by_name[step]["parent_id"] == first["context"]["span_id"]
    assert by_name["step ship"]["parent_id"] == second["context"]["span_id"]
    carrier = by_name["POST carrier /shipments"]
    assert carrier["parent_id"] == by_name["step ship"]["context"]["span_id"]
    assert carrier["context"]["trace_id"] == trace_id

    # The store holds the request's context with the flow, the webhook's with the signal.
    flow_id = first["attributes"]["crux.flow.id"]
    store = SQLiteStore(db)
    try:
        stored = store.load(flow_id)
    finally:
        store.close()
    assert stored.status == "completed"
    started = from_text(stored.trace)
    assert started is not None
    assert (hex_id(started.trace_id), hex_id(started.span_id)) == (
        trace_id, request["context"]["span_id"],
    )  # fmt: skip
    [signal] = stored.signals
    woke = from_text(signal.trace)
    assert woke is not None and hex_id(woke.span_id) == webhook["context"]["span_id"]

    # The demo's last lines: the trace as a tree.
    tree = done.stdout.split(f"== the trace of flow {flow_id}, from three processes:\n")[1]
    assert tree.splitlines() == [
        "POST /orders [SERVER, orders-start]",
        "  flow order [INTERNAL, orders-start]",
        "    step reserve-stock [INTERNAL, orders-start]",
        "    step request-payment [INTERNAL, orders-start]",
        "  flow order [CONSUMER, orders-work]  (linked to POST /webhooks/payments)",
        "    step ship [INTERNAL, orders-work]",
        "      POST carrier /shipments [CLIENT, orders-work]",
        "POST /webhooks/payments [SERVER, orders-pay]",
    ]


def test_the_tracing_example_runs_in_a_temporary_directory_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    done = run_example(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "worker ran 1 slice(s)" in done.stdout
    assert list(tmp_path.iterdir()) == []
    # A stage alone needs the file the others use, and says so in one line.
    alone = run_example(tmp_path, "work")
    assert alone.returncode == 2 and "work needs --db PATH" in alone.stderr
