"""Run flows: claim one on its store, drive it, release it (``Flow.run``, ``resume``)."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from . import codec, observe
from .errors import FlowNameConflictError, InvalidTypeError, InvalidValueError
from .executor import Executor
from .flow import RUNNER, Flow, check_flow_id, default_registry
from .flowrun import ParkingWarning
from .hand import _release, result_of
from .handlers import INLINE_BACKOFF
from .limits import Blocked, asks_for, fair_key, make_gate
from .opening import StorePath, check_store, using
from .records import StoredFlow, new_flow_id
from .results import FlowResult
from .starting import new_pending
from .status import Status

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

__all__ = [
    "INLINE_BACKOFF",
    "ParkingWarning",
    "new_flow_id",
    "result_of",
    "resume",
    "run_claimed",
    "run_flow",
]

log = logging.getLogger("crux_gen")


#: How many steps of one ``All`` run at the same time when nobody said (``Flow.run``).
ALL_CONCURRENCY = 8


def check_concurrency(value: object, what: str) -> int:
    """*value* as a thread count of 1 or more, else the matching ``CruxError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(what, value, "is not an int; give an int of 1 or more")
    if value < 1:
        raise InvalidValueError(what, value, "must be an int of 1 or more")
    return value


def _drive_claimed(
    flow: Flow[Any],
    store: Store,
    stored: StoredFlow,
    owner: str,
    should_stop: Callable[[], bool] | None = None,
    concurrency: int = ALL_CONCURRENCY,
) -> FlowResult:
    if stored.lease_owner != owner:  # finished: nothing to run
        return result_of(stored)
    executor = Executor(store, concurrency=concurrency, should_stop=should_stop)
    result = executor.drive(flow, stored, owner)
    return result if result.name else attrs.evolve(result, name=flow.name)


def run_flow(
    flow: Flow[Any],
    *,
    store: Store | StorePath,
    input: Any = None,
    flow_id: str | None = None,
    resume: str | None = None,
    concurrency: int | None = None,
) -> FlowResult:
    """Start or resume *flow* on *store*; see ``Flow.run``."""
    threads = ALL_CONCURRENCY
    if concurrency is not None:
        threads = check_concurrency(concurrency, "Flow.run concurrency")
    if isinstance(store, str | os.PathLike):  # a path or URL: open it for this run
        with using(store, create=resume is None, what="Flow.run store") as opened:
            return run_flow(
                flow,
                store=opened,
                input=input,
                flow_id=flow_id,
                resume=resume,
                concurrency=concurrency,
            )
    check_store(store, "Flow.run store")
    owner = secrets.token_hex(8)
    now = store.clock.time()
    if resume is not None:
        if flow_id is not None and flow_id != resume:
            raise InvalidValueError(
                "run(flow_id=..., resume=...)",
                (flow_id, resume),
                "gives two different ids; give one",
            )
        stored = store.claim(resume, owner, now)
        if stored.name != flow.name:
            if stored.lease_owner == owner:
                _release(store, stored.id, owner)
            raise FlowNameConflictError(stored.id, stored.name, flow.name)
    elif flow.exclusive is not None or flow.debounce is not None or flow.limits:
        found = _controlled_start(flow, store, input, flow_id, owner, now)
        if isinstance(found, FlowResult):
            return found
        stored = found
    else:
        encoded = codec.encode(input, what=f"the input of flow {flow.name!r}")
        new_id, trace = flow_id or new_flow_id(), observe.trace()
        stored = store.start(new_id, flow.name, encoded, owner, now, trace=trace)
        if observe.OBSERVER is not None and created(stored, owner, now, flow_id is None):
            observe.flow_started(flow.name)
    return _drive_claimed(flow, store, stored, owner, concurrency=threads)


