"""``MemoryPause``: pausing and unpausing a flow in a ``MemoryStore``, a runner's
write to a paused flow, and retrying a cancelled flow with the descendants
cancelled with it: the reference semantics of ``stores/sql_pause.py``."""

from __future__ import annotations

from typing import Any

from crux_gen.records import CommitOutcome, StoredRecord, Write
from crux_gen.status import FINISHED, Status, transition, unpause_event

from .memory_limits import MemoryLimits
from .rules import cancelled_with, held, is_limit_block, pause_status


class MemoryPause(MemoryLimits):
    """``MemoryLimits`` with ``pause``, ``unpause`` and the retry of a cancelled tree."""

    def pause(self, flow_id: str, now: float) -> bool:
        with self._lock:
            row = self._row(flow_id)
            new = pause_status(flow_id, row["status"])
            if new is None:
                return False  # paused already: nothing changed
            row.update(status=new.value, updated_at=now)
            if is_limit_block(row["blocked_by"]):
                row["blocked_by"] = row["blocked_until"] = None
            if not held(row["lease_owner"], row["lease_expires"], now):
                self._free_slots(flow_id, now)  # (a runner's: when it lets go)
            return True

    def unpause(self, flow_id: str, now: float) -> bool:
        with self._lock:
            row = self._row(flow_id)
            if row["status"] != Status.PAUSED:
                return False  # not paused: nothing changed
            new = transition(row["status"], paused_event(row))
            row.update(status=new.value, updated_at=now)
            if new == Status.PENDING:
                self._rejoin_queue(row, now)
            return True

    def _rejoin_queue(self, row: dict[str, Any], now: float) -> None:
        """A pending flow queued behind an exclusive key's holder waits for the key's
        holder now (the queue moved on while it was paused), or holds the key."""
        key = row["exclusive_key"]
        if key is None or row["blocked_by"] is None or row["holds"] is not None:
            return
        holder = next((r for r in self._flows.values() if r["holds"] == key), None)
        if holder is None:
            row.update(holds=key, blocked_by=None, wake_at=now)
        else:
            row["blocked_by"] = holder["id"]

    def _commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        raise NotImplementedError  # pragma: no cover - MemoryStore

    def _commit_paused(
        self, row: dict[str, Any], owner: str, now: float, write: Write
    ) -> CommitOutcome:
        """``_commit`` of a paused flow's lease holder: applied as to the flow it
        was (a step, a park, an end), then paused again and its lease dropped."""
        flow_id = row["id"]
        row["status"] = transition(Status.PAUSED, paused_event(row)).value
        try:
            outcome = self._commit(flow_id, owner, now, write)
        except BaseException:
            row["status"] = Status.PAUSED.value  # refused before anything changed
            raise
        if row["status"] in FINISHED:
            return outcome
        row["status"] = Status.PAUSED.value
        if is_limit_block(row["blocked_by"]):
            row["blocked_by"] = row["blocked_until"] = None
        if not outcome.signals:  # written: the runner stops here
            row["lease_owner"] = row["lease_expires"] = None
            self._free_slots(flow_id, now)
        return CommitOutcome(Status.PAUSED.value, signals=outcome.signals)

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        with self._lock:
            cancelled = self._row(flow_id)["status"] == Status.CANCELLED
            dropped = super().retry_failed(flow_id, now)
            if cancelled:
                for row in self._tree(flow_id):
                    if row["status"] == Status.CANCELLED and cancelled_with(
                        flow_id, row["cancel_reason"]
                    ):
                        super().retry_failed(row["id"], now)
            return dropped

    def _tree(self, flow_id: str) -> list[dict[str, Any]]:
        """Rows of *flow_id*'s children, their children, … (top down, each once)."""
        found: list[dict[str, Any]] = []
        level, seen = [flow_id], {flow_id}
        while level:
            level = [c for p in level for c in self._children(p) if c not in seen]
            seen.update(level)
            found += [self._flows[c] for c in level]
        return found


def paused_event(row: dict[str, Any]) -> str:
    """``status.unpause_event`` of a stored row."""
    return unpause_event(row["wait_kind"], row["wake_at"], row["blocked_by"])
