"""pytest fixtures for testing flows.

- ``crux_clock``: a ``FakeClock`` (``crux_clock.advance("24h")``).
- ``crux_store``: a fresh ``SQLiteStore`` in ``tmp_path`` running on ``crux_clock``.
- ``crux_harness``: ``crux_harness(flow, input=..., fakes=...)`` makes a
  :class:`~crux_gen.testing.FlowHarness` on ``crux_store``.

Installed with crux-gen, pytest loads this plugin by itself (entry point
``pytest11``). From a source checkout, add to your top-level ``conftest.py``::

    pytest_plugins = ["crux_gen.pytest_plugin"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen.stores.sqlite import SQLiteStore

from .clock import FakeClock
from .flow import Flow
from .testing import FlowHarness


@pytest.fixture
def crux_clock() -> FakeClock:
    """A fake clock, 2026-01-01 UTC, that moves only on ``advance()``."""
    return FakeClock()


@pytest.fixture
def crux_store(tmp_path: Path, crux_clock: FakeClock) -> Iterator[SQLiteStore]:
    """A fresh SQLite store in the test's ``tmp_path``, on ``crux_clock``."""
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=crux_clock)
    yield store
    store.close()


@pytest.fixture
def crux_harness(crux_store: SQLiteStore) -> Callable[..., FlowHarness]:
    """Make a ``FlowHarness`` on ``crux_store``: ``crux_harness(flow, input=..., fakes=...)``."""

    def make(flow: Flow[Any], **options: Any) -> FlowHarness:
        return FlowHarness(flow, store=crux_store, **options)

    return make
