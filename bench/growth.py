"""How big a store grows, with and without ``@flow(..., retention=...)`` (issue 22).

1. *store size after N finished flows* (default 100,000), on two SQLite files
   (``synchronous=NORMAL``, so that filling them takes minutes, not hours; the
   size does not depend on it): the same flow of three steps, run to the end N
   times by ``Flow.run``, one flow every ``--every`` of a fake clock (default 1 s),

   - *without* retention: every flow is kept;
   - *with* ``retention=--retention`` (default ``"1h"``): a worker pass
     (``Worker.run_once()``, which applies retention) every ``--pass-every``
     flows (default 100), as a worker polling beside the flows would, deleting
     at most ``--batch`` flows a pass (the worker's default, 200).

   For each: the file's bytes (after a WAL checkpoint), the bytes its used pages
   hold (SQLite reuses freed pages and never shrinks a file without VACUUM, so a
   file with retention stops growing at its peak instead of shrinking), and the
   flows left.
2. *the cost of one retention batch*: on the file without retention (N flows),
   reopened with ``synchronous=FULL`` (the default), ``store.prune(cutoff,
   name=..., limit=--batch)`` deleting the oldest --batch flows with their
   records, ``--rounds`` times: milliseconds per batch (one transaction, one
   fsync), and µs per flow; and a pass with nothing old (the read that finds
   nothing, no transaction). Medians.

    python bench/growth.py [--quick] [--json] [--dir PATH] [--count N] [--batch K]
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, flow
from crux_gen.clock import FakeClock
from crux_gen.durations import format_duration, to_duration
from crux_gen.flow import Registry
from crux_gen.retention import BATCH
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

NAME = "bench-growth"


def _body(ctx: Any) -> Any:
    """An onboarding-like flow: three steps returning small dicts."""
    sent = yield Step("send-welcome", lambda: {"sent": True, "to": ctx.input["email"]})
    plan = yield Step("plan", lambda: {"plan": ["day 1", "day 3", "day 7"], "sent": sent})
    return (yield Step("schedule", lambda: {"scheduled": len(plan["plan"])}))


def make_flow(retention: str | None) -> Any:
    """The bench flow, with or without a retention (a registry of its own)."""
    return flow(NAME, registry=Registry(), retention=retention)(_body)


def size(path: Path) -> dict[str, int]:
    """The file's bytes after a WAL checkpoint, and the bytes of its used pages."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return {
        "file_bytes": path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
        "used_bytes": (pages - free) * page,
    }


def fill(path: Path, count: int, every: float, retention: str | None, args: Any) -> dict[str, Any]:
    """Run *count* flows to the end on a fresh file, one every *every* seconds of a
    fake clock; with *retention*, a worker pass every ``args.pass_every`` flows."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    store = SQLiteStore(fresh(path), synchronous="NORMAL", clock=clock)
    run = make_flow(retention)
    worker = Worker(store=store, flows=[run], retention_batch=args.batch)
    passes, pass_seconds, t0 = 0, 0.0, time.perf_counter()
    for i in range(count):
        run.run(input={"email": f"user{i}@example.com", "name": f"User {i}"}, store=store)
        clock.advance(every)
        if retention is not None and (i + 1) % args.pass_every == 0:
            p0 = time.perf_counter()
            worker.run_once()
            pass_seconds += time.perf_counter() - p0
            passes += 1
    seconds = time.perf_counter() - t0
    left = store.count(name=NAME)
    store.close()
    return {
        "flows": count,
        "kept": left,
        "deleted": worker.retention.deleted,
        "passes": passes,
        "ms_per_pass": 1000 * pass_seconds / passes if passes else None,
        "seconds": seconds,
        **size(path),
    }


def batch_cost(path: Path, batch: int, rounds: int) -> dict[str, Any]:
    """ms per ``prune(..., limit=batch)`` of the oldest flows of a full file (FULL)."""
    store = SQLiteStore(path, synchronous="FULL")
    [(oldest,)] = store._conn().execute("SELECT min(updated_at) FROM flows").fetchall()
    cutoff = time.time() + 86400  # after every flow: each batch takes the oldest
    took, empty = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        gone = store.prune(cutoff, name=NAME, limit=batch)
        took.append(time.perf_counter() - t0)
        assert gone == batch, f"a batch deleted {gone}, not {batch}: too few flows"
        t0 = time.perf_counter()
        assert store.prune(oldest, name=NAME, limit=batch) == 0  # nothing older
        empty.append(time.perf_counter() - t0)
    left = store.count(name=NAME)
    store.close()
    ms = 1000 * median(took)
    return {
        "batch": batch,
        "rounds": rounds,
        "flows_in_store": left + batch * rounds,
        "ms_per_batch": ms,
        "us_per_flow": 1000 * ms / batch,
        "ms_nothing_old": 1000 * median(empty),
        "samples_ms": [round(1000 * t, 3) for t in took],
        "synchronous": "FULL",
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--count", type=int, default=None, help="flows (default 100000)")
    p.add_argument("--retention", default="1h")
    p.add_argument("--every", default="1s", help="fake-clock time between two flows")
    p.add_argument("--pass-every", type=int, default=100, help="flows between worker passes")
    p.add_argument("--batch", type=int, default=BATCH, help="the worker's retention_batch")
    p.add_argument("--rounds", type=int, default=None, help="batches timed (default 20)")
    args = p.parse_args()
    out = Out(args.json)
    count = args.count or (5000 if args.quick else 100_000)
    rounds = args.rounds or (5 if args.quick else 20)
    every = to_duration(args.every).total_seconds()
    keep = to_duration(args.retention)
    doc: dict[str, Any] = {
        "machine": machine(),
        "count": count,
        "retention": format_duration(keep),
        "every": format_duration(every),
        "pass_every": args.pass_every,
        "steady_flows": int(keep.total_seconds() / every),
    }
    with workdir(args.dir, "crux-bench-growth-") as d:
        for key, retention in (("without", None), ("with", args.retention)):
            out.line(f"{count:,} flows {key} retention…")
            got = doc[key] = fill(d / f"{key}.db", count, every, retention, args)
            out.line(
                f"  {got['file_bytes'] / 2**20:.1f} MiB file, {got['used_bytes'] / 2**20:.1f} "
                f"MiB used, {got['kept']:,} flows kept ({got['seconds']:.0f} s)"
            )
        doc["file_ratio"] = doc["without"]["file_bytes"] / doc["with"]["file_bytes"]
        out.line(f"without / with retention: {doc['file_ratio']:.1f}x the file")
        rounds = min(rounds, max(1, count // args.batch - 1))
        cost = doc["batch_cost"] = batch_cost(d / "without.db", args.batch, rounds)
        out.line(
            f"a batch of {cost['batch']} flows: {cost['ms_per_batch']:.1f} ms "
            f"({cost['us_per_flow']:.0f} µs a flow) in a store of {cost['flows_in_store']:,}; "
            f"nothing old: {cost['ms_nothing_old']:.2f} ms"
        )
        if args.dir:
            out.line(f"files kept in {os.fspath(d)}")
    out.emit(doc)


if __name__ == "__main__":
    main()
