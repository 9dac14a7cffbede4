"""``crux-gen worker`` under SIGTERM, and what ``crux-gen show`` says about the lease of
a running flow: real worker subprocesses on a real SQLite file.

Supervisors and ``timeout`` often send SIGTERM twice; a second one that arrived
while the worker was shutting down used to kill it (exit code 143).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from crux_gen import FlowContext, Registry, Suspend, flow, get_flow, signal_flow
from crux_gen.stores.sqlite import SQLiteStore
from tests.test_cli import REPO, crux, entries, fits, load_module

FLOWS = """
import os
import time

from crux_gen import Step, Suspend, flow


def work(log, name, seconds, gate=None):
    with open(log, "a") as f:
        f.write(f"{name} start\\n")
    if gate is None:
        time.sleep(seconds)
    while gate is not None and not os.path.exists(gate):  # the test lets it finish
        time.sleep(0.005)
    with open(log, "a") as f:
        f.write(f"{name} done\\n")
    return name


@flow("cli-slow")
def slow(ctx):
    yield Suspend("go")
    inp = ctx.input
    yield Step("slow", lambda: work(inp["log"], "slow", inp["sleep"], inp["gate"]))
    yield Step("after", lambda: work(ctx.input["log"], "after", 0))
    return "ok"
"""


class Site:
    """A directory with the flows module, one database and one due flow in it.

    Its ``slow`` step sleeps *sleep* seconds or, with ``gated=True``, runs until
    :meth:`release` (so the test, not the machine's load, says when it ends)."""

    def __init__(self, root: Path, *, sleep: float = 0, gated: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "slowflows.py").write_text(FLOWS)
        self.flows: ModuleType = load_module(root / "slowflows.py")
        self.log = root / "steps.log"
        self.gate = root / "release-the-step"
        self.store = SQLiteStore(root / "crux.db")
        started = self.flows.slow.run(
            input={"log": str(self.log), "sleep": sleep, "gate": str(self.gate) if gated else None},
            store=self.store,
        )
        self.flow_id: str = started.flow_id
        signal_flow(self.flow_id, "go", None, store=self.store)  # due now

    def worker(self, *options: str) -> subprocess.Popen[str]:
        environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
        environ.update(PYTHONPATH=str(REPO))
        return subprocess.Popen(
            [sys.executable, "-m", "crux_gen", "worker", "slowflows", "--poll", "50ms", *options],
            cwd=self.root,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def release(self) -> None:
        """Let a gated ``slow`` step finish."""
        self.gate.touch()

    def steps(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for_step(self, line: str, worker: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while line not in self.steps():
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, f"no {line!r} in {self.steps()}"
            time.sleep(0.002)

    def info(self) -> Any:
        return get_flow(self.flow_id, store=self.store)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.store.close()


def wait_for_line(worker: subprocess.Popen[str], text: str) -> None:
    """Read the worker's stderr up to a line holding *text* (the lines read are kept
    for :func:`stop`): a signal handler's log line says the signal was handled."""
    assert worker.stderr is not None
    seen = _read.setdefault(worker.pid, [])
    while not any(text in line for line in seen):
        line = worker.stderr.readline()
        assert line, f"the worker exited without {text!r}: {''.join(seen)}"
        seen.append(line)


_read: dict[int, list[str]] = {}  # worker pid -> the stderr lines wait_for_line read


def stop(worker: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for *worker* to exit (killing it after 30 s): its stdout and whole stderr."""
    try:
        out, err = worker.communicate(timeout=30)
        return out, "".join(_read.pop(worker.pid, [])) + err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


@pytest.mark.timeout(180)
def test_worker_exits_0_when_sigterm_arrives_twice(tmp_path: Path, sites: list[Site]) -> None:
    # First both while the step runs (it ends only once they were handled): the
    # worker stops at the next command boundary and logs the second signal. Then,
    # to catch the race that killed it, pairs that land while the worker shuts
    # down, after the step, 10 to 50 ms apart.
    for attempt, gap in enumerate([0.05, 0.01, 0.02, 0.03, 0.04, 0.05]):
        site = Site(tmp_path / f"try-{attempt}", sleep=1.0, gated=attempt == 0)
        sites.append(site)
        worker = site.worker()
        try:
            site.wait_for_step("slow start" if attempt == 0 else "slow done", worker)
            worker.send_signal(signal.SIGTERM)
            if attempt == 0:  # both while the step still runs; then it may end
                wait_for_line(worker, "SIGTERM: stopping at the next command boundary")
                worker.send_signal(signal.SIGTERM)
                wait_for_line(worker, "SIGTERM: already stopping")
                site.release()
            else:  # after the step, *gap* apart (a gap, not a wait: any gap is a pass)
                time.sleep(gap)
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
        finally:
            _, err = stop(worker)
        assert worker.returncode == 0, (attempt, gap, err)
        assert "Traceback" not in err
        assert site.steps().count("slow start") == 1, (attempt, site.steps())
        info = site.info()
        assert [(h.name, h.state) for h in info.history[:2]] == [
            ("go", "completed"),
            ("slow", "completed"),
        ], attempt
        assert info.history[1].attempts == 1
        assert info.history[1].result == "slow"
        if attempt == 0:
            assert "SIGTERM: stopping at the next command boundary" in err
            assert "SIGTERM: already stopping" in err
            # Stopped between the two steps: still running, due for the next worker.
            assert info.status == "running" and len(info.history) == 2
            assert site.store.due(time.time(), 10) == [site.flow_id]
            assert site.steps() == ["slow start", "slow done"]


def test_show_says_who_holds_a_running_flows_lease_and_when_none_does(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = Site(tmp_path / "held", gated=True)
    sites.append(site)
    worker = site.worker("--lease-ttl", "1h30m", "--synchronous", "normal")
    try:
        site.wait_for_step("slow start", worker)
        held = crux("show", site.flow_id, cwd=site.root)  # while the step still runs
        worker.send_signal(signal.SIGTERM)
        wait_for_line(worker, "SIGTERM: stopping at the next command boundary")
        site.release()
    finally:
        _, err = stop(worker)
    assert worker.returncode == 0, err
    assert "(lease 1h30m, synchronous NORMAL)" in err
    assert held.returncode == 0, held.stderr
    lines = held.stdout.splitlines()
    assert "status   running" in lines
    lease = next(line for line in lines if line.startswith("lease    "))
    assert "held by runner " in lease and " until 20" in lease
    assert "(in 1h29m" in lease or "(in 1h30m" in lease  # --lease-ttl reached the store
    assert fits(held.stdout)

    # The worker stopped between the two steps: running, and nobody holds it.
    released = crux("show", site.flow_id, cwd=site.root)
    assert released.returncode == 0, released.stderr
    assert "status   running, but no runner holds it: a worker will pick it up" in (released.stdout)
    assert "lease    released (its runner stopped between two commands)" in released.stdout

    # A crashed worker: its lease lapses after --lease-ttl.
    crashed = Site(tmp_path / "crashed", gated=True)  # never released
    sites.append(crashed)
    worker = crashed.worker("--lease-ttl", "1")
    try:
        crashed.wait_for_step("slow start", worker)
        worker.kill()
    finally:
        stop(worker)
    stored = crashed.store.load(crashed.flow_id)
    assert stored.status == "running" and stored.lease_owner is not None
    time.sleep(max(0.0, (stored.lease_expires or 0) - time.time()) + 1.1)
    lapsed = crux("show", crashed.flow_id, cwd=crashed.root)
    assert lapsed.returncode == 0, lapsed.stderr
    status = next(line for line in entries(lapsed.stdout) if line.startswith("status"))
    assert status.startswith("status   running, but no runner holds it since 20")
    assert status.endswith(" ago): a worker will pick it up")
    assert f"lease    lapsed: runner {stored.lease_owner} stopped renewing it" in lapsed.stdout
    assert fits(lapsed.stdout)


def test_worker_names_the_module_argument_for_a_flow_it_cannot_find(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = Site(tmp_path / "elsewhere", sleep=0)
    sites.append(site)
    registry = Registry()

    @flow("cli-elsewhere", registry=registry)
    def elsewhere(ctx: FlowContext) -> Any:
        yield Suspend("go")

    other = elsewhere.run(store=site.store).flow_id
    signal_flow(other, "go", None, store=site.store)
    worker = site.worker()
    lines: list[str] = []
    assert worker.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()), daemon=True)
    reader.start()
    try:
        site.wait_for_step("after done", worker)
        # The worker takes due flows in a shuffled order: stop it only once it has
        # tried the flow it cannot find (and finished the one it can).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            site.info().status == "completed" and any("'cli-elsewhere'" in x for x in lines)
        ):
            time.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    reader.join(timeout=10)
    err = "".join(lines)
    assert worker.returncode == 0, err
    line = next(x for x in err.splitlines() if "'cli-elsewhere'" in x)
    assert "ERROR crux_gen.worker" in line
    assert (
        'give crux-gen worker the module that defines @flow("cli-elsewhere") as MODULE '
        "(this worker imported slowflows)"
    ) in line
    assert "flows=[" not in line  # the fix for Python callers does not apply here


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_worker_imports_its_module_exits_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A deploy may stop a worker that is still importing its flows: it exits 0 at
    once, as it does later, with one line saying so (not 143 or a traceback)."""
    (tmp_path / "slowimport.py").write_text(
        "import pathlib, time\n"
        "from crux_gen import Step, flow\n"
        "pathlib.Path('importing').touch()\n"
        "time.sleep(30)\n"
        "@flow('never')\n"
        "def never(ctx):\n"
        "    yield Step('x', lambda: 1)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO))
    worker = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "worker", "slowimport", "--db", "crux.db"],
        cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "importing").exists():
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the module never started importing"
            time.sleep(0.01)
        worker.send_signal(signum)
        _, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert f"{signum.name} before the worker started: exiting" in err
    assert "Traceback" not in err
