"""``crux-gen show ID --follow``: the records, signals and status of a flow printed
as they land, until it finishes: in process while another thread advances the
flow, and as a real process while a real worker process runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from crux_gen import signal_flow
from crux_gen.cli import main
from crux_gen.stores.sqlite import SQLiteStore

from .test_cli_bulk import wait

REPO = Path(__file__).resolve().parents[1]


def follow_in_process(
    args: list[str], act: Any, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Run ``crux-gen ARGS`` here while *act* runs on a thread once it started."""
    capsys.readouterr()
    worker = threading.Thread(target=act)
    worker.start()
    try:
        with pytest.raises(SystemExit) as exited:
            main(args)
    finally:
        worker.join(10)
    out, _ = capsys.readouterr()
    return int(exited.value.code or 0), out


def test_follow_prints_new_records_and_the_end_then_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = wait.run(store=store, input={}).flow_id

    def approve() -> None:
        time.sleep(0.3)
        signal_flow(flow_id, "approved", {"by": "ops"}, store=store)
        time.sleep(0.3)
        wait.run(store=store, resume=flow_id)

    code, out = follow_in_process(
        ["show", flow_id, "--follow", "--poll", "50ms", "--db", str(db)], approve, capsys
    )
    assert code == 0
    head, _, rest = out.partition(f"following flow {flow_id} until it finishes (Ctrl-C stops)\n")
    assert "suspended, waiting for 'approved'" in head and rest
    lines = rest.splitlines()
    signal_at = next(i for i, line in enumerate(lines) if "'approved'  pending" in line)
    done_at = next(i for i, line in enumerate(lines) if "Suspend('approved')" in line)
    assert "completed" in lines[done_at] and signal_at < done_at
    assert "status   completed" in rest and 'value    {"by": "ops"}' in rest
    assert lines[-1] == 'value    {"by": "ops"}'


def test_follow_json_is_one_object_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = wait.run(store=store, input={}).flow_id

    def approve() -> None:
        time.sleep(0.2)
        signal_flow(flow_id, "approved", 7, store=store)
        wait.run(store=store, resume=flow_id)

    code, out = follow_in_process(
        ["show", flow_id, "--follow", "--json", "--poll", "50ms", "--db", str(db)], approve, capsys
    )
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "flow" and events[0]["status"] == "suspended"
    assert events[-1] == {
        "event": "status", "status": "completed", "waiting_for": None, "value": 7, "error": None
    }  # fmt: skip
    records = [e for e in events if e["event"] == "record"]
    assert records and records[-1]["name"] == "approved" and records[-1]["state"] == "completed"
    assert any(e["event"] == "signal" and e["payload"] == 7 for e in events)


def test_follow_of_a_finished_flow_shows_it_and_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = wait.run(store=store, input={}).flow_id
    signal_flow(flow_id, "approved", 1, store=store)
    wait.run(store=store, resume=flow_id)
    code, out = follow_in_process(
        ["show", flow_id, "--follow", "--db", str(db)], lambda: None, capsys
    )
    assert code == 0 and "status   completed" in out and "following" not in out


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    """Lines of *proc*'s stdout until one holds *text*."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    pytest.fail(f"{text!r} never came; got:\n{seen}")


def test_follow_in_a_shell_while_a_worker_process_runs_the_flow(tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = wait.run(store=store, input={}).flow_id
    env = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    env.update(PYTHONPATH=str(REPO), COLUMNS="100")
    run = [sys.executable, "-m", "crux_gen"]
    worker = subprocess.Popen(
        [*run, "worker", "tests.test_cli_bulk", "--db", str(db), "--poll", "100ms"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    follow = subprocess.Popen(
        [*run, "show", flow_id[:8], "--follow", "--poll", "100ms", "--db", str(db)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        read_until(follow, "following flow")
        signal_flow(flow_id, "approved", "yes", store=store)  # the worker takes it
        rest = read_until(follow, "status   completed")
        assert follow.wait(30) == 0
        assert "'approved'" in rest and 'value    "yes"' in follow.stdout.read()  # type: ignore[union-attr]
    finally:
        for proc in (follow, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        follow.stderr.close()  # type: ignore[union-attr]
        follow.stdout.close()  # type: ignore[union-attr]
    assert worker.returncode == 0
