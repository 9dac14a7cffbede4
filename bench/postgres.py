"""crux_gen on PostgreSQL: µs per durable step beside a raw psycopg INSERT + commit
of the same row, and flows per second with 1, 2, 4 and 8 worker processes.

    python bench/postgres.py            # a throwaway pgserver (PostgreSQL 16), or
    CRUX_BENCH_PG_URL=postgresql://... python bench/postgres.py
    python bench/postgres.py --quick

Steps: flows of ``--steps`` steps returning small dicts on ``PostgresStore``, and,
in the same run, interleaved round by round, as many raw autocommit INSERTs of the
same rows (a table made like our ``records`` table) through one psycopg
connection: ours µs/step ÷ raw µs/commit is the ratio (target ≤ 1.3x). A step of
ours costs two round trips (the lease and cancel check before the step function,
then the fenced insert), the raw commit one.

Workers: N flows of two steps, inserted as due, then 1, 2, 4, 8 worker processes
(``Worker.run_forever``) until all completed; flows per second from the first
claim to the last completion. The server, the workers and this script share the
machine's cores: on 2 cores, more than 2 processes mostly take turns.
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Out, machine, parser

from crux_gen import FlowContext, Registry, Step, flow

REPO = Path(__file__).resolve().parent.parent
REGISTRY = Registry()


@flow("bench-pg-steps", registry=REGISTRY)
def steps_flow(ctx: FlowContext) -> Any:
    for i in range(ctx.input["steps"]):
        yield Step(f"s{i}", lambda i=i: {"i": i, "ok": True})
    return ctx.input["steps"]


def server() -> tuple[str, Any]:
    url = os.environ.get("CRUX_BENCH_PG_URL", "").strip()
    if url:
        return url, None
    import pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    srv = pgserver.get_server(tempfile.mkdtemp(prefix="crux-bench-pg-"), cleanup_mode="stop")
    return srv.get_uri(), srv


def raw_commits(conn: Any, table: str, n: int) -> float:
    """Seconds for *n* autocommit INSERTs of a step's row."""
    began = time.perf_counter()
    for i in range(n):
        conn.execute(
            f"INSERT INTO {table} VALUES (%s, %s, 'step', %s, 'completed', %s, NULL, 1, "
            "%s, %s, NULL, NULL)",
            (f"raw-{secrets.token_hex(4)}", i, f"s{i}", '{"i":1,"ok":true}', 1.0, 1.0),
        )
    return time.perf_counter() - began


def bench_steps(url: str, rounds: int, n: int, out: Out) -> dict[str, Any]:
    import psycopg

    from crux_gen.stores.postgres import PostgresStore

    schema = f"bench_{secrets.token_hex(4)}"
    store = PostgresStore(url, schema=schema)
    raw = psycopg.connect(url, autocommit=True)
    table = f"{schema}.raw_records"
    raw.execute(f"CREATE TABLE {table} (LIKE {schema}.records INCLUDING ALL)")
    steps_flow.run(store=store, input={"steps": 20})  # warm up both
    raw_commits(raw, table, 20)
    ours_us, raw_us = [], []
    for r in range(rounds):
        began = time.perf_counter()
        steps_flow.run(store=store, input={"steps": n})
        ours = (time.perf_counter() - began) / n * 1e6
        base = raw_commits(raw, table, n) / n * 1e6
        ours_us.append(ours)
        raw_us.append(base)
        out.line(f"  round {r + 1}/{rounds}: ours {ours:.0f} µs/step, raw {base:.0f} µs/commit")
    result = {
        "ours_us": statistics.median(ours_us),
        "raw_us": statistics.median(raw_us),
        "ratio": statistics.median(o / b for o, b in zip(ours_us, raw_us, strict=True)),
    }
    raw.close()
    store.close()
    return result


def bench_workers(url: str, flows: int, counts: list[int], out: Out) -> dict[int, float]:
    import psycopg

    from crux_gen.stores.postgres import PostgresStore

    rates: dict[int, float] = {}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tempfile.mkdtemp(prefix="crux-bench-pg-log-")
    for count in counts:
        schema = f"bench_{secrets.token_hex(4)}"
        store = PostgresStore(url, schema=schema)
        admin = psycopg.connect(url, autocommit=True)
        now = store.clock.time()
        admin.execute(
            f"INSERT INTO {schema}.flows (id, name, status, input, created_at, updated_at) "
            "SELECT 'f' || g, 'pg-two-steps', 'running', 'null', %s, %s "
            "FROM generate_series(1, %s) g",
            (now, now, flows),
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.pg_flows", url, schema, f"{log}/{schema}"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(count)
        ]
        for w in workers:
            assert w.stdout is not None
            w.stdout.readline()  # "ready": imported and connected
        began = time.perf_counter()
        while True:
            (left,) = admin.execute(
                f"SELECT count(*) FROM {schema}.flows WHERE status <> 'completed'"
            ).fetchone() or (0,)
            if left == 0:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        rates[count] = flows / elapsed
        out.line(f"  {count} worker process(es): {rates[count]:,.0f} flows/s ({flows} flows)")
        admin.close()
        store.close()
    return rates


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--flows", type=int, default=None)
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (3 if args.quick else 7)
    flows = args.flows or (500 if args.quick else 2000)
    url, srv = server()
    try:
        out.line(f"crux_gen on PostgreSQL: {args.steps}-step flows, {rounds} rounds")
        steps = bench_steps(url, rounds, args.steps, out)
        out.line(
            f"step: ours {steps['ours_us']:.0f} µs, raw INSERT+commit {steps['raw_us']:.0f} µs, "
            f"ratio {steps['ratio']:.2f}x (target ≤ 1.3x)"
        )
        rates = bench_workers(url, flows, [1, 2, 4, 8], out)
        scale = rates[4] / rates[1]
        out.line(f"workers: 1 → 4 processes scales {scale:.2f}x (target ≥ 3x)")
        out.emit(
            {
                "machine": machine(),
                "step": [{**{k: round(v, 2) for k, v in steps.items()}, "target": "≤ 1.3x"}],
                "workers": [
                    {"processes": n, "flows_per_second": round(r, 1)} for n, r in rates.items()
                ],
                "scale_1_to_4_workers": round(scale, 2),
                "scale_target": "≥ 3x (or what bounds it: bench/ANALYSIS.md)",
            }
        )
    finally:
        if srv is not None:
            srv.cleanup()


if __name__ == "__main__":
    main()
