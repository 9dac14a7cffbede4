"""JSON logs with the standard library only: one JSON object a line, carrying the
attributes crux_gen puts on its log records.

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/python examples/json_logs.py            # JSON lines on stdout

runs a small order flow on ``json_logs.db`` (``--db PATH``): its first slice charges
the card (the first attempt fails and is retried) and parks waiting for
``shipped``; the signal arrives; a second slice replays the charge (no record for
it: a replayed step is not called) and sends the receipt. Each slice logs an INFO
record as it starts and as it ends (``flow_id``, ``flow_name``, ``status``,
``waiting_for``, ``slice``); each step attempt a DEBUG record (``flow_id``,
``step``, ``attempt``, ``duration`` in seconds, ``outcome``: ``ok``, ``retry`` or
``failed``, and ``error``, the exception's class name). Feed the lines to any log
pipeline; filter on ``flow_id`` to follow one flow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from crux_gen import FlowContext, Retry, SQLiteStore, Step, Suspend, flow, resume, signal_flow

#: The attributes every LogRecord has: whatever else a record carries was added by
#: its caller (crux_gen's ``extra``).
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, then the record's
    own attributes (``flow_id``, ``step``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_json(level: int = logging.DEBUG) -> None:
    """Send crux_gen's records at *level* and above to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("crux_gen")
    logger.addHandler(handler)
    logger.setLevel(level)


tries: list[str] = []


def charge(order: str) -> str:
    tries.append(order)
    if len(tries) == 1:
        raise ConnectionError("the payment service timed out")
    return f"charged {order}"


@flow("json-order")
def order(ctx: FlowContext) -> Generator[Any, Any, str]:
    paid = yield Step("charge", lambda: charge(ctx.input), retry=Retry(attempts=3, delay="10ms"))
    yield Suspend("shipped")
    yield Step("send-receipt", lambda: f"receipt for {ctx.input}")
    return str(paid)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="json_logs.db", type=Path)
    args = parser.parse_args(argv)
    log_json()
    store = SQLiteStore(args.db)
    flow_id = order.run(input="order-1", store=store).flow_id
    signal_flow(flow_id, "shipped", {"carrier": "post"}, store=store)
    resume(flow_id, store=store)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
