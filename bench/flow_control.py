"""What a global limit (``Limit``) costs, on SQLite ``synchronous=FULL``.

1. *µs per durable step*, side by side: flows of 20 steps started pending, then
   ``Worker(store, concurrency=1).run_once()`` runs them all, timed, three ways:
   no limit; every step under ``Step(..., limits=[Limit(..., concurrency=1000)])``
   (never full: what is measured is the bookkeeping, the slot's take in a
   transaction of its own and its give-back in the step's commit: the target, a
   step limit adds ≤ 10% to a durable step); the flow under ``@flow(limits=[...])``
   (a slot taken in the claim's transaction and given back in the end's). The
   three alternate within each round (the order turns every round); medians of µs
   per step and of the per-round ratios.
2. *throughput of 4 worker processes*: 200 one-step flows (each step sleeps 5 ms),
   4 processes each running ``Worker(concurrency=4)`` passes until none is left,
   with no limit and under ``Limit(concurrency=8)``: flows/s of each.

    python bench/flow_control.py [--quick] [--json] [--dir PATH] [--rounds N]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, Out, fresh, machine, median, parser, workdir

from crux_gen import Limit, Step, flow
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

TARGET = 1.10  # a limited durable step over an unlimited one
WIDE = Limit("bench-wide", concurrency=1000)
EIGHT = Limit("bench-eight", concurrency=8)
SLEEP = 0.005
STEPS = 20  # steps a flow


def _steps(ctx: Any) -> Any:
    for i in range(ctx.input["steps"]):
        yield Step(f"s{i}", lambda: {"ok": True})
    if ctx.input.get("sleep"):
        yield Step("sleep", lambda: time.sleep(SLEEP))


def _limited_steps(ctx: Any) -> Any:
    for i in range(ctx.input["steps"]):
        yield Step(f"s{i}", lambda: {"ok": True}, limits=[WIDE])


free = flow("bench-free")(_steps)
limited = flow("bench-limited", limits=[WIDE])(_steps)
step_limited = flow("bench-step-limited")(_limited_steps)
free_proc = flow("bench-free-proc")(_steps)
eight_proc = flow("bench-eight-proc", limits=[EIGHT])(_steps)


def per_step(path: Path, which: Any, flows: int, steps: int) -> float:
    """µs per durable step: *flows* flows of *steps* steps, run by one worker."""
    store = SQLiteStore(fresh(path), synchronous="FULL")
    for _ in range(flows):
        which.start(input={"steps": steps}, store=store)
    worker = Worker(store, [which])
    t0 = time.perf_counter()
    worker.run_once()
    took = time.perf_counter() - t0
    assert store.count(status="completed") == flows
    store.close()
    return took / (flows * steps) * 1e6


def throughput(path: Path, which: Any, flows: int) -> float:
    """Flows/s of 4 worker processes on *flows* one-step (5 ms) flows."""
    store = SQLiteStore(fresh(path), synchronous="FULL")
    for _ in range(flows):
        which.start(input={"steps": 0, "sleep": True}, store=store)
    store.close()
    cmd = [sys.executable, __file__, "--worker", str(path), which.name]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=REPO) for _ in range(4)]
    for p in procs:
        assert p.wait() == 0
    took = time.perf_counter() - t0
    store = SQLiteStore(path)
    assert store.count(status="completed") == flows
    store.close()
    return flows / took


def work(path: str, name: str) -> None:
    """A worker process of ``throughput``: passes until no flow is left."""
    store = SQLiteStore(Path(path), synchronous="FULL")
    worker = Worker(store, [free_proc, eight_proc], concurrency=4)
    while store.count(status="pending") + store.count(status="running"):
        if worker.run_once() == 0:
            time.sleep(0.005)
    store.close()


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--worker", nargs=2, default=None, help=None)
    args = p.parse_args()
    if args.worker:
        work(*args.worker)
        return
    out = Out(args.json)
    rounds = args.rounds or (2 if args.quick else 7)
    flows = 10 if args.quick else 50
    doc: dict[str, Any] = {"machine": machine(), "rounds": rounds, "target_ratio": TARGET}
    with workdir(args.dir, "crux-bench-fc-") as d:
        kinds = [(free, "free"), (step_limited, "step"), (limited, "flow")]
        samples: dict[str, list[float]] = {k: [] for _, k in kinds}
        for r in range(rounds):
            order = kinds[r % 3 :] + kinds[: r % 3]
            got = {k: per_step(d / f"{k}.db", f, flows, STEPS) for f, k in order}
            for k, v in got.items():
                samples[k].append(v)
            out.line(
                f"round {r + 1}: free {got['free']:.0f} µs, step limit {got['step']:.0f} µs, "
                f"flow limit {got['flow']:.0f} µs a step"
            )
        free_us = median(samples["free"])
        for k in ("step", "flow"):
            ratio = median([b / a for a, b in zip(samples["free"], samples[k], strict=True)])
            lim_us = median(samples[k])
            doc[f"{k}_limit"] = {
                "free_us_per_step": free_us,
                "limited_us_per_step": lim_us,
                "added_us_per_step": lim_us - free_us,
                "ratio": ratio,
                "meets_target": ratio <= TARGET,
            }
            out.line(f"{k} limit: +{lim_us - free_us:.0f} µs a step ({ratio:.3f}x)")
        n = 40 if args.quick else 200
        doc["processes"] = {
            "flows": n,
            "free_flows_per_second": throughput(d / "p-free.db", free_proc, n),
            "limit8_flows_per_second": throughput(d / "p-eight.db", eight_proc, n),
        }
        pr = doc["processes"]
        out.line(
            f"4 processes, {n} flows: {pr['free_flows_per_second']:.0f} flows/s free, "
            f"{pr['limit8_flows_per_second']:.0f} flows/s under concurrency=8"
        )
    out.emit(doc)


if __name__ == "__main__":
    main()
