"""Flows under limits and a worker entry point for the subprocesses of
``test_limits_procs.py``: ``python -m tests.limit_procs DB SECONDS [LEASE_TTL]``
runs passes of a ``Worker`` (concurrency 4) on the store at *DB* (a SQLite file or
a PostgreSQL URL) until no
flow of these is unfinished, or *SECONDS* passed.

Every step appends ``<time> <pid> <flow id> start|done <tag>`` to the log
file named in the flow's input, fsync'd. ``CRUX_TEST_HOLD`` (a path) makes a
``lp-held`` step of this process wait (30 s at most) for that path to exist.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

from crux_gen import Limit, Rate, Step, flow
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

CAPPED = Limit("lp-capped", concurrency=3, rate=Rate(100, per="1s", burst=5))
PER_CUSTOMER = Limit("lp-customer", concurrency=2, key=lambda input: input["customer"])
ONE = Limit("lp-one", concurrency=1)
STEP = Limit("lp-step", concurrency=2)
NAMES = ("lp-capped", "lp-fair", "lp-held", "lp-stepped")


def work(log: str, flow_id: str, tag: str, seconds: float, hold: bool = False) -> str:
    _append(log, f"{time.time():.6f} {os.getpid()} {flow_id} start {tag}\n")
    gate = os.environ.get("CRUX_TEST_HOLD")
    if hold and gate:
        limit = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < limit:
            time.sleep(0.01)
    time.sleep(seconds)
    _append(log, f"{time.time():.6f} {os.getpid()} {flow_id} done {tag}\n")
    return tag


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


@flow("lp-capped", limits=[CAPPED])
def capped(ctx: Any) -> Any:
    fn = functools.partial(work, ctx.input["log"], ctx.flow_id, "capped", 0.01)
    return (yield Step("work", fn))


@flow("lp-fair", limits=[PER_CUSTOMER])
def fair(ctx: Any) -> Any:
    fn = functools.partial(work, ctx.input["log"], ctx.flow_id, ctx.input["customer"], 0.005)
    return (yield Step("work", fn))


@flow("lp-held", limits=[ONE])
def held(ctx: Any) -> Any:
    fn = functools.partial(work, ctx.input["log"], ctx.flow_id, "held", 0.0, True)
    return (yield Step("work", fn))


def open_at(where: str, lease_ttl: str = "30s") -> Any:
    """The store at *where*: a PostgreSQL URL or a SQLite path."""
    if where.startswith("postgres"):
        from crux_gen.stores.postgres import PostgresStore

        return PostgresStore(where, lease_ttl=lease_ttl)
    return SQLiteStore(Path(where), lease_ttl=lease_ttl)


@flow("lp-stepped")
def stepped(ctx: Any) -> Any:
    log, flow_id = ctx.input["log"], ctx.flow_id
    yield Step("free", functools.partial(time.sleep, 0.002))
    fn = functools.partial(work, log, flow_id, "stepped", 0.01)
    return (yield Step("limited", fn, limits=[STEP]))


def unfinished(store: Any) -> int:
    counts = store.count_flows()
    return sum(counts.get(s, 0) for s in ("pending", "running", "suspended"))


def main(argv: list[str]) -> int:
    db, seconds = argv[0], float(argv[1])
    store = open_at(db, argv[2] if len(argv) > 2 else "30s")
    worker = Worker(store, [capped, fair, held, stepped], concurrency=4)
    until = time.monotonic() + seconds
    while time.monotonic() < until and unfinished(store):
        if worker.run_once() == 0:
            time.sleep(0.01)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
