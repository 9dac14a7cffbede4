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

Every store method is ``SqlStore``'s and ``SqlAdmin``'s (``stores/sql.py``,
``stores/sql_admin.py``) over SQLite's dialect (``sqlite_schema.DIALECT``); this
module holds the connections they run on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from crux_gen.clock import SYSTEM_CLOCK, Clock
from crux_gen.durations import Duration, format_duration, to_duration
from crux_gen.errors import (
    InvalidTypeError,
    InvalidValueError,
    StoreBusyError,
    StoreError,
    StoreSchemaError,
)

from . import sqlite_schema as sql
from .caps import Caps
from .sql_admin import SqlAdmin

# This process's id, kept current across forks (os.getpid() is a system call).
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))

# Connections inherited from a parent process: never used, never closed (closing
# one in a child could checkpoint or unlink the parent's WAL files).
_INHERITED: list[sqlite3.Connection] = []


class SQLiteStore(SqlAdmin[sqlite3.Connection]):
    """Flows in one SQLite file: ``SQLiteStore("crux.db")``.

    ``lease_ttl`` is how long a crashed runner keeps a flow; ``synchronous`` is
    ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives a process crash,
    several times faster). ``clock`` is for tests (``FakeClock``).
    """

    _sql = sql.STATEMENTS

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
        self._where = repr(self.path)
        self._at = f"in {self.path!r}"
        self.synchronous = mode
        self.lease_ttl: timedelta = to_duration(lease_ttl, what="lease_ttl")
        self.busy_timeout = to_duration(busy_timeout, what="busy_timeout").total_seconds()
        self.clock: Clock = clock or SYSTEM_CLOCK
        # A path that names no file yet is a new, empty store (quiet here: Flow.run
        # makes one; a Worker on it warns, see Caps.created).
        created = self.path != ":memory:" and not os.path.exists(self.path)
        self.caps = Caps(
            where=f"{type(self).__name__}({self.path!r})",
            counts=True,
            browses=True,
            created=created,
            schedules=True,
            limits=True,
            signals=True,
            forks=True,
            streams=True,
        )
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
    def _lease_write(self) -> Iterator[sqlite3.Connection]:
        """A claim's transaction, committed without an fsync even on ``FULL``: a
        lease lost to a power cut is harmless (its holder is gone too), and the
        next fsync'd commit (a step's, a park's) makes it durable with itself, as
        WAL commits are durable in order. A resume or a worker's claim then costs
        one fsync less."""
        if self.synchronous != "FULL":
            with self._write() as conn:
                yield conn
            return
        conn = self._conn()
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._write() as conn:
                yield conn
        finally:
            conn.execute("PRAGMA synchronous = FULL")

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

    def _all(self, query: str, params: Any = ()) -> list[Any]:
        """One read statement outside a transaction, its errors as ``StoreError``."""
        try:
            return self._conn().execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    def _execute(self, query: str, params: Any) -> int:
        """One write statement, its own implicit transaction: rows changed."""
        try:
            return self._conn().execute(query, params).rowcount
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

    def _put_fenced(self, conn: sqlite3.Connection | None, params: tuple[Any, ...]) -> bool:
        """A step's fenced record; a gap (the schema's trigger aborted the statement,
        and only it) is ``False`` like any record that does not fit: the write's full
        transaction then says why."""
        try:
            cursor = (conn or self._conn()).execute(sql.STATEMENTS.PUT_RECORD_FENCED, params)
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.IntegrityError) and str(exc) == sql.GAP_ERROR:
                return False
            if conn is not None:
                raise  # the transaction's own handler says what failed
            raise self._failure(exc) from exc
        return cursor.rowcount == 1

    def _run(self, conn: sqlite3.Connection, query: str, params: Any = ()) -> sqlite3.Cursor:
        return conn.execute(query, params)

    def _run_many(self, conn: sqlite3.Connection, query: str, rows: Sequence[Any]) -> None:
        if len(rows) == 1:
            conn.execute(query, rows[0])
        elif rows:
            conn.executemany(query, rows)

    def _snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._read()

    def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._read()

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # gone with the transaction
                conn.execute("ROLLBACK TO item")
                conn.execute("RELEASE item")
            raise
        conn.execute("RELEASE item")

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

    def lease_rows(self, flow_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """The ``(status, lease_owner, cancel_reason, lease_expires)`` of each flow in
        *flow_ids* that exists, in one read, for the lease checks of a concurrent
        worker (``check_leases``).

        Read on one connection this process's threads share (under a lock): each
        commit by another connection empties a connection's page cache, so one
        reader for all of them reads again once per batch, not once per thread.
        """
        if not flow_ids:
            return {}
        with self._shared_lock:
            conn = self._shared
            if conn is None or self._shared_pid != _PID[0]:
                conn = self._shared = self._open()
                self._shared_pid = _PID[0]
            try:
                if len(flow_ids) == 1:
                    found = conn.execute(self._sql.LEASE_ROW, (flow_ids[0],)).fetchall()
                else:
                    found = conn.execute(self._sql.LEASE_ROWS, (json.dumps(flow_ids),)).fetchall()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        return {row[0]: tuple(row[1:]) for row in found}

    def match_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the primary key: ids >= prefix and < prefix with its last
        # character bumped (UTF-8 keeps code point order), so only matches are read.
        params: tuple[Any, ...] = (int(limit),)
        query = "SELECT id FROM flows ORDER BY id LIMIT ?"
        if prefix:
            upper = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
            query = "SELECT id FROM flows WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
            params = (prefix, upper, int(limit))
        rows = self._all(query, params)
        return [row[0] for row in rows if row[0].startswith(prefix)]

    def __repr__(self) -> str:
        return (
            f"SQLiteStore({self.path!r}, lease_ttl={format_duration(self.lease_ttl)!r}, "
            f"synchronous={self.synchronous!r})"
        )
