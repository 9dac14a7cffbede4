"""The store operations behind ``crux-gen retry``, ``prune`` and short ids, on every store."""

from __future__ import annotations

from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    FlowNotFoundError,
    FlowStateError,
    Retry,
    Step,
    Suspend,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.records import COMPLETED, FAILED, StoredRecord
from crux_gen.stores.base import retry_plan
from crux_gen.stores.sqlite import SQLiteStore


def now(store: Any) -> float:
    return float(store.clock.now().timestamp())


class Service:
    """A step target that fails until told otherwise, counting its calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.broken = True

    def __call__(self, name: str) -> str:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name == "charge" and self.broken:
            raise RuntimeError("card service down")
        return f"{name} done"


def checkout_flow(service: Service, name: str = "checkout") -> Any:
    @flow(name)
    def checkout(ctx: FlowContext) -> Any:
        yield Step("reserve", lambda: service("reserve"))
        approval = yield Suspend("approved")
        yield Step("charge", lambda: service("charge"), retry=Retry(attempts=2, delay="1ms"))
        receipt = yield Step("receipt", lambda: service("receipt"))
        return {"approval": approval, "receipt": receipt}

    return checkout


def test_retry_reruns_the_failed_step_and_keeps_completed_steps_and_signals(
    store: Any, clock: FakeClock
) -> None:
    service = Service()
    checkout = checkout_flow(service)
    r = checkout.run(store=store)
    signal_flow(r.flow_id, "approved", {"by": "ops"}, store=store)
    assert checkout.run(resume=r.flow_id, store=store).status == "failed"
    assert service.calls == {"reserve": 1, "charge": 2}

    clock.advance("1m")
    dropped = store.retry_failed(r.flow_id, now(store))
    assert [(d.position, d.name, d.state) for d in dropped] == [(2, "charge", FAILED)]
    info = get_flow(r.flow_id, store=store)
    assert info.status == "suspended"
    assert (info.waiting_for, info.wake_at, info.error) == ("charge", clock.now(), None)
    assert [h.name for h in info.history] == ["reserve", "approved"]
    assert [s.state for s in info.signals] == ["consumed"]
    assert store.due(now(store), 10) == [r.flow_id]

    service.broken = False
    done = resume(r.flow_id, store=store, flows=[checkout])
    assert done.status == "completed"
    assert done.value == {"approval": {"by": "ops"}, "receipt": "receipt done"}
    assert service.calls == {"reserve": 1, "charge": 3, "receipt": 1}  # a fresh try of charge


def test_retry_after_a_body_failure_drops_nothing_and_reruns_the_body(store: Any) -> None:
    calls: list[str] = []
    fixed = {"yet": False}

    @flow("body-fails")
    def body_fails(ctx: FlowContext) -> Any:
        value = yield Step("fetch", lambda: calls.append("fetch") or 41)
        if not fixed["yet"]:
            raise KeyError("missing field")
        return value + 1

    r = body_fails.run(store=store)
    assert r.status == "failed"
    assert store.retry_failed(r.flow_id, now(store)) == ()
    assert store.load(r.flow_id).waiting_for is None
    assert [h.name for h in get_flow(r.flow_id, store=store).history] == ["fetch"]
    fixed["yet"] = True  # "deploy the fix"
    done = body_fails.run(resume=r.flow_id, store=store)
    assert (done.status, done.value, calls) == ("completed", 42, ["fetch"])


def test_only_a_failed_cancelled_or_expired_flow_can_be_retried(store: Any) -> None:
    checkout = checkout_flow(Service(), "retry-refused")
    r = checkout.run(store=store)
    before = store.load(r.flow_id)
    refused = "is suspended; only a failed, cancelled or expired flow can be retried"
    with pytest.raises(FlowStateError, match=refused):
        store.retry_failed(r.flow_id, now(store))
    assert store.load(r.flow_id) == before
    with pytest.raises(FlowNotFoundError):
        store.retry_failed("no-such-flow", now(store))


def record(position: int, kind: str, state: str = COMPLETED) -> StoredRecord:
    return StoredRecord(position, kind, kind, state)


def test_retry_plan_finds_the_failure_that_ended_the_flow() -> None:
    step, failed, now_value = "step", FAILED, "now"
    # The last record failed: drop it.
    assert retry_plan([record(0, step), record(1, step, failed)])[0] == 1
    # Only ctx.now()-style values after it (an except block that logged the time): drop them too.
    assert retry_plan([record(0, step, failed), record(1, now_value)])[0] == 0
    # The flow caught the failure and went on to another step: the body failed; keep all.
    assert retry_plan([record(0, step, failed), record(1, step)])[0] == 2
    assert retry_plan([record(0, step), record(1, now_value)])[0] == 2
    assert retry_plan([])[0] == 0


def test_prune_deletes_old_finished_flows_with_their_history_only(
    store: Any, clock: FakeClock
) -> None:
    service = Service()
    service.broken = False
    checkout = checkout_flow(service, "prunable")
    old_done = checkout.run(store=store).flow_id
    signal_flow(old_done, "approved", True, store=store)
    checkout.run(resume=old_done, store=store)
    old_waiting = checkout.run(store=store).flow_id
    clock.advance("31d")
    recent_done = checkout.run(store=store).flow_id
    signal_flow(recent_done, "approved", True, store=store)
    checkout.run(resume=recent_done, store=store)

    cutoff = clock.now().timestamp() - 30 * 86400
    assert store.prune(cutoff) == 1
    with pytest.raises(FlowNotFoundError):
        store.load(old_done)
    assert store.load(old_waiting).status == "suspended"  # unfinished: never pruned
    assert store.load(recent_done).status == "completed"
    assert store.prune(cutoff) == 0


def test_sqlite_prune_works_in_batches(tmp_path: Any, clock: FakeClock) -> None:
    store = SQLiteStore(tmp_path / "batches.db", synchronous="NORMAL", clock=clock)
    for i in range(5):
        store.start(f"f{i}", "demo", "null", "me", now(store))
        store.cancel(f"f{i}", "test", now(store))
    clock.advance("1s")
    assert store.prune(now(store), batch=2) == 5
    assert store.list_flows() == []
    rows = store._conn().execute(
        "SELECT count(*) FROM records UNION ALL SELECT count(*) FROM signals"
    )
    assert [r[0] for r in rows] == [0, 0]
    store.close()


def test_match_ids_finds_flows_by_the_start_of_their_id(store: Any) -> None:
    for flow_id in ("ab12", "ab13", "ac00", "b"):
        store.start(flow_id, "demo", "null", "me", now(store))
    assert store.match_ids("ab", 10) == ["ab12", "ab13"]
    assert store.match_ids("ab1", 1) == ["ab12"]
    assert store.match_ids("ac", 10) == ["ac00"]
    assert store.match_ids("zz", 10) == []
    assert store.match_ids("", 10) == ["ab12", "ab13", "ac00", "b"]
