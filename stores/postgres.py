"""``PostgresStore``: flows in PostgreSQL, shared by workers on any number of hosts.

    store = PostgresStore("postgresql://app@db.internal/app", lease_ttl="30s")

- The same ``Store`` and ``StoreAdmin`` protocols as ``SQLiteStore``, with the
  same behaviour (one contract suite runs on both).
- Tables live in their own PostgreSQL schema (``schema="crux"``), created and
  migrated on first connect under an advisory lock, so processes connecting to a
  fresh database at once do not race.
- One clock per deployment: leases, deadlines and timers use the database
  server's clock (``DatabaseClock``), so hosts whose clocks drift cannot steal a
  live lease. Tests pass ``clock=FakeClock()``.
- A worker's claim of a due flow is ``SELECT … FOR UPDATE SKIP LOCKED``: workers
  racing for the same flows never wait on each other. A signal is announced with
  ``NOTIFY`` so idle workers wake at once (``wait_for_wake``); polling stays the
  fallback.
- A connection pool per process (a child forked after the store was made opens
  its own and never touches its parent's connections). A server that cannot be
  reached within ``connect_timeout`` is a ``StoreError`` naming the host; the
  pool reconnects by itself, with backoff, when the server comes back.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import attrs

from crux_gen.errors import MissingDependencyError

try:
    import psycopg
    import psycopg.conninfo
    from psycopg import sql as pgsql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - tested in a subprocess without psycopg
    raise MissingDependencyError(
        "PostgresStore", "postgres", exc.name or "psycopg and psycopg_pool"
    ) from exc

from crux_gen.clock import Clock, when
from crux_gen.durations import Duration, format_duration, to_duration
from crux_gen.errors import (
    CruxError,
    FlowBusyError,
    FlowClosedError,
    FlowNameConflictError,
    FlowNotFoundError,
    InvalidValueError,
    LeaseLostError,
    StoreError,
    StoreSchemaError,
)
from crux_gen.records import (
    Commit,
    CommitOutcome,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.status import FINISHED, Status, after_write

from . import postgres_schema as sql
from . import segments
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

_RUNNING = CommitOutcome(Status.RUNNING.value)
_T = TypeVar("_T")
#: How many times a transaction the server aborted to break a deadlock (or a
#: serialization conflict) is run; nothing of an aborted one was applied.
_RETRIES = 5
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

Conn = psycopg.Connection[tuple[Any, ...]]


class DatabaseClock:
    """The database server's clock, read without a round trip per call: the offset
    to this host's clock is measured at first use (half a round trip of error at
    most) and again every ``resync`` seconds."""

    def __init__(self, store: PostgresStore, resync: float = 60.0) -> None:
        self._store = store
        self._resync = resync
        self._offset = 0.0
        self._synced_at: float | None = None
        self._lock = threading.Lock()

    def time(self) -> float:
        """The server's time as UTC seconds since the epoch."""
        mono = time.monotonic()
        if self._synced_at is None or mono - self._synced_at > self._resync:
            with self._lock:
                if self._synced_at is None or mono - self._synced_at > self._resync:
                    before = time.time()
                    server = self._store.server_time()
                    after = time.time()
                    self._offset = server - (before + after) / 2
                    self._synced_at = time.monotonic()
        return time.time() + self._offset

    def now(self) -> datetime:
        """The server's time, an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def sleep(self, seconds: float) -> None:
        """Sleep in this process (durations are the same on every clock)."""
        time.sleep(seconds)


class PostgresStore:
    """Flows in PostgreSQL: ``PostgresStore("postgresql://user@host/db")``.

    ``lease_ttl`` is how long a crashed runner keeps a flow; ``schema`` the
    PostgreSQL schema of crux_gen's tables; ``clock`` is for tests (``FakeClock``;
    by default the database server's clock); ``max_connections`` the size of this
    process's pool.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_ttl: Duration = "30s",
        schema: str = "crux",
        clock: Clock | None = None,
        max_connections: int = 10,
        connect_timeout: Duration = "10s",
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise InvalidValueError(
                "PostgresStore url", url, 'is not a "postgresql://user@host/database" URL'
            )
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidValueError(
                "PostgresStore schema", schema, "must be a lowercase SQL name like 'crux'"
            )
        self.url = url
        self.schema = schema
        self.lease_ttl: timedelta = to_duration(lease_ttl, what="lease_ttl")
        self.connect_timeout = to_duration(connect_timeout, what="connect_timeout").total_seconds()
        self.max_connections = max_connections
        self.clock: Clock = clock or DatabaseClock(self)
        #: Called with the text of every statement this store sends (tests, debugging).
        self.trace: Callable[[str], None] | None = None
        self._ttl = self.lease_ttl.total_seconds()
        self._where = _describe(url)
        self._pool_lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._pool_pid = -1
        self._used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._listener: Conn | None = None
        self._listener_pid = -1
        self._migrate()

    # -- connections ---------------------------------------------------------------

    def _pool_here(self) -> ConnectionPool[Conn]:
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pool_pid == pid:
            return pool
        with self._pool_lock:
            if self._pool is None or self._pool_pid != pid:
                # A child never touches (nor closes) its parent's connections.
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.max_connections,
                    kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
                    open=False,
                    timeout=self.connect_timeout,
                    reconnect_timeout=max(self.connect_timeout, 60.0),
                    name=f"crux_gen {self._where}",
                    check=self._check_idle,
                )
                self._pool.open(wait=False)
                self._pool_pid = pid
            return self._pool

    #: A pooled connection idle this long (seconds) is pinged before it is handed
    #: out: after a server restart the pool holds dead ones, and the first
    #: operation must not fail on one. A connection in steady use is not pinged.
    IDLE_CHECK = 1.0

    def _check_idle(self, conn: Conn) -> None:
        if time.monotonic() - self._used.get(conn, 0.0) > self.IDLE_CHECK:
            ConnectionPool.check_connection(conn)  # raises on a dead one: the pool drops it

    @contextmanager
    def _connection(self) -> Iterator[Conn]:
        try:
            with self._pool_here().connection() as conn:
                try:
                    yield conn
                finally:
                    self._used[conn] = time.monotonic()
        except psycopg.errors.IntegrityError as exc:
            raise StoreError(
                f"{self._where} refused a write: {exc}; nothing of it was applied"
            ) from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._failure(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _atomically(self, body: Callable[[Conn], _T]) -> _T:
        """Run *body* in one transaction; again (a few times) when the server broke
        a deadlock or a serialization conflict by aborting it, so no such error
        escapes. Nothing of an aborted transaction was applied."""
        for attempt in range(_RETRIES):
            try:
                with self._transaction() as conn:
                    return body(conn)
            except StoreError as exc:
                if attempt + 1 < _RETRIES and isinstance(exc.__cause__, _TRANSIENT):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lock_flows(self, conn: Conn, flow_ids: Sequence[str]) -> None:
        """Lock *flow_ids* and their parents, by id (``sql.LOCK_FLOWS``)."""
        self._run(conn, sql.LOCK_FLOWS, {"ids": list(flow_ids)})

    def _failure(self, exc: BaseException) -> StoreError:
        if isinstance(exc, PoolTimeout):
            return StoreError(
                f"cannot reach the PostgreSQL server at {self._where} within "
                f"{format_duration(self.connect_timeout)}: {exc}; check that it is up and the "
                "URL is right (the store reconnects by itself when it comes back)"
            )
        return StoreError(
            f"PostgreSQL at {self._where} failed: {type(exc).__name__}: {exc}; nothing of "
            "this write was applied unless the error came after its commit"
        )

    def _run(self, conn: Conn, query: str, params: Any = None) -> psycopg.Cursor[tuple[Any, ...]]:
        if self.trace is not None:
            self.trace(query)
        return conn.execute(query.encode(), params)

    def _all(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return self._run(conn, query, params).fetchall()

    def server_time(self) -> float:
        """The database server's clock, as UTC seconds since the epoch."""
        [(now,)] = self._all("SELECT extract(epoch FROM clock_timestamp())::float8")
        return float(now)

    def _migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"crux_gen:{self.schema}",))
            conn.execute(
                pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(self.schema))
            )
            conn.execute(b"CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = conn.execute(b"SELECT max(version) FROM schema_version").fetchone()
            version = (row[0] if row else None) or 0
            if version > sql.SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"schema {self.schema!r} at {self._where} has version {version}, newer than "
                    f"this crux_gen knows ({sql.SCHEMA_VERSION}); upgrade crux-gen"
                )
            for target in range(version + 1, sql.SCHEMA_VERSION + 1):
                sql.MIGRATIONS[target](conn, self.schema)
                conn.execute(b"DELETE FROM schema_version")
                conn.execute(b"INSERT INTO schema_version (version) VALUES (%s)", (target,))

    def close(self) -> None:
        """Close this process's connections (another pool opens if the store is used again)."""
        with self._pool_lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None
            if self._listener is not None and self._listener_pid == os.getpid():
                self._listener.close()
            self._listener = None

    # -- waking workers --------------------------------------------------------------

    def wait_for_wake(self, timeout: float) -> bool:
        """Block until a signal is announced (``NOTIFY``) or *timeout* seconds pass;
        ``True`` when woken. A hint only: a missed one costs a worker one poll."""
        try:
            if self._listener is None or self._listener_pid != os.getpid():
                conn: Conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=int(self.connect_timeout) or 1
                )
                conn.execute(f"LISTEN {sql.WAKE_CHANNEL}".encode())
                self._listener, self._listener_pid = conn, os.getpid()
            listener = self._listener
            return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error:
            self._listener = None  # dropped: the next call reconnects; poll meanwhile
            time.sleep(min(timeout, 1.0))
            return False

    # -- reading ---------------------------------------------------------------------

    def _history(self, conn: Conn, row: tuple[Any, ...], *, lean: bool) -> StoredFlow:
        """The flow of *row* with its records and signals: what a claim needs when
        *lean*, else all of them and its children (``load``)."""
        flow_id = row[0]
        found = self._segment_history(conn, flow_id) if lean else None
        if found is None:
            query = sql.LEAN_RECORDS if lean else sql.RECORDS
            found = tuple(map(StoredRecord._make, self._run(conn, query, (flow_id,)).fetchall()))
        signals = self._run(
            conn, sql.PENDING_SIGNALS if lean else sql.SIGNALS, (flow_id,)
        ).fetchall()
        children: tuple[str, ...] = ()
        if not lean:
            children = tuple(r[0] for r in self._run(conn, sql.CHILDREN, (flow_id,)).fetchall())
        return StoredFlow(  # type: ignore[misc]
            *row,
            records=found,
            signals=tuple(map(StoredSignal._make, signals)),
            children=children,
        )

    def _segment_history(self, conn: Conn, flow_id: str) -> tuple[StoredRecord, ...] | None:
        """A claim's history from the flow's segment and the records after it, or
        ``None`` (no segment, or one that does not add up: read the rows)."""
        segment = self._run(conn, sql.SEGMENT_READ, (flow_id,)).fetchone()
        if segment is None or type(segment[0]) is not int or segment[0] < 1:
            return None
        tail = self._run(conn, sql.SEGMENT_TAIL, (flow_id, segment[0] - 1)).fetchall()
        count, meta, results, crc = segment
        return segments.history(count, meta, results, crc, list(map(StoredRecord._make, tail)))

    def _write_segment(self, conn: Conn, flow_id: str) -> None:
        """On a park: rewrite the flow's segment when its completed prefix grew
        enough (``segments.rebuild_due``), in the park's transaction."""
        found = self._run(conn, sql.SEGMENT_PREFIX, {"flow": flow_id}).fetchone()
        assert found is not None
        covered, prefix = found
        if prefix < covered:  # records dropped under it (never by this store): redo
            self._run(conn, sql.DELETE_SEGMENT, (flow_id,))
            covered = 0
        if segments.rebuild_due(covered, prefix):
            built = self._run(conn, sql.SEGMENT_BUILD, {"flow": flow_id, "stop": prefix}).fetchone()
            assert built is not None
            count, meta, results = built
            crc = segments.checksum(meta, results)
            self._run(conn, sql.SEGMENT_PUT, (flow_id, count, meta, results, crc))

    def _row(self, conn: Conn, flow_id: str, query: str = sql.ROW) -> tuple[Any, ...]:
        row = self._run(conn, query, (flow_id,)).fetchone()
        if row is None:
            raise FlowNotFoundError(flow_id)
        return tuple(row)

    def load(self, flow_id: str) -> StoredFlow:
        with self._connection() as conn, conn.transaction():
            conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._history(conn, self._row(conn, flow_id), lean=False)

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
            "%s",
            status=status,
            name=name,
            limit=limit,
            before=before,
            version=version,
        )
        return [StoredFlow(*row) for row in self._all(query, params)]

    def count_flows(self) -> dict[str, int]:
        """How many flows each status has (statuses with none are left out): one
        scan of the ``flows_by_status`` index."""
        rows = self._all("SELECT status, COUNT(*) FROM flows GROUP BY status")
        return {status: int(n) for status, n in rows}

    def due(self, now: float, limit: int) -> list[str]:
        return [row[0] for row in self._all(sql.DUE, {"now": now, "limit": int(limit)})]

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        rows = self._all(
            "SELECT id FROM flows WHERE starts_with(id, %s) ORDER BY id LIMIT %s",
            (prefix, int(limit)),
        )
        return [row[0] for row in rows]

    # -- leases ----------------------------------------------------------------------

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        expires = now + self._ttl
        with self._transaction() as conn:
            inserted = self._run(
                conn, sql.INSERT_FLOW, (flow_id, name, input, now, now, owner, expires)
            ).rowcount
            if inserted == 1:
                return StoredFlow(
                    flow_id, name, Status.RUNNING.value, input, now, now,
                    lease_owner=owner, lease_expires=expires,
                )  # fmt: skip
            row = self._row(conn, flow_id, sql.ROW_FOR_UPDATE)
            if row[1] != name:
                raise FlowNameConflictError(flow_id, row[1], name)
            row = self._claim(conn, row, owner, now)
        return self._claimed(row)

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        with self._transaction() as conn:
            query = sql.ROW_FOR_UPDATE_SKIP_LOCKED if only_if_due else sql.ROW_FOR_UPDATE
            found = self._run(conn, query, (flow_id,)).fetchone()
            if found is None:
                if (
                    only_if_due
                    and self._run(conn, "SELECT 1 FROM flows WHERE id = %s", (flow_id,)).fetchone()
                ):
                    raise FlowBusyError(flow_id)  # another worker is claiming it right now
                raise FlowNotFoundError(flow_id)
            row = self._claim(conn, tuple(found), owner, now, only_if_due=only_if_due)
        return self._claimed(row)

    def _claimed(self, row: tuple[Any, ...]) -> StoredFlow:
        # Read after the claim's transaction: only the lease holder writes records.
        with self._connection() as conn:
            return self._history(conn, row, lean=True)

    def _claim(
        self,
        conn: Conn,
        row: tuple[Any, ...],
        owner: str,
        now: float,
        *,
        only_if_due: bool = False,
    ) -> tuple[Any, ...]:
        """Take the lease of the locked *row*; the row with the new lease."""
        flow = StoredFlow(*row)
        if flow.status in FINISHED:
            if only_if_due:
                raise FlowClosedError(flow.id, flow.status)
            return row
        if flow.lease_owner not in (None, owner) and (flow.lease_expires or 0.0) > now:
            raise FlowBusyError(flow.id, when(flow.lease_expires))
        if only_if_due and flow.status == Status.SUSPENDED and not self._wakes(conn, flow, now):
            raise FlowBusyError(flow.id)  # advanced by another worker since the due query
        expires = now + self._ttl
        self._run(conn, sql.TAKE_LEASE, (owner, expires, flow.id))
        return (*row[: sql.LEASE], owner, expires, *row[sql.LEASE + 2 :])

    def _wakes(self, conn: Conn, flow: StoredFlow, now: float) -> bool:
        if flow.wake_at is not None and flow.wake_at <= now:
            return True
        if flow.wait_kind == WAIT_ANY:
            names = any_names(flow.waiting_for)
            if names is None:  # unreadable: any pending signal wakes it
                return self._run(conn, sql.HAS_ANY_PENDING, (flow.id,)).fetchone() is not None
            return self._run(conn, sql.HAS_PENDING_ANY, (flow.id, names)).fetchone() is not None
        return (
            flow.wait_kind == "suspend"
            and self._run(conn, sql.HAS_PENDING, (flow.id, flow.waiting_for)).fetchone() is not None
        )

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        with self._connection() as conn:
            return self._run(conn, sql.RENEW, (now + self._ttl, flow_id, owner)).rowcount == 1

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        rows = self._all(sql.LEASE_CHECK, (flow_id,))
        renew = lambda: self.renew(flow_id, owner, now)  # noqa: E731
        return lease_outcome(flow_id, owner, rows[0] if rows else None, now, renew)

    def release(self, flow_id: str, owner: str) -> None:
        with self._connection() as conn:
            self._run(conn, sql.RELEASE, (flow_id, owner))

    # -- writing ---------------------------------------------------------------------

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        records = write.records
        if write.is_step:
            # The hot path, a step's result: one fenced statement, one round trip.
            record = records[0]
            with self._connection() as conn:
                fenced = self._run(
                    conn,
                    sql.PUT_RECORD_FENCED,
                    (flow_id, owner, flow_id, *record, flow_id, record.position,
                     record.position, flow_id),
                )  # fmt: skip
                if fenced.rowcount == 1:
                    return _RUNNING
            # Lost lease, cancelled, a suspended flow going on, or a conflict: the
            # full transaction below sorts out which.
        check_write(flow_id, write)

        def apply(conn: Conn) -> CommitOutcome:
            if write.status is not None or write.children:
                self._lock_flows(conn, [flow_id])  # with its parent, which its end wakes
            return self._apply(conn, flow_id, owner, now, write)

        return self._atomically(apply)

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        for item in batch:
            check_write(item.flow_id, item.write)
        return self._atomically(lambda conn: self._commit_many(conn, batch))

    def _commit_many(self, conn: Conn, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        """``commit_many`` in the caller's transaction (one transaction, one WAL flush)."""
        if len(batch) > 1:  # every row it may change, first, by id
            self._lock_flows(conn, [item.flow_id for item in batch])
        outcomes: list[CommitOutcome | CruxError] = []
        for flow_id, owner, now, write in batch:
            records = write.records
            if write.is_step:
                record = records[0]
                fenced = self._run(
                    conn,
                    sql.PUT_RECORD_FENCED,
                    (flow_id, owner, flow_id, *record, flow_id, record.position,
                     record.position, flow_id),
                )  # fmt: skip
                if fenced.rowcount == 1:
                    outcomes.append(_RUNNING)
                    continue
            if len(batch) == 1 and (write.status is not None or write.children):
                self._lock_flows(conn, [flow_id])
            try:
                with conn.transaction():  # a savepoint: a refused item leaves nothing
                    outcomes.append(self._apply(conn, flow_id, owner, now, write))
            except ITEM_ERRORS as exc:
                outcomes.append(exc)
        return outcomes

    def claim_due(
        self, now: float, limit: int, owner: str, *, exclude: Collection[str] = ()
    ) -> list[StoredFlow]:
        params = {"now": now, "limit": int(limit), "exclude": list(exclude)}
        rows: list[tuple[Any, ...]] = []
        with self._transaction() as conn:
            found = self._run(conn, sql.DUE_EXCLUDING, params).fetchall()
            ids = list(dict.fromkeys(row[0] for row in found))  # unique, oldest first
            if not ids:
                return []
            # Rows another worker is claiming right now are skipped, not waited for.
            locked = {
                row[0]: tuple(row)
                for row in self._run(conn, sql.ROWS_FOR_UPDATE_SKIP_LOCKED, (ids,)).fetchall()
            }
            for flow_id in ids:
                if flow_id not in locked:
                    continue
                try:
                    rows.append(self._claim(conn, locked[flow_id], owner, now, only_if_due=True))
                except (FlowBusyError, FlowClosedError):
                    continue
        if not rows:
            return []
        # One connection reads every history, after the claims' transaction.
        with self._connection() as conn:
            return [self._history(conn, row, lean=True) for row in rows]

    def _apply(
        self, conn: Conn, flow_id: str, owner: str, now: float, write: Write
    ) -> CommitOutcome:
        """``commit`` inside the caller's transaction."""
        records = write.records
        row = self._run(conn, sql.LEASE_CHECK_FOR_UPDATE, (flow_id,)).fetchone()
        if row is None or row[1] != owner:
            raise LeaseLostError(flow_id, owner)
        status = row[0]
        finished = status in FINISHED
        awaited = awaited_names(write)
        if awaited and not finished:
            updated = {update.id for update in write.signals}
            arrived = [
                signal
                for signal in self._run(conn, sql.PENDING_NAMED, (flow_id, awaited)).fetchall()
                if signal[0] not in updated
            ]
            if arrived:  # nothing applied: the runner takes one and writes again
                return CommitOutcome(status, signals=tuple(map(StoredSignal._make, arrived)))
        if records:
            self._check_records(conn, flow_id, records)
        if write.children:
            self._check_children(conn, flow_id, write)
        new = None if finished else after_write(status, write.status)
        for record in records:
            self._run(conn, sql.PUT_RECORD, (flow_id, *record))
        for s in write.signals:
            self._run(conn, sql.SIGNAL_UPDATE, (s.state, s.error, s.position, now, flow_id, s.id))
        if write.custom_status is not None:
            self._run(conn, sql.SET_CUSTOM_STATUS, (write.custom_status, flow_id))
        if new is None:  # cancelled meanwhile: keep it, drop the lease
            self._run(conn, sql.DROP_LEASE, (flow_id,))
            return CommitOutcome(status, cancel_reason=row[2])
        for child in write.children:  # those stored already are left as they are
            self._run(
                conn, sql.INSERT_CHILD, (child.flow_id, child.name, child.input, now, now, flow_id)
            )
        if write.continue_as_new is not None:
            found = self._run(conn, sql.CURRENT_RUN, (flow_id,)).fetchone()
            assert found is not None
            self._run(conn, sql.KEEP_PAST_RUN, {"run": found[0], "flow": flow_id})
            self._run(conn, sql.DELETE_RECORDS, (flow_id,))
            self._run(conn, sql.DELETE_SEGMENT, (flow_id,))
            self._run(conn, sql.NEW_RUN, (write.continue_as_new, now, flow_id))
            return _RUNNING
        if write.status is None:
            if new != status:  # a resumed flow goes on past its wait
                self._run(conn, sql.WAIT_CLEARED, (new.value, now, flow_id))
            return _RUNNING
        wake_at = write.wake_at
        if (
            new == Status.SUSPENDED
            and write.wait_children
            and self._run(conn, sql.ANY_FINISHED, (list(write.wait_children),)).fetchone()
        ):
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
        else:
            self._write_segment(conn, flow_id)
        return CommitOutcome(new.value)

    def _check_children(self, conn: Conn, flow_id: str, write: Write) -> None:
        """Refuse a child whose id is taken (``check_child``)."""
        new: dict[str, tuple[str, str | None]] = {}
        for child in write.children:
            found = self._run(conn, sql.FLOW_NAME, (child.flow_id,)).fetchone()
            check_child(flow_id, child, (found[0], found[1]) if found else new.get(child.flow_id))
            new[child.flow_id] = (child.name, flow_id)

    def _wake_parent(self, conn: Conn, flow_id: str, now: float) -> None:
        """*flow_id* finished: its suspended parent (if any) is due at once, and
        workers listening are told (delivered at commit)."""
        woken = self._run(conn, sql.WAKE_PARENT, {"now": now, "flow": flow_id}).fetchone()
        if woken is not None:
            self._run(conn, sql.NOTIFY, (sql.WAKE_CHANNEL, woken[0]))

    def _check_records(self, conn: Conn, flow_id: str, records: tuple[StoredRecord, ...]) -> None:
        positions = sorted({r.position for r in records})
        existing = dict(self._run(conn, sql.RECORD_STATES, (flow_id, positions)).fetchall())
        last_row = self._run(conn, sql.LAST_POSITION, (flow_id,)).fetchone()
        last = last_row[0] if last_row else None
        check_records(flow_id, existing, 0 if last is None else last + 1, records)

    def add_signal(
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None
    ) -> StoredSignal | None:
        with self._transaction() as conn:
            row = self._run(conn, sql.SIGNAL_FLOW_ROW, (flow_id,)).fetchone()
            if row is None:
                raise FlowNotFoundError(flow_id)
            if key is not None and self._run(conn, sql.SIGNAL_KEY_SEEN, (flow_id, key)).fetchone():
                return None  # sent before with this key: nothing more is stored
            check_signal_allowed(flow_id, row[0], row[1], row[2], now)
            inserted = self._run(conn, sql.INSERT_SIGNAL, (flow_id, name, payload, now, key))
            signal_id = int(inserted.fetchone()[0])  # type: ignore[index]
            self._run(conn, sql.NOTIFY, (sql.WAKE_CHANNEL, flow_id))  # delivered at commit
        return StoredSignal(signal_id, flow_id, name, payload, "pending", now, key=key)

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        return self._atomically(lambda conn: self._cancel(conn, flow_id, reason, now))

    def _cancel(self, conn: Conn, flow_id: str, reason: str, now: float) -> bool:
        # The flow, its parent (which its end wakes) and its descendants are locked
        # first, in one statement, by id (``sql.LOCK_FLOWS``): a child finishing at
        # the same time locks the same rows in the same order.
        tree = self._descendants(conn, [flow_id])
        self._lock_flows(conn, [flow_id, *tree])
        row = self._row(conn, flow_id)
        if row[2] in FINISHED:
            return False
        more = [c for c in self._descendants(conn, [flow_id]) if c not in set(tree)]
        if more:  # started between the read and the lock (rare): locked now too
            self._lock_flows(conn, more)
            tree += more
        self._run(conn, sql.CANCEL, (reason, now, flow_id))
        self._run(conn, sql.UNUSED, (flow_id,))
        inherited = child_cancel_reason(flow_id, reason)
        for child in tree:  # children, their children, … (through finished ones too)
            cancelled = self._run(conn, sql.CANCEL_UNFINISHED, (inherited, now, child))
            if cancelled.rowcount == 1:
                self._run(conn, sql.UNUSED, (child,))
        self._wake_parent(conn, flow_id, now)
        return True

    def _descendants(self, conn: Conn, roots: list[str]) -> list[str]:
        """The ids of *roots*' children, their children, … (each once, top down)."""
        seen = set(roots)
        found: list[str] = []
        level = roots
        while level:
            below = [
                child
                for parent in level
                for child, _ in self._run(conn, sql.CHILD_ROWS, (parent,)).fetchall()
                if child not in seen
            ]
            seen.update(below)
            found += below
            level = below
        return found

    # -- StoreAdmin ------------------------------------------------------------------

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        with self._transaction() as conn:
            row = self._row(conn, flow_id, sql.ROW_FOR_UPDATE)
            status = retry_status(flow_id, row[2])
            history = tuple(
                map(StoredRecord._make, self._run(conn, sql.RECORDS, (flow_id,)).fetchall())
            )
            keep, reset = retry_plan(history)
            dropped = tuple(sorted([*reset[1:], *history[keep:]]))
            self._run(conn, sql.DROP_RECORDS_FROM, (flow_id, keep))
            for record in reset:
                self._run(conn, sql.PUT_RECORD, (flow_id, *record))
            first = min([keep, *(r.position for r in reset)])
            self._run(conn, sql.DROP_SEGMENT_PAST, (flow_id, first))
            self._run(
                conn,
                sql.RETRY,
                (status.value, dropped[0].name if dropped else None, now, now, flow_id),
            )
            return dropped

    def delete(self, flow_id: str) -> bool:
        with self._transaction() as conn:
            found = self._run(conn, sql.STATUS_AND_PARENT_FOR_UPDATE, (flow_id,)).fetchone()
            if found is None:
                return False
            deletable(flow_id, found[0], None if found[1] is None else (found[1], found[2]))
            self._delete(conn, flow_id)
            return True

    def _delete(self, conn: Conn, flow_id: str) -> None:
        self._run(conn, sql.DELETE_RECORDS, (flow_id,))
        self._run(conn, sql.DELETE_PAST_RECORDS, (flow_id,))
        self._run(conn, sql.DELETE_SEGMENT, (flow_id,))
        self._run(conn, sql.DELETE_SIGNALS, (flow_id,))
        self._run(conn, sql.DELETE_FLOW, (flow_id,))

    def prune(self, finished_before: float, *, batch: int = 500) -> int:
        # In batches, one transaction each, so runners writing meanwhile wait little.
        deleted = 0
        while True:
            with self._transaction() as conn:
                ids = [r[0] for r in self._run(conn, sql.PRUNE_BATCH, (finished_before, batch))]
                for flow_id in ids:
                    self._delete(conn, flow_id)
            if not ids:
                return deleted
            deleted += len(ids)

    def put_flow(self, flow: StoredFlow) -> None:
        given = new_flow(flow)
        with self._transaction() as conn:
            if self._run(conn, sql.EXISTS, (given.id,)).fetchone():
                raise flow_exists(given.id, self._where)
            ids = sorted(s.id for s in given.signals)
            taken = self._run(conn, sql.SIGNAL_IDS_TAKEN, (ids,)).fetchone() if ids else None
            if taken is not None:
                raise StoreError(
                    f"signal id {taken[0]} of flow {given.id!r} is taken by a signal of flow "
                    f"{taken[1]!r} at {self._where}; nothing was written"
                )
            row = attrs.astuple(given, recurse=False)[: sql.FLOW_WIDTH]
            self._run(conn, sql.INSERT_WHOLE_FLOW, row)
            self._run(conn, sql.DELETE_SEGMENT, (given.id,))
            for record in given.records:
                self._run(conn, sql.PUT_RECORD, (given.id, *record))
            for signal in sorted(given.signals):
                self._run(conn, sql.INSERT_WHOLE_SIGNAL, tuple(signal))
            if ids:  # signals sent later get ids above every id put here
                self._run(conn, sql.SIGNAL_IDS_PAST, (ids[-1],))

    def __repr__(self) -> str:
        return (
            f"PostgresStore({self._where!r}, schema={self.schema!r}, "
            f"lease_ttl={format_duration(self.lease_ttl)!r})"
        )


def _describe(url: str) -> str:
    """The server a URL names, for messages: ``host:port/database`` (no password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "the PostgreSQL URL given"
    host = str(info.get("host") or "localhost")
    port = info.get("port")
    database = info.get("dbname") or ""
    return f"{host}{f':{port}' if port else ''}/{database}"
