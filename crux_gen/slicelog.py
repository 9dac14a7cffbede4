"""The log lines of a flow's slices: one when a runner takes the flow in (before its
replay), one when it leaves (parked, finished, stopped, continued as new, or let
go), for every runner (a worker, ``Flow.run``, ``resume``, a child its parent's
loop adopts). A worker's go to the ``crux_gen.worker`` logger, the others' to
``crux_gen``. Each record carries ``flow_id``, ``flow_name``, ``status`` and
``waiting_for`` as attributes, and ``slice``: ``"start"`` (``status`` as the
claim read it) or ``"end"`` (the new status); INFO, the end of a failed flow WARNING. Nothing is
built while the logger is off for INFO (one ``isEnabledFor`` a slice).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .status import Status

if TYPE_CHECKING:
    from .flowrun import FlowRun
    from .records import StoredFlow
    from .results import FlowResult

LOG = logging.getLogger("crux_gen")
WORKER_LOG = logging.getLogger("crux_gen.worker")


def started(log: logging.Logger, run: FlowRun, stored: StoredFlow) -> None:
    """*run* took the flow *stored* in, as its claim read it (``running`` for one
    ``Flow.run`` just created, or the next run of a ``ContinueAsNew``)."""
    if not log.isEnabledFor(logging.INFO):
        return
    was = stored.status
    if stored.waiting_for is not None and was == Status.SUSPENDED:
        was = f"{was}, waiting for {stored.waiting_for!r}"
    log.info(
        "flow %s (%s): run %d taken in (stored as %s)", run.flow_id, run.flow.name, stored.run, was,
        extra=_fields(run, "start", str(stored.status), stored.waiting_for),
    )  # fmt: skip


def ended(log: logging.Logger, run: FlowRun, result: FlowResult) -> None:
    """*run* left its runner with *result* (parked, finished or stopped)."""
    level = logging.WARNING if result.status == Status.FAILED else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(
        level, "flow %s (%s): %s", run.flow_id, run.flow.name, describe_result(result),
        extra=_fields(run, "end", str(result.status), result.waiting_for),
    )  # fmt: skip


def left(log: logging.Logger, run: FlowRun, how: str) -> None:
    """*run* left its runner otherwise (*how*: continued as new, let go of)."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "flow %s (%s): %s", run.flow_id, run.flow.name, how,
            extra=_fields(run, "end", run.status, None),
        )  # fmt: skip


def _fields(run: FlowRun, end: str, status: str, waiting_for: str | None) -> dict[str, object]:
    return {
        "flow_id": run.flow_id, "flow_name": run.flow.name,
        "status": status, "waiting_for": waiting_for, "slice": end,
    }  # fmt: skip


def describe_result(result: FlowResult) -> str:
    """The new status of a flow, for a log line: ``suspended, waiting for 'x' until …``."""
    status = result.status
    if status == Status.SUSPENDED:
        until = f" until {result.wake_at.isoformat()}" if result.wake_at else ""
        return f"suspended, waiting for {result.waiting_for!r}{until}"
    if status == Status.FAILED and result.error is not None:
        return f"failed: {result.error.type}: {result.error.message}"
    if status == Status.EXPIRED:
        return f"expired waiting for {result.waiting_for!r}"
    if status == Status.CANCELLED:
        return f"cancelled: {result.cancel_reason}"
    if status == Status.RUNNING:
        return "running (stopped at a command boundary; due for the next pass)"
    return str(status)
