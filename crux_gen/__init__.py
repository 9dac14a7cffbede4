"""crux_gen: durable, long-running flows for plain synchronous Python.

A flow is a generator function that yields ``Step``, ``Suspend``, ``WaitUntil``
and ``Sleep`` commands; each is executed once, recorded, and fed back on replay.
"""

from .clock import Clock, FakeClock, SystemClock
from .codec import ErrorInfo
from .commands import Command, Retry, Sleep, Step, Suspend, WaitUntil
from .durations import to_duration
from .errors import (
    CruxError,
    FlowBusyError,
    FlowClosedError,
    FlowNameConflictError,
    FlowNotFoundError,
    FlowNotRegisteredError,
    FlowStateError,
    LeaseLostError,
    NonDeterminismError,
    SerializationError,
    SignalValidationError,
    StepFailedError,
)
from .flow import Flow, FlowContext, Registry, default_registry, flow
from .results import FlowInfo, FlowResult, HistoryEntry, SignalInfo
from .runner import ParkingWarning, cancel_flow, get_flow, resume, signal_flow
from .status import Status

__all__ = [
    "Clock",
    "Command",
    "CruxError",
    "ErrorInfo",
    "FakeClock",
    "Flow",
    "FlowBusyError",
    "FlowClosedError",
    "FlowContext",
    "FlowInfo",
    "FlowNameConflictError",
    "FlowNotFoundError",
    "FlowNotRegisteredError",
    "FlowResult",
    "FlowStateError",
    "HistoryEntry",
    "LeaseLostError",
    "NonDeterminismError",
    "ParkingWarning",
    "Registry",
    "Retry",
    "SerializationError",
    "SignalInfo",
    "SignalValidationError",
    "Sleep",
    "Status",
    "Step",
    "StepFailedError",
    "Suspend",
    "SystemClock",
    "WaitUntil",
    "cancel_flow",
    "default_registry",
    "flow",
    "get_flow",
    "resume",
    "signal_flow",
    "to_duration",
]
