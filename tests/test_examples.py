"""The examples run for real: each in fresh processes, in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FlowInfo, get_flow
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
ONBOARDING = REPO / "examples" / "onboarding.py"
STEPS = ["send-welcome", "email-verified", "first-week-plan", "schedule-checkins"]


def run_onboarding(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/onboarding.py ARGS`` in *cwd*, with no OpenAI settings
    unless *env* gives some, and no proxy between it and a local fake server."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ["NO_PROXY"] = environ["no_proxy"] = "127.0.0.1,localhost"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, str(ONBOARDING), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def flow_id_in(output: str) -> str:
    found = re.search(r"flow id\s+(\S+)", output)
    assert found, output
    return found.group(1)


def welcomes(outbox: Path, flow_id: str) -> int:
    """How many welcome emails the example's stand-in mailer wrote for *flow_id*."""
    if not outbox.exists():
        return 0
    messages = [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]
    return sum(m["template"] == "welcome" and m["key"].startswith(f"{flow_id}/") for m in messages)


def stored(db: Path, flow_id: str) -> FlowInfo:
    """The flow as the example's SQLite file holds it."""
    store = SQLiteStore(db)
    try:
        return get_flow(flow_id, store=store)
    finally:
        store.close()


def assert_completed(info: FlowInfo) -> None:
    assert info.status == "completed"
    assert len(info.history) >= 4
    assert [e.name for e in info.history if e.kind in ("step", "suspend")] == STEPS
    assert all(e.state == "completed" for e in info.history)
    [signal] = info.signals
    assert (signal.name, signal.state) == ("email-verified", "consumed")
    assert set(signal.payload) == {"verified_at"}
    assert len(info.value["checkins"]) == 5


def test_onboarding_demo_runs_end_to_end_with_no_arguments(tmp_path: Path) -> None:
    done = run_onboarding(tmp_path)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    flow_id = flow_id_in(done.stdout)
    assert "suspended" in done.stdout and "email-verified" in done.stdout
    assert "status       completed" in done.stdout
    assert "send-welcome ran exactly once" in done.stdout
    assert welcomes(tmp_path / "onboarding-outbox.jsonl", flow_id) == 1

    info = stored(tmp_path / "onboarding.db", flow_id)
    assert_completed(info)
    assert info.input == {"email": "user@example.com", "name": "Henri", "goal": "shipping"}
    assert "Henri" in info.value["plan"] and "shipping" in info.value["plan"]
    assert info.value["plan"].splitlines()[1] in done.stdout


def test_onboarding_stages_run_in_three_processes(tmp_path: Path) -> None:
    db, outbox = tmp_path / "flows.db", tmp_path / "mail.jsonl"
    where = ["--db", str(db), "--outbox", str(outbox)]

    started = run_onboarding(tmp_path, "start", *where, "--name", "Ada", "--goal", "testing")
    assert started.returncode == 0, started.stderr
    flow_id = flow_id_in(started.stdout)
    info = stored(db, flow_id)
    assert (info.status, info.waiting_for) == ("suspended", "email-verified")
    assert welcomes(outbox, flow_id) == 1

    # The signal only records the payload: no step runs, nothing is consumed yet.
    signalled = run_onboarding(tmp_path, "signal", *where, flow_id)
    assert signalled.returncode == 0, signalled.stderr
    info = stored(db, flow_id)
    assert info.status == "suspended"
    assert [s.state for s in info.signals] == ["pending"]
    assert [e.name for e in info.history] == ["send-welcome", "email-verified"]
    assert welcomes(outbox, flow_id) == 1

    resumed = run_onboarding(tmp_path, "resume", *where, flow_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "status       completed" in resumed.stdout
    assert "Ada's first week (testing)" in resumed.stdout
    assert "send-welcome ran exactly once" in resumed.stdout
    assert_completed(stored(db, flow_id))
    assert welcomes(outbox, flow_id) == 1

    # Resuming a finished flow runs nothing; signalling it is refused without a traceback.
    again = run_onboarding(tmp_path, "resume", *where, flow_id)
    assert again.returncode == 0 and "completed" in again.stdout
    late = run_onboarding(tmp_path, "signal", *where, flow_id)
    assert late.returncode == 1
    assert late.stderr.startswith("error: ") and "Traceback" not in late.stderr
    assert welcomes(outbox, flow_id) == 1
    assert len(stored(db, flow_id).signals) == 1


def test_start_with_a_known_flow_id_does_not_send_twice(tmp_path: Path) -> None:
    for _ in range(2):
        started = run_onboarding(tmp_path, "start", "--flow-id", "user-42")
        assert started.returncode == 0, started.stderr
        assert flow_id_in(started.stdout) == "user-42"
    assert welcomes(tmp_path / "onboarding-outbox.jsonl", "user-42") == 1


class FakeOpenAI:
    """An OpenAI-compatible chat completions endpoint on 127.0.0.1 that records requests
    and fails the first *failures* of them with HTTP 500."""

    reply = "FAKE-LLM PLAN: ship one small thing a day."

    def __init__(self, failures: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures = failures
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), **body})
                if len(fake.requests) <= fake.failures:
                    self.send_error(500, "try again")
                    return
                answer = {"choices": [{"message": {"role": "assistant", "content": fake.reply}}]}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def fake_openai(request: pytest.FixtureRequest) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(failures=getattr(request, "param", 0))
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


def test_plan_step_calls_an_openai_compatible_endpoint(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    env = {"OPENAI_API_KEY": "test", "OPENAI_BASE_URL": fake_openai.base_url}
    done = run_onboarding(tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    assert "plan (from the LLM)" in done.stdout and FakeOpenAI.reply in done.stdout
    info = stored(tmp_path / "onboarding.db", flow_id_in(done.stdout))
    assert_completed(info)
    assert info.value["plan"] == FakeOpenAI.reply

    [sent] = fake_openai.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer test"
    assert sent["model"] == "gpt-4o-mini"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"] for m in sent["messages"])
    assert "Henri" in sent["messages"][-1]["content"]
    assert "shipping" in sent["messages"][-1]["content"]


@pytest.mark.parametrize("fake_openai", [1], indirect=True)
def test_plan_step_retries_a_failed_llm_call(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = {
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_MODEL": "local-model",
    }
    done = run_onboarding(tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    info = stored(tmp_path / "onboarding.db", flow_id_in(done.stdout))
    assert info.value["plan"] == FakeOpenAI.reply
    [plan_step] = [e for e in info.history if e.name == "first-week-plan"]
    assert plan_step.attempts == 2
    assert [r["model"] for r in fake_openai.requests] == ["local-model", "local-model"]
