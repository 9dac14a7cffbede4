"""``MemoryStore``: the reference semantics of the store protocol, in dicts under a lock.

It keeps nothing on exit; use it in tests and in ``crux_gen.testing``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

import attrs

from crux_gen.clock import SYSTEM_CLOCK, Clock, when
from crux_gen.durations import Duration, format_duration, to_duration
from crux_gen.errors import (
    CruxError,
    FlowBusyError,
    FlowClosedError,
    FlowNameConflictError,
    FlowNotFoundError,
    LeaseLostError,
    StoreError,
)
from crux_gen.records import (
    PENDING,
    UNUSED,
    Commit,
    CommitOutcome,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, Status, after_write, transition

from .base import (
    ITEM_ERRORS,
    WAIT_ANY,
    Before,
    any_names,
    awaited_names,
    check_before,
    check_child,
    check_records,
    check_signal_allowed,
    check_version,
    check_write,
    child_cancel_reason,
    deletable,
    flow_exists,
    new_flow,
    retry_plan,
    retry_status,
    version_matches,
)

WAIT_FIELDS = ("waiting_for", "wait_kind", "wake_at", "deadline")
_RUNNING = CommitOutcome(Status.RUNNING.value)


class MemoryStore:
    """Flows in memory: ``MemoryStore()``, or ``MemoryStore(clock=FakeClock())`` in tests."""

    def __init__(self, *, lease_ttl: Duration = "30s", clock: Clock | None = None) -> None:
        self.lease_ttl: timedelta = to_duration(lease_ttl, what="lease_ttl")
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._lock = threading.RLock()
        self._flows: dict[str, dict[str, Any]] = {}
        self._records: dict[str, list[StoredRecord]] = {}
        self._signals: dict[str, dict[int, StoredSignal]] = {}
        #: Earlier runs' histories (``continue_as_new``): flow id -> run -> records.
        self._past: dict[str, dict[int, list[StoredRecord]]] = {}
        self._next_signal = 1

    # -- reading ---------------------------------------------------------------

    def _snapshot(
        self, flow_id: str, *, history: bool = True, children: bool = False
    ) -> StoredFlow:
        row = self._flows[flow_id]
        if not history:
            return StoredFlow(**row)
        return StoredFlow(
            **row,
            records=tuple(self._records[flow_id]),
            signals=tuple(self._signals[flow_id].values()),
            children=self._children(flow_id) if children else (),
        )

    def _children(self, flow_id: str) -> tuple[str, ...]:
        """Ids of the flows *flow_id* started, oldest created first (then by id)."""
        found = [
            (row["created_at"], row["id"])
            for row in self._flows.values()
            if row["parent_id"] == flow_id
        ]
        return tuple(child for _, child in sorted(found))

    def _row(self, flow_id: str) -> dict[str, Any]:
        try:
            return self._flows[flow_id]
        except KeyError:
            raise FlowNotFoundError(flow_id) from None

    def load(self, flow_id: str) -> StoredFlow:
        with self._lock:
            self._row(flow_id)
            return self._snapshot(flow_id, children=True)

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: Before = None,
        version: tuple[str, int] | None = None,
    ) -> list[StoredFlow]:
        version = check_version(version)
        before = check_before(before)
        if isinstance(before, float):
            before = (before, "")  # strictly older: no id sorts below ""
        with self._lock:
            rows = [
                row
                for row in self._flows.values()
                if (status is None or row["status"] == status)
                and (name is None or row["name"] == name)
                and (before is None or (row["updated_at"], row["id"]) < before)
                and (version is None or version_matches(self._records[row["id"]], version))
            ]
            rows.sort(key=lambda r: (r["updated_at"], r["id"]), reverse=True)
            return [self._snapshot(r["id"], history=False) for r in rows[:limit]]

    def count_flows(self) -> dict[str, int]:
        """How many flows each status has (statuses with none are left out)."""
        with self._lock:
            counts: dict[str, int] = {}
            for row in self._flows.values():
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            return counts

    def due(self, now: float, limit: int) -> list[str]:
        with self._lock:
            return self._due(now, limit)

    def _due(self, now: float, limit: int | None) -> list[str]:
        found: list[tuple[float, str]] = []
        for row in self._flows.values():
            if row["lease_owner"] is not None and row["lease_expires"] > now:
                continue
            status = row["status"]
            if status == Status.RUNNING:
                found.append((row["lease_expires"] or row["updated_at"], row["id"]))
            elif status == Status.SUSPENDED and self._wakes(row, now):
                # Ordered as the SQLite store orders them: by the timer when it is
                # due, else (a pending signal) by the last update.
                timer = row["wake_at"]
                key = timer if timer is not None and timer <= now else row["updated_at"]
                found.append((key, row["id"]))
        found.sort()
        return [flow_id for _, flow_id in found[:limit]]

    def _wakes(self, row: dict[str, Any], now: float) -> bool:
        """A suspended flow's timer is due, or a signal it waits for is pending."""
        if row["wake_at"] is not None and row["wake_at"] <= now:
            return True
        names: set[str] | None
        if row["wait_kind"] == "suspend":
            names = {row["waiting_for"]}
        elif row["wait_kind"] == WAIT_ANY:
            listed = any_names(row["waiting_for"])
            names = None if listed is None else set(listed)  # unreadable: any name
        else:
            return False  # "child" and timers: by wake_at only
        return any(
            s.state == PENDING and (names is None or s.name in names)
            for s in self._signals[row["id"]].values()
        )

    # -- leases ----------------------------------------------------------------

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is not None:
                if row["name"] != name:
                    raise FlowNameConflictError(flow_id, row["name"], name)
                return self._claim(flow_id, owner, now)
            self._insert(flow_id, name, input, now, owner=owner)
            return self._snapshot(flow_id)

    def _insert(
        self,
        flow_id: str,
        name: str,
        input: str,
        now: float,
        *,
        owner: str | None = None,
        parent_id: str | None = None,
    ) -> None:
        """A new flow ``"running"``: claimed by *owner*, or (a child) unclaimed."""
        self._flows[flow_id] = {
            "id": flow_id,
            "name": name,
            "status": Status.RUNNING.value,
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
        }
        self._records[flow_id] = []
        self._signals[flow_id] = {}
        self._past[flow_id] = {}

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        with self._lock:
            self._row(flow_id)
            return self._claim(flow_id, owner, now, only_if_due=only_if_due)

    def _claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        row = self._flows[flow_id]
        if row["status"] in FINISHED:
            if only_if_due:
                raise FlowClosedError(flow_id, row["status"])
            found = self._snapshot(flow_id)
            return attrs.evolve(
                found, signals=tuple(s for s in found.signals if s.state == PENDING)
            )
        if row["lease_owner"] not in (None, owner) and row["lease_expires"] > now:
            raise FlowBusyError(flow_id, when(row["lease_expires"]))
        if only_if_due and row["status"] == Status.SUSPENDED and not self._wakes(row, now):
            raise FlowBusyError(flow_id)  # advanced by another worker since the due query
        row["lease_owner"] = owner
        row["lease_expires"] = now + self.lease_ttl.total_seconds()
        claimed = self._snapshot(flow_id)
        return attrs.evolve(
            claimed, signals=tuple(s for s in claimed.signals if s.state == PENDING)
        )

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is None or row["lease_owner"] != owner:
                raise LeaseLostError(flow_id, owner)
            if row["lease_expires"] <= now:  # lapsed, and nobody took it: take it again
                row["lease_expires"] = now + self.lease_ttl.total_seconds()
            return CommitOutcome(row["status"], cancel_reason=row["cancel_reason"])

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is None or row["lease_owner"] != owner:
                return False
            row["lease_expires"] = now + self.lease_ttl.total_seconds()
            return True

    def release(self, flow_id: str, owner: str) -> None:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is None or row["lease_owner"] != owner:
                return
            row["lease_owner"] = None
            row["lease_expires"] = None

    # -- writing ---------------------------------------------------------------

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        check_write(flow_id, write)
        with self._lock:
            return self._commit(flow_id, owner, now, write)

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        for item in batch:
            check_write(item.flow_id, item.write)
        outcomes: list[CommitOutcome | CruxError] = []
        with self._lock:  # every check of an item comes before its first change
            for item in batch:
                try:
                    outcomes.append(self._commit(*item))
                except ITEM_ERRORS as exc:
                    outcomes.append(exc)
        return outcomes

    def claim_due(
        self, now: float, limit: int, owner: str, *, exclude: Collection[str] = ()
    ) -> list[StoredFlow]:
        skip = frozenset(exclude)
        claimed: list[StoredFlow] = []
        with self._lock:
            for flow_id in self._due(now, None):
                if len(claimed) >= limit:
                    break
                if flow_id in skip:
                    continue
                try:
                    claimed.append(self._claim(flow_id, owner, now, only_if_due=True))
                except (FlowBusyError, FlowClosedError):
                    continue
        return claimed

    def _commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        row = self._flows.get(flow_id)
        if row is None or row["lease_owner"] != owner:
            raise LeaseLostError(flow_id, owner)
        status = row["status"]
        signals = self._signals[flow_id]
        awaited = awaited_names(write)
        if awaited and status not in FINISHED:
            updated = {update.id for update in write.signals}
            arrived = tuple(
                s
                for s in signals.values()
                if s.state == PENDING and s.name in awaited and s.id not in updated
            )
            if arrived:
                return CommitOutcome(status, signals=arrived)
        records = self._records[flow_id]
        touched = {
            r.position: records[r.position].state
            for r in write.records
            if r.position < len(records)
        }
        check_records(flow_id, touched, len(records), write.records)
        self._check_children(flow_id, write)
        cancelled = status in FINISHED
        new = None if cancelled else after_write(status, write.status)
        for record in write.records:
            if record.position < len(records):
                records[record.position] = record
            else:
                records.append(record)
        for update in write.signals:
            if update.id not in signals:
                continue  # not this flow's: nothing to update (as in SQL)
            signals[update.id] = signals[update.id]._replace(
                state=update.state, error=update.error, position=update.position,
                consumed_at=now,
            )  # fmt: skip
        if write.custom_status is not None:
            row["custom_status"] = write.custom_status
        if new is None:  # cancelled meanwhile: keep it, drop the lease
            row["lease_owner"] = row["lease_expires"] = None
            return CommitOutcome(status, cancel_reason=row["cancel_reason"])
        for child in write.children:
            if child.flow_id not in self._flows:
                self._insert(child.flow_id, child.name, child.input, now, parent_id=flow_id)
        if write.continue_as_new is not None:
            self._past[flow_id][row["run"]] = list(records)
            records.clear()
            row.update(
                status=Status.RUNNING.value,
                input=write.continue_as_new,
                run=row["run"] + 1,
                result=None,
                error=None,
                updated_at=now,
            )
            for field in WAIT_FIELDS:
                row[field] = None
            return _RUNNING
        if write.status is None:
            if status != new:  # a resumed flow goes on past its wait
                row.update(status=new.value, updated_at=now)
                for field in WAIT_FIELDS:
                    row[field] = None
            return _RUNNING
        wake_at = write.wake_at
        if new == Status.SUSPENDED and any(
            self._flows[c]["status"] in FINISHED for c in write.wait_children if c in self._flows
        ):
            wake_at = now if wake_at is None else min(wake_at, now)
        row.update(
            status=new.value,
            result=write.result,
            error=write.error,
            waiting_for=write.waiting_for,
            wait_kind=write.wait_kind,
            wake_at=wake_at,
            deadline=write.deadline,
            lease_owner=None,
            lease_expires=None,
            updated_at=now,
        )
        if new in FINISHED:
            self._mark_unused(flow_id)
            self._wake_parent(row["parent_id"], now)
        return CommitOutcome(new.value)

    def _check_children(self, flow_id: str, write: Write) -> None:
        """Refuse a child whose id is taken (``check_child``)."""
        new: dict[str, tuple[str, str | None]] = {}
        for child in write.children:
            row = self._flows.get(child.flow_id)
            found = (row["name"], row["parent_id"]) if row is not None else new.get(child.flow_id)
            check_child(flow_id, child, found)
            new[child.flow_id] = (child.name, flow_id)

    def _wake_parent(self, parent_id: str | None, now: float) -> None:
        """A child finished: its suspended parent is due at once."""
        parent = self._flows.get(parent_id) if parent_id is not None else None
        if (
            parent is not None
            and parent["status"] == Status.SUSPENDED
            and (parent["wake_at"] is None or parent["wake_at"] > now)
        ):
            parent["wake_at"] = now

    def _mark_unused(self, flow_id: str) -> None:
        """Signals still pending when their flow finishes are kept, marked unused."""
        signals = self._signals[flow_id]
        for signal in signals.values():
            if signal.state == PENDING:
                signals[signal.id] = signal._replace(state=UNUSED)

    def add_signal(
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None
    ) -> StoredSignal | None:
        with self._lock:
            row = self._row(flow_id)
            signals = self._signals[flow_id]
            if key is not None and any(s.key == key for s in signals.values()):
                return None  # sent before with this key: nothing more is stored
            check_signal_allowed(flow_id, row["status"], row["deadline"], row["waiting_for"], now)
            signal = StoredSignal(
                id=self._next_signal,
                flow_id=flow_id,
                name=name,
                payload=payload,
                state=PENDING,
                created_at=now,
                key=key,
            )
            self._next_signal += 1
            signals[signal.id] = signal
            return signal

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        with self._lock:
            row = self._row(flow_id)
            if row["status"] in FINISHED:
                return False
            self._cancel(row, reason, now)
            inherited = child_cancel_reason(flow_id, reason)
            for descendant in self._descendants(flow_id):
                if descendant["status"] not in FINISHED:
                    self._cancel(descendant, inherited, now)
            self._wake_parent(row["parent_id"], now)
            return True

    def _cancel(self, row: dict[str, Any], reason: str, now: float) -> None:
        row.update(
            status=transition(row["status"], "cancel").value,
            cancel_reason=reason,
            wake_at=None,
            updated_at=now,
        )
        self._mark_unused(row["id"])

    def _descendants(self, flow_id: str) -> list[dict[str, Any]]:
        """Rows of *flow_id*'s children, their children, … (each once)."""
        found: list[dict[str, Any]] = []
        seen = {flow_id}
        level = [flow_id]
        while level:
            level = [
                row["id"]
                for row in self._flows.values()
                if row["parent_id"] in level and row["id"] not in seen
            ]
            seen.update(level)
            found.extend(self._flows[i] for i in level)
        return found

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        with self._lock:
            return sorted(f for f in self._flows if f.startswith(prefix))[:limit]

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        with self._lock:
            row = self._row(flow_id)
            status = retry_status(flow_id, row["status"])
            records = self._records[flow_id]
            keep, reset = retry_plan(records)
            dropped = tuple(sorted([*reset[1:], *records[keep:]]))
            del records[keep:]
            for record in reset:
                records[record.position] = record
            row.update(
                status=status.value,
                result=None,
                error=None,
                waiting_for=dropped[0].name if dropped else None,
                wait_kind="retry",
                wake_at=now,
                deadline=None,
                lease_owner=None,
                lease_expires=None,
                updated_at=now,
            )
            return dropped

    def delete(self, flow_id: str) -> bool:
        with self._lock:
            row = self._flows.get(flow_id)
            if row is None:
                return False
            deletable(flow_id, row["status"], self._parent(row))
            self._drop(flow_id)
            return True

    def prune(self, finished_before: float) -> int:
        with self._lock:
            gone = [
                flow_id
                for flow_id, row in self._flows.items()
                if row["status"] in FINISHED
                and row["updated_at"] < finished_before
                and (self._parent(row) or ("", Status.COMPLETED))[1] in FINISHED
            ]
            for flow_id in gone:
                self._drop(flow_id)
            return len(gone)

    def _parent(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """The ``(id, status)`` of *row*'s parent, if it has one still stored."""
        parent = self._flows.get(row["parent_id"]) if row["parent_id"] is not None else None
        return None if parent is None else (parent["id"], parent["status"])

    def _drop(self, flow_id: str) -> None:
        del self._flows[flow_id], self._records[flow_id], self._signals[flow_id]
        self._past.pop(flow_id, None)

    def put_flow(self, flow: StoredFlow) -> None:
        given = new_flow(flow)
        with self._lock:
            if given.id in self._flows:
                raise flow_exists(given.id, "this MemoryStore")
            ids = {s.id for s in given.signals}
            for flow_id, signals in self._signals.items():
                taken = ids.intersection(signals)
                if taken:
                    raise StoreError(
                        f"signal id {min(taken)} of flow {given.id!r} is taken by a signal of "
                        f"flow {flow_id!r}; nothing was written"
                    )
            row = attrs.asdict(given, recurse=False)
            del row["records"], row["signals"], row["children"]
            self._flows[given.id] = row
            self._records[given.id] = list(given.records)
            self._past[given.id] = {}
            self._signals[given.id] = {s.id: s for s in sorted(given.signals)}
            self._next_signal = max(self._next_signal, max(ids, default=0) + 1)

    def close(self) -> None:
        """Nothing to release: a ``MemoryStore`` holds no files."""

    def __repr__(self) -> str:
        ttl = format_duration(self.lease_ttl)
        return f"MemoryStore(flows={len(self._flows)}, lease_ttl={ttl!r})"
