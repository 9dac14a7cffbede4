"""crux_gen on PostgreSQL: µs per durable step beside a raw psycopg INSERT + commit
of the same row, durable steps per server transaction of a concurrent worker, and
flows per second with 1, 2, 4 and 8 worker processes.

    python bench/postgres.py            # a throwaway pgserver (PostgreSQL 16), or
    CRUX_BENCH_PG_URL=postgresql://... python bench/postgres.py
    python bench/postgres.py --quick [--parts steps,xacts,workers]

Steps: flows of ``--steps`` steps returning small dicts on ``PostgresStore``, and,
in the same run, interleaved round by round (who goes first alternates), as many
raw autocommit INSERTs of the same rows (a table made like our ``records`` table)
through one psycopg connection: ours µs/step ÷ raw µs/commit, taken within each
round, median, is the ratio (target ≤ 1.3x).

Transactions: ``--xact-flows`` flows (100) of ``--xact-steps`` fast steps (20) are
stored unheld (``store.start`` then ``store.release``), then one
``Worker(store, [flow], concurrency=N).run_once()`` runs them all, N = 1 and 32, in
a database of their own (created for the bench, dropped after). The server's
transactions are counted there: ``xact_commit + xact_rollback`` of that database in
``pg_stat_database``, read from another database before the worker's store opens
and after it has closed and every backend connected to the bench database has
exited (a backend flushes its statistics as it exits, before it leaves
``pg_stat_activity``; the readings must then hold still for 0.2 s). Every
transaction counts, read-only ones too (autocommit SELECTs, pool pings). The same
worker with no flows stored (open the store, one empty pass, close) is the
baseline, subtracted: what is left is what running the flows cost. Durable steps
per transaction = flows * steps / that (target ≥ 10 at concurrency 32). Also shown:
``pg_stat_wal.wal_sync`` over the same window (WAL flushes; cluster-wide, so the
checkpointer's and the WAL writer's are in it too).

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

from urllib.parse import urlsplit, urlunsplit

from _common import Out, machine, median, parser

from crux_gen import FlowContext, Registry, Step, codec, flow
from crux_gen.runner import new_flow_id
from crux_gen.worker import Worker

REPO = Path(__file__).resolve().parent.parent
REGISTRY = Registry()
STEP_TARGET = 1.3  # ours µs/step over a raw INSERT + commit
XACT_TARGET = 10.0  # durable steps per server transaction, worker concurrency 32
XACT_LEVELS = (1, 32)


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

    def run_ours() -> float:
        began = time.perf_counter()
        steps_flow.run(store=store, input={"steps": n})
        return (time.perf_counter() - began) / n * 1e6

    for r in range(rounds):
        if r % 2 == 0:  # who goes first alternates
            ours = run_ours()
            base = raw_commits(raw, table, n) / n * 1e6
        else:
            base = raw_commits(raw, table, n) / n * 1e6
            ours = run_ours()
        ours_us.append(ours)
        raw_us.append(base)
        out.line(f"  round {r + 1}/{rounds}: ours {ours:.0f} µs/step, raw {base:.0f} µs/commit")
    result = {
        "ours_us": statistics.median(ours_us),
        "raw_us": statistics.median(raw_us),
        "ratio": statistics.median(o / b for o, b in zip(ours_us, raw_us, strict=True)),
        "samples": {"ours_us": ours_us, "raw_us": raw_us},
    }
    raw.close()
    store.close()
    return result


# -- server transactions per durable step ---------------------------------------------


def with_database(url: str, dbname: str) -> str:
    """*url* with its database replaced by *dbname*."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def server_counts(admin: Any, dbname: str) -> dict[str, int]:
    """Committed and rolled-back transactions of *dbname*, and the cluster's WAL syncs,
    from the statistics (read on *admin*, connected to another database)."""
    row = admin.execute(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
    ).fetchone()
    wal = admin.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
    return {"commits": int(row[0]), "rollbacks": int(row[1]), "wal_syncs": int(wal[0])}


def settled(admin: Any, dbname: str, timeout: float = 60.0) -> dict[str, int]:
    """The counts of *dbname* once no backend is connected to it (each flushed its
    statistics as it exited) and two readings 0.2 s apart agree."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] | None = None
    while time.monotonic() < deadline:
        (busy,) = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchone()
        if busy == 0:
            now = server_counts(admin, dbname)
            if now == last:
                return now
            last = now
        time.sleep(0.2)
    raise TimeoutError(f"backends of {dbname} still connected or counts moving after {timeout}s")


def xact_result(
    concurrency: int, durable_steps: int, delta: dict[str, int], baseline: dict[str, int]
) -> dict[str, Any]:
    """One run's counts: transactions (commits + rollbacks) and WAL syncs of the run,
    less the baseline's (a store opened, one empty pass, closed), per durable step."""
    raw = delta["commits"] + delta["rollbacks"]
    base = baseline["commits"] + baseline["rollbacks"]
    net = raw - base
    syncs = delta["wal_syncs"] - baseline["wal_syncs"]
    return {
        "concurrency": concurrency,
        "durable_steps": durable_steps,
        "transactions": net,
        "transactions_raw": raw,
        "baseline_transactions": base,
        "rollbacks": delta["rollbacks"],
        "steps_per_transaction": durable_steps / net if net > 0 else float("inf"),
        "wal_syncs": syncs,
        "steps_per_wal_sync": durable_steps / syncs if syncs > 0 else None,
    }


