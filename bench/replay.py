"""µs per recorded step when resuming a flow with a long history.

Flows of N completed steps (small dict results) parked at a ``Suspend`` are
resumed again and again: each resume claims the flow (reading its whole history:
the segment row of its completed steps and the records after it), replays the N
steps from the record (no step function runs), reaches the ``Suspend`` and parks
again. Reported per N (0, 10, 100, 1,000, 10,000 and 100,000 by default), median of
interleaved rounds:

- resume µs/step: the whole ``resume()`` / N (claim, replay, park);
- marginal µs/step: (resume(N) - resume(0)) / N, the cost a recorded step adds;
- load and interpret: the history read alone (``store.claim``, as a resume reads
  it), and the sans-IO interpreter alone feeding N recorded results to the generator;
- queries per resume, counted with ``set_trace_callback`` on the store's
  connection (``store._conn()``), and how many of them read ``records`` (must be 1:
  the history comes as one segment row and one range of the records after it).

The store is opened with ``synchronous=NORMAL`` by default (``--mode FULL`` for the
default; its fsync'd park is a fixed cost, shown by N = 0: the claim commits without
an fsync of its own).

    python bench/replay.py [--quick] [--json] [--mode NORMAL|FULL] [--lengths 0,1000,100000]
"""

from __future__ import annotations

import functools
import gc
import re
import time
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, Suspend, flow, resume
from crux_gen.flow import FlowContext
from crux_gen.interpreter import AwaitSignal, Interpreter
from crux_gen.stores.sqlite import SQLiteStore

TARGET_US = 3.0


