"""What a store declares it can do beyond the ``Store`` protocol (``Caps``), and the
one check of an object against a protocol (``missing_members``).

Callers read a store's ``caps`` instead of probing it for methods: a capability is
stated by the store, once. A store of a user's own written before ``caps`` existed
(or a wrapper that does not forward it) is described by :func:`caps_of` with no
optional capability. This module is a leaf: it imports nothing of crux_gen's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import attrs


@attrs.frozen
class Caps:
    """A store's own description of itself, for callers that adapt to it.

    ``where`` is how log lines name the store (``SQLiteStore('crux.db')``);
    ``wakeups`` says it is a :class:`Wakeups` (a worker may sleep in
    ``wait_for_wake`` rather than poll: PostgreSQL's ``NOTIFY``); ``counts`` says it
    is a :class:`Counts` (the dashboard counts flows in one query); ``browses``
    says it has ``browse_flows`` and ``error_groups`` (``StoreAdmin``: the
    dashboard's id, time, top-level and error filters, and its errors page);
    ``created`` says that opening it made it, empty (a SQLite path that named no
    file: a worker on it warns, as a mistyped path would otherwise poll an empty
    file forever); ``schedules`` says it is a ``base.Schedules`` (it keeps the
    state of cron schedules: ``crux_gen.schedules``); ``limits`` says it is a
    ``base.Limits`` (it keeps the slots and rate turns of ``Limit``s on steps and
    lists them); ``signals`` says it is a ``base.Signals`` (it stores a batch of
    signals in one transaction: ``signal_many``); ``forks`` says it is a
    ``base.Forks`` (it creates a forked flow with its history in one
    transaction: ``fork_flow``); ``streams`` says it is a
    ``base_streams.Streams`` (it keeps a flow's events and streams:
    ``crux_gen.streams``); ``stream_wakeups`` says it is a :class:`StreamWakeups`
    (a reader waiting on a flow's events and streams is woken when the flow
    publishes or ends, and polls only as a fallback: PostgreSQL's ``NOTIFY``).
    """

    where: str
    wakeups: bool = False
    counts: bool = False
    browses: bool = False
    created: bool = False
    schedules: bool = False
    limits: bool = False
    signals: bool = False
    forks: bool = False
    streams: bool = False
    stream_wakeups: bool = False


class Wakeups(Protocol):
    """A store with ``Caps.wakeups``."""

    def wait_for_wake(self, timeout: float) -> bool:
        """Block until the store announces that a flow may be due, or *timeout*
        seconds pass; ``True`` when woken. A hint only: a missed one costs a poll."""
        ...


class FlowWatch(Protocol):
    """A reader's registration for news of one flow (``StreamWakeups.watch_flow``)."""

    def wait(self, timeout: float) -> bool:
        """Block until the flow published or ended since the last ``wait`` returned
        (or since the watch began), or *timeout* seconds pass; ``True`` when woken.
        A hint only: the reader reads again either way."""
        ...


class StreamWakeups(Protocol):
    """A store with ``Caps.stream_wakeups``."""

    #: Seconds between a waiting reader's reads when no wake-up comes (the fallback).
    reader_poll: float

    def watch_flow(self, flow_id: str) -> AbstractContextManager[FlowWatch]:
        """A ``FlowWatch`` of *flow_id* while the block runs: news stored after it
        began wakes it (a reader reads once more after entering, then waits)."""
        ...


class Counts(Protocol):
    """A store with ``Caps.counts``."""

    def count_flows(self) -> dict[str, int]:
        """How many flows each status has (statuses with none are left out)."""
        ...


def caps_of(store: object) -> Caps:
    """*store*'s ``caps``; for an object without them (a user's own store or
    wrapper), ``Caps(where=<its class name>)``: no optional capability."""
    declared = getattr(store, "caps", None)
    return declared if isinstance(declared, Caps) else Caps(where=type(store).__name__)


#: Protocol members an object may lack and still conform: ``caps`` (``caps_of``
#: describes a store without it).
OPTIONAL = frozenset({"caps"})


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members *protocol* (and the protocols it extends) declares that *obj*
    lacks, in the order they are declared (a protocol's own before those of the
    protocols it extends); ``[]`` when it has them all. A method must be callable;
    a data member (``clock``) only present; one of ``OPTIONAL`` may be absent.

    A member found through ``__getattr__`` counts (a wrapper that forwards to a
    store is a store), on every Python version, which ``isinstance`` against a
    ``runtime_checkable`` protocol does not promise (3.12 looks attributes up
    statically); and the answer names what is missing.
    """
    declared: dict[str, bool] = {}  # name -> a method
    for cls in protocol.__mro__:
        if not getattr(cls, "_is_protocol", False) or cls is Protocol:
            continue
        for name in vars(cls).get("__annotations__", {}):
            declared.setdefault(name, False)
        for name, value in vars(cls).items():
            if callable(value) and not name.startswith("_"):
                declared.setdefault(name, True)
    missing = []
    for name, method in declared.items():
        found = getattr(obj, name, None)
        if name not in OPTIONAL and (found is None or (method and not callable(found))):
            missing.append(name)
    return missing
