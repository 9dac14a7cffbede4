"""Every flow ends: a flow waiting on a child, a signal or a timer wakes when that
happens, or fails with a clear error at its ``yield``; it never waits forever on
something that can no longer happen. One test per defect found (issue 18), on every
store where it applies."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    All,
    Child,
    ChildFlowError,
    FlowContext,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowStateError,
    Step,
    Suspend,
    delete_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.clock import FakeClock
from crux_gen.errors import FlowBusyError, RecordConflictError
from crux_gen.records import WAITING, NewChild, StoredRecord, Write
from crux_gen.worker import Worker

from .test_composition import Calls


@flow("lv-child")
def waiting_child(ctx: FlowContext) -> Any:
    yield Suspend("ready")
    return f"done {ctx.input}"


@flow("lv-other")
def other(ctx: FlowContext) -> Any:
    yield Suspend("never")


def parent_of(name: str, child_id: str) -> Any:
    @flow(name)
    def parent(ctx: FlowContext) -> Any:
        try:
            value = yield Child(waiting_child, input=name, flow_id=child_id)
        except (FlowIdTakenError, FlowNameConflictError) as exc:
            return {"refused": type(exc).__name__, "message": str(exc)}
        return {"got": value}

    return parent


# -- a child id two parents name -----------------------------------------------------------


def test_a_second_parent_naming_a_taken_child_id_gets_a_clear_error_at_its_yield(
    store: Any,
) -> None:
    first = parent_of("lv-first", "shared-child").run(store=store)
    assert first.status == "suspended"
    second = parent_of("lv-second", "shared-child").run(store=store)
    # At once, at its yield, catchable: not a wait that no child's end will ever end.
    assert second.status == "completed"
    assert second.value["refused"] == "FlowIdTakenError"
    assert "shared-child" in second.value["message"] and first.flow_id in second.value["message"]
    assert get_flow(second.flow_id, store=store).children == ()
    # A replay takes the same branch without trying again.
    assert resume(second.flow_id, store=store).value == second.value
    # The first parent, whose child it is, is woken by its end.
    signal_flow("shared-child", "ready", None, store=store)
    assert resume("shared-child", store=store).status == "completed"
    assert store.due(store.clock.time(), 10) == [first.flow_id]
    assert resume(first.flow_id, store=store).value == {"got": "done lv-first"}


def test_a_child_id_of_a_top_level_flow_is_refused_at_the_yield(store: Any) -> None:
    waiting_child.run(input="alone", flow_id="top-level", store=store)
    r = parent_of("lv-adopter", "top-level").run(store=store)
    assert r.value["refused"] == "FlowIdTakenError"
    assert get_flow("top-level", store=store).parent_id is None


def test_a_child_id_of_a_flow_of_another_name_raises_the_conflict_at_the_yield(
    store: Any,
) -> None:
    other.run(flow_id="named-other", store=store)
    r = parent_of("lv-conflict", "named-other").run(store=store)
    # At once: the parent neither loops nor waits; the error is catchable at the yield.
    assert r.status == "completed"
    assert r.value["refused"] == "FlowNameConflictError"
    assert "'lv-other'" in r.value["message"] and "'lv-child'" in r.value["message"]
    assert resume(r.flow_id, store=store).value == r.value
    [record] = get_flow(r.flow_id, store=store).history
    assert (record.kind, record.state) == ("child", "failed")


def test_an_uncaught_child_conflict_fails_the_parent_instead_of_looping(store: Any) -> None:
    other.run(flow_id="named-other-2", store=store)

    @flow("lv-uncaught")
    def parent(ctx: FlowContext) -> Any:
        return (yield Child(waiting_child, flow_id="named-other-2"))

    r = parent.run(store=store)
    assert r.status == "failed"
    assert r.error is not None and r.error.type.endswith("FlowNameConflictError")


def test_a_taken_child_id_in_an_all_fails_that_branch_only(store: Any) -> None:
    calls = Calls()
    other.run(flow_id="named-other-3", store=store)

    @flow("lv-all-conflict")
    def parent(ctx: FlowContext) -> Any:
        try:
            yield All(
                [
                    Step("a", lambda: calls("a", 1)),
                    Child(waiting_child, flow_id="named-other-3"),
                    Child(waiting_child, input="x", flow_id="fresh-child"),
                ]
            )
        except FlowNameConflictError as exc:
            return f"refused {exc.flow_id}"
        return "no"

    r = parent.run(store=store)
    assert r.status == "suspended"  # the fresh child is waited for
    assert get_flow("fresh-child", store=store).parent_id == r.flow_id
    signal_flow("fresh-child", "ready", None, store=store)
    resume("fresh-child", store=store)
    assert resume(r.flow_id, store=store).value == "refused named-other-3"
    assert calls.counts == Counter({"a": 1})


# -- prune and delete never strand a parent ------------------------------------------------


def test_prune_keeps_a_finished_child_while_its_parent_is_unfinished(
    store: Any, clock: FakeClock
) -> None:
    r = parent_of("lv-prune", "prune-child").run(store=store)
    signal_flow("prune-child", "ready", None, store=store)
    resume("prune-child", store=store)
    clock.advance("1h")
    assert store.prune(clock.time()) == 0  # the parent has not taken its result yet
    assert get_flow("prune-child", store=store).status == "completed"
    assert resume(r.flow_id, store=store).value == {"got": "done lv-prune"}
    clock.advance("1h")
    assert store.prune(clock.time()) == 2  # both finished: both go


def test_delete_refuses_a_child_whose_parent_is_unfinished(store: Any) -> None:
    r = parent_of("lv-delete", "delete-child").run(store=store)
    signal_flow("delete-child", "ready", None, store=store)
    resume("delete-child", store=store)
    with pytest.raises(FlowStateError, match=r"parent.*" + r.flow_id):
        delete_flow("delete-child", store=store)
    assert resume(r.flow_id, store=store).value == {"got": "done lv-delete"}
    assert delete_flow("delete-child", store=store) is True


# -- one flow's store conflict never stops the others -----------------------------------------


class ConflictOnce:
    """A store whose commits of one flow raise ``RecordConflictError``."""

    def __init__(self, store: Any, victim: str) -> None:
        self._store = store
        self.victim = victim

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(self, flow_id: str, owner: str, now: float, write: Any) -> Any:
        if flow_id == self.victim:
            raise RecordConflictError(flow_id, 0, 0)
        return self._store.commit(flow_id, owner, now, write)

    def commit_many(self, batch: Any) -> Any:
        return [
            RecordConflictError(item.flow_id, 0, 0)
            if item.flow_id == self.victim
            else self._store.commit_many([item])[0]
            for item in batch
        ]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_record_conflict_of_one_flow_does_not_stop_the_pass(store: Any, concurrency: int) -> None:
    calls = Calls()

    @flow("lv-conflicts")
    def steps(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return (yield Step("s", lambda: calls(ctx.flow_id, ctx.flow_id)))

    ids = [steps.run(flow_id=f"conf-{i}", store=store).flow_id for i in range(4)]
    for flow_id in ids:
        signal_flow(flow_id, "go", None, store=store)
    worker = Worker(ConflictOnce(store, "conf-0"), [steps], concurrency=concurrency)
    worker.run_once()  # no RecordConflictError out of the pass
    assert [get_flow(i, store=store).status for i in ids[1:]] == ["completed"] * 3
    assert get_flow("conf-0", store=store).status != "completed"


# -- retry of a flow that failed inside an All ----------------------------------------------


def failing_while(broken: dict[str, bool], calls: Calls) -> Any:
    """A step function counted as "flaky" that raises ValueError("down") while
    ``broken["bad"]`` and returns "up" after."""

    def flaky() -> str:
        calls("flaky")
        if broken["bad"]:
            raise ValueError("down")
        return "up"

    return flaky


def test_retry_of_a_failed_all_branch_reruns_only_that_branch(store: Any) -> None:
    calls = Calls()
    broken = {"bad": True}
    flaky = failing_while(broken, calls)

    @flow("lv-all-retry")
    def fan(ctx: FlowContext) -> Any:
        values = yield All(
            [
                Step("ok", lambda: calls("ok", "fine")),
                Step("flaky", flaky),
                Step("ok-2", lambda: calls("ok-2", "fine too")),
            ]
        )
        return (yield Step("after", lambda: calls("after", values)))

    r = fan.run(store=store)
    assert r.status == "failed" and r.error is not None and r.error.message == "down"
    broken["bad"] = False
    dropped = store.retry_failed(r.flow_id, store.clock.time())
    assert [d.name for d in dropped] == ["flaky"]
    assert resume(r.flow_id, store=store).value == ["fine", "up", "fine too"]
    assert calls.counts == Counter({"ok": 1, "ok-2": 1, "flaky": 2, "after": 1})
    states = [(h.kind, h.name, h.state) for h in get_flow(r.flow_id, store=store).history]
    assert states[1:] == [
        ("step", "ok", "completed"), ("step", "flaky", "completed"),
        ("step", "ok-2", "completed"), ("step", "after", "completed"),
    ]  # fmt: skip
    assert states[0][::2] == ("all", "completed")


def test_retry_of_an_all_whose_last_branch_failed(store: Any) -> None:
    calls = Calls()
    broken = {"bad": True}
    flaky = failing_while(broken, calls)

    @flow("lv-all-retry-last")
    def fan(ctx: FlowContext) -> Any:
        return (yield All([Step("ok", lambda: calls("ok", 1)), Step("flaky", flaky)]))

    r = fan.run(store=store)
    assert r.status == "failed"
    broken["bad"] = False
    store.retry_failed(r.flow_id, store.clock.time())
    assert resume(r.flow_id, store=store).value == [1, "up"]
    assert calls.counts == Counter({"ok": 1, "flaky": 2})


# -- a corrupt row stops no worker ------------------------------------------------------------


def test_an_unreadable_any_wait_list_stops_no_worker_and_its_flow_still_wakes(
    store: Any, tmp_path: Path
) -> None:
    from crux_gen import Any as AnyOf

    from .test_values import corrupt

    @flow("lv-any-corrupt")
    def either(ctx: FlowContext) -> Any:
        got = yield AnyOf([Suspend("shipped"), Suspend("cancelled")])
        return got.name

    @flow("lv-plain")
    def plain(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return "plain done"

    bad = either.run(flow_id="bad-any", store=store)
    good = plain.run(flow_id="good", store=store)
    corrupt(store, tmp_path, bad.flow_id, "flows", "waiting_for", '["shipped", "canc')
    signal_flow(bad.flow_id, "shipped", None, store=store)
    signal_flow(good.flow_id, "go", None, store=store)
    # The due query itself never fails on the one bad row (it did on PostgreSQL).
    assert sorted(store.due(store.clock.time(), 10)) == ["bad-any", "good"]
    Worker(store, [either, plain]).run_once()
    assert get_flow("good", store=store).value == "plain done"
    assert get_flow("bad-any", store=store).value == "shipped"


@pytest.mark.parametrize(
    ("listed", "signal", "due"),
    [
        (None, "shipped", True),  # no list at all: unreadable, any pending signal wakes it
        ('"shipped"', "other", True),  # not a list: the same
        ('[1, "shipped"]', "1", False),  # only strings are names
        ('[1, "shipped"]', "shipped", True),
    ],
)
def test_the_due_scan_and_a_due_only_claim_agree_on_an_any_wait_list_as_stored(
    store: Any, tmp_path: Path, listed: str | None, signal: str, due: bool
) -> None:
    from .test_values import corrupt

    t = store.clock.time()
    store.start("f", "demo", "null", "me", t)
    park = Write(status="suspended", waiting_for='["shipped"]', wait_kind="any")
    store.commit("f", "me", t, park)
    corrupt(store, tmp_path, "f", "flows", "waiting_for", listed)  # type: ignore[arg-type]
    store.add_signal("f", signal, "null", t)
    assert store.due(t, 10) == (["f"] if due else [])
    if due:
        assert store.claim("f", "worker", t, only_if_due=True).lease_owner == "worker"
    else:
        with pytest.raises(FlowBusyError):
            store.claim("f", "worker", t, only_if_due=True)
        assert store.claim_due(t, 10, "worker") == []


# -- PostgreSQL: one lock order; a child's end and its parent's wake are one fact --------------


def pg_store(postgres_store_class: Any, url: str, schema: str) -> Any:
    return postgres_store_class(url, schema=schema, clock=FakeClock())


def parent_and_child(store: Any) -> float:
    """Flow P (leased by "p") has started child C (leased by "c"); both running."""
    now = store.clock.time()
    store.start("P", "lv-parent", "null", "p", now)
    record = StoredRecord(0, "child", "lv-child", WAITING, result='{"flow_id":"C"}', started_at=now)
    store.commit("P", "p", now, Write((record,), children=(NewChild("C", "lv-child", "null"),)))
    store.claim("C", "c", now)
    return now


def pausing(store: Any, pauses: dict[threading.Thread, tuple[str, Any]]) -> None:
    """After a thread's first statement containing its text runs, call its function."""
    run = store._run
    done: set[threading.Thread] = set()

    def traced(conn: Any, query: str, params: Any = None) -> Any:
        cursor = run(conn, query, params)
        me = threading.current_thread()
        if me in pauses and me not in done and pauses[me][0] in query:
            done.add(me)
            pauses[me][1]()
        return cursor

    store._run = traced


