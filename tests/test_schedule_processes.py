"""A schedule fired by three real worker processes sharing one SQLite file.

How ticks come fast without sleeping minutes: every process's store reads its
clock from one file (``tests/sched_procs.FileClock``), which this test moves one
minute forward at a time, so a ``* * * * *`` schedule ticks every few
milliseconds of real time while the three workers race on each tick. (``backfill``
would not do: it is one process, and it exercises no worker's firing.) The
schedule's ``catchup="1h"`` keeps a tick that no worker saw in its minute (a busy
machine) firing late rather than never; ``overlap="allow"`` fires every tick.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from crux_gen import SQLiteStore

REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
TICKS = 20


def set_time(clock_file: Path, moment: datetime) -> None:
    part = clock_file.with_suffix(".part")
    part.write_text(repr(moment.timestamp()))
    os.replace(part, clock_file)  # readers see the old or the new time, whole


def test_three_worker_processes_fire_twenty_ticks_as_twenty_flows_each_run_once(
    tmp_path: Path,
) -> None:
    db, clock_file = tmp_path / "crux.db", tmp_path / "clock"
    log, stop = tmp_path / "effects.log", tmp_path / "stop"
    set_time(clock_file, START)
    SQLiteStore(db).close()  # made once, before the workers race to open it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tests.sched_procs", *map(str, (db, clock_file, log, stop))]
    procs = [
        subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        store = SQLiteStore(db)
        deadline = time.monotonic() + 60
        while store.get_schedule("minutely") is None:  # a worker has seen it: ticks count
            assert time.monotonic() < deadline, "no worker registered the schedule"
            assert all(p.poll() is None for p in procs), procs[0].stderr
            time.sleep(0.01)
        for minute in range(1, TICKS + 1):
            set_time(clock_file, START + timedelta(minutes=minute))
            time.sleep(0.03)  # the workers race on this tick
        while store.count(name="minutely", status="completed") < TICKS:
            assert time.monotonic() < deadline, f"{store.count(name='minutely')} flows"
            time.sleep(0.02)
        time.sleep(0.2)  # any duplicate firing or run would show by now
    finally:
        stop.touch()
        errors = [p.communicate(timeout=30)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    ticks = [f"2026-01-01T00:{m:02d}:00Z" for m in range(1, TICKS + 1)]
    flows = store.list_flows(name="minutely", limit=100)
    assert sorted(f.id for f in flows) == [f"sched:minutely:{t}" for t in ticks]
    assert {f.status for f in flows} == {"completed"}
    runs = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert runs == Counter(ticks)  # every tick's step ran exactly once, in some process
    store.close()
