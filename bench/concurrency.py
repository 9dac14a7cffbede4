"""Steps per second of a concurrent worker (``Worker(concurrency=N)``) over a sequential one.

100 flows of 20 steps are stored without running them (``store.start`` then
``store.release``: due for the next worker pass), then one
``Worker(store, [flow], concurrency=N).run_once()`` runs them all, timed; every
flow must complete. ``SQLiteStore(synchronous="FULL")``, a fresh database file per
run (the flows are written into it beforehand, untimed, with ``NORMAL``; the
worker's store is ``FULL``). Two workloads, side by side in one run:

- *5 ms steps*: each step sleeps 5 ms (a stand-in for a network call): what a
  pool of threads buys when step functions wait (target: concurrency 32 ≥ 25x the
  steps/s of concurrency 1);
- *fast steps*: each step returns a small dict at once: what group commit buys
  when the fsync is the cost (target ≥ 5x), and how many durable steps share one
  fsync (target ≥ 20). Also concurrency 32 on ``FULL`` beside one flow at a time
  (concurrency 1) on ``synchronous=NORMAL`` (target ≥ 3x): group commit must beat
  giving up the fsync per step.

Concurrency 1, 8 and 32 (and, for fast steps, concurrency 1 on ``NORMAL``)
alternate within each round (the order flips every round); medians of steps/s and
of the per-round ratios. Also: µs of CPU per step (``time.process_time``, all
threads of the process), and writes per transaction (``worker.group_commit``:
writes / batches, when the worker has one).

fsyncs are counted with ``strace -c -f -e trace=fsync,fdatasync`` around a child
process that opens the store and runs only the worker on a database prepared by
this process (a separate run from the timed one: strace slows every syscall).
The same child with no flows due, opened and closed (``baseline``), is subtracted.
Without strace (or without permission to trace), the output says so and falls
back to GroupCommit's writes / batches, labelled as such.

    python bench/concurrency.py [--quick] [--json] [--dir PATH] [--rounds N] [--flows 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, codec, flow
from crux_gen.flow import Flow
from crux_gen.runner import new_flow_id
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

SLEEP = 0.005  # seconds a "5 ms" step waits
LEVELS = (1, 8, 32)  # concurrency settings; the ratios are LEVELS[-1] over LEVELS[0]
TARGETS = {"sleep": 25.0, "fast": 5.0}  # steps/s at concurrency 32 over concurrency 1
NORMAL_TARGET = 3.0  # fast steps: concurrency 32 on FULL over concurrency 1 on NORMAL
FSYNC_TARGET = 20.0  # durable steps per fsync, fast steps, concurrency 32
# What each round runs: (workload, concurrency, synchronous) of the worker's store.
RUNS = {
    "fast": [*(("fast", c, "FULL") for c in LEVELS), ("fast", 1, "NORMAL")],
    "sleep": [("sleep", c, "FULL") for c in LEVELS],
}
LABELS = {"sleep": "5 ms steps", "fast": "fast steps"}


def small_result(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


def slow_result(i: int) -> dict[str, Any]:
    time.sleep(SLEEP)
    return small_result(i)


@flow("bench-concurrency-fast")
def fast_flow(ctx):
    out = None
    for i in range(ctx.input["steps"]):
        out = yield Step(f"step-{i}", lambda i=i: small_result(i))
    return out


@flow("bench-concurrency-sleep")
def sleep_flow(ctx):
    out = None
    for i in range(ctx.input["steps"]):
        out = yield Step(f"step-{i}", lambda i=i: slow_result(i))
    return out


FLOWS: dict[str, Flow[Any]] = {"fast": fast_flow, "sleep": sleep_flow}


def prepare(path: Path, kind: str, flows: int, steps: int) -> Path:
    """A fresh database at *path* holding *flows* stored, unheld flows of *kind*
    (written with ``synchronous=NORMAL``: setup, not measured; the WAL checkpointed
    and emptied, so the measured run starts from a clean file)."""
    store = SQLiteStore(fresh(path), synchronous="NORMAL")
    name, encoded = FLOWS[kind].name, codec.encode({"steps": steps}, what="input")
    for _ in range(flows):
        flow_id = new_flow_id()
        store.start(flow_id, name, encoded, "bench", store.clock.time())
        store.release(flow_id, "bench")
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


def run_worker(
    path: Path, kind: str, concurrency: int, flows: int, steps: int, mode: str = "FULL"
) -> dict[str, Any]:
    """Open *path* (``synchronous=mode``), run one ``Worker.run_once()``, check every
    flow completed."""
    store = SQLiteStore(path, synchronous=mode)
    worker = Worker(store, [FLOWS[kind]], concurrency=concurrency)
    r0, cpu0, t0 = (
        resource.getrusage(resource.RUSAGE_SELF),
        time.process_time(),
        time.perf_counter(),
    )
    ran = worker.run_once()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    assert ran == flows, f"{kind}, concurrency {concurrency}: ran {ran} of {flows} flows"
    counts = store.count_flows()
    assert counts == {"completed": flows}, counts
    recorded = store._conn().execute("SELECT count(*) FROM records WHERE kind = 'step'")
    assert recorded.fetchone()[0] == flows * steps
    store.close()
    gc = getattr(worker, "group_commit", None)  # GroupCommit's counters, while there is one
    return {
        "seconds": wall,
        "steps_per_second": flows * steps / wall,
        "cpu_us_per_step": cpu / (flows * steps) * 1e6,
        "user_us_per_step": (r1.ru_utime - r0.ru_utime) / (flows * steps) * 1e6,
        "sys_us_per_step": (r1.ru_stime - r0.ru_stime) / (flows * steps) * 1e6,
        "batches": getattr(gc, "batches", None),
        "writes": getattr(gc, "writes", None),
    }


# -- fsyncs, counted by strace around a child process -----------------------------


def child(args: argparse.Namespace) -> None:
    """The traced process: open the store on a prepared file and run the worker
    (or, with ``--baseline``, only open and close it); one JSON line on stdout."""
    path = Path(args.child)
    if args.baseline:
        store = SQLiteStore(path, synchronous="FULL")
        store.close()
        print(json.dumps({"ran": 0}))
        return
    got = run_worker(path, args.kind, args.concurrency, args.flows, args.steps)
    print(json.dumps({"ran": args.flows, **got}))


def strace_calls(report: Path) -> int:
    """fsync + fdatasync calls from ``strace -c``'s table (its "calls" column)."""
    calls = 0
    for row in report.read_text().splitlines():
        cols = row.split()
        if len(cols) >= 5 and cols[-1] in ("fsync", "fdatasync"):
            calls += int(cols[3])
    return calls


