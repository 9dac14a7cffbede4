"""The part of the ``Store`` protocol that keeps a flow's events and streams
(``ctx.set_event``/``get_event``, ``ctx.write_stream``/``read_stream``: see
``crux_gen.streams``), importable from ``stores.base`` too; a store declares it
with ``Caps.streams``.

An event is one JSON value per flow and key, the last one set winning. A stream is
a sequence of JSON values per flow and key, numbered from 1 (``seq``) in the order
they were stored; an entry whose value is ``None`` closes the stream. A body's
stream writes come with a *tag* (the same on every replay of the body), and an
entry whose tag is stored already for its flow and key is not stored again. Both
are deleted with their flow and copied by ``crux-gen migrate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class EventRow(NamedTuple):
    """A flow's event: its key, JSON value and when it was last changed."""

    key: str
    value: str
    set_at: float


class StreamRow(NamedTuple):
    """One entry of a flow's stream: ``value`` ``None`` closes the stream; ``tag``
    is a body write's (``None``: a step function's)."""

    key: str
    seq: int
    value: str | None
    at: float
    tag: str | None = None


class Streams(Protocol):
    """A store with ``Caps.streams``. A ``Write`` carries the body's events and
    stream writes (``Write.events``, ``Write.streams``): ``commit`` stores them in
    its transaction (an event set to the value it has changes nothing)."""

    def read_event(self, flow_id: str, key: str) -> tuple[str | None, str | None]:
        """The JSON text of *flow_id*'s event *key* (``None``: not set) and the
        flow's status (``None``: no such flow), read together."""
        ...

    def append_stream(self, flow_id: str, key: str, value: str | None, now: float) -> int:
        """Add *value* (JSON text; ``None``: close) to *flow_id*'s stream *key* in one
        transaction: its ``seq``. ``FlowNotFoundError`` for an unknown flow."""
        ...

    def read_stream_after(
        self, flow_id: str, key: str, after: int
    ) -> tuple[list[StreamRow], str | None]:
        """*flow_id*'s entries of stream *key* with ``seq`` above *after*, in order,
        and the flow's status (``None``: no such flow), read together."""
        ...

    def flow_events(self, flow_id: str) -> list[EventRow]:
        """Every event of *flow_id*, by key."""
        ...

    def flow_streams(self, flow_id: str) -> list[StreamRow]:
        """Every stream entry of *flow_id*, by key and ``seq``."""
        ...

    def put_streams(
        self, flow_id: str, events: Sequence[EventRow], entries: Sequence[StreamRow]
    ) -> None:
        """Store *events* and *entries* as they are (``crux-gen migrate``), in one
        transaction; an entry taken already (its key and ``seq``) is left as it is."""
        ...
