"""``crux-gen fork`` for real: ``python -m crux_gen`` in subprocesses on a SQLite
file, the flow's module imported by the command (no flow registered otherwise),
a worker process running the fork, and a changed module refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FLOWS = """
from pathlib import Path
from crux_gen import FlowContext, Step, flow

def call(name):
    with open(Path(__file__).parent / "calls.txt", "a") as f:
        f.write(name + "\\n")
    return name

@flow("proc-fork")
def order(ctx: FlowContext):
    a = yield Step("reserve", lambda: call("reserve"))
    b = yield Step("charge", lambda: call("charge"))
    c = yield Step("{last}", lambda: call("{last}"))
    return [a, b, c]
"""


def crux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO), COLUMNS="80")
    return subprocess.run(
        [sys.executable, "-m", "crux_gen", *args, "--db", str(cwd / "crux.db")],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fork_in_a_process_then_a_worker_process_runs_it_and_a_changed_module_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "forkflows.py").write_text(FLOWS.format(last="ship"))
    done = crux("start", "proc-fork", "--module", "forkflows", "--id", "p1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ran = crux("worker", "forkflows", "--once", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    forked = crux("fork", "p1", "--at", "charge", "--module", "forkflows", "--json", cwd=tmp_path)
    assert forked.returncode == 0, forked.stderr
    shown = json.loads(forked.stdout)
    assert (shown["from"], shown["at"], shown["status"]) == ("p1", 1, "pending")
    ran = crux("worker", "forkflows", "--once", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    calls = (tmp_path / "calls.txt").read_text().split()
    assert calls == ["reserve", "charge", "ship", "charge", "ship"]  # "reserve" once
    listed = crux("list", "--json", cwd=tmp_path)
    statuses = {f["id"]: f["status"] for f in json.loads(listed.stdout)}
    assert statuses == {"p1": "completed", shown["id"]: "completed"}

    (tmp_path / "forkflows.py").write_text(FLOWS.format(last="deliver"))  # a new deploy
    refused = crux("fork", "p1", "--at", "3", "--module", "forkflows", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
    assert refused.stderr.count("\n") == 1 and "at position 2 recorded" in refused.stderr
    listed = crux("list", "--json", cwd=tmp_path)
    assert len(json.loads(listed.stdout)) == 2  # nothing created
    cut = crux("fork", "p1", "--at", "2", "--module", "forkflows", "--json", cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr  # before the change the history replays