def traced(d: Path, kind: str, concurrency: int, flows: int, steps: int, baseline: bool) -> Any:
    """Run the child under strace: (fsync + fdatasync calls, its JSON), or a note why not."""
    tag = f"{kind}-c{concurrency}{'-baseline' if baseline else ''}"
    db = prepare(d / f"strace-{tag}.db", kind, 0 if baseline else flows, steps)
    report = d / f"strace-{tag}.txt"
    cmd = [
        "strace", "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", str(report),
        sys.executable, str(Path(__file__).resolve()), "--child", str(db), "--kind", kind,
        "--concurrency", str(concurrency), "--flows", str(flows), "--steps", str(steps),
    ]  # fmt: skip
    if baseline:
        cmd.append("--baseline")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not report.exists():
        why = (done.stderr.strip().splitlines() or [f"exited {done.returncode}"])[-1]
        return f"strace failed ({why})"
    return strace_calls(report), json.loads(done.stdout.strip().splitlines()[-1])


def count_fsyncs(
    d: Path, plan: list[tuple[str, int]], flows: int, steps: int, out: Out
) -> dict[str, Any]:
    if shutil.which("strace") is None:
        return {"note": "strace is not installed"}
    base = traced(d, "fast", 1, flows, steps, baseline=True)
    if isinstance(base, str):
        return {"note": base}
    rows = []
    for kind, c in plan:
        got = traced(d, kind, c, flows, steps, baseline=False)
        if isinstance(got, str):
            return {"note": got}
        calls, doc = got
        during = calls - base[0]
        rows.append(
            {
                "case": kind,
                "concurrency": c,
                "fsync_calls": calls,
                "fsync_calls_run": during,
                "steps_per_fsync": flows * steps / during if during > 0 else float("inf"),
                "writes_per_batch": doc["writes"] / doc["batches"] if doc["batches"] else None,
                "seconds_traced": doc["seconds"],
            }
        )
        out.line(
            f"  strace: {LABELS[kind]}, concurrency {c}: {calls} fsync+fdatasync "
            f"({during} after the baseline's {base[0]}), "
            f"{rows[-1]['steps_per_fsync']:.1f} steps/fsync"
        )
    return {"baseline_calls": base[0], "runs": rows}


# -- the timed runs ---------------------------------------------------------------


