"""``MemoryStore``: the reference semantics of the store protocol, in dicts under a lock.

It keeps nothing on exit; use it in tests and in ``crux_gen.testing``. This module
is the runner's side (``Store``: leases, commits, signals, cancel); the tables and
the operator's side (``StoreAdmin``) are in ``stores/memory_admin.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
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
)
from crux_gen.limits import ROUNDS, Blocked, Gate
from crux_gen.records import (
    PENDING,
    UNUSED,
    Commit,
    CommitOutcome,
    LeaseCheck,
    StoredFlow,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, STOPPED, Status, after_write, transition

from .base_signals import SignalAsk
from .memory_fork import MemoryFork
from .memory_pause import MemoryPause
from .memory_schedules import MemorySchedules
from .memory_streams import MemoryStreams
from .rules import (
    ITEM_ERRORS,
    RUNNING_OUTCOME,
    awaited_names,
    check_child,
    check_records,
    check_signal_allowed,
    check_write,
    child_cancel_reason,
    in_batch,
    lease_outcome,
    not_due,
    parked,
    recovery_count,
)

WAIT_FIELDS = ("waiting_for", "wait_kind", "wake_at", "deadline")


class MemoryStore(MemoryPause, MemorySchedules, MemoryFork, MemoryStreams):
    """Flows in memory: ``MemoryStore()``, or ``MemoryStore(clock=FakeClock())`` in tests."""

    def __init__(self, *, lease_ttl: Duration = "30s", clock: Clock | None = None) -> None:
        super().__init__(to_duration(lease_ttl, what="lease_ttl"), clock or SYSTEM_CLOCK)

    # -- leases ----------------------------------------------------------------

    def start(
        self, flow_id: str, name: str, input: str, owner: str, now: float, *,
        trace: str | None = None,
    ) -> StoredFlow:  # fmt: skip
        with self._lock:
            row = self._flows.get(flow_id)
            if row is not None:
                if row["name"] != name:
                    raise FlowNameConflictError(flow_id, row["name"], name)
                return self._claim(flow_id, owner, now)
            self._insert(flow_id, name, input, now, owner=owner, trace=trace)
            return self._snapshot(flow_id)

    def claim(
        self,
        flow_id: str,
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
        gate: Gate | None = None,
    ) -> StoredFlow:
        with self._lock:
            self._row(flow_id)
            due = only_if_due or gate is not None
            return self._claim(flow_id, owner, now, only_if_due=due, gate=gate)

    def _claim(
        self,
        flow_id: str,
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
        gate: Gate | None = None,
    ) -> StoredFlow:
        row = self._flows[flow_id]
        if row["status"] in STOPPED:  # finished or paused: not claimed
            if only_if_due:
                raise not_due(flow_id, row["status"])
            found = self._snapshot(flow_id)
            return attrs.evolve(
                found, signals=tuple(s for s in found.signals if s.state == PENDING)
            )
        if row["lease_owner"] not in (None, owner) and row["lease_expires"] > now:
            raise FlowBusyError(flow_id, when(row["lease_expires"]))
        if only_if_due and not self._due_now(row, now):
            raise FlowBusyError(flow_id)  # advanced by another worker since the due query
        self._gate(row, gate, now)
        at = row["claimed_at"]
        recorded = lambda: any(  # noqa: E731 (a record written or resolved since that claim)
            (r.started_at or 0.0) >= at or (r.finished_at or 0.0) >= at
            for r in self._records[flow_id]
        )
        count = recovery_count(row["lease_owner"], at, row["recoveries"], owner, recorded)
        row["recoveries"] = count
        row["lease_owner"], row["claimed_at"] = owner, now
        row["lease_expires"] = now + self.lease_ttl.total_seconds()
        claimed = self._snapshot(flow_id)
        return attrs.evolve(
            claimed, signals=tuple(s for s in claimed.signals if s.state == PENDING)
        )

    def check_leases(self, batch: Sequence[LeaseCheck]) -> list[CommitOutcome | CruxError]:
        outcomes: list[CommitOutcome | CruxError] = []
        with self._lock:
            for flow_id, owner, now in batch:
                try:
                    outcomes.append(self._check_lease(flow_id, owner, now))
                except ITEM_ERRORS as exc:
                    outcomes.append(exc)
        return outcomes

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        with self._lock:  # check_leases of one flow, without building a batch
            return self._check_lease(flow_id, owner, now)

    def _check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        row = self._flows.get(flow_id)
        lease = None
        if row is not None:
            lease = (row["status"], row["lease_owner"], row["cancel_reason"], row["lease_expires"])
        renew = functools.partial(self._renew, flow_id, owner, now)
        return lease_outcome(flow_id, owner, lease, now, renew)

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        with self._lock:
            return self._renew(flow_id, owner, now)

    def _renew(self, flow_id: str, owner: str, now: float) -> bool:
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
            if row["status"] == Status.PAUSED:  # its runner stops: its slots go back
                self._free_slots(flow_id, self.clock.time())

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
        self,
        now: float,
        limit: int,
        owner: str,
        *,
        exclude: Collection[str] = (),
        gate: Gate | None = None,
    ) -> list[StoredFlow]:
        skip = set(exclude)
        claimed: list[StoredFlow] = []
        with self._lock:
            for _ in range(ROUNDS):  # as SqlLimits.claim_due: again when a limit blocked one
                due = [i for i in self._due(now, None) if i not in skip][: limit - len(claimed)]
                skip.update(due)
                blocked = False
                for flow_id in due:
                    try:
                        claimed.append(
                            self._claim(flow_id, owner, now, only_if_due=True, gate=gate)
                        )
                    except Blocked:
                        blocked = True
                    except (FlowBusyError, FlowClosedError):
                        continue
                if not due or not blocked or len(claimed) >= limit:
                    break
        return claimed

    def _commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """``commit`` under the lock: the lease and the refusals first, then the
        records, signals and custom status (``_move`` does the rest)."""
        row = self._flows.get(flow_id)
        if row is None or row["lease_owner"] != owner:
            raise LeaseLostError(flow_id, owner)
        if row["status"] == Status.PAUSED:  # written as to the flow it was, then paused
            return self._commit_paused(row, owner, now, write)
        status = row["status"]
        signals = self._signals[flow_id]
        arrived = self._arrived(flow_id, write) if status not in FINISHED else ()
        if arrived:  # nothing applied: the runner takes one and writes again
            return CommitOutcome(status, signals=arrived)
        records = self._records[flow_id]
        touched = {
            r.position: records[r.position].state
            for r in write.records
            if r.position < len(records)
        }
        check_records(flow_id, touched, len(records), write.records)
        self._check_children(flow_id, write)
        new = None if status in FINISHED else after_write(status, write.status)
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
        self._publish(row, now, write)  # custom status, events, stream writes
        for part in write.free_slots:
            self._give_back(flow_id, now, part)
        if new is None:  # cancelled meanwhile: keep it, drop the lease
            row["lease_owner"] = row["lease_expires"] = None
            return CommitOutcome(status, cancel_reason=row["cancel_reason"])
        moved = self._move(flow_id, row, now, write, new)
        if write.take_slots and not self._took(row, write.take_slots, now):
            return attrs.evolve(moved, blocked=True)
        return moved

    def _arrived(self, flow_id: str, write: Write) -> tuple[StoredSignal, ...]:
        """The pending signals that stop *write* (those it waits for and does not
        itself update)."""
        awaited = awaited_names(write)
        if not awaited:
            return ()
        updated = {update.id for update in write.signals}
        return tuple(
            s
            for s in self._signals[flow_id].values()
            if s.state == PENDING and s.name in awaited and s.id not in updated
        )

    def _move(
        self, flow_id: str, row: dict[str, Any], now: float, write: Write, new: Status
    ) -> CommitOutcome:
        """The rest of ``_commit`` for a flow that goes on: children started, a new
        run, a wait cleared, or a park or an end."""
        for child in write.children:
            if child.flow_id not in self._flows:
                made = self._insert(child.flow_id, child.name, child.input, now, parent_id=flow_id)
                made["trace"] = child.trace
        if write.continue_as_new is not None:
            records = self._records[flow_id]
            self._past[flow_id][row["run"]] = list(records)
            records.clear()
            row.update(
                status=Status.RUNNING.value,
                input=write.continue_as_new,
                run=row["run"] + 1,
                result=None,
                error=None,
                recoveries=0,
                updated_at=now,
            )
            row.update(dict.fromkeys(WAIT_FIELDS))
            return RUNNING_OUTCOME
        if write.status is None:
            if row["status"] != new:  # a resumed flow goes on past its wait
                row.update(status=new.value, recoveries=0, updated_at=now)
                row.update(dict.fromkeys(WAIT_FIELDS))
            return RUNNING_OUTCOME
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
            recoveries=0,
            updated_at=now,
        )
        if new in FINISHED:
            self._mark_unused(flow_id)
            self._wake_parent(row["parent_id"], now)
            self._end_hold(row, now)
        self._free_slots(flow_id, now)
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
            and parked(parent["status"], parent["wait_kind"])
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
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None,
        trace: str | None = None,
    ) -> StoredSignal | None:  # fmt: skip
        with self._lock:
            row = self._row(flow_id)
            signals = self._signals[flow_id]
            if key is not None and any(s.key == key for s in signals.values()):
                return None  # sent before with this key: nothing more is stored
            check_signal_allowed(flow_id, row["status"], row["deadline"], row["waiting_for"], now)
            return self._put_signal(flow_id, name, payload, now, key, trace)

    def add_signals(
        self, signals: Sequence[SignalAsk], now: float, *, trace: str | None = None
    ) -> list[StoredSignal | None]:
        with self._lock:
            fresh: list[bool] = []
            keys: set[tuple[str, str]] = set()  # (flow, key) of this batch
            for index, (flow_id, _name, _payload, key) in enumerate(signals):
                try:
                    row = self._row(flow_id)
                    seen = key is not None and (
                        (flow_id, key) in keys
                        or any(s.key == key for s in self._signals[flow_id].values())
                    )
                    if not seen:
                        status, deadline = row["status"], row["deadline"]
                        check_signal_allowed(flow_id, status, deadline, row["waiting_for"], now)
                except (FlowNotFoundError, FlowClosedError) as exc:
                    raise in_batch(exc, index) from None
                if key is not None:
                    keys.add((flow_id, key))
                fresh.append(not seen)
            return [  # every check passed: all are stored
                self._put_signal(flow_id, name, payload, now, key, trace) if new else None
                for (flow_id, name, payload, key), new in zip(signals, fresh, strict=True)
            ]

    def _put_signal(
        self, flow_id: str, name: str, payload: str, now: float, key: str | None, trace: str | None
    ) -> StoredSignal:
        signal = StoredSignal(
            id=self._next_signal,
            flow_id=flow_id,
            name=name,
            payload=payload,
            state=PENDING,
            created_at=now,
            key=key,
            trace=trace,
        )
        self._next_signal += 1
        self._signals[flow_id][signal.id] = signal
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
        self._end_hold(row, now)
        self._free_slots(row["id"], now)

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

    def close(self) -> None:
        """Nothing to release: a ``MemoryStore`` holds no files."""

    def __repr__(self) -> str:
        ttl = format_duration(self.lease_ttl)
        return f"MemoryStore(flows={len(self._flows)}, lease_ttl={ttl!r})"
