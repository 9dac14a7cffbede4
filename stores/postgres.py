"""``PostgresStore``: flows in PostgreSQL, shared by workers on any number of hosts.

    store = PostgresStore("postgresql://app@db.internal/app", lease_ttl="30s")

- The same ``Store`` and ``StoreAdmin`` protocols as ``SQLiteStore``, the same
  code (``SqlStore``, ``SqlAdmin``) over PostgreSQL's dialect
  (``postgres_schema.DIALECT``); one contract suite runs on both. This module
  holds the pool, the lock order (``_lock_flows``), the retry of aborted
  transactions (``_atomically``) and the wake-ups (``NOTIFY``).
- Tables live in their own PostgreSQL schema (``schema="crux"``), created and
  migrated on first connect under an advisory lock, so processes connecting to a
  fresh database at once do not race.
- One clock per deployment: leases, deadlines and timers use the database
  server's clock (``DatabaseClock``), so hosts whose clocks drift cannot steal a
  live lease. Tests pass ``clock=FakeClock()``.
- A worker's claim of a due flow is ``SELECT … FOR UPDATE SKIP LOCKED``: workers
  racing for the same flows never wait on each other. A signal is announced with
  ``NOTIFY`` so idle workers wake at once (``wait_for_wake``); polling stays the
  fallback. Readers waiting on a flow's events and streams are woken the same
  way, on a channel of their own, through one listening connection per process
  (``watch_flow``: ``postgres_notify``).
- A connection pool per process (a child forked after the store was made opens
  its own and never touches its parent's connections). A server that cannot be
  reached within ``connect_timeout`` is a ``StoreError`` naming the host; the
  pool reconnects by itself, with backoff, when the server comes back.
- The constructor connects once on its own, outside the pool (whose retries would
  hide why a connection failed until ``connect_timeout`` ran out): a URL the
  server refuses (no such database or user, a wrong password) is at once a
  ``StoreError`` with the server's own message and the URL, its password masked.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

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

from crux_gen.clock import Clock
from crux_gen.durations import Duration, format_duration, to_duration
from crux_gen.errors import InvalidValueError, StoreError, StoreSchemaError
from crux_gen.urls import shown

from . import postgres_schema as sql
from .caps import Caps
from .postgres_notify import FlowWatch, ReaderListener, listener_connection
from .sql_admin import SqlAdmin

_T = TypeVar("_T")
#: How many times a transaction the server aborted to break a deadlock (or a
#: serialization conflict) is run; nothing of an aborted one was applied.
_RETRIES = 5
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: What libpq prints when the server itself turned a connection away (no such
#: database or role, a wrong password) or asked for a password the URL lacks.
_SERVER_SAID = re.compile(r"(?:FATAL|fe_sendauth):\s+(.*?)\s*$")

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


class PostgresStore(SqlAdmin[Conn]):
    """Flows in PostgreSQL: ``PostgresStore("postgresql://user@host/db")``.

    ``lease_ttl`` is how long a crashed runner keeps a flow; ``schema`` the
    PostgreSQL schema of crux_gen's tables; ``clock`` is for tests (``FakeClock``;
    by default the database server's clock); ``max_connections`` the size of this
    process's pool.
    """

    _sql = sql.STATEMENTS

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
                "PostgresStore url",
                shown(url) if isinstance(url, str) else url,
                'is not a PostgreSQL URL: give "postgresql://user@host/database" (or postgres://…)',
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
        self.caps = Caps(
            where=type(self).__name__,
            wakeups=True,
            counts=True,
            browses=True,
            schedules=True,
            limits=True,
            signals=True,
            forks=True,
            streams=True,
            stream_wakeups=True,
        )
        #: Called with the text of every statement this store sends (tests, debugging).
        self.trace: Callable[[str], None] | None = None
        self._ttl = self.lease_ttl.total_seconds()
        self._where = _describe(url)
        self._at = f"at {self._where}"
        self._pool_lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._pool_pid = -1
        self._used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._listener: Conn | None = None
        self._listener_pid = -1
        self._readers: ReaderListener | None = None
        self._readers_pid = -1
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
    def _write(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    def _reading(self) -> contextlib.AbstractContextManager[Conn]:
        return self._connection()

    def _savepoint(self, conn: Conn) -> contextlib.AbstractContextManager[object]:
        return conn.transaction()

    def _atomically(self, body: Callable[[Conn], _T]) -> _T:
        """Run *body* in one transaction; again (a few times) when the server broke
        a deadlock or a serialization conflict by aborting it, so no such error
        escapes. Nothing of an aborted transaction was applied."""
        for attempt in range(_RETRIES):
            try:
                with self._write() as conn:
                    return body(conn)
            except StoreError as exc:
                if attempt + 1 < _RETRIES and isinstance(exc.__cause__, _TRANSIENT):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lock_flows(self, conn: Conn, flow_ids: Sequence[str]) -> None:
        """Lock *flow_ids* and their parents, by id (``sql.LOCK_FLOWS``)."""
        self._run(conn, sql.LOCK_FLOWS, {"ids": list(flow_ids)})

    def _lock_keys(self, conn: Conn, keys: Sequence[str]) -> None:
        """Starts of one exclusive or debounce key, one at a time (a transaction-
        scoped advisory lock per key, sorted): a racing start waits for the one
        before to commit and then sees it, instead of losing the race again."""
        for key in sorted(set(keys)):
            self._run(conn, "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def _announce(self, conn: Conn, flow_id: str) -> None:
        self._run(conn, sql.NOTIFY, (sql.WAKE_CHANNEL, flow_id))  # delivered at commit

    def _signal_ids_put(self, conn: Conn, last: int) -> None:
        self._run(conn, sql.SIGNAL_IDS_PAST, (last,))

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

    def _execute(self, query: str, params: Any) -> int:
        with self._connection() as conn:
            return self._run(conn, query, params).rowcount

    def server_time(self) -> float:
        """The database server's clock, as UTC seconds since the epoch."""
        [(now,)] = self._all(sql.SERVER_TIME)
        return float(now)

    @contextmanager
    def _own_connection(self) -> Iterator[Conn]:
        """A connection of its own, not the pool's, closed after: the first one a
        store makes, so that the server's refusal is the error (``_refused``)."""
        try:
            conn: Conn = psycopg.connect(
                self.url,
                autocommit=True,
                options=f"-c search_path={self.schema}",
                connect_timeout=max(1, math.ceil(self.connect_timeout)),
            )
        except psycopg.Error as exc:
            raise self._refused(exc) from exc
        try:
            with conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    def _refused(self, exc: psycopg.Error) -> StoreError:
        """The error of a first connection that failed: the server's own words when it
        answered (``FATAL: database "x" does not exist``), else that it cannot be
        reached."""
        text = " ".join(str(exc).split())
        answered = _SERVER_SAID.search(text)
        if answered:
            return StoreError(
                f"PostgreSQL at {self._where} refused the connection: "
                f"{answered.group(1)} (URL {shown(self.url)}); check the database, user and "
                "password in the URL"
            )
        return StoreError(
            f"cannot reach the PostgreSQL server at {self._where} (URL {shown(self.url)}): "
            f"{text.removeprefix('connection failed: ')}; check that it is up and the URL is "
            "right"
        )

    def _migrate(self) -> None:
        with self._own_connection() as conn:
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
            readers, self._readers = self._readers, None
        if readers is not None and self._readers_pid == os.getpid():
            readers.stop()

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

    # -- waking readers (``get_event``, ``read_stream``) ------------------------------

    #: Seconds between a waiting reader's reads of a flow when no ``NOTIFY`` comes
    #: (the fallback: a wake-up comes at once); set on a store to change it.
    reader_poll: float = 1.0

    def watch_flow(self, flow_id: str) -> contextlib.AbstractContextManager[FlowWatch]:
        """A ``FlowWatch`` of *flow_id*, woken by the ``NOTIFY`` of what the flow
        publishes or of its end, through this process's one listening connection
        (made by the first watch; ``close`` stops it)."""
        return self._readers_here().watch(flow_id)

    def _readers_here(self) -> ReaderListener:
        pid = os.getpid()
        with self._pool_lock:
            if self._readers is None or self._readers_pid != pid:
                # A child never touches its parent's listener (nor its connection).
                url, timeout = self.url, self.connect_timeout
                self._readers = ReaderListener(
                    lambda: listener_connection(url, timeout), self._where
                )
                self._readers_pid = pid
            return self._readers

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        return [row[0] for row in self._all(sql.MATCH_IDS, (prefix, int(limit)))]

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