def xact_run(
    admin: Any, url: str, dbname: str, schema: str, flows: int, steps: int, concurrency: int
) -> dict[str, Any]:
    """Store *flows* unheld flows in *schema* (untimed, uncounted), then count the
    server's transactions and WAL syncs of one ``Worker.run_once()`` at *concurrency*,
    from opening its store to closing it; *flows* = 0 is the baseline."""
    import psycopg

    from crux_gen.stores.postgres import PostgresStore

    prep = PostgresStore(url, schema=schema)
    encoded = codec.encode({"steps": steps}, what="input")
    for _ in range(flows):
        flow_id = new_flow_id()
        prep.start(flow_id, steps_flow.name, encoded, "bench", prep.clock.time())
        prep.release(flow_id, "bench")
    prep.close()
    before = settled(admin, dbname)
    store = PostgresStore(url, schema=schema)
    worker = Worker(store, [steps_flow], concurrency=concurrency)
    began = time.perf_counter()
    ran = worker.run_once()
    seconds = time.perf_counter() - began
    store.close()
    after = settled(admin, dbname)
    assert ran == flows, f"concurrency {concurrency}: ran {ran} of {flows} flows"
    with psycopg.connect(url, autocommit=True) as check:  # after the counting
        done = check.execute(
            f"SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM {schema}.flows"
        ).fetchone()
        recorded = check.execute(
            f"SELECT count(*) FROM {schema}.records WHERE kind = 'step'"
        ).fetchone()
    assert done == (flows, flows), f"completed, all: {done} (of {flows})"
    assert recorded == (flows * steps,), f"step records: {recorded} (of {flows * steps})"
    return {
        "delta": {k: after[k] - before[k] for k in after},
        "seconds": seconds,
        "steps_per_second": flows * steps / seconds if flows else None,
    }


def bench_xacts(url: str, rounds: int, flows: int, steps: int, out: Out) -> dict[str, Any]:
    """Durable steps per server transaction at worker concurrency 1 and 32 (medians of
    *rounds*; each round: the baseline, then the two concurrencies, order alternating)."""
    import psycopg

    dbname = f"crux_bench_xact_{secrets.token_hex(4)}"
    admin = psycopg.connect(url, autocommit=True)
    admin.execute(f"CREATE DATABASE {dbname}")
    db_url = with_database(url, dbname)
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in XACT_LEVELS}
    try:
        for r in range(rounds):
            base = xact_run(admin, db_url, dbname, f"b{r}", 0, steps, XACT_LEVELS[-1])["delta"]
            for c in XACT_LEVELS if r % 2 == 0 else reversed(XACT_LEVELS):
                got = xact_run(admin, db_url, dbname, f"c{c}_r{r}", flows, steps, c)
                row = {**xact_result(c, flows * steps, got["delta"], base), **got}
                runs[c].append(row)
                out.line(
                    f"  round {r + 1}/{rounds}, concurrency {c}: {row['transactions']} server "
                    f"transactions ({row['transactions_raw']} less the baseline's "
                    f"{row['baseline_transactions']}), {row['steps_per_transaction']:.1f} "
                    f"durable steps per transaction, {row['wal_syncs']} WAL syncs, "
                    f"{row['steps_per_second']:,.0f} steps/s"
                )
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
        admin.close()
    rows = []
    for c in XACT_LEVELS:
        per = runs[c]
        row = {
            "concurrency": c,
            "flows": flows,
            "steps": steps,
            "durable_steps": flows * steps,
            "transactions": median([x["transactions"] for x in per]),
            "baseline_transactions": median([x["baseline_transactions"] for x in per]),
            "steps_per_transaction": median([x["steps_per_transaction"] for x in per]),
            "wal_syncs": median([x["wal_syncs"] for x in per]),
            "steps_per_second": median([x["steps_per_second"] for x in per]),
            "samples": [{k: v for k, v in x.items() if k != "delta"} for x in per],
        }
        if c == XACT_LEVELS[-1]:
            row["target"] = XACT_TARGET
            row["meets_target"] = row["steps_per_transaction"] >= XACT_TARGET
        rows.append(row)
    return {
        "how": "xact_commit + xact_rollback of the bench's own database in pg_stat_database, "
        "read from another database before the worker's store opens and after every backend "
        "of the bench database has exited; read-only transactions included; the baseline "
        "(store opened, one empty worker pass, closed) subtracted; autovacuum's transactions "
        "in that database count too if it visits during the window (rare: it visits a "
        "database about once a minute)",
        "rounds": rounds,
        "levels": rows,
    }


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


