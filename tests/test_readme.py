"""The README's Python snippets run as written (docs are tests)."""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FakeClock
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.testing import FlowHarness

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def stubs() -> dict[str, Any]:
    sent: list[str] = []
    return {
        "sent": sent,
        "send_welcome": lambda email: sent.append(email) or {"to": email},
        "make_plan": lambda name: f"a plan for {name}",
        "schedule": lambda email, plan: {"email": email, "plan": plan},
    }


def test_the_quick_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = stubs()
    exec(python_blocks()[0], namespace)
    r = namespace["r"]
    assert (r.status, r.value) == (
        "completed",
        {"email": "user@example.com", "plan": "a plan for Henri"},
    )
    assert namespace["sent"] == ["user@example.com"]  # the welcome went out once


def test_the_testing_snippets_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    namespace = stubs()
    exec(blocks[0], namespace)  # the tour defines onboarding and EmailVerified
    testing = [b for b in blocks if "def test_" in b]
    assert len(testing) >= 2
    ran = []
    for n, block in enumerate(testing):
        exec(block, namespace)
        for name, fn in list(namespace.items()):
            if not name.startswith("test_") or name in ran:
                continue
            clock = FakeClock()
            store = SQLiteStore(tmp_path / f"{n}-{name}.db", synchronous="NORMAL", clock=clock)
            fixtures = {
                "crux_clock": clock,
                "crux_store": store,
                "crux_harness": functools.partial(FlowHarness, store=store),
            }
            fn(**{p: fixtures[p] for p in inspect.signature(fn).parameters})
            ran.append(name)
    assert len(ran) >= 5
