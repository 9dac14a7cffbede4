"""examples/json_logs.py runs as a user runs it (a fresh process, an empty directory):
every line it prints is a JSON object, and crux_gen's records carry their
attributes there: each slice's start and end, each step attempt (none for the
step the second slice replays)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_json_logs_prints_one_object_per_record_with_the_records_attributes(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "json_logs.py"), "--db", "orders.db"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len({line["flow_id"] for line in lines}) == 1  # every record names the flow
    assert all(line["logger"] == "crux_gen" for line in lines)
    slices = [
        (line["level"], line["slice"], line["status"], line["waiting_for"])
        for line in lines
        if "slice" in line
    ]
    assert slices == [
        ("INFO", "start", "running", None),
        ("INFO", "end", "suspended", "shipped"),
        ("INFO", "start", "suspended", "shipped"),
        ("INFO", "end", "completed", None),
    ]
    assert {line["flow_name"] for line in lines if "slice" in line} == {"json-order"}
    attempts = [
        (line["level"], line["step"], line["attempt"], line["outcome"], line["error"])
        for line in lines
        if "outcome" in line
    ]
    # The charge's two attempts in the first slice; the second slice replays it.
    assert attempts == [
        ("DEBUG", "charge", 1, "retry", "ConnectionError"),
        ("DEBUG", "charge", 2, "ok", None),
        ("DEBUG", "send-receipt", 1, "ok", None),
    ]
    assert all(isinstance(line["duration"], float) for line in lines if "outcome" in line)
    assert (tmp_path / "orders.db").exists()
