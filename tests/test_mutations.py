"""Behaviours no other test pinned down: each test here fails when the behaviour is
broken (checked by breaking it in the code, seeing the test fail, and putting it back).

- ``migrate`` compares each copy's checksum with the source's, not only its counts.
- PostgreSQL: ``claim_due`` skips a flow another connection has locked (``SKIP
  LOCKED``) instead of waiting for it.
- ``Any``: a signal and a timer due at the same instant: the signal wins.
- The worker leaves a flow whose code diverged from its history alone for
  ``skip_for`` and goes on with the others.
- A signal that reached a flow after its wait's deadline is refused, and the flow
  expires.

They go through the public API (and ``StoreAdmin.put_flow`` for a stored state the
API cannot make on purpose), on every store where the behaviour applies.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import attrs
import pytest

from crux_gen import Any as AnyOf
from crux_gen import (
    FakeClock,
    FlowContext,
    Registry,
    Sleep,
    Step,
    Suspend,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.migrate import MigrationError, checksum, migrate
from crux_gen.records import StoredFlow, StoredSignal
from crux_gen.worker import Worker

from . import pg
from .test_migrate import populate

# -- migrate: the read-back checksum ----------------------------------------------------


def _other_result(f: StoredFlow) -> StoredFlow:
    """*f* with its first record's result another (valid) value: the counts stay."""
    first = f.records[0]
    assert first.result is not None
    return attrs.evolve(f, records=(first._replace(result='"tampered"'), *f.records[1:]))


def _other_input(f: StoredFlow) -> StoredFlow:
    return attrs.evolve(f, input='{"sku": "tampered"}')


@pytest.mark.parametrize("change", [_other_result, _other_input], ids=["record", "row"])
def test_migrate_catches_a_target_that_changes_a_flow_but_not_its_counts(
    store: Any, target: Any, clock: FakeClock, change: Any
) -> None:
    ids = populate(store, clock)
    victim = ids["completed"]
    source_sum = checksum(store.load(victim))

    class Tampering:
        """The target, changing one value of one flow it is given (a bad disk, a
        column type that rounds): as many records and signals as given."""

        def __getattr__(self, name: str) -> Any:
            return getattr(target, name)

        def put_flow(self, f: StoredFlow) -> None:
            target.put_flow(change(f) if f.id == victim else f)

    with pytest.raises(MigrationError, match="reads back from the target other than") as caught:
        migrate(store, Tampering())
    text = str(caught.value)
    assert f"flow {victim} (migrate-order)" in text
    assert f"checksum {source_sum[:12]} copied" in text
    assert checksum(target.load(victim)) != source_sum  # what it caught is really there


# -- PostgreSQL: claim_due skips what another connection has locked --------------------


def test_claim_due_skips_a_flow_another_connection_has_locked(
    pg_server: pg.Server, pg_schema: str
) -> None:
    psycopg = pg.psycopg()
    store = pg.store_class()(pg_server.url, schema=pg_schema)
    try:
        now = store.clock.time()
        for flow_id in ("a-locked", "b-free"):  # runners that crashed an hour ago: both due
            store.start(flow_id, "m-demo", "null", "dead-runner", now - 3600)
        assert sorted(store.due(now, 10)) == ["a-locked", "b-free"]

        options = f"-c search_path={pg_schema}"
        with psycopg.connect(store.url, options=options) as other:  # not autocommit
            other.execute("SELECT id FROM flows WHERE id = 'a-locked' FOR UPDATE")
            holder = other.info.backend_pid
            claimed: list[Any] = []
            claim = threading.Thread(
                target=lambda: claimed.append(
                    catching(lambda: store.claim_due(store.clock.time(), 10, "worker-1"))
                )
            )
            claim.start()
            # Wait for the claim to end, or to queue behind the lock: no timing.
            blocked = False
            while claim.is_alive() and not blocked:
                [(waiting,)] = pg_server.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (holder,),
                )
                blocked = waiting > 0
                claim.join(0.01)
            other.rollback()  # the lock goes: a blocked claim goes on
            claim.join(60)
        assert not blocked, "claim_due waited for a row another connection had locked"
        [got] = claimed
        assert not isinstance(got, BaseException), got
        assert [f.id for f in got] == ["b-free"]
        assert [f.lease_owner for f in got] == ["worker-1"]
        # Once nobody holds it, the skipped flow is claimed as any other.
        again = store.claim_due(store.clock.time(), 10, "worker-2")
        assert [(f.id, f.lease_owner) for f in again] == [("a-locked", "worker-2")]
    finally:
        store.close()


def catching(call: Any) -> Any:
    try:
        return call()
    except BaseException as exc:  # handed to the test's thread
        return exc


# -- Any: a signal and a timer at the same instant ---------------------------------------


