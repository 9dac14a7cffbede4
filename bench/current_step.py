"""What ``current_step()`` costs a durable step (issue 23: ≤ 5 % of one).

Every step attempt pays for the context variable ``Calls`` sets and resets around
it (``crux_gen/stepinfo.py``), asked for or not; a step that calls
``current_step()`` also pays for the ``StepInfo`` it builds. Measured here, in
one process and run:

- durable: µs per step of a flow of ``--steps`` steps on ``SQLiteStore`` (its
  default ``synchronous=FULL``), start to finish over its steps, median of rounds;
- the same flow whose every step calls ``current_step()`` and reads its key,
  interleaved with the first round by round (the difference is within the
  noise of an fsync: shown, not judged);
- on ``MemoryStore`` (the Python side alone), the two flows the same way;
- the parts alone, each over ``--calls`` calls: the set/reset around a call and
  one ``current_step()`` inside a step.

The verdict: (set/reset + one ``current_step()``) / the durable µs per step.

    python bench/current_step.py [--quick] [--json] [--rounds N] [--steps 200] [--calls 200000]
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, current_step, flow
from crux_gen.effects import Call
from crux_gen.stepinfo import in_step
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore

TARGET = 0.05  # of a durable step


def plain(i: int) -> int:
    return i


def keyed(i: int) -> str:
    info = current_step()
    assert info is not None
    return f"{info.flow_id}:{info.position}"


@flow("bench-cs-plain")
def plain_flow(ctx: Any) -> Any:
    for i in range(ctx.input):
        yield Step(f"s{i}", functools.partial(plain, i))


@flow("bench-cs-keyed")
def keyed_flow(ctx: Any) -> Any:
    for i in range(ctx.input):
        yield Step(f"s{i}", functools.partial(keyed, i))


def per_step(fl: Any, store: Any, steps: int) -> float:
    """µs per step of one run of flow *fl* of *steps* steps on *store*."""
    started = time.perf_counter()
    result = fl.run(input=steps, store=store)
    took = time.perf_counter() - started
    assert result.status == "completed", result
    return took / steps * 1e6


class _Run:
    flow_id = "bench-flow"


def parts(calls: int) -> dict[str, float]:
    """ns per call: a bare call, the same through ``in_step``, and ``current_step()``
    inside a step's context."""
    call = Call(3, lambda: None, 1, 0.0, (), "charge")
    run = _Run()

    def bare(_key: Any, _call: Call) -> None:
        return None

    wrapped = in_step(bare)

    def timed(fn: Any, *args: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        return (time.perf_counter() - started) / calls * 1e9

    asked: list[float] = []
    in_step(lambda _k, _c: asked.append(timed(current_step)))(run, call)
    return {
        "bare_ns": timed(bare, run, call),
        "wrapped_ns": timed(wrapped, run, call),
        "current_step_ns": asked[0],
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--calls", type=int, default=200_000)
    args = p.parse_args()
    out = Out(args.json)
    rounds = 2 if args.quick else args.rounds
    steps, calls = args.steps, args.calls // 10 if args.quick else args.calls
    with workdir(args.dir, "crux-bench-cs-") as where:
        sqlite: dict[str, list[float]] = {"plain": [], "keyed": []}
        memory: dict[str, list[float]] = {"plain": [], "keyed": []}
        for r in range(rounds):
            order = [("plain", plain_flow), ("keyed", keyed_flow)]
            for name, fl in order if r % 2 == 0 else order[::-1]:
                store = SQLiteStore(fresh(Path(where) / f"{name}.db"))
                try:
                    sqlite[name].append(per_step(fl, store, steps))
                finally:
                    store.close()
                memory[name].append(per_step(fl, MemoryStore(), steps))
    cost = parts(calls)
    durable = median(sqlite["plain"])
    added_ns = cost["wrapped_ns"] - cost["bare_ns"] + cost["current_step_ns"]
    share = added_ns / 1000 / durable
    doc = {
        "machine": machine(),
        "steps": steps,
        "rounds": rounds,
        "sqlite_us_per_step": {k: median(v) for k, v in sqlite.items()},
        "memory_us_per_step": {k: median(v) for k, v in memory.items()},
        **cost,
        "added_ns": added_ns,
        "share_of_durable_step": share,
        "target": TARGET,
        "ok": share <= TARGET,
    }
    out.line(f"durable step (SQLite FULL): {durable:.1f} µs/step")
    out.line(
        f"  with current_step() in every step: {doc['sqlite_us_per_step']['keyed']:.1f} µs/step"
    )
    mem = doc["memory_us_per_step"]
    out.line(f"MemoryStore: {mem['plain']:.1f} µs/step, with current_step(): {mem['keyed']:.1f}")
    out.line(
        f"set/reset around a call: {cost['wrapped_ns'] - cost['bare_ns']:.0f} ns; "
        f"current_step(): {cost['current_step_ns']:.0f} ns"
    )
    out.line(
        f"added per step: {added_ns:.0f} ns = {share * 100:.2f} % of a durable step "
        f"(target ≤ {TARGET * 100:.0f} %): {'ok' if doc['ok'] else 'OVER'}"
    )
    out.emit(doc)


if __name__ == "__main__":
    main()
