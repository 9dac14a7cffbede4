"""Worker processes for ``test_worker.py``: ``python -m tests.worker_procs worker DB``.

A worker runs ``Worker.run_forever`` on the SQLite file *DB* until SIGTERM (which
calls ``Worker.stop()`` from the signal handler), then exits 0. It prints one
JSON object a line for each flow it advanced: ``{"pid", "flow_id", "status"}``.

Each step of the ``wp-chain`` flow appends fsync'd lines to the side-effect log
named in the flow's input, when it starts and when it is done::

    <pid> <flow id> <step> start|done

so a test counts how many times each step ran. ``CRUX_TEST_HANG`` names a step
that hangs (for a test that kills the worker in the middle of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Generator
from typing import Any

from crux_gen import All, FlowContext, Sleep, Step, Suspend, flow
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker


def append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def effect(path: str, flow_id: str, step: str) -> str:
    append(path, f"{os.getpid()} {flow_id} {step} start\n")
    if os.environ.get("CRUX_TEST_HANG") == step:
        time.sleep(60)
    append(path, f"{os.getpid()} {flow_id} {step} done\n")
    return step


@flow("wp-chain")
def chain(ctx: FlowContext) -> Generator[Any, Any, list[str]]:
    """Step ``one``, wait for signal ``go``, step ``two``, a short durable sleep,
    step ``three``: two worker passes after the signal."""
    log = ctx.input["log"]
    done = [(yield Step("one", lambda: effect(log, ctx.flow_id, "one")))]
    yield Suspend("go")
    done.append((yield Step("two", lambda: effect(log, ctx.flow_id, "two"))))
    yield Sleep("nap", ctx.input.get("nap", "20ms"))
    done.append((yield Step("three", lambda: effect(log, ctx.flow_id, "three"))))
    return done


@flow("wp-many")
def many(ctx: FlowContext) -> Generator[Any, Any, list[str]]:
    """``ctx.input["steps"]`` steps in a row, each logged as ``wp-chain``'s are and
    sleeping ``ctx.input["pause"]`` seconds (a stand-in for a network call)."""
    log, pause = ctx.input["log"], ctx.input.get("pause", 0.0)

    def step(name: str) -> str:
        append(log, f"{os.getpid()} {ctx.flow_id} {name} start\n")
        time.sleep(pause)
        append(log, f"{os.getpid()} {ctx.flow_id} {name} done\n")
        return name

    done = []
    for i in range(ctx.input["steps"]):
        name = f"s{i}"
        done.append((yield Step(name, lambda name=name: step(name))))  # type: ignore[misc]
    return done


@flow("wp-fan")
def fan(ctx: FlowContext) -> Generator[Any, Any, list[str]]:
    """An ``All`` of four steps logged as ``wp-chain``'s are (``CRUX_TEST_HANG`` may
    name one that hangs), then one more step."""
    log = ctx.input["log"]
    names = ["a", "b", "c", "d"]
    got = yield All([Step(n, lambda n=n: effect(log, ctx.flow_id, n)) for n in names])
    got.append((yield Step("after", lambda: effect(log, ctx.flow_id, "after"))))
    return got


class _Emit(logging.Handler):
    """Print each flow the worker advanced as a JSON line."""

    def emit(self, record: logging.LogRecord) -> None:
        status = getattr(record, "status", None)
        if status is not None and getattr(record, "slice", None) == "end":
            line = {"pid": os.getpid(), "flow_id": record.flow_id, "status": status}
            print(json.dumps(line), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("db")
    parser.add_argument("--poll", default="50ms")
    parser.add_argument("--lease-ttl", default="30s")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    store = SQLiteStore(args.db, synchronous="NORMAL", lease_ttl=args.lease_ttl)
    worker = Worker(store, [chain, many, fan], concurrency=args.concurrency)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logger = logging.getLogger("crux_gen.worker")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Emit())
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    print(json.dumps({"pid": os.getpid(), "ready": True}), flush=True)
    worker.run_forever(poll=args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
