"""One contract suite every store passes (huey's ``StorageTests``, sqlite-utils' ``fresh_db``).

Each test runs on every backend of the ``store`` fixture (``tests/conftest.py``),
through the ``Store`` and ``StoreAdmin`` protocols of ``stores/base.py`` only: a
new backend joins the fixture and must pass all of it. Tests assert what is
stored afterwards (``load``) as well as what a call returns or raises; "nothing
changes" is checked by comparing the whole stored flow before and after.
The backends are ``memory``, ``sqlite`` and ``postgres`` (a fresh PostgreSQL schema
per test, ``tests/pg.py``). Tests that look at SQLite itself are kept apart, at the
end; PostgreSQL's own are in ``tests/test_postgres.py``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

from crux_gen.clock import FakeClock
from crux_gen.errors import (
    FlowBusyError,
    FlowClosedError,
    FlowNameConflictError,
    FlowNotFoundError,
    FlowStateError,
    InvalidValueError,
    LeaseLostError,
    RecordConflictError,
    StoreError,
    StoreSchemaError,
)
from crux_gen.records import (
    COMPLETED,
    CONSUMED,
    EXPIRED,
    FAILED,
    PENDING,
    REJECTED,
    RETRYING,
    UNUSED,
    WAITING,
    LeaseCheck,
    NewPending,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)
from crux_gen.stores.base import Caps, Store, StoreAdmin, caps_of
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.stores.sqlite_schema import SCHEMA_VERSION

FINISHED = ("completed", "failed", "expired", "cancelled")
ERROR = '{"type": "builtins.ValueError", "message": "boom"}'

# -- helpers -------------------------------------------------------------------------


def rec(
    position: int, name: str = "one", state: str = COMPLETED, *, kind: str = "step", **fields: Any
) -> StoredRecord:
    """A history record, with the timings a store keeps (a completed step by default)."""
    values: dict[str, Any] = {
        "attempts": 1,
        "started_at": 1000.0 + position,
        "finished_at": 1000.5 + position,
    }
    if state == COMPLETED:
        values["result"] = f'"{name}"'
    elif state == FAILED:
        values["error"] = ERROR
    values.update(fields)
    return StoredRecord(position, kind, name, state, **values)


def park(waiting_for: str = "go", wait_kind: str = "suspend", **fields: Any) -> Write:
    """A runner's write that parks the flow (waiting for the signal *go* by default)."""
    return Write(status="suspended", waiting_for=waiting_for, wait_kind=wait_kind, **fields)


END = {
    "completed": Write(status="completed", result='"done"'),
    "failed": Write(status="failed", error=ERROR),
    "expired": Write(status="expired", waiting_for="go", wait_kind="suspend"),
}


def suspended(store: Any, flow_id: str, t: float, write: Write | None = None) -> StoredFlow:
    """Start *flow_id* at *t* and park it (unclaimed) with *write*."""
    store.start(flow_id, "demo", "null", "me", t)
    store.commit(flow_id, "me", t, write or park())
    return store.load(flow_id)


def finished(store: Any, flow_id: str, status: str, t: float) -> StoredFlow:
    """Start *flow_id* at *t* and end it (unclaimed) with *status*."""
    store.start(flow_id, "demo", "null", "me", t)
    if status == "cancelled":
        store.commit(flow_id, "me", t, park())
        assert store.cancel(flow_id, "not needed", t) is True
    else:
        store.commit(flow_id, "me", t, END[status])
    return store.load(flow_id)


def but_the_lease(flow: StoredFlow) -> StoredFlow:
    """*flow* with its lease (and when it was taken) left out, to compare everything else."""
    return attrs.evolve(flow, lease_owner=None, lease_expires=None, claimed_at=None)


def ttl(store: Any) -> float:
    return float(store.lease_ttl.total_seconds())


# -- protocols -----------------------------------------------------------------------


def test_every_store_implements_store_and_store_admin(store: Any) -> None:
    assert isinstance(store, Store)
    assert isinstance(store, StoreAdmin)


