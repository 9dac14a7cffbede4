"""``crux_gen.migrate``: every flow from one store to another, verified, on every
pair of stores (the ``store`` fixture is the source, ``target`` the other end).

``tests/test_cli_migrate.py`` runs the same through ``crux-gen migrate``, SQLite
to SQLite and SQLite to PostgreSQL.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    Retry,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.errors import CruxError, InvalidTypeError, InvalidValueError, StoreError
from crux_gen.migrate import MigrationError, canonical, checksum, migrate, walk
from crux_gen.records import StoredFlow, StoredRecord, StoredSignal

CALLS: dict[str, int] = {}


def work(name: str, value: Any = None) -> Any:
    CALLS[name] = CALLS.get(name, 0) + 1
    if name == "charge" and value == "broken":
        raise RuntimeError("card declined")
    if name == "flaky":
        raise ConnectionError("service down")
    return {"done": name, "value": value}


@flow("migrate-order")
def order(ctx: FlowContext) -> Any:
    reserved = yield Step("reserve", lambda: work("reserve", ctx.input["sku"]))
    approval = yield Suspend("approved", timeout="1h")
    yield Step("charge", lambda: work("charge", ctx.input.get("card")))
    if ctx.input.get("flaky"):
        yield Step("flaky", lambda: work("flaky"), retry=Retry(attempts=5, delay="1h"))
    shipped = yield Step("ship", lambda: work("ship", ctx.input["sku"]))
    return {"reserved": reserved, "approval": approval, "shipped": shipped}


def now(store: Any) -> float:
    return float(store.clock.time())


def populate(store: Any, clock: FakeClock) -> dict[str, str]:
    """Flows in every status (and a retrying one, and a crashed runner's) -> their ids."""
    ids: dict[str, str] = {}
    ids["expired"] = order.run(input={"sku": "e"}, store=store, flow_id="o-expired").flow_id
    clock.advance("2h")
    assert order.run(resume=ids["expired"], store=store).status == "expired"

    ids["suspended"] = order.run(input={"sku": "s"}, store=store, flow_id="o-suspended").flow_id
    signal_flow(ids["suspended"], "note", {"text": "gift wrap"}, store=store, key="note-1")

    ids["completed"] = order.run(input={"sku": "c"}, store=store, flow_id="o-completed").flow_id
    signal_flow(ids["completed"], "approved", {"by": "ops"}, store=store, key="approval-1")
    assert order.run(resume=ids["completed"], store=store).status == "completed"

    ids["failed"] = order.run(
        input={"sku": "f", "card": "broken"}, store=store, flow_id="o-failed"
    ).flow_id
    signal_flow(ids["failed"], "approved", {"by": "ops"}, store=store)
    assert order.run(resume=ids["failed"], store=store).status == "failed"

    ids["retrying"] = order.run(
        input={"sku": "r", "flaky": True}, store=store, flow_id="o-retrying"
    ).flow_id
    signal_flow(ids["retrying"], "approved", {"by": "ops"}, store=store)
    assert order.run(resume=ids["retrying"], store=store).status == "suspended"

    ids["cancelled"] = order.run(input={"sku": "x"}, store=store, flow_id="o-cancelled").flow_id
    signal_flow(ids["cancelled"], "approved", {"by": "late"}, store=store)
    assert cancel_flow(ids["cancelled"], "customer left", store=store)

    # Started (Flow.start), never run, with a priority: copied pending, priority kept.
    ids["pending"] = order.start(
        input={"sku": "p"}, store=store, flow_id="o-pending", priority=7
    ).flow_id

    # A runner that crashed an hour ago, between two steps: its lease has lapsed.
    ids["running"] = "o-crashed"
    store.start("o-crashed", "migrate-order", '{"sku": "k"}', "dead-runner", now(store) - 3600)
    return ids


def everything(store: Any) -> dict[str, StoredFlow]:
    return {f.id: store.load(f.id) for f in walk(store, 1000)}


def unleased(flow: StoredFlow) -> StoredFlow:
    return attrs.evolve(flow, lease_owner=None, lease_expires=None)


def test_every_flow_is_copied_with_its_history_signals_and_status_lease_cleared(
    store: Any, target: Any, clock: FakeClock
) -> None:
    ids = populate(store, clock)
    before = everything(store)
    seen: list[tuple[int, int]] = []
    report = migrate(
        store, target, batch=3, progress=lambda done, total: seen.append((done, total))
    )
    assert (report.copied, report.skipped, report.flows) == (8, 0, 8)
    assert dict(report.by_status) == {
        "pending": 1, "running": 1, "suspended": 2, "completed": 1, "failed": 1, "expired": 1,
        "cancelled": 1,
    }  # fmt: skip
    assert list(report.by_status) == [
        "pending",
        "running",
        "suspended",
        "completed",
        "failed",
        "expired",
        "cancelled",
    ]
    assert report.records == sum(len(f.records) for f in before.values())
    assert report.signals == sum(len(f.signals) for f in before.values()) == 5
    assert report.seconds >= 0
    assert seen == [(n, 8) for n in range(1, 9)]

    copied = everything(target)
    assert copied == {i: unleased(f) for i, f in before.items()}
    assert all(checksum(copied[i]) == checksum(f) for i, f in before.items())
    assert everything(store) == before  # the source is left as it was
    assert before[ids["running"]].lease_owner == "dead-runner"
    assert copied[ids["running"]].lease_owner is None
    keys = {s.key for s in copied[ids["suspended"]].signals}
    assert keys == {"note-1"}
    assert (copied[ids["pending"]].status, copied[ids["pending"]].priority) == ("pending", 7)


def test_flows_go_on_on_the_target_where_they_stopped(
    store: Any, target: Any, clock: FakeClock
) -> None:
    ids = populate(store, clock)
    migrate(store, target)
    CALLS.clear()
    # The suspended flow takes its signal on the target and completes there,
    # replaying "reserve" from its record.
    signal_flow(ids["suspended"], "approved", {"by": "new-host"}, store=target)
    done = resume(ids["suspended"], store=target, flows=[order])
    assert done.status == "completed"
    assert done.value["approval"] == {"by": "new-host"}
    assert CALLS == {"charge": 1, "ship": 1}
    info = get_flow(ids["suspended"], store=target)
    assert [(s.name, s.state) for s in info.signals] == [
        ("note", "unused"),
        ("approved", "consumed"),
    ]
    # The crashed runner's flow is due on the target (no lease) and runs; the
    # started one is due there too, first by its priority.
    assert target.due(now(target), 10)[:2] == [ids["pending"], ids["running"]]
    # The retrying step waits out its backoff on the target too.
    clock.advance("2h")
    assert ids["retrying"] in target.due(now(target), 10)
    # A key sent on the source is known on the target.
    assert not signal_flow(ids["suspended"], "note", {}, store=target, key="note-1")
    # Nothing of it reached the source.
    assert store.load(ids["suspended"]).status == "suspended"


def test_a_live_lease_on_the_source_refuses_the_migration_and_nothing_is_copied(
    store: Any, target: Any, clock: FakeClock
) -> None:
    populate(store, clock)
    store.start("o-busy", "migrate-order", '{"sku": "b"}', "runner-7", now(store))
    with pytest.raises(MigrationError) as refused:
        migrate(store, target, batch=2)
    text = str(refused.value)
    assert "1 flow is held by a runner" in text
    assert "o-busy (migrate-order, runner runner-7 until" in text
    assert "nothing was copied" in text
    assert refused.value.report is None
    assert isinstance(refused.value, CruxError)
    assert target.list_flows() == []
    # Once the lease lapses (by the source's clock), it goes.
    clock.advance(store.lease_ttl)
    assert migrate(store, target).copied == 9


def test_a_runner_taking_a_flow_during_the_migration_stops_it(
    store: Any, target: Any, clock: FakeClock
) -> None:
    populate(store, clock)

    class Sneaky:
        """The source, but a runner claims a flow once the first has been copied."""

        def __init__(self) -> None:
            self.loads = 0
            self.clock = store.clock

        def list_flows(self, **kw: Any) -> Any:
            return store.list_flows(**kw)

        def put_flow(self, f: StoredFlow) -> None:
            raise AssertionError("not a target")

        def load(self, flow_id: str) -> StoredFlow:
            self.loads += 1
            if self.loads == 2:
                store.claim(flow_id, "sneaky-runner", now(store))
            return store.load(flow_id)

    with pytest.raises(MigrationError, match=r"a runner took flow .* sneaky-runner") as stopped:
        migrate(Sneaky(), target)
    assert stopped.value.report is not None and stopped.value.report.copied == 1
    assert len(target.list_flows()) == 1


def test_a_second_run_skips_every_flow_and_an_interrupted_run_is_finished_by_the_next(
    store: Any, target: Any, clock: FakeClock
) -> None:
    populate(store, clock)

    class Falls:
        """The target, failing at its third put_flow (a lost connection)."""

        def __init__(self) -> None:
            self.puts = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(target, name)

        def put_flow(self, f: StoredFlow) -> None:
            self.puts += 1
            if self.puts == 3:
                raise StoreError("connection to the target lost")
            target.put_flow(f)

    with pytest.raises(StoreError, match="connection"):
        migrate(store, Falls(), batch=2)
    assert len(target.list_flows()) == 2
    finished = migrate(store, target, batch=2)
    assert (finished.copied, finished.skipped, finished.flows) == (6, 2, 8)
    again = migrate(store, target)
    assert (again.copied, again.skipped) == (0, 8)
    assert sum(again.by_status.values()) == 8
    assert everything(target) == {i: unleased(f) for i, f in everything(store).items()}


def test_a_flow_in_the_target_with_other_content_is_an_error_naming_it_and_left_alone(
    store: Any, target: Any, clock: FakeClock
) -> None:
    ids = populate(store, clock)
    original = store.load(ids["suspended"])
    other = attrs.evolve(original, signals=original.signals[:0], input='{"sku": "other"}')
    target.put_flow(other)
    with pytest.raises(MigrationError) as conflict:
        migrate(store, target)
    text = str(conflict.value)
    assert f"1 flow is in the target already with other content: {ids['suspended']}" in text
    assert "(migrate-order)" in text and "left as they are" in text
    report = conflict.value.report
    assert report is not None and (report.copied, report.skipped) == (7, 0)
    assert target.load(ids["suspended"]) == other
    assert len(target.list_flows()) == 8


def test_a_target_that_does_not_keep_what_it_is_given_is_caught(
    store: Any, target: Any, clock: FakeClock
) -> None:
    ids = populate(store, clock)

    class Lossy:
        """The target, dropping the last signal of every flow it is given."""

        def __getattr__(self, name: str) -> Any:
            return getattr(target, name)

        def put_flow(self, f: StoredFlow) -> None:
            target.put_flow(attrs.evolve(f, signals=f.signals[:-1]))

    with pytest.raises(MigrationError, match="reads back from the target other than") as lost:
        migrate(store, Lossy())
    text = str(lost.value)
    assert "2 signals copied" in text or "1 signals copied" in text
    assert any(i in text for i in ids.values())


def flows_at(store: Any, times: dict[float, int]) -> list[str]:
    """Put flows updated at the given times (time -> how many), return their ids."""
    made = []
    for t, count in times.items():
        for n in range(count):
            flow_id = f"t{t:g}-{n:03d}"
            store.put_flow(StoredFlow(flow_id, "demo", "completed", "null", 1.0, t))
            made.append(flow_id)
    return made


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 40, 41, 44, 100])
def test_walk_gives_every_flow_once_when_many_share_one_updated_at(store: Any, batch: int) -> None:
    made = flows_at(store, {300.0: 1, 200.0: 3, 100.0: 40, 50.0: 25, math.pi: 1})
    walked = list(walk(store, batch))
    assert sorted(f.id for f in walked) == sorted(made)
    assert len(walked) == len(made)
    stamps = [f.updated_at for f in walked]
    assert stamps == sorted(stamps, reverse=True)


