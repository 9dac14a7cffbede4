"""``@flow(max_recoveries=)`` with real crashes (issue 23): a step that kills its
process (``os._exit``) or a worker SIGKILLed in the middle of a step, each worker
pass a process of its own (``tests/guard_procs.py``), on SQLite and PostgreSQL.
The flow ends ``"failed"`` with ``PoisonFlowError`` at the claim after its
``max_recoveries`` + 1 runners died, and the step is not run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import get_flow
from tests import pg
from tests.guard_procs import exiting, hanging, open_store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The store's arguments for ``tests.guard_procs``: ``sqlite PATH`` or
    ``postgres URL SCHEMA`` (a schema of this test's own)."""
    if request.param == "sqlite":
        yield ["sqlite", str(tmp_path / "crux.db")]
        return
    pg.store_class()  # skipped (failed under CI) without the PostgreSQL store
    server = request.getfixturevalue("pg_server")
    with pg.fresh_schema(server) as schema:
        yield ["postgres", server.url, schema]


def spawn(log: str, where: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.guard_procs", log, *where],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lapsed(store: Any, flow_id: str) -> bool:
    expires = store.load(flow_id).lease_expires
    return expires is None or expires <= store.clock.time()


def marks(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_step_that_exits_its_process_fails_the_flow_after_max_recoveries_plus_one_runs(
    where: list[str], tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    store = open_store(*where[:1], *where[1:])
    flow_id = exiting.start(input=str(log), store=store).flow_id
    # max_recoveries=1: the first runner and one recovery run the step, and die.
    for n in range(1, 3):
        proc = spawn(str(log), where)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err  # os._exit(1) in the step
        assert len(marks(log)) == n
        wait_for(lambda: lapsed(store, flow_id), "the dead runner's lease to lapse")
    proc = spawn(str(log), where)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    info = get_flow(flow_id, store=store)
    assert info.status == "failed"
    assert info.error is not None and info.error.type == "crux_gen.guards.PoisonFlowError"
    assert f"flow {flow_id!r} (gp-exit): 2 claims in a row" in info.error.message
    assert [m.split()[1] for m in marks(log)] == ["exit", "exit"]  # never a third time
    store.close()


def test_a_worker_killed_mid_step_counts_one_recovery(where: list[str], tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    store = open_store(*where[:1], *where[1:])
    flow_id = hanging.start(input=str(log), store=store).flow_id
    proc = spawn(str(log), where)
    wait_for(lambda: marks(log), "the step to start")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert store.load(flow_id).recoveries == 0  # the first claim: nothing lapsed before it
    wait_for(lambda: lapsed(store, flow_id), "the killed runner's lease to lapse")
    proc = spawn(str(log), where)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    info = get_flow(flow_id, store=store)
    assert info.status == "failed"
    assert info.error is not None and info.error.type == "crux_gen.guards.PoisonFlowError"
    assert f"flow {flow_id!r} (gp-hang): 1 claim in a row" in info.error.message
    assert "max_recoveries=0" in info.error.message
    assert len(marks(log)) == 1  # max_recoveries=0: not run again
    store.close()
