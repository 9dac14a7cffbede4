"""Limits across processes: 4 real worker processes (``tests/limit_procs.py``) on
one SQLite file (and on PostgreSQL for the first test). A limit is global: never
more than N flows of it run at once (sampled from the store while they run, and
read back from the steps' logs), its rate holds within one burst, a SIGKILLed
worker's slot comes back when its lease expires, and a keyed limit serves its keys
round-robin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import get_flow
from crux_gen.opening import open_store
from crux_gen.stores.sqlite import SQLiteStore

from .limit_procs import capped, fair, held, open_at, stepped

ROOT = Path(__file__).resolve().parent.parent


def workers(
    db: Path, n: int, seconds: float, lease_ttl: str = "30s"
) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "tests.limit_procs", str(db), str(seconds), lease_ttl]
    return [subprocess.Popen(cmd, cwd=ROOT) for _ in range(n)]


def lines(log: Path) -> list[tuple[float, int, str, str, str]]:
    found = []
    for line in log.read_text().splitlines():
        at, pid, flow_id, what, tag = line.split()
        found.append((float(at), int(pid), flow_id, what, tag))
    return sorted(found)


def most_at_once(log: Path) -> int:
    running, most = 0, 0
    for _, _, _, what, _ in lines(log):
        running += 1 if what == "start" else -1
        most = max(most, running)
    return most


def held_slots(store: Any, name: str) -> int:
    """Slots of limit *name* held right now (under live leases), read from the store."""
    return sum(u.held for u in store.limit_usage(time.time()) if u.label == f"limit {name}")


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store every process opens: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        spec = str(tmp_path / "crux.db")
    else:
        spec = request.getfixturevalue("pg_database")
    open_store(spec, create=True).close()
    yield spec


def test_four_processes_never_run_more_than_the_limit_and_keep_its_rate(
    where: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    store = open_at(where)
    ids = [capped.start(input={"log": str(log)}, store=store).flow_id for _ in range(200)]
    procs = workers(where, 4, 90)
    samples = []
    while any(p.poll() is None for p in procs):
        samples.append(held_slots(store, "lp-capped"))
        time.sleep(0.005)
    assert [p.returncode for p in procs] == [0] * 4
    assert {store.load(i).status for i in ids} == {"completed"}
    assert max(samples) <= 3 and len(samples) > 10
    assert most_at_once(log) <= 3  # concurrency=3, across 4 processes of 4 threads
    starts = [at for at, _, _, what, _ in lines(log) if what == "start"]
    assert len(starts) == 200 and len({pid for _, pid, *_ in lines(log)}) > 1
    # Rate 100/s, burst 5: in any window of w seconds at most 5 + 100 w starts (a
    # step starts a little after its claim took the turn: 20 ms of slack).
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            w = starts[j] - first
            assert j - i + 1 <= 5 + 100 * (w + 0.02), (i, j, w)


def test_a_sigkilled_workers_slot_comes_back_when_its_lease_expires(tmp_path: Path) -> None:
    db, log, gate = tmp_path / "crux.db", tmp_path / "log", tmp_path / "go"
    store = SQLiteStore(db)
    first = held.start(input={"log": str(log)}, store=store).flow_id
    cmd = [sys.executable, "-m", "tests.limit_procs", str(db), "60", "2s"]
    doomed = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "CRUX_TEST_HOLD": str(gate)})
    limit = time.monotonic() + 30
    while not (log.exists() and "start" in log.read_text()) and time.monotonic() < limit:
        time.sleep(0.01)
    second = held.start(input={"log": str(log)}, store=store).flow_id
    limit = time.monotonic() + 10  # the doomed worker's next claim finds the slot full
    while get_flow(second, store=store).blocked_by is None and time.monotonic() < limit:
        time.sleep(0.02)
    assert get_flow(second, store=store).blocked_by == "limit lp-one"
    assert held_slots(store, "lp-one") == 1
    doomed.send_signal(signal.SIGKILL)  # holding the one slot of lp-one, mid-step
    doomed.wait()
    gate.touch()
    started = time.monotonic()
    rest = workers(db, 2, 30, "2s")
    for p in rest:
        assert p.wait(60) == 0
    assert store.load(first).status == store.load(second).status == "completed"
    assert time.monotonic() - started < 25
    done = {flow_id: at for at, _, flow_id, what, _ in lines(log) if what == "done"}
    assert sorted(done) == sorted([first, second])
    # the second waited for the slot: it started after the first (run again) was done
    (second_start,) = [at for at, _, f, what, _ in lines(log) if f == second and what == "start"]
    assert second_start >= done[first]
    assert get_flow(second, store=store).blocked_by is None


def test_a_keyed_limit_serves_a_small_customer_long_before_a_big_ones_backlog(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "crux.db", tmp_path / "log"
    store = SQLiteStore(db)
    for _ in range(150):
        fair.start(input={"log": str(log), "customer": "big"}, store=store)
    for _ in range(10):
        fair.start(input={"log": str(log), "customer": "small"}, store=store)
    procs = workers(db, 4, 60)
    for p in procs:
        assert p.wait(90) == 0
    done = [tag for _, _, _, what, tag in lines(log) if what == "done"]
    assert len(done) == 160
    last_small = max(i for i, tag in enumerate(done) if tag == "small")
    # round-robin: the 10 small ones end among the first ~2 x 10 (+ what was in hand)
    assert last_small < 40, done[: last_small + 1]
    assert most_at_once(log) <= 4  # 2 per customer


def test_a_step_limit_holds_across_four_processes(tmp_path: Path) -> None:
    db, log = tmp_path / "crux.db", tmp_path / "log"
    store = open_at(str(db))
    ids = [stepped.start(input={"log": str(log)}, store=store).flow_id for _ in range(60)]
    procs = workers(db, 4, 90)
    samples = []
    while any(p.poll() is None for p in procs):
        samples.append(held_slots(store, "lp-step"))
        time.sleep(0.005)
    assert [p.returncode for p in procs] == [0] * 4
    assert {store.load(i).status for i in ids} == {"completed"}
    assert max(samples) <= 2 and most_at_once(log) <= 2  # concurrency=2 on the step
    done = [f for _, _, f, what, _ in lines(log) if what == "done"]
    assert sorted(done) == sorted(ids)  # each limited step ran once
