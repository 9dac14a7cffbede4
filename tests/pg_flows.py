"""Flows and a worker entry point for the PostgreSQL multi-process tests.

``python -m tests.pg_flows URL SCHEMA LOG`` runs a worker on the store until
SIGTERM; every step appends ``<flow id> <step> <pid>`` to LOG (one file per
process: LOG.<pid>), flushed as it goes, so a test counts exactly how many times
each step ran, and in which process.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Generator
from typing import Any

from crux_gen import FlowContext, Step, flow
from crux_gen.worker import Worker

LOG: list[Any] = []


def effect(flow_id: str, step: str) -> int:
    if LOG:
        LOG[0].write(f"{flow_id} {step} {os.getpid()}\n")
        LOG[0].flush()
    return os.getpid()


@flow("pg-two-steps")
def two_steps(ctx: FlowContext) -> Generator[Any, Any, list[int]]:
    first = yield Step("one", lambda: effect(ctx.flow_id, "one"))
    second = yield Step("two", lambda: effect(ctx.flow_id, "two"))
    return [first, second]


def main(url: str, schema: str, log: str) -> None:
    from crux_gen.stores.postgres import PostgresStore

    LOG.append(open(f"{log}.{os.getpid()}", "a"))  # noqa: SIM115 - open for the process's life
    store = PostgresStore(url, schema=schema, lease_ttl="10s")
    worker = Worker(store, [two_steps], batch=50)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print("ready", flush=True)
    worker.run_forever(poll="200ms")
    LOG[0].close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
