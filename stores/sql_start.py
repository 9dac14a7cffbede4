"""``SqlStart``: creating flows on the SQL stores (``Store.enqueue``: ``Flow.start``'s
pending flows, ``Exclusive``, ``Debounce``) and an exclusive holder's end (the
next queued flow becomes due, in the same transaction).

Race-free across processes by the schema: ``flows_holding`` (one holder per
exclusive key) and ``flows_debounced`` (one pending flow per debounce key) are
unique indexes, and the insert is ``ON CONFLICT DO NOTHING``: a start that loses
a race to another process's start of the same key inserts nothing and looks
again (on PostgreSQL its next statement sees the winner's committed row; SQLite's
``BEGIN IMMEDIATE`` serialises the starts anyway).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from crux_gen.errors import FlowNameConflictError, StoreError
from crux_gen.records import CANCEL, SKIP, Enqueued, NewPending, StoredFlow
from crux_gen.status import Status

from .rules import replaced_reason
from .sql import C
from .sql_limits import SqlLimits
from .sql_publish import notifying
from .sql_statements import FLOW_COLUMNS, Dialect

#: How many times a start looks again after losing a race for its key.
ATTEMPTS = 4


class StartStatements:
    """The statements of ``SqlStart``, in one dialect."""

    def __init__(self, d: Dialect) -> None:
        m = d.mark
        self.INSERT_PENDING = (
            "INSERT INTO flows (id, name, status, input, created_at, updated_at, wake_at, "
            "priority, blocked_by, exclusive_key, holds, debounce_key, debounce_cap, fair_key, "
            f"trace) VALUES ({', '.join([m] * 15)}) ON CONFLICT DO NOTHING"
        )
        self.HOLDER = f"SELECT {FLOW_COLUMNS} FROM flows WHERE holds = {m}" + d.lock()
        self.DEBOUNCED = f"SELECT {FLOW_COLUMNS} FROM flows WHERE debounce_key = {m}" + d.lock()
        self.DEBOUNCE_MOVE = (
            f"UPDATE flows SET input = {m}, wake_at = {m}, priority = {m}, updated_at = {m} "
            f"WHERE id = {m}"
        )
        self.LET_GO = f"UPDATE flows SET debounce_key = NULL WHERE id = {m}"
        # Read at every end of a flow (``_end_hold``): on PostgreSQL it also tells
        # the readers waiting on the flow that it ended (``Dialect.notify``), if
        # it published anything (a NOTIFY serializes commits server-wide: the end
        # of a flow that published nothing is left to the readers' poll).
        published = " OR ".join(
            f"EXISTS (SELECT 1 FROM {table} WHERE flow_id = flows.id)"
            for table in ("events", "streams")
        )
        notify = notifying(d, "flows.id", when=published)
        self.HOLDS = f"SELECT holds{notify} FROM flows WHERE id = {m}"
        self.UNHOLD = f"UPDATE flows SET holds = NULL WHERE id = {m}"
        queued = (
            f"exclusive_key = {m} AND holds IS NULL AND status = 'pending' AND blocked_by = {m}"
        )
        self.NEXT_QUEUED = (
            f"SELECT id FROM flows WHERE {queued} ORDER BY priority DESC, created_at, id LIMIT 1"
            + d.lock()
        )
        self.PROMOTE = (
            f"UPDATE flows SET holds = {m}, blocked_by = NULL, wake_at = {m}, updated_at = {m} "
            f"WHERE id = {m}"
        )
        self.REQUEUE = f"UPDATE flows SET blocked_by = {m} WHERE {queued}"


@functools.cache
def statements(d: Dialect) -> StartStatements:
    return StartStatements(d)


class SqlStart(SqlLimits[C]):
    """``SqlLimits`` with ``enqueue`` and the end of an exclusive hold."""

    def enqueue(self, new: NewPending, now: float) -> Enqueued:
        found = self._atomically(lambda conn: self._enqueue(conn, new, now))
        if found is None:
            raise StoreError(
                f"starting flow {new.flow_id!r} ({new.name}) lost the race for its key "
                f"{ATTEMPTS} times; nothing was stored, try again"
            )
        return found

    def _lock_keys(self, conn: C, keys: Sequence[str]) -> None:
        """Serialize starts of *keys* (PostgreSQL; SQLite's writes are serial)."""

    def _enqueue(self, conn: C, new: NewPending, now: float) -> Enqueued | None:
        sql = statements(self._sql.dialect)
        keys = [k for k in (new.exclusive, new.debounce) if k is not None]
        if keys:
            self._lock_keys(conn, keys)
        for _ in range(ATTEMPTS):
            existing = self._run(conn, self._sql.ROW_LOCKED, (new.flow_id,)).fetchone()
            if existing is not None:
                flow = StoredFlow(*existing)
                if flow.name != new.name:
                    raise FlowNameConflictError(new.flow_id, flow.name, new.name)
                return Enqueued(flow, False)
            due: float | None = now + new.delay
            cap = None
            if new.debounce is not None:
                moved = self._debounced(conn, new, now)
                if moved is not None:
                    return moved
                cap = None if new.max_wait is None else now + new.max_wait
            exclusive, holds, blocked_by = new.exclusive, new.exclusive, None
            if exclusive is not None:
                holder = self._run(conn, sql.HOLDER, (exclusive,)).fetchone()
                if holder is not None:
                    held = StoredFlow(*holder)
                    if new.on_conflict == SKIP:
                        return Enqueued(held, False)
                    if new.on_conflict == CANCEL:
                        self._run(conn, sql.UNHOLD, (held.id,))  # the new flow takes the key
                        self._cancel(conn, held.id, replaced_reason(new.flow_id), now)
                        self._run(conn, sql.REQUEUE, (new.flow_id, exclusive, held.id))
                    else:
                        holds, blocked_by, due = None, held.id, None
            row = (
                new.flow_id, new.name, Status.PENDING.value, new.input, now, now, due,
                new.priority, blocked_by, exclusive, holds, new.debounce, cap, new.fair_key,
                new.trace,
            )  # fmt: skip
            if self._run(conn, sql.INSERT_PENDING, row).rowcount == 1:
                if due is not None:
                    self._announce(conn, new.flow_id)
                return Enqueued(StoredFlow(*self._row(conn, new.flow_id)), True)
        return None  # lost the race every time (another start took the key each time)

    def _debounced(self, conn: C, new: NewPending, now: float) -> Enqueued | None:
        """A start of a ``Debounce`` key: the pending, unclaimed flow of that key
        takes the new input and due time (never past its cap); one that was
        claimed or went on since lets go of the key (a new flow is created)."""
        sql = statements(self._sql.dialect)
        found = self._run(conn, sql.DEBOUNCED, (new.debounce,)).fetchone()
        if found is None:
            return None
        flow = StoredFlow(*found)
        held = flow.lease_owner is not None and (flow.lease_expires or 0.0) > now
        if flow.status != Status.PENDING or held:
            self._run(conn, sql.LET_GO, (flow.id,))
            return None
        due = now + new.delay
        if flow.debounce_cap is not None:
            due = min(due, flow.debounce_cap)
        self._run(conn, sql.DEBOUNCE_MOVE, (new.input, due, new.priority, now, flow.id))
        return Enqueued(StoredFlow(*self._row(conn, flow.id)), False)

    def _end_hold(self, conn: C, flow_id: str, now: float) -> None:
        sql = statements(self._sql.dialect)
        found: Any = self._run(conn, sql.HOLDS, (flow_id,)).fetchone()
        if found is None or found[0] is None:
            return
        key = found[0]
        self._run(conn, sql.UNHOLD, (flow_id,))
        queued = self._run(conn, sql.NEXT_QUEUED, (key, flow_id)).fetchone()
        if queued is None:
            return
        self._run(conn, sql.PROMOTE, (key, now, now, queued[0]))
        self._run(conn, sql.REQUEUE, (queued[0], key, flow_id))
        self._announce(conn, queued[0])
