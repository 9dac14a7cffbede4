"""crux_gen: durable, long-running flows for plain synchronous Python.

A flow is a generator function that yields ``Step``, ``Suspend``, ``WaitUntil``,
``Sleep``, ``All``, ``Any``, ``Child``, ``Version`` and ``ContinueAsNew`` commands;
each is executed once, recorded, and fed back on replay.
"""

import logging as _logging
import pkgutil as _pkgutil
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# crux_gen.stores is the repository folder stores/, mapped by pyproject's package-dir
# (no crux_gen/stores in the checkout). Run from the repository root (`python -m
# pytest`), the checkout's crux_gen/ comes first on sys.path and shadows the installed
# package: extending __path__ with every crux_gen/ on sys.path (the strict editable
# install's link tree under build/ among them) finds crux_gen.stores there too.
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._version import __version__ as __version__
from .clock import Clock, FakeClock, SystemClock
from .commands import (
    All,
    Any,
    AnyResult,
    Child,
    Command,
    ContinueAsNew,
    Retry,
    Sleep,
    Step,
    Suspend,
    Version,
    WaitUntil,
)
from .control import (
    cancel_flow,
    count_flows,
    delete_flow,
    get_flow,
    iter_flows,
    list_flows,
    pause_flow,
    retry_flow,
    signal_flow,
    unpause_flow,
)
from .doctor import Problem, check_store
from .durations import to_duration
from .errors import (
    ChildFlowError,
    CorruptRecordError,
    CruxError,
    ErrorInfo,
    FlowBusyError,
    FlowClosedError,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowNotFoundError,
    FlowNotRegisteredError,
    FlowStateError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    MissingDependencyError,
    NonDeterminismError,
    RecordConflictError,
    SerializationError,
    SignalValidationError,
    StepFailedError,
    StoreBusyError,
    StoreError,
    StoreSchemaError,
)
from .flow import Flow, FlowContext, Registry, default_registry, flow
from .forking import fork_flow
from .guards import PoisonFlowError
from .handle import FlowHandle, FlowTimeoutError
from .limits import Limit, Rate
from .results import FlowInfo, FlowResult, FlowSummary, HistoryEntry, SignalInfo
from .runner import ParkingWarning, resume
from .schedules import Schedule
from .signals import signal_many
from .starting import start_flow as _start_flow  # noqa: F401 (Flow.start)
from .starts import Debounce, Exclusive
from .status import Status
from .stepinfo import StepInfo, current_step
from .stores.memory import MemoryStore
from .stores.sqlite import SQLiteStore
from .streams import get_event, read_stream, write_stream
from .waits import Wait

# A library logs, an app decides where to: without logging configured, nothing
# reaches stderr (no "last resort" lines, no "No handlers could be found").
_logging.getLogger("crux_gen").addHandler(_logging.NullHandler())

__all__ = [
    "All",
    "Any",
    "AnyResult",
    "Child",
    "ChildFlowError",
    "Clock",
    "Command",
    "ContinueAsNew",
    "CorruptRecordError",
    "CruxError",
    "Debounce",
    "ErrorInfo",
    "Exclusive",
    "FakeClock",
    "Flow",
    "FlowBusyError",
    "FlowClosedError",
    "FlowContext",
    "FlowHandle",
    "FlowIdTakenError",
    "FlowInfo",
    "FlowNameConflictError",
    "FlowNotFoundError",
    "FlowNotRegisteredError",
    "FlowResult",
    "FlowStateError",
    "FlowSummary",
    "FlowTimeoutError",
    "HistoryEntry",
    "InvalidTypeError",
    "InvalidValueError",
    "LeaseLostError",
    "Limit",
    "MemoryStore",
    "MissingDependencyError",
    "NonDeterminismError",
    "ParkingWarning",
    "PoisonFlowError",
    "Problem",
    "Rate",
    "RecordConflictError",
    "Registry",
    "Retry",
    "SQLiteStore",
    "Schedule",
    "SerializationError",
    "SignalInfo",
    "SignalValidationError",
    "Sleep",
    "Status",
    "Step",
    "StepFailedError",
    "StepInfo",
    "StoreBusyError",
    "StoreError",
    "StoreSchemaError",
    "Suspend",
    "SystemClock",
    "Version",
    "Wait",
    "WaitUntil",
    "cancel_flow",
    "check_store",
    "count_flows",
    "current_step",
    "default_registry",
    "delete_flow",
    "flow",
    "fork_flow",
    "get_event",
    "get_flow",
    "iter_flows",
    "list_flows",
    "pause_flow",
    "read_stream",
    "resume",
    "retry_flow",
    "signal_flow",
    "signal_many",
    "to_duration",
    "unpause_flow",
    "write_stream",
]


if _TYPE_CHECKING:
    from .stores.postgres import PostgresStore as PostgresStore


def __getattr__(name: str) -> _Any:
    # PostgresStore is imported on first use, so psycopg is needed only by those who
    # use it (pip install 'crux-gen[postgres]'); it stays out of __all__ for the same
    # reason (a star import would need psycopg).
    if name == "PostgresStore":
        from .stores.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'crux_gen' has no attribute {name!r}")