def _controlled_start(
    flow: Flow[Any], store: Store, input: Any, flow_id: str | None, owner: str, now: float
) -> StoredFlow | FlowResult:
    """``Flow.run`` of a flow with an ``Exclusive``, a ``Debounce`` or limits of its
    own: the start goes through ``Store.enqueue`` (the rules race-free in the store),
    then the flow is claimed to run here when it may start now: the new holder of
    its key, or the flow of *flow_id* stored already (a resume) unless it is queued
    or not due yet; a flow with limits takes its slots in that claim, as a worker's
    does (no slot: it stays due, blocked, and is returned ``"pending"`` for a
    worker to run once a slot frees). Otherwise the result of the flow that stands
    for the start: a queued or debounced one (``"pending"``), or the holder a
    ``"skip"`` found."""
    new = new_pending(flow, input, flow_id, 0, flow.exclusive, flow.debounce)
    if flow.limits:  # due flows are taken round-robin across its keys
        new = attrs.evolve(new, fair_key=fair_key(asks_for(flow.limits, input)))
    found = store.enqueue(new, now)
    if found.created:
        observe.flow_started(flow.name)
    stored = found.flow
    waits = stored.status == Status.PENDING and (
        stored.blocked_by is not None or stored.wake_at is None or stored.wake_at > now
    )
    if stored.id != new.flow_id or waits:  # another flow stands for it, or not yet
        return result_of(stored)
    if not flow.limits or stored.status != Status.PENDING:
        return store.claim(new.flow_id, owner, store.clock.time())
    gate = make_gate(lambda name: flow.limits)
    try:
        return store.claim(new.flow_id, owner, store.clock.time(), gate=gate)
    except Blocked:
        return result_of(store.load(new.flow_id))


def created(stored: StoredFlow, owner: str, now: float, new_id: bool) -> bool:
    """Whether ``Store.start`` just created *stored* (rather than claimed the flow
    of that id): a new id always; a given one when the flow is running, claimed by
    *owner*, made at *now*, with nothing recorded (a flow found under that id was
    made earlier, or has moved on, or is another's)."""
    if new_id:
        return True
    return (
        stored.lease_owner == owner and stored.status == Status.RUNNING
        and stored.created_at == now and stored.run == 1 and not stored.records
    )  # fmt: skip


def resume(
    flow_id: str,
    *,
    store: Store | StorePath,
    flows: Iterable[Flow[Any]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    only_if_due: bool = False,
    concurrency: int = ALL_CONCURRENCY,
) -> FlowResult:
    """Continue flow *flow_id*, finding its code by the stored name: among *flows*
    when given, else in the registry of ``@flow``.

    >>> resume(flow_id, store=store).status
    'completed'

    For workers: *should_stop* is asked before each live command; when it returns
    true the run writes what it has, drops the lease and returns status
    ``"running"`` (the flow is due again). With *only_if_due*, a flow that is not
    due any more (another worker advanced it since the due query) is not claimed:
    ``FlowBusyError``, or ``FlowClosedError`` once it has finished.
    """
    flow_id = check_flow_id(flow_id)
    with using(store, what="resume store") as opened:
        owner = secrets.token_hex(8)
        now = opened.clock.time()
        stored = opened.claim(flow_id, owner, now, only_if_due=only_if_due)
        return run_claimed(
            stored,
            owner,
            store=opened,
            flows=flows,
            should_stop=should_stop,
            concurrency=concurrency,
        )


def run_claimed(
    stored: StoredFlow,
    owner: str,
    *,
    store: Store,
    flows: Iterable[Flow[Any]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    concurrency: int = ALL_CONCURRENCY,
) -> FlowResult:
    """Drive a flow *owner* has claimed (``Store.claim`` or ``claim_due``), finding
    its code as ``resume`` does; the lease is released on every way out."""
    if stored.lease_owner != owner:
        return result_of(stored)
    try:
        flow = find_flow(flows or (), stored)
    except BaseException:
        _release(store, stored.id, owner)
        raise
    return _drive_claimed(flow, store, stored, owner, should_stop, concurrency)


def find_flow(flows: Iterable[Flow[Any]], stored: StoredFlow) -> Flow[Any]:
    """The code of *stored*, by its name: among *flows*, else in the registry of
    ``@flow`` (``FlowNotRegisteredError`` naming it)."""
    found = next((f for f in flows if f.name == stored.name), None)
    return found if found is not None else default_registry.get(stored.name, flow_id=stored.id)


RUNNER[0] = run_flow