def test_migrate_copies_every_flow_when_most_share_one_updated_at(store: Any, target: Any) -> None:
    made = flows_at(store, {100.0: 60, 99.0: 5, 101.0: 2})
    report = migrate(store, target, batch=7)
    assert report.copied == len(made) == 67
    assert sorted(f.id for f in walk(target, 1000)) == sorted(made)


def test_a_parent_copied_before_its_children_is_verified_and_keeps_them(
    store: Any, target: Any
) -> None:
    from crux_gen.records import NewChild, Write

    store.start("parent", "demo", "null", "me", 1.0)
    store.commit("parent", "me", 1.0, Write(children=(NewChild("kid", "demo", '"in"'),)))
    store.claim("kid", "w", 2.0)
    store.commit("kid", "w", 2.0, Write(status="completed", result="1"))
    store.commit("parent", "me", 3.0, Write(status="completed", result="2"))  # copied first
    report = migrate(store, target)
    assert report.copied == 2
    assert target.load("parent").children == ("kid",)
    assert target.load("kid").parent_id == "parent"


def test_an_empty_source_copies_nothing(store: Any, target: Any) -> None:
    report = migrate(store, target)
    assert (report.copied, report.skipped, dict(report.by_status)) == (0, 0, {})


def test_the_checksum_sees_everything_but_the_lease() -> None:
    base = StoredFlow(
        "f1", "demo", "suspended", '{"a": "\u00e9"}', 1000.0, 1001.5,
        waiting_for="go", wait_kind="suspend",
        records=(StoredRecord(0, "step", "one", "completed", '"x"', None, 1, 1000.0, 1000.25),),
        signals=(StoredSignal(3, "f1", "go", "{}", "pending", 1001.0, key="k"),),
    )  # fmt: skip
    same = attrs.evolve(base, lease_owner="r", lease_expires=5.0, created_at=1000)
    assert checksum(same) == checksum(base)
    assert len(checksum(base)) == 64
    reordered = attrs.evolve(
        base,
        signals=(StoredSignal(9, "f1", "go", "{}", "pending", 1.0), *base.signals),
    )
    assert checksum(attrs.evolve(reordered, signals=reordered.signals[::-1])) == checksum(reordered)
    changes = [
        {"status": "running"},
        {"input": '{"a": "e"}'},
        {"updated_at": 1001.5000001},
        {"wake_at": 5.0},
        {"records": ()},
        {"records": (base.records[0]._replace(attempts=2),)},
        {"signals": (base.signals[0]._replace(key=None),)},
        {"signals": (base.signals[0]._replace(id=4),)},
        {"signals": (base.signals[0]._replace(state="consumed"),)},
        {"recoveries": 3},
    ]
    for change in changes:
        assert checksum(attrs.evolve(base, **change)) != checksum(base), change
    assert '"lease' not in canonical(same)


def test_bad_arguments_are_crux_errors_naming_them(store: Any, target: Any) -> None:
    with pytest.raises(InvalidValueError, match="batch 0"):
        migrate(store, target, batch=0)
    with pytest.raises(InvalidTypeError, match="batch '10'"):
        migrate(store, target, batch="10")  # type: ignore[arg-type]

    class ReadOnly:
        list_flows = load = staticmethod(lambda *a, **k: [])

    with pytest.raises(InvalidTypeError, match=r"migrate target .* has no put_flow"):
        migrate(store, ReadOnly())  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"migrate target .* has no list_flows"):
        migrate(store, object())  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="migrate source"):
        migrate("crux.db", target)  # type: ignore[arg-type]
