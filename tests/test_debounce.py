"""``Debounce(period, key=, max_wait=)``: a start creates the flow pending, due at now
+ period; a start while it is pending replaces its input and moves it (never past
max_wait after the first start); the same flow id is returned. On every store
(``store`` fixture), driven by a ``FakeClock`` and ``Worker.run_once``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from crux_gen import (
    Debounce,
    InvalidTypeError,
    InvalidValueError,
    Step,
    count_flows,
    flow,
)
from crux_gen.testing import FlowHarness
from crux_gen.worker import Worker

RAN: list[Any] = []


def _record(ctx: Any) -> Any:
    return (yield Step("index", lambda: RAN.append(ctx.input) or ctx.input))


reindex = flow("db-reindex", debounce=Debounce("30s", key=lambda i: i["doc"]))(_record)
capped = flow("db-capped", debounce=Debounce("30s", key=lambda i: i["doc"], max_wait="1m"))(_record)
whole = flow("db-whole", debounce=Debounce(timedelta(seconds=5)))(_record)


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def test_a_start_is_pending_and_runs_once_its_period_passed(store: Any, clock: Any) -> None:
    h = reindex.start(input={"doc": "d1", "v": 1}, store=store)
    info = h.info()
    assert info.status == "pending"
    assert info.wake_at is not None
    assert info.wake_at.timestamp() == pytest.approx(store.clock.time() + 30)
    worker = Worker(store=store, flows=[reindex])
    clock.advance("29s")
    assert worker.run_once() == 0 and RAN == []
    clock.advance("1s")
    assert worker.run_once() == 1
    assert RAN == [{"doc": "d1", "v": 1}]
    assert h.result(timeout=5).status == "completed"


def test_a_hundred_starts_collapse_into_one_run_with_the_last_input(store: Any, clock: Any) -> None:
    worker = Worker(store=store, flows=[reindex])
    ids = set()
    for v in range(100):
        ids.add(reindex.start(input={"doc": "d1", "v": v}, store=store).flow_id)
        clock.advance("1s")  # each start comes before the period ends: it moves
        assert worker.run_once() == 0
    assert len(ids) == 1 and count_flows(store=store) == 1
    clock.advance("30s")
    assert worker.run_once() == 1
    assert RAN == [{"doc": "d1", "v": 99}]


def test_max_wait_bounds_how_far_starts_move_it(store: Any, clock: Any) -> None:
    worker = Worker(store=store, flows=[capped])
    first = store.clock.time()
    h = capped.start(input={"doc": "d", "v": 0}, store=store)
    for v in range(1, 10):
        clock.advance("10s")
        capped.start(input={"doc": "d", "v": v}, store=store)
        worker.run_once()
        if RAN:
            break
    wake = store.load(h.flow_id).wake_at
    assert wake is None or wake <= first + 60  # never later than max_wait after the first
    assert RAN == [{"doc": "d", "v": 6}]  # the start at +60s found it due: it ran then
    assert store.clock.time() == first + 60


def test_keys_are_apart_and_without_a_key_there_is_one_per_name(store: Any, clock: Any) -> None:
    a = reindex.start(input={"doc": "a"}, store=store)
    b = reindex.start(input={"doc": "b"}, store=store)
    assert a.flow_id != b.flow_id
    x = whole.start(input={"doc": "a"}, store=store)
    y = whole.start(input={"doc": "b"}, store=store)
    assert x.flow_id == y.flow_id and y.info().input == {"doc": "b"}
    clock.advance("1m")
    Worker(store=store).run_once()
    assert sorted(map(str, RAN)) == sorted(map(str, [{"doc": "a"}, {"doc": "b"}, {"doc": "b"}]))


def test_a_start_after_the_flow_was_taken_creates_a_new_one(store: Any, clock: Any) -> None:
    h = reindex.start(input={"doc": "d", "v": 1}, store=store)
    clock.advance("30s")
    [taken] = store.claim_due(store.clock.time(), 5, "worker-1")  # a worker holds it now
    assert taken.id == h.flow_id
    again = reindex.start(input={"doc": "d", "v": 2}, store=store)
    assert again.flow_id != h.flow_id
    assert store.load(h.flow_id).input == '{"doc":"d","v":1}'  # the taken one keeps its input
    assert again.info().status == "pending"
    third = reindex.start(input={"doc": "d", "v": 3}, store=store)
    assert third.flow_id == again.flow_id and third.info().input == {"doc": "d", "v": 3}


def test_run_of_a_debounced_flow_starts_it_pending_and_runs_nothing(store: Any) -> None:
    r = reindex.run(input={"doc": "d", "v": 1}, store=store)
    assert r.status == "pending" and RAN == []
    again = reindex.run(input={"doc": "d", "v": 2}, store=store)
    assert again.flow_id == r.flow_id
    assert store.load(r.flow_id).input == '{"doc":"d","v":2}'


def test_the_harness_honours_debounce() -> None:
    h = FlowHarness(reindex, input={"doc": "d", "v": 0})
    assert h.run().status == "pending"
    for v in range(1, 5):
        h.advance("10s")
        assert h.start({"doc": "d", "v": v}).flow_id == h.flow_id
        assert h.run().status == "pending"
    assert h.steps_called == []
    h.advance("30s")
    assert h.run().status == "completed"
    assert (h.value, h.steps_called) == ({"doc": "d", "v": 4}, ["index"])


def test_bad_debounce_arguments_are_refused_naming_them() -> None:
    with pytest.raises(InvalidValueError, match="soon"):
        Debounce("soon")
    with pytest.raises(InvalidValueError, match="Debounce max_wait"):
        Debounce("1s", max_wait="-1s")
    with pytest.raises(InvalidTypeError, match="Debounce key"):
        Debounce("1s", key="doc")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="debounce"):
        flow("db-bad", debounce="30s")(_record)  # type: ignore[arg-type]
