"""A worker pass in a process of its own, for ``test_guards_procs.py``:
``python -m tests.guard_procs LOG sqlite PATH`` or ``... LOG postgres URL SCHEMA``.

It runs one ``Worker.run_once`` on the store with a short lease (``LEASE``) and
exits 0. The flows' one step appends ``<pid> <step>`` to LOG (fsync'd) and then
kills its process: ``gp-exit``'s with ``os._exit(1)`` (max_recoveries=1),
``gp-hang``'s by sleeping until the test SIGKILLs it (max_recoveries=0).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from crux_gen import FlowContext, Step, flow
from crux_gen.worker import Worker

#: The lease of every store here: short, so a dead runner's lapses soon.
LEASE = "500ms"


def mark(log: str, step: str) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {step}\n")
        f.flush()
        os.fsync(f.fileno())


def exits(log: str) -> str:
    mark(log, "exit")
    os._exit(1)


def hangs(log: str) -> str:
    mark(log, "hang")
    time.sleep(60)
    return "woke"


@flow("gp-exit", max_recoveries=1)
def exiting(ctx: FlowContext) -> Any:
    return (yield Step("exit", lambda: exits(ctx.input)))


@flow("gp-hang", max_recoveries=0)
def hanging(ctx: FlowContext) -> Any:
    return (yield Step("hang", lambda: hangs(ctx.input)))


def open_store(kind: str, where: str, schema: str | None = None) -> Any:
    if kind == "sqlite":
        from crux_gen.stores.sqlite import SQLiteStore

        return SQLiteStore(where, lease_ttl=LEASE)
    from crux_gen.stores.postgres import PostgresStore

    return PostgresStore(where, schema=schema, lease_ttl=LEASE)


def main(log: str, kind: str, where: str, *schema: str) -> None:
    store = open_store(kind, where, *schema)
    Worker(store, [exiting, hanging]).run_once()
    store.close()
    del log  # (the flows' input names it)


if __name__ == "__main__":
    main(*sys.argv[1:])
