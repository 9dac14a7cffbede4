"""``MemoryLimits``: global limits in a ``MemoryStore`` (``Limit``), the reference
semantics of ``sql_limits``: slots counted while their flow's lease is live, a
GCRA time per limit and key, a blocked flow unblocked by the next release."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from crux_gen.clock import Clock
from crux_gen.errors import LeaseLostError
from crux_gen.limits import Blocked, Gate, LimitUsage, SlotAsk, fair_key, label, usage
from crux_gen.status import Status

from .memory_start import MemoryStart

UNFINISHED = (Status.PENDING, Status.RUNNING, Status.SUSPENDED)


class MemoryLimits(MemoryStart):
    """``MemoryStart`` with the slots and rates of limits."""

    def __init__(self, lease_ttl: timedelta, clock: Clock) -> None:
        super().__init__(lease_ttl, clock)
        #: (limit name, key) -> the (flow id, part) holding a slot of it; part is
        #: ``""`` for the flow's own slot, ``"step N"`` for a step's.
        self._slots: dict[tuple[str, str], set[tuple[str, str]]] = {}
        #: (limit name, key) -> the GCRA's theoretical arrival time.
        self._tats: dict[tuple[str, str], float] = {}

    def limit_usage(self, now: float) -> list[LimitUsage]:
        """Every limit (and key) with a slot held or a flow blocked, at *now*."""
        with self._lock:
            held = []
            for (name, key), holders in self._slots.items():
                live = sum(self._live(flow_id, now) for flow_id, _ in holders)
                if live:
                    held.append((name, key, live))
            blocked: dict[str, int] = {}
            for r in self._flows.values():
                text = r["blocked_by"]
                if text and text.startswith(("limit ", "rate ")) and r["status"] in UNFINISHED:
                    blocked[text] = blocked.get(text, 0) + 1
            return usage(held, blocked.items())

    def _live(self, flow_id: str, now: float) -> bool:
        row = self._flows.get(flow_id)
        return row is not None and row["lease_owner"] is not None and row["lease_expires"] > now

    def _gate(self, row: dict[str, Any], gate: Gate | None, now: float) -> None:
        """Take *row*'s slots and rate turns before its claim, else mark it
        blocked and raise ``Blocked`` (``SqlLimits._gate``)."""
        asks = () if gate is None else gate(row["name"], row["input"])
        if not asks:
            return
        blocked = self._take(row["id"], [("", a) for a in asks], now)
        if blocked is not None:
            row["blocked_by"], row["blocked_until"] = blocked
            row["fair_key"] = row["fair_key"] or fair_key(asks)
            raise Blocked(row["id"])
        row["blocked_by"] = row["blocked_until"] = None
        served = row["fair_key"] or fair_key(asks)
        if served is not None:  # its key goes to the back of the round
            self._served[served] = max(self._served.values(), default=0) + 1

    def _take(
        self, flow_id: str, asks: Sequence[tuple[str, SlotAsk]], now: float
    ) -> tuple[str, float | None] | None:
        """Take every ask for *flow_id*, all or none (``SqlLimits._take``)."""
        for part, ask in asks:
            blocked = self._blocked(flow_id, part, ask, now)
            if blocked is not None:
                return blocked
        for part, ask in asks:
            at = (ask.name, ask.key)
            if ask.interval is not None:
                self._tats[at] = max(self._tats.get(at, 0.0), now) + ask.interval
            if ask.concurrency is not None:
                self._slots.setdefault(at, set()).add((flow_id, part))
        return None

    def _blocked(
        self, flow_id: str, part: str, ask: SlotAsk, now: float
    ) -> tuple[str, float | None] | None:
        at = (ask.name, ask.key)
        if ask.concurrency is not None:
            held = sum(
                self._live(holder, now)
                for holder, its in self._slots.get(at, ())
                if (holder, its) != (flow_id, part)
            )
            if held >= ask.concurrency:
                return label(ask.name, ask.key), None
        if ask.interval is not None:
            turn = self._tats.get(at, 0.0) + ask.interval - ask.burst * ask.interval
            if turn > now:
                return label(ask.name, ask.key, rate=True), turn
        return None

    def take_step(
        self, flow_id: str, owner: str, asks: Sequence[tuple[str, SlotAsk]], now: float
    ) -> bool:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is None or row["lease_owner"] != owner or row["lease_expires"] <= now:
                raise LeaseLostError(flow_id, owner)
            return self._took(row, asks, now)

    def _took(self, row: dict[str, Any], asks: Sequence[tuple[str, Any]], now: float) -> bool:
        """Take *asks* for *row*'s lease holder; else mark it blocked, give back its
        slots and drop its lease (``SqlLimits._took``)."""
        blocked = self._take(row["id"], asks, now)
        if blocked is None:
            return True
        self._free_slots(row["id"], now)  # (before its mark: it unblocks others)
        row["blocked_by"], row["blocked_until"] = blocked
        row["fair_key"] = row["fair_key"] or fair_key([a for _, a in asks])
        row["lease_owner"] = row["lease_expires"] = None
        return False

    def give_back_step(self, flow_id: str, part: str, now: float) -> None:
        with self._lock:
            self._give_back(flow_id, now, part)

    def _free_slots(self, flow_id: str, now: float) -> None:
        """*flow_id* parked or ended: its slots go back, each unblocking the next
        flow blocked by its limit and key (highest priority, longest blocked)."""
        self._give_back(flow_id, now, None)

    def _give_back(self, flow_id: str, now: float, part: str | None) -> None:
        for at in sorted(self._slots):
            holders = self._slots[at]
            mine = {h for h in holders if h[0] == flow_id and (part is None or h[1] == part)}
            if not mine:
                continue
            holders -= mine
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
