"""``SQLiteStore``: the embedded default, one file, WAL, no server.

- A connection per thread and per process, opened lazily, so one store object
  can be shared by a WSGI app's request threads and used in children forked
  after it was created (a child never touches its parent's connection).
- Every write is one ``BEGIN IMMEDIATE`` transaction; a live step costs exactly
  one (its record, fenced by the lease check). A resume reads the whole history
  in the claim's one transaction.
- ``synchronous="FULL"`` (default): each commit is fsync'd, so a recorded step
  survives a power cut. ``"NORMAL"``: in WAL mode a commit survives a crash of
  the process, but a power cut or OS crash may lose the last few commits.
- Tables are created on first open and migrated by ``PRAGMA user_version``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
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
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    StoreBusyError,
    StoreError,
    StoreSchemaError,
)
from crux_gen.records import (
    PENDING,
    Commit,
    CommitOutcome,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, Status, after_write

from . import segments
from . import sqlite_schema as sql
from .base import (
    ITEM_ERRORS,
    WAIT_ANY,
    Before,
    any_names,
    awaited_names,
    check_child,
    check_records,
    check_signal_allowed,
    check_write,
    child_cancel_reason,
    deletable,
    flow_exists,
    lease_outcome,
    listing_query,
    new_flow,
    retry_plan,
    retry_status,
)

# This process's id, kept current across forks (os.getpid() is a system call).
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))

# Connections inherited from a parent process: never used, never closed (closing
# one in a child could checkpoint or unlink the parent's WAL files).
_INHERITED: list[sqlite3.Connection] = []


_RUNNING = CommitOutcome(Status.RUNNING.value)


class SQLiteStore:
    """Flows in one SQLite file: ``SQLiteStore("crux.db")``.

    ``lease_ttl`` is how long a crashed runner keeps a flow; ``synchronous`` is
    ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives a process crash,
    several times faster). ``clock`` is for tests (``FakeClock``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease_ttl: Duration = "30s",
        synchronous: str = "FULL",
        clock: Clock | None = None,
        busy_timeout: Duration = "30s",
    ) -> None:
        mode = synchronous.upper() if isinstance(synchronous, str) else None
        if mode not in sql.SYNCHRONOUS_MODES:
            raise InvalidValueError(
                "SQLiteStore synchronous",
                synchronous,
                'must be "FULL" (survives power loss) or "NORMAL" (survives a process crash)',
            )
        if not isinstance(path, str | os.PathLike):
            raise InvalidTypeError(
                "SQLiteStore path", path, "is not a str or path; give a file path"
            )
        self.path = os.fspath(path)
        self.synchronous = mode
        self.lease_ttl: timedelta = to_duration(lease_ttl, what="lease_ttl")
        self.busy_timeout = to_duration(busy_timeout, what="busy_timeout").total_seconds()
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None  # see lease_rows
        self._shared_pid = -1
        self._shared_lock = threading.Lock()
        self._ttl = self.lease_ttl.total_seconds()
        self._conn()  # create or migrate the schema now, so errors show here

    # -- connections ---------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        pid = _PID[0]
        if conn is not None:
            if local.pid == pid:
                return conn
            _INHERITED.append(conn)
        conn = self._open()
        local.conn, local.pid = conn, pid
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open {self.path!r} as a SQLite store: {exc}; check that the directory "
                "exists and is writable, and that the file is a SQLite database"
            ) from exc
        if str(mode).lower() != "wal" and self.path != ":memory:":
            raise StoreSchemaError(f"{self.path!r}: could not switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._migrate(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == sql.SCHEMA_VERSION:
            return
        self._begin(conn)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"{self.path!r} has schema version {version}, newer than this crux_gen "
                    f"knows ({sql.SCHEMA_VERSION}); upgrade crux-gen"
                )
            if (
                version == 0
                and conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'flows'"
                ).fetchone()[0]
            ):
                raise StoreSchemaError(f"{self.path!r} has a 'flows' table crux_gen did not make")
            for target in range(version + 1, sql.SCHEMA_VERSION + 1):
                sql.MIGRATIONS[target](conn)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Start a write transaction, waiting up to ``busy_timeout`` for other writers."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: sqlite3.Error) -> StoreError:
        """The ``StoreError`` naming this file for a failed SQLite call."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreBusyError(
                f"{self.path!r} stayed locked by another writer for longer than the busy "
                f"timeout ({self.busy_timeout:g}s): {exc}; try again, or raise busy_timeout"
            )
        if isinstance(exc, sqlite3.IntegrityError):
            return StoreError(f"{self.path!r} refused a write: {exc}; nothing of it was applied")
        return StoreError(
            f"{self.path!r} cannot be read or written: {exc}; nothing of this write was "
            "applied. Check free disk space, and that the file and its directory are "
            "writable and hold a crux_gen store"
        )

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            # SQLite may have rolled it back itself (full disk, I/O error).
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        self._begin(conn)
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._failure(exc) from exc
        except BaseException:
            self._rollback(conn)
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    def _query(self, query: str, params: Any = ()) -> list[Any]:
        """One read statement outside a transaction, its errors as ``StoreError``."""
        try:
            return self._conn().execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    def close(self) -> None:
        """Close this thread's connection (another is opened if the store is used again)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
        with self._shared_lock:
            if self._shared is not None and self._shared_pid == os.getpid():
                self._shared.close()
            self._shared = None

    # -- reading -------------------------------------------------------------------

    @staticmethod
    def _flow(
        conn: sqlite3.Connection, row: tuple[Any, ...], *, history: bool, pending_only: bool = False
    ) -> StoredFlow:
        """The flow of *row*; with *history*, its records and signals (all of them,
        and its children, for ``load``; what a claim needs with *pending_only*)."""
        flow_id = row[0]
        if not history:
            return StoredFlow(*row)
        found = SQLiteStore._segment_history(conn, flow_id) if pending_only else None
        if found is None:
            columns = sql.LEAN_RECORD_COLUMNS if pending_only else sql.RECORD_COLUMNS
            records = conn.execute(
                f"SELECT {columns} FROM records WHERE flow_id = ? ORDER BY position", (flow_id,)
            ).fetchall()
            found = tuple(map(StoredRecord._make, records))
        where = "flow_id = ? AND state = 'pending'" if pending_only else "flow_id = ?"
        signals = conn.execute(
            f"SELECT {sql.SIGNAL_COLUMNS} FROM signals WHERE {where} ORDER BY id", (flow_id,)
        ).fetchall()
        children: tuple[str, ...] = ()
        if not pending_only:
            children = tuple(r[0] for r in conn.execute(sql.CHILDREN, (flow_id,)).fetchall())
        return StoredFlow(  # type: ignore[misc]
            *row,
            records=found,
            signals=tuple(map(StoredSignal._make, signals)),
            children=children,
        )

    @staticmethod
    def _segment_history(conn: sqlite3.Connection, flow_id: str) -> tuple[StoredRecord, ...] | None:
        """A claim's history from the flow's segment and the records after it, or
        ``None`` (no segment, or one that does not add up: read the rows)."""
        segment = conn.execute(sql.SEGMENT_READ, (flow_id,)).fetchone()
        if segment is None or type(segment[0]) is not int or segment[0] < 1:
            return None
        tail = conn.execute(sql.SEGMENT_TAIL, (flow_id, segment[0] - 1)).fetchall()
        count, meta, results, crc = segment
        return segments.history(count, meta, results, crc, list(map(StoredRecord._make, tail)))

    @staticmethod
    def _write_segment(conn: sqlite3.Connection, flow_id: str) -> None:
        """On a park: rewrite the flow's segment when its completed prefix grew
        enough (``segments.rebuild_due``), in the park's transaction."""
        covered, prefix = conn.execute(sql.SEGMENT_PREFIX, {"flow": flow_id}).fetchone()
        if prefix < covered:  # records dropped under it (never by this store): redo
            conn.execute("DELETE FROM segments WHERE flow_id = ?", (flow_id,))
            covered = 0
        if segments.rebuild_due(covered, prefix):
            count, meta, results = conn.execute(
                sql.SEGMENT_BUILD, {"flow": flow_id, "stop": prefix}
            ).fetchone()
            crc = segments.checksum(meta, results)
            conn.execute(sql.SEGMENT_PUT, (flow_id, count, meta, results, crc))

    @staticmethod
    def _row(conn: sqlite3.Connection, flow_id: str) -> tuple[Any, ...]:
        row = conn.execute(
            f"SELECT {sql.FLOW_COLUMNS} FROM flows WHERE id = ?", (flow_id,)
        ).fetchone()
        if row is None:
            raise FlowNotFoundError(flow_id)
        return tuple(row)

    def load(self, flow_id: str) -> StoredFlow:
        with self._read() as conn:
            return self._flow(conn, self._row(conn, flow_id), history=True)

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: Before = None,
        version: tuple[str, int] | None = None,
    ) -> list[StoredFlow]:
        query, params = listing_query(
            sql.FLOW_COLUMNS,
            "?",
            status=status,
            name=name,
            limit=limit,
            before=before,
            version=version,
        )
        return [StoredFlow(*row) for row in self._query(query, params)]

    def count_flows(self) -> dict[str, int]:
        """How many flows each status has (statuses with none are left out): one
        scan of the ``flows_by_status`` index."""
        rows = self._query("SELECT status, COUNT(*) FROM flows GROUP BY status")
        return {status: int(n) for status, n in rows}

    def due(self, now: float, limit: int) -> list[str]:
        rows = self._query(sql.DUE, {"now": now, "limit": int(limit)})
        return [row[0] for row in rows]

    # -- leases --------------------------------------------------------------------

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        with self._write() as conn:
            found = conn.execute("SELECT name FROM flows WHERE id = ?", (flow_id,)).fetchone()
            if found is not None:
                if found[0] != name:
                    raise FlowNameConflictError(flow_id, found[0], name)
                row = self._claim(conn, flow_id, owner, now)
            else:
                row = None
            if row is None:
                expires = now + self._ttl
                conn.execute(
                    "INSERT INTO flows (id, name, status, input, created_at, updated_at, "
                    "lease_owner, lease_expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (flow_id, name, Status.RUNNING.value, input, now, now, owner, expires),
                )
                return StoredFlow(
                    flow_id, name, Status.RUNNING.value, input, now, now,
                    lease_owner=owner, lease_expires=expires,
                )  # fmt: skip
        return self._history(row)

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        with self._write() as conn:
            row = self._claim(conn, flow_id, owner, now, only_if_due=only_if_due)
        return self._history(row)

    def _history(self, row: tuple[Any, ...]) -> StoredFlow:
        # Read after the claim's write transaction, so a long history never holds the
        # write lock: only the lease holder writes records, so nothing moves meanwhile.
        with self._read() as conn:
            return self._flow(conn, row, history=True, pending_only=True)

    def _claim(
        self,
        conn: sqlite3.Connection,
        flow_id: str,
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
    ) -> tuple[Any, ...]:
        """Take the lease; the flow's row as it stood before (with the new lease)."""
        row = self._row(conn, flow_id)
        flow = StoredFlow(*row)
        if flow.status in FINISHED:
            if only_if_due:
                raise FlowClosedError(flow_id, flow.status)
            return row
        if flow.lease_owner not in (None, owner) and (flow.lease_expires or 0.0) > now:
            raise FlowBusyError(flow_id, when(flow.lease_expires))
        if only_if_due and flow.status == Status.SUSPENDED and not self._wakes(conn, flow, now):
            raise FlowBusyError(flow_id)  # advanced by another worker since the due query
        expires = now + self._ttl
        conn.execute(
            "UPDATE flows SET lease_owner = ?, lease_expires = ? WHERE id = ?",
            (owner, expires, flow_id),
        )
        return (*row[: sql.LEASE], owner, expires, *row[sql.LEASE + 2 :])

    @staticmethod
    def _wakes(conn: sqlite3.Connection, flow: StoredFlow, now: float) -> bool:
        """A suspended flow's timer is due, or a signal it waits for is pending (``sql.DUE``)."""
        if flow.wake_at is not None and flow.wake_at <= now:
            return True
        if flow.wait_kind == WAIT_ANY:
            names = any_names(flow.waiting_for)
            if names is None:  # unreadable: any pending signal wakes it
                return conn.execute(sql.ANY_PENDING_AT_ALL, (flow.id,)).fetchone() is not None
            found = conn.execute(sql.ANY_PENDING, (flow.id, json.dumps(names))).fetchone()
            return found is not None
        return flow.wait_kind == "suspend" and (
            conn.execute(
                "SELECT 1 FROM signals INDEXED BY signals_pending "
                "WHERE flow_id = ? AND name = ? AND state = 'pending' LIMIT 1",
                (flow.id, flow.waiting_for),
            ).fetchone()
            is not None
        )

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        try:
            cur = self._conn().execute(
                "UPDATE flows SET lease_expires = ? WHERE id = ? AND lease_owner = ?",
                (now + self._ttl, flow_id, owner),
            )
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        return cur.rowcount == 1

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        rows = self._query(sql.LEASE_CHECK, (flow_id,))
        renew = lambda: self.renew(flow_id, owner, now)  # noqa: E731
        return lease_outcome(flow_id, owner, rows[0] if rows else None, now, renew)

    def lease_rows(self, flow_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """The ``(status, lease_owner, cancel_reason, lease_expires)`` of each flow in
        *flow_ids* that exists, in one read, for the lease checks of a concurrent
        worker's runners (``GroupCommit``).

        Read on one connection this process's threads share (under a lock): each
        commit by another connection empties a connection's page cache, so one
        reader for all of them reads again once per batch, not once per thread.
        """
        with self._shared_lock:
            conn = self._shared
            if conn is None or self._shared_pid != _PID[0]:
                conn = self._shared = self._open()
                self._shared_pid = _PID[0]
            try:
                if len(flow_ids) == 1:
                    found = conn.execute(sql.LEASE_ROW, (flow_ids[0],)).fetchall()
                else:
                    found = conn.execute(sql.LEASE_ROWS, (json.dumps(flow_ids),)).fetchall()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        return {row[0]: tuple(row[1:]) for row in found}

    def release(self, flow_id: str, owner: str) -> None:
        try:
            self._conn().execute(
                "UPDATE flows SET lease_owner = NULL, lease_expires = NULL "
                "WHERE id = ? AND lease_owner = ?",
                (flow_id, owner),
            )
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    # -- writing -------------------------------------------------------------------

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        conn = self._conn()
        records = write.records
        if write.is_step:
            # The hot path, a step's result: one fenced statement, one commit.
            record = records[0]
            try:
                fenced = conn.execute(
                    sql.PUT_RECORD_FENCED,
                    (flow_id, *record, flow_id, owner, flow_id, record.position,
                     record.position, flow_id),
                )  # fmt: skip
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
            if fenced.rowcount == 1:
                return _RUNNING
            # Lost lease, cancelled, a suspended flow going on, or a conflict: the
            # full transaction below sorts out which.
        check_write(flow_id, write)
        with self._write() as conn:
            return self._apply(conn, flow_id, owner, now, write)

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        for item in batch:
            check_write(item.flow_id, item.write)
        outcomes: list[CommitOutcome | CruxError] = []
        with self._write() as conn:  # one transaction, one fsync
            for flow_id, owner, now, write in batch:
                records = write.records
                if write.is_step:
                    record = records[0]
                    fenced = conn.execute(
                        sql.PUT_RECORD_FENCED,
                        (flow_id, *record, flow_id, owner, flow_id, record.position,
                         record.position, flow_id),
                    )  # fmt: skip
                    if fenced.rowcount == 1:
                        outcomes.append(_RUNNING)
                        continue
                # Refusals come before any change of the item, but a savepoint makes
                # sure nothing of a refused item stays whatever the order.
                conn.execute("SAVEPOINT item")
                try:
                    outcomes.append(self._apply(conn, flow_id, owner, now, write))
                except ITEM_ERRORS as exc:
                    conn.execute("ROLLBACK TO item")
                    outcomes.append(exc)
                conn.execute("RELEASE item")
        return outcomes

    def claim_due(
        self, now: float, limit: int, owner: str, *, exclude: Collection[str] = ()
    ) -> list[StoredFlow]:
        rows: list[tuple[Any, ...]] = []
        params = {"now": now, "limit": int(limit), "exclude": json.dumps(list(exclude))}
        with self._write() as conn:
            found = conn.execute(sql.DUE_EXCLUDING, params).fetchall()
            for flow_id in dict.fromkeys(row[0] for row in found):  # unique, oldest first
                try:
                    rows.append(self._claim(conn, flow_id, owner, now, only_if_due=True))
                except (FlowBusyError, FlowClosedError, FlowNotFoundError):
                    continue
        if not rows:
            return []
        # One read for every history, after the claims' write transaction (only the
        # lease holder writes records, so nothing moves meanwhile).
        with self._read() as conn:
            return [self._flow(conn, row, history=True, pending_only=True) for row in rows]

    def _apply(
        self, conn: sqlite3.Connection, flow_id: str, owner: str, now: float, write: Write
    ) -> CommitOutcome:
        """``commit`` inside the caller's write transaction."""
        records = write.records
        row = conn.execute(sql.LEASE_CHECK, (flow_id,)).fetchone()
        if row is None or row[1] != owner:
            raise LeaseLostError(flow_id, owner)
        status = row[0]
        finished = status in FINISHED
        awaited = awaited_names(write)
        if awaited and not finished:
            updated = {update.id for update in write.signals}
            arrived = [
                signal
                for signal in conn.execute(
                    f"SELECT {sql.SIGNAL_COLUMNS} FROM signals WHERE flow_id = ? AND name IN "
                    f"({', '.join('?' * len(awaited))}) AND state = 'pending' ORDER BY id",
                    (flow_id, *awaited),
                ).fetchall()
                if signal[0] not in updated
            ]
            if arrived:  # nothing applied: the runner takes one and writes again
                return CommitOutcome(status, signals=tuple(map(StoredSignal._make, arrived)))
        if records:
            self._check_records(conn, flow_id, records)
        if write.children:
            self._check_children(conn, flow_id, write)
        new = None if finished else after_write(status, write.status)
        if len(records) == 1:
            conn.execute(sql.PUT_RECORD, (flow_id, *records[0]))
        elif records:
            conn.executemany(sql.PUT_RECORD, [(flow_id, *r) for r in records])
        if write.signals:
            conn.executemany(
                sql.SIGNAL_UPDATE,
                [(s.state, s.error, s.position, now, s.id, flow_id) for s in write.signals],
            )
        if write.custom_status is not None:
            conn.execute(sql.SET_CUSTOM_STATUS, (write.custom_status, flow_id))
        if new is None:  # cancelled meanwhile: keep it, drop the lease
            conn.execute(
                "UPDATE flows SET lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (flow_id,),
            )
            return CommitOutcome(status, cancel_reason=row[2])
        for child in write.children:  # those stored already are left as they are
            conn.execute(
                sql.INSERT_CHILD,
                (child.flow_id, child.name, child.input, now, now, flow_id),
            )
        if write.continue_as_new is not None:
            run = conn.execute("SELECT run FROM flows WHERE id = ?", (flow_id,)).fetchone()[0]
            conn.execute(sql.KEEP_PAST_RUN, {"run": run, "flow": flow_id})
            conn.execute("DELETE FROM records WHERE flow_id = ?", (flow_id,))
            conn.execute("DELETE FROM segments WHERE flow_id = ?", (flow_id,))
            conn.execute(sql.NEW_RUN, (write.continue_as_new, now, flow_id))
            return _RUNNING
        if write.status is None:
            if new != status:  # a resumed flow goes on past its wait
                conn.execute(sql.WAIT_CLEARED, (new.value, now, flow_id))
            return _RUNNING
        wake_at = write.wake_at
        if (
            new == Status.SUSPENDED
            and write.wait_children
            and self._any_finished(conn, write.wait_children)
        ):
            wake_at = now if wake_at is None else min(wake_at, now)
        conn.execute(
            sql.PARK,
            (
                new.value, write.result, write.error, write.waiting_for,
                write.wait_kind, wake_at, write.deadline, now, flow_id,
            ),
        )  # fmt: skip
        if new in FINISHED:
            conn.execute(sql.UNUSED, (flow_id,))
            self._wake_parent(conn, flow_id, now)
        else:
            self._write_segment(conn, flow_id)
        return CommitOutcome(new.value)

    @staticmethod
    def _check_children(conn: sqlite3.Connection, flow_id: str, write: Write) -> None:
        """Refuse a child whose id is taken (``check_child``)."""
        new: dict[str, tuple[str, str | None]] = {}
        for child in write.children:
            found = conn.execute(
                "SELECT name, parent_id FROM flows WHERE id = ?", (child.flow_id,)
            ).fetchone()
            check_child(flow_id, child, tuple(found) if found else new.get(child.flow_id))
            new[child.flow_id] = (child.name, flow_id)

    @staticmethod
    def _any_finished(conn: sqlite3.Connection, flow_ids: tuple[str, ...]) -> bool:
        """Whether any of *flow_ids* is a finished flow."""
        finished = sorted(s.value for s in FINISHED)
        ids = list(dict.fromkeys(flow_ids))
        return (
            conn.execute(
                f"SELECT 1 FROM flows WHERE id IN ({', '.join('?' * len(ids))}) "
                f"AND status IN ({', '.join('?' * len(finished))}) LIMIT 1",
                (*ids, *finished),
            ).fetchone()
            is not None
        )

    @staticmethod
    def _wake_parent(conn: sqlite3.Connection, flow_id: str, now: float) -> None:
        """*flow_id* finished: its suspended parent (if any) is due at once."""
        found = conn.execute("SELECT parent_id FROM flows WHERE id = ?", (flow_id,)).fetchone()
        if found is not None and found[0] is not None:
            conn.execute(sql.WAKE_PARENT, {"now": now, "parent": found[0]})

    @staticmethod
    def _check_records(
        conn: sqlite3.Connection, flow_id: str, records: tuple[StoredRecord, ...]
    ) -> None:
        positions = sorted({r.position for r in records})
        marks = ", ".join("?" * len(positions))
        existing = dict(
            conn.execute(
                f"SELECT position, state FROM records WHERE flow_id = ? AND position IN ({marks})",
                (flow_id, *positions),
            ).fetchall()
        )
        last = conn.execute(
            "SELECT max(position) FROM records WHERE flow_id = ?", (flow_id,)
        ).fetchone()[0]
        check_records(flow_id, existing, 0 if last is None else last + 1, records)

    def add_signal(
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None
    ) -> StoredSignal | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, deadline, waiting_for FROM flows WHERE id = ?", (flow_id,)
            ).fetchone()
            if row is None:
                raise FlowNotFoundError(flow_id)
            if (
                key is not None
                and conn.execute(
                    "SELECT 1 FROM signals WHERE flow_id = ? AND key = ?", (flow_id, key)
                ).fetchone()
            ):
                return None  # sent before with this key: nothing more is stored
            check_signal_allowed(flow_id, row[0], row[1], row[2], now)
            cur = conn.execute(
                "INSERT INTO signals (flow_id, name, payload, state, created_at, key) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (flow_id, name, payload, PENDING, now, key),
            )
            assert cur.lastrowid is not None
            return StoredSignal(cur.lastrowid, flow_id, name, payload, PENDING, now, key=key)

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT status FROM flows WHERE id = ?", (flow_id,)).fetchone()
            if row is None:
                raise FlowNotFoundError(flow_id)
            if row[0] in FINISHED:
                return False
            conn.execute(sql.CANCEL, (reason, now, flow_id))
            conn.execute(sql.UNUSED, (flow_id,))
            inherited = child_cancel_reason(flow_id, reason)
            seen = {flow_id}
            level = [flow_id]
            while level:  # children, their children, … (through finished ones too)
                below = []
                for parent in level:
                    for child, status in conn.execute(sql.CHILD_ROWS, (parent,)).fetchall():
                        if child in seen:
                            continue
                        seen.add(child)
                        below.append(child)
                        if status not in FINISHED:
                            conn.execute(sql.CANCEL, (inherited, now, child))
                            conn.execute(sql.UNUSED, (child,))
                level = below
            self._wake_parent(conn, flow_id, now)
            return True

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the primary key: ids >= prefix and < prefix with its last
        # character bumped (UTF-8 keeps code point order), so only matches are read.
        params: tuple[Any, ...] = (int(limit),)
        query = "SELECT id FROM flows ORDER BY id LIMIT ?"
        if prefix:
            upper = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
            query = "SELECT id FROM flows WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
            params = (prefix, upper, int(limit))
        rows = self._query(query, params)
        return [row[0] for row in rows if row[0].startswith(prefix)]

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        with self._write() as conn:
            row = conn.execute("SELECT status FROM flows WHERE id = ?", (flow_id,)).fetchone()
            if row is None:
                raise FlowNotFoundError(flow_id)
            status = retry_status(flow_id, row[0])
            records = conn.execute(
                f"SELECT {sql.RECORD_COLUMNS} FROM records WHERE flow_id = ? ORDER BY position",
                (flow_id,),
            ).fetchall()
            history = tuple(map(StoredRecord._make, records))
            keep, reset = retry_plan(history)
            dropped = tuple(sorted([*reset[1:], *history[keep:]]))
            conn.execute("DELETE FROM records WHERE flow_id = ? AND position >= ?", (flow_id, keep))
            if reset:
                conn.executemany(sql.PUT_RECORD, [(flow_id, *r) for r in reset])
            first = min([keep, *(r.position for r in reset)])
            conn.execute("DELETE FROM segments WHERE flow_id = ? AND count > ?", (flow_id, first))
            conn.execute(
                "UPDATE flows SET status = ?, result = NULL, error = NULL, waiting_for = ?, "
                "wait_kind = 'retry', wake_at = ?, deadline = NULL, lease_owner = NULL, "
                "lease_expires = NULL, updated_at = ? WHERE id = ?",
                (status.value, dropped[0].name if dropped else None, now, now, flow_id),
            )
            return dropped

    def delete(self, flow_id: str) -> bool:
        with self._write() as conn:
            row = conn.execute(sql.STATUS_AND_PARENT, (flow_id,)).fetchone()
            if row is None:
                return False
            deletable(flow_id, row[0], None if row[1] is None else (row[1], row[2]))
            conn.execute("DELETE FROM records WHERE flow_id = ?", (flow_id,))
            conn.execute("DELETE FROM past_records WHERE flow_id = ?", (flow_id,))
            conn.execute("DELETE FROM segments WHERE flow_id = ?", (flow_id,))
            conn.execute("DELETE FROM signals WHERE flow_id = ?", (flow_id,))
            conn.execute("DELETE FROM flows WHERE id = ?", (flow_id,))
            return True

    def prune(self, finished_before: float, *, batch: int = 500) -> int:
        # In batches of *batch* flows, one transaction each, so workers writing
        # meanwhile wait for one short transaction at most.
        finished = sorted(s.value for s in FINISHED)
        marks = ", ".join("?" * len(finished))
        deleted = 0
        while True:
            with self._write() as conn:
                ids = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM flows f WHERE status IN ({marks}) AND updated_at < ? "
                        "AND NOT EXISTS (SELECT 1 FROM flows p WHERE p.id = f.parent_id "
                        f"AND p.status NOT IN ({marks})) LIMIT ?",
                        (*finished, finished_before, *finished, batch),
                    )
                ]
                if not ids:
                    return deleted
                some = ", ".join("?" * len(ids))
                conn.execute(f"DELETE FROM records WHERE flow_id IN ({some})", ids)
                conn.execute(f"DELETE FROM past_records WHERE flow_id IN ({some})", ids)
                conn.execute(f"DELETE FROM segments WHERE flow_id IN ({some})", ids)
                conn.execute(f"DELETE FROM signals WHERE flow_id IN ({some})", ids)
                conn.execute(f"DELETE FROM flows WHERE id IN ({some})", ids)
            deleted += len(ids)

    def put_flow(self, flow: StoredFlow) -> None:
        given = new_flow(flow)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM flows WHERE id = ?", (given.id,)).fetchone():
                raise flow_exists(given.id, repr(self.path))
            ids = sorted(s.id for s in given.signals)
            for start in range(0, len(ids), 500):  # within SQLite's limit of parameters
                some = ids[start : start + 500]
                taken = conn.execute(
                    f"SELECT id, flow_id FROM signals WHERE id IN ({', '.join('?' * len(some))}) "
                    "ORDER BY id LIMIT 1",
                    some,
                ).fetchone()
                if taken is not None:
                    raise StoreError(
                        f"signal id {taken[0]} of flow {given.id!r} is taken by a signal of "
                        f"flow {taken[1]!r} in {self.path!r}; nothing was written"
                    )
            conn.execute(
                sql.INSERT_WHOLE_FLOW, attrs.astuple(given, recurse=False)[: sql.FLOW_WIDTH]
            )
            conn.execute("DELETE FROM segments WHERE flow_id = ?", (given.id,))
            if given.records:
                conn.executemany(sql.PUT_RECORD, [(given.id, *r) for r in given.records])
            if given.signals:
                conn.executemany(
                    f"INSERT INTO signals ({sql.SIGNAL_COLUMNS}) "
                    f"VALUES ({', '.join('?' * len(StoredSignal._fields))})",
                    sorted(given.signals),
                )

    def __repr__(self) -> str:
        return (
            f"SQLiteStore({self.path!r}, lease_ttl={format_duration(self.lease_ttl)!r}, "
            f"synchronous={self.synchronous!r})"
        )
