"""The contract of the batch calls the concurrent worker makes, on every store:
``commit_many`` (group commit) and ``claim_due`` (a batch claim).

Part of the contract suite (``tests/test_store_contract.py``): each test runs on
``memory``, ``sqlite`` and ``postgres`` and checks what is stored afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from crux_gen.clock import FakeClock
from crux_gen.errors import LeaseLostError, RecordConflictError, StoreError
from crux_gen.records import COMPLETED, PENDING, WAITING, Commit, SignalUpdate, Write

from .test_store_contract import but_the_lease, finished, park, rec, suspended, ttl

# -- commit_many ---------------------------------------------------------------------


def test_commit_many_applies_every_flows_write_and_answers_in_order(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for flow_id in ("a", "b", "c"):
        store.start(flow_id, "demo", "null", f"owner-{flow_id}", t)
    outcomes = store.commit_many(
        [
            Commit("a", "owner-a", t + 1, Write((rec(0, "a-step"),))),
            Commit(
                "b", "owner-b", t + 1, Write((rec(0, "b-step"),), status="completed", result="7")
            ),
            Commit("c", "owner-c", t + 1, park(records=(rec(0, "go", WAITING, kind="suspend"),))),
        ]
    )
    assert [o.status for o in outcomes] == ["running", "completed", "suspended"]
    a, b, c = (store.load(i) for i in "abc")
    assert [r.name for r in a.records] == ["a-step"] and a.lease_owner == "owner-a"
    assert b.status == "completed" and b.result == "7" and b.lease_owner is None
    assert c.status == "suspended" and c.waiting_for == "go" and c.records[0].state == WAITING


def test_commit_many_applies_two_writes_of_one_flow_in_order(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    outcomes = store.commit_many(
        [
            Commit("a", "me", t, Write((rec(0, "one"),))),
            Commit("a", "me", t, Write((rec(1, "two"),), status="completed", result="2")),
        ]
    )
    assert [o.status for o in outcomes] == ["running", "completed"]
    assert [r.name for r in store.load("a").records] == ["one", "two"]


def test_a_refused_item_of_a_batch_fails_alone_and_leaves_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for flow_id in ("ok-before", "lost", "conflict", "ok-after"):
        store.start(flow_id, "demo", "null", "me", t)
    store.commit("conflict", "me", t, Write((rec(0, "done"),)))
    store.release("lost", "me")
    store.claim("lost", "thief", t)
    lost_before = store.load("lost")
    conflict_before = store.load("conflict")
    outcomes = store.commit_many(
        [
            Commit("ok-before", "me", t, Write((rec(0, "x"),))),
            Commit("lost", "me", t, Write((rec(0, "y"),), status="completed", result="1")),
            # A resolved record rewritten, with a park that would change the flow row:
            Commit("conflict", "me", t, park(records=(rec(0, "again"),))),
            Commit("ok-after", "me", t, Write((rec(0, "z"),))),
        ]
    )
    assert outcomes[0].status == "running" and outcomes[3].status == "running"
    assert isinstance(outcomes[1], LeaseLostError) and outcomes[1].flow_id == "lost"
    assert isinstance(outcomes[2], RecordConflictError)
    assert store.load("lost") == lost_before
    assert store.load("conflict") == conflict_before
    assert [r.name for r in store.load("ok-before").records] == ["x"]
    assert [r.name for r in store.load("ok-after").records] == ["z"]


def test_a_step_record_in_a_batch_for_a_lost_lease_is_refused(store: Any, clock: FakeClock) -> None:
    """The hot path (one step record) is fenced in a batch as in ``commit``."""
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.release("a", "me")
    store.claim("a", "thief", t)
    [outcome] = store.commit_many([Commit("a", "me", t, Write((rec(0, "x"),)))])
    assert isinstance(outcome, LeaseLostError)
    assert store.load("a").records == ()


def test_a_batch_item_for_a_flow_cancelled_meanwhile_says_cancelled(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    store.cancel("a", "not needed", t)
    outcomes = store.commit_many(
        [Commit("a", "me", t, Write((rec(0, "x"),))), Commit("b", "me", t, Write((rec(0, "y"),)))]
    )
    assert outcomes[0].status == "cancelled" and outcomes[0].cancel_reason == "not needed"
    assert outcomes[1].status == "running"
    a = store.load("a")
    assert a.status == "cancelled" and a.lease_owner is None
    assert [r.name for r in a.records] == ["x"]  # written, as commit does


def test_a_park_in_a_batch_is_not_applied_while_its_signal_is_pending(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    signal = store.add_signal("a", "go", '"now"', t)
    before = store.load("a")
    waiting = rec(0, "go", WAITING, kind="suspend")
    outcomes = store.commit_many(
        [
            Commit("a", "me", t, park(records=(waiting,), wait_signal="go")),
            Commit("b", "me", t, Write((rec(0, "y"),))),
        ]
    )
    assert [s.id for s in outcomes[0].signals] == [signal.id]
    assert store.load("a") == before
    assert outcomes[1].status == "running"
    # The runner takes the signal and writes again, in the next batch.
    [again] = store.commit_many(
        [
            Commit(
                "a",
                "me",
                t,
                Write(
                    (rec(0, "go", COMPLETED, kind="suspend", result='"now"'),),
                    signals=(SignalUpdate(signal.id, "consumed", position=0),),
                ),
            )
        ]
    )
    assert again.status == "running"
    assert store.load("a").signals[0].state == "consumed"


def test_an_empty_batch_writes_nothing(store: Any) -> None:
    assert store.commit_many([]) == []


def test_a_store_failure_in_a_batch_applies_nothing_of_it(tmp_path: Any, clock: FakeClock) -> None:
    """SQLite: a batch is one transaction; when the file cannot be written (here: a
    record the schema refuses, as a full disk would), nothing of it stays."""
    from crux_gen.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "crux.db", clock=clock)
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    bad = rec(0, "y")._replace(kind=None)  # NOT NULL column: the database refuses it
    with pytest.raises(StoreError):
        store.commit_many(
            [
                Commit("a", "me", t, Write((rec(0, "x"),))),
                Commit("b", "me", t, park(records=(bad,))),
            ]
        )
    assert store.load("a").records == () and store.load("b").records == ()
    assert store.load("b").status == "running"


# -- claim_due -----------------------------------------------------------------------


def test_claim_due_claims_due_flows_oldest_first_with_their_history(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    history = (rec(0, "one"), rec(1, "go", WAITING, kind="suspend"))
    suspended(store, "signalled", t - 5, park(records=history))
    store.add_signal("signalled", "go", '"yes"', t)
    store.add_signal("signalled", "other", '"no"', t)
    suspended(store, "timer", t, park("nap", "sleep", wake_at=t + 1))
    suspended(store, "later", t, park("nap", "sleep", wake_at=t + 1000))
    finished(store, "done", "completed", t)
    claimed = store.claim_due(t + 2, 10, "w1")
    assert [f.id for f in claimed] == ["signalled", "timer"]
    first = claimed[0]
    assert first.lease_owner == "w1" and first.status == "suspended"
    assert [r.name for r in first.records] == ["one", "go"]
    assert [(s.name, s.state) for s in first.signals] == [("go", PENDING), ("other", PENDING)]
    for flow in claimed:  # leased, and nothing else changed
        stored = store.load(flow.id)
        assert stored.lease_owner == "w1"
        assert stored.lease_expires == pytest.approx(t + 2 + ttl(store))
        assert but_the_lease(stored) == but_the_lease(store.load(flow.id))
    assert store.due(t + 2, 10) == []
    assert store.load("later").lease_owner is None


def test_claim_due_takes_at_most_limit_and_leaves_out_excluded_ids(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for i in range(5):
        suspended(store, f"f{i}", t, park("nap", "sleep", wake_at=t + i))
    assert [f.id for f in store.claim_due(t + 10, 2, "w", exclude={"f0", "f2"})] == ["f1", "f3"]
    assert [f.id for f in store.claim_due(t + 10, 10, "w", exclude=["f0"])] == ["f2", "f4"]
    assert [f.id for f in store.claim_due(t + 10, 10, "w")] == ["f0"]
    assert {store.load(f"f{i}").lease_owner for i in range(5)} == {"w"}


def test_claim_due_never_takes_a_flow_another_runner_holds(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "held", t, park("nap", "sleep", wake_at=t))
    suspended(store, "free", t, park("nap", "sleep", wake_at=t))
    store.claim("held", "other", t)
    store.start("running", "demo", "null", "alive", t)
    assert [f.id for f in store.claim_due(t + 1, 10, "w")] == ["free"]
    assert store.load("held").lease_owner == "other"
    assert store.load("running").lease_owner == "alive"
    # Once the leases lapsed (w's too: nobody renewed them), all three are due again.
    later = t + ttl(store) + 1
    assert sorted(f.id for f in store.claim_due(later, 10, "w2")) == ["free", "held", "running"]


def test_two_batch_claims_never_share_a_flow(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for i in range(6):
        suspended(store, f"f{i}", t, park("nap", "sleep", wake_at=t))
    first = {f.id for f in store.claim_due(t + 1, 4, "w1")}
    second = {f.id for f in store.claim_due(t + 1, 4, "w2")}
    assert len(first) == 4 and len(second) == 2 and not first & second
    assert store.claim_due(t + 1, 4, "w3") == []


def test_claim_due_with_nothing_due_is_empty(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    suspended(store, "later", t, park("nap", "sleep", wake_at=t + 60))
    before = store.load("later")
    assert store.claim_due(t, 10, "w") == []
    assert store.load("later") == before


def test_a_park_in_a_batch_writes_the_segment_and_claim_and_claim_due_read_it(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    """Flows parked by a group commit get their history segment as ``commit``
    parks do, and ``claim_due`` returns the same records as ``claim``."""
    from crux_gen.stores import segments

    from .test_store_contract import a_long_history, claimed_records, lean, segment_row

    t = clock.time()
    n = segments.SEGMENT_MIN + 5
    batch = []
    for flow_id in ("a", "b"):
        store.start(flow_id, "demo", "null", "me", t)
        store.commit(flow_id, "me", t, Write(records=a_long_history(n)))
        waiting = rec(n, "go", WAITING, kind="suspend", result=None, finished_at=None)
        batch.append(Commit(flow_id, "me", t, park(records=(waiting,), wake_at=t + 1)))
    assert [o.status for o in store.commit_many(batch)] == ["suspended", "suspended"]
    for flow_id in ("a", "b"):
        if store_kind != "memory":
            found = segment_row(store, store_kind, flow_id)
            assert found is not None and found[0] == n
        assert claimed_records(store, flow_id, t) == lean(store.load(flow_id).records)
    by_id = {f.id: f for f in store.claim_due(t + 2, 10, "w")}
    assert sorted(by_id) == ["a", "b"]
    for flow_id, flow in by_id.items():
        assert lean(flow.records) == lean(store.load(flow_id).records)


def test_sqlites_lease_rows_read_many_leases_as_check_lease_reads_one(
    tmp_path: Any, clock: FakeClock
) -> None:
    """What a concurrent worker's lease checks read, on the one connection its
    threads share: the same rows ``check_lease`` reads, seen after others' writes."""
    from crux_gen.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "crux.db", clock=clock)
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    store.cancel("b", "stop", t)
    rows = store.lease_rows(["a", "b", "missing"])
    assert rows == {
        "a": ("running", "me", None, t + ttl(store)),
        "b": ("cancelled", "me", "stop", t + ttl(store)),
    }
    assert store.lease_rows(["a"]) == {"a": rows["a"]}
    store.release("a", "me")  # by this thread's own connection
    assert store.lease_rows(["a"])["a"][1] is None
    store.close()
