"""Metrics: counters of flows and steps, histograms of step duration and schedule
lag, the gauge of due flows (to be built: issue 22)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..calls import Crash
    from ..effects import Call, Event
    from ..flowrun import FlowRun
    from ..records import StoredFlow
    from ..stores.base import Store


class Metrics:
    def __init__(self, meter_provider: Any = None) -> None:
        self.meter_provider = meter_provider

    def flow_started(self, name: str) -> None:
        pass

    def slice_started(self, run: FlowRun, stored: StoredFlow, store: Store, now: float) -> None:
        pass

    def slice_ended(self, run: FlowRun, status: str) -> None:
        pass

    def attempt(self, run: FlowRun, call: Call, event: Event | Crash) -> None:
        pass
