"""``MemoryLimits``: global limits in a ``MemoryStore`` (``Limit``), the reference
semantics of ``sql_limits``: slots counted while their flow's lease is live, a
GCRA time per limit and key, a blocked flow unblocked by the next release."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from crux_gen.clock import Clock
from crux_gen.limits import Blocked, Gate, LimitUsage, SlotAsk, fair_key, label, usage
from crux_gen.status import Status

from .memory_start import MemoryStart

UNFINISHED = (Status.PENDING, Status.RUNNING, Status.SUSPENDED)


class MemoryLimits(MemoryStart):
    """``MemoryStart`` with the slots and rates of limits."""

    def __init__(self, lease_ttl: timedelta, clock: Clock) -> None:
        super().__init__(lease_ttl, clock)
        #: (limit name, key) -> ids of the flows holding a slot of it.
        self._slots: dict[tuple[str, str], set[str]] = {}
        #: (limit name, key) -> the GCRA's theoretical arrival time.
        self._tats: dict[tuple[str, str], float] = {}

    def limit_usage(self, now: float) -> list[LimitUsage]:
        """Every limit (and key) with a slot held or a flow blocked, at *now*."""
        with self._lock:
            held = []
            for (name, key), holders in self._slots.items():
                rows = [self._flows.get(h) for h in holders]
                live = [r for r in rows if r and r["lease_owner"] and r["lease_expires"] > now]
                if live:
                    held.append((name, key, len(live)))
            blocked: dict[str, int] = {}
            for r in self._flows.values():
                text = r["blocked_by"]
                if text and text.startswith(("limit ", "rate ")) and r["status"] in UNFINISHED:
                    blocked[text] = blocked.get(text, 0) + 1
            return usage(held, blocked.items())

    def _gate(self, row: dict[str, Any], gate: Gate | None, now: float) -> None:
        """Take *row*'s slots and rate turns before its claim, else mark it
        blocked and raise ``FlowBusyError`` (``SqlLimits._gate``)."""
        asks = () if gate is None else gate(row["name"], row["input"])
        if not asks:
            return
        for ask in asks:
            blocked = self._blocked(row["id"], ask, now)
            if blocked is not None:
                row["blocked_by"], row["blocked_until"] = blocked
                row["fair_key"] = row["fair_key"] or fair_key(asks)
                raise Blocked(row["id"])
        for ask in asks:
            at = (ask.name, ask.key)
            if ask.interval is not None:
                self._tats[at] = max(self._tats.get(at, 0.0), now) + ask.interval
            if ask.concurrency is not None:
                self._slots.setdefault(at, set()).add(row["id"])
        row["blocked_by"] = row["blocked_until"] = None
        served = row["fair_key"] or fair_key(asks)
        if served is not None:  # its key goes to the back of the round
            self._served[served] = max(self._served.values(), default=0) + 1

    def _blocked(self, flow_id: str, ask: SlotAsk, now: float) -> tuple[str, float | None] | None:
        at = (ask.name, ask.key)
        if ask.concurrency is not None:
            held = 0
            for holder in self._slots.get(at, ()):
                other = self._flows.get(holder)
                if holder != flow_id and other is not None and other["lease_owner"] is not None:
                    held += other["lease_expires"] > now
            if held >= ask.concurrency:
                return label(ask.name, ask.key), None
        if ask.interval is not None:
            turn = self._tats.get(at, 0.0) + ask.interval - ask.burst * ask.interval
            if turn > now:
                return label(ask.name, ask.key, rate=True), turn
        return None

    def _free_slots(self, flow_id: str, now: float) -> None:
        """*flow_id* parked or ended: its slots go back, each unblocking the next
        flow blocked by its limit and key (highest priority, longest blocked)."""
        for at in sorted(self._slots):
            holders = self._slots[at]
            if flow_id not in holders:
                continue
            holders.discard(flow_id)
            text = label(*at)
            blocked = [
                r
                for r in self._flows.values()
                if r["blocked_by"] == text
                and r["blocked_until"] is None
                and r["status"] in UNFINISHED
            ]
            if blocked:
                first = min(blocked, key=lambda r: (-r["priority"], r["updated_at"], r["id"]))
                first["blocked_by"] = None
