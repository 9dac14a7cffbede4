"""The PostgreSQL server the tests use: one per test session, a fresh schema per test.

- ``CRUX_TEST_PG_URL`` set: that server is used as it is (nothing is started or
  reconfigured); each test's schema or database is created there and dropped after.
- Otherwise pgserver (in the ``test`` extra) starts a throwaway PostgreSQL 16 in a
  temporary directory, on a unix socket (as root too: it runs the server as a
  system user of its own), with fsync off (its data is deleted at the end), and
  stops it when the session ends. It starts in about a second, and only when a
  test needs it.
- Under CI (``CI=true``) nothing here skips: a server that cannot start, or a
  missing ``stores/postgres.py``, fails every test that needs it, saying why.
  Elsewhere those tests are skipped with the reason.

``tests/conftest.py`` turns these into fixtures: ``pg_server`` (session),
``pg_schema`` and ``pg_database`` (per test), and the ``"postgres"`` param of ``store``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

URL_ENV = "CRUX_TEST_PG_URL"
REINSTALL = ".venv/bin/pip install --config-settings editable_mode=strict -e '.[test]'"
MODULE = "crux_gen.stores.postgres"
SOURCE = Path(__file__).resolve().parent.parent / "stores" / "postgres.py"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test saying why; under CI, fail it instead (never skipped there)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def store_class() -> Any:
    """``crux_gen.stores.postgres.PostgresStore``, or the reason the tests cannot have it."""
    if importlib.util.find_spec(MODULE) is None:
        if SOURCE.exists():  # strict editable mode: a new module needs a reinstall
            unavailable(f"stores/postgres.py is there but not installed: {REINSTALL}")
        unavailable("stores/postgres.py not there yet")
    return importlib.import_module(MODULE).PostgresStore  # an import error is an error


def psycopg() -> Any:
    try:
        return importlib.import_module("psycopg")
    except ImportError as e:
        unavailable(f"psycopg is not installed ({e}): {REINSTALL}")


def new_name() -> str:
    """A schema or database name no other test uses."""
    return f"t_{secrets.token_hex(6)}"


def with_database(url: str, dbname: str) -> str:
    """*url* with its database replaced by *dbname* (a URL stays a URL)."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + quote(dbname)))
    return str(psycopg().conninfo.make_conninfo(url, dbname=dbname))


def redacted(url: str) -> str:
    """*url* without its password, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# -- the server ------------------------------------------------------------------------


class Server:
    """A PostgreSQL server and one autocommit connection to it, for creating and
    dropping the tests' schemas and databases."""

    def __init__(self, url: str, stop: Callable[[], None] = lambda: None) -> None:
        self.url = url
        self._stop = stop
        self._lock = threading.Lock()
        try:
            self.admin = psycopg().connect(url, autocommit=True, connect_timeout=10)
        except Exception as e:
            stop()
            unavailable(f"cannot connect to the test server {redacted(url)}: {e}")
        # A test's leftover transaction must not make DROP wait forever.
        self.admin.execute("SET lock_timeout = '10s'")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self.admin.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def drop_schema(self, name: str) -> None:
        self.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def create_database(self) -> str:
        name = new_name()
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.admin.close()
        self._stop()


#: The longest path of a unix socket (``sun_path`` is 108 bytes on Linux, 104 on macOS).
SOCKET_PATH_MAX = 103


def short_tempdir() -> str:
    """The temporary folder, unless it is too long for the server's socket in it
    (``<dir>/crux-pg-XXXXXXXX/data/.s.PGSQL.5432``): then ``/tmp``. Under a long
    ``TMPDIR`` pgserver cannot start at all ("Could not find a suitable socket path");
    ``tests/test_ui_browser.py`` gives it to Chromium, for its SingletonSocket."""
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) + len("/crux-pg-XXXXXXXX/data/.s.PGSQL.5432") <= SOCKET_PATH_MAX:
        return base
    return "/tmp" if os.access("/tmp", os.W_OK) else base


def start_server() -> Server:
    """The server of ``CRUX_TEST_PG_URL``, or a new pgserver in a temporary directory."""
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return Server(url)
    psycopg()
    # platformdirs (through pgserver) warns when XDG_RUNTIME_DIR is unset; it reads
    # it once, when pgserver is imported.
    base = short_tempdir()
    saved = os.environ.get("XDG_RUNTIME_DIR")
    if not saved:
        runtime = Path(base) / f"crux-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pgserver
    except ImportError as e:
        unavailable(f"pgserver is not installed ({e}): {REINSTALL}; or set {URL_ENV}")
    finally:
        if not saved:
            del os.environ["XDG_RUNTIME_DIR"]
    top = Path(tempfile.mkdtemp(prefix="crux-pg-", dir=base))
    try:
        server = pgserver.get_server(top / "data", cleanup_mode="delete")
    except Exception as e:
        log = top / "data" / "log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"
        shutil.rmtree(top, ignore_errors=True)
        unavailable(f"pgserver could not start PostgreSQL in {top}: {e!r}\n{tail}")

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.cleanup()
        shutil.rmtree(top, ignore_errors=True)

    made = Server(server.get_uri(), stop)
    # Throwaway data: no fsync, so the tests measure the store, not the disk.
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        made.execute(f"ALTER SYSTEM SET {setting} = off")
    made.execute("SELECT pg_reload_conf()")
    return made


# -- a TCP door to the server that the tests can close and open again ---------------------


def free_port() -> int:
    """A loopback port nothing listens on (as long as nobody takes it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """``127.0.0.1:port`` relayed to the test server: ``close()`` makes the server
    unreachable (listener and live connections gone), ``open()`` brings it back on
    the same port. ``url`` is the server's URL through it."""

    def __init__(self, server_url: str) -> None:
        info = psycopg().conninfo.conninfo_to_dict(server_url)
        host = str(info.get("host") or "/var/run/postgresql").split(",")[0]
        port = int(str(info.get("port") or "5432").split(",")[0])
        if host.startswith("/"):
            self._target: tuple[int, Any] = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._target = (socket.AF_INET, (host, port))
        self.port = free_port()
        user = quote(str(info.get("user") or "postgres"))
        password = info.get("password")
        auth = f"{user}:{quote(str(password))}" if password else user
        dbname = quote(str(info.get("dbname") or "postgres"))
        self.url = f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def database(self, dbname: str) -> str:
        return with_database(self.url, dbname)

    def open(self) -> Proxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            live, self._open = self._open, set()
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            family, address = self._target
            upstream = socket.socket(family)
            try:
                upstream.connect(address)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._listener is not listener:  # closed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for conn in (source, sink):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Proxy:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def fresh_schema(server: Server) -> Iterator[str]:
    """A schema name no test has used; the schema (if the store made it) is dropped after."""
    name = new_name()
    try:
        yield name
    finally:
        server.drop_schema(name)


@contextlib.contextmanager
def fresh_database(server: Server) -> Iterator[str]:
    """The URL of a new, empty database on *server*; dropped after (connections and all)."""
    name = server.create_database()
    try:
        yield with_database(server.url, name)
    finally:
        server.drop_database(name)


def run_in(store: Any, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run *query* in a ``PostgresStore``'s own schema, outside the store (a test that
    overwrites a stored column as something outside crux_gen might)."""
    options = f"-c search_path={store.schema}"
    with psycopg().connect(store.url, autocommit=True, options=options) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []
