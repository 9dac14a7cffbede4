"""The part of the ``Store`` protocol that stores many signals in one transaction
(``signal_many``), importable from ``stores.base`` too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crux_gen.records import StoredSignal

#: One signal of a batch: ``(flow_id, name, payload, key)``, the payload JSON text.
SignalAsk = tuple[str, str, str, "str | None"]


class Signals(Protocol):
    """Signals stored together: all of them, or none."""

    def add_signals(
        self, signals: Sequence[SignalAsk], now: float, *, trace: str | None = None
    ) -> list[StoredSignal | None]:
        """Store every signal of *signals* as ``add_signal`` would (each with
        *trace*, the trace context the batch was sent in), in one
        transaction: one answer per signal, in order (``None``: its key was seen
        before for its flow, also earlier in the same batch, and nothing was stored
        for it). A signal ``add_signal`` would refuse (``FlowNotFoundError``,
        ``FlowClosedError``) stores nothing of the batch; the error's message names
        the signal's index and its ``item`` attribute holds it."""
        ...
