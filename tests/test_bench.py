"""The benchmark scripts stay runnable: each imports what it measures and parses
its arguments (the numbers themselves live in bench/RESULTS.md, never in tests)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if p.name[0] != "_"))
def test_a_benchmark_script_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_growth_runs_small_and_its_section_renders(tmp_path: Path) -> None:
    """bench/growth.py with 300 flows, one a second, retention 2 minutes and a worker
    pass every 60 flows: the passes keep up, so exactly the last 120 flows are kept."""
    args = ["--count", "300", "--retention", "2m", "--pass-every", "60", "--batch", "100"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "growth.py"), *args, "--rounds", "2", "--json"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    without, with_ = doc["without"], doc["with"]
    assert (without["kept"], without["deleted"], without["passes"]) == (300, 0, 0)
    assert doc["steady_flows"] == with_["kept"] == 120
    assert with_["deleted"] == 180 and with_["passes"] == 5
    assert with_["used_bytes"] < without["used_bytes"] <= without["file_bytes"]
    cost = doc["batch_cost"]
    assert (cost["batch"], cost["rounds"], cost["flows_in_store"]) == (100, 2, 300)
    assert cost["ms_per_batch"] > 0 and cost["ms_nothing_old"] > 0
    sys.path.insert(0, str(BENCH))
    try:
        report = importlib.import_module("report")
    finally:
        sys.path.remove(str(BENCH))
    text = "\n".join(report.growth_section(doc))
    assert "## Store growth and retention" in text and "| with | 120 |" in text


def test_current_step_cost_runs_small() -> None:
    """bench/current_step.py with short flows and few calls: every part measured,
    and the keyed flow's steps really asked (one finding None fails the run)."""
    args = ["--quick", "--steps", "20", "--calls", "2000", "--rounds", "1", "--json"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "current_step.py"), *args],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["steps"] == 20 and doc["rounds"] == 2
    for part in ("bare_ns", "wrapped_ns", "current_step_ns", "added_ns"):
        assert doc[part] > 0, part
    for where in ("sqlite_us_per_step", "memory_us_per_step"):
        assert set(doc[where]) == {"plain", "keyed"}
        assert all(v > 0 for v in doc[where].values())
    assert (
        doc["share_of_durable_step"] == doc["added_ns"] / 1000 / doc["sqlite_us_per_step"]["plain"]
    )
    assert doc["ok"] == (doc["share_of_durable_step"] <= doc["target"])


def test_events_cost_runs_small() -> None:
    """bench/events.py with short flows: every variant measured on both stores
    (each run checks what it published), the verdict computed from them."""
    args = ["--quick", "--steps", "20", "--rounds", "1", "--json"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "events.py"), *args],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["steps"] == 20 and doc["rounds"] == 2
    for where in ("sqlite_us_per_step", "memory_us_per_step"):
        assert set(doc[where]) == {"plain", "event", "stream"}
        assert all(v > 0 for v in doc[where].values())
    sqlite = doc["sqlite_us_per_step"]
    assert (
        doc["event_share_of_durable_step"] == (sqlite["event"] - sqlite["plain"]) / sqlite["plain"]
    )
    assert doc["ok"] == (doc["event_share_of_durable_step"] <= doc["target"])
