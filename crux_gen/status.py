"""Flow statuses and the one table of their transitions."""

from __future__ import annotations

import enum

from .errors import FlowStateError


class Status(str, enum.Enum):
    """A flow's status: a ``str`` enum that compares equal to its bare value."""

    PENDING = "pending"  # created by ``Flow.start``, never run yet; due (or queued)
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    PAUSED = "paused"  # by ``pause_flow``: never claimed until ``unpause_flow``

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        """True for the statuses a flow never leaves (except by ``crux-gen retry``)."""
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.EXPIRED, Status.CANCELLED})

#: Every legal move: ``TRANSITIONS[(status, event)] -> new status``. Stores apply
#: these at commit (a claim takes the lease and changes no status):
#: "step" is a commit that records commands and keeps the flow going; "park",
#: "complete", "fail", "expire" are the runner's ends of a run; "cancel" comes from
#: ``cancel_flow``; "retry" from ``retry_flow``; "pause" from ``pause_flow``, and
#: ``unpause_flow`` sends the paused flow back by the event ``unpause_event`` derives
#: from its row (its wait fields are kept while it is paused). A runner's write
#: to a paused flow records its commands and changes no status (``STOPPED``).
TRANSITIONS: dict[tuple[Status, str], Status] = {
    # A pending flow (``Flow.start``) moves on its first write, as a running one.
    (Status.PENDING, "step"): Status.RUNNING,
    (Status.PENDING, "park"): Status.SUSPENDED,
    (Status.PENDING, "complete"): Status.COMPLETED,
    (Status.PENDING, "fail"): Status.FAILED,
    (Status.PENDING, "expire"): Status.EXPIRED,
    (Status.PENDING, "cancel"): Status.CANCELLED,
    (Status.RUNNING, "step"): Status.RUNNING,
    (Status.SUSPENDED, "step"): Status.RUNNING,  # a resumed flow goes on past its wait
    (Status.RUNNING, "park"): Status.SUSPENDED,
    (Status.SUSPENDED, "park"): Status.SUSPENDED,
    (Status.RUNNING, "complete"): Status.COMPLETED,
    (Status.SUSPENDED, "complete"): Status.COMPLETED,
    (Status.RUNNING, "fail"): Status.FAILED,
    (Status.SUSPENDED, "fail"): Status.FAILED,
    (Status.RUNNING, "expire"): Status.EXPIRED,
    (Status.SUSPENDED, "expire"): Status.EXPIRED,
    (Status.RUNNING, "cancel"): Status.CANCELLED,
    (Status.SUSPENDED, "cancel"): Status.CANCELLED,
    (Status.PAUSED, "cancel"): Status.CANCELLED,
    (Status.FAILED, "retry"): Status.SUSPENDED,
    (Status.CANCELLED, "retry"): Status.SUSPENDED,
    (Status.EXPIRED, "retry"): Status.SUSPENDED,
    (Status.PENDING, "pause"): Status.PAUSED,
    (Status.RUNNING, "pause"): Status.PAUSED,
    (Status.SUSPENDED, "pause"): Status.PAUSED,
    (Status.PAUSED, "unpause-pending"): Status.PENDING,
    (Status.PAUSED, "unpause-running"): Status.RUNNING,
    (Status.PAUSED, "unpause-suspended"): Status.SUSPENDED,
}

#: The statuses a runner stops at: a finished flow, and a paused one (its lease
#: dropped at its next command boundary; nothing more is called until unpaused).
STOPPED = FINISHED | {Status.PAUSED}


def unpause_event(wait_kind: str | None, wake_at: float | None, blocked_by: str | None) -> str:
    """The event that sends a paused flow back to what it was, from the row it kept:
    parked on a wait (``wait_kind`` set): ``"suspended"``, its wake time and deadline
    as they were (a deadline passed meanwhile expires it when it runs); never run
    (a due time, or queued behind an exclusive key's holder): ``"pending"``; else
    ``"running"``, due at once (nobody holds it)."""
    if wait_kind is not None:
        return "unpause-suspended"
    limit = blocked_by is not None and blocked_by.startswith(("limit ", "rate "))
    if wake_at is not None or (blocked_by is not None and not limit):
        return "unpause-pending"
    return "unpause-running"


#: The event a runner's write means, by the status it asks for (``None``: a step).
EVENT_FOR: dict[str | None, str] = {
    None: "step",
    Status.RUNNING.value: "step",
    Status.SUSPENDED.value: "park",
    Status.COMPLETED.value: "complete",
    Status.FAILED.value: "fail",
    Status.EXPIRED.value: "expire",
}


def transition(status: str, event: str) -> Status:
    """The status after *event*; ``FlowStateError`` naming both when the move is illegal."""
    try:
        return TRANSITIONS[(Status(status), event)]
    except (KeyError, ValueError):
        raise FlowStateError(None, status, f"it cannot take event {event!r}") from None


def after_write(status: str, wanted: str | None) -> Status:
    """The status a runner's write moves a flow to: *wanted* (``None`` for a step)
    from *status*; ``FlowStateError`` naming both when no such move exists."""
    event = EVENT_FOR.get(wanted)
    if event is None:
        raise FlowStateError(None, status, f"a runner cannot write status {wanted!r}")
    return transition(status, event)
