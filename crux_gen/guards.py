"""The two guards of one flow: ``@flow(timeout=)`` and ``@flow(max_recoveries=)``.

A flow's timeout is the registered flow's option counted from the flow's
``created_at`` (nothing of it is stored: a changed timeout applies to stored
flows at their next run or park, as ``retention`` does). A run checks it before
each command of the body (``FlowRun``): a timed-out flow stops at that command
boundary, what it has in hand written first, and is cancelled with the reason
``"timed out"`` (its descendants with it, as ``cancel_flow`` cancels them). A
park writes ``wake_at`` as the earlier of its wait's own wake and the deadline,
so the worker's due scan finds a parked flow when its timeout comes.

The recovery count is the store's (``StoredFlow.recoveries``): a claim of a flow
whose previous runner's lease lapsed with nothing recorded since that claim adds
one; any record resets it. The run that finds it above ``max_recoveries`` ends
the flow ``"failed"`` with :class:`PoisonFlowError` before the body runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from .durations import to_duration
from .errors import CruxError, ErrorInfo, InvalidTypeError, InvalidValueError

if TYPE_CHECKING:
    from .clock import Clock
    from .records import StoredFlow

#: ``@flow(max_recoveries=)``'s default.
MAX_RECOVERIES = 10
#: The reason a timed-out flow is cancelled with.
TIMED_OUT = "timed out"


class PoisonFlowError(CruxError):
    """A flow's runners lost its lease more than ``max_recoveries`` times in a row
    with nothing recorded (a step that kills its process): the flow ends
    ``"failed"`` with this error instead of taking down the next worker too."""

    def __init__(self, flow_id: str, name: str, recoveries: int, max_recoveries: int) -> None:
        self.flow_id = flow_id
        self.name = name
        self.recoveries = recoveries
        self.max_recoveries = max_recoveries
        claims = f"{recoveries} claim{'' if recoveries == 1 else 's'}"
        super().__init__(
            f"flow {flow_id!r} ({name}): {claims} in a row found its last runner's lease "
            f"lapsed with nothing recorded, more than its max_recoveries={max_recoveries}: "
            "a step probably kills its process (os._exit, a segfault, the OOM killer); it "
            f"was not run again. Fix the step, then crux-gen retry {flow_id}"
        )


def check_timeout(name: str, value: object) -> timedelta | None:
    """``@flow(name, timeout=value)`` checked: ``None``, or a duration above zero
    (``"1h"``, a ``timedelta``, seconds); else ``InvalidValueError`` /
    ``InvalidTypeError`` naming the flow and the bad value."""
    if value is None:
        return None
    what = f"@flow({name!r}) timeout"
    if not isinstance(value, str | int | float | timedelta) or isinstance(value, bool):
        raise InvalidTypeError(
            what, value, "is not a duration; give '1h', a timedelta or seconds (or None)"
        )
    limit = to_duration(value, what=what)
    if limit <= timedelta(0):
        raise InvalidValueError(
            what, value, "is not above zero; give how long a flow may take, such as '1h'"
        )
    return limit


def check_max_recoveries(name: str, value: object) -> int:
    """``@flow(name, max_recoveries=value)`` checked: an ``int`` from 0 (no lapsed
    lease forgiven) up; else ``InvalidTypeError`` / ``InvalidValueError``."""
    what = f"@flow({name!r}) max_recoveries"
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError(
            what, value, f"is a {type(value).__name__}, not an int; give an int such as 5"
        )
    if value < 0:
        raise InvalidValueError(what, value, "is negative; give 0 or more")
    return value


def deadline(created_at: float, timeout: timedelta | None) -> float | None:
    """When a flow created at *created_at* times out (``None``: never)."""
    return None if timeout is None else created_at + timeout.total_seconds()


def parked_wake(wake_at: float | None, timeout_at: float | None) -> float | None:
    """A park's ``wake_at``: the earlier of the wait's own and the flow's deadline."""
    if timeout_at is None:
        return wake_at
    return timeout_at if wake_at is None else min(wake_at, timeout_at)


def poisoned(stored: StoredFlow, max_recoveries: int) -> str | None:
    """The stored error (JSON text) that ends *stored*, claimed with its recovery
    count above *max_recoveries*; ``None`` when it may run."""
    if stored.recoveries <= max_recoveries:
        return None
    exc = PoisonFlowError(stored.id, stored.name, stored.recoveries, max_recoveries)
    return ErrorInfo.from_exception(exc).encode()


def stopper(
    should_stop: Callable[[], bool] | None,
    timeout: timedelta | None,
    stored: StoredFlow,
    clock: Clock,
) -> tuple[Callable[[], bool] | None, float | None]:
    """A run's ``should_stop`` (checked at each command boundary) and when its flow
    times out: *should_stop*, or also true once *timeout* from the flow's
    ``created_at`` (*stored*'s) has passed by *clock*."""
    timeout_at = deadline(stored.created_at, timeout)
    if timeout_at is None:
        return should_stop, None
    at = timeout_at

    def stop() -> bool:
        return clock.time() >= at or (should_stop is not None and should_stop())

    return stop, timeout_at


def timed_out(timeout_at: float | None, now: float) -> bool:
    """Whether a flow that times out at *timeout_at* has at *now*."""
    return timeout_at is not None and now >= timeout_at
