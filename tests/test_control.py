"""Acting on stored flows from Python, without running them: idempotent signals,
listing with keyset paging, deleting finished flows. On every store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from crux_gen import (
    CruxError,
    FakeClock,
    FlowContext,
    FlowStateError,
    FlowSummary,
    Step,
    Suspend,
    cancel_flow,
    delete_flow,
    flow,
    get_flow,
    list_flows,
    signal_flow,
)


@flow("control-demo")
def waits(ctx: FlowContext) -> Any:
    yield Step("one", lambda: 1)
    return (yield Suspend("go"))


def test_a_signal_key_makes_a_second_send_store_nothing_and_return_false(store: Any) -> None:
    r = waits.run(store=store)
    assert signal_flow(r.flow_id, "go", "first", store=store, key="link-token") is True
    assert signal_flow(r.flow_id, "go", "second", store=store, key="link-token") is False
    assert signal_flow(r.flow_id, "go", "keyless", store=store) is True
    signals = get_flow(r.flow_id, store=store).signals
    assert [(s.payload, s.key) for s in signals] == [("first", "link-token"), ("keyless", None)]
    done = waits.run(resume=r.flow_id, store=store)
    assert (done.status, done.value) == ("completed", "first")
    # The link clicked again after the flow finished: answered, not an error.
    assert signal_flow(r.flow_id, "go", "third", store=store, key="link-token") is False


@pytest.mark.parametrize("bad", ["", 7, b"k"])
def test_a_bad_signal_key_is_refused_and_nothing_is_stored(store: Any, bad: Any) -> None:
    r = waits.run(store=store)
    with pytest.raises(CruxError, match="signal key"):
        signal_flow(r.flow_id, "go", 1, store=store, key=bad)
    assert get_flow(r.flow_id, store=store).signals == ()


def test_list_flows_gives_summaries_newest_first_and_pages_by_updated_at(
    store: Any, clock: FakeClock
) -> None:
    ids = []
    for _ in range(5):
        ids.append(waits.run(store=store).flow_id)
        clock.advance("1s")
    assert cancel_flow(ids[0], "stop", store=store) is True  # now the newest update

    first = list_flows(store=store, limit=2)
    assert all(isinstance(s, FlowSummary) for s in first)
    assert [s.flow_id for s in first] == [ids[0], ids[4]]
    assert (first[0].status, first[1].status, first[1].waiting_for) == (
        "cancelled",
        "suspended",
        "go",
    )
    assert first[0].updated_at.tzinfo is not None
    seen = [s.flow_id for s in first]
    page = first
    while page:
        page = list_flows(store=store, limit=2, before=page[-1].updated_at)
        seen += [s.flow_id for s in page]
    assert seen == [ids[0], ids[4], ids[3], ids[2], ids[1]]
    suspended = list_flows(store=store, status="suspended", name="control-demo")
    assert [s.flow_id for s in suspended] == [ids[4], ids[3], ids[2], ids[1]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "sleeping"},
        {"limit": 0},
        {"before": "yesterday"},
        {"before": datetime(2026, 1, 1)},  # naive
    ],
)
def test_list_flows_refuses_bad_arguments_naming_them(store: Any, kwargs: Any) -> None:
    with pytest.raises(CruxError) as info:
        list_flows(store=store, **kwargs)
    assert isinstance(info.value, ValueError | TypeError)
    assert next(iter(kwargs)) in str(info.value)


def test_delete_flow_removes_a_finished_flow_and_refuses_an_unfinished_one(store: Any) -> None:
    r = waits.run(store=store)
    with pytest.raises(FlowStateError, match="cancel it first"):
        delete_flow(r.flow_id, store=store)
    assert get_flow(r.flow_id, store=store).status == "suspended"
    cancel_flow(r.flow_id, "done with it", store=store)
    assert delete_flow(r.flow_id, store=store) is True
    assert list_flows(store=store) == []
    assert delete_flow(r.flow_id, store=store) is False


def test_summaries_carry_aware_utc_times(store: Any, clock: FakeClock) -> None:
    r = waits.run(store=store)
    [summary] = list_flows(store=store)
    assert summary.flow_id == r.flow_id
    assert summary.created_at == summary.updated_at == clock.now()
    assert summary.created_at.tzinfo == timezone.utc
    assert summary.wake_at is None
