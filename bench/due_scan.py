"""How much a worker's tick costs as suspended, not-due flows pile up in SQLite.

    python bench/due_scan.py            # 10k, 100k and 1M suspended flows
    python bench/due_scan.py --quick    # 1k and 10k, a few seconds

For each size it builds a fresh store file holding that many flows parked at the
onboarding flow's ``Suspend("email-verified")`` (inserted directly with
``executemany``: a completed step and a waiting suspend record each; half have a
deadline a day ahead, half none), then times, by the store's (fake) clock at a
fixed instant:

- ``due`` with 0 due: ``SQLiteStore.due(now, 100)``, the worker's one query a tick;
- ``tick`` with 0 due: ``Worker.run_once()`` with nothing to do;
- ``due`` with 100 due: the same query once 100 due flows are added (50 with a
  pending signal, 50 past their deadline);
- ``tick`` with 100 due: ``run_once()`` advancing those 100 (to completed / expired);

and reports milliseconds per tick (median), the ratio to an empty store, and the
file's bytes per suspended flow. The due query reads only the partial indexes
``flows_due``, ``flows_running`` and ``signals_pending``, so flows that are not
due should cost it nothing: its ratios stay near 1 (the plan is printed first).
A tick that advances 100 flows costs mostly their replays and writes, which grow
somewhat with the file as its pages fall out of SQLite's page cache.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crux_gen import FakeClock, FlowContext, Registry, Step, Suspend, flow
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.stores.sqlite_schema import DUE
from crux_gen.worker import Worker

NAME = "bench-onboarding"
INPUT = '{"email": "user@example.com", "name": "Henri"}'
DAY = 86400.0
CLOCK = FakeClock()
NOW = CLOCK.now().timestamp()


@flow(NAME, registry=Registry())
def onboarding(ctx: FlowContext) -> Any:
    yield Step("send-welcome", lambda: None)
    yield Suspend("email-verified", timeout="24h")
    return (yield Step("first-week-plan", lambda: "plan"))


FLOW_SQL = (
    "INSERT INTO flows (id, name, status, input, created_at, updated_at, waiting_for, "
    "wait_kind, wake_at, deadline) VALUES (?, ?, 'suspended', ?, ?, ?, 'email-verified', "
    "'suspend', ?, ?)"
)
RECORD_SQL = (
    "INSERT INTO records (flow_id, position, kind, name, state, result, attempts, started_at, "
    "finished_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SIGNAL_SQL = (
    "INSERT INTO signals (flow_id, name, payload, state, created_at) "
    "VALUES (?, 'email-verified', '{\"verified_at\": \"2026-01-01T00:00:00Z\"}', 'pending', ?)"
)


def insert_parked(
    path: str, prefix: str, count: int, *, deadline: Callable[[int], float | None]
) -> None:
    """*count* flows parked at the Suspend, ids ``prefix0`` …, with their two records."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    chunk = 50_000
    for lo in range(0, count, chunk):
        ids = [(f"{prefix}{i}", deadline(i)) for i in range(lo, min(count, lo + chunk))]
        t = NOW - 60
        conn.executemany(FLOW_SQL, ((i, NAME, INPUT, t, t, d, d) for i, d in ids))
        conn.executemany(
            RECORD_SQL,
            (
                row
                for i, d in ids
                for row in (
                    (i, 0, "step", "send-welcome", "completed", "null", 1, t, t, None),
                    (i, 1, "suspend", "email-verified", "waiting", None, 0, t, None, d),
                )
            ),
        )
    conn.execute("COMMIT")
    conn.close()


def add_due(path: str, prefix: str) -> None:
    """100 due flows: 50 with the signal they wait for pending, 50 past their deadline."""
    insert_parked(path, prefix + "s", 50, deadline=lambda i: None)
    insert_parked(path, prefix + "d", 50, deadline=lambda i: NOW - 1)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(SIGNAL_SQL, ((f"{prefix}s{i}", NOW - 30) for i in range(50)))
    conn.close()


def file_bytes(path: str) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm the page cache and the statement cache
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(size: int, workdir: Path, reps: int) -> dict[str, float]:
    path = str(workdir / f"due-{size}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    SQLiteStore(path).close()  # the schema
    empty_bytes = file_bytes(path)
    started = time.perf_counter()
    insert_parked(path, "p", size, deadline=lambda i: NOW + DAY if i % 2 else None)
    build_s = time.perf_counter() - started
    per_flow = (file_bytes(path) - empty_bytes) / size if size else 0.0

    store = SQLiteStore(path, clock=CLOCK, synchronous="NORMAL")
    worker = Worker(store, [onboarding])
    out = {"size": size, "build_s": build_s, "bytes_per_flow": per_flow}
    out["due_0"] = median_ms(lambda: store.due(NOW, 100), reps)
    out["tick_0"] = median_ms(worker.run_once, reps)
    add_due(path, "due-a")
    assert len(store.due(NOW, 200)) == 100
    out["due_100"] = median_ms(lambda: store.due(NOW, 100), reps)
    ticks = []
    for rep in range(3):
        if rep:
            add_due(path, f"due-{rep}")
        gc.collect()
        start = time.perf_counter()
        advanced = worker.run_once()
        ticks.append(time.perf_counter() - start)
        assert advanced == 100, advanced
    out["tick_100"] = statistics.median(ticks) * 1000
    store.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return out


def plan(workdir: Path) -> Iterator[str]:
    path = str(workdir / "plan.db")
    store = SQLiteStore(path)
    for row in store._conn().execute("EXPLAIN QUERY PLAN " + DUE, {"now": NOW, "limit": 100}):
        yield row[3]
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k flows only")
    parser.add_argument("--sizes", help="comma-separated sizes, e.g. 10000,100000")
    parser.add_argument("--reps", type=int, default=0, help="timed repetitions per query")
    parser.add_argument("--dir", help="where to build the store files (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    reps = args.reps or (30 if args.quick else 100)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        print("due query plan:")
        for line in plan(workdir):
            print("   ", line)
        print(f"\nSQLite {sqlite3.sqlite_version}, median of {reps} runs (ticks with 100 due: 3)")
        header = (
            f"{'suspended':>10} {'bytes/flow':>10} {'due 0':>8} {'tick 0':>8} "
            f"{'due 100':>8} {'tick 100':>9} {'x empty: tick 0':>16} {'due 100':>8} {'tick 100':>9}"
        )
        print(header)
        print("-" * len(header))
        measure(0, workdir, reps)  # warm up the interpreter, then the baseline
        base = measure(0, workdir, reps)
        for result in [base] + [measure(n, workdir, reps) for n in sizes]:
            print(
                f"{result['size']:>10,} {result['bytes_per_flow']:>10.0f} "
                f"{result['due_0']:>6.3f}ms {result['tick_0']:>6.3f}ms "
                f"{result['due_100']:>6.3f}ms {result['tick_100']:>7.1f}ms "
                f"{result['tick_0'] / base['tick_0']:>15.2f}x "
                f"{result['due_100'] / base['due_100']:>7.2f}x "
                f"{result['tick_100'] / base['tick_100']:>8.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
