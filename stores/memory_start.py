"""``MemoryStart``: creating flows in a ``MemoryStore``, the reference semantics of
``Store.enqueue`` (``Flow.start``: pending flows, ``Exclusive``, ``Debounce``)
and of an exclusive holder's end (the next queued flow becomes due)."""

from __future__ import annotations

from typing import Any

from crux_gen.errors import FlowNameConflictError
from crux_gen.records import CANCEL, SKIP, Enqueued, NewPending
from crux_gen.status import Status

from .memory_admin import MemoryAdmin
from .rules import replaced_reason


class MemoryStart(MemoryAdmin):
    """``MemoryAdmin`` with the creation of flows (``_insert``, ``enqueue``)."""

    def _insert(
        self,
        flow_id: str,
        name: str,
        input: str,
        now: float,
        *,
        owner: str | None = None,
        parent_id: str | None = None,
        status: Status = Status.RUNNING,
        **fields: Any,
    ) -> dict[str, Any]:
        """A new flow ``"running"``: claimed by *owner*, or (a child) unclaimed;
        a pending one (``Flow.start``) with its *fields* (``priority`` …)."""
        self._flows[flow_id] = {
            "id": flow_id,
            "name": name,
            "status": status.value,
            "input": input,
            "created_at": now,
            "updated_at": now,
            "result": None,
            "error": None,
            "cancel_reason": None,
            "waiting_for": None,
            "wait_kind": None,
            "wake_at": None,
            "deadline": None,
            "lease_owner": owner,
            "lease_expires": None if owner is None else now + self.lease_ttl.total_seconds(),
            "parent_id": parent_id,
            "run": 1,
            "custom_status": None,
            "priority": 0,
            "blocked_by": None,
            "exclusive_key": None,
            "holds": None,
            "debounce_key": None,
            "debounce_cap": None,
            "blocked_until": None,
            "fair_key": None,
            "trace": None,
        }
        self._flows[flow_id].update(fields)
        self._records[flow_id] = []
        self._signals[flow_id] = {}
        self._past[flow_id] = {}
        return self._flows[flow_id]

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        raise NotImplementedError  # MemoryStore's

    def enqueue(self, new: NewPending, now: float) -> Enqueued:
        with self._lock:
            row = self._flows.get(new.flow_id)
            if row is not None:
                if row["name"] != new.name:
                    raise FlowNameConflictError(new.flow_id, row["name"], new.name)
                return Enqueued(self._snapshot(new.flow_id), False)
            fields: dict[str, Any] = {
                "priority": new.priority,
                "wake_at": now + new.delay,
                "fair_key": new.fair_key,
                "trace": new.trace,
            }
            if new.debounce is not None:
                found = self._debounced(new, now)
                if found is not None:
                    return found
                cap = None if new.max_wait is None else now + new.max_wait
                fields.update(debounce_key=new.debounce, debounce_cap=cap)
            if new.exclusive is not None:
                holder = next(
                    (r for r in self._flows.values() if r["holds"] == new.exclusive), None
                )
                if holder is not None and new.on_conflict == SKIP:
                    return Enqueued(self._snapshot(holder["id"]), False)
                fields["exclusive_key"] = new.exclusive
                if holder is None or new.on_conflict == CANCEL:
                    fields["holds"] = new.exclusive
                else:
                    fields.update(blocked_by=holder["id"], wake_at=None)
                if holder is not None and new.on_conflict == CANCEL:
                    holder["holds"] = None  # the new flow takes the key, not a queued one
                    self.cancel(holder["id"], replaced_reason(new.flow_id), now)
                    self._requeue(new.exclusive, holder["id"], new.flow_id)
            self._insert(new.flow_id, new.name, new.input, now, status=Status.PENDING, **fields)
            return Enqueued(self._snapshot(new.flow_id), True)

    def _debounced(self, new: NewPending, now: float) -> Enqueued | None:
        """A start of a ``Debounce`` key: the pending, unclaimed flow of that key
        takes the new input and due time (never past its cap); one that was
        claimed or went on since lets go of the key (a new flow is created)."""
        row = next((r for r in self._flows.values() if r["debounce_key"] == new.debounce), None)
        if row is None:
            return None
        held = row["lease_owner"] is not None and row["lease_expires"] > now
        if row["status"] != Status.PENDING or held:
            row["debounce_key"] = None
            return None
        due = now + new.delay
        if row["debounce_cap"] is not None:
            due = min(due, row["debounce_cap"])
        row.update(input=new.input, wake_at=due, priority=new.priority, updated_at=now)
        return Enqueued(self._snapshot(row["id"]), False)

    def _end_hold(self, row: dict[str, Any], now: float) -> None:
        """*row* finished: if it held an exclusive key, the oldest queued flow of
        that key (highest priority first) holds it now and is due at once."""
        key, row["holds"] = row["holds"], None
        if key is None:
            return
        queued = [
            r
            for r in self._flows.values()
            if r["exclusive_key"] == key
            and r["holds"] is None
            and r["status"] == Status.PENDING
            and r["blocked_by"] == row["id"]
        ]
        if not queued:
            return
        first = min(queued, key=lambda r: (-r["priority"], r["created_at"], r["id"]))
        first.update(holds=key, blocked_by=None, wake_at=now, updated_at=now)
        self._requeue(key, row["id"], first["id"])

    def _requeue(self, key: str, old: str, new: str) -> None:
        """The flows queued behind holder *old* wait for *new* now."""
        for r in self._flows.values():
            if (
                r["exclusive_key"] == key
                and r["holds"] is None
                and r["status"] == Status.PENDING
                and r["blocked_by"] == old
            ):
                r["blocked_by"] = new
