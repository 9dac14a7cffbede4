"""Spans: one ``flow <name>`` per slice, one ``step <name>`` per step attempt
(to be built: issue 22)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..calls import Crash
    from ..effects import Call, Event
    from ..flowrun import FlowRun
    from ..records import StoredFlow


class Spans:
    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider

    def trace(self) -> str | None:
        return None

    def slice_started(self, run: FlowRun, stored: StoredFlow) -> None:
        run.observed = True

    def slice_ended(self, run: FlowRun, status: str) -> None:
        pass

    def attempt(
        self, run: FlowRun, call: Call, inner: Callable[[Call], Event | Crash]
    ) -> Event | Crash:
        return inner(call)
