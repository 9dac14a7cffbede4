"""``Exclusive(key=, on_conflict=)``: at most one started, unfinished flow of a name
per key value; "queue", "skip" and "cancel" as API.md says, for ``Flow.start`` and
``Flow.run``, on every store (``store`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from crux_gen import (
    Exclusive,
    InvalidTypeError,
    InvalidValueError,
    Step,
    Suspend,
    cancel_flow,
    count_flows,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.worker import Worker

RAN: list[str] = []


def _body(ctx: Any) -> Any:
    RAN.append(ctx.input["n"])  # outside a step: counts each (re)play too; read .count
    yield Suspend("go")
    return (yield Step("done", lambda: ctx.input["n"]))


def account(input: Any) -> str:
    return str(input["account"])


sync_queue = flow("ex-queue", exclusive=Exclusive(key=account))(_body)
sync_skip = flow("ex-skip", exclusive=Exclusive(key=account, on_conflict="skip"))(_body)
sync_cancel = flow("ex-cancel", exclusive=Exclusive(key=account, on_conflict="cancel"))(_body)
one_per_name = flow("ex-name", exclusive=Exclusive())(_body)


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def unfinished(store: Any, name: str) -> list[tuple[str, str, str | None]]:
    """``(id, status, blocked_by)`` of the unfinished flows of *name*, oldest first."""
    rows = [f for f in store.list_flows(name=name, limit=1000) if f.status not in FINISHED]
    return [(f.id, f.status, f.blocked_by) for f in sorted(rows, key=lambda f: f.created_at)]


FINISHED = {"completed", "failed", "expired", "cancelled"}


def drain(store: Any) -> int:
    worker, total = Worker(store=store), 0
    while n := worker.run_once():
        total += n
    return total


def test_queue_creates_the_second_start_pending_blocked_by_the_holder_until_it_finishes(
    store: Any, clock: Any
) -> None:
    a = sync_queue.start(input={"account": "acct-1", "n": "a"}, store=store)
    clock.advance("1s")
    b = sync_queue.start(input={"account": "acct-1", "n": "b"}, store=store)
    other = sync_queue.start(input={"account": "acct-2", "n": "other"}, store=store)
    assert (b.info().status, b.info().blocked_by) == ("pending", a.flow_id)
    assert other.info().blocked_by is None
    drain(store)
    assert (a.info().status, other.info().status) == ("suspended", "suspended")
    assert "b" not in RAN  # queued behind a, which waits for its signal
    assert b.info().blocked_by == a.flow_id and store.due(store.clock.time() + 3600, 10) == []
    signal_flow(a.flow_id, "go", None, store=store)
    drain(store)  # a finishes; b is due in the same write, and runs
    assert a.info().status == "completed"
    info = b.info()
    assert (info.status, info.blocked_by) == ("suspended", None)  # it holds acct-1 now
    assert "b" in RAN


def test_the_queue_goes_by_priority_then_by_age_and_follows_each_new_holder(
    store: Any, clock: Any
) -> None:
    holder = sync_queue.start(input={"account": "k", "n": "h"}, store=store)
    drain(store)
    old = sync_queue.start(input={"account": "k", "n": "old"}, store=store)
    clock.advance("1s")
    urgent = sync_queue.start(input={"account": "k", "n": "urgent"}, store=store, priority=9)
    clock.advance("1s")
    young = sync_queue.start(input={"account": "k", "n": "young"}, store=store)
    order = []
    current = holder
    for _ in range(3):
        signal_flow(current.flow_id, "go", None, store=store)
        drain(store)
        assert get_flow(current.flow_id, store=store).status == "completed"
        [(held, status, _)] = [r for r in unfinished(store, "ex-queue") if r[2] is None]
        assert status == "suspended"
        waiting = {r[0]: r[2] for r in unfinished(store, "ex-queue") if r[2] is not None}
        assert set(waiting.values()) <= {held}  # the rest wait for the new holder
        order.append(held)
        current = next(h for h in (old, urgent, young) if h.flow_id == held)
    assert order == [urgent.flow_id, old.flow_id, young.flow_id]


def test_skip_creates_nothing_and_returns_the_unfinished_flow(store: Any) -> None:
    a = sync_skip.start(input={"account": "x", "n": "a"}, store=store)
    b = sync_skip.start(input={"account": "x", "n": "b"}, store=store)
    assert b.flow_id == a.flow_id
    assert count_flows(store=store) == 1
    r = sync_skip.run(input={"account": "x", "n": "c"}, store=store)
    assert (r.flow_id, r.status) == (a.flow_id, "pending")  # the holder, not run here
    assert "c" not in RAN and count_flows(store=store) == 1
    drain(store)
    signal_flow(a.flow_id, "go", None, store=store)
    drain(store)
    assert a.info().status == "completed"
    fresh = sync_skip.start(input={"account": "x", "n": "d"}, store=store)
    assert fresh.flow_id != a.flow_id  # the key is free again once its holder finished


def test_cancel_cancels_the_holder_with_the_reason_and_starts_the_new_one(store: Any) -> None:
    a = sync_cancel.start(input={"account": "x", "n": "a"}, store=store)
    drain(store)
    b = sync_cancel.start(input={"account": "x", "n": "b"}, store=store, flow_id="new-b")
    info = a.info()
    assert (info.status, info.cancel_reason) == ("cancelled", "replaced by new-b")
    assert (b.info().status, b.info().blocked_by) == ("pending", None)
    r = sync_cancel.run(input={"account": "x", "n": "c"}, store=store, flow_id="new-c")
    assert r.status == "suspended"  # ran here, up to its wait
    assert b.info().cancel_reason == "replaced by new-c"
    assert [row[0] for row in unfinished(store, "ex-cancel")] == ["new-c"]


def test_run_starts_at_once_when_the_key_is_free_and_queues_when_it_is_held(store: Any) -> None:
    first = sync_queue.run(input={"account": "r", "n": "1"}, store=store)
    assert first.status == "suspended" and RAN == ["1"]
    second = sync_queue.run(input={"account": "r", "n": "2"}, store=store)
    assert second.status == "pending" and RAN == ["1"]
    assert get_flow(second.flow_id, store=store).blocked_by == first.flow_id
    # Running a stored id again is a resume, as for any flow.
    signal_flow(first.flow_id, "go", None, store=store)
    again = sync_queue.run(input={"account": "r", "n": "1"}, store=store, flow_id=first.flow_id)
    assert again.status == "completed"
    assert get_flow(second.flow_id, store=store).blocked_by is None


def test_without_a_key_there_is_one_unfinished_flow_per_name(store: Any) -> None:
    a = one_per_name.start(input={"n": "a"}, store=store)
    b = one_per_name.start(input={"n": "b"}, store=store)
    assert b.info().blocked_by == a.flow_id


@pytest.mark.parametrize("end", ["cancel_flow", "fails", "cancel_pending"])
def test_every_end_of_the_holder_lets_the_next_one_start(store: Any, end: str) -> None:
    a = sync_queue.start(input={"account": "e", "n": "a"}, store=store)
    if end != "cancel_pending":
        drain(store)
    b = sync_queue.start(input={"account": "e", "n": "b"}, store=store)
    if end == "fails":
        store.claim(a.flow_id, "w", store.clock.time())
        store.commit(a.flow_id, "w", store.clock.time(), _write(status="failed", error=None))
    else:
        assert cancel_flow(a.flow_id, "no", store=store)
    assert b.info().blocked_by is None
    assert b.flow_id in store.due(store.clock.time(), 10)


def _write(**fields: Any) -> Any:
    from crux_gen.records import Write

    return Write(**fields)


def test_bad_exclusive_arguments_are_refused_naming_them(store: Any) -> None:
    with pytest.raises(InvalidValueError, match="'sometimes'"):
        Exclusive(on_conflict="sometimes")
    with pytest.raises(InvalidTypeError, match="Exclusive key"):
        Exclusive(key="account")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="exclusive"):
        flow("ex-bad", exclusive="account")(_body)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="is a int, not a str"):
        flow("ex-int", exclusive=Exclusive(key=lambda i: 5))(_body).start(store=store)
    with pytest.raises(InvalidValueError, match="could not be computed"):
        sync_queue.start(input={"n": "no account"}, store=store)
    assert count_flows(store=store) == 0


def test_running_a_queued_flow_by_its_id_leaves_it_queued(store: Any) -> None:
    first = sync_queue.run(input={"account": "q", "n": "1"}, store=store)
    second = sync_queue.start(input={"account": "q", "n": "2"}, store=store)
    again = sync_queue.run(input={"account": "q", "n": "2"}, store=store, flow_id=second.flow_id)
    assert (again.flow_id, again.status) == (second.flow_id, "pending")
    assert RAN == ["1"] and second.info().blocked_by == first.flow_id