def test_load_and_claim_of_an_unknown_flow_are_not_found(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with pytest.raises(FlowNotFoundError):
        store.load("nope")
    with pytest.raises(FlowNotFoundError):
        store.claim("nope", "me", t)
    with pytest.raises(FlowNotFoundError):
        store.claim("nope", "me", t, only_if_due=True)
    with pytest.raises(FlowNotFoundError):
        store.load("nope")  # a failed claim creates nothing


# -- start ---------------------------------------------------------------------------


def test_start_creates_a_running_flow_claimed_by_its_owner(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    created = store.start("f1", "demo", '{"a":1}', "me", t)
    expected = StoredFlow(
        "f1", "demo", "running", '{"a":1}', t, t, lease_owner="me", lease_expires=t + ttl(store),
        claimed_at=t,
    )  # fmt: skip
    assert created == expected
    assert store.load("f1") == expected


def test_start_with_an_existing_id_and_name_claims_the_flow_as_it_is(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", '"first"', "me", t)
    store.commit("f1", "me", t, Write(records=(rec(0),)))
    store.commit("f1", "me", t, park(wake_at=t + 60))
    signal = store.add_signal("f1", "go", '"1"', t)
    before = store.load("f1")
    again = store.start("f1", "demo", '"second"', "you", t + 1)
    assert (again.lease_owner, again.lease_expires) == ("you", t + 1 + ttl(store))
    assert (again.status, again.input, again.waiting_for) == ("suspended", '"first"', "go")
    assert [r[:6] for r in again.records] == [rec(0)[:6]]
    assert again.signals == (signal,)
    assert but_the_lease(store.load("f1")) == but_the_lease(before)  # input kept, status too
    assert store.load("f1").lease_owner == "you"


def test_start_with_an_existing_id_is_busy_while_another_lease_is_live(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    before = store.load("f1")
    with pytest.raises(FlowBusyError) as busy:
        store.start("f1", "demo", "null", "you", t + ttl(store) - 1)
    assert busy.value.flow_id == "f1"
    assert store.load("f1") == before
    assert store.start("f1", "demo", "null", "you", t + ttl(store)).lease_owner == "you"


def test_start_with_the_id_of_a_finished_flow_returns_it_unclaimed(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        again = store.start(status, "demo", "null", "you", t + 1)
        assert (again.status, again.lease_owner) == (status, None)
        assert store.load(status) == before


def test_the_same_id_for_another_flow_name_is_a_conflict_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", '"mine"', "me", t)
    before = store.load("f1")
    for at in (t, t + ttl(store)):  # whether or not the lease is live
        with pytest.raises(FlowNameConflictError) as conflict:
            store.start("f1", "other", '"yours"', "you", at)
        assert (conflict.value.stored_name, conflict.value.requested_name) == ("demo", "other")
        assert store.load("f1") == before


# -- claim ---------------------------------------------------------------------------


def test_a_claim_changes_nothing_but_the_lease(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    before = suspended(store, "f1", t, park(wake_at=t + 600, deadline=t + 600))
    claimed = store.claim("f1", "you", t + 5)
    after = store.load("f1")
    assert (after.lease_owner, after.lease_expires) == ("you", t + 5 + ttl(store))
    assert but_the_lease(after) == but_the_lease(before)
    assert (claimed.status, claimed.waiting_for, claimed.wait_kind) == (
        "suspended",
        "go",
        "suspend",
    )
    assert (claimed.wake_at, claimed.deadline, claimed.updated_at) == (t + 600, t + 600, t)
    assert (claimed.lease_owner, claimed.lease_expires) == ("you", t + 5 + ttl(store))


def test_a_claim_returns_the_whole_history_and_only_pending_signals_oldest_first(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    first = store.add_signal("f1", "go", '"1"', t)
    other = store.add_signal("f1", "other", '"2"', t)
    bad = store.add_signal("f1", "go", '"bad"', t)
    history = (
        rec(0, "a"),
        rec(1, "b", FAILED, attempts=3),
        rec(2, "go", kind="suspend", result='"1"'),
        rec(3, "ready", EXPIRED, kind="wait_until", deadline=t - 1),
        rec(4, "c", RETRYING, attempts=2, wake_at=t + 5),
    )
    store.commit(
        "f1",
        "me",
        t,
        Write(
            records=history,
            signals=(
                SignalUpdate(first.id, CONSUMED, position=2),
                SignalUpdate(bad.id, REJECTED, error="not a number"),
            ),
            status="suspended",
            waiting_for="c",
            wait_kind="retry",
            wake_at=t + 5,
        ),
    )
    late = store.add_signal("f1", "go", '"late"', t + 1)
    claimed = store.claim("f1", "you", t + 2)
    stored = store.load("f1")
    assert stored.records == history  # load has everything
    # What replay needs of every record; all of it for those not completed or failed.
    assert [r[:6] for r in claimed.records] == [r[:6] for r in history]
    unresolved = [r for r in claimed.records if r.state not in (COMPLETED, FAILED)]
    assert unresolved == [history[3], history[4]]
    assert [s.id for s in claimed.signals] == [other.id, late.id]
    assert claimed.signals == tuple(s for s in stored.signals if s.state == PENDING)


def test_a_live_lease_makes_other_claims_busy_until_it_lapses(store: Any, clock: FakeClock) -> None:
    store.start("f1", "demo", "null", "me", clock.time())
    before = store.load("f1")
    clock.advance(ttl(store) - 1)
    with pytest.raises(FlowBusyError) as busy:
        store.claim("f1", "you", clock.time())
    assert busy.value.flow_id == "f1"
    assert store.load("f1") == before
    clock.advance("1s")
    assert store.claim("f1", "you", clock.time()).lease_owner == "you"
    assert store.load("f1").lease_owner == "you"


def test_the_holder_may_claim_again_and_extends_its_lease(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    assert store.claim("f1", "me", t + 10).lease_expires == t + 10 + ttl(store)
    assert store.load("f1").lease_expires == t + 10 + ttl(store)


def test_a_claim_of_a_finished_flow_returns_it_unclaimed_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        claimed = store.claim(status, "you", t + 1)
        assert (claimed.status, claimed.lease_owner) == (status, None)
        assert store.load(status) == before


def test_a_due_only_claim_of_a_flow_that_is_not_due_is_busy_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    suspended(store, "timer-later", t, park("nap", "sleep", wake_at=t + 60))
    suspended(store, "no-signal", t, park(deadline=t + 60, wake_at=t + 60))
    suspended(store, "other-signal", t)
    store.add_signal("other-signal", "other", "1", t)
    store.start("rejected", "demo", "null", "me", t)
    bad = store.add_signal("rejected", "go", "1", t)
    store.commit("rejected", "me", t, park(signals=(SignalUpdate(bad.id, REJECTED, error="no"),)))
    store.start("held", "demo", "null", "someone", t)  # running, lease live
    for flow_id in ("timer-later", "no-signal", "other-signal", "rejected", "held"):
        before = store.load(flow_id)
        with pytest.raises(FlowBusyError):
            store.claim(flow_id, "worker", t + 10, only_if_due=True)
        assert store.load(flow_id) == before, flow_id


def test_a_due_only_claim_of_a_finished_flow_is_closed_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        with pytest.raises(FlowClosedError) as closed:
            store.claim(status, "worker", t + 1, only_if_due=True)
        assert closed.value.status == status
        assert store.load(status) == before


def test_a_due_only_claim_takes_a_flow_that_is_due(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "timer", t, park("nap", "sleep", wake_at=t + 10))
    suspended(store, "signalled", t)
    store.add_signal("signalled", "go", "1", t)
    store.start("crashed", "demo", "null", "dead", t)
    store.start("released", "demo", "null", "gone", t)
    store.release("released", "gone")
    at = t + ttl(store)  # the timer is due, the crashed runner's lease has lapsed
    for flow_id in ("timer", "signalled", "crashed", "released"):
        before = store.load(flow_id)
        claimed = store.claim(flow_id, "worker", at, only_if_due=True)
        assert (claimed.lease_owner, claimed.status) == ("worker", before.status), flow_id
        # (a lapsed lease with nothing recorded: the claim counts one recovery)
        recovered = attrs.evolve(before, recoveries=int(flow_id == "crashed"))
        assert but_the_lease(store.load(flow_id)) == but_the_lease(recovered), flow_id


# -- check_lease ---------------------------------------------------------------------


def test_check_lease_gives_the_holder_the_flows_status(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    outcome = store.check_lease("f1", "me", t + 1)
    assert (outcome.status, outcome.cancel_reason, outcome.signals) == ("running", None, ())
    suspended(store, "f2", t)
    store.claim("f2", "me", t)
    assert store.check_lease("f2", "me", t + 1).status == "suspended"


def test_check_lease_after_a_cancel_says_cancelled_with_the_reason(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.cancel("f1", "customer left", t + 1)
    outcome = store.check_lease("f1", "me", t + 2)
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", "customer left")


def test_check_lease_without_the_lease_is_lease_lost(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    with pytest.raises(LeaseLostError) as lost:
        store.check_lease("f1", "you", t)
    assert (lost.value.flow_id, lost.value.owner) == ("f1", "you")
    with pytest.raises(LeaseLostError):
        store.check_lease("nope", "me", t)
    store.start("f2", "demo", "null", "me", t)
    store.release("f2", "me")
    with pytest.raises(LeaseLostError):
        store.check_lease("f2", "me", t)
    store.claim("f1", "you", t + ttl(store))  # lapsed and taken over
    before = store.load("f1")
    with pytest.raises(LeaseLostError):
        store.check_lease("f1", "me", t + ttl(store))
    assert store.load("f1") == before


def test_check_lease_renews_a_lapsed_lease_nobody_took(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    later = t + 2 * ttl(store)
    assert store.check_lease("f1", "me", later).status == "running"
    assert store.load("f1").lease_expires == later + ttl(store)
    with pytest.raises(FlowBusyError):
        store.claim("f1", "you", later + 1)


# -- check_leases ----------------------------------------------------------------------


def test_check_leases_gives_each_holder_its_flows_status_in_order(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("running", "demo", "null", "me", t)
    suspended(store, "parked", t)
    store.claim("parked", "you", t)
    store.start("cancelled", "demo", "null", "me", t)
    store.cancel("cancelled", "customer left", t + 1)
    batch = [
        LeaseCheck("parked", "you", t + 2),
        LeaseCheck("running", "me", t + 2),
        LeaseCheck("cancelled", "me", t + 2),
    ]
    before = {flow_id: store.load(flow_id) for flow_id in ("running", "parked", "cancelled")}
    outcomes = store.check_leases(batch)
    assert [(o.status, o.cancel_reason, o.signals) for o in outcomes] == [
        ("suspended", None, ()),
        ("running", None, ()),
        ("cancelled", "customer left", ()),
    ]
    assert {f: store.load(f) for f in before} == before  # a check of a live lease writes nothing


def test_check_leases_returns_a_lost_lease_in_its_place_and_raises_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("taken", "demo", "null", "me", t)
    store.claim("taken", "you", t + ttl(store))  # lapsed and taken over
    store.start("released", "demo", "null", "me", t)
    store.release("released", "me")
    finished(store, "done", "completed", t)  # its end released the lease
    checks = [
        LeaseCheck("taken", "me", t + ttl(store)),
        LeaseCheck("released", "me", t),
        LeaseCheck("done", "me", t),
        LeaseCheck("nope", "me", t),
    ]
    before = {flow_id: store.load(flow_id) for flow_id in ("taken", "released", "done")}
    outcomes = store.check_leases(checks)
    assert all(isinstance(o, LeaseLostError) for o in outcomes), outcomes
    assert [(o.flow_id, o.owner) for o in outcomes] == [(c.flow_id, c.owner) for c in checks]
    assert {f: store.load(f) for f in before} == before


def test_check_leases_of_a_mixed_batch_answers_each_item_on_its_own(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    store.cancel("b", "stop", t)
    store.start("c", "demo", "null", "other", t)
    later = t + 2 * ttl(store)  # every lease has lapsed; "c" is taken by "you" meanwhile
    store.claim("c", "you", later)
    batch = [
        LeaseCheck("a", "me", later),
        LeaseCheck("c", "me", later),
        LeaseCheck("nope", "me", later),
        LeaseCheck("b", "me", later),
        LeaseCheck("a", "intruder", later),
        LeaseCheck("c", "you", later),
    ]
    outcomes = store.check_leases(batch)
    assert len(outcomes) == len(batch)
    a, c_lost, nope, b, a_lost, c = outcomes
    assert a.status == "running" and c.status == "running"
    assert (b.status, b.cancel_reason) == ("cancelled", "stop")
    for lost, check in ((c_lost, batch[1]), (nope, batch[2]), (a_lost, batch[4])):
        assert isinstance(lost, LeaseLostError)
        assert (lost.flow_id, lost.owner) == (check.flow_id, check.owner)
    # "a" and "b" lapsed with nobody taking them: renewed for their holder.
    assert store.load("a").lease_expires == later + ttl(store)
    assert store.load("b").lease_expires == later + ttl(store)
    assert store.load("c").lease_owner == "you"
    with pytest.raises(FlowBusyError):
        store.claim("a", "intruder", later + 1)


def test_check_leases_agrees_with_check_lease_item_by_item(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("held", "demo", "null", "me", t)
    store.start("gone", "demo", "null", "me", t)
    store.release("gone", "me")
    store.start("stopped", "demo", "null", "me", t)
    store.cancel("stopped", "why", t)
    checks = [LeaseCheck(f, "me", t + 1) for f in ("held", "gone", "stopped", "nope")]
    one_by_one: list[Any] = []
    for check in checks:
        try:
            one_by_one.append(store.check_lease(*check))
        except LeaseLostError as exc:
            one_by_one.append(exc)
    together = store.check_leases(checks)
    assert [type(o) for o in together] == [type(o) for o in one_by_one]
    for mine, theirs in zip(together, one_by_one, strict=True):
        if isinstance(mine, LeaseLostError):
            assert str(mine) == str(theirs)
        else:
            assert mine == theirs


def test_check_leases_of_an_empty_batch_is_empty(store: Any) -> None:
    assert store.check_leases([]) == []


def test_check_leases_reads_the_whole_batch_at_once_on_sql_stores(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read answers every check (a concurrent worker's runners): ``lease_rows``
    once with every flow, and on PostgreSQL one statement."""
    if isinstance(store, MemoryStore):
        pytest.skip("MemoryStore reads no rows")
    rows = store.lease_rows
    t = clock.time()
    for flow_id in ("a", "b", "c"):
        store.start(flow_id, "demo", "null", "me", t)
    reads: list[list[str]] = []
    monkeypatch.setattr(store, "lease_rows", lambda ids: reads.append(list(ids)) or rows(ids))
    statements: list[str] = []
    if hasattr(store, "trace"):
        store.trace = statements.append
    checks = [LeaseCheck(f, "me", t + 1) for f in ("a", "b", "nope", "c", "a")]
    outcomes = store.check_leases(checks)
    assert [getattr(o, "status", None) for o in outcomes] == [
        "running", "running", None, "running", "running"
    ]  # fmt: skip
    assert reads == [["a", "b", "nope", "c"]]
    if hasattr(store, "trace"):
        assert len(statements) == 1, statements


# -- caps ------------------------------------------------------------------------------


def test_every_store_declares_its_caps(store: Any, clock: FakeClock) -> None:
    caps = store.caps
    assert isinstance(caps, Caps)
    assert caps_of(store) is caps
    assert caps.where.startswith(type(store).__name__)
    if isinstance(store, SQLiteStore):
        assert caps.where == f"{type(store).__name__}({store.path!r})"
    # Every crux_gen store counts in one query, and says so.
    assert caps.counts is True
    store.start("f1", "demo", "null", "me", clock.time())
    assert store.count_flows() == {"running": 1}
    # Only PostgreSQL announces wake-ups (NOTIFY); a store that says it does has
    # wait_for_wake, and one that does not has none for a worker to find.
    assert caps.wakeups is (type(store).__name__ == "PostgresStore")
    assert callable(getattr(store, "wait_for_wake", None)) is caps.wakeups
    # Only PostgreSQL wakes a waiting reader (NOTIFY); the others' readers poll.
    assert caps.stream_wakeups is (type(store).__name__ == "PostgresStore")
    assert callable(getattr(store, "watch_flow", None)) is caps.stream_wakeups


# -- renew and release ---------------------------------------------------------------


def test_renew_extends_the_holders_lease_and_nobody_elses(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    assert store.renew("f1", "me", t + 10) is True
    assert store.load("f1").lease_expires == t + 10 + ttl(store)
    before = store.load("f1")
    assert store.renew("f1", "you", t + 20) is False
    assert store.renew("nope", "me", t + 20) is False
    assert store.load("f1") == before


def test_renew_after_the_lease_was_taken_over_or_released_is_false(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.claim("f1", "you", t + ttl(store))
    assert store.renew("f1", "me", t + ttl(store)) is False
    assert store.load("f1").lease_owner == "you"
    store.release("f1", "you")
    assert store.renew("f1", "you", t + ttl(store)) is False
    assert store.load("f1").lease_owner is None


def test_release_drops_the_lease_and_nothing_else(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    before = suspended(store, "f1", t, park(wake_at=t + 60, deadline=t + 60))
    store.claim("f1", "you", t + 1)
    store.release("f1", "you")
    assert store.load("f1") == attrs.evolve(before, claimed_at=t + 1)


def test_release_by_another_owner_changes_nothing(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    before = store.load("f1")
    store.release("f1", "someone-else")
    store.release("nope", "me")  # an unknown flow: nothing to release
    assert store.load("f1") == before


# -- commit: fencing and statuses ----------------------------------------------------


def test_a_commit_without_the_lease_is_lease_lost_and_writes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    signal = store.add_signal("f1", "go", "1", t)
    store.claim("f1", "you", t + ttl(store))  # my lease lapsed and was taken over
    before = store.load("f1")
    writes = (
        Write(records=(rec(0),)),  # a step's commit
        Write(
            records=(rec(0), rec(1, "go", kind="suspend")),
            signals=(SignalUpdate(signal.id, CONSUMED, position=1),),
            status="completed",
            result='"done"',
        ),
    )
    for write in writes:
        with pytest.raises(LeaseLostError, match="'me'"):
            store.commit("f1", "me", t + ttl(store), write)
        assert store.load("f1") == before
    with pytest.raises(LeaseLostError):
        store.commit("nope", "me", t, Write(records=(rec(0),)))


def test_a_commit_by_the_owner_of_a_lapsed_lease_nobody_took_is_applied(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    later = t + 2 * ttl(store)
    assert store.commit("f1", "me", later, Write(records=(rec(0),))).status == "running"
    assert store.commit("f1", "me", later, END["completed"]).status == "completed"
    stored = store.load("f1")
    assert (stored.status, stored.records) == ("completed", (rec(0),))


def test_a_step_commit_appends_its_record_and_keeps_the_flow_running_and_claimed(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    for position in range(3):
        outcome = store.commit("f1", "me", t + 1, Write(records=(rec(position, f"s{position}"),)))
        assert (outcome.status, outcome.signals, outcome.cancel_reason) == ("running", (), None)
    stored = store.load("f1")
    assert stored.records == (rec(0, "s0"), rec(1, "s1"), rec(2, "s2"))
    assert (stored.status, stored.lease_owner, stored.lease_expires) == (
        "running",
        "me",
        t + ttl(store),
    )


def test_a_step_commit_on_a_suspended_flow_makes_it_running_and_clears_its_wait(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    suspended(
        store,
        "f1",
        t,
        park(records=(rec(0, "go", WAITING, kind="suspend"),), wake_at=t + 60, deadline=t + 60),
    )
    store.claim("f1", "me", t + 1)
    resolved = rec(0, "go", kind="suspend")
    outcome = store.commit("f1", "me", t + 2, Write(records=(resolved,)))
    assert outcome.status == "running"
    stored = store.load("f1")
    assert (stored.status, stored.updated_at, stored.lease_owner) == ("running", t + 2, "me")
    assert (stored.waiting_for, stored.wait_kind, stored.wake_at, stored.deadline) == (
        None,
        None,
        None,
        None,
    )
    assert stored.records == (resolved,)


def test_a_park_sets_the_wait_and_releases_the_lease(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    waiting = rec(0, "go", WAITING, kind="suspend", deadline=t + 60)
    outcome = store.commit(
        "f1", "me", t + 1, park(records=(waiting,), wake_at=t + 60, deadline=t + 60)
    )
    assert (outcome.status, outcome.signals) == ("suspended", ())
    assert store.load("f1") == StoredFlow(
        "f1",
        "demo",
        "suspended",
        "null",
        t,
        t + 1,
        waiting_for="go",
        wait_kind="suspend",
        wake_at=t + 60,
        deadline=t + 60,
        claimed_at=t,
        records=(waiting,),
    )


def test_complete_fail_and_expire_set_the_status_and_release_the_lease(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status, write in END.items():
        suspended(store, status, t, park(wake_at=t + 60, deadline=t + 60))
        store.claim(status, "me", t + 1)
        outcome = store.commit(status, "me", t + 2, attrs.evolve(write, records=(rec(0),)))
        assert outcome.status == status
        stored = store.load(status)
        assert (stored.status, stored.updated_at, stored.records) == (status, t + 2, (rec(0),))
        assert (stored.result, stored.error) == (write.result, write.error)
        assert (stored.waiting_for, stored.wait_kind) == (write.waiting_for, write.wait_kind)
        assert (stored.wake_at, stored.deadline) == (None, None)
        assert (stored.lease_owner, stored.lease_expires) == (None, None)


def test_a_finished_flow_takes_no_more_commits(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        store.claim(status, "me", t + 1)  # returned unclaimed: no lease to write with
        with pytest.raises(LeaseLostError):
            store.commit(status, "me", t + 1, Write(records=(rec(0),), status="suspended"))
        assert store.load(status) == before


def test_a_commit_for_a_status_no_runner_event_leads_to_is_refused_and_applies_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    before = store.load("f1")
    for status in ("cancelled", "no-such-status"):
        with pytest.raises((KeyError, ValueError)):
            store.commit("f1", "me", t, Write(records=(rec(0),), status=status))
        assert store.load("f1") == before


# -- commit: records -----------------------------------------------------------------


def test_a_record_at_a_gap_is_a_conflict_and_nothing_of_the_write_is_applied(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, Write(records=(rec(0),)))
    signal = store.add_signal("f1", "go", "1", t)
    before = store.load("f1")
    with pytest.raises(RecordConflictError) as conflict:
        store.commit("f1", "me", t + 1, Write(records=(rec(2),)))  # a step's commit
    assert (conflict.value.flow_id, conflict.value.position) == ("f1", 2)
    assert store.load("f1") == before
    with pytest.raises(RecordConflictError):
        store.commit(
            "f1",
            "me",
            t + 1,
            Write(
                records=(rec(1), rec(3)),  # the first fits, the second leaves a gap
                signals=(SignalUpdate(signal.id, CONSUMED, position=1),),
                status="completed",
                result='"done"',
            ),
        )
    assert store.load("f1") == before


@pytest.mark.parametrize("state", [COMPLETED, FAILED, EXPIRED])
def test_a_record_over_a_resolved_record_is_a_conflict_and_nothing_is_applied(
    store: Any, clock: FakeClock, state: str
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, Write(records=(rec(0, "a", state),)))
    signal = store.add_signal("f1", "go", "1", t)
    before = store.load("f1")
    with pytest.raises(RecordConflictError):
        store.commit("f1", "me", t + 1, Write(records=(rec(0, "a"),)))
    assert store.load("f1") == before
    with pytest.raises(RecordConflictError):
        store.commit(
            "f1",
            "me",
            t + 1,
            park(
                records=(rec(1, "b"), rec(0, "a", WAITING)),
                signals=(SignalUpdate(signal.id, REJECTED, error="no"),),
            ),
        )
    assert store.load("f1") == before


def test_an_unresolved_record_may_be_rewritten_by_its_holder(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    first = rec(0, "flaky", RETRYING, attempts=1, wake_at=t + 1)
    store.commit("f1", "me", t, park("flaky", "retry", records=(first,), wake_at=t + 1))
    store.claim("f1", "me", t + 1)
    second = first._replace(attempts=2, wake_at=t + 3)
    store.commit("f1", "me", t + 1, Write(records=(second,)))
    assert store.load("f1").records == (second,)
    done = rec(0, "flaky", attempts=3)
    store.commit("f1", "me", t + 3, Write(records=(done, rec(1, "next"))))
    assert store.load("f1").records == (done, rec(1, "next"))
    waiting = rec(2, "go", WAITING, kind="suspend")
    store.commit("f1", "me", t + 4, park(records=(waiting,)))
    store.claim("f1", "me", t + 5)
    resolved = rec(2, "go", kind="suspend", result='"payload"')
    store.commit("f1", "me", t + 5, Write(records=(resolved,)))
    assert store.load("f1").records == (done, rec(1, "next"), resolved)


# -- commit: signals -----------------------------------------------------------------


def test_a_wait_is_not_applied_while_an_awaited_signal_is_pending(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, Write(records=(rec(0),)))
    first = store.add_signal("f1", "go", '"1"', t)
    store.add_signal("f1", "other", '"x"', t)
    second = store.add_signal("f1", "go", '"2"', t + 1)
    before = store.load("f1")
    waiting = rec(1, "go", WAITING, kind="suspend", deadline=t + 60)
    for write in (
        park(records=(waiting,), wake_at=t + 60, deadline=t + 60, wait_signal="go"),
        Write(records=(waiting._replace(state=EXPIRED),), status="expired", wait_signal="go"),
    ):
        outcome = store.commit("f1", "me", t + 2, write)
        assert outcome.status == "running"
        assert outcome.signals == (first, second)  # oldest first, as stored
        assert store.load("f1") == before  # nothing applied, the lease kept


def test_signals_the_write_itself_updates_do_not_count_as_arrived(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    first = store.add_signal("f1", "go", '"1"', t)
    second = store.add_signal("f1", "go", '"2"', t)
    consume_first = SignalUpdate(first.id, CONSUMED, position=0)
    before = store.load("f1")
    outcome = store.commit(
        "f1",
        "me",
        t + 1,
        park(
            records=(rec(0, "go", kind="suspend"), rec(1, "go", WAITING, kind="suspend")),
            signals=(consume_first,),
            wait_signal="go",
        ),
    )
    assert outcome.signals == (second,)
    assert store.load("f1") == before
    outcome = store.commit(
        "f1",
        "me",
        t + 1,
        park(
            records=(rec(0, "go", kind="suspend"), rec(1, "go", kind="suspend", result='"2"')),
            signals=(consume_first, SignalUpdate(second.id, REJECTED, error="bad")),
            wait_signal="go",
        ),
    )
    assert (outcome.status, outcome.signals) == ("suspended", ())
    assert [s.state for s in store.load("f1").signals] == [CONSUMED, REJECTED]


def test_a_wait_is_applied_when_only_other_or_used_signals_are_there(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    used = store.add_signal("f1", "go", '"1"', t)
    bad = store.add_signal("f1", "go", '"bad"', t)
    store.add_signal("f1", "other", '"x"', t)
    store.commit(
        "f1",
        "me",
        t,
        Write(
            records=(rec(0, "go", kind="suspend", result='"1"'),),
            signals=(
                SignalUpdate(used.id, CONSUMED, position=0),
                SignalUpdate(bad.id, REJECTED, error="bad"),
            ),
        ),
    )
    outcome = store.commit(
        "f1", "me", t + 1, park(records=(rec(1, "go", WAITING, kind="suspend"),), wait_signal="go")
    )
    assert (outcome.status, outcome.signals) == ("suspended", ())
    assert store.load("f1").status == "suspended"


def test_signal_updates_are_stored_with_the_time_of_the_commit(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    taken = store.add_signal("f1", "go", '"1"', t)
    bad = store.add_signal("f1", "go", '"bad"', t)
    kept = store.add_signal("f1", "go", '"3"', t)
    store.commit(
        "f1",
        "me",
        t + 5,
        Write(
            records=(rec(0, "go", kind="suspend", result='"1"'),),
            signals=(
                SignalUpdate(taken.id, CONSUMED, position=0),
                SignalUpdate(bad.id, REJECTED, error="not a number"),
            ),
        ),
    )
    assert store.load("f1").signals == (
        taken._replace(state=CONSUMED, position=0, consumed_at=t + 5),
        bad._replace(state=REJECTED, error="not a number", consumed_at=t + 5),
        kept,
    )


def test_a_commit_to_a_flow_cancelled_meanwhile_writes_its_records_and_drops_the_lease(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    waiting = rec(1, "go", WAITING, kind="suspend")
    writes = {
        "step": Write(records=(rec(0),)),
        "park": park(records=(rec(0), waiting), wake_at=t + 60, wait_signal="go"),
        "complete": Write(records=(rec(0),), status="completed", result='"done"'),
    }
    for flow_id, write in writes.items():
        store.start(flow_id, "demo", "null", "me", t)
        signal = store.add_signal(flow_id, "go", "1", t)  # awaited, yet not handed back
        assert store.cancel(flow_id, "customer left", t + 1) is True
        signal = signal._replace(state=UNUSED)  # pending when the flow ended: kept, unused
        if flow_id != "step":  # (a step's commit alone takes SQLite's one-statement path)
            update = SignalUpdate(signal.id, REJECTED, error="bad")
            write = attrs.evolve(write, signals=(update,))
            signal = signal._replace(state=REJECTED, error="bad", consumed_at=t + 2)
        outcome = store.commit(flow_id, "me", t + 2, write)
        assert (outcome.status, outcome.cancel_reason, outcome.signals) == (
            "cancelled",
            "customer left",
            (),
        )
        stored = store.load(flow_id)
        assert stored.records == write.records, flow_id
        assert stored.signals == (signal,)
        assert (stored.status, stored.cancel_reason, stored.result) == (
            "cancelled",
            "customer left",
            None,
        )
        assert (stored.lease_owner, stored.updated_at, stored.wake_at) == (None, t + 1, None)


# -- add_signal ----------------------------------------------------------------------


def test_add_signal_stores_a_pending_signal_with_an_increasing_id(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    suspended(store, "f2", t)
    before = store.load("f1")
    a = store.add_signal("f1", "go", '{"n": 1}', t + 1)
    b = store.add_signal("f2", "go", '"x"', t + 2)
    c = store.add_signal("f1", "other", "null", t + 3)
    assert a.id < b.id < c.id
    assert a == StoredSignal(a.id, "f1", "go", '{"n": 1}', PENDING, t + 1)
    assert (b.flow_id, b.name, b.payload, b.state, b.created_at) == (
        "f2",
        "go",
        '"x"',
        PENDING,
        t + 2,
    )
    assert store.load("f1").signals == (a, c)
    assert store.load("f2").signals == (b,)
    assert attrs.evolve(store.load("f1"), signals=()) == before  # nothing else changes


def test_add_signal_to_an_unknown_flow_is_not_found(store: Any, clock: FakeClock) -> None:
    with pytest.raises(FlowNotFoundError):
        store.add_signal("nope", "go", "1", clock.time())


def test_add_signal_to_a_finished_flow_is_closed_and_stores_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        with pytest.raises(FlowClosedError) as closed:
            store.add_signal(status, "go", "1", t + 1)
        assert (closed.value.flow_id, closed.value.status) == (status, status)
        assert store.load(status) == before


def test_add_signal_once_the_waits_deadline_passed_is_closed_and_stores_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    suspended(store, "f1", t, park(wake_at=t + 60, deadline=t + 60))
    in_time = store.add_signal("f1", "go", '"1"', t + 59)
    assert in_time.state == PENDING
    before = store.load("f1")
    for at in (t + 60, t + 61):  # the deadline itself is too late
        for name in ("go", "other"):
            with pytest.raises(FlowClosedError, match="timed out") as closed:
                store.add_signal("f1", name, '"2"', at)
            assert closed.value.status == "expired"
    assert store.load("f1") == before
    # A claim leaves the deadline as it is: refused while a runner holds the flow too.
    store.claim("f1", "worker", t + 61)
    before = store.load("f1")
    with pytest.raises(FlowClosedError):
        store.add_signal("f1", "go", '"3"', t + 62)
    assert store.load("f1") == before
    # Once the runner consumed the signal sent in time and went on, signals are taken again.
    store.commit(
        "f1",
        "worker",
        t + 62,
        Write(
            records=(rec(0, "go", kind="suspend", result='"1"'),),
            signals=(SignalUpdate(in_time.id, CONSUMED, position=0),),
        ),
    )
    assert store.add_signal("f1", "next", '"4"', t + 63).state == PENDING


def test_a_signal_key_stores_one_signal_per_flow_and_key(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "f1", t)
    suspended(store, "f2", t)
    first = store.add_signal("f1", "go", '"click"', t, key="token-1")
    assert first is not None and first.key == "token-1"
    assert store.add_signal("f1", "go", '"again"', t + 1, key="token-1") is None
    assert store.add_signal("f1", "other", '"x"', t + 1, key="token-1") is None  # any name
    assert store.add_signal("f2", "go", '"click"', t, key="token-1") is not None  # per flow
    assert store.add_signal("f1", "go", '"keyless"', t) is not None
    assert store.add_signal("f1", "go", '"keyless"', t) is not None  # no key: no dedup
    assert [(s.payload, s.key) for s in store.load("f1").signals] == [
        ('"click"', "token-1"),
        ('"keyless"', None),
        ('"keyless"', None),
    ]


def test_a_repeated_signal_key_for_a_finished_flow_is_answered_not_refused(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    suspended(store, "f1", t)
    assert store.add_signal("f1", "go", "1", t, key="k") is not None
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, END["completed"])
    assert store.add_signal("f1", "go", "1", t, key="k") is None  # the retried delivery
    with pytest.raises(FlowClosedError):
        store.add_signal("f1", "go", "1", t, key="new")


# -- cancel --------------------------------------------------------------------------


def test_cancel_ends_an_unfinished_flow_with_its_reason(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "waiting", t, park("nap", "sleep", wake_at=t + 60))
    store.start("running", "demo", "null", "me", t)
    store.commit("running", "me", t, Write(records=(rec(0),)))
    for flow_id in ("waiting", "running"):
        before = store.load(flow_id)
        assert store.cancel(flow_id, "customer left", t + 1) is True
        assert store.load(flow_id) == attrs.evolve(
            before,
            status="cancelled",
            cancel_reason="customer left",
            wake_at=None,
            updated_at=t + 1,
        )
    # The runner holding "running" keeps its lease until it sees the cancel.
    assert store.load("running").lease_owner == "me"
    outcome = store.check_lease("running", "me", t + 2)
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", "customer left")
    assert store.due(t + 3600, 10) == []


def test_cancel_of_a_finished_flow_is_false_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        before = finished(store, status, status, t)
        assert store.cancel(status, "again", t + 1) is False
        assert store.load(status) == before  # a cancelled flow keeps its first reason


def test_cancel_of_an_unknown_flow_is_not_found(store: Any, clock: FakeClock) -> None:
    with pytest.raises(FlowNotFoundError):
        store.cancel("nope", "why", clock.time())


# -- due -----------------------------------------------------------------------------


def test_due_finds_timers_signals_and_crashed_runs_and_nothing_else(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    at = t + ttl(store)
    suspended(store, "timer-due", t, park("nap", "sleep", wake_at=t + 5))
    suspended(store, "timer-just-due", t, park("nap", "sleep", wake_at=at))
    suspended(store, "timer-later", t, park("nap", "sleep", wake_at=at + 1))
    suspended(store, "signalled", t)
    store.add_signal("signalled", "go", "1", t)
    suspended(store, "other-signal", t, park(wake_at=at + 60, deadline=at + 60))
    store.add_signal("other-signal", "other", "1", t)
    store.start("used-signals", "demo", "null", "me", t)
    used = store.add_signal("used-signals", "go", "1", t)
    bad = store.add_signal("used-signals", "go", "2", t)
    store.commit(
        "used-signals",
        "me",
        t,
        park(
            records=(rec(0, "go", kind="suspend"), rec(1, "go", WAITING, kind="suspend")),
            signals=(
                SignalUpdate(used.id, CONSUMED, position=0),
                SignalUpdate(bad.id, REJECTED, error="bad"),
            ),
            wait_signal="go",
        ),
    )
    store.start("crashed", "demo", "null", "dead", t)
    store.start("released", "demo", "null", "gone", t)
    store.release("released", "gone")
    store.start("renewed", "demo", "null", "alive", t)
    assert sorted(store.due(t, 100)) == ["released", "signalled"]
    assert store.renew("renewed", "alive", at - 1)
    assert sorted(store.due(at, 100)) == [
        "crashed",
        "released",
        "signalled",
        "timer-due",
        "timer-just-due",
    ]


def test_due_never_lists_a_flow_whose_lease_is_live(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "timer", t, park("nap", "sleep", wake_at=t))
    suspended(store, "signalled", t)
    store.add_signal("signalled", "go", "1", t)
    store.start("running", "demo", "null", "me", t)
    store.claim("timer", "worker", t)
    store.claim("signalled", "worker", t)
    assert store.due(t + ttl(store) - 1, 100) == []
    assert sorted(store.due(t + ttl(store), 100)) == ["running", "signalled", "timer"]


def test_due_never_lists_a_finished_flow(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for status in FINISHED:
        store.start(status, "demo", "null", "me", t)
        store.add_signal(status, "go", "1", t)  # left pending
        if status == "cancelled":
            store.commit(status, "me", t, park(wake_at=t))
            store.cancel(status, "stop", t)
        else:  # even with a wake-up time written with the end
            store.commit(status, "me", t, attrs.evolve(END[status], wake_at=t))
    assert store.due(t + 10 * ttl(store), 100) == []


def test_due_lists_the_oldest_wake_up_first_and_at_most_limit(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "z-signalled", t - 5)  # due since it parked, at t - 5
    store.add_signal("z-signalled", "go", "1", t)
    for flow_id, wake in (("x-timer", 10), ("m-timer", 20), ("b-timer", 25)):
        suspended(store, flow_id, t, park("nap", "sleep", wake_at=t + wake))
    store.start("a-crashed", "demo", "null", "dead", t + 50 - ttl(store))  # lapses at t + 50
    order = ["z-signalled", "x-timer", "m-timer", "b-timer", "a-crashed"]
    assert store.due(t + 100, 100) == order
    assert store.due(t + 100, 3) == order[:3]
    assert store.due(t + 100, 0) == []


def test_due_lists_a_flow_once_when_its_timer_and_its_signals_are_all_due(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    suspended(store, "f1", t, park(wake_at=t + 60, deadline=t + 60))  # a Suspend with a timeout
    store.add_signal("f1", "go", "1", t + 30)
    store.add_signal("f1", "go", "2", t + 40)
    assert store.due(t + 50, 10) == ["f1"]
    assert store.due(t + 61, 10) == ["f1"]  # the worker finds it late: still one flow to run


# -- StoreAdmin ----------------------------------------------------------------------


def test_list_flows_filters_by_status_and_name_newest_update_first(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("a", "one", "null", "me", t + 1)
    store.start("b", "two", "null", "me", t + 2)
    store.commit("b", "me", t + 3, Write(records=(rec(0),), status="completed", result="1"))
    store.start("c", "one", "null", "me", t + 4)
    store.add_signal("c", "go", "1", t + 4)
    store.commit("c", "me", t + 5, park(records=(rec(0),)))
    store.claim("a", "me", t + 9)  # a claim is not an update
    assert [f.id for f in store.list_flows()] == ["c", "b", "a"]
    assert [f.id for f in store.list_flows(status="completed")] == ["b"]
    assert [f.id for f in store.list_flows(name="one")] == ["c", "a"]
    assert [f.id for f in store.list_flows(status="suspended", name="one")] == ["c"]
    assert store.list_flows(status="suspended", name="two") == []
    assert [f.id for f in store.list_flows(limit=2)] == ["c", "b"]
    for listed in store.list_flows():  # the rows without their history
        assert listed == attrs.evolve(store.load(listed.id), records=(), signals=())


def test_list_flows_pages_by_keyset_before_an_update_time(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for n in range(7):
        store.start(f"f{n}", "demo", "null", "me", t + n)
    pages: list[list[str]] = []
    before = None
    while True:
        page = store.list_flows(limit=3, before=before)
        if not page:
            break
        pages.append([f.id for f in page])
        before = page[-1].updated_at
    assert pages == [["f6", "f5", "f4"], ["f3", "f2", "f1"], ["f0"]]
    assert [f.id for f in store.list_flows(name="demo", limit=2, before=t + 3)] == ["f2", "f1"]


def test_list_flows_bounds_the_update_time_since_inclusive_until_exclusive(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for n in range(6):
        store.start(f"f{n}", "even" if n % 2 == 0 else "odd", "null", "me", t + n)
    assert [f.id for f in store.list_flows(since=t + 2)] == ["f5", "f4", "f3", "f2"]
    assert [f.id for f in store.list_flows(until=t + 2)] == ["f1", "f0"]
    assert [f.id for f in store.list_flows(since=t + 1, until=t + 4)] == ["f3", "f2", "f1"]
    assert [f.id for f in store.list_flows(name="even", since=t + 1, until=t + 5)] == [
        "f4",
        "f2",
    ]
    # with a keyset: the next page stays within the bounds
    first = store.list_flows(since=t + 1, until=t + 5, limit=2)
    assert [f.id for f in first] == ["f4", "f3"]
    last = first[-1]
    rest = store.list_flows(since=t + 1, until=t + 5, limit=2, before=(last.updated_at, last.id))
    assert [f.id for f in rest] == ["f2", "f1"]
    assert store.list_flows(since=t + 3, until=t + 3) == []


def test_count_counts_what_list_flows_lists_without_a_limit(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for n in range(5):
        store.start(f"s{n}", "one" if n < 3 else "two", "null", "me", t + n)
    finished(store, "done", "completed", t + 10)
    finished(store, "bad", "failed", t + 11)
    assert store.count() == 7
    assert store.count(status="running") == 5
    assert store.count(status="running", name="one") == 3
    assert store.count(name="two") == 2
    assert store.count(name="demo", status="failed") == 1
    assert store.count(since=t + 2) == 5
    assert store.count(since=t + 2, until=t + 10) == 3
    assert store.count(status="expired") == 0
    for filters in ({}, {"status": "running"}, {"since": t + 3.5}, {"name": "one", "until": t + 2}):
        assert store.count(**filters) == len(store.list_flows(limit=1000, **filters))


def test_wait_records_gives_each_flows_unresolved_records_in_one_read(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    waiting = rec(1, "approve", WAITING, kind="suspend", result=None, deadline=t + 99)
    suspended(store, "w", t, park(records=(rec(0), waiting)))
    backoff = rec(1, "charge", RETRYING, attempts=1, wake_at=t + 5)
    suspended(store, "r", t, park("charge", "retry", records=(rec(0), backoff), wake_at=t + 5))
    finished(store, "done", "completed", t)
    found = store.wait_records(["w", "r", "done", "nobody", "w"])
    assert found == {"w": (waiting,), "r": (backoff,)}
    assert store.wait_records([]) == {}


def test_prune_by_status_and_flow_name_combine_with_the_cutoff(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for n, status in enumerate(("completed", "failed", "failed", "cancelled")):
        finished(store, f"old-{n}", status, t)
    store.start("other", "other", "null", "me", t)
    store.commit("other", "me", t, END["failed"])
    finished(store, "new-failed", "failed", t + 50)
    suspended(store, "waiting", t)
    with pytest.raises(InvalidValueError, match="suspended"):
        store.prune(status="suspended")
    assert store.prune(t + 10, status="failed", name="demo") == 2
    assert {f.id for f in store.list_flows()} == {
        "old-0", "old-3", "other", "new-failed", "waiting"
    }  # fmt: skip
    assert store.prune(status="failed") == 2  # any time: "other" and "new-failed"
    assert store.prune(name="demo") == 2  # every finished flow of "demo"
    assert [f.id for f in store.list_flows()] == ["waiting"]


def test_delete_removes_one_finished_flow_with_its_history_and_signals(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in ("completed", "failed", "expired", "cancelled"):
        finished(store, status, status, t)
    suspended(store, "waiting", t)
    store.add_signal("waiting", "go", "1", t)
    for status in ("completed", "failed", "expired", "cancelled"):
        assert store.delete(status) is True
        with pytest.raises(FlowNotFoundError):
            store.load(status)
    assert store.delete("completed") is False  # gone already: nothing to do
    before = store.load("waiting")
    with pytest.raises(FlowStateError, match="cancel it first"):
        store.delete("waiting")
    assert store.load("waiting") == before


def test_match_ids_lists_the_ids_with_a_prefix_in_order(store: Any, clock: FakeClock) -> None:
    ids = ["ab2", "ab1", "a_c", "abc", "b", "a%", "ab"]
    for flow_id in ids:
        store.start(flow_id, "demo", "null", "me", clock.time())
    assert store.match_ids("ab", 10) == ["ab", "ab1", "ab2", "abc"]
    assert store.match_ids("ab", 2) == ["ab", "ab1"]
    assert store.match_ids("a_", 10) == ["a_c"]  # the prefix is text, not a pattern
    assert store.match_ids("a%", 10) == ["a%"]
    assert store.match_ids("", 100) == sorted(ids)
    assert store.match_ids("zz", 10) == []


def test_retry_failed_drops_the_failed_command_and_the_values_recorded_after_it(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    signal = store.add_signal("f1", "go", "1", t)
    store.add_signal("f1", "later", "2", t)
    history = (
        rec(0, "a"),
        rec(1, "go", kind="suspend"),
        rec(2, "charge", FAILED, attempts=3),
        rec(3, "now", kind="now", result="1767225600.0"),
        rec(4, "uuid4", kind="uuid4"),
    )
    store.commit(
        "f1",
        "me",
        t,
        Write(
            records=history,
            signals=(SignalUpdate(signal.id, CONSUMED, position=1),),
            status="failed",
            error=ERROR,
        ),
    )
    before = store.load("f1")
    assert store.retry_failed("f1", t + 10) == history[2:]
    assert store.load("f1") == attrs.evolve(
        before,
        status="suspended",
        error=None,
        waiting_for="charge",
        wait_kind="retry",
        wake_at=t + 10,
        updated_at=t + 10,
        records=history[:2],
        # What nothing consumed (marked unused when it failed) is pending again.
        signals=(before.signals[0], before.signals[1]._replace(state="pending")),
    )
    assert before.signals[1].state == "unused"
    assert store.due(t + 10, 10) == ["f1"]
    assert store.claim("f1", "worker", t + 10, only_if_due=True).lease_owner == "worker"


def test_retry_failed_keeps_every_record_when_the_body_itself_raised(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    histories = {
        "caught": (rec(0, "a", FAILED), rec(1, "b")),  # the flow caught a's failure, went on
        "no-failed-step": (rec(0, "a"), rec(1, "now", kind="now", result="1.0")),
        "nothing-recorded": (),
    }
    for flow_id, history in histories.items():
        store.start(flow_id, "demo", "null", "me", t)
        store.commit(flow_id, "me", t, Write(records=history, status="failed", error=ERROR))
        assert store.retry_failed(flow_id, t + 10) == ()
        stored = store.load(flow_id)
        assert stored.records == history
        assert (stored.status, stored.error, stored.wake_at) == ("suspended", None, t + 10)
    assert sorted(store.due(t + 10, 10)) == sorted(histories)


def test_retry_failed_refuses_a_flow_that_is_not_failed_cancelled_or_expired(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("running", "demo", "null", "me", t)
    suspended(store, "suspended", t)
    finished(store, "completed", "completed", t)
    suspended(store, "paused", t)
    store.pause("paused", t)
    for flow_id in ("running", "suspended", "completed", "paused"):
        before = store.load(flow_id)
        with pytest.raises(FlowStateError) as refused:
            store.retry_failed(flow_id, t + 1)
        assert (refused.value.flow_id, refused.value.status) == (flow_id, flow_id)
        assert store.load(flow_id) == before
    with pytest.raises(FlowNotFoundError):
        store.retry_failed("nope", t)


def test_prune_deletes_finished_flows_updated_before_the_cutoff_with_their_history(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for status in FINISHED:
        flow_id = f"old-{status}"
        store.start(flow_id, "demo", "null", "me", t)
        store.add_signal(flow_id, "go", "1", t)
        if status == "cancelled":
            store.commit(flow_id, "me", t, park(records=(rec(0),)))
            store.cancel(flow_id, "stop", t)
        else:
            store.commit(flow_id, "me", t, attrs.evolve(END[status], records=(rec(0),)))
    finished(store, "at-cutoff", "completed", t + 10)
    finished(store, "recent", "failed", t + 20)
    store.start("old-running", "demo", "null", "me", t)
    suspended(store, "old-suspended", t)
    kept = {f: store.load(f) for f in ("at-cutoff", "recent", "old-running", "old-suspended")}
    assert store.prune(t + 10) == 4
    for status in FINISHED:
        flow_id = f"old-{status}"
        with pytest.raises(FlowNotFoundError):
            store.load(flow_id)
        store.start(flow_id, "demo", "null", "me", t + 30)  # the id starts afresh
        assert (store.load(flow_id).records, store.load(flow_id).signals) == ((), ())
    for flow_id, flow in kept.items():
        assert store.load(flow_id) == flow
    assert store.prune(t + 10) == 0


def test_a_store_goes_on_working_after_close(store: Any, clock: FakeClock) -> None:
    store.start("f1", "demo", "null", "me", clock.time())
    store.close()
    assert store.load("f1").status == "running"
    store.close()


# -- SQLite only -----------------------------------------------------------------------


def test_sqlite_store_checks_the_synchronous_mode(tmp_path: Path) -> None:
    assert SQLiteStore(tmp_path / "a.db", synchronous="normal").synchronous == "NORMAL"
    with pytest.raises(ValueError, match="'OFF'"):
        SQLiteStore(tmp_path / "b.db", synchronous="OFF")


def test_sqlite_full_claims_commit_without_an_fsync_and_steps_with_one(tmp_path: Path) -> None:
    # A lease lost to a power cut is harmless (its holder is gone too): a claim's
    # commit on FULL runs with synchronous=NORMAL (no fsync of its own; the next
    # fsync'd commit makes it durable, WAL commits being durable in order), and
    # everything else, a step's record first, is fsync'd as before.
    store = SQLiteStore(tmp_path / "full.db", clock=FakeClock())
    conn = store._conn()
    t = store.clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.release("f1", "me")
    store.start("f2", "demo", "null", "me", t)
    store.release("f2", "me")
    seen: list[str] = []
    conn.set_trace_callback(seen.append)

    def synchronous_of(marker: str) -> list[int]:
        """The synchronous level each statement containing *marker* ran under."""
        level, found = 2, []
        for statement in seen:
            if statement.startswith("PRAGMA synchronous"):
                level = {"NORMAL": 1, "FULL": 2}[statement.split("= ")[1]]
            elif statement.startswith(marker):
                found.append(level)
        return found

    store.claim("f1", "me", t)
    assert [flow.id for flow in store.claim_due(t + 1, 10, "other")] == ["f2"]
    with pytest.raises(FlowNotFoundError):
        store.claim("nope", "me", t)
    store.commit("f1", "me", t, Write(records=(rec(0),)))
    conn.set_trace_callback(None)
    assert synchronous_of("UPDATE flows SET lease_owner") == [1, 1]  # f1's claim, f2's
    assert set(synchronous_of("INSERT INTO records")) == {2}  # the step: fsync'd
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # back to FULL
    assert store.load("f1").records[0].position == 0
    assert store.load("f2").lease_owner == "other"


def test_sqlite_store_uses_wal_a_schema_version_and_keeps_data_across_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crux.db"
    store = SQLiteStore(path)
    store.start("f1", "demo", '{"x":1}', "me", 1.0)
    store.close()
    again = SQLiteStore(path)
    assert again.load("f1").input == '{"x":1}'
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11


def test_sqlite_store_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreSchemaError, match="schema version 99"):
        SQLiteStore(path)


def test_the_due_query_reads_indexes_not_the_whole_table(tmp_path: Path) -> None:
    from crux_gen.stores.sqlite_schema import DUE

    store = SQLiteStore(tmp_path / "crux.db")
    plan = store._conn().execute("EXPLAIN QUERY PLAN " + DUE, {"now": 0.0, "limit": 10})
    details = " | ".join(row[-1] for row in plan.fetchall())
    assert "flows_due" in details
    assert "flows_pending" in details  # Flow.start's due flows: an index range too
    assert "flows_running" in details
    assert "signals_pending" in details
    assert "SCAN flows" not in details.replace("SCAN flows USING", "")


def test_time_bounded_listings_and_counts_read_an_index_range(tmp_path: Path) -> None:
    from crux_gen.stores.listing import count_query, listing_query

    store = SQLiteStore(tmp_path / "crux.db")
    for status in (None, "failed"):
        bounds: dict[str, Any] = {"status": status, "name": None, "since": 1.0, "until": 2.0}
        for query, params in (
            listing_query("id", "?", limit=10, before=(1.5, "x"), **bounds),
            count_query("?", **bounds),
        ):
            plan = store._conn().execute("EXPLAIN QUERY PLAN " + query, params).fetchall()
            details = " | ".join(row[-1] for row in plan)
            assert "USING" in details and "updated_at>?" in details.replace(" ", ""), details
            assert "SCAN flows" not in details.replace("USING COVERING INDEX", "USING"), details


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "crux.db", clock=FakeClock())
    store.start("f1", "demo", "null", "me", 1.0)
    good = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    bad = StoredRecord(1, "step", None, COMPLETED, result="2", attempts=1)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="refused a write"):
        store.commit("f1", "me", 2.0, Write(records=(good, bad), status="completed"))
    row = store.load("f1")
    assert (row.records, row.status) == ((), "running")


def test_a_path_that_cannot_be_a_store_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-dir"):
        SQLiteStore(tmp_path / "no-such-dir" / "crux.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 200)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(junk)


def test_the_store_holds_json_only_and_nothing_is_pickled(tmp_path: Path) -> None:
    import json

    import attrs

    from crux_gen import Step, Suspend, flow, resume, signal_flow

    @attrs.frozen
    class Verified:
        at: str

    @flow("json-only")
    def f(ctx: Any) -> Any:
        yield Step("a", lambda: {"when": ctx.now(), "tags": {"x"}})
        v = yield Suspend("go", schema=Verified)
        yield Step("b", lambda: Verified(v.at))
        raise ValueError("the end")

    store = SQLiteStore(tmp_path / "crux.db")
    r = f.run(input={"n": (1, 2)}, store=store)
    signal_flow(r.flow_id, "go", {"at": "now"}, store=store)
    assert resume(r.flow_id, store=store).status == "failed"
    conn = sqlite3.connect(tmp_path / "crux.db")
    texts = [
        *conn.execute("SELECT input FROM flows"),
        *conn.execute("SELECT error FROM flows"),
        *conn.execute("SELECT result FROM records WHERE result IS NOT NULL"),
        *conn.execute("SELECT payload FROM signals"),
    ]
    assert len(texts) >= 5
    for (text,) in texts:
        assert isinstance(text, str)
        json.loads(text)
    blobs = conn.execute(
        "SELECT count(*) FROM records WHERE typeof(result) = 'blob' OR typeof(error) = 'blob'"
    ).fetchone()[0]
    assert blobs == 0
    source = Path(__file__).resolve().parent.parent
    for module in [*source.glob("crux_gen/*.py"), *source.glob("stores/*.py")]:
        text = module.read_text()
        assert "import pickle" not in text and "pickle." not in text, module


def test_a_file_locked_past_the_busy_timeout_is_a_crux_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    from crux_gen import CruxError
    from crux_gen.errors import StoreBusyError

    path = tmp_path / "crux.db"
    store = SQLiteStore(path, busy_timeout="100ms")
    store.start("f1", "demo", "null", "me", 1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    with pytest.raises(StoreBusyError, match="busy timeout") as info:
        store.add_signal("f1", "go", "1", 2.0)
    assert isinstance(info.value, CruxError)
    with pytest.raises(StoreBusyError):
        store.commit("f1", "me", 2.0, Write(records=(record,)))  # a step's one statement
    other.execute("ROLLBACK")
    row = store.load("f1")
    assert (row.records, row.signals) == ((), ())


def test_a_version_1_file_is_migrated_in_place_and_keeps_its_flows(tmp_path: Path) -> None:
    from crux_gen.stores.sqlite_schema import create_schema

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    create_schema(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at, waiting_for, "
        "wait_kind) VALUES ('old', 'demo', 'suspended', 'null', 1.0, 1.0, 'go', 'suspend')"
    )
    conn.execute(
        "INSERT INTO signals (flow_id, name, payload, state, created_at) "
        "VALUES ('old', 'go', '1', 'pending', 2.0)"
    )
    conn.close()

    store = SQLiteStore(path, clock=FakeClock())
    row = store.load("old")
    assert (row.status, [(s.payload, s.key) for s in row.signals]) == ("suspended", [("1", None)])
    assert store.add_signal("old", "go", "2", 3.0, key="k") is not None
    assert store.add_signal("old", "go", "2", 3.0, key="k") is None
    version = store._conn().execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 11


def test_a_version_2_file_is_migrated_and_its_parked_flows_resume_with_a_segment(
    tmp_path: Path,
) -> None:
    from crux_gen.stores import segments
    from crux_gen.stores.sqlite_schema import add_signal_keys_and_listing, create_schema

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    create_schema(conn)
    add_signal_keys_and_listing(conn)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at, waiting_for, "
        "wait_kind, wake_at) VALUES ('old', 'demo', 'suspended', 'null', 1.0, 1.0, 'nap', "
        "'sleep', 1.0)"
    )
    n = segments.SEGMENT_MIN + 5
    conn.executemany(
        "INSERT INTO records (flow_id, position, kind, name, state, result, attempts) "
        "VALUES ('old', ?, 'step', ?, 'completed', ?, 1)",
        [(p, f"s{p}", f'"{p}"') for p in range(n)],
    )
    conn.close()

    store = SQLiteStore(path, clock=FakeClock())
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
    claimed = store.claim("old", "me", 2.0)
    assert [(r.position, r.name, r.result) for r in claimed.records] == [
        (p, f"s{p}", f'"{p}"') for p in range(n)
    ]
    store.commit("old", "me", 2.0, park("nap", "sleep"))
    assert store._conn().execute("SELECT count FROM segments").fetchall() == [(n,)]
    assert store.claim("old", "me", 3.0).records == claimed.records


def test_a_version_3_file_is_migrated_and_its_flows_become_run_1_without_a_parent(
    tmp_path: Path,
) -> None:
    from crux_gen.records import NewChild
    from crux_gen.stores.sqlite_schema import (
        add_segments,
        add_signal_keys_and_listing,
        create_schema,
    )

    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    create_schema(conn)
    add_signal_keys_and_listing(conn)
    add_segments(conn)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at, waiting_for, "
        "wait_kind) VALUES ('old', 'demo', 'suspended', '{\"n\": 1}', 1.0, 2.0, 'go', 'suspend')"
    )
    conn.execute(
        "INSERT INTO records (flow_id, position, kind, name, state, result, attempts) "
        "VALUES ('old', 0, 'step', 'one', 'completed', '1', 1)"
    )
    conn.execute(
        "INSERT INTO signals (flow_id, name, payload, state, created_at, key) "
        "VALUES ('old', 'go', '2', 'pending', 3.0, 'k')"
    )
    conn.close()

    store = SQLiteStore(path, clock=FakeClock())
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
    old = store.load("old")
    assert (old.status, old.input, old.created_at, old.updated_at) == (
        "suspended", '{"n": 1}', 1.0, 2.0,
    )  # fmt: skip
    assert (old.parent_id, old.run, old.custom_status, old.children) == (None, 1, None, ())
    assert [(r.name, r.result) for r in old.records] == [("one", "1")]
    assert [(s.payload, s.key) for s in old.signals] == [("2", "k")]
    assert store.due(10.0, 10) == ["old"]
    claimed = store.claim("old", "me", 10.0)
    assert (claimed.run, claimed.lease_owner) == (1, "me")
    store.commit("old", "me", 10.0, Write(children=(NewChild("kid", "demo", "null"),)))
    store.commit("old", "me", 10.0, Write(continue_as_new='"again"'))
    again = store.load("old")
    assert (again.run, again.children, again.records) == (2, ("kid",), ())
    past = store._conn().execute("SELECT run, position, name FROM past_records").fetchall()
    assert past == [(1, 0, "one")]


def test_a_version_4_file_gets_the_gap_rule_in_its_schema_and_its_flows_go_on(
    tmp_path: Path,
) -> None:
    from crux_gen.stores.sqlite_schema import MIGRATIONS

    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 5):
        MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO flows (id, name, status, input, created_at, updated_at) "
        "VALUES ('old', 'demo', 'running', 'null', 1.0, 1.0)"
    )
    conn.execute(
        "INSERT INTO records (flow_id, position, kind, name, state, result, attempts) "
        "VALUES ('old', 0, 'step', 'one', 'completed', '1', 1)"
    )
    conn.close()

    store = SQLiteStore(path, clock=FakeClock())
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
    store.claim("old", "me", 2.0)
    store.commit("old", "me", 2.0, Write(records=(rec(1),)))  # a step's commit: in
    with pytest.raises(RecordConflictError):
        store.commit("old", "me", 2.0, Write(records=(rec(3),)))  # a gap: refused
    with pytest.raises(sqlite3.IntegrityError, match="gap"):  # whoever writes the file
        store._conn().execute(
            "INSERT INTO records (flow_id, position, kind, name, state, attempts) "
            "VALUES ('old', 5, 'step', 'x', 'completed', 1)"
        )
    assert [r.position for r in store.load("old").records] == [0, 1]


@pytest.mark.parametrize(
    ("status", "name", "before"),
    [
        (None, None, None),
        (None, None, 1.0),
        ("failed", None, 1.0),
        (None, "demo", 1.0),
        (None, None, (1.0, "f7")),
        ("failed", None, (1.0, "f7")),
        (None, "demo", (1.0, "f7")),
    ],
)
def test_a_listing_page_reads_one_index_range(
    tmp_path: Path, status: str | None, name: str | None, before: Any
) -> None:
    """Keyset paging: every page of list_flows is an index search (or an index
    scan stopped by LIMIT), never a scan of the table nor an OFFSET."""
    store = SQLiteStore(tmp_path / "crux.db")
    seen: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(seen.append)
    store.list_flows(status=status, name=name, limit=5, before=before)
    conn.set_trace_callback(None)
    [query] = [q for q in seen if q.startswith("SELECT")]
    assert "OFFSET" not in query
    plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING INDEX" in plan, plan
    assert "SCAN flows |" not in plan + " |", plan


# -- segments (every store) ----------------------------------------------------------
# A SQL store keeps a flow's completed history as one derived row (stores/segments.py)
# and a claim reads it with the records after it; whatever the segment holds, a claim
# returns what the records rows say. MemoryStore keeps none (its claim copies a list).


def lean(records: tuple[StoredRecord, ...]) -> list[StoredRecord]:
    """*records* as any claim may give them: completed and failed ones without their
    timings and attempts (what replay does not need)."""
    return [
        r._replace(attempts=0, started_at=None, finished_at=None, wake_at=None, deadline=None)
        if r.state in (COMPLETED, FAILED)
        else r
        for r in records
    ]


def a_long_history(n: int, start: int = 0) -> tuple[StoredRecord, ...]:
    """*n* resolved records from *start*: steps, a failed step, ctx.now() values, a
    Sleep's ``null``, awkward names and results (a comma, a quote, a control character)."""
    out = []
    for p in range(start, start + n):
        if p % 17 == 5:
            out.append(rec(p, f"bad-{p}", FAILED))
        elif p % 13 == 3:
            out.append(rec(p, "now", kind="now", result=f'"2026-12-01T10:00:{p % 60:02d}"'))
        elif p % 11 == 7:
            out.append(rec(p, f"nap-{p}", kind="sleep", result="null"))
        else:
            out.append(rec(p, f'step, "{p}" é', result=f'{{"i": {p}, "s": "a,b\\u001e"}}'))
    return tuple(out)


def parked_with_history(store: Any, flow_id: str, t: float, n: int) -> StoredFlow:
    """Start *flow_id*, record *n* resolved commands and park it at a Suspend."""
    store.start(flow_id, "demo", "null", "me", t)
    store.commit(flow_id, "me", t, Write(records=a_long_history(n)))
    waiting = rec(n, "go", WAITING, kind="suspend", result=None, finished_at=None)
    store.commit(flow_id, "me", t, park(records=(waiting,)))
    return store.load(flow_id)


def segment_row(store: Any, store_kind: str, flow_id: str) -> tuple[Any, ...] | None:
    query = "SELECT count, meta, results FROM segments WHERE flow_id = {}"
    if store_kind == "sqlite":
        row = store._conn().execute(query.format("?"), (flow_id,)).fetchone()
    else:
        with store._connection() as conn:
            row = conn.execute(query.format("%s"), (flow_id,)).fetchone()
    return None if row is None else tuple(row)


def set_segment(
    store: Any, store_kind: str, flow_id: str, *, checksum: bool = False, **columns: Any
) -> None:
    """Overwrite columns of *flow_id*'s segment (as a bad disk might; with *checksum*,
    as a bug in its writer might: with a checksum that matches)."""
    if checksum:
        from crux_gen.stores import segments

        found = segment_row(store, store_kind, flow_id)
        assert found is not None
        meta, results = columns.get("meta", found[1]), columns.get("results", found[2])
        columns["checksum"] = segments.checksum(meta, results)
    sets = ", ".join(f"{c} = {{}}" for c in columns)
    if store_kind == "sqlite":
        query = f"UPDATE segments SET {sets} WHERE flow_id = {{}}".format(
            *["?"] * (len(columns) + 1)
        )
        store._conn().execute(query, (*columns.values(), flow_id))
    else:
        query = f"UPDATE segments SET {sets} WHERE flow_id = {{}}".format(
            *["%s"] * (len(columns) + 1)
        )
        with store._connection() as conn:
            conn.execute(query, (*columns.values(), flow_id))


def claimed_records(store: Any, flow_id: str, t: float) -> list[StoredRecord]:
    claimed = store.claim(flow_id, "reader", t)
    store.release(flow_id, "reader")
    return lean(claimed.records)


@pytest.fixture
def sql_store_kind(store_kind: str) -> str:
    if store_kind == "memory":
        pytest.skip("MemoryStore keeps no segment")
    return store_kind


def test_a_claim_returns_the_same_history_with_and_without_a_segment(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    n = segments.SEGMENT_MIN + 40
    stored = parked_with_history(store, "f1", t, n)
    assert len(stored.records) == n + 1
    assert claimed_records(store, "f1", t) == lean(stored.records)
    if store_kind == "memory":
        return
    found = segment_row(store, store_kind, "f1")
    assert found is not None and found[0] == n  # the completed prefix, not the wait
    expected = segments.build(lean(stored.records)[:n])
    assert (found[0], json.loads(found[1]), found[2]) == (
        expected[0], json.loads(expected[1]), expected[2]
    )  # fmt: skip
    set_segment(store, store_kind, "f1", count=0)  # as if there were none
    assert claimed_records(store, "f1", t) == lean(stored.records)


def test_a_short_history_gets_no_segment(store: Any, clock: FakeClock, sql_store_kind: str) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    stored = parked_with_history(store, "f1", t, segments.SEGMENT_MIN - 1)
    assert segment_row(store, sql_store_kind, "f1") is None
    assert claimed_records(store, "f1", t) == lean(stored.records)


def test_records_written_after_the_segment_are_read_from_their_rows(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    n = segments.SEGMENT_MIN * 2
    parked_with_history(store, "f1", t, n)
    for more in (3, n):  # too few to rewrite the segment, then enough
        flow = store.claim("f1", "me", t)
        last = len(flow.records) - 1  # the wait, now resolved
        done = rec(last, "go", kind="suspend", result='"signal"')
        later = a_long_history(more, start=last + 1)
        waiting = rec(last + 1 + more, "go", WAITING, kind="suspend", result=None)
        store.commit("f1", "me", t, Write(records=(done, *later, waiting), status="suspended"))
        assert claimed_records(store, "f1", t) == lean(store.load("f1").records)
        if store_kind != "memory":
            covered = segment_row(store, store_kind, "f1")
            assert covered is not None
            assert covered[0] == (n if more == 3 else last + 1 + more)


@pytest.mark.parametrize("checksum", [False, True], ids=["bad-checksum", "good-checksum"])
@pytest.mark.parametrize(
    "spoil",
    [
        {"meta": "not json"},
        {"meta": "[]"},
        {"meta": '[[0], ["step"], ["a"], ["completed"], [null], []]'},
        {"count": 10_000},
        {"count": 5},  # shorter, but still true: its record 4 matches the rows
        {"results": "x"},
        {"results": "null"},
        {"results": "x\x1ey"},
        {"swap_names": True},  # believed with a good checksum: only tried without
        {"shift_results": True},
        {"waiting_inside": True},
        {"last_name": True},
        {"nulls": [0]},
    ],
    ids=lambda s: next(iter(s)) + (f"={s['count']}" if "count" in s else ""),
)
def test_a_corrupt_or_stale_segment_falls_back_to_the_records_rows(
    store: Any, clock: FakeClock, sql_store_kind: str, spoil: dict[str, Any], checksum: bool
) -> None:
    spoil = dict(spoil)  # the parameter is shared by both checksum cases
    if checksum and ("swap_names" in spoil or "shift_results" in spoil):
        pytest.skip("a consistent segment with a good checksum is believed")
    from crux_gen.stores import segments

    t = clock.time()
    stored = parked_with_history(store, "f1", t, segments.SEGMENT_MIN + 10)
    found = segment_row(store, sql_store_kind, "f1")
    assert found is not None
    _, meta, results = found
    parts = json.loads(meta)
    if spoil.pop("swap_names", False):
        parts[2][1], parts[2][2] = parts[2][2], parts[2][1]
        spoil["meta"] = json.dumps(parts)
    if spoil.pop("shift_results", False):
        texts = results.split(segments.SEPARATOR)
        spoil["results"] = segments.SEPARATOR.join([texts[1], texts[0], *texts[2:]])
    if spoil.pop("waiting_inside", False):
        parts[3][0] = WAITING
        spoil["meta"] = json.dumps(parts)
    if spoil.pop("last_name", False):  # the row at the end says otherwise
        parts[2][-1] = "renamed"
        spoil["meta"] = json.dumps(parts)
    if "nulls" in spoil:
        parts[5] = spoil.pop("nulls")
        spoil["meta"] = json.dumps(parts)
    set_segment(store, sql_store_kind, "f1", checksum=checksum, **spoil)
    assert claimed_records(store, "f1", t) == lean(stored.records)


def test_retry_failed_drops_a_segment_that_covers_dropped_records(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    n = segments.SEGMENT_MIN + 10
    store.start("f1", "demo", "null", "me", t)
    history = a_long_history(n)
    failed = rec(n, "charge", FAILED)
    # Only ctx.now() values after the failure: a retry drops them with it.
    values = tuple(rec(p, "now", kind="now", result='"x"') for p in range(n + 1, n + 40))
    store.commit("f1", "me", t, park("nap", "sleep", records=(*history, failed, *values)))
    if store_kind != "memory":
        covered = segment_row(store, store_kind, "f1")
        assert covered is not None and covered[0] == n + 40
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, END["failed"])
    dropped = store.retry_failed("f1", t)
    assert [r.position for r in dropped] == list(range(n, n + 40))
    assert claimed_records(store, "f1", t) == lean(history)
    if store_kind != "memory":
        assert segment_row(store, store_kind, "f1") is None


def test_retry_failed_keeps_a_segment_that_covers_kept_records_only(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    n = segments.SEGMENT_MIN + 10
    parked_with_history(store, "f1", t, n)
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, Write(records=(rec(n, "go", FAILED, kind="suspend"),)))
    store.commit("f1", "me", t, END["failed"])
    store.retry_failed("f1", t)
    assert claimed_records(store, "f1", t) == lean(store.load("f1").records)
    assert len(store.load("f1").records) == n
    if store_kind != "memory":
        covered = segment_row(store, store_kind, "f1")
        assert covered is not None and covered[0] == n


@pytest.mark.parametrize("remove", ["delete", "prune"])
def test_a_flow_put_under_the_id_of_a_deleted_one_never_reads_its_segment(
    store: Any, clock: FakeClock, store_kind: str, remove: str
) -> None:
    from crux_gen.stores import segments

    t = clock.time()
    n = segments.SEGMENT_MIN + 10
    parked_with_history(store, "f1", t, n)
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, END["completed"])
    if remove == "delete":
        assert store.delete("f1") is True
    else:
        assert store.prune(t + 1) == 1
    if store_kind != "memory":
        assert segment_row(store, store_kind, "f1") is None
    other = tuple(
        rec(p, f"other-{p}", result=f'"{p}"') for p in range(n - 1)
    )  # one record shorter, other names
    waiting = rec(n - 1, "go", WAITING, kind="suspend", result=None)
    put = StoredFlow(
        "f1", "demo", "suspended", "null", t, t,
        waiting_for="go", wait_kind="suspend", records=(*other, waiting),
    )  # fmt: skip
    store.put_flow(put)
    assert claimed_records(store, "f1", t) == lean(put.records)


# -- global limits (Limit): slots and rates in the store ---------------------------


def limited(store: Store, gate_limits: tuple[Any, ...], *names: str, t: float = 1.0) -> Any:
    """Pending flows *names* (due at *t*) and a gate giving each *gate_limits*."""
    from crux_gen.limits import fair_key, make_gate

    gate = make_gate(lambda _: gate_limits)
    for name in names:
        fair = fair_key(gate("demo", json.dumps(name)))
        store.enqueue(NewPending(name, "demo", json.dumps(name), fair_key=fair), t)
    return gate


def test_a_concurrency_limit_is_held_from_the_claim_until_the_flow_parks(store: Store) -> None:
    from crux_gen.limits import Limit

    gate = limited(store, (Limit("c-two", concurrency=2),), "f1", "f2", "f3")
    assert [f.id for f in store.claim_due(2.0, 10, "w1", gate=gate)] == ["f1", "f2"]
    flow = store.load("f3")
    assert (flow.status, flow.blocked_by, flow.blocked_until) == ("pending", "limit c-two", None)
    assert store.due(3.0, 10) == []
    store.commit("f1", "w1", 4.0, Write(status="suspended", waiting_for="go", wait_kind="suspend"))
    assert store.load("f3").blocked_by is None  # the park gave the slot to the next blocked
    assert [f.id for f in store.claim_due(5.0, 10, "w2", gate=gate)] == ["f3"]
    store.commit("f2", "w1", 6.0, END["completed"])  # an end gives its slot back too
    store.commit("f3", "w2", 6.0, END["completed"])
    assert [f.id for f in store.claim_due(7.0, 10, "w2", gate=gate)] == []  # f1 not due


def test_a_slot_counts_only_while_its_holders_lease_is_live(store: Store) -> None:
    from crux_gen.limits import Limit

    gate = limited(store, (Limit("c-one", concurrency=1),), "f1", "f2")
    assert [f.id for f in store.claim_due(2.0, 10, "w1", gate=gate)] == ["f1"]
    store.enqueue(NewPending("f3", "demo", '"f3"', priority=1), 2.5)  # taken before f1
    late = 2.0 + store.lease_ttl.total_seconds() + 1  # w1 died: its lease lapsed
    taken = [f.id for f in store.claim_due(late, 10, "w2", gate=gate)]
    assert taken == ["f3"]  # the lapsed lease's slot is free again; f1 waits
    assert store.load("f1").blocked_by == store.load("f2").blocked_by == "limit c-one"


def test_a_rate_is_a_gcra_budget_in_the_store(store: Store) -> None:
    from crux_gen.limits import Limit, Rate

    gate = limited(store, (Limit("c-rate", rate=Rate(2, per="10s")),), "f1", "f2", "f3", "f4")
    assert [f.id for f in store.claim_due(1.0, 10, "w", gate=gate)] == ["f1", "f2"]  # a burst
    assert store.load("f3").blocked_by == "rate c-rate"
    assert store.load("f3").blocked_until == pytest.approx(6.0)  # its turn: 5 s later
    assert store.due(5.9, 10) == []
    assert [f.id for f in store.claim_due(6.0, 10, "w", gate=gate)] == ["f3"]
    assert store.load("f3").blocked_by is None
    assert store.claim_due(6.0, 10, "w", gate=gate) == []
    assert [f.id for f in store.claim_due(11.0, 10, "w", gate=gate)] == ["f4"]


def test_due_flows_of_a_keyed_limit_are_claimed_round_robin(store: Store) -> None:
    from crux_gen.limits import Limit

    limit = Limit("c-key", concurrency=10, key=lambda input: input[0])
    gate = limited(store, (limit,), "a1", "a2", "a3", "a4", "b1", "b2")
    claimed = [f.id for f in store.claim_due(2.0, 4, "w", gate=gate)]
    assert claimed == ["a1", "b1", "a2", "b2"]  # each key's first, then each key's second
    for flow_id in claimed:
        store.commit(flow_id, "w", 3.0, END["completed"])
    store.enqueue(NewPending("b3", "demo", '"b3"', fair_key='["c-key", "b"]'), 3.0)
    # b was served last: a's next comes first, then b's
    assert [f.id for f in store.claim_due(4.0, 2, "w", gate=gate)] == ["a3", "b3"]


def test_limit_usage_counts_slots_held_under_live_leases_and_blocked_flows(store: Any) -> None:
    from crux_gen.limits import Limit, LimitUsage

    gate = limited(store, (Limit("c-use", concurrency=1, key=lambda i: i[0]),), "a1", "a2", "b1")
    assert store.limit_usage(1.5) == []
    store.claim_due(2.0, 10, "w", gate=gate)
    assert store.limit_usage(2.0) == [
        LimitUsage("limit c-use key a", held=1, blocked=1),
        LimitUsage("limit c-use key b", held=1, blocked=0),
    ]
    late = 3.0 + store.lease_ttl.total_seconds()
    assert store.limit_usage(late) == [LimitUsage("limit c-use key a", held=0, blocked=1)]


def test_a_steps_slot_is_taken_with_a_write_and_given_back_with_the_next(store: Store) -> None:
    from crux_gen.limits import Limit, asks_for

    limited(store, (), "f1", "f2")
    store.claim("f1", "w1", 2.0)
    store.claim("f2", "w2", 2.0)
    [ask] = asks_for([Limit("c-step", concurrency=1)], None)
    took = store.commit("f1", "w1", 3.0, Write((rec(0, "a"),), take_slots=(("step 1", ask),)))
    assert not took.blocked and store.load("f1").lease_owner == "w1"
    # f2's step finds the slot full: its write is stored, then it lets go of everything
    full = store.commit("f2", "w2", 3.0, Write((rec(0, "a"),), take_slots=(("step 1", ask),)))
    assert full.blocked
    f2 = store.load("f2")
    assert (len(f2.records), f2.blocked_by, f2.lease_owner) == (1, "limit c-step", None)
    assert store.due(3.5, 10) == []
    assert store.take_step("f1", "w1", [("step 1", ask)], 3.5) is True  # its own: held
    # f1's step returned: its outcome's write gives the slot back, and f2 is due
    store.commit("f1", "w1", 4.0, Write((rec(1, "b"),), free_slots=("step 1",)))
    assert store.load("f2").blocked_by is None and store.due(4.0, 10) == ["f2"]
    assert store.limit_usage(4.0) == []


# -- enqueue (Flow.start): pending flows, priority, blocked_by -------------------------


def test_enqueue_creates_a_pending_unclaimed_flow_due_after_its_delay(store: Store) -> None:
    from crux_gen.records import NewPending

    made = store.enqueue(NewPending("q1", "demo", '{"a": 1}', priority=7, delay=5.0), 100.0)
    assert made.created
    got = store.load("q1")
    assert (got.status, got.priority, got.blocked_by, got.lease_owner) == ("pending", 7, None, None)
    assert (got.wake_at, got.created_at, got.input) == (105.0, 100.0, '{"a": 1}')
    assert store.due(104.0, 10) == [] and store.due(105.0, 10) == ["q1"]
    again = store.enqueue(NewPending("q1", "demo", '{"a": 2}', priority=1), 200.0)
    assert not again.created and again.flow.input == '{"a": 1}' and again.flow.priority == 7
    with pytest.raises(FlowNameConflictError):
        store.enqueue(NewPending("q1", "other", "null"), 200.0)
    assert store.count() == 1


def test_claim_due_takes_higher_priority_first_then_the_earliest_due(store: Store) -> None:
    from crux_gen.records import NewPending

    for flow_id, priority, at in (("a", 0, 1.0), ("b", 2, 3.0), ("c", 2, 2.0), ("d", -1, 0.0)):
        store.enqueue(NewPending(flow_id, "demo", "null", priority=priority), at)
    store.start("r", "demo", "null", "crashed", 0.0)  # a crashed runner's, priority 0
    order = [f.id for f in store.claim_due(100.0, 2, "w")]
    order += [f.id for f in store.claim_due(100.0, 10, "w")]
    assert order == ["c", "b", "a", "r", "d"]
    assert {store.load(i).lease_owner for i in order} == {"w"}


def test_put_flow_and_load_keep_priority_blocked_by_and_the_start_keys(store: Store) -> None:
    given = StoredFlow(
        "k1", "demo", "pending", "null", 1.0, 2.0, wake_at=None, priority=-3,
        blocked_by="holder-9", exclusive_key='["demo", "acct"]', debounce_key='["demo"]',
        debounce_cap=9.0,
    )  # fmt: skip
    store.put_flow(given)
    assert store.load("k1") == given
    assert store.due(100.0, 10) == []  # blocked: not due
