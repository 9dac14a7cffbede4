"""The testing kit: FlowHarness (fake clock, step fakes, call records) and the pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    FlowNotFoundError,
    ParkingWarning,
    Retry,
    Sleep,
    Step,
    Suspend,
    WaitUntil,
    default_registry,
    flow,
)
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.testing import FlowHarness

# Loads the fixtures in a source checkout; when crux-gen is installed, pytest has
# loaded them already from the pytest11 entry point (named after the module, so
# this line then does nothing).
pytest_plugins = ["crux_gen.pytest_plugin"]

REPO = Path(__file__).resolve().parents[1]
PLUGIN_BY_NAME = ["-p", "crux_gen.pytest_plugin"]


@attrs.frozen
class EmailVerified:
    verified_at: str


def real_plan(name: str) -> str:
    raise AssertionError("the real LLM call must not run in tests")


@flow("harness-onboarding")
def onboarding(ctx: FlowContext) -> Any:
    yield Step("send-welcome", lambda: {"to": ctx.input["email"]})
    verification = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")
    plan = yield Step(
        "first-week-plan",
        lambda: real_plan(ctx.input["name"]),
        retry=Retry(attempts=3, backoff="exponential", delay="1h"),
    )
    started = ctx.now()
    return {"plan": plan, "verified_at": verification.verified_at, "at": started.isoformat()}


INPUT = {"email": "ada@example.com", "name": "Ada"}


def test_a_24_hour_timeout_runs_in_milliseconds() -> None:
    began = time.perf_counter()
    h = FlowHarness(onboarding, input=INPUT)
    assert h.status is None  # not started yet
    h.run()
    assert (h.status, h.waiting_for) == ("suspended", "email-verified")
    assert h.result is not None and h.result.wake_at == h.now + timedelta(hours=24)
    h.advance("23h")
    assert h.run().status == "suspended"
    h.advance("2h")
    assert h.run().status == "expired"
    assert h.steps_called == ["send-welcome"]  # replays called nothing again
    assert time.perf_counter() - began < 1.0


def test_signal_then_run_completes_with_the_fake_step() -> None:
    h = FlowHarness(onboarding, input=INPUT, fakes={"first-week-plan": lambda: "a plan"})
    h.run()
    h.signal("email-verified", {"verified_at": "2026-11-24T10:00:00Z"})
    h.advance("5m")
    r = h.run()
    assert (r.status, h.status) == ("completed", "completed")
    assert h.value == {
        "plan": "a plan",
        "verified_at": "2026-11-24T10:00:00Z",
        "at": "2026-01-01T00:05:00+00:00",  # ctx.now() reads the harness's fake clock
    }
    assert h.steps_called == ["send-welcome", "first-week-plan"]
    assert h.result == r and r.flow_id == h.flow_id == h.info.flow_id
    assert [e.name for e in h.info.history] == [
        "send-welcome",
        "email-verified",
        "first-week-plan",
        "now",
    ]
    h.run()  # a finished flow runs nothing
    assert h.steps_called == ["send-welcome", "first-week-plan"]


def test_a_rejected_signal_keeps_the_flow_waiting() -> None:
    h = FlowHarness(onboarding, input=INPUT, fakes={"first-week-plan": "a plan"})
    h.run()
    h.signal("email-verified", {"verified": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert h.run().status == "suspended"
    assert [(s.state, s.error is not None) for s in h.info.signals] == [("rejected", True)]


def test_fakes_may_raise_and_retries_wait_on_the_fake_clock() -> None:
    h = FlowHarness(onboarding, input=INPUT, fakes={"first-week-plan": TimeoutError("LLM slow")})
    h.run()
    h.signal("email-verified", {"verified_at": "x"})
    assert h.run().status == "suspended"  # first try failed, a 1h backoff parks the flow
    assert h.waiting_for == "first-week-plan"
    h.advance("1h")
    assert h.run().status == "suspended"  # second try failed, now 2h
    h.advance("2h")
    assert h.run().status == "failed"
    assert h.error is not None and h.error.type == "builtins.TimeoutError"
    assert h.steps_called == ["send-welcome"] + ["first-week-plan"] * 3

    h.fakes["first-week-plan"] = lambda: "plan B"  # "deploy the fix", then crux-gen retry
    h.retry()
    assert h.run().status == "completed"
    assert h.value["plan"] == "plan B"
    assert h.steps_called.count("send-welcome") == 1


def test_fake_exception_classes_are_raised_and_the_flow_can_catch_them() -> None:
    @flow("harness-compensate")
    def compensate(ctx: FlowContext) -> Any:
        try:
            yield Step("charge", lambda: "charged")
        except ValueError as exc:
            reason = str(exc)
            yield Step("refund", lambda: f"refunded after {reason}")
            return "refunded"
        return "charged"

    h = FlowHarness(compensate, fakes={"charge": ValueError})
    assert h.run().value == "refunded"
    assert h.steps_called == ["charge", "refund"]
    assert FlowHarness(compensate).run().value == "charged"  # no fakes: the real step


def test_wait_until_and_sleep_move_with_the_fake_clock() -> None:
    paid = {"yet": False}

    @flow("harness-invoice")
    def invoice(ctx: FlowContext) -> Any:
        yield Sleep("grace", "2d")
        return (yield WaitUntil("paid", lambda: paid["yet"], every="1h", timeout="3d"))

    h = FlowHarness(invoice)
    assert h.run().status == "suspended"
    h.advance("2d")
    assert (h.run().status, h.waiting_for) == ("suspended", "paid")
    h.fakes["paid"] = {"amount": 10}  # a fake condition: a value, returned
    h.advance("1h")
    assert h.run().value == {"amount": 10}
    assert h.steps_called == []  # WaitUntil conditions are not steps


def test_the_harness_passes_closes_through_so_finally_blocks_still_warn() -> None:
    @flow("harness-finally")
    def parks_in_try(ctx: FlowContext) -> Any:
        try:
            yield Suspend("go")
        finally:
            yield Step("cleanup", lambda: None)

    h = FlowHarness(parks_in_try)
    with pytest.warns(ParkingWarning, match="cleanup"):
        h.run()
    assert h.steps_called == []


def test_the_harness_leaves_the_registered_flow_alone() -> None:
    FlowHarness(onboarding, input=INPUT, fakes={"send-welcome": None}).run()
    assert default_registry.get("harness-onboarding") is onboarding


def test_bad_harness_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="needs a Flow"):
        FlowHarness(lambda ctx: None)  # type: ignore[arg-type]
    h = FlowHarness(onboarding, input=INPUT)
    with pytest.raises(FlowNotFoundError):
        h.signal("email-verified", {})  # the flow does not exist before the first run
    with pytest.raises(TypeError, match="FakeClock"):
        FlowHarness(onboarding, store=SQLiteStore(":memory:")).advance("1h")


# -- the pytest plugin -----------------------------------------------------------------


def test_plugin_fixtures_give_a_sqlite_store_on_the_fake_clock(
    crux_store: SQLiteStore, crux_clock: FakeClock, crux_harness: Callable[..., FlowHarness]
) -> None:
    assert isinstance(crux_store, SQLiteStore) and crux_store.clock is crux_clock
    h = crux_harness(onboarding, input=INPUT, fakes={"first-week-plan": "p"})
    assert h.store is crux_store
    h.run()
    crux_clock.advance("25h")
    assert h.run().status == "expired"
    assert crux_store.load(h.flow_id).status == "expired"
    assert isinstance(crux_clock.now(), datetime)


def test_the_plugin_loads_once_from_an_entry_point_name_and_pytest_plugins(
    tmp_path: Path,
) -> None:
    # `-p crux_gen.pytest_plugin` registers the plugin under the module name, as
    # the pytest11 entry point of an installed crux-gen does; the conftest's
    # pytest_plugins line must then be a no-op, not a duplicate registration.
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["crux_gen.pytest_plugin"]\n')
    (tmp_path / "test_uses_fixtures.py").write_text(
        "def test_fixtures(crux_store, crux_clock):\n    assert crux_store.clock is crux_clock\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN_BY_NAME],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
