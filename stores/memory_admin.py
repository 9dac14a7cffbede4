"""``MemoryStore``'s tables and its operator's side (the ``StoreAdmin`` protocol).

``MemoryTables`` holds the dicts and what both sides read of them (a flow's
snapshot, its children, which flows are due); ``MemoryAdmin`` adds listings,
retry, delete, prune and ``put_flow``. ``stores/memory.py`` builds
``MemoryStore`` on them with the runner's side (leases, commits, signals,
cancel), as ``SqlAdmin`` and ``SqlStore`` split the SQL stores.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import attrs

from crux_gen.clock import Clock
from crux_gen.errors import FlowNotFoundError, StoreError
from crux_gen.records import (
    PENDING,
    UNRESOLVED,
    UNUSED,
    StoredFlow,
    StoredRecord,
    StoredSchedule,
    StoredSignal,
)
from crux_gen.status import FINISHED, Status

from .base_streams import EventRow, StreamRow
from .browse import MemoryBrowse
from .caps import Caps
from .listing import (
    Before,
    check_before,
    check_prune,
    check_prune_limit,
    check_time,
    check_version,
    in_range,
    version_matches,
)
from .rules import (
    WAIT_ANY,
    any_names,
    deletable,
    flow_exists,
    new_flow,
    pending_due,
    retry_plan,
    retry_status,
)

UNFINISHED = (Status.PENDING, Status.RUNNING, Status.SUSPENDED)


def take_turns(
    found: list[tuple[int, float, str, str]], served: dict[str, int]
) -> list[tuple[int, int, int, float, str]]:
    """Due flows ``(-priority, due, id, fairness key)`` in the order a worker takes
    them (``sql_statements.DUE_ORDER``): higher priority first, then round-robin
    across fairness keys (each key's first flow, then each key's second, …; among
    keys the one *served* longest ago first), then the earliest due."""
    turns: dict[tuple[int, str], int] = {}
    ordered: list[tuple[int, int, int, float, str]] = []
    for rank, due, flow_id, fair in sorted(found, key=lambda f: (f[0], f[1], f[2])):
        turn = turns[rank, fair] = turns.get((rank, fair), 0) + 1
        ordered.append((rank, turn, served.get(fair, 0), due, flow_id))
    ordered.sort()
    return ordered


class MemoryTables:
    """The flows of a ``MemoryStore``, in dicts under one lock, and their reads."""

    def __init__(self, lease_ttl: timedelta, clock: Clock) -> None:
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.caps = Caps(
            where=type(self).__name__,
            counts=True,
            browses=True,
            schedules=True,
            limits=True,
            signals=True,
            forks=True,
            streams=True,
        )
        self._lock = threading.RLock()
        self._flows: dict[str, dict[str, Any]] = {}
        self._records: dict[str, list[StoredRecord]] = {}
        self._signals: dict[str, dict[int, StoredSignal]] = {}
        #: Earlier runs' histories (``continue_as_new``): flow id -> run -> records.
        self._past: dict[str, dict[int, list[StoredRecord]]] = {}
        self._next_signal = 1
        #: fairness key -> when it was last served (a counter; ``fair_turns``).
        self._served: dict[str, int] = {}
        self._schedules: dict[str, StoredSchedule] = {}  # ``memory_schedules.py``
        self._events: dict[str, dict[str, EventRow]] = {}  # ``memory_streams.py``
        self._streams: dict[str, list[StreamRow]] = {}

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

    def _due(self, now: float, limit: int | None) -> list[str]:
        found: list[tuple[int, float, str, str]] = []
        for row in self._flows.values():
            if row["lease_owner"] is not None and row["lease_expires"] > now:
                continue
            status, rank, fair = row["status"], -row["priority"], row["fair_key"] or row["id"]
            until = row["blocked_until"]
            if row["blocked_by"] is not None:  # a limit or an exclusive holder blocks it
                if until is not None and until <= now and status in UNFINISHED:
                    found.append((rank, until, row["id"], fair))  # a rate's turn came
            elif status == Status.RUNNING:
                found.append((rank, row["lease_expires"] or row["updated_at"], row["id"], fair))
            elif status == Status.PENDING and pending_due(row, now):
                found.append((rank, row["wake_at"], row["id"], fair))
            elif status == Status.SUSPENDED and self._wakes(row, now):
                # Ordered as the SQLite store orders them: by the timer when it is
                # due, else (a pending signal) by the last update.
                timer = row["wake_at"]
                key = timer if timer is not None and timer <= now else row["updated_at"]
                found.append((rank, key, row["id"], fair))
        return [flow_id for *_, flow_id in take_turns(found, self._served)[:limit]]

    def _due_now(self, row: dict[str, Any], now: float) -> bool:
        """Whether an unfinished, unheld flow is due: ``_due``'s rule for one flow."""
        if row["status"] == Status.PENDING:
            return pending_due(row, now)
        return row["status"] != Status.SUSPENDED or self._wakes(row, now)

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


