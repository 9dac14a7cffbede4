"""The protocol of a store that keeps the slots and rate turns of ``Limit``s
(``Caps.limits``), importable from ``stores.base`` too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crux_gen.limits import LimitUsage, SlotAsk


class Limits(Protocol):
    """A store with ``Caps.limits``: slots and rate turns shared by every worker
    (``crux_gen.limits`` decides what a flow or step asks; the store takes and gives
    back, in the transactions of the claim and the commit). ``claim_due(gate=)`` is
    the flow's side, in ``Store``; these are the step's side and the listing."""

    def take_step(
        self, flow_id: str, owner: str, asks: Sequence[tuple[str, SlotAsk]], now: float
    ) -> bool:
        """Take the slots of a run's limited steps (all or none) for the lease holder
        *owner*; ``False``: one is full and, in the same transaction, the flow is
        marked blocked, gives back every slot and lets go of its lease."""
        ...

    def limit_usage(self, now: float) -> list[LimitUsage]:
        """Every limit (and key) with a slot held or a flow blocked, at *now*."""
        ...
