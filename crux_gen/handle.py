"""``FlowHandle``: what ``Flow.start`` returns, to look at a flow or wait for its
result from any thread or process (a worker runs the flow)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from .durations import Duration, to_duration, to_optional_duration
from .errors import CruxError
from .opening import StorePath, using
from .results import FlowInfo, FlowResult
from .status import FINISHED
from .views import info_of, result_of

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

__all__ = ["FlowHandle", "FlowTimeoutError"]


class FlowTimeoutError(CruxError, TimeoutError):
    """``FlowHandle.result(timeout=...)``: the flow had not finished in time. It
    goes on as it was; ``status`` is the one it had when the wait gave up."""

    def __init__(self, flow_id: str, status: str, timeout: float) -> None:
        self.flow_id = flow_id
        self.status = status
        self.timeout = timeout
        super().__init__(
            f"flow {flow_id!r} has not finished after {timeout:g}s (it is {status}); "
            "it goes on: wait again, or look at it with get_flow / crux-gen show"
        )


@attrs.frozen
class FlowHandle:
    """A flow created by ``Flow.start`` (or found by it): its ``flow_id`` and
    ``name``, and the store it lives in.

    >>> h = report.start(input={"month": "2026-11"}, store=store, priority=5)
    >>> h.info().status                       # 'pending' until a worker takes it
    >>> h.result(timeout=60).value            # waits for a worker to finish it
    """

    flow_id: str
    name: str
    store: Store | StorePath = attrs.field(repr=False, eq=False)

    def info(self) -> FlowInfo:
        """The flow's stored state, as ``get_flow`` reads it."""
        with using(self.store, what="FlowHandle store") as opened:
            return info_of(opened.load(self.flow_id))

    def result(self, timeout: Duration | None = None, *, poll: Duration = "100ms") -> FlowResult:
        """Wait until the flow has finished (completed, failed, expired or
        cancelled) and return its ``FlowResult``, reading the store every *poll*;
        nothing runs here (a worker runs the flow). After *timeout* (``None``:
        no end) ``FlowTimeoutError`` (a ``TimeoutError``), the flow left as it is."""
        limit = to_optional_duration(timeout, what="FlowHandle.result timeout")
        every = max(to_duration(poll, what="FlowHandle.result poll").total_seconds(), 0.001)
        end = None if limit is None else time.monotonic() + limit.total_seconds()
        while True:
            with using(self.store, what="FlowHandle store") as opened:
                stored = opened.load(self.flow_id)
            if stored.status in FINISHED:
                return result_of(stored)
            if end is not None and time.monotonic() >= end:
                assert limit is not None
                raise FlowTimeoutError(self.flow_id, stored.status, limit.total_seconds())
            time.sleep(every if end is None else max(0.0, min(every, end - time.monotonic())))