def head() -> str | None:
    """The checkout's commit (the library moves fast: say which one was measured)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}..{max(values):.1f}x" if len(values) > 1 else ""


Run = tuple[str, int, str]  # (workload, concurrency, synchronous)


def label(run: Run) -> str:
    _, c, mode = run
    return f"c={c}" + ("" if mode == "FULL" else f" {mode}")


def per_round(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[float]:
    """steps/s of *runs* over *base*, round by round (the two ran in the same round)."""
    return [x["steps_per_second"] / y["steps_per_second"] for x, y in zip(runs, base, strict=True)]


def summarize(
    samples: dict[Run, list[dict[str, Any]]], sizes: dict[str, int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of the report (medians; each ratio over concurrency 1 on FULL, taken
    within each round, with its target at concurrency 32) and the comparison of
    concurrency 32 on FULL with concurrency 1 on NORMAL (fast steps)."""
    cases = []
    for kind in ("sleep", "fast"):
        low = samples[(kind, LEVELS[0], "FULL")]
        for run in RUNS[kind]:
            _, c, mode = run
            runs = samples[run]
            ratios = per_round(runs, low)
            batches = sum(x["batches"] or 0 for x in runs)
            row: dict[str, Any] = {
                "case": kind,
                "flows": sizes[kind],
                "concurrency": c,
                "synchronous": mode,
                "steps_per_second": median([x["steps_per_second"] for x in runs]),
                "ratio": median(ratios),
                "cpu_us_per_step": median([x["cpu_us_per_step"] for x in runs]),
                "user_us_per_step": median([x["user_us_per_step"] for x in runs]),
                "sys_us_per_step": median([x["sys_us_per_step"] for x in runs]),
                "writes_per_batch": (
                    sum(x["writes"] or 0 for x in runs) / batches if batches else None
                ),
                "seconds": median([x["seconds"] for x in runs]),
                "samples": {
                    "steps_per_second": [x["steps_per_second"] for x in runs],
                    "ratio": ratios,
                    "cpu_us_per_step": [x["cpu_us_per_step"] for x in runs],
                },
            }
            if c == LEVELS[-1] and mode == "FULL":
                row["ratio_target"] = TARGETS[kind]
                row["meets_target"] = row["ratio"] >= TARGETS[kind]
            cases.append(row)
    top, normal = samples[("fast", LEVELS[-1], "FULL")], samples[("fast", 1, "NORMAL")]
    ratios = per_round(top, normal)
    vs_normal = {
        "case": "fast",
        "concurrency": LEVELS[-1],
        "full_steps_per_second": median([x["steps_per_second"] for x in top]),
        "normal_steps_per_second": median([x["steps_per_second"] for x in normal]),
        "ratio": median(ratios),
        "samples": ratios,
        "target": NORMAL_TARGET,
        "meets_target": median(ratios) >= NORMAL_TARGET,
    }
    return cases, vs_normal


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds of fast steps (default 5, 3)")
    p.add_argument(
        "--sleep-rounds", type=int, default=None, help="rounds of 5 ms steps (default 3, 2)"
    )
    p.add_argument("--flows", type=int, default=100, help="flows per run (default 100)")
    p.add_argument(
        "--sleep-flows",
        type=int,
        default=None,
        help="flows per run of 5 ms steps (default --flows, 64 with --quick)",
    )
    p.add_argument("--steps", type=int, default=20, help="steps per flow (default 20)")
    p.add_argument("--no-strace", action="store_true", help="skip counting fsyncs")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--kind", default="fast", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    out = Out(args.json)
    rounds = {
        "fast": args.rounds or (3 if args.quick else 5),
        "sleep": args.sleep_rounds or (2 if args.quick else 3),
    }
    steps = args.steps
    sizes = {"fast": args.flows, "sleep": args.sleep_flows or (64 if args.quick else args.flows)}
    doc: dict[str, Any] = {
        "bench": "concurrency",
        "machine": machine(),
        "commit": head(),
        "store": "SQLiteStore(synchronous='FULL')",
        "flows": sizes,
        "steps": steps,
        "sleep_ms": SLEEP * 1e3,
        "rounds": rounds,
        "levels": list(LEVELS),
    }
    samples: dict[Run, list[dict[str, Any]]] = {run: [] for kind in RUNS for run in RUNS[kind]}

    with workdir(args.dir, "crux-bench-concurrency-") as d:
        out.line(
            f"crux_gen concurrent worker bench: flows of {steps} steps "
            f"({sizes['sleep']} flows of 5 ms steps x {rounds['sleep']} rounds, "
            f"{sizes['fast']} of fast steps x {rounds['fast']} rounds), SQLiteStore FULL, "
            f"concurrency {', '.join(map(str, LEVELS))} interleaved (and, fast steps, "
            f"concurrency 1 on NORMAL); dir {d}"
        )
        db = d / "run.db"
        for kind in ("fast", "sleep"):  # warm-up: imports, the first pool, first pages
            run_worker(prepare(db, kind, 8, 2), kind, 8, 8, 2)
        for r in range(max(rounds.values())):
            for kind in ("fast", "sleep"):
                if r >= rounds[kind]:
                    continue
                for run in RUNS[kind] if r % 2 == 0 else reversed(RUNS[kind]):
                    _, c, mode = run
                    got = run_worker(
                        prepare(db, kind, sizes[kind], steps), kind, c, sizes[kind], steps, mode
                    )
                    samples[run].append(got)
                out.line(
                    f"  round {r + 1}: {LABELS[kind]}: "
                    + ", ".join(
                        f"{label(run)} {samples[run][-1]['steps_per_second']:,.0f} steps/s"
                        for run in RUNS[kind]
                    )
                )
        fresh(db)

        cases, vs_normal = summarize(samples, sizes)
        doc["cases"] = cases
        doc["vs_normal"] = vs_normal

        out.line()
        out.line(
            f"{'workload':<12}{'concurrency':>12}{'steps/s':>10}{'ratio':>8}{'(range)':>14}"
            f"{'target':>8}"
            f"{'CPU µs/step':>13}{'(user+sys)':>12}{'writes/txn':>12}{'s/run':>8}"
        )
        for row in cases:
            target = f"≥{row['ratio_target']:g}x" if "ratio_target" in row else ""
            verdict = ("ok" if row["meets_target"] else "MISSED") if target else ""
            wpb = row["writes_per_batch"]
            c = f"{row['concurrency']}" + ("" if row["synchronous"] == "FULL" else " NORMAL")
            out.line(
                f"{LABELS[row['case']]:<12}{c:>12}"
                f"{row['steps_per_second']:>10,.0f}{row['ratio']:>7.1f}x"
                f"{spread(row['samples']['ratio']):>14}{target:>8}"
                f"{row['cpu_us_per_step']:>13.0f}"
                f"{row['user_us_per_step']:>6.0f}+{row['sys_us_per_step']:<5.0f}"
                f"{'—' if wpb is None else f'{wpb:.1f}':>12}"
                f"{row['seconds']:>8.2f}   {verdict}"
            )
        out.line(
            f"fast steps, concurrency {LEVELS[-1]} on FULL over concurrency 1 on NORMAL: "
            f"{vs_normal['ratio']:.1f}x ({vs_normal['normal_steps_per_second']:,.0f} → "
            f"{vs_normal['full_steps_per_second']:,.0f} steps/s; {spread(vs_normal['samples'])}) "
            f"(target ≥{NORMAL_TARGET:g}x: {'ok' if vs_normal['meets_target'] else 'MISSED'})"
        )

        out.line()
        plan = [("fast", 1), ("fast", 8), ("fast", LEVELS[-1]), ("sleep", LEVELS[-1])]
        fs = (
            {"note": "--no-strace"}
            if args.no_strace
            else count_fsyncs(d, plan, args.flows, steps, out)
        )
        top = next(
            x
            for x in cases
            if x["case"] == "fast" and x["concurrency"] == LEVELS[-1] and x["synchronous"] == "FULL"
        )
        if "runs" in fs:
            mine = next(
                x for x in fs["runs"] if x["case"] == "fast" and x["concurrency"] == LEVELS[-1]
            )
            fs.update(
                how="strace -c -f -e trace=fsync,fdatasync around a child running only the "
                "worker; the baseline child (open and close the store) subtracted",
                steps_per_fsync=mine["steps_per_fsync"],
            )
            out.line(
                f"durable steps per fsync (fast steps, concurrency {LEVELS[-1]}, strace): "
                f"{mine['steps_per_fsync']:.1f}  (target ≥{FSYNC_TARGET:g}: "
                f"{'ok' if mine['steps_per_fsync'] >= FSYNC_TARGET else 'MISSED'})"
            )
        else:
            fs.update(
                how="NOT fsyncs: GroupCommit writes / batches of the timed runs (strace "
                f"unavailable: {fs['note']})",
                steps_per_fsync=None,
                writes_per_batch=top["writes_per_batch"],
            )
            wpb = top["writes_per_batch"]
            out.line(
                f"fsyncs not counted ({fs['note']}); GroupCommit writes per batch instead "
                f"(fast steps, concurrency {LEVELS[-1]}): {'—' if wpb is None else f'{wpb:.1f}'}; "
                "no verdict on the fsync target"
            )
        fs["target"] = FSYNC_TARGET
        # No verdict from the fallback: writes per batch are not fsyncs.
        fs["meets_target"] = (
            None if fs["steps_per_fsync"] is None else fs["steps_per_fsync"] >= FSYNC_TARGET
        )
        doc["fsync"] = fs
        doc["machine_after"] = machine()
    out.emit(doc)


if __name__ == "__main__":
    main()