def test_a_signal_and_a_timer_due_at_the_same_instant_the_signal_wins(
    store: Any, clock: FakeClock
) -> None:
    @flow("m-any-tie", registry=Registry())
    def race(ctx: FlowContext) -> Any:
        # The timer first in the list: list order alone would pick it.
        winner = yield AnyOf([Sleep("give-up", "1h"), Suspend("approved")])
        return [winner.index, winner.name, winner.value]

    tie = race.run(store=store).flow_id
    late = race.run(store=store).flow_id
    assert get_flow(tie, store=store).status == "suspended"

    clock.advance("1h")  # the timer is due at this very instant...
    signal_flow(tie, "approved", "yes", store=store)  # ...and the signal is sent at it
    assert resume(tie, store=store, flows=[race]).value == [1, "approved", "yes"]
    assert [s.state for s in get_flow(tie, store=store).signals] == ["consumed"]

    # One tick later the timer came first: it wins, the signal stays unused.
    clock.advance(0.001)
    signal_flow(late, "approved", "too late", store=store)
    assert resume(late, store=store, flows=[race]).value == [0, "give-up", None]
    assert [s.state for s in get_flow(late, store=store).signals] == ["unused"]


# -- the worker skips a flow whose code diverged ------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_flow_whose_code_diverged_is_left_alone_for_skip_for_and_the_others_go_on(
    store: Any, clock: FakeClock, concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    replays: Counter[str] = Counter()
    code = {"first step": "reserve"}

    @flow("m-diverges", registry=registry)
    def diverges(ctx: FlowContext) -> Any:
        replays[ctx.flow_id] += 1
        yield Step(code["first step"], lambda: 1)
        yield Suspend("go")
        return "done"

    @flow("m-fine", registry=registry)
    def fine(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return "fine"

    bad = diverges.run(store=store).flow_id  # "reserve" recorded, parked at "go"
    signal_flow(bad, "go", None, store=store)  # due
    code["first step"] = "charge"  # a deploy changed the code under its history
    before = get_flow(bad, store=store)
    replays.clear()  # from here, each is a worker trying it

    def fine_flow() -> str:
        flow_id = fine.run(store=store).flow_id
        signal_flow(flow_id, "go", None, store=store)
        return flow_id

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    worker = Worker(store, [diverges, fine], skip_for="5m", concurrency=concurrency)
    caplog.set_level(logging.INFO, logger="crux_gen")

    good = fine_flow()
    assert worker.run_once() == 1  # the fine flow ran; the diverged one did not advance
    assert replays[bad] == 1
    assert get_flow(good, store=store).status == "completed"
    [error] = errors()
    assert bad in error and "Skipping this flow for 5m" in error

    # Passes within skip_for: it is not tried again (no replay, no new error line)
    # while flows that became due meanwhile run.
    for _ in range(3):
        good = fine_flow()
        assert worker.run_once() == 1
        assert get_flow(good, store=store).status == "completed"
    assert replays[bad] == 1
    assert len(errors()) == 1

    # Nothing of it was changed: still due, its signal pending, for a fixed deploy.
    after = get_flow(bad, store=store)
    assert (after.status, after.history, after.signals) == (
        before.status,
        before.history,
        before.signals,
    )

    clock.advance("5m")  # skip_for passed: the worker tries it again, once a pass
    assert worker.run_once() == 0
    assert replays[bad] == 2 and len(errors()) == 2
    code["first step"] = "reserve"  # the fix is deployed
    clock.advance("5m")
    assert worker.run_once() == 1
    assert get_flow(bad, store=store).status == "completed"


# -- a signal after its wait's deadline ----------------------------------------------------


def test_a_signal_that_reached_a_flow_after_its_waits_deadline_is_refused_and_it_expires(
    store: Any, clock: FakeClock
) -> None:
    @flow("m-deadline", registry=Registry())
    def approval(ctx: FlowContext) -> Any:
        return (yield Suspend("approved", timeout="1h"))

    parked = store.load(approval.run(store=store).flow_id)
    [wait] = parked.records
    assert wait.deadline is not None

    # signal_flow refuses a signal from the deadline on; one can still reach a flow
    # after it while a runner held it (stored by then), or come with a migration.
    # Copies of the parked flow, each with one signal stored at the given moment.
    def copy(flow_id: str, signal_id: int, sent: float) -> str:
        signal = StoredSignal(signal_id, flow_id, "approved", '"yes"', "pending", sent)
        store.put_flow(attrs.evolve(parked, id=flow_id, signals=(signal,)))
        return flow_id

    late = copy("m-late", 900_001, wait.deadline + 1)
    in_time = copy("m-in-time", 900_002, wait.deadline - 1)
    clock.advance("2h")  # both are resumed after the deadline

    done = resume(late, store=store, flows=[approval])
    assert done.status == "expired"
    [signal] = get_flow(late, store=store).signals
    assert signal.state == "rejected"
    assert signal.error == "it arrived after the wait's deadline"

    # The control: stored before the deadline, it is consumed however late the run.
    done = resume(in_time, store=store, flows=[approval])
    assert (done.status, done.value) == ("completed", "yes")
    assert [s.state for s in get_flow(in_time, store=store).signals] == ["consumed"]
