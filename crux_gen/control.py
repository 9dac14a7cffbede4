"""Acting on stored flows without running them: signal, cancel, inspect."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import when
from .codec import ErrorInfo
from .results import FlowInfo, HistoryEntry, SignalInfo

if TYPE_CHECKING:
    from .stores.base import Store


def signal_flow(flow_id: str, name: str, payload: Any, *, store: Store) -> None:
    """Durably record signal *name* with *payload* for flow *flow_id*, from any process.

    >>> signal_flow(flow_id, "email-verified", {"verified_at": "2026-11-24T10:00:00Z"}, store=store)

    A signal sent before the flow reaches its ``Suspend`` is kept until then.
    Raises ``FlowNotFoundError``, ``FlowClosedError`` (finished, or its wait
    expired) or ``SerializationError`` (nothing stored).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"signal name {name!r} must be a non-empty string")
    encoded = codec.encode(payload, what=f"the payload of signal {name!r} for flow {flow_id!r}")
    store.add_signal(flow_id, name, encoded, store.clock.time())


def cancel_flow(flow_id: str, reason: str, *, store: Store) -> bool:
    """Cancel an unfinished flow; ``False`` (and nothing changed) if it had finished.

    A flow running in another process stops at its next command boundary.
    """
    return store.cancel(flow_id, str(reason), store.clock.time())


def get_flow(flow_id: str, *, store: Store) -> FlowInfo:
    """The stored state of a flow, its history and its signals, without running it."""
    stored = store.load(flow_id)
    return FlowInfo(
        flow_id=stored.id,
        name=stored.name,
        status=stored.status,
        input=codec.decode(stored.input),
        value=codec.decode(stored.result),
        error=ErrorInfo.decode(stored.error),
        cancel_reason=stored.cancel_reason,
        waiting_for=stored.waiting_for,
        wake_at=when(stored.wake_at),
        deadline=when(stored.deadline),
        created_at=when(stored.created_at),
        updated_at=when(stored.updated_at),
        history=tuple(
            HistoryEntry(
                position=r.position,
                kind=r.kind,
                name=r.name,
                state=r.state,
                attempts=r.attempts,
                result=codec.decode(r.result),
                error=ErrorInfo.decode(r.error),
                started_at=when(r.started_at),
                finished_at=when(r.finished_at),
                wake_at=when(r.wake_at),
                deadline=when(r.deadline),
            )
            for r in stored.records
        ),
        signals=tuple(
            SignalInfo(
                id=s.id,
                name=s.name,
                payload=codec.decode(s.payload),
                state=s.state,
                created_at=when(s.created_at) or datetime.min,
                error=s.error,
                consumed_at=when(s.consumed_at),
                position=s.position,
            )
            for s in stored.signals
        ),
    )
