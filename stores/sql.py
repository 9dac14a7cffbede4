"""``SqlStore``: the one SQL core of ``SQLiteStore`` and ``PostgresStore``.

Every method of the ``Store`` protocol is written here once, over the statements
of the store's dialect (``sql_statements.Statements``) and a few connection
hooks each store defines (``_run``, ``_write``, ``_atomically`` …: its
connector). What differs stays in ``sqlite.py`` and ``postgres.py``: opening
connections, migrations, and PostgreSQL's row-lock order (``_lock_flows``) and
wake-ups (``_announce``). The hooks are methods of the store itself, so a test
that wraps ``store._run`` sees every statement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from crux_gen.clock import Clock, when
from crux_gen.errors import (
    CruxError,
    FlowBusyError,
    FlowNameConflictError,
    FlowNotFoundError,
    LeaseLostError,
)
from crux_gen.gcpause import paused_gc
from crux_gen.limits import Blocked, Gate
from crux_gen.records import (
    Commit,
    CommitOutcome,
    LeaseCheck,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, STOPPED, Status, after_write

from . import segments
from .caps import Caps
from .rules import (
    ITEM_ERRORS,
    RUNNING_OUTCOME,
    awaited_names,
    check_child,
    check_records,
    check_signal_allowed,
    check_write,
    lease_outcome,
    not_due,
    pending_due,
)
from .sql_publish import publish
from .sql_statements import Statements, leased

_T = TypeVar("_T")
#: A connection of the store's database driver.
C = TypeVar("C")


class SqlStore(Generic[C]):
    """The ``Store`` protocol over SQL; a subclass names its ``_sql`` statements
    and defines the connection hooks below."""

    _sql: ClassVar[Statements]
    clock: Clock
    lease_ttl: timedelta
    caps: Caps
    _ttl: float

    # -- the connector: each store's own -----------------------------------------

    def _run(self, conn: C, query: str, params: Any = ()) -> Any:
        """Run one statement on *conn*; its cursor."""
        raise NotImplementedError

    def _run_many(self, conn: C, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""
        for row in rows:
            self._run(conn, query, row)

    def _write(self) -> AbstractContextManager[C]:
        """A connection in one write transaction, committed at the end."""
        raise NotImplementedError

    def _atomically(self, body: Callable[[C], _T]) -> _T:
        """``body(conn)`` in one write transaction (run again where the database
        aborted it to break a deadlock)."""
        with self._write() as conn:
            return body(conn)

    def _snapshot(self) -> AbstractContextManager[C]:
        """A connection reading one consistent state (``load``)."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[C]:
        """A connection for a claim's history (only the lease holder writes it)."""
        raise NotImplementedError

    def _all(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """One read statement outside a transaction: its rows."""
        raise NotImplementedError

    def _execute(self, query: str, params: Any) -> int:
        """One write statement in a transaction of its own: how many rows it changed."""
        raise NotImplementedError

    def _lease_write(self) -> AbstractContextManager[C]:
        """A transaction changing leases only (a claim): ``SQLiteStore`` spares its fsync."""
        return self._write()

    def _put_fenced(self, conn: C | None, params: tuple[Any, ...]) -> bool:
        """A step's fenced record, in *conn*'s transaction or its own: whether it went in."""
        if conn is None:
            return self._execute(self._sql.PUT_RECORD_FENCED, params) == 1
        return bool(self._run(conn, self._sql.PUT_RECORD_FENCED, params).rowcount == 1)

    def _savepoint(self, conn: C) -> AbstractContextManager[object]:
        """Nothing of the block stays when it raises."""
        raise NotImplementedError

    def _lock_flows(self, conn: C, flow_ids: Sequence[str]) -> None:
        """Lock *flow_ids* and their parents, by id, before changing them."""

    def _announce(self, conn: C, flow_id: str) -> None:
        """Tell idle workers *flow_id* may be due (delivered at commit)."""

    def _gate(self, conn: C, flow: StoredFlow, gate: Gate | None, now: float) -> None:
        """Take *flow*'s limits before its claim, else block it (``SqlLimits``)."""

    def _free_slots(self, conn: C, flow_id: str, now: float) -> None:
        """*flow_id* parked or ended: its limits' slots go back (``SqlLimits``)."""

    def _took(self, conn: C, flow_id: str, asks: Sequence[tuple[str, Any]], now: float) -> bool:
        """A write's ``take_slots``, else the flow blocked and let go (``SqlLimits``)."""
        raise NotImplementedError  # pragma: no cover - SqlLimits

    def _passed_on(self, flow_id: str, owner: str, write: Write) -> bool:
        return False  # a limited step's record and slots passed on (``SqlLimits``)

    def _give_back_part(self, conn: C, flow_id: str, part: str, takes: Any = ()) -> Any:
        return takes  # a step's slots back, or to *takes*: the asks left (``SqlLimits``)

    def _end_hold(self, conn: C, flow_id: str, now: float) -> None:
        """*flow_id* finished: the exclusive key it held goes to the next queued
        flow, due at once (``SqlStart``)."""

    # -- reading -------------------------------------------------------------------

    def _row(self, conn: C, flow_id: str, query: str | None = None) -> tuple[Any, ...]:
        row = self._run(conn, query or self._sql.ROW, (flow_id,)).fetchone()
        if row is None:
            raise FlowNotFoundError(flow_id)
        return tuple(row)

    def _history(self, conn: C, row: tuple[Any, ...], *, lean: bool) -> StoredFlow:
        """The flow of *row* with its records and signals: what a claim needs when
        *lean*, else all of them and its children (``load``)."""
        sql, flow_id = self._sql, row[0]
        found = self._segment_history(conn, flow_id) if lean else None
        if found is None:
            query = sql.LEAN_RECORDS if lean else sql.RECORDS
            found = tuple(map(StoredRecord._make, self._run(conn, query, (flow_id,)).fetchall()))
        signals = self._run(conn, sql.PENDING_SIGNALS if lean else sql.SIGNALS, (flow_id,))
        children: tuple[str, ...] = ()
        if not lean:
            children = tuple(r[0] for r in self._run(conn, sql.CHILDREN, (flow_id,)).fetchall())
        return StoredFlow(  # type: ignore[misc]
            *row,
            records=found,
            signals=tuple(map(StoredSignal._make, signals.fetchall())),
            children=children,
        )

    def _segment_history(self, conn: C, flow_id: str) -> tuple[StoredRecord, ...] | None:
        """A claim's history from the flow's segment and the records after it, or
        ``None`` (no segment, or one that does not add up: read the rows)."""
        segment = self._run(conn, self._sql.SEGMENT_READ, (flow_id,)).fetchone()
        if segment is None or type(segment[0]) is not int or segment[0] < 1:
            return None
        tail = self._run(conn, self._sql.SEGMENT_TAIL, (flow_id, segment[0] - 1)).fetchall()
        count, meta, results, crc = segment
        return segments.history(count, meta, results, crc, list(map(StoredRecord._make, tail)))

    def _write_segment(self, conn: C, flow_id: str) -> None:
        """On a park: rewrite the flow's segment when its completed prefix grew
        enough (``segments.rebuild_due``), in the park's transaction."""
        sql = self._sql
        covered, prefix = self._run(conn, sql.SEGMENT_PREFIX, {"flow": flow_id}).fetchone()
        if prefix < covered:  # records dropped under it (never by this store): redo
            self._run(conn, sql.DELETE_SEGMENT, (flow_id,))
            covered = 0
        if segments.rebuild_due(covered, prefix):
            built = self._run(conn, sql.SEGMENT_BUILD, {"flow": flow_id, "stop": prefix})
            count, meta, results = built.fetchone()
            crc = segments.checksum(meta, results)
            self._run(conn, sql.SEGMENT_PUT, (flow_id, count, meta, results, crc))

    def load(self, flow_id: str) -> StoredFlow:
        with self._snapshot() as conn:
            return self._history(conn, self._row(conn, flow_id), lean=False)

    # -- leases --------------------------------------------------------------------

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float, *,
              trace: str | None = None) -> StoredFlow:  # fmt: skip
        expires = now + self._ttl
        with self._write() as conn:
            params = (flow_id, name, input, now, now, owner, expires, trace, now)
            if self._run(conn, self._sql.INSERT_FLOW, params).rowcount == 1:
                return StoredFlow(
                    flow_id, name, Status.RUNNING.value, input, now, now,
                    lease_owner=owner, lease_expires=expires, trace=trace, claimed_at=now,
                )  # fmt: skip
            row = self._row(conn, flow_id, self._sql.ROW_LOCKED)
            if row[1] != name:
                raise FlowNameConflictError(flow_id, row[1], name)
            row = self._claim(conn, row, owner, now)
        return self._claimed([row])[0]

    def claim(
        self,
        flow_id: str,
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
        gate: Gate | None = None,
    ) -> StoredFlow:
        sql, blocked = self._sql, None
        with self._lease_write() as conn:
            query = sql.ROW_SKIP_LOCKED if only_if_due else sql.ROW_LOCKED
            found = self._run(conn, query, (flow_id,)).fetchone()
            if found is None:
                if only_if_due and self._run(conn, sql.EXISTS, (flow_id,)).fetchone():
                    raise FlowBusyError(flow_id)  # another worker is claiming it right now
                raise FlowNotFoundError(flow_id)
            try:
                row = self._claim(
                    conn, tuple(found), owner, now, only_if_due=only_if_due, gate=gate
                )
            except Blocked as exc:
                blocked = exc  # raised once the mark that it is blocked is committed
        if gate is not None and blocked is not None:
            raise blocked
        return self._claimed([row])[0]

    def _claimed(self, rows: list[tuple[Any, ...]]) -> list[StoredFlow]:
        # Read after the claim's write transaction, so a long history never holds
        # it: only the lease holder writes records, so nothing moves meanwhile.
        if not rows:
            return []
        # A batch's histories in one read transaction (PostgreSQL: one, not three
        # per flow in autocommit); one flow's, statement by statement.
        with self._snapshot() if len(rows) > 1 else self._reading() as conn, paused_gc():
            return [self._history(conn, row, lean=True) for row in rows]

    def _claim(
        self,
        conn: C,
        row: tuple[Any, ...],
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
        gate: Gate | None = None,
    ) -> tuple[Any, ...]:
        """Take the lease of the (locked) *row*; the row with the new lease. With
        *gate* (a due flow of ``claim_due``), its limits first."""
        if gate is not None:
            only_if_due = True
        flow = StoredFlow(*row)
        if flow.status in STOPPED:  # finished or paused: not claimed
            if only_if_due:
                raise not_due(flow.id, flow.status)
            return row
        if flow.lease_owner not in (None, owner) and (flow.lease_expires or 0.0) > now:
            raise FlowBusyError(flow.id, when(flow.lease_expires))
        if only_if_due and (
            not pending_due(flow, now)
            if flow.status == Status.PENDING
            else flow.status == Status.SUSPENDED
            and self._run(conn, self._sql.WAKES, {"flow": flow.id, "now": now}).fetchone() is None
        ):
            raise FlowBusyError(flow.id)  # advanced by another worker since the due query
        self._gate(conn, flow, gate, now)
        expires = now + self._ttl
        taken = self._run(conn, self._sql.TAKE_LEASE, (owner, expires, now, owner, flow.id))
        return leased(row, owner, expires, taken.fetchall()[0][0], now)

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        return self._execute(self._sql.RENEW, (now + self._ttl, flow_id, owner)) == 1

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        # check_leases of one flow, read on this thread's own connection (a runner
        # alone: the one that wrote its last step, whose page cache is current).
        rows = self._all(self._sql.LEASE_CHECK, (flow_id,))
        renew = functools.partial(self.renew, flow_id, owner, now)
        return lease_outcome(flow_id, owner, rows[0] if rows else None, now, renew)

    def check_leases(self, batch: Sequence[LeaseCheck]) -> list[CommitOutcome | CruxError]:
        if not batch:
            return []
        rows = self.lease_rows(list(dict.fromkeys(check.flow_id for check in batch)))
        outcomes: list[CommitOutcome | CruxError] = []
        for flow_id, owner, now in batch:
            renew = functools.partial(self.renew, flow_id, owner, now)
            try:
                outcomes.append(lease_outcome(flow_id, owner, rows.get(flow_id), now, renew))
            except ITEM_ERRORS as exc:
                outcomes.append(exc)
        return outcomes

    def lease_rows(self, flow_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """The ``(status, lease_owner, cancel_reason, lease_expires)`` of each flow
        of *flow_ids* that exists, in one read (``check_leases``)."""
        if not flow_ids:
            return {}
        if len(flow_ids) == 1:
            found = self._all(self._sql.LEASE_ROW, (flow_ids[0],))
        else:
            found = self._all(self._sql.LEASE_ROWS, (self._sql.dialect.as_list(flow_ids),))
        return {row[0]: tuple(row[1:]) for row in found}

    def release(self, flow_id: str, owner: str) -> None:
        self._execute(self._sql.RELEASE, (flow_id, owner))

    # -- writing -------------------------------------------------------------------

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        if write.is_step:
            # The hot path, a step's result: one fenced statement, one commit.
            fenced = self._sql.fenced(flow_id, owner, write.records[0])
            if self._put_fenced(None, fenced):
                return RUNNING_OUTCOME
            # Lost lease, cancelled, waking, or a conflict: the full write decides.
        elif write.is_limited_step and self._passed_on(flow_id, owner, write):
            return RUNNING_OUTCOME
        check_write(flow_id, write)

        def apply(conn: C) -> CommitOutcome:
            if write.status is not None or write.children:
                self._lock_flows(conn, [flow_id])  # with its parent, which its end wakes
            return self._apply(conn, flow_id, owner, now, write)

        return self._atomically(apply)

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        for item in batch:
            check_write(item.flow_id, item.write)
        return self._atomically(lambda conn: self._commit_many(conn, batch))

    def _commit_many(self, conn: C, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        """``commit_many`` in the caller's transaction (one transaction, one flush)."""
        if len(batch) > 1:  # every row it may change, first, by id
            self._lock_flows(conn, [item.flow_id for item in batch])
        outcomes: list[CommitOutcome | CruxError] = []
        for flow_id, owner, now, write in batch:
            if write.is_step:
                fenced = self._sql.fenced(flow_id, owner, write.records[0])
                if self._put_fenced(conn, fenced):
                    outcomes.append(RUNNING_OUTCOME)
                    continue
            if len(batch) == 1 and (write.status is not None or write.children):
                self._lock_flows(conn, [flow_id])
            try:
                with self._savepoint(conn):  # a refused item leaves nothing
                    outcomes.append(self._apply(conn, flow_id, owner, now, write))
            except ITEM_ERRORS as exc:
                outcomes.append(exc)
        return outcomes

    def _apply(self, conn: C, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """``commit`` inside the caller's transaction: the lease and the refusals
        first, then the records, signals and custom status."""
        sql, records = self._sql, write.records
        row = self._run(conn, sql.LEASE_CHECK_LOCKED, (flow_id,)).fetchone()
        if row is None or row[1] != owner:
            raise LeaseLostError(flow_id, owner)
        status = row[0]
        finished = status in FINISHED
        awaited = awaited_names(write)
        if awaited and not finished:
            updated = {update.id for update in write.signals}
            named = (flow_id, sql.dialect.as_list(awaited))
            arrived = [
                signal
                for signal in self._run(conn, sql.PENDING_NAMED, named).fetchall()
                if signal[0] not in updated
            ]
            if arrived:  # nothing applied: the runner takes one and writes again
                return CommitOutcome(status, signals=tuple(map(StoredSignal._make, arrived)))
        if records:
            self._check_records(conn, flow_id, records)
        if write.children:
            self._check_children(conn, flow_id, write)
        new = None if finished else after_write(status, write.status)
        self._run_many(conn, sql.PUT_RECORD, [(flow_id, *r) for r in records])
        self._run_many(
            conn,
            sql.SIGNAL_UPDATE,
            [(s.state, s.error, s.position, now, flow_id, s.id) for s in write.signals],
        )
        publish(self, conn, flow_id, now, write)  # custom status, events, stream writes
        takes = write.take_slots if new is not None else ()
        for part in write.free_slots:  # (a slot the next step asks for passes to it)
            takes = self._give_back_part(conn, flow_id, part, takes)
        if new is None:  # cancelled meanwhile: keep it, drop the lease
            self._run(conn, sql.DROP_LEASE, (flow_id,))
            return CommitOutcome(status, cancel_reason=row[2])
        moved = self._move(conn, flow_id, now, write, status, new)
        if takes and not self._took(conn, flow_id, takes, now):
            return attrs.evolve(moved, blocked=True)
        return moved

    def _move(
        self, conn: C, flow_id: str, now: float, write: Write, status: str, new: Status
    ) -> CommitOutcome:
        """The rest of ``_apply`` for a flow that goes on: children started, a new
        run, a wait cleared, or a park or an end."""
        sql = self._sql
        for child in write.children:  # those stored already are left as they are
            row = (child.flow_id, child.name, child.input, now, now, flow_id, child.trace)
            if self._run(conn, sql.INSERT_CHILD, row).fetchone() is None:  # taken since
                check_child(flow_id, child, self._run(conn, sql.FLOW_NAME, row[:1]).fetchone())
        if write.continue_as_new is not None:
            run = self._run(conn, sql.CURRENT_RUN, (flow_id,)).fetchone()[0]
            self._run(conn, sql.KEEP_PAST_RUN, {"run": run, "flow": flow_id})
            self._run(conn, sql.DELETE_RECORDS, (flow_id,))
            self._run(conn, sql.DELETE_SEGMENT, (flow_id,))
            self._run(conn, sql.NEW_RUN, (write.continue_as_new, now, flow_id))
            return RUNNING_OUTCOME
        if write.status is None:
            if new != status:  # a resumed flow goes on past its wait
                self._run(conn, sql.WAIT_CLEARED, (new.value, now, flow_id))
            return RUNNING_OUTCOME
        wake_at = write.wake_at
        if new == Status.SUSPENDED and write.wait_children:
            children = (sql.dialect.as_list(list(dict.fromkeys(write.wait_children))),)
            if self._run(conn, sql.ANY_FINISHED, children).fetchone() is not None:
                wake_at = now if wake_at is None else min(wake_at, now)
        self._run(
            conn,
            sql.PARK,
            (
                new.value, write.result, write.error, write.waiting_for,
                write.wait_kind, wake_at, write.deadline, now, flow_id,
            ),
        )  # fmt: skip
        if new in FINISHED:
            self._run(conn, sql.UNUSED, (flow_id,))
            self._wake_parent(conn, flow_id, now)
            self._end_hold(conn, flow_id, now)
        else:
            self._write_segment(conn, flow_id)
        self._free_slots(conn, flow_id, now)
        return CommitOutcome(new.value)

    def _check_children(self, conn: C, flow_id: str, write: Write) -> None:
        """Refuse a child whose id is taken (``check_child``)."""
        new: dict[str, tuple[str, str | None]] = {}
        for child in write.children:
            found = self._run(conn, self._sql.FLOW_NAME, (child.flow_id,)).fetchone()
            check_child(flow_id, child, (found[0], found[1]) if found else new.get(child.flow_id))
            new[child.flow_id] = (child.name, flow_id)

    def _check_records(self, conn: C, flow_id: str, records: tuple[StoredRecord, ...]) -> None:
        sql = self._sql
        positions = sql.dialect.as_list(sorted({r.position for r in records}))
        existing = dict(self._run(conn, sql.RECORD_STATES, (flow_id, positions)).fetchall())
        last = self._run(conn, sql.LAST_POSITION, (flow_id,)).fetchone()[0]
        check_records(flow_id, existing, 0 if last is None else last + 1, records)

    def _wake_parent(self, conn: C, flow_id: str, now: float) -> None:
        """*flow_id* finished: its suspended parent (if any) is due at once, and
        workers listening are told."""
        woken = self._run(conn, self._sql.WAKE_PARENT, {"now": now, "flow": flow_id}).fetchall()
        if woken:
            self._announce(conn, woken[0][0])

    def add_signal(self, flow_id: str, name: str, payload: str, now: float, *,
                   key: str | None = None, trace: str | None = None
    ) -> StoredSignal | None:  # fmt: skip
        sql = self._sql
        with self._write() as conn:
            row = self._run(conn, sql.SIGNAL_FLOW_ROW, (flow_id,)).fetchone()
            if row is None:
                raise FlowNotFoundError(flow_id)
            if key is not None and self._run(conn, sql.SIGNAL_KEY_SEEN, (flow_id, key)).fetchone():
                return None  # sent before with this key: nothing more is stored
            check_signal_allowed(flow_id, row[0], row[1], row[2], now)
            inserted = self._run(conn, sql.INSERT_SIGNAL, (flow_id, name, payload, now, key, trace))
            signal_id = int(inserted.fetchall()[0][0])
            self._announce(conn, flow_id)
        return StoredSignal(signal_id, flow_id, name, payload, "pending", now, key=key, trace=trace)
