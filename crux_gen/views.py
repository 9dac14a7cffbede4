"""What a stored flow row is shown as to a user: its ``FlowInfo`` (``get_flow``),
its ``FlowResult`` (a run's answer, ``FlowHandle.result``), every stored value
decoded (a value that cannot be is a ``CorruptRecordError`` naming it)."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from . import codec
from .clock import when
from .codec import ErrorInfo
from .records import WAITING, StoredFlow, StoredRecord, StoredSignal
from .results import FlowInfo, FlowResult, HistoryEntry, SignalInfo

__all__ = ["entry_of", "info_of", "result_of", "signal_of"]


def info_of(stored: StoredFlow) -> FlowInfo:
    """The ``FlowInfo`` of a stored flow, every stored value decoded (a value that
    cannot be is a ``CorruptRecordError`` naming the flow, position and column)."""
    decoded = partial(codec.decode_stored, flow_id=stored.id)
    return FlowInfo(
        flow_id=stored.id,
        name=stored.name,
        status=stored.status,
        input=decoded(stored.input, position=None, column="input"),
        value=decoded(stored.result, position=None, column="result"),
        error=ErrorInfo.decode(stored.error, flow_id=stored.id),
        cancel_reason=stored.cancel_reason,
        waiting_for=stored.waiting_for,
        wake_at=when(stored.wake_at),
        deadline=when(stored.deadline),
        created_at=when(stored.created_at),
        updated_at=when(stored.updated_at),
        history=tuple(entry_of(stored.id, r) for r in stored.records),
        signals=tuple(signal_of(stored.id, s) for s in stored.signals),
        custom_status=decoded(stored.custom_status, position=None, column="custom_status"),
        parent_id=stored.parent_id,
        children=stored.children,
        run=stored.run,
        priority=stored.priority,
        blocked_by=stored.blocked_by,
        recoveries=stored.recoveries,
    )


def entry_of(flow_id: str, r: StoredRecord) -> HistoryEntry:
    """The ``HistoryEntry`` of the stored record *r* of flow *flow_id*."""
    return HistoryEntry(
        position=r.position,
        kind=r.kind,
        name=r.name,
        state=r.state,
        attempts=r.attempts,
        result=None  # a waiting Suspend's result names its schema (``schemas.py``)
        if r.kind == "suspend" and r.state == WAITING
        else codec.decode_stored(r.result, flow_id=flow_id, position=r.position, column="result"),
        error=ErrorInfo.decode(r.error, flow_id=flow_id, position=r.position),
        started_at=when(r.started_at),
        finished_at=when(r.finished_at),
        wake_at=when(r.wake_at),
        deadline=when(r.deadline),
    )


def signal_of(flow_id: str, s: StoredSignal) -> SignalInfo:
    """The ``SignalInfo`` of the stored signal *s* of flow *flow_id*."""
    return SignalInfo(
        id=s.id,
        name=s.name,
        payload=codec.decode_stored(
            s.payload, flow_id=flow_id, position=None, column=f"signal #{s.id} payload"
        ),
        state=s.state,
        created_at=when(s.created_at) or datetime.min,
        error=s.error,
        consumed_at=when(s.consumed_at),
        position=s.position,
        key=s.key,
    )


def result_of(stored: StoredFlow) -> FlowResult:
    """The ``FlowResult`` a stored flow stands at."""
    return FlowResult(
        stored.id,
        stored.status,
        value=codec.decode_stored(stored.result, flow_id=stored.id, position=None, column="result"),
        error=ErrorInfo.decode(stored.error, flow_id=stored.id),
        cancel_reason=stored.cancel_reason,
        waiting_for=stored.waiting_for,
        wake_at=when(stored.wake_at),
        name=stored.name,
    )
