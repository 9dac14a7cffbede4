"""µs per live step on SQLiteStore, beside a raw sqlite3 commit of the same row.

For each durability mode the store offers (``FULL``, ``NORMAL``), in the same
process and run, against a raw connection doing single-statement INSERTs
(autocommit: INSERT + COMMIT, one implicit transaction each) of the very rows our
store writes, into a table made with our ``records`` table's own CREATE statement,
with the same pragmas (WAL + the same ``synchronous``). Two interleavings, each
round, medians of the per-round ratios:

- paired (the headline): a flow of 300 steps whose every step function also does
  one raw INSERT+COMMIT, timed on its own; ours = (the flow's time - the raw
  commits' time) / 300, raw = the raw commits' time / 300. Ours and raw alternate
  commit by commit, so both see the same disk: an fsync's cost here swings by 10x
  within seconds under other load;
- block: one flow of 300 steps (small dict results), then 300 raw commits (or
  the other way round, alternating by round).

µs/step is a whole flow, start to finish, over its steps (its start and finish
commits included). Also: 1-step flows per second start to finish, the same flow
on ``MemoryStore`` (the Python side alone) and a sweep of µs/step over flows of
10 … 10,000 steps.

    python bench/steps.py [--quick] [--json] [--rounds N] [--steps 300] [--profile]
"""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, codec, flow
from crux_gen.runner import new_flow_id
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.stores.sqlite_schema import SYNCHRONOUS_MODES

TARGETS = {"FULL": 1.2, "NORMAL": 3.0}  # ours µs/step over raw µs/commit (issue 19: FULL ≤ 1.2x)


def small_result(i: int) -> dict[str, Any]:
    """The step's return value: a small dict (~50 bytes of JSON)."""
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


@flow("bench-steps")
def steps_flow(ctx):
    out = None
    for i in range(ctx.input["steps"]):
        out = yield Step(f"step-{i}", functools.partial(small_result, i))
    return out


@flow("bench-steps-paired")
def paired_flow(ctx):
    out = None
    for i in range(ctx.input["steps"]):
        out = yield Step(f"step-{i}", functools.partial(paired_step, i))
    return out


class Raw:
    """A plain sqlite3 connection: WAL, the given ``synchronous``, autocommit INSERTs."""

    def __init__(self, path: Path, mode: str, create_sql: str) -> None:
        self.conn = sqlite3.connect(fresh(path), isolation_level=None)
        got = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        assert str(got).lower() == "wal", got
        self.conn.execute(f"PRAGMA synchronous = {mode}")
        self.conn.execute(create_sql)
        self.sql = "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    def rows(self, steps: int) -> list[tuple[Any, ...]]:
        """The rows our store writes for a flow of *steps* steps (a fresh flow id)."""
        fid, now = new_flow_id(), time.time()
        return [
            (
                fid,
                i,
                "step",
                f"step-{i}",
                "completed",
                codec.encode(small_result(i), what="r"),
                None,
                1,
                now,
                now,
                None,
                None,
            )
            for i in range(steps)
        ]

    def paired(self, store: SQLiteStore, steps: int) -> tuple[float, float]:
        """A flow of *steps* steps each doing one raw commit too: seconds (ours, raw)."""
        global PAIRED
        self.queue, self.spent = iter(self.rows(steps)), 0.0
        PAIRED = self
        t0 = time.perf_counter()
        r = paired_flow.run(input={"steps": steps}, store=store)
        elapsed = time.perf_counter() - t0
        assert r.status == "completed", r
        return elapsed - self.spent, self.spent

    def one(self) -> None:
        row = next(self.queue)
        t0 = time.perf_counter()
        self.conn.execute(self.sql, row)
        self.spent += time.perf_counter() - t0

    def run(self, steps: int) -> float:
        """Seconds for *steps* INSERT+COMMITs."""
        rows, execute, sql = self.rows(steps), self.conn.execute, self.sql
        t0 = time.perf_counter()
        for row in rows:
            execute(sql, row)
        return time.perf_counter() - t0


PAIRED: Raw | None = None  # the raw connection the paired flow's steps commit on


def paired_step(i: int) -> dict[str, Any]:
    assert PAIRED is not None
    PAIRED.one()
    return small_result(i)


def ours(store: SQLiteStore | MemoryStore, steps: int) -> float:
    """Seconds for one flow of *steps* steps, start to finish."""
    t0 = time.perf_counter()
    r = steps_flow.run(input={"steps": steps}, store=store)
    elapsed = time.perf_counter() - t0
    assert r.status == "completed", r
    return elapsed