def test_pg_a_child_ending_while_its_parent_parks_always_wakes_the_parent(
    postgres_store_class: Any, pg_server: Any, pg_schema: str
) -> None:
    from crux_gen.stores import postgres_schema as sql

    store = pg_store(postgres_store_class, pg_server.url, pg_schema)
    now = parent_and_child(store)
    child_woke, parent_parked = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def finish_child() -> None:
        try:
            store.commit("C", "c", now, Write((), status="completed", result="1"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def park_parent() -> None:
        child_woke.wait(5)
        try:
            park = Write(
                (), status="suspended", waiting_for="C", wait_kind="child", wait_children=("C",)
            )
            store.commit("P", "p", now, park)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        parent_parked.set()

    child = threading.Thread(target=finish_child)
    parent = threading.Thread(target=park_parent)
    # The child's wake of its parent runs while the parent still runs; then the child
    # waits (before its commit) for the parent to park, or 2 s when the parent cannot.
    pausing(store, {child: (sql.WAKE_PARENT, lambda: (child_woke.set(), parent_parked.wait(2)))})
    child.start()
    parent.start()
    child.join(10)
    parent.join(10)
    assert errors == []
    assert store.load("C").status == "completed"
    parked = store.load("P")
    assert parked.status == "suspended"
    assert parked.wake_at is not None  # due: woken by the child's end, not waiting forever
    assert store.due(now + 1, 10) == ["P"]


def test_pg_two_parents_starting_one_child_id_at_once_leave_it_one_parent(
    postgres_store_class: Any, pg_server: Any, pg_schema: str
) -> None:
    # Found by the liveness stress: the second parent checked the id before the first
    # parent's insert committed, then its insert did nothing (the id was taken by then),
    # and it parked on a child whose end wakes only the first parent.
    from crux_gen.stores import postgres_schema as sql

    store = pg_store(postgres_store_class, pg_server.url, pg_schema)
    now = store.clock.time()
    for parent in ("P1", "P2"):
        store.start(parent, "lv-parent", "null", parent, now)
    first_inserted, second_checked = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}

    def start_child(parent: str) -> None:
        if parent == "P2":
            first_inserted.wait(5)
        record = StoredRecord(
            0, "child", "lv-child", WAITING, result='{"flow_id":"S"}', started_at=now
        )
        write = Write((record,), children=(NewChild("S", "lv-child", "null"),))
        try:
            store.commit(parent, parent, now, write)
        except BaseException as exc:
            errors[parent] = exc

    first = threading.Thread(target=start_child, args=("P1",))
    second = threading.Thread(target=start_child, args=("P2",))
    # The first inserts the child, then waits (before its commit) until the second has
    # looked the id up and found nothing; the second's insert then waits for the first.
    pausing(
        store,
        {
            first: (
                sql.STATEMENTS.INSERT_CHILD,
                lambda: (first_inserted.set(), second_checked.wait(5), time.sleep(0.3)),
            ),
            second: (sql.STATEMENTS.FLOW_NAME, second_checked.set),
        },
    )
    first.start()
    second.start()
    first.join(20)
    second.join(20)
    assert set(errors) == {"P2"}, errors
    assert isinstance(errors["P2"], FlowIdTakenError)
    assert store.load("S").parent_id == "P1"
    assert store.load("P1").records[0].state == WAITING
    assert store.load("P2").records == ()  # nothing of the refused write was applied


def test_pg_cancelling_a_parent_while_its_child_finishes_never_deadlocks(
    postgres_store_class: Any, pg_server: Any, pg_schema: str
) -> None:
    store = pg_store(postgres_store_class, pg_server.url, pg_schema)
    now = parent_and_child(store)
    store.commit(
        "P",
        "p",
        now,
        Write((), status="suspended", waiting_for="C", wait_kind="child", wait_children=("C",)),
    )
    cancel_locked, child_locked = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    outcomes: list[Any] = []

    def cancel() -> None:
        try:
            outcomes.append(store.cancel("P", "user left", now))
        except BaseException as exc:
            errors.append(exc)

    def finish_child() -> None:
        cancel_locked.wait(5)
        try:
            outcomes.append(store.commit("C", "c", now, Write((), status="completed", result="1")))
        except BaseException as exc:
            errors.append(exc)

    canceller = threading.Thread(target=cancel)
    child = threading.Thread(target=finish_child)
    # Each takes its first lock, then waits (up to 1.5 s) for the other to take its own:
    # locked in opposite orders, the two would deadlock.
    pausing(
        store,
        {
            canceller: ("FOR UPDATE", lambda: (cancel_locked.set(), child_locked.wait(1.5))),
            child: ("FOR UPDATE", lambda: child_locked.set()),
        },
    )
    canceller.start()
    child.start()
    canceller.join(20)
    child.join(20)
    assert errors == []
    assert store.load("P").status == "cancelled"
    assert store.load("C").status in ("cancelled", "completed")


def test_pg_the_first_operation_after_a_server_restart_succeeds(
    postgres_store_class: Any, pg_server: Any, pg_schema: str
) -> None:
    from . import pg

    with pg.Proxy(pg_server.url) as door:
        store = postgres_store_class(door.url, schema=pg_schema, connect_timeout="5s")
        store.start("f1", "demo", "null", "me", 1.0)
        before = store.load("f1")
        door.close()  # the server goes away: the pool's idle connections are dead
        door.open()  # and comes back
        time.sleep(getattr(postgres_store_class, "IDLE_CHECK", 1.0) + 0.2)
        assert store.load("f1") == before  # no StoreError (AdminShutdown) first
        store.close()


def test_a_child_deleted_by_hand_is_a_child_flow_error_at_the_yield(
    store: Any, store_kind: str, tmp_path: Path
) -> None:
    @flow("lv-orphan")
    def parent(ctx: FlowContext) -> Any:
        try:
            yield Child(waiting_child, flow_id="gone-child")
        except ChildFlowError as exc:
            return f"{exc.flow_id} {exc.status}"

    r = parent.run(store=store)
    assert r.status == "suspended"
    # As someone with the database might: the child's row is gone, the parent waits.
    if store_kind == "memory":
        store._drop("gone-child")
    elif store_kind == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "crux.db") as conn:
            conn.execute("DELETE FROM flows WHERE id = 'gone-child'")
    else:
        from . import pg

        pg.run_in(store, "DELETE FROM flows WHERE id = 'gone-child'")
    assert resume(r.flow_id, store=store).value == "gone-child deleted"


