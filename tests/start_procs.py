"""Racing starts for ``test_flow_control_procs.py``: ``python -m tests.start_procs
WHERE FLOW AT COUNT KEY`` waits until the wall-clock time AT (so that every process
starts at the same instant), then starts flow FLOW COUNT times with the input
``{"k": KEY, "n": "<pid>-<i>"}`` on WHERE (a SQLite path or a ``postgresql://``
URL) and prints the ids it got back as one JSON list."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from crux_gen import Debounce, Exclusive, Step, flow
from crux_gen.opening import open_store


def _body(ctx: Any) -> Any:
    return (yield Step("work", lambda: ctx.input["n"]))


def _key(input: Any) -> str:
    return str(input["k"])


FLOWS = {
    "skip": flow("race-skip", exclusive=Exclusive(key=_key, on_conflict="skip"))(_body),
    "queue": flow("race-queue", exclusive=Exclusive(key=_key))(_body),
    "cancel": flow("race-cancel", exclusive=Exclusive(key=_key, on_conflict="cancel"))(_body),
    "debounce": flow("race-debounce", debounce=Debounce("1h", key=_key))(_body),
}


def main(where: str, kind: str, at: float, count: int, key: str) -> None:
    store = open_store(where, create=True, what="start_procs store")
    started = FLOWS[kind]
    store.list_flows(limit=1)  # connected (and the schema checked) before the race
    while time.time() < at:
        time.sleep(0.001)
    ids = [
        started.start(input={"k": key, "n": f"{os.getpid()}-{i}"}, store=store).flow_id
        for i in range(count)
    ]
    store.close()
    print(json.dumps(ids))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