def flows_per_second(store: SQLiteStore, budget: float) -> float:
    """1-step flows started and finished one after another for about *budget* seconds."""
    n, t0 = 0, time.perf_counter()
    while True:
        r = steps_flow.run(input={"steps": 1}, store=store)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget and n >= 5:
            assert r.status == "completed", r
            return n / elapsed


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, 3)")
    p.add_argument("--steps", type=int, default=300, help="steps per flow (default 300)")
    p.add_argument("--no-sweep", action="store_true", help="skip the history-length sweep")
    p.add_argument("--profile", action="store_true", help="cProfile our side, print the top")
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (3 if args.quick else 7)
    steps = args.steps
    modes = list(SYNCHRONOUS_MODES)
    doc: dict[str, Any] = {
        "bench": "steps",
        "machine": machine(),
        "steps": steps,
        "rounds": rounds,
        "modes": {},
    }

    with workdir(args.dir, "crux-bench-steps-") as d:
        stores = {m: SQLiteStore(fresh(d / f"ours-{m}.db"), synchronous=m) for m in modes}
        create_sql = (
            stores[modes[0]]
            ._conn()
            .execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'")
            .fetchone()[0]
        )
        raws = {m: Raw(d / f"raw-{m}.db", m, create_sql) for m in modes}
        for m in modes:  # warm-up: first pages, first WAL frames, imports
            ours(stores[m], 20)
            raws[m].run(20)

        out.line(
            f"crux_gen bench: {steps}-step flows, small dict results, {rounds} rounds, "
            f"paired (commit by commit) and block (ours, raw, ...) interleaving, medians; dir {d}"
        )
        keys = ("ours", "raw", "ratio", "block_ours", "block_raw", "block_ratio")
        per: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in modes}
        memory, in_memory = MemoryStore(), []
        for r in range(rounds):
            in_memory.append(ours(memory, steps) / steps * 1e6)  # the Python side alone
            for m in modes:
                o, w = (x / steps * 1e6 for x in raws[m].paired(stores[m], steps))
                block = [
                    ("ours", lambda m=m: ours(stores[m], steps)),
                    ("raw", lambda m=m: raws[m].run(steps)),
                ]
                if r % 2:
                    block.reverse()  # alternate who goes first
                got = {name: fn() / steps * 1e6 for name, fn in block}
                for k, v in (
                    ("ours", o),
                    ("raw", w),
                    ("ratio", o / w),
                    ("block_ours", got["ours"]),
                    ("block_raw", got["raw"]),
                    ("block_ratio", got["ours"] / got["raw"]),
                ):
                    per[m][k].append(v)
            out.line(
                f"  round {r + 1}/{rounds}: "
                + "; ".join(
                    f"{m} paired ours {per[m]['ours'][-1]:.0f} raw {per[m]['raw'][-1]:.0f} µs, "
                    f"block ours {per[m]['block_ours'][-1]:.0f} raw {per[m]['block_raw'][-1]:.0f}"
                    for m in modes
                )
            )

        budget = 0.3 if args.quick else 0.6
        fps: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(3 if args.quick else 5):
            for m in modes:
                fps[m].append(flows_per_second(stores[m], budget))

        out.line()
        out.line(
            f"{'':<8}{'-------------- paired --------------':>36}"
            f"{'-------------- block ---------------':>38}"
        )
        out.line(
            f"{'mode':<8}{'ours µs/step':>13}{'raw µs/commit':>15}{'ratio':>8}"
            f"{'ours µs/step':>15}{'raw µs/commit':>15}{'ratio':>8}"
            f"{'target':>8}{'1-step flows/s':>16}"
        )
        for m in modes:
            v = {k: median(x) for k, x in per[m].items()}
            f = median(fps[m])
            ok = v["ratio"] <= TARGETS[m]
            doc["modes"][m] = {
                "ours_us_per_step": v["ours"],
                "raw_us_per_commit": v["raw"],
                "ratio": v["ratio"],
                "block_ours_us_per_step": v["block_ours"],
                "block_raw_us_per_commit": v["block_raw"],
                "block_ratio": v["block_ratio"],
                "ratio_target": TARGETS[m],
                "meets_target": ok,
                "block_meets_target": v["block_ratio"] <= TARGETS[m],
                "samples": per[m],
                "flows_per_second_1_step": f,
                "steps_per_second": 1e6 / v["block_ours"],
            }
            out.line(
                f"{m:<8}{v['ours']:>13.1f}{v['raw']:>15.1f}{v['ratio']:>7.2f}x"
                f"{v['block_ours']:>15.1f}{v['block_raw']:>15.1f}{v['block_ratio']:>7.2f}x"
                f"{'≤' + str(TARGETS[m]) + 'x':>8}{f:>16.0f}   {'ok' if ok else 'MISSED'}"
            )

        doc["memory_store_us_per_step"] = median(in_memory)
        out.line(
            f"(the same flow on MemoryStore, the Python side alone: "
            f"{median(in_memory):.1f} µs/step)"
        )
        if args.profile:
            profile(stores, steps, out)
        if not args.no_sweep:
            doc["sweep"] = sweep(stores, args.quick, out)
        doc["machine_after"] = machine()
    out.emit(doc)


def profile(stores: dict[str, SQLiteStore], steps: int, out: Out) -> None:
    """Where a live step's time goes: cProfile over a few flows per mode, by own time."""
    import cProfile
    import io
    import pstats

    for m, store in stores.items():
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            ours(store, steps)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        out.line(f"--- cProfile, {m}, 3 flows of {steps} steps (own time) ---")
        out.line(buf.getvalue().strip())


def sweep(stores: dict[str, SQLiteStore], quick: bool, out: Out) -> list[dict[str, Any]]:
    """µs/step for flows of 10 … 10,000 steps (FULL only up to 1,000: fsyncs are slow)."""
    lengths = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    plan: list[tuple[str, int, int]] = []  # (mode, length, repeats)
    for n in lengths:
        for m in stores:
            if m == "FULL" and n > (100 if quick else 1000):
                continue
            plan.append((m, n, max(1, min(7 if m == "NORMAL" else 3, 3000 // n))))
    samples: dict[tuple[str, int], list[float]] = {(m, n): [] for m, n, _ in plan}
    for rep in range(max(k for _, _, k in plan)):
        for m, n, k in plan:
            if rep < k:
                samples[(m, n)].append(ours(stores[m], n) / n * 1e6)
    rows = [
        {"mode": m, "steps": n, "us_per_step": median(v), "samples": v}
        for (m, n), v in samples.items()
    ]
    out.line()
    out.line(
        "µs/step by flow length: "
        + "; ".join(f"{r['mode']} {r['steps']}: {r['us_per_step']:.0f}" for r in rows)
    )
    return rows


if __name__ == "__main__":
    main()