class MemoryAdmin(MemoryTables, MemoryBrowse):
    """``MemoryTables`` with the operator's calls (``StoreAdmin``)."""

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: Before = None,
        version: tuple[str, int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFlow]:
        version = check_version(version)
        before = check_before(before)
        if isinstance(before, float):
            before = (before, "")  # strictly older: no id sorts below ""
        with self._lock:
            rows = [
                row
                for row in self._matching(status, name, since, until)
                if (before is None or (row["updated_at"], row["id"]) < before)
                and (version is None or version_matches(self._records[row["id"]], version))
            ]
            rows.sort(key=lambda r: (r["updated_at"], r["id"]), reverse=True)
            return [self._snapshot(r["id"], history=False) for r in rows[:limit]]

    def _matching(
        self, status: str | None, name: str | None, since: float | None, until: float | None
    ) -> list[dict[str, Any]]:
        """The rows that pass the filters ``list_flows`` and ``count`` share."""
        since, until = check_time("since", since), check_time("until", until)
        return [
            row
            for row in self._flows.values()
            if (status is None or row["status"] == status)
            and (name is None or row["name"] == name)
            and in_range(row["updated_at"], since, until)
        ]

    def count(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        with self._lock:
            return len(self._matching(status, name, since, until))

    def wait_records(self, flow_ids: Sequence[str]) -> dict[str, tuple[StoredRecord, ...]]:
        found: dict[str, tuple[StoredRecord, ...]] = {}
        with self._lock:
            for flow_id in dict.fromkeys(flow_ids):
                records = self._records.get(flow_id, ())
                open_ = tuple(r for r in records if r.state in UNRESOLVED)
                if open_:
                    found[flow_id] = open_
        return found

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
            signals = self._signals[flow_id]
            for signal in signals.values():  # what nothing consumed waits again
                if signal.state == UNUSED:
                    signals[signal.id] = signal._replace(state=PENDING)
            row.update(
                status=status.value,
                result=None,
                error=None,
                cancel_reason=None,
                waiting_for=dropped[0].name if dropped else None,
                wait_kind="retry",
                wake_at=now,
                deadline=None,
                lease_owner=None,
                lease_expires=None,
                recoveries=0,
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

    def prune(
        self,
        finished_before: float | None = None,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
    ) -> int:
        before = check_prune(finished_before, status)
        limit = check_prune_limit(limit)
        with self._lock:
            gone = sorted(
                (row["updated_at"], flow_id)
                for flow_id, row in self._flows.items()
                if row["status"] in FINISHED
                and (before is None or row["updated_at"] < before)
                and (status is None or row["status"] == status)
                and (name is None or row["name"] == name)
                and (self._parent(row) or ("", Status.COMPLETED))[1] in FINISHED
            )[:limit]
            for _, flow_id in () if dry_run else gone:
                self._drop(flow_id)
            return len(gone)

    def _parent(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """The ``(id, status)`` of *row*'s parent, if it has one still stored."""
        parent = self._flows.get(row["parent_id"]) if row["parent_id"] is not None else None
        return None if parent is None else (parent["id"], parent["status"])

    def _drop(self, flow_id: str) -> None:
        del self._flows[flow_id], self._records[flow_id], self._signals[flow_id]
        self._past.pop(flow_id, None)
        self._events.pop(flow_id, None)
        self._streams.pop(flow_id, None)

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
