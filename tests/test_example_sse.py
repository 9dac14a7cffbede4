"""``examples/sse_stream.py`` for real, in subprocesses: the demo prints every token
as a server-sent event, the first while the flow still runs; the server streams
to a client that connects late from the first token, and answers /phase and 404."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sse_stream.py"
sys.path.insert(0, str(REPO / "examples"))

from sse_stream import post, sse  # noqa: E402


def env() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ["NO_PROXY"] = environ["no_proxy"] = "127.0.0.1,localhost"
    return environ


def test_the_demo_streams_each_token_while_the_flow_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "demo", "--prompt", "one two three", "--delay", "0.1"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "POST /ask -> a flow of sse-answer",
        "first token while the flow was running: True",
        'message: "ONE"',
        'message: "TWO"',
        'message: "THREE"',
        'end: {"status": "completed", "phase": "done", "value": "ONE TWO THREE"}',
    ]


def test_the_server_streams_to_a_late_client_from_the_first_token(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "serve", "--db", "chat.db", "--port", "0"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on http://"), line + server.stderr.read()
        base = line.split()[-1]
        flow_id = post(base + "/ask", {"prompt": "a b c d"})["flow_id"]
        time.sleep(0.3)  # some tokens are written before the client connects
        events = list(sse(f"{base}/stream?flow={flow_id}"))
        assert events == [
            ("message", "A"),
            ("message", "B"),
            ("message", "C"),
            ("message", "D"),
            ("end", {"status": "completed", "phase": "done", "value": "A B C D"}),
        ]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{base}/phase?flow={flow_id}", timeout=10) as response:
            assert json.loads(response.read()) == {"phase": "done"}
        try:
            opener.open(f"{base}/stream?flow=no-such-flow", timeout=10)
            raise AssertionError("no 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        server.terminate()
        server.wait(30)
