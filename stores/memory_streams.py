"""``MemoryStreams``: the ``Streams`` capability of ``MemoryStore`` (dicts under
the store's lock), the reference semantics of ``stores/sql_streams.py``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from crux_gen.errors import FlowNotFoundError
from crux_gen.records import Write

from .base_streams import EventRow, StreamRow


class MemoryStreams:
    """Events and stream entries by flow id, under the store's ``_lock``."""

    _lock: threading.RLock
    _flows: dict[str, dict[str, Any]]
    _events: dict[str, dict[str, EventRow]]
    _streams: dict[str, list[StreamRow]]

    def _publish(self, row: dict[str, Any], now: float, write: Write) -> None:
        """*write*'s custom status, events and stream writes (``commit``'s part)."""
        if write.custom_status is not None:
            row["custom_status"] = write.custom_status
        flow_id = row["id"]
        for key, value in write.events:
            events = self._events.setdefault(flow_id, {})
            if key not in events or events[key].value != value:
                events[key] = EventRow(key, value, now)
        for key, tag, entry in write.streams:
            self._append(flow_id, key, entry, now, tag)

    def _append(
        self, flow_id: str, key: str, value: str | None, now: float, tag: str | None
    ) -> int:
        entries = self._streams.setdefault(flow_id, [])
        mine = [e for e in entries if e.key == key]
        if tag is not None and any(e.tag == tag for e in mine):
            return 0  # a replayed body write: stored already
        entries.append(StreamRow(key, len(mine) + 1, value, now, tag))
        return len(mine) + 1

    def read_event(self, flow_id: str, key: str) -> tuple[str | None, str | None]:
        with self._lock:
            row = self._flows.get(flow_id)
            found = self._events.get(flow_id, {}).get(key)
            status = None if row is None else str(row["status"])
            return None if found is None else found.value, status

    def append_stream(self, flow_id: str, key: str, value: str | None, now: float) -> int:
        with self._lock:
            if flow_id not in self._flows:
                raise FlowNotFoundError(flow_id)
            return self._append(flow_id, key, value, now, None)

    def read_stream_after(
        self, flow_id: str, key: str, after: int
    ) -> tuple[list[StreamRow], str | None]:
        with self._lock:
            row = self._flows.get(flow_id)
            entries = self._streams.get(flow_id, [])
            found = [e for e in entries if e.key == key and e.seq > after]
            return found, None if row is None else str(row["status"])

    def flow_events(self, flow_id: str) -> list[EventRow]:
        with self._lock:
            return sorted(self._events.get(flow_id, {}).values())

    def flow_streams(self, flow_id: str) -> list[StreamRow]:
        with self._lock:
            return sorted(self._streams.get(flow_id, []), key=lambda e: (e.key, e.seq))

    def put_streams(
        self, flow_id: str, events: Sequence[EventRow], entries: Sequence[StreamRow]
    ) -> None:
        with self._lock:
            self._events.setdefault(flow_id, {}).update({e.key: e for e in events})
            stored = self._streams.setdefault(flow_id, [])
            taken = {(e.key, e.seq) for e in stored}
            stored.extend(e for e in entries if (e.key, e.seq) not in taken)
