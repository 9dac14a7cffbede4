"""``MemoryFork``: a forked flow created in a ``MemoryStore`` (``Forks.insert_fork``)."""

from __future__ import annotations

import attrs

from crux_gen.records import StoredFlow

from .base_fork import ForkIdTakenError
from .memory_admin import MemoryAdmin


class MemoryFork(MemoryAdmin):
    """``MemoryAdmin`` with ``insert_fork``."""

    def insert_fork(self, flow: StoredFlow, *, source: str) -> None:
        with self._lock:
            found = self._flows.get(flow.id)
            if found is not None:
                raise ForkIdTakenError(flow.id, found["parent_id"], source)
            row = attrs.asdict(flow, recurse=False)
            del row["records"], row["signals"], row["children"]
            row.update(lease_owner=None, lease_expires=None)
            self._flows[flow.id] = row
            self._records[flow.id] = list(flow.records)
            self._past[flow.id] = {}
            signals = {}
            for signal in flow.signals:
                signals[self._next_signal] = signal._replace(id=self._next_signal, flow_id=flow.id)
                self._next_signal += 1
            self._signals[flow.id] = signals
