"""A worker process for ``test_retention.py``: ``python -m tests.retention_procs DB GO BATCH``.

Makes the file ``GO.ready.<pid>`` once it is ready, and waits until the file
*GO* exists (so that several start at once), then runs
``Worker.run_once`` on the SQLite file *DB* until no ``rtp-done`` flow older
than its retention is left (30 s at most), and prints ``{"pid", "deleted", "passes"}``: how many
flows its retention deleted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from crux_gen import FlowContext, Step, flow
from crux_gen.flow import Registry
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

#: Not the default registry: a test importing this module changes no other test's worker.
REGISTRY = Registry()


@flow("rtp-done", registry=REGISTRY, retention="1h")
def done(ctx: FlowContext) -> Any:
    return (yield Step("done", lambda: ctx.input))


def old(store: SQLiteStore) -> int:
    """How many finished ``rtp-done`` flows are older than its retention."""
    return store.prune(time.time() - 3600, name="rtp-done", dry_run=True)


def main(db: str, go: str, batch: int) -> None:
    store = SQLiteStore(db)
    worker = Worker(store=store, flows=[done], retention_batch=batch)
    open(f"{go}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    passes, until = 0, time.monotonic() + 30
    while old(store) and time.monotonic() < until:
        worker.run_once()
        passes += 1
    print(json.dumps({"pid": os.getpid(), "deleted": worker.retention.deleted, "passes": passes}))
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
