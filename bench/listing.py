"""How long ``list_flows`` takes for one page as flows pile up, first page and deep.

    python bench/listing.py            # 10k and 100k flows
    python bench/listing.py --quick    # 1k and 10k, a few seconds

For each size it builds a fresh SQLite store holding that many flows (inserted
directly with ``executemany``: a third each suspended, completed and failed,
under two flow names, updated one millisecond apart), then times, median of a
few repetitions:

- ``first``: ``list_flows(store=..., limit=50)``, the newest page;
- ``deep``: the page after the flow in the middle of the table (``before=`` its
  ``updated_at``), which an ``OFFSET`` query would pay for by reading half the
  table;
- ``status``: the newest page of ``status="suspended"``;
- ``status+name deep``: the deep page filtered by status and name.

Keyset paging reads one index range per page, so each figure should stay flat
from 10k to 100k flows; the query plans are printed first.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Out, fresh, machine, parser, workdir

from crux_gen import list_flows
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.stores.sqlite_schema import FLOW_COLUMNS

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STATUSES = ("suspended", "completed", "failed")


def build(path: Path, n: int) -> SQLiteStore:
    store = SQLiteStore(fresh(path), synchronous="NORMAL")
    rows = [
        (
            f"flow-{i:08d}",
            ("onboarding", "billing")[i % 2],
            STATUSES[i % 3],
            "null",
            START + i / 1000,
            START + i / 1000,
            "email-verified" if i % 3 == 0 else None,
        )
        for i in range(n)
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at, waiting_for) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return store


ORDER = "ORDER BY updated_at DESC, id DESC LIMIT ?"  # as SQLiteStore.list_flows


def pages(store: SQLiteStore, middle: datetime) -> list[tuple[str, Callable[[], Any]]]:
    """The pages timed: newest, deep (before *middle*), by status, by status and name."""
    return [
        ("first", lambda: list_flows(store=store, limit=50)),
        ("deep", lambda: list_flows(store=store, limit=50, before=middle)),
        ("status", lambda: list_flows(store=store, status="suspended", limit=50)),
        (
            "status+name deep",
            lambda: list_flows(
                store=store, status="suspended", name="billing", limit=50, before=middle
            ),
        ),
    ]


def timed(fn: Callable[[], Any], reps: int) -> float:
    samples = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--sizes", default=None, help="comma-separated (default 10000,100000)")
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()
    sizes = [
        int(s) for s in (args.sizes or ("1000,10000" if args.quick else "10000,100000")).split(",")
    ]
    out = Out(args.json)
    doc: dict[str, Any] = {"machine": machine(), "sizes": {}}
    with workdir(args.dir, "crux-bench-listing") as d:
        for n in sizes:
            store = build(d / f"list-{n}.db", n)
            if n == sizes[0]:
                conn = store._conn()
                for where in ("", "WHERE updated_at < ?", "WHERE status = ? AND updated_at < ?"):
                    sql = f"SELECT {FLOW_COLUMNS} FROM flows {where} {ORDER}"
                    plan = conn.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))
                    out.line(f"plan {where or '(no filter)'}: " + " | ".join(r[-1] for r in plan))
            middle = datetime.fromtimestamp(START + n / 2000, timezone.utc)
            figures = {what: timed(call, args.reps) for what, call in pages(store, middle)}
            assert len(list_flows(store=store, limit=50, before=middle)) == 50
            doc["sizes"][n] = figures
            out.line(
                f"{n:>8,} flows: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in figures.items())
                + " per page of 50"
            )
            store.close()
    out.emit(doc)


if __name__ == "__main__":
    main()
