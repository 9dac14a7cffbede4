"""A worker process for ``tests/test_schedule_processes.py``: ``python -m
tests.sched_procs DB CLOCK LOG STOP`` runs ``Worker.run_once()`` on the SQLite file
*DB* in a loop until the file *STOP* exists, with its store's clock read from the
file *CLOCK* (UTC seconds as text, which the test moves forward): every process
of the test then shares one fake time. The scheduled flow ``minutely`` appends a
line ``<tick> <pid>`` to *LOG* (fsync'd) in its one step, so the test counts how
many times each tick's step ran, in any process.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crux_gen import Schedule, SQLiteStore, Step, flow
from crux_gen.flow import Registry
from crux_gen.worker import Worker


class FileClock:
    """The time written in a file: one fake clock for several processes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def time(self) -> float:
        while True:
            text = self.path.read_text()
            if text:  # the writer replaces the file whole; never half-written
                return float(text)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


def note(log: str, tick: str) -> str:
    with open(log, "a") as out:
        out.write(f"{tick} {os.getpid()}\n")
        out.flush()
        os.fsync(out.fileno())
    return tick


def main(db: str, clock_file: str, log: str, stop: str) -> None:
    every_minute = Schedule("* * * * *", catchup="1h", overlap="allow")

    @flow("minutely", schedule=every_minute, registry=Registry())
    def minutely(ctx: Any) -> Any:
        tick = ctx.input["scheduled_for"]
        return (yield Step("note", lambda: note(log, tick)))

    # Leases far longer than the test's fake hour: no flow changes hands mid-step.
    store = SQLiteStore(db, clock=FileClock(clock_file), lease_ttl="1d")
    worker = Worker(store, [minutely])
    while not os.path.exists(stop):
        worker.run_once()
        time.sleep(0.002)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
