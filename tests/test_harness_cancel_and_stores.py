"""FlowHarness: cancelling a flow under test, running it on a store of the test's own,
and what a failing assertion prints about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crux_gen import FakeClock, FlowContext, Registry, SQLiteStore, Step, Suspend, flow
from crux_gen.testing import FlowHarness


@flow("harness-signup", registry=Registry())
def signup(ctx: FlowContext) -> Any:
    yield Step("send-welcome", lambda: "sent")
    yield Suspend("email-verified", timeout="24h")
    return (yield Step("make-plan", lambda: "plan"))


def test_a_cancelled_flow_ends_cancelled_and_runs_nothing_more() -> None:
    h = FlowHarness(signup, fakes={"make-plan": "a plan"})
    h.run()
    assert h.cancel("account deleted") is True
    assert h.status == "cancelled" and h.info.cancel_reason == "account deleted"
    assert h.run().status == "cancelled"
    assert h.steps_called == ["send-welcome"]
    assert h.cancel() is False  # already finished: nothing changes
    assert h.info.cancel_reason == "account deleted"


def test_the_harness_runs_on_a_store_built_on_its_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "crux.db", clock=clock)
    h = FlowHarness(signup, store=store, clock=clock)
    h.run()
    h.advance("25h")
    assert h.run().status == "expired" and h.now == clock.now()
    store.close()


def test_a_clock_other_than_the_stores_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "crux.db", clock=FakeClock())
    with pytest.raises(ValueError, match="a store built on that clock"):
        FlowHarness(signup, store=store, clock=FakeClock())
    store.close()


def test_a_harness_shows_its_flow_id_and_status() -> None:
    h = FlowHarness(signup, flow_id="t-1")
    assert repr(h) == "FlowHarness('harness-signup', flow_id='t-1', status=None)"
    h.run()
    assert repr(h) == "FlowHarness('harness-signup', flow_id='t-1', status=suspended)"
