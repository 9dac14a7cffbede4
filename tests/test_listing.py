"""Finding flows from Python, on every store: ``list_flows(since=, until=)``,
``iter_flows``, ``count_flows``, and ``FlowSummary.waits`` (the structure behind
the display string ``waiting_for``) for each kind of wait a real flow parks on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from crux_gen import (
    All,
    Child,
    FlowSummary,
    InvalidValueError,
    Retry,
    Sleep,
    Step,
    Suspend,
    Wait,
    WaitUntil,
    count_flows,
    flow,
    iter_flows,
    list_flows,
    signal_flow,
)
from crux_gen import Any as AnyOf
from crux_gen.clock import FakeClock
from crux_gen.testing import FlowHarness


@flow("listing-approval")
def approval(ctx: Any) -> Any:
    return (yield Suspend("approved", timeout="1h"))


@flow("listing-nap")
def nap(ctx: Any) -> Any:
    yield Sleep("nap", "2h")


@flow("listing-poll")
def poll(ctx: Any) -> Any:
    return (yield WaitUntil("ready", lambda: False, every="5m", timeout="1d"))


def flaky() -> None:
    raise RuntimeError("down")


@flow("listing-flaky")
def flaky_flow(ctx: Any) -> Any:
    yield Step("charge", flaky, retry=Retry(attempts=3, backoff="fixed", delay="30s"))


@flow("listing-parent")
def parent(ctx: Any) -> Any:
    return (yield Child(approval, flow_id=f"{ctx.flow_id}-child"))


@flow("listing-race")
def race(ctx: Any) -> Any:
    return (
        yield AnyOf(
            [
                Suspend("yes"),
                Suspend("no|maybe"),
                Sleep("give-up", "3d"),
                Child(approval, flow_id=f"{ctx.flow_id}-kid"),
            ]
        )
    )


@flow("listing-fan")
def fan(ctx: Any) -> Any:
    return (yield All([Child(approval, flow_id=f"{ctx.flow_id}-{n}") for n in range(2)]))


def summary(store: Any, flow_id: str) -> FlowSummary:
    [found] = [s for s in list_flows(store=store, limit=1000) if s.flow_id == flow_id]
    return found


def test_waits_say_what_each_kind_of_park_waits_for(store: Any, clock: FakeClock) -> None:
    now = clock.now()
    for f in (approval, nap, poll, flaky_flow, parent, race, fan):
        f.run(store=store, flow_id=f.name)
    assert summary(store, "listing-approval").waits == (
        Wait("signal", "approved", now + timedelta(hours=1)),
    )
    assert summary(store, "listing-approval").waiting_for == "approved"
    assert summary(store, "listing-nap").waits == (Wait("timer", "nap", now + timedelta(hours=2)),)
    assert summary(store, "listing-poll").waits == (
        Wait("condition", "ready", now + timedelta(days=1)),
    )
    assert summary(store, "listing-flaky").waits == (
        Wait("timer", "charge", now + timedelta(seconds=30)),
    )
    child = summary(store, "listing-parent")
    assert child.waits == (Wait("child", "listing-approval", None, "listing-parent-child"),)
    assert child.waiting_for == "child listing-parent-child"
    race_summary = summary(store, "listing-race")
    assert race_summary.waits == (
        Wait("signal", "yes"),
        Wait("signal", "no|maybe"),
        Wait("timer", "give-up", now + timedelta(days=3)),
        Wait("child", "listing-approval", None, "listing-race-kid"),
    )
    assert race_summary.waiting_for == "yes | no|maybe | give-up | child listing-race-kid"
    assert summary(store, "listing-fan").waits == (
        Wait("child", "listing-approval", None, "listing-fan-0"),
        Wait("child", "listing-approval", None, "listing-fan-1"),
    )
    signal_flow("listing-approval", "approved", True, store=store)
    approval.run(store=store, resume="listing-approval")
    done = summary(store, "listing-approval")
    assert (done.status, done.waits) == ("completed", ())


def test_iter_flows_yields_every_match_once_page_by_page(store: Any, clock: FakeClock) -> None:
    ids = []
    for n in range(23):
        ids.append(nap.run(store=store, flow_id=f"nap-{n:02d}").flow_id)
        if n % 3 == 0:
            clock.advance("1s")  # several flows share each instant
    approval.run(store=store, flow_id="other")
    seen = [s.flow_id for s in iter_flows(store=store, name="listing-nap", page_size=4)]
    assert sorted(seen) == ids  # each once
    assert seen == [s.flow_id for s in list_flows(store=store, name="listing-nap", limit=100)]
    assert count_flows(store=store, name="listing-nap") == 23
    assert count_flows(store=store) == 24
    assert count_flows(store=store, status="completed") == 0
    assert list(iter_flows(store=store, status="failed")) == []


def test_since_and_until_bound_the_update_time(store: Any, clock: FakeClock) -> None:
    start = clock.now()
    for n in range(6):
        nap.run(store=store, flow_id=f"t{n}")
        clock.advance("1h")
    at = [start + timedelta(hours=n) for n in range(6)]
    assert [s.flow_id for s in list_flows(store=store, since=at[4])] == ["t5", "t4"]
    assert [s.flow_id for s in list_flows(store=store, until=at[1])] == ["t0"]
    assert [s.flow_id for s in iter_flows(store=store, since=at[1], until=at[4], page_size=2)] == [
        "t3",
        "t2",
        "t1",
    ]
    assert count_flows(store=store, since=at[1], until=at[4]) == 3
    with pytest.raises(InvalidValueError, match="timezone-aware"):
        list_flows(store=store, since=at[0].replace(tzinfo=None))
    with pytest.raises(InvalidValueError, match="bogus"):
        count_flows(store=store, status="bogus")


def test_a_harness_signal_with_a_key_is_stored_once() -> None:
    h = FlowHarness(approval)
    h.run()
    assert h.signal("approved", "first", key="delivery-1") is True
    assert h.signal("approved", "again", key="delivery-1") is False
    h.run()
    assert (h.status, h.value) == ("completed", "first")
    assert [s.payload for s in h.info.signals] == ["first"]
