"""``Flow.start``: create a flow ``"pending"`` for a worker to run (``Store.enqueue``),
with its priority and its flow's ``Exclusive`` and ``Debounce`` keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from . import codec, observe
from .flow import STARTER, Flow, check_flow_id
from .handle import FlowHandle
from .limits import asks_for, fair_key
from .opening import StorePath, using
from .records import NewPending, new_flow_id
from .starts import Debounce, Exclusive, check_priority, key_of

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

__all__ = ["new_pending", "start_flow"]


def new_pending(
    flow: Flow[Any],
    input: Any,
    flow_id: str | None,
    priority: int,
    exclusive: Exclusive | None = None,
    debounce: Debounce | None = None,
) -> NewPending:
    """What ``Store.enqueue`` is asked for a start of *flow*: its arguments
    checked and the input encoded (``Flow.run``'s rules and errors), with the
    flow's ``Exclusive`` and ``Debounce`` keys, and the trace context active now."""
    if flow_id is not None:
        check_flow_id(flow_id)
    check_priority(priority)
    encoded = codec.encode(input, what=f"the input of flow {flow.name!r}")
    new = NewPending(flow_id or new_flow_id(), flow.name, encoded, priority, trace=observe.trace())
    if exclusive is not None:
        key = key_of(flow.name, exclusive, input)
        new = attrs.evolve(new, exclusive=key, on_conflict=exclusive.on_conflict)
    if debounce is not None:
        wait = debounce.max_wait
        new = attrs.evolve(
            new,
            delay=debounce.period.total_seconds(),
            debounce=key_of(flow.name, debounce, input),
            max_wait=None if wait is None else wait.total_seconds(),
        )
    return new


def start_flow(
    flow: Flow[Any],
    *,
    store: Store | StorePath,
    input: Any = None,
    flow_id: str | None = None,
    priority: int = 0,
) -> FlowHandle:
    """Create *flow* ``"pending"`` on *store*; see ``Flow.start``."""
    new = new_pending(flow, input, flow_id, priority, flow.exclusive, flow.debounce)
    if flow.limits:  # its keys checked now; due flows are taken round-robin across them
        new = attrs.evolve(new, fair_key=fair_key(asks_for(flow.limits, input)))
    with using(store, create=True, what="Flow.start store") as opened:
        found = opened.enqueue(new, opened.clock.time())
    if found.created:
        observe.flow_started(flow.name)
    return FlowHandle(found.flow.id, found.flow.name, store)


STARTER[0] = start_flow
