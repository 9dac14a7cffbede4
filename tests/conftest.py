"""Shared fixtures: every behaviour test runs on each store, with a fake clock.

The ``store`` fixture's params are ``memory``, ``sqlite`` and ``postgres``; the
PostgreSQL store gets a fresh schema of its own on one server per session
(``tests/pg.py``: pgserver, or the server of ``CRUX_TEST_PG_URL``). Under
``CI=true`` the PostgreSQL tests never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FakeClock
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore

from . import markers, pg

STORES = ["memory", "sqlite", "postgres"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test ``postgres``, ``browser``, ``processes``, ``slow`` as it needs
    (``tests/markers.py``), so ``-m "not slow"`` and the like select by them. The
    browser tests run on one pytest-xdist worker, one Chromium at a time, each module
    starting it once (its ``browser`` fixture), as in a run without workers."""
    for item in items:
        for name in markers.markers_of(item):
            item.add_marker(name)
            if name == "browser":  # one pytest-xdist worker runs them all (--dist loadgroup)
                item.add_marker(pytest.mark.xdist_group("browser"))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers ``-n auto`` (pyproject's addopts) starts: two per core, 4 on CI's
    2 cores, at most 8. Most of a test's time is spent waiting (on the processes it
    starts, fsync, PostgreSQL, Chromium), so more workers than cores pay; each worker
    starts its own PostgreSQL server when one of its tests needs one (``pg_server``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(8, 2 * (cores or 1)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.Server]:
    """One PostgreSQL server for the whole session, started when a test first needs it."""
    server = pg.start_server()
    yield server
    server.stop()


@pytest.fixture
def pg_schema(pg_server: pg.Server) -> Iterator[str]:
    """A schema name of this test's own on ``pg_server`` (dropped after)."""
    with pg.fresh_schema(pg_server) as name:
        yield name


@pytest.fixture
def pg_database(pg_server: pg.Server) -> Iterator[str]:
    """The URL of an empty database of this test's own (dropped after)."""
    with pg.fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def postgres_store_class() -> Any:
    """``PostgresStore``; skipped (failed under CI) while ``stores/postgres.py`` is missing."""
    return pg.store_class()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if request.param == "sqlite":
        s: Any = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)
    else:
        cls = pg.store_class()
        server = request.getfixturevalue("pg_server")
        schema = request.getfixturevalue("pg_schema")
        s = cls(server.url, schema=schema, clock=clock)
    yield s
    s.close()


@pytest.fixture
def store_kind(store: Any, request: pytest.FixtureRequest) -> str:
    """Which of ``STORES`` this test's ``store`` is (for the few backend-specific lines)."""
    return str(request.node.callspec.params["store"])


@pytest.fixture(params=STORES)
def target(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    """The store flows are migrated to: another one than ``store``, even of the same kind."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if request.param == "sqlite":
        s: Any = SQLiteStore(tmp_path / "target.db", synchronous="NORMAL", clock=clock)
        yield s
        s.close()
        return
    cls = pg.store_class()
    server = request.getfixturevalue("pg_server")
    with pg.fresh_schema(server) as schema:  # not pg_schema: the source may have that one
        s = cls(server.url, schema=schema, clock=clock)
        yield s
        s.close()
