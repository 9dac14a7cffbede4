"""``bench/observability.py`` runs (a tiny pass: the numbers live in bench/RESULTS.md,
never in tests) and its document reaches the report: issue 22's two target rows,
each with a verdict, and its section."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("report")


def test_a_tiny_observability_run_gives_both_rows_a_verdict(report: Any) -> None:
    args = ["--rounds", "2", "--flows", "2", "--steps", "3", "--json"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "observability.py"), *args],
        cwd=BENCH.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    on, off = doc["on"], doc["off"]
    assert len(on["samples"]) == 2 and on["meets_target"] == (on["ratio"] <= 1.2)
    assert on["added_us_per_step"] == pytest.approx(on["on_us_per_step"] - on["off_us_per_step"])
    assert off["per_attempt_ns"] > 0 and off["per_slice_ns"] > 0
    assert off["meets_target"] == (off["share"] <= 0.03)
    # The seam's time over the pass: µs a step from ns an attempt and a slice.
    per_step = (off["per_attempt_ns"] * 3 + off["per_slice_ns"]) / 3 / 1000
    assert off["seam_us_per_step"] == pytest.approx(per_step)
    rows = [r for r in report.targets({"observability": doc}) if r.startswith("| #22 |")]
    assert len(rows) == 2 and all(r.endswith(("| **met** |", "| **missed** |")) for r in rows)
    assert f"{on['ratio']:.3f}x" in rows[0] and f"{off['share']:.3%}" in rows[1]
    section = "\n".join(report.observability_section(doc))
    assert "## Observability — `bench/observability.py`" in section
    assert "InMemoryMetricReader" in section


def test_observability_rows_not_measured_say_so(report: Any) -> None:
    rows = [r for r in report.targets({}) if r.startswith("| #22 |")]
    assert len(rows) == 2 and all("| not measured | — |" in r for r in rows), rows
    failed = {"failed": True, "note": "exited 1", "stderr": "Traceback"}
    assert "_Not measured: exited 1_" in report.observability_section(failed)