def test_a_corrupt_signal_payload_is_rejected_naming_it_and_the_wait_goes_on(
    store: Any, tmp_path: Path
) -> None:
    from .test_values import corrupt

    @flow("lv-corrupt-signal")
    def waits(ctx: FlowContext) -> Any:
        return (yield Suspend("go"))

    r = waits.run(store=store)
    signal_flow(r.flow_id, "go", {"ok": 1}, store=store)
    [signal] = get_flow(r.flow_id, store=store).signals
    corrupt(store, tmp_path, r.flow_id, "signals", "payload", '{"ok": ', where="id", key=signal.id)
    assert resume(r.flow_id, store=store).status == "suspended"
    [rejected] = store.load(r.flow_id).signals
    assert rejected.state == "rejected"
    assert f"payload of signal {signal.id}" in (rejected.error or "")
    signal_flow(r.flow_id, "go", {"ok": 2}, store=store)
    assert resume(r.flow_id, store=store).value == {"ok": 2}


def test_retry_of_an_all_whose_child_branch_failed_starts_that_child_again(store: Any) -> None:
    calls = Calls()
    broken = {"bad": True}

    @flow("lv-all-child-leaf")
    def leaf(ctx: FlowContext) -> Any:
        def work() -> str:
            calls("leaf")
            if broken["bad"]:
                raise ValueError("leaf down")
            return f"leaf {ctx.input}"

        return (yield Step("work", work))

    @flow("lv-all-child-retry")
    def fan(ctx: FlowContext) -> Any:
        return (yield All([Step("ok", lambda: calls("ok", 1)), Child(leaf, input="x")]))

    r = fan.run(store=store)
    assert r.status == "failed" and r.error is not None and "ChildFlowError" in r.error.type
    [first_child] = get_flow(r.flow_id, store=store).children
    broken["bad"] = False
    store.retry_failed(r.flow_id, store.clock.time())
    assert resume(r.flow_id, store=store).value == [1, "leaf x"]
    children = get_flow(r.flow_id, store=store).children
    assert len(children) == 2 and first_child in children  # a new child; the old one kept
    assert get_flow(first_child, store=store).status == "failed"
    assert calls.counts == Counter({"ok": 1, "leaf": 2})


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_corrupt_record_of_one_flow_is_reported_naming_it_and_the_others_run(
    store: Any, tmp_path: Path, concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    from .test_values import corrupt

    calls = Calls()

    @flow("lv-corrupt-worker")
    def two_steps(ctx: FlowContext) -> Any:
        first = yield Step("one", lambda: calls("one", 1))
        yield Suspend("go")
        return first + (yield Step("two", lambda: calls("two", 2)))

    ids = [two_steps.run(flow_id=f"cw-{i}", store=store).flow_id for i in range(3)]
    corrupt(store, tmp_path, "cw-0", "records", "result", "[1", where="position", key=0)
    for flow_id in ids:
        signal_flow(flow_id, "go", None, store=store)
    caplog.set_level("ERROR", logger="crux_gen")
    Worker(store, [two_steps], concurrency=concurrency).run_once()
    assert [get_flow(i, store=store).status for i in ids[1:]] == ["completed"] * 2
    assert store.load("cw-0").status == "suspended"  # left as it was, nothing re-run
    assert calls.counts == Counter({"one": 3, "two": 2})
    [report] = [r for r in caplog.records if getattr(r, "flow_id", None) == "cw-0"]
    assert "CorruptRecordError" in (report.exc_text or "") and "cw-0" in report.getMessage()
