"""Shared fixtures: every behaviour test runs on each store, with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crux_gen import FakeClock
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    s = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)
    yield s
    s.close()
