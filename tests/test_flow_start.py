"""``Flow.start``: a flow created ``"pending"`` without running, idempotent by id,
taken by workers by priority then earliest due; ``FlowHandle``; the status
``"pending"`` through the transition table; ``priority`` and ``blocked_by`` in
reads, listings and the CLI. Every test runs on every store (``store`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowHandle,
    FlowNameConflictError,
    FlowTimeoutError,
    InvalidTypeError,
    InvalidValueError,
    SerializationError,
    SQLiteStore,
    Step,
    Suspend,
    count_flows,
    flow,
    get_flow,
    list_flows,
)
from crux_gen.records import NewPending, Write
from crux_gen.status import TRANSITIONS, Status
from crux_gen.worker import Worker

from .test_cli_bulk import ok, refused
from .test_store_contract import rec

RAN: list[str] = []


@flow("fs-job")
def job(ctx: Any) -> Any:
    return (yield Step("work", lambda: RAN.append(ctx.input["n"]) or ctx.input["n"]))


@flow("fs-wait")
def waits(ctx: Any) -> Any:
    return (yield Suspend("go"))


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def test_start_creates_a_pending_flow_and_runs_nothing_until_a_worker_takes_it(
    store: Any,
) -> None:
    h = job.start(input={"n": "a"}, store=store, priority=3)
    assert isinstance(h, FlowHandle) and h.name == "fs-job"
    assert RAN == []
    info = h.info()
    assert (info.status, info.priority, info.blocked_by, info.history) == ("pending", 3, None, ())
    assert info.input == {"n": "a"}
    stored = store.load(h.flow_id)
    assert stored.lease_owner is None and stored.wake_at == store.clock.time()
    assert Worker(store=store, flows=[job]).run_once() == 1
    assert RAN == ["a"]
    done = h.result(timeout=5)
    assert (done.status, done.value) == ("completed", "a")
    assert Worker(store=store, flows=[job]).run_once() == 0  # ran once, not again
    assert RAN == ["a"]


def test_a_second_start_with_the_same_id_returns_that_flow_and_changes_nothing(
    store: Any,
) -> None:
    first = job.start(input={"n": "first"}, store=store, flow_id="order-1")
    again = job.start(input={"n": "second"}, store=store, flow_id="order-1", priority=9)
    assert again.flow_id == first.flow_id == "order-1"
    assert (again.info().input, again.info().priority) == ({"n": "first"}, 0)
    assert count_flows(store=store) == 1
    with pytest.raises(FlowNameConflictError):
        waits.start(store=store, flow_id="order-1")
    Worker(store=store, flows=[job]).run_once()
    # Started again after it finished: still that flow, nothing runs again.
    assert job.start(input={"n": "third"}, store=store, flow_id="order-1").info().value == "first"
    assert Worker(store=store, flows=[job]).run_once() == 0
    assert RAN == ["first"]


def test_flow_run_of_a_started_id_runs_it_as_a_resume(store: Any) -> None:
    h = job.start(input={"n": "x"}, store=store, flow_id="r-1")
    r = job.run(input={"n": "ignored"}, store=store, flow_id="r-1")
    assert (r.status, r.value, RAN) == ("completed", "x", ["x"])
    assert h.info().status == "completed"


def test_workers_take_higher_priority_first_then_the_earliest_due(
    store: Any, clock: FakeClock
) -> None:
    job.start(input={"n": "low-old"}, store=store, priority=0)
    clock.advance("1s")
    job.start(input={"n": "high-new"}, store=store, priority=5)
    clock.advance("1s")
    job.start(input={"n": "high-newer"}, store=store, priority=5)
    job.start(input={"n": "negative"}, store=store, priority=-1)
    clock.advance("1s")
    job.start(input={"n": "low-new"}, store=store)
    worker = Worker(store=store, flows=[job])
    while worker.run_once():
        pass
    assert RAN == ["high-new", "high-newer", "low-old", "low-new", "negative"]


def test_claim_due_orders_a_suspended_flow_by_its_priority_too(store: Any) -> None:
    """The one claim path: every kind of due flow takes its place by priority."""
    now = store.clock.time()
    store.enqueue(NewPending("p-low", "fs-job", '{"n": 1}', priority=1), now)
    store.enqueue(NewPending("p-high", "fs-wait", "null", priority=8), now + 1)
    # p-high parks waiting for a signal; the signal makes it due again (later).
    [claimed] = store.claim_due(now + 2, 1, "w")
    assert claimed.id == "p-high"
    store.commit(
        "p-high", "w", now + 2, Write(status="suspended", waiting_for="go", wait_kind="suspend")
    )
    store.add_signal("p-high", "go", "1", now + 3)
    assert [f.id for f in store.claim_due(now + 4, 2, "w")] == ["p-high", "p-low"]


def test_pending_moves_through_the_one_transition_table(store: Any) -> None:
    for event, new in (
        ("step", "running"),
        ("park", "suspended"),
        ("complete", "completed"),
        ("fail", "failed"),
        ("expire", "expired"),
        ("cancel", "cancelled"),
    ):
        assert TRANSITIONS[(Status.PENDING, event)] == new
    now = store.clock.time()
    for flow_id in ("s", "p", "c", "x"):
        store.enqueue(NewPending(flow_id, "fs-job", "null"), now)
    for flow_id in ("s", "p", "c"):
        store.claim(flow_id, "w", now)
    store.commit("s", "w", now, Write(records=(rec(0),)))  # a step's write
    store.commit("p", "w", now, Write(status="suspended", waiting_for="go", wait_kind="suspend"))
    store.commit("c", "w", now, Write(status="completed", result="1"))
    assert store.cancel("x", "not needed", now)
    got = {f: (store.load(f).status, store.load(f).wake_at) for f in ("s", "p", "c", "x")}
    assert got == {
        "s": ("running", None),
        "p": ("suspended", None),
        "c": ("completed", None),
        "x": ("cancelled", None),
    }
    assert store.due(now + 1, 10) == []  # none pending any more (and "s" is held)


def test_a_pending_flow_whose_worker_crashed_is_due_again_once_its_lease_lapses(
    store: Any, clock: FakeClock
) -> None:
    h = job.start(input={"n": "z"}, store=store)
    now = store.clock.time()
    [taken] = store.claim_due(now, 5, "crashed-worker")
    assert taken.id == h.flow_id and taken.status == "pending"
    assert store.claim_due(now, 5, "other") == []  # held
    clock.advance(store.lease_ttl)
    clock.advance("1s")
    assert Worker(store=store, flows=[job]).run_once() == 1
    assert (h.info().status, RAN) == ("completed", ["z"])


def test_a_blocked_pending_flow_is_not_due(store: Any) -> None:
    now = store.clock.time()
    store.enqueue(NewPending("free", "fs-job", "null"), now)
    store.put_flow(
        store.load("free").__class__(
            "blocked", "fs-job", "pending", "null", now, now, wake_at=now, blocked_by="holder-1"
        )
    )
    assert store.due(now + 10, 10) == ["free"]
    assert get_flow("blocked", store=store).blocked_by == "holder-1"
    [summary] = [s for s in list_flows(store=store) if s.flow_id == "blocked"]
    assert (summary.status, summary.blocked_by, summary.priority) == ("pending", "holder-1", 0)


@pytest.mark.parametrize(
    ("priority", "error"),
    [
        (True, InvalidTypeError),
        (1.5, InvalidTypeError),
        ("5", InvalidTypeError),
        (None, InvalidTypeError),
        (2**31, InvalidValueError),
        (-(2**31) - 1, InvalidValueError),
    ],
)
def test_a_bad_priority_is_refused_naming_it_and_nothing_is_stored(
    store: Any, priority: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="priority") as refused:
        job.start(input={"n": 1}, store=store, priority=priority)
    assert repr(priority)[:6] in str(refused.value)
    assert count_flows(store=store) == 0


def test_start_checks_its_input_and_id_as_run_does(store: Any) -> None:
    with pytest.raises(SerializationError):
        job.start(input={"n": object()}, store=store)
    with pytest.raises(InvalidTypeError, match="flow id"):
        job.start(input=None, store=store, flow_id=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="flow id"):
        job.start(input=None, store=store, flow_id="")
    assert count_flows(store=store) == 0


def test_result_times_out_with_a_timeout_error_and_the_flow_goes_on(store: Any) -> None:
    h = waits.start(store=store, flow_id="slow-1")
    with pytest.raises(FlowTimeoutError) as late:
        h.result(timeout="50ms", poll="10ms")
    assert isinstance(late.value, TimeoutError)
    assert "slow-1" in str(late.value) and late.value.status == "pending"
    assert h.info().status == "pending"


def test_listing_and_counting_know_pending(store: Any) -> None:
    job.start(input={"n": 1}, store=store, priority=2)
    waits.run(store=store)
    assert count_flows(store=store, status="pending") == 1
    [pending] = list_flows(store=store, status="pending")
    assert (pending.name, pending.priority) == ("fs-job", 2)
    assert [s.status for s in list_flows(store=store, status="suspended")] == ["suspended"]


def test_a_path_store_is_opened_for_the_start_and_for_the_handle(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    h = job.start(input={"n": "p"}, store=path, flow_id="on-disk")
    assert h.info().status == "pending"
    store = SQLiteStore(path)
    Worker(store=store, flows=[job]).run_once()
    assert h.result(timeout=5).value == "p"


def test_the_cli_starts_with_a_priority_and_lists_and_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "cli.db")
    module = "tests.test_flow_start"
    args = ["start", "fs-job", "--module", module, "--input", '{"n": 1}']
    ok(capsys, *args, "--id", "c-1", "--priority", "4", "--db", db)
    [row] = json.loads(ok(capsys, "list", "--status", "pending", "--json", "--db", db))
    assert (row["id"], row["status"], row["priority"], row["blocked_by"]) == (
        "c-1",
        "pending",
        4,
        None,
    )
    assert "pending, priority 4" in ok(capsys, "list", "--db", db)
    out = ok(capsys, "show", "c-1", "--db", db)
    assert "priority 4" in out and "status   pending" in out
    shown = json.loads(ok(capsys, "show", "c-1", "--json", "--db", db))
    assert (shown["status"], shown["priority"], shown["blocked_by"]) == ("pending", 4, None)
    assert "nope" in refused(capsys, *args, "--id", "c-2", "--priority", "nope", "--db", db)
    assert count_flows(store=SQLiteStore(db)) == 1
