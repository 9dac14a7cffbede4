"""The contract of composition on every store: the fields of ``Write`` and
``StoredFlow`` that ``Child``, ``Any``, ``Version``, ``ContinueAsNew`` and
``ctx.set_custom_status`` need (``crux_gen/records.py``).

Part of the contract suite (``tests/test_store_contract.py``): each test runs on
``memory``, ``sqlite`` and ``postgres`` and checks what ``load`` shows afterwards;
a refused write is checked to change nothing by comparing whole stored flows.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from crux_gen.clock import FakeClock
from crux_gen.errors import (
    FlowBusyError,
    FlowNameConflictError,
    FlowNotFoundError,
    InvalidValueError,
)
from crux_gen.records import (
    COMPLETED,
    CONSUMED,
    PENDING,
    UNUSED,
    WAITING,
    Commit,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    Write,
)

from .test_store_contract import END, but_the_lease, park, rec, ttl

FINISHING = ("completed", "failed", "expired")

# -- helpers -------------------------------------------------------------------------


def kid(flow_id: str, name: str = "kid", input: str = "null") -> NewChild:
    return NewChild(flow_id, name, input)


def with_children(store: Any, parent: str, t: float, *children: NewChild) -> StoredFlow:
    """Start *parent* at *t* (held by ``me``) and start *children* with one write."""
    store.start(parent, "demo", "null", "me", t)
    store.commit(parent, "me", t, Write((rec(0, "start", kind="child"),), children=children))
    return store.load(parent)


def waiting_for_children(store: Any, parent: str, t: float, *ids: str, **fields: Any) -> None:
    """Park *parent* (held by ``me``) until one of *ids* finishes."""
    write = park(json_list(ids), "child", wait_children=ids, **fields)
    assert store.commit(parent, "me", t, write).status == "suspended"


def json_list(names: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def end(store: Any, flow_id: str, status: str, t: float, owner: str = "worker") -> None:
    """Claim *flow_id* and end it with *status*."""
    store.claim(flow_id, owner, t)
    assert store.commit(flow_id, owner, t, END[status]).status == status


def past_runs(store: Any, kind: str, flow_id: str) -> dict[int, list[StoredRecord]]:
    """The records of *flow_id*'s earlier runs, by run (each store's own table)."""
    columns = ", ".join(StoredRecord._fields)
    query = f"SELECT run, {columns} FROM past_records WHERE flow_id = %s ORDER BY run, position"
    if kind == "memory":
        return {run: list(records) for run, records in store._past.get(flow_id, {}).items()}
    if kind == "sqlite":
        rows = store._conn().execute(query.replace("%s", "?"), (flow_id,)).fetchall()
    else:
        rows = store._all(query, (flow_id,))
    runs: dict[int, list[StoredRecord]] = {}
    for run, *fields in rows:
        runs.setdefault(run, []).append(StoredRecord(*fields))
    return runs


# -- what a flow row carries ----------------------------------------------------------


def test_a_started_flow_has_no_parent_run_1_no_custom_status_and_no_children(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    flow = store.load("f1")
    assert (flow.parent_id, flow.run, flow.custom_status, flow.children) == (None, 1, None, ())


def test_custom_status_is_stored_with_a_steps_write_and_a_park_and_none_leaves_it(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t + 1, Write((rec(0),), custom_status='{"done": 1}'))
    assert store.load("f1").custom_status == '{"done": 1}'
    store.commit("f1", "me", t + 2, Write((rec(1),)))  # a plain step leaves it
    assert store.load("f1").custom_status == '{"done": 1}'
    store.commit("f1", "me", t + 3, park(custom_status='{"done": 2}'))
    flow = store.load("f1")
    assert (flow.status, flow.custom_status) == ("suspended", '{"done": 2}')
    assert [r.name for r in flow.records] == ["one", "one"]


def test_claims_listings_and_batch_claims_keep_parent_run_and_custom_status(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    store.claim("k1", "w", t)
    store.commit("k1", "w", t, Write(custom_status='"half"', continue_as_new='"next"'))
    store.release("k1", "w")
    claimed = store.claim("k1", "w2", t + 1)
    assert (claimed.parent_id, claimed.run, claimed.custom_status) == ("p", 2, '"half"')
    assert (claimed.lease_owner, claimed.lease_expires) == ("w2", t + 1 + ttl(store))
    [listed] = [f for f in store.list_flows() if f.id == "k1"]
    assert (listed.parent_id, listed.run, listed.custom_status) == ("p", 2, '"half"')
    store.release("k1", "w2")
    [batch] = [f for f in store.claim_due(t + 2, 10, "w3") if f.id == "k1"]
    assert (batch.parent_id, batch.run, batch.custom_status) == ("p", 2, '"half"')
    assert store.load("k1").lease_owner == "w3"


# -- children -------------------------------------------------------------------------


def test_children_start_running_and_unclaimed_with_their_parent_in_the_same_write(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("p", "demo", "null", "me", t)
    outcome = store.commit(
        "p",
        "me",
        t + 1,
        Write(
            (rec(0, "report", WAITING, kind="child"),),
            children=(kid("k1", "report", '{"month": 3}'), kid("k2", "other")),
        ),
    )
    assert outcome.status == "running"
    k1 = store.load("k1")
    assert k1 == StoredFlow(
        "k1", "report", "running", '{"month": 3}', t + 1, t + 1, parent_id="p", run=1
    )
    assert (store.load("k2").name, store.load("k2").parent_id) == ("other", "p")
    parent = store.load("p")
    assert parent.children == ("k1", "k2")
    assert (parent.status, parent.lease_owner, len(parent.records)) == ("running", "me", 1)
    assert sorted(store.due(t + 1, 10)) == ["k1", "k2"]  # nobody holds them: due


def test_children_are_listed_oldest_created_first_then_by_id(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("b"), kid("a"))
    store.commit("p", "me", t - 5, Write(children=(kid("z"),)))  # created earlier
    store.commit("p", "me", t + 5, Write(children=(kid("c"),)))
    assert store.load("p").children == ("z", "a", "b", "c")
    assert store.load("a").children == ()


def test_a_child_id_stored_under_the_same_name_is_left_as_it_is(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1", input='"first"'))
    end(store, "k1", "completed", t + 1)
    before = store.load("k1")
    outcome = store.commit(
        "p", "me", t + 2, Write((rec(1),), children=(kid("k1", input='"second"'),))
    )
    assert outcome.status == "running"
    assert store.load("k1") == before
    assert [r.position for r in store.load("p").records] == [0, 1]


def test_a_child_id_of_another_flow_name_is_a_conflict_and_nothing_is_applied(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("taken", "other", "null", "x", t)
    store.release("taken", "x")
    store.start("p", "demo", "null", "me", t)
    store.add_signal("p", "go", "1", t)
    before, taken = store.load("p"), store.load("taken")
    write = park(
        records=(rec(0),),
        signals=(SignalUpdate(before.signals[0].id, CONSUMED, position=0),),
        children=(kid("fresh"), kid("taken", "kid")),
        custom_status='"x"',
    )
    with pytest.raises(FlowNameConflictError) as info:
        store.commit("p", "me", t + 1, write)
    assert info.value.flow_id == "taken"
    assert store.load("p") == before
    assert store.load("taken") == taken
    with pytest.raises(FlowNotFoundError):
        store.load("fresh")
    with pytest.raises(FlowNameConflictError):  # two names for one new id in one write
        store.commit("p", "me", t + 1, Write(children=(kid("new", "a"), kid("new", "b"))))
    with pytest.raises(FlowNotFoundError):
        store.load("new")


def test_a_batch_item_whose_child_conflicts_fails_alone_and_leaves_nothing(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("taken", "other", "null", "x", t)
    for flow_id in ("a", "b", "c"):
        store.start(flow_id, "demo", "null", "me", t)
    b_before = store.load("b")
    outcomes = store.commit_many(
        [
            Commit("a", "me", t, Write((rec(0),), children=(kid("a-kid"),))),
            Commit("b", "me", t, park(records=(rec(0),), children=(kid("b-kid"), kid("taken")))),
            Commit("c", "me", t, Write((rec(0),), custom_status='"c"')),
        ]
    )
    assert outcomes[0].status == "running" and outcomes[2].status == "running"
    assert isinstance(outcomes[1], FlowNameConflictError)
    assert store.load("a").children == ("a-kid",)
    assert store.load("b") == b_before
    with pytest.raises(FlowNotFoundError):
        store.load("b-kid")
    assert store.load("c").custom_status == '"c"'


def test_a_flow_cancelled_meanwhile_starts_no_child(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("p", "demo", "null", "me", t)
    store.cancel("p", "stop", t)
    outcome = store.commit("p", "me", t + 1, Write((rec(0),), children=(kid("k1"),)))
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", "stop")
    with pytest.raises(FlowNotFoundError):
        store.load("k1")
    flow = store.load("p")
    assert (flow.children, len(flow.records), flow.lease_owner) == ((), 1, None)


# -- waiting for children -------------------------------------------------------------


@pytest.mark.parametrize("status", FINISHING)
def test_a_finishing_child_makes_its_suspended_parent_due_at_once(
    store: Any, clock: FakeClock, status: str
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"), kid("k2"))
    waiting_for_children(store, "p", t, "k1", "k2")
    assert store.load("p").wake_at is None
    store.claim("k2", "w", t)
    store.commit("k2", "w", t + 1, Write((rec(0),)))  # a step: the parent sleeps on
    assert store.load("p").wake_at is None
    end(store, "k1", status, t + 5)
    parent = store.load("p")
    assert (parent.status, parent.wake_at, parent.updated_at) == ("suspended", t + 5, t)
    assert "p" in store.due(t + 5, 10)
    assert store.claim("p", "me", t + 5, only_if_due=True).lease_owner == "me"


def test_a_finishing_child_moves_a_later_parent_timer_and_leaves_an_earlier_one(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for parent, wake_at in (("later", t + 100), ("earlier", t + 2)):
        with_children(store, parent, t, kid(f"{parent}-kid"))
        waiting_for_children(store, parent, t, f"{parent}-kid", wake_at=wake_at)
        end(store, f"{parent}-kid", "completed", t + 5)
    assert store.load("later").wake_at == t + 5
    assert store.load("earlier").wake_at == t + 2


def test_a_finishing_child_leaves_a_running_or_finished_parent_alone(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    running = with_children(store, "running", t, kid("k1"))
    end(store, "k1", "completed", t + 5)
    assert but_the_lease(store.load("running")) == but_the_lease(
        attrs.evolve(running, children=("k1",))
    )
    with_children(store, "done", t, kid("k2"))
    store.commit("done", "me", t, END["completed"])
    done = store.load("done")
    end(store, "k2", "failed", t + 6)
    assert store.load("done") == done


def test_cancelling_a_child_makes_its_suspended_parent_due(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    waiting_for_children(store, "p", t, "k1")
    assert store.cancel("k1", "no longer", t + 3) is True
    assert store.load("p").wake_at == t + 3
    assert store.due(t + 3, 10) == ["p"]


def test_a_park_waiting_for_a_finished_child_is_written_due_at_once(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("done"), kid("busy"))
    end(store, "done", "completed", t + 1)
    waiting_for_children(store, "p", t + 2, "busy", "done")
    assert store.load("p").wake_at == t + 2
    store.claim("p", "me", t + 3)
    waiting_for_children(store, "p", t + 3, "busy", "done", wake_at=t + 50)
    assert store.load("p").wake_at == t + 3
    store.claim("p", "me", t + 4)
    waiting_for_children(store, "p", t + 4, "done", wake_at=t + 1)  # an earlier timer stays
    assert store.load("p").wake_at == t + 1
    store.claim("p", "me", t + 5)
    waiting_for_children(store, "p", t + 5, "busy", "unknown", wake_at=t + 50)
    assert store.load("p").wake_at == t + 50  # none finished: as written
    assert "p" not in store.due(t + 5, 10)


def test_a_child_wait_is_due_by_its_timer_only(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    store.commit("p", "me", t, park("k1", "child"))
    store.add_signal("p", "k1", "1", t)  # a signal named like the child wakes nothing
    assert store.due(t + 1, 10) == ["k1"]
    with pytest.raises(FlowBusyError):
        store.claim("p", "w", t + 1, only_if_due=True)
    assert [f.id for f in store.claim_due(t + 1, 10, "w")] == ["k1"]


# -- waiting for any of several signals ----------------------------------------------


def test_a_park_for_several_signals_is_not_applied_while_one_of_them_is_pending(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.add_signal("f1", "b", "1", t + 1)
    store.add_signal("f1", "other", "2", t + 2)
    store.add_signal("f1", "a", "3", t + 3)
    before = store.load("f1")
    write = park(
        '["a", "b"]',
        "any",
        records=(rec(0, "either", WAITING, kind="any"),),
        wait_signals=("a", "b"),
        custom_status='"x"',
    )
    outcome = store.commit("f1", "me", t + 4, write)
    assert outcome.status == "running"
    assert [(s.name, s.payload) for s in outcome.signals] == [("b", "1"), ("a", "3")]
    assert store.load("f1") == before


def test_a_park_for_several_signals_goes_on_past_those_it_consumes(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    sent = store.add_signal("f1", "a", "1", t)
    store.add_signal("f1", "other", "2", t)
    write = park(
        '["a", "b"]',
        "any",
        records=(rec(0, "either", WAITING, kind="any"),),
        signals=(SignalUpdate(sent.id, CONSUMED, position=0),),
        wait_signals=("a", "b"),
    )
    assert store.commit("f1", "me", t + 1, write).status == "suspended"
    flow = store.load("f1")
    assert (flow.status, flow.waiting_for, flow.wait_kind) == ("suspended", '["a", "b"]', "any")
    assert [(s.name, s.state) for s in flow.signals] == [("a", CONSUMED), ("other", PENDING)]


def test_an_any_wait_is_due_when_one_of_its_signals_is_pending(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, park('["a", "b"]', "any", wait_signals=("a", "b")))
    store.add_signal("f1", "c", "1", t + 1)
    assert store.due(t + 1, 10) == []
    with pytest.raises(FlowBusyError):
        store.claim("f1", "w", t + 1, only_if_due=True)
    assert store.claim_due(t + 1, 10, "w") == []
    store.add_signal("f1", "b", "2", t + 2)
    store.add_signal("f1", "a", "3", t + 2)
    assert store.due(t + 2, 10) == ["f1"]  # once, however many signals
    [claimed] = store.claim_due(t + 2, 10, "w")
    assert claimed.id == "f1" and [s.name for s in claimed.signals] == ["c", "b", "a"]
    store.release("f1", "w")
    assert store.claim("f1", "w", t + 2, only_if_due=True).lease_owner == "w"


def test_an_any_wait_with_a_timer_is_due_by_the_timer_and_listed_once(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, park('["a"]', "any", wake_at=t + 10, wait_signals=("a",)))
    assert store.due(t + 5, 10) == []
    assert store.due(t + 10, 10) == ["f1"]
    store.add_signal("f1", "a", "1", t + 11)
    assert store.due(t + 11, 10) == ["f1"]


def test_an_any_park_whose_waiting_for_is_not_a_list_of_names_is_refused(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    before = store.load("f1")
    for waiting_for in ("a", '{"a": 1}', "[1]"):
        with pytest.raises(InvalidValueError, match="waiting_for"):
            store.commit("f1", "me", t + 1, park(waiting_for, "any", records=(rec(0),)))
    assert store.load("f1") == before


# -- continue as new ------------------------------------------------------------------


def test_continue_as_new_keeps_the_run_as_a_past_run_and_starts_the_next(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    t = clock.time()
    store.start("f1", "demo", '{"cursor": 0}', "me", t)
    store.commit("f1", "me", t, Write((rec(0, "a"), rec(1, "b"))))
    used = store.add_signal("f1", "go", "1", t)
    kept = store.add_signal("f1", "go", "2", t)
    outcome = store.commit(
        "f1",
        "me",
        t + 1,
        Write(
            (rec(2, "c"),),
            signals=(SignalUpdate(used.id, CONSUMED, position=2),),
            custom_status='"page 1"',
            continue_as_new='{"cursor": 2}',
        ),
    )
    assert outcome.status == "running" and outcome.signals == ()
    flow = store.load("f1")
    assert (flow.run, flow.input, flow.records, flow.status) == (2, '{"cursor": 2}', (), "running")
    assert (flow.lease_owner, flow.updated_at, flow.created_at) == ("me", t + 1, t)
    assert flow.custom_status == '"page 1"'
    assert [(s.id, s.state) for s in flow.signals] == [(used.id, CONSUMED), (kept.id, PENDING)]
    assert past_runs(store, store_kind, "f1") == {1: [rec(0, "a"), rec(1, "b"), rec(2, "c")]}

    store.commit("f1", "me", t + 2, Write((rec(0, "d"),)))  # the new run's first record
    store.commit("f1", "me", t + 3, Write((rec(1, "e"),), continue_as_new='{"cursor": 4}'))
    flow = store.load("f1")
    assert (flow.run, flow.input, flow.records) == (3, '{"cursor": 4}', ())
    assert past_runs(store, store_kind, "f1") == {
        1: [rec(0, "a"), rec(1, "b"), rec(2, "c")],
        2: [rec(0, "d"), rec(1, "e")],
    }
    claimed = store.claim("f1", "me", t + 4)
    assert (claimed.run, claimed.records) == (3, ())


def test_continue_as_new_from_a_resumed_flow_clears_its_wait_and_result(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, park("go", "suspend", wake_at=t + 5, deadline=t + 9))
    store.claim("f1", "me", t + 5)
    store.commit("f1", "me", t + 5, Write(continue_as_new='"again"'))
    flow = store.load("f1")
    assert flow == StoredFlow(
        "f1", "demo", "running", '"again"', t, t + 5,
        lease_owner="me", lease_expires=t + 5 + ttl(store), run=2, claimed_at=t + 5,
    )  # fmt: skip


def test_continue_as_new_with_a_status_is_refused_and_nothing_is_applied(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.start("f2", "demo", "null", "me", t)
    before = store.load("f1"), store.load("f2")
    bad = Write((rec(0),), status="completed", result="1", continue_as_new='"x"')
    with pytest.raises(InvalidValueError, match="continue_as_new"):
        store.commit("f1", "me", t + 1, bad)
    with pytest.raises(InvalidValueError, match="continue_as_new"):
        store.commit_many([Commit("f2", "me", t + 1, Write((rec(0),))), Commit("f1", "me", t, bad)])
    assert (store.load("f1"), store.load("f2")) == before
    assert past_runs(store, store_kind, "f1") == {}


def test_continue_as_new_by_a_flow_cancelled_meanwhile_keeps_it_cancelled(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.cancel("f1", "stop", t)
    outcome = store.commit("f1", "me", t + 1, Write((rec(0),), continue_as_new='"x"'))
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", "stop")
    flow = store.load("f1")
    assert (flow.status, flow.run, flow.input, len(flow.records)) == ("cancelled", 1, "null", 1)
    assert past_runs(store, store_kind, "f1") == {}


def test_continue_as_new_drops_the_runs_history_segment(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    from crux_gen.stores import segments

    if store_kind == "memory":
        pytest.skip("MemoryStore keeps no segment")
    t = clock.time()
    store.start("f1", "demo", "null", "me", t)
    n = segments.SEGMENT_MIN + 3
    store.commit("f1", "me", t, Write(tuple(rec(p, f"s{p}") for p in range(n))))
    store.commit("f1", "me", t, park("nap", "sleep", wake_at=t))
    read = store._conn().execute if store_kind == "sqlite" else store._all

    def segment_rows() -> int:
        [(count,)] = list(read("SELECT count(*) FROM segments"))
        return int(count)

    assert segment_rows() == 1
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, Write(continue_as_new='"x"'))
    assert segment_rows() == 0
    store.commit("f1", "me", t, park("nap", "sleep", wake_at=t))
    assert store.claim("f1", "me", t).records == ()
    assert len(past_runs(store, store_kind, "f1")[1]) == n


def test_delete_and_prune_remove_past_runs_too(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    t = clock.time()
    for flow_id in ("deleted", "pruned"):
        store.start(flow_id, "demo", "null", "me", t)
        store.commit(flow_id, "me", t, Write((rec(0),), continue_as_new='"x"'))
        store.commit(flow_id, "me", t, END["completed"])
        assert len(past_runs(store, store_kind, flow_id)) == 1
    assert store.delete("deleted") is True
    assert store.prune(t + 1) == 1
    assert past_runs(store, store_kind, "deleted") == past_runs(store, store_kind, "pruned") == {}


# -- cancel reaches descendants -------------------------------------------------------


def test_cancel_cancels_every_unfinished_descendant_with_its_reason(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"), kid("k2"), kid("k3"))
    store.claim("k1", "w", t)
    store.commit("k1", "w", t, Write(children=(kid("gk1"),)))
    store.commit("k1", "w", t, park("go"))
    store.add_signal("k1", "go", "1", t)
    store.claim("k2", "w", t)
    store.commit("k2", "w", t, Write(children=(kid("gk2"),)))
    store.commit("k2", "w", t, END["completed"])
    store.claim("gk2", "w", t)
    store.commit("gk2", "w", t, park("wait"))
    end(store, "k3", "failed", t)
    store.start("other", "demo", "null", "me", t)
    done = {f: store.load(f) for f in ("k2", "k3", "other")}

    assert store.cancel("p", "enough", t + 7) is True
    reason = "its parent flow 'p' was cancelled: enough"
    p = store.load("p")
    assert (p.status, p.cancel_reason, p.updated_at) == ("cancelled", "enough", t + 7)
    for flow_id in ("k1", "gk1", "gk2"):
        flow = store.load(flow_id)
        assert (flow.status, flow.cancel_reason, flow.updated_at, flow.wake_at) == (
            "cancelled", reason, t + 7, None,
        ), flow_id  # fmt: skip
    assert [s.state for s in store.load("k1").signals] == [UNUSED]
    assert {f: store.load(f) for f in ("k2", "k3", "other")} == done
    assert store.due(t + 8, 10) == []


def test_a_cancelled_descendants_runner_sees_the_cancel(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    store.claim("k1", "w", t)
    store.cancel("p", "enough", t + 1)
    reason = "its parent flow 'p' was cancelled: enough"
    seen = store.check_lease("k1", "w", t + 1)
    assert (seen.status, seen.cancel_reason) == ("cancelled", reason)
    assert store.load("k1").lease_owner == "w"  # kept until the runner sees it
    outcome = store.commit("k1", "w", t + 2, Write((rec(0),)))
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", reason)
    assert store.load("k1").lease_owner is None


def test_cancel_of_a_finished_parent_touches_no_child(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    store.commit("p", "me", t, END["completed"])
    child = store.load("k1")
    assert store.cancel("p", "late", t + 1) is False
    assert store.load("k1") == child


# -- list_flows(version=) -------------------------------------------------------------


def version(position: int, name: str, value: int, state: str = COMPLETED) -> StoredRecord:
    return StoredRecord(position, "version", name, state, result=str(value), attempts=1)


def test_list_flows_by_version_reads_the_current_runs_version_records(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    histories = {
        "v2": (rec(0), version(1, "pricing", 2)),
        "v1": (version(0, "pricing", 1),),
        "none": (rec(0),),
        "other-name": (version(0, "shipping", 2),),
        "a-step-named-so": (rec(0, "pricing"),),
    }
    for n, (flow_id, records) in enumerate(histories.items()):
        store.start(flow_id, "demo", "null", "me", t + n)
        store.commit(flow_id, "me", t + n, Write(records, status="suspended", wake_at=t + 99))
    store.start("past-v2", "demo", "null", "me", t + 10)  # version 2 in its first run only
    store.commit("past-v2", "me", t + 10, Write((version(0, "pricing", 2),), continue_as_new="1"))
    store.commit("past-v2", "me", t + 10, Write((rec(0),), status="suspended", wake_at=t + 99))

    def ids(n: int, **kw: Any) -> list[str]:
        return [f.id for f in store.list_flows(version=("pricing", n), **kw)]

    assert ids(2) == ["v2"]
    assert ids(1) == ["v1"]
    assert ids(0) == ["past-v2", "a-step-named-so", "other-name", "none"]
    assert ids(3) == []
    assert ids(0, limit=2) == ["past-v2", "a-step-named-so"]
    assert ids(0, limit=2, before=t + 4) == ["other-name", "none"]
    assert ids(0, status="completed") == []
    assert [f.id for f in store.list_flows(version=("shipping", 2))] == ["other-name"]
    for bad in (("pricing",), ("pricing", "2"), ("pricing", True), ["pricing", 2]):
        with pytest.raises(TypeError):
            store.list_flows(version=bad)
    with pytest.raises(ValueError):
        store.list_flows(version=("pricing", -1))


# -- put_flow -------------------------------------------------------------------------


def test_put_flow_copies_parent_run_and_custom_status_but_not_children(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    with_children(store, "p", t, kid("k1"))
    store.claim("k1", "w", t)
    store.commit("k1", "w", t, Write(children=(kid("gk"),), custom_status='"s"'))
    store.commit("k1", "w", t, Write((rec(0),), continue_as_new='"next"'))
    store.commit("k1", "w", t, Write((rec(0, "later"),), status="suspended", wake_at=t + 9))
    source = store.load("k1")
    assert source.children == ("gk",)
    store.put_flow(attrs.evolve(source, id="copy"))
    copy = store.load("copy")
    assert (copy.parent_id, copy.run, copy.custom_status) == ("p", 2, '"s"')
    kept = {"claimed_at": source.claimed_at}  # (when it was last claimed: kept, unleased)
    assert copy == attrs.evolve(but_the_lease(source), id="copy", children=(), **kept)
    assert store.load("p").children == ("copy", "k1")  # created at the same time: by id
