"""What an event write costs a durable step (issue 23: ≤ 5 % of one).

A flow body that calls ``ctx.set_event`` before every step has the event carried
by the step's own write (``Write.events``: one upsert more in its transaction,
and the write takes the general commit path instead of a step's one fenced
statement). Measured here, in one process and run, flows of ``--steps`` steps on
``SQLiteStore`` (its default ``synchronous=FULL``), start to finish, median of
rounds, the variants interleaved round by round:

- plain: every step alone;
- event: ``ctx.set_event("progress", i)`` before every step;
- stream: ``ctx.write_stream("log", i)`` before every step (shown, not judged);
- the same three on ``MemoryStore`` (the Python side alone).

The verdict: (event - plain) / plain, µs per step on SQLite.

    python bench/events.py [--quick] [--json] [--rounds N] [--steps 200]
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from _common import Out, fresh, machine, median, parser, workdir

from crux_gen import Step, flow, get_event, read_stream
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore

TARGET = 0.05  # of a durable step


def plain(i: int) -> int:
    return i


@flow("bench-ev-plain")
def plain_flow(ctx: Any) -> Any:
    for i in range(ctx.input):
        yield Step(f"s{i}", functools.partial(plain, i))


@flow("bench-ev-event")
def event_flow(ctx: Any) -> Any:
    for i in range(ctx.input):
        ctx.set_event("progress", i)
        yield Step(f"s{i}", functools.partial(plain, i))


@flow("bench-ev-stream")
def stream_flow(ctx: Any) -> Any:
    for i in range(ctx.input):
        ctx.write_stream("log", i)
        yield Step(f"s{i}", functools.partial(plain, i))


FLOWS = {"plain": plain_flow, "event": event_flow, "stream": stream_flow}


def per_step(name: str, store: Any, steps: int) -> float:
    """µs per step of one run of flow *name* of *steps* steps on *store* (and what
    it published checked: the last event, every stream value)."""
    started = time.perf_counter()
    result = FLOWS[name].run(input=steps, store=store)
    took = time.perf_counter() - started
    assert result.status == "completed", result
    if name == "event":
        assert get_event(result.flow_id, "progress", store=store) == steps - 1
    if name == "stream":
        assert list(read_stream(result.flow_id, "log", store=store)) == list(range(steps))
    return took / steps * 1e6


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    out = Out(args.json)
    rounds = 2 if args.quick else args.rounds
    steps = args.steps
    sqlite: dict[str, list[float]] = {name: [] for name in FLOWS}
    memory: dict[str, list[float]] = {name: [] for name in FLOWS}
    with workdir(args.dir, "crux-bench-ev-") as where:
        for r in range(rounds):
            order = list(FLOWS) if r % 2 == 0 else list(FLOWS)[::-1]
            for name in order:
                store = SQLiteStore(fresh(Path(where) / f"{name}.db"))
                try:
                    sqlite[name].append(per_step(name, store, steps))
                finally:
                    store.close()
                memory[name].append(per_step(name, MemoryStore(), steps))
    on_sqlite = {k: median(v) for k, v in sqlite.items()}
    on_memory = {k: median(v) for k, v in memory.items()}
    share = (on_sqlite["event"] - on_sqlite["plain"]) / on_sqlite["plain"]
    doc = {
        "machine": machine(),
        "steps": steps,
        "rounds": rounds,
        "sqlite_us_per_step": on_sqlite,
        "memory_us_per_step": on_memory,
        "event_share_of_durable_step": share,
        "target": TARGET,
        "ok": share <= TARGET,
    }
    out.line(
        f"durable step (SQLite FULL): {on_sqlite['plain']:.1f} µs/step; with an event: "
        f"{on_sqlite['event']:.1f}; with a stream write: {on_sqlite['stream']:.1f}"
    )
    out.line(
        f"MemoryStore: {on_memory['plain']:.1f} µs/step; with an event: "
        f"{on_memory['event']:.1f}; with a stream write: {on_memory['stream']:.1f}"
    )
    out.line(
        f"an event per step: {share * 100:+.2f} % of a durable step "
        f"(target ≤ {TARGET * 100:.0f} %): {'ok' if doc['ok'] else 'OVER'}"
    )
    out.emit(doc)


if __name__ == "__main__":
    main()
