"""Racing starts across real processes (``tests/start_procs.py``), on a SQLite file and
on PostgreSQL: processes starting the same ``Exclusive`` or ``Debounce`` key at the
same instant leave exactly one started, unfinished flow (or one pending debounced
flow) per key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import MemoryStore
from crux_gen.opening import open_store
from crux_gen.worker import Worker

from . import start_procs

REPO = Path(__file__).resolve().parent.parent
PROCESSES = 4


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store every process opens: a SQLite file, or a fresh PostgreSQL database,
    its schema made before the race (as a deployed app's would be)."""
    if request.param == "sqlite":
        spec = str(tmp_path / "race.db")
    else:
        spec = request.getfixturevalue("pg_database")
    open_store(spec, create=True).close()
    yield spec


def race(where: str, kind: str, count: int, key: str = "acct-1") -> list[list[str]]:
    """Start *count* flows of *kind* in each of ``PROCESSES`` processes, all at once;
    the ids each process got back."""
    at = time.time() + 2.0  # every process is up by then, even on a busy machine
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.start_procs", where, kind, str(at), str(count), key],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    got = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        got.append(json.loads(out))
    return got


def flows_of(where: str, name: str) -> list[Any]:
    store = open_store(where, create=False)
    try:
        return [store.load(f.id) for f in store.list_flows(name=name, limit=1000)]
    finally:
        store.close()


def test_racing_skip_starts_leave_one_flow_and_every_process_gets_its_id(where: str) -> None:
    got = race(where, "skip", 5)
    [only] = flows_of(where, "race-skip")
    assert {i for ids in got for i in ids} == {only.id}
    assert only.status == "pending" and only.blocked_by is None


def test_racing_queue_starts_leave_one_holder_and_the_rest_queued_behind_it(where: str) -> None:
    got = race(where, "queue", 5)
    flows = flows_of(where, "race-queue")
    assert len(flows) == PROCESSES * 5 == len({i for ids in got for i in ids})
    holders = [f for f in flows if f.blocked_by is None]
    assert len(holders) == 1
    assert {f.blocked_by for f in flows if f is not holders[0]} == {holders[0].id}
    # A worker runs them one after the other: each end lets exactly the next one start.
    store = open_store(where, create=False)
    try:
        worker = Worker(store=store, flows=[start_procs.FLOWS["queue"]])
        while worker.run_once():
            pass
        assert {store.load(f.id).status for f in flows} == {"completed"}
    finally:
        store.close()


def test_racing_cancel_starts_leave_one_unfinished_flow(where: str) -> None:
    race(where, "cancel", 3)
    flows = flows_of(where, "race-cancel")
    assert len(flows) == PROCESSES * 3
    [alive] = [f for f in flows if f.status != "cancelled"]
    assert alive.status == "pending" and alive.blocked_by is None
    reasons = {f.cancel_reason for f in flows if f.status == "cancelled"}
    assert all(r is not None and r.startswith("replaced by ") for r in reasons)


def test_racing_debounced_starts_leave_one_pending_flow_with_a_last_input(where: str) -> None:
    got = race(where, "debounce", 25)  # 100 starts
    [only] = flows_of(where, "race-debounce")
    assert {i for ids in got for i in ids} == {only.id}
    assert only.status == "pending"
    last = json.loads(only.input)["n"]
    assert last.endswith("-24")  # some process's last start: every earlier one was replaced


def test_the_race_entry_point_starts_what_it_says(tmp_path: Path) -> None:
    """The flows of ``start_procs`` in this process, once (what the races build on)."""
    store = MemoryStore()
    h = start_procs.FLOWS["skip"].start(input={"k": "a", "n": "x"}, store=store)
    assert start_procs.FLOWS["skip"].start(input={"k": "a", "n": "y"}, store=store) == h
