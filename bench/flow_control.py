"""What a global limit (``Limit``) costs, on SQLite ``synchronous=FULL``.

1. *µs per durable step*, side by side: flows of 20 steps (and flows of 1 step,
   the worst case: the limit's work at the claim and at the end falls on one
   step) started pending, then ``Worker(store, concurrency=1).run_once()`` runs
   them all, timed, with no limit and with ``@flow(limits=[Limit(...,
   concurrency=1000)])`` (never full: what is measured is the bookkeeping, a slot
   taken in the claim's transaction and given back in the end's). The two
   alternate within each round (the order flips every round); medians of µs per
   step and of the per-round ratio. Target: a limit adds ≤ 10% to a durable step.
   (Step limits, ``Step(..., limits=[...])``, are not built yet: this is the
   flow limit's cost spread over its steps.)
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


def _steps(ctx: Any) -> Any:
    for i in range(ctx.input["steps"]):
        yield Step(f"s{i}", lambda: {"ok": True})
    if ctx.input.get("sleep"):
        yield Step("sleep", lambda: time.sleep(SLEEP))


free = flow("bench-free")(_steps)
limited = flow("bench-limited", limits=[WIDE])(_steps)
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
        for steps in (20, 1):
            pairs = []
            for r in range(rounds):
                order = [(free, "free"), (limited, "limited")]
                got = {
                    k: per_step(d / f"{k}.db", f, flows, steps)
                    for f, k in order[:: 1 - 2 * (r % 2)]
                }
                pairs.append((got["free"], got["limited"]))
                out.line(
                    f"{steps} steps, round {r + 1}: free {got['free']:.0f} µs, "
                    f"limited {got['limited']:.0f} µs"
                )
            free_us = median([a for a, _ in pairs])
            lim_us = median([b for _, b in pairs])
            ratio = median([b / a for a, b in pairs])
            doc[f"steps_{steps}"] = {
                "free_us_per_step": free_us,
                "limited_us_per_step": lim_us,
                "added_us_per_step": lim_us - free_us,
                "ratio": ratio,
                "meets_target": ratio <= TARGET,
            }
            out.line(f"{steps} steps a flow: +{lim_us - free_us:.0f} µs a step ({ratio:.3f}x)")
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