def small_result(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


@flow("bench-replay")
def replay_flow(ctx):
    for i in range(ctx.input["steps"]):
        yield Step(f"step-{i}", functools.partial(small_result, i))
    return (yield Suspend("go"))


def build(store: SQLiteStore, steps: int) -> str:
    r = replay_flow.run(input={"steps": steps}, store=store)
    assert r.status == "suspended" and r.waiting_for == "go", r
    return r.flow_id


def timed_resume(store: SQLiteStore, flow_id: str) -> float:
    t0 = time.perf_counter()
    r = resume(flow_id, store=store)
    elapsed = time.perf_counter() - t0
    assert r.status == "suspended", r
    return elapsed


def timed_load(store: SQLiteStore, flow_id: str, steps: int) -> float:
    """The history as a resume reads it: ``claim`` (segment and records after it)."""
    t0 = time.perf_counter()
    stored = store.claim(flow_id, "bench-load", store.clock.time())
    elapsed = time.perf_counter() - t0
    store.release(flow_id, "bench-load")
    assert len(stored.records) == steps + 1
    return elapsed


def timed_interpret(store: SQLiteStore, flow_id: str, steps: int) -> float:
    stored = store.load(flow_id)
    ctx = FlowContext(input={"steps": steps}, flow_id=flow_id, name=stored.name)
    t0 = time.perf_counter()
    interp = Interpreter(replay_flow.fn(ctx), stored.records, flow_id=flow_id, flow_name="x")
    decision = interp.next_decision()
    elapsed = time.perf_counter() - t0
    assert isinstance(decision, AwaitSignal), decision
    interp.close()
    return elapsed


# The history's read of records rows (the park's segment bookkeeping reads only
# counts and positions of them, and is not counted).
_READS_RECORDS = re.compile(
    r"^\s*SELECT\s+position\b.*\bFROM\s+records\b", re.IGNORECASE | re.DOTALL
)


def count_queries(store: SQLiteStore, flow_id: str) -> dict[str, Any]:
    """The statements one resume sends on the store's connection."""
    seen: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(seen.append)
    try:
        resume(flow_id, store=store)
    finally:
        conn.set_trace_callback(None)
    return {
        "statements": len(seen),
        "history_queries": sum(1 for s in seen if _READS_RECORDS.match(s)),
        "selects": sum(1 for s in seen if s.lstrip().upper().startswith("SELECT")),
        "sql": [" ".join(s.split())[:120] for s in seen],
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="NORMAL", choices=["NORMAL", "FULL"])
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9, 5)")
    p.add_argument(
        "--lengths", default=None, help="history lengths (default 0,10,100,1000,10000,100000)"
    )
    p.add_argument("--profile", action="store_true", help="cProfile the longest resume")
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (5 if args.quick else 9)
    given = args.lengths or "10,100,1000,10000,100000"
    lengths = sorted({0, *(int(x) for x in given.split(","))})
    doc: dict[str, Any] = {
        "bench": "replay",
        "machine": machine(),
        "mode": args.mode,
        "rounds": rounds,
        "target_us_per_step": TARGET_US,
        "lengths": [],
    }

    with workdir(args.dir, "crux-bench-replay-") as d:
        path = fresh(d / "replay.db")
        builder = SQLiteStore(path, synchronous="NORMAL")
        t0 = time.perf_counter()
        ids = {n: build(builder, n) for n in lengths}
        out.line(
            f"built flows of {', '.join(map(str, lengths))} steps in "
            f"{time.perf_counter() - t0:.1f}s; resuming on synchronous={args.mode}, "
            f"{rounds} rounds interleaved, median"
        )
        builder.close()
        store = SQLiteStore(path, synchronous=args.mode)
        queries = {n: count_queries(store, ids[n]) for n in lengths}  # also a warm-up
        samples: dict[int, dict[str, list[float]]] = {
            n: {"resume": [], "load": [], "interpret": []} for n in lengths
        }
        for r in range(rounds):
            for n in lengths if r % 2 == 0 else reversed(lengths):
                # Each sample starts with no garbage left by the one before (the GC
                # stays on: a long replay's own collections are part of its cost).
                gc.collect()
                samples[n]["resume"].append(timed_resume(store, ids[n]))
                gc.collect()
                samples[n]["load"].append(timed_load(store, ids[n], n))
                gc.collect()
                samples[n]["interpret"].append(timed_interpret(store, ids[n], n))

        base = median(samples[0]["resume"])
        out.line()
        out.line(
            f"{'steps':>7}{'resume ms':>11}{'µs/step':>9}{'marginal':>10}"
            f"{'load µs/st':>12}{'interp µs/st':>14}{'queries':>9}{'history q':>11}"
        )
        for n in lengths:
            total = median(samples[n]["resume"])
            load = median(samples[n]["load"])
            interp = median(samples[n]["interpret"])
            row = {
                "steps": n,
                "resume_ms": total * 1e3,
                "us_per_step": total / n * 1e6 if n else None,
                "marginal_us_per_step": (total - base) / n * 1e6 if n else None,
                "load_us_per_step": load / n * 1e6 if n else None,
                "interpret_us_per_step": interp / n * 1e6 if n else None,
                "load_ms": load * 1e3,
                "interpret_ms": interp * 1e3,
                "queries_per_resume": queries[n]["statements"],
                "history_queries_per_resume": queries[n]["history_queries"],
                "resume_samples_ms": [x * 1e3 for x in samples[n]["resume"]],
            }
            if n >= 1000:
                row["meets_target"] = row["us_per_step"] <= TARGET_US
            doc["lengths"].append(row)

            def f(v: float | None, spec: str) -> str:
                return "—" if v is None else format(v, spec)

            out.line(
                f"{n:>7}{total * 1e3:>11.2f}{f(row['us_per_step'], '.2f'):>9}"
                f"{f(row['marginal_us_per_step'], '.2f'):>10}"
                f"{f(row['load_us_per_step'], '.2f'):>12}"
                f"{f(row['interpret_us_per_step'], '.2f'):>14}"
                f"{queries[n]['statements']:>9}{queries[n]['history_queries']:>11}"
            )
        n = max(lengths)
        out.line()
        out.line(
            f"one resume of {n} steps sends {queries[n]['statements']} statements "
            f"({queries[n]['history_queries']} reading records):"
        )
        for s in queries[n]["sql"]:
            out.line(f"    {s}")
        doc["queries"] = {str(k): v for k, v in queries.items()}
        for row in doc["lengths"]:
            if "meets_target" in row:
                out.line(
                    f"target ≤ {TARGET_US} µs/step at {row['steps']} steps: "
                    f"{row['us_per_step']:.2f} → {'ok' if row['meets_target'] else 'MISSED'}"
                )
        if args.profile:
            profile(store, ids[n], out)
        doc["machine_after"] = machine()
    out.emit(doc)


def profile(store: SQLiteStore, flow_id: str, out: Out) -> None:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        resume(flow_id, store=store)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    out.line("--- cProfile, 3 resumes of the longest flow (own time) ---")
    out.line(buf.getvalue().strip())


if __name__ == "__main__":
    main()