PARTS = ("steps", "xacts", "workers")


def psycopg_errors() -> type[Exception]:
    import psycopg

    return psycopg.Error


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=None, help="step rounds (default 7, 3)")
    p.add_argument("--steps", type=int, default=300, help="steps per flow, step rounds")
    p.add_argument("--flows", type=int, default=None, help="flows, worker processes (2000, 500)")
    p.add_argument(
        "--xact-rounds", type=int, default=None, help="transaction-count rounds (default 3, 1)"
    )
    p.add_argument("--xact-flows", type=int, default=100, help="flows per count (default 100)")
    p.add_argument("--xact-steps", type=int, default=20, help="steps per flow (default 20)")
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"what to run (default {','.join(PARTS)})"
    )
    args = p.parse_args()
    parts = [x for x in args.parts.split(",") if x]
    if unknown := [x for x in parts if x not in PARTS]:
        p.error(f"--parts: unknown {', '.join(unknown)} (known: {','.join(PARTS)})")
    out = Out(args.json)
    rounds = args.rounds or (3 if args.quick else 7)
    flows = args.flows or (500 if args.quick else 2000)
    xact_rounds = args.xact_rounds or (1 if args.quick else 3)
    doc: dict[str, Any] = {"machine": machine(), "parts": parts}
    try:
        url, srv = server()
    except ImportError as exc:  # no pgserver and no CRUX_BENCH_PG_URL
        out.line(f"PostgreSQL not measured: {exc}")
        doc.update(
            skipped=True, note=f"no server: set CRUX_BENCH_PG_URL or install pgserver ({exc})"
        )
        out.emit(doc)
        return
    try:
        if "steps" in parts:
            out.line(f"crux_gen on PostgreSQL: {args.steps}-step flows, {rounds} rounds")
            steps = bench_steps(url, rounds, args.steps, out)
            ok = steps["ratio"] <= STEP_TARGET
            out.line(
                f"step: ours {steps['ours_us']:.0f} µs, raw INSERT+commit {steps['raw_us']:.0f} "
                f"µs, ratio {steps['ratio']:.2f}x (target ≤ {STEP_TARGET}x: "
                f"{'ok' if ok else 'MISSED'})"
            )
            doc["step"] = [
                {
                    **{k: round(v, 2) for k, v in steps.items() if isinstance(v, float)},
                    "target": f"≤ {STEP_TARGET}x",
                    "ratio_target": STEP_TARGET,
                    "meets_target": ok,
                    "rounds": rounds,
                    "steps": args.steps,
                    "samples": steps["samples"],
                }
            ]
        if "xacts" in parts:
            out.line(
                f"server transactions: {args.xact_flows} flows of {args.xact_steps} steps, "
                f"worker concurrency {' and '.join(map(str, XACT_LEVELS))}, {xact_rounds} rounds"
            )
            try:
                doc["xacts"] = bench_xacts(url, xact_rounds, args.xact_flows, args.xact_steps, out)
            except (TimeoutError, psycopg_errors()) as exc:  # no CREATE DATABASE, say
                out.line(f"server transactions not counted: {exc}")
                doc["xacts"] = {"note": f"not counted: {type(exc).__name__}: {exc}", "levels": []}
            for row in doc["xacts"]["levels"]:
                verdict = ""
                if "meets_target" in row:
                    verdict = f" (target ≥ {XACT_TARGET:g}: "
                    verdict += f"{'ok' if row['meets_target'] else 'MISSED'})"
                out.line(
                    f"concurrency {row['concurrency']}: {row['steps_per_transaction']:.1f} "
                    f"durable steps per server transaction{verdict}"
                )
        if "workers" in parts:
            rates = bench_workers(url, flows, [1, 2, 4, 8], out)
            scale = rates[4] / rates[1]
            out.line(f"workers: 1 → 4 processes scales {scale:.2f}x (target ≥ 3x)")
            doc["workers"] = [
                {"processes": n, "flows_per_second": round(r, 1)} for n, r in rates.items()
            ]
            doc["scale_1_to_4_workers"] = round(scale, 2)
            doc["scale_target"] = "≥ 3x (or what bounds it: bench/ANALYSIS.md)"
        doc["machine_after"] = machine()
        out.emit(doc)
    finally:
        if srv is not None:
            srv.cleanup()


if __name__ == "__main__":
    main()
