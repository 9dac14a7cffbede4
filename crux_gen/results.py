"""What running or reading a flow hands back: ``FlowResult`` and ``FlowInfo``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .codec import ErrorInfo
from .status import Status
from .waits import Wait


@attrs.frozen
class FlowResult:
    """Where a flow stands after a run: ``status``, ``value`` or ``error``, and what it
    waits for. ``wake_at`` is an aware UTC datetime or ``None``."""

    flow_id: str
    status: Status = attrs.field(converter=Status)
    value: Any = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    waiting_for: str | None = None
    wake_at: datetime | None = None
    #: The flow's registered name, when the runner knows it (``resume`` and the
    #: worker always do). Left out of ``==``: it follows from ``flow_id``.
    name: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class FlowSummary:
    """One row of ``list_flows``: a flow without its history. ``wake_at``,
    ``created_at`` and ``updated_at`` are aware UTC datetimes; pass the last
    summary itself as ``before=`` for the next page (exact keyset paging).

    ``waiting_for`` is a display string (``"approved | rejected"`` for an ``Any``,
    ``"child <id>"`` for a ``Child``); ``waits`` is the structure behind it, a
    tuple of :class:`~crux_gen.waits.Wait` (empty unless the flow is suspended).
    ``custom_status`` is the last ``ctx.set_custom_status`` value, ``error`` a
    failed flow's error, ``parent_id`` the flow that started it with ``Child``
    (a stored value that cannot be decoded shows as ``None`` here; ``get_flow``
    names it)."""

    flow_id: str
    name: str
    status: Status = attrs.field(converter=Status)
    waiting_for: str | None
    wake_at: datetime | None
    created_at: datetime
    updated_at: datetime
    waits: tuple[Wait, ...] = ()
    custom_status: Any = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    parent_id: str | None = None
    run: int = 1
    #: Among due flows a worker takes higher ``priority`` first (``Flow.start``).
    priority: int = 0
    #: What a due flow waits for before it may run: an ``Exclusive`` holder's id,
    #: a limit; ``None`` when nothing blocks it.
    blocked_by: str | None = None
    #: The stored ``updated_at`` to the last bit (``updated_at`` is rounded to the
    #: microsecond): what ``before=summary`` pages by.
    _updated_ts: float | None = attrs.field(
        default=None, kw_only=True, eq=False, repr=False, alias="_updated_ts"
    )


@attrs.frozen
class HistoryEntry:
    """One recorded command: ``state`` is completed, failed, waiting, retrying or expired."""

    position: int
    kind: str
    name: str
    state: str
    attempts: int
    result: Any = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    deadline: datetime | None = None


@attrs.frozen
class SignalInfo:
    """A signal sent to a flow: ``state`` is pending, consumed, rejected (``error``
    says why) or unused (still pending when the flow finished); ``key`` is the
    sender's idempotency key, if it gave one."""

    id: int
    name: str
    payload: Any
    state: str
    created_at: datetime
    error: str | None = None
    consumed_at: datetime | None = None
    position: int | None = None
    key: str | None = None


@attrs.frozen
class FlowInfo:
    """A flow's stored state, read without running it (``get_flow``)."""

    flow_id: str
    name: str
    status: Status = attrs.field(converter=Status)
    input: Any = None
    value: Any = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    waiting_for: str | None = None
    wake_at: datetime | None = None
    deadline: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    history: tuple[HistoryEntry, ...] = ()  # of the current run
    signals: tuple[SignalInfo, ...] = ()
    custom_status: Any = None  # the last value of ctx.set_custom_status
    parent_id: str | None = None  # the flow that started this one with Child
    children: tuple[str, ...] = ()  # ids of the flows it started with Child, oldest first
    run: int = 1  # 1, 2, …: ContinueAsNew starts the next run
    priority: int = 0  # among due flows a worker takes higher first (Flow.start)
    #: What a due flow waits for before it may run (an Exclusive holder's id, a
    #: limit); None when nothing blocks it.
    blocked_by: str | None = None
    #: Claims in a row whose previous runner's lease lapsed with nothing recorded
    #: since its claim (``@flow(max_recoveries=)``); 0 once anything is recorded.
    recoveries: int = 0
