"""What a flow body publishes with its run's next write: ``ctx.set_event`` and
``ctx.write_stream`` / ``ctx.close_stream`` (``Published``, one per ``FlowRun``;
the reading side and a step's own stream writes are ``crux_gen.streams``).

A body's stream write is tagged ``"{run}:{position}:{n}"``: the body's position
when it wrote (the commands and recorded values before it) and how many writes it
made at that position before, the same on every replay, so a store keeps one entry
per tag and a replay writes nothing twice. An event is the last value set per key;
a store leaves an event set to the value it has as it is (a replay's).
"""

from __future__ import annotations

from typing import Any

import attrs

from . import codec
from .interpreter import Interpreter
from .names import check_name
from .records import StoredRecord, Write


class Published:
    """Events and stream writes a run's body made since its last write."""

    __slots__ = ("_at", "_whats", "events", "interp", "run", "store", "streams")

    def __init__(self, run: int, interp: Interpreter, store: Any) -> None:
        self.run = run
        self.interp = interp
        self.store = store  # the executor's: a step's ``crux_gen.write_stream``
        self.events: dict[str, str] = {}
        self.streams: list[tuple[str, str, str | None]] = []
        self._at = (-1, 0)  # (position, writes made at it)
        self._whats: dict[tuple[str, str], str] = {}  # (kind, key) checked: its ``what``

    def __bool__(self) -> bool:
        return bool(self.events or self.streams)

    def add(self, kind: str, key: str, value: Any, flow_id: str) -> None:
        """*kind* ``"event"``, ``"stream"`` or ``"close"`` of *key* at the body's
        position; ``SerializationError`` (at the call) for a value JSON cannot hold."""
        position = self.interp.position
        what = self._whats.get((kind, key)) if isinstance(key, str) else None
        if what is None:  # a key's first write (a key checked once per run)
            noun = "event" if kind == "event" else "stream"
            check_name(key, what=f"{noun} key")
            what = self._whats[kind, key] = f"{noun} {key!r} of flow {flow_id!r}"
        if kind == "event":
            self.events[key] = codec.encode(value, what=what)
            return
        text = None if kind == "close" else codec.encode(value, what=what)
        n = self._at[1] + 1 if self._at[0] == position else 0
        self._at = (position, n)
        self.streams.append((key, f"{self.run}:{position}:{n}", text))

    def carried(self, write: Write) -> Write:
        """*write* carrying what is pending (``ctx.set_event`` & co. go with the
        run's next write, ahead of its calls)."""
        return attrs.evolve(write, events=tuple(self.events.items()), streams=tuple(self.streams))

    def written(self, write: Write) -> None:
        """*write* was stored: what it carried is no longer pending."""
        for key, value in write.events:
            if self.events.get(key) is value:
                del self.events[key]
        del self.streams[: len(write.streams)]


def step_write(records: tuple[StoredRecord, ...], published: Published | None) -> Write:
    """A step's write of *records* (``FlowRun.write``'s hot path), carrying what
    *published* holds pending: built once, not carried after."""
    if not published:
        return Write(records)
    return Write(records, events=tuple(published.events.items()), streams=tuple(published.streams))
