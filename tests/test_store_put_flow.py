"""``StoreAdmin.put_flow`` on every store (the ``store`` fixture): a whole flow from
another store goes in exactly as given, lease cleared, all or nothing.

``crux_gen.migrate`` is built on it; these tests pin what it may rely on.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from crux_gen.clock import FakeClock
from crux_gen.errors import InvalidTypeError, InvalidValueError, RecordConflictError, StoreError
from crux_gen.records import (
    COMPLETED,
    CONSUMED,
    FAILED,
    PENDING,
    REJECTED,
    RETRYING,
    UNUSED,
    WAITING,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    Write,
)

ERROR = '{"type": "builtins.ValueError", "message": "boom"}'


def record(position: int, state: str = COMPLETED, **fields: Any) -> StoredRecord:
    kind = fields.pop("kind", "step")
    values: dict[str, Any] = {
        "attempts": 1,
        "started_at": 1000.25 + position,
        "finished_at": 1000.5 + position,
    }
    if state == COMPLETED:
        values["result"] = f'"r{position}"'
    values.update(fields)
    return StoredRecord(position, kind, f"step-{position}", state, **values)


def signal(flow_id: str, id: int, state: str = PENDING, **fields: Any) -> StoredSignal:
    values: dict[str, Any] = {"name": "go", "payload": f'{{"n": {id}}}', "created_at": 1100.0 + id}
    values.update(fields)
    return StoredSignal(id, flow_id, values.pop("name"), values.pop("payload"), state, **values)


def suspended_flow(flow_id: str = "moved", **fields: Any) -> StoredFlow:
    """A suspended flow as another store's ``load`` gives it: three records (the
    last one waiting), signals in every state with keys, and a live lease."""
    values: dict[str, Any] = {
        "name": "demo",
        "status": "suspended",
        "input": '{"email": "a@b.c", "note": "caf\\u00e9 \u2603"}',
        "created_at": 1000.0,
        "updated_at": 1234.5678901234,
        "waiting_for": "go",
        "wait_kind": "suspend",
        "deadline": 4102444800.125,  # 2100
        "lease_owner": "runner-elsewhere",
        "lease_expires": 99999999999.0,
        "records": (
            record(0),
            record(1, FAILED, error=ERROR, attempts=3),
            record(2, WAITING, kind="suspend", started_at=1200.0, finished_at=None, deadline=9e4),
        ),
        "signals": (
            signal(flow_id, 5, CONSUMED, consumed_at=1150.0, position=1, key="k-5"),
            signal(flow_id, 7, REJECTED, error='{"reason": "bad"}', consumed_at=1160.0),
            signal(flow_id, 9, PENDING, name="other", key="k-9"),
            signal(flow_id, 12, PENDING),
        ),
    }
    values.update(fields)
    return StoredFlow(flow_id, **values)


def cleared(flow: StoredFlow) -> StoredFlow:
    return attrs.evolve(flow, lease_owner=None, lease_expires=None)


def test_put_flow_stores_the_row_records_and_signals_as_given_with_the_lease_cleared(
    store: Any,
) -> None:
    given = suspended_flow()
    assert store.put_flow(given) is None
    assert store.load("moved") == cleared(given)
    listed = store.list_flows()
    assert [f.id for f in listed] == ["moved"]
    assert listed[0] == attrs.evolve(cleared(given), records=(), signals=())
    assert store.match_ids("mov", 5) == ["moved"]


def test_put_flow_takes_flows_in_every_status_and_without_history(store: Any) -> None:
    rows = {
        "running": {"waiting_for": None, "wait_kind": None, "deadline": None},
        "completed": {"result": '"done"', "lease_owner": None, "lease_expires": None},
        "failed": {"error": ERROR},
        "expired": {"records": ()},
        "cancelled": {"cancel_reason": "not needed", "signals": ()},
    }
    for n, (status, fields) in enumerate(rows.items()):
        mine = (signal(status, 100 + n, UNUSED if status != "running" else PENDING),)
        given = suspended_flow(status, status=status, **{"signals": mine, **fields})
        store.put_flow(given)
        assert store.load(status) == cleared(given)
    bare = StoredFlow("bare", "demo", "running", "null", 5.0, 5.0)
    store.put_flow(bare)
    assert store.load("bare") == bare
    assert {f.id for f in store.list_flows()} == {*rows, "bare"}


def test_an_id_stored_already_is_an_error_and_nothing_is_written(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.start("moved", "demo", '"mine"', "me", t)
    store.commit("moved", "me", t, Write(records=(record(0),)))
    before = store.load("moved")
    with pytest.raises(StoreError, match="moved"):
        store.put_flow(suspended_flow())
    assert store.load("moved") == before
    store.put_flow(suspended_flow("other", signals=()))
    with pytest.raises(StoreError, match="other"):
        store.put_flow(suspended_flow("other", signals=()))
    # The signal ids of the refused flow were not taken.
    store.put_flow(suspended_flow("third"))
    assert [s.id for s in store.load("third").signals] == [5, 7, 9, 12]


def test_a_signal_id_taken_by_another_flow_is_an_error_and_nothing_is_written(
    store: Any,
) -> None:
    store.put_flow(suspended_flow("first"))
    clash = suspended_flow("second", signals=(signal("second", 30), signal("second", 9)))
    with pytest.raises(StoreError, match="second"):
        store.put_flow(clash)
    assert [f.id for f in store.list_flows()] == ["first"]
    assert store.match_ids("second", 5) == []
    assert store.load("first") == cleared(suspended_flow("first"))


@pytest.mark.parametrize(
    ("records", "signals", "error"),
    [
        ((record(0), record(2)), (), RecordConflictError),  # a gap
        ((record(1),), (), RecordConflictError),  # not from 0
        ((record(0), record(0)), (), RecordConflictError),  # twice
        ((), (signal("someone-else", 1),), InvalidValueError),
        ((), (signal("bad", 1), signal("bad", 1, CONSUMED)), InvalidValueError),
        ((), (signal("bad", 1, key="k"), signal("bad", 2, key="k")), InvalidValueError),
    ],
)
def test_a_flow_that_cannot_be_a_stored_flow_is_refused_and_nothing_is_written(
    store: Any, records: Any, signals: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.put_flow(suspended_flow("bad", records=records, signals=signals))
    assert store.list_flows() == []
    with pytest.raises(InvalidTypeError):
        store.put_flow({"id": "bad"})


def test_signals_sent_after_put_flow_get_ids_above_the_ones_put(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    store.put_flow(suspended_flow("moved", signals=(signal("moved", 40), signal("moved", 41))))
    store.start("fresh", "demo", "null", "me", t)
    store.commit("fresh", "me", t, Write(status="suspended", waiting_for="x", wait_kind="suspend"))
    a = store.add_signal("fresh", "x", "1", t)
    b = store.add_signal("moved", "go", "2", t)
    assert a is not None and b is not None
    assert 41 < a.id < b.id
    assert [s.id for s in store.load("moved").signals] == [40, 41, b.id]


def test_a_signal_key_put_keeps_a_second_delivery_out(store: Any, clock: FakeClock) -> None:
    store.put_flow(suspended_flow())
    assert store.add_signal("moved", "go", '"again"', clock.time(), key="k-5") is None
    assert store.add_signal("moved", "go", '"again"', clock.time(), key="k-9") is None
    assert len(store.load("moved").signals) == 4


def test_a_suspended_flow_put_is_due_and_a_runner_carries_it_on(
    store: Any, clock: FakeClock
) -> None:
    """A flow moved while it waited: its pending signal makes it due, and a runner
    claims it, consumes the signal and finishes it, as on the store it came from."""
    t = clock.time()
    store.put_flow(suspended_flow())
    assert store.due(t, 10) == ["moved"]
    claimed = store.claim("moved", "worker", t, only_if_due=True)
    assert (claimed.lease_owner, claimed.status) == ("worker", "suspended")
    assert [s.id for s in claimed.signals] == [9, 12]  # the pending ones, oldest first
    done = Write(
        records=(record(2, COMPLETED, kind="suspend", result='{"n": 12}'), record(3)),
        signals=(SignalUpdate(12, CONSUMED, position=2),),
        status="completed",
        result='"finished"',
    )
    assert store.commit("moved", "worker", t, done).status == "completed"
    after = store.load("moved")
    assert (after.status, after.result, after.lease_owner) == ("completed", '"finished"', None)
    assert [r.state for r in after.records] == [COMPLETED, FAILED, COMPLETED, COMPLETED]
    states = {s.id: s.state for s in after.signals}
    assert states == {5: CONSUMED, 7: REJECTED, 9: UNUSED, 12: CONSUMED}
    assert store.due(t, 10) == []


def test_a_running_flow_put_with_a_retrying_step_is_due_at_once(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    given = suspended_flow(
        status="running",
        waiting_for=None,
        wait_kind=None,
        deadline=None,
        records=(record(0), record(1, RETRYING, attempts=1, wake_at=t - 1)),
        signals=(),
    )
    store.put_flow(given)
    assert store.due(t, 10) == ["moved"]  # no lease: a crashed runner's flow, as it were
    assert store.claim("moved", "worker", t).lease_owner == "worker"
