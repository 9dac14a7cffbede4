"""Acting on stored flows without running them: signal, cancel, inspect."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import when
from .codec import ErrorInfo
from .commands import check_name
from .errors import InvalidValueError
from .flow import check_flow_id
from .results import FlowInfo, HistoryEntry, SignalInfo

if TYPE_CHECKING:
    from .stores.base import Store


def signal_flow(flow_id: str, name: str, payload: Any, *, store: Store) -> None:
    """Durably record signal *name* with *payload* for flow *flow_id*, from any process.

    >>> signal_flow(flow_id, "email-verified", {"verified_at": "2026-11-24T10:00:00Z"}, store=store)

    A signal sent before the flow reaches its ``Suspend`` is kept until then.
    Raises ``FlowNotFoundError``, ``FlowClosedError`` (finished, or its wait
    expired), ``SerializationError`` (nothing stored), or ``InvalidTypeError`` /
    ``InvalidValueError`` for a flow id or signal name that is not a non-empty str.
    """
    check_flow_id(flow_id)
    check_name(name, what="signal name")
    encoded = codec.encode(payload, what=f"the payload of signal {name!r} for flow {flow_id!r}")
    store.add_signal(flow_id, name, encoded, store.clock.time())


def cancel_flow(flow_id: str, reason: str, *, store: Store) -> bool:
    """Cancel an unfinished flow; ``False`` (and nothing changed) if it had finished.

    >>> cancel_flow(flow_id, "account deleted", store=store)
    True

    A flow running in another process stops at its next command boundary. A flow
    id that is not a non-empty str is an ``InvalidTypeError`` / ``InvalidValueError``.
    """
    check_flow_id(flow_id)
    text = str(reason)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValueError(
                "cancel reason", text, "holds a lone surrogate, which no store can keep as text"
            ) from None
    return store.cancel(flow_id, text, store.clock.time())


def get_flow(flow_id: str, *, store: Store) -> FlowInfo:
    """The stored state of a flow, its history and its signals, without running it.

    >>> get_flow(flow_id, store=store).history[0].result
    {'to': 'ada@example.com', 'template': 'welcome'}

    A stored value that cannot be decoded (changed outside crux_gen) is a
    ``CorruptRecordError`` naming the flow, the position and the column.
    """
    check_flow_id(flow_id)
    stored = store.load(flow_id)
    fid = stored.id

    def decoded(text: str | None, position: int | None, column: str) -> Any:
        return codec.decode_stored(text, flow_id=fid, position=position, column=column)

    return FlowInfo(
        flow_id=stored.id,
        name=stored.name,
        status=stored.status,
        input=decoded(stored.input, None, "input"),
        value=decoded(stored.result, None, "result"),
        error=ErrorInfo.decode(stored.error, flow_id=fid),
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
                result=decoded(r.result, r.position, "result"),
                error=ErrorInfo.decode(r.error, flow_id=fid, position=r.position),
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
                payload=decoded(s.payload, None, f"signal #{s.id} payload"),
                state=s.state,
                created_at=when(s.created_at) or datetime.min,
                error=s.error,
                consumed_at=when(s.consumed_at),
                position=s.position,
            )
            for s in stored.signals
        ),
    )
