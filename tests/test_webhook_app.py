"""``examples/webhook_app.py`` for real: the server in a subprocess on 127.0.0.1,
driven with HTTP requests, its worker completing the flows, each step once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "examples" / "webhook_app.py"
sys.path.insert(0, str(APP.parent))
from webhook_app import request  # noqa: E402

STEPS = ("send-welcome", "first-week-plan", "schedule-checkins")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return env


class Server:
    def __init__(self, proc: subprocess.Popen[str], base: str, outbox: Path) -> None:
        self.proc, self.base, self.outbox = proc, base, outbox

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return request(method, self.base + path, body)

    def status(self, flow_id: str) -> str:
        code, body = self.call("GET", f"/status?flow={flow_id}")
        assert code == 200, body
        return str(body["status"])

    def wait_for(self, flow_id: str, status: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.status(flow_id)) != status:
            assert time.monotonic() < deadline, f"{flow_id} is {now}, not {status}"
            time.sleep(0.05)

    def steps_run(self) -> Counter[tuple[str, str]]:
        if not self.outbox.exists():
            return Counter()
        lines = [json.loads(line) for line in self.outbox.read_text().splitlines()]
        return Counter((m["flow_id"], m["step"]) for m in lines)


def _start(tmp: Path, *args: str) -> Server:
    db = tmp / "signup.db"
    proc = subprocess.Popen(
        [sys.executable, str(APP), "serve", "--db", str(db), "--port", "0", *args],
        cwd=tmp,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line + proc.stderr.read()  # type: ignore[union-attr]
    return Server(proc, line.split()[-1], db.with_suffix(".outbox.jsonl"))


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM; the process exits 0 and its stderr is returned."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Server:
        server = _start(tmp_path, *args)
        started.append(server.proc)
        return server

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_signup_verify_and_expiry_over_http(serve: Callable[..., Server]) -> None:
    server = serve("--verify-within", "3s", "--poll", "100ms")
    code, late = server.call("POST", "/signup", {"email": "late@example.com", "name": "Late"})
    assert code == 201 and late["status"] == "suspended"

    code, body = server.call("POST", "/signup", {"email": "henri@example.com", "name": "Henri"})
    assert code == 201
    assert (body["status"], body["waiting_for"]) == ("suspended", "email-verified")
    fid = body["flow_id"]
    code, verified = server.call("GET", body["verify_url"])
    assert (code, verified) == (202, {"flow_id": fid, "status": "verifying"})
    server.wait_for(fid, "completed")
    code, again = server.call("GET", body["verify_url"])  # the link clicked again
    assert code == 409 and again["error"] == "already_verified"

    server.wait_for(late["flow_id"], "expired")  # 3 s after it signed up, by the worker
    code, gone = server.call("GET", late["verify_url"])
    assert code == 410 and gone["error"] == "expired" and "expired" in gone["message"]

    _stop(server.proc)
    assert server.steps_run() == Counter(
        {(fid, step): 1 for step in STEPS} | {(late["flow_id"], "send-welcome"): 1}
    )


def test_bad_requests_get_clear_json_errors(serve: Callable[..., Server]) -> None:
    server = serve()
    assert server.call("GET", "/verify?flow=no-such-flow&token=t")[0] == 404
    assert server.call("GET", "/status?flow=no-such-flow")[0] == 404
    code, body = server.call("GET", "/verify")
    assert code == 400 and "flow" in body["message"]
    _, signed = server.call("POST", "/signup", {"email": "t@example.com"})
    code, body = server.call("GET", f"/verify?flow={signed['flow_id']}&token=forged")
    assert (code, body["error"]) == (403, "bad_token")
    assert server.status(signed["flow_id"]) == "suspended"
    assert server.call("POST", "/signup", {"name": "no email"})[0] == 400
    assert server.call("GET", "/signup")[0] == 405
    assert server.call("GET", "/nowhere")[0] == 404
    _stop(server.proc)


def test_concurrent_clicks_on_one_link_record_one_signal(serve: Callable[..., Server]) -> None:
    """Eight clicks on one verification link at the same moment (a double-click, a
    mail scanner, a retried request): exactly one 202, the others 409; the flow
    runs each step once and keeps one signal."""
    server = serve("--poll", "100ms")
    _, body = server.call("POST", "/signup", {"email": "click@example.com"})
    fid, url = body["flow_id"], body["verify_url"]
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def click() -> None:
        barrier.wait(timeout=10)
        codes.append(server.call("GET", url)[0])

    clickers = [threading.Thread(target=click) for _ in range(8)]
    for t in clickers:
        t.start()
    for t in clickers:
        t.join(timeout=30)
    assert sorted(codes) == [202] + [409] * 7
    server.wait_for(fid, "completed")
    code, again = server.call("GET", url)  # a click after the flow completed
    assert (code, again["error"]) == (409, "already_verified")
    _stop(server.proc)
    assert server.steps_run() == Counter({(fid, step): 1 for step in STEPS})
    from crux_gen import SQLiteStore, get_flow

    signals = get_flow(fid, store=SQLiteStore(server.outbox.parent / "signup.db")).signals
    assert [s.state for s in signals] == ["consumed"]


def test_a_separate_worker_process_completes_the_flow(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve("--no-worker")
    _, body = server.call("POST", "/signup", {"email": "w@example.com"})
    assert server.call("GET", body["verify_url"])[0] == 202
    time.sleep(0.2)
    assert server.status(body["flow_id"]) == "suspended"  # nobody runs it in the server
    db = str(tmp_path / "signup.db")
    worker = subprocess.Popen(
        [sys.executable, str(APP), "worker", "--db", db, "--poll", "100ms"],
        cwd=tmp_path,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        server.wait_for(body["flow_id"], "completed")
    finally:
        err = _stop(worker)
    assert body["flow_id"] in err and "completed" in err  # the worker's log line
    _stop(server.proc)
    assert server.steps_run() == Counter({(body["flow_id"], step): 1 for step in STEPS})


def test_the_demo_runs_and_exits(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(APP)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "'status': 'completed'" in done.stdout
    assert "schedule-checkins" in done.stdout
