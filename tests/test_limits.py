"""Global limits (``Limit``, ``Rate``): slots and rates in the store, taken at the
claim and given back when the flow parks or ends; blocked flows show
``blocked_by`` and come back when a slot frees or their rate turn comes; due
flows of a keyed limit are taken round-robin across keys. Every test that
touches a store runs on every store (``store`` fixture), on the store's fake
clock, in process; tests/test_limits_procs.py has the cross-process ones."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from crux_gen import (
    InvalidTypeError,
    InvalidValueError,
    Limit,
    Rate,
    Sleep,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.limits import make_gate
from crux_gen.records import Write
from crux_gen.worker import Worker

RAN: list[str] = []
ONE = Limit("lim-one", concurrency=1)
TWO = Limit("lim-two", concurrency=2)
HOURLY = Limit("lim-hourly", rate=Rate(2, per="1h"))
PER_CUSTOMER = Limit("lim-customer", concurrency=1, key=lambda input: input["customer"])


@flow("lim-sleeper", limits=[ONE])
def sleeper(ctx: Any) -> Any:
    yield Step("before", lambda: RAN.append(f"before {ctx.input['n']}"))
    yield Sleep("nap", "1h")
    yield Step("after", lambda: RAN.append(f"after {ctx.input['n']}"))
    return ctx.input["n"]


@flow("lim-waiter", limits=[TWO])
def waiter(ctx: Any) -> Any:
    return (yield Suspend("go"))


@flow("lim-rated", limits=[HOURLY])
def rated(ctx: Any) -> Any:
    return (yield Step("work", lambda: RAN.append(ctx.input["n"]) or ctx.input["n"]))


@flow("lim-fair", limits=[PER_CUSTOMER])
def fair(ctx: Any) -> Any:
    tag = f"{ctx.input['customer']}{ctx.input['n']}"
    return (yield Step("work", lambda: RAN.append(tag) or tag))


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def test_limit_and_rate_arguments_are_checked() -> None:
    with pytest.raises(InvalidValueError, match="neither concurrency nor rate"):
        Limit("lim-bad")
    with pytest.raises(InvalidValueError, match="'5 per min'"):
        Limit("lim-bad", rate="5 per min")
    with pytest.raises(InvalidValueError, match="Limit concurrency 0"):
        Limit("lim-bad", concurrency=0)
    with pytest.raises(InvalidTypeError, match="Limit key"):
        Limit("lim-bad", concurrency=1, key="customer")  # type: ignore[arg-type]
    assert Limit("lim-r", rate="500/min").rate == Rate(500, per="1m")
    assert Limit("lim-r2", rate="10/s").rate == Rate(10, per="1s")
    assert Rate(500, per="1m").interval == pytest.approx(0.12)
    assert Rate(500, per="1m", burst=5).size == 5


def test_two_limits_of_one_name_with_other_settings_are_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="other settings"):

        @flow("lim-clash", limits=[Limit("lim-one", concurrency=3)])
        def clash(ctx: Any) -> Any:
            yield Step("x", lambda: None)

    @flow("lim-same", limits=[Limit("lim-one", concurrency=1)])  # the same settings: one budget
    def same(ctx: Any) -> Any:
        yield Step("x", lambda: None)

    assert same.limits[0].name == "lim-one"


def test_a_flow_that_waits_holds_no_slot(store: Any) -> None:
    clock = store.clock
    ids = [sleeper.start(input={"n": n}, store=store).flow_id for n in range(3)]
    Worker(store, concurrency=4).run_once()
    # concurrency=1, yet all three ran to their hour-long sleep: a sleeper holds nothing
    assert sorted(RAN) == ["before 0", "before 1", "before 2"]
    assert [get_flow(i, store=store).status for i in ids] == ["suspended"] * 3
    assert [get_flow(i, store=store).blocked_by for i in ids] == [None] * 3
    clock.advance(3600)
    Worker(store, concurrency=4).run_once()
    assert [get_flow(i, store=store).status for i in ids] == ["completed"] * 3


def test_a_full_limit_blocks_the_next_flow_until_a_holder_parks(store: Any) -> None:
    now = store.clock.time()
    gate = make_gate(lambda name: waiter.limits)
    ids = [waiter.start(input=n, store=store).flow_id for n in range(3)]
    claimed = store.claim_due(now, 10, "w1", gate=gate)
    assert len(claimed) == 2  # two slots; the third is not claimed
    (left,) = set(ids) - {f.id for f in claimed}
    info = get_flow(left, store=store)
    assert (info.status, info.blocked_by) == ("pending", "limit lim-two")
    assert store.due(now + 1, 10) == []  # blocked: out of the due scan, no busy polling
    assert store.claim_due(now + 1, 10, "w2", gate=gate) == []
    # One holder parks (a wait): its slot goes back and the blocked flow is due.
    parked = Write(status="suspended", waiting_for="go", wait_kind="suspend")
    store.commit(claimed[0].id, "w1", now + 2, parked)
    assert get_flow(left, store=store).blocked_by is None
    assert [f.id for f in store.claim_due(now + 3, 10, "w2", gate=gate)] == [left]
    assert store.claim_due(now + 3, 10, "w3", gate=gate) == []  # two held again


def test_a_crashed_holders_slot_comes_back_when_its_lease_expires(store: Any) -> None:
    now = store.clock.time()
    gate = make_gate(lambda name: waiter.limits)
    ids = [waiter.start(input=n, store=store).flow_id for n in range(3)]
    held = {f.id for f in store.claim_due(now, 10, "crashed", gate=gate)}
    (left,) = set(ids) - held
    assert store.claim_due(now + 1, 10, "w2", gate=gate) == []  # leases live: slots held
    later = now + store.lease_ttl.total_seconds() + 1  # the crashed worker's leases lapsed
    # Its flows are due again and take the two slots back (each counts only while
    # its lease is live); the blocked one waits for a release, as before.
    assert {f.id for f in store.claim_due(later, 10, "w2", gate=gate)} == held
    parked = Write(status="suspended", waiting_for="go", wait_kind="suspend")
    store.commit(sorted(held)[0], "w2", later + 1, parked)
    assert [f.id for f in store.claim_due(later + 2, 10, "w3", gate=gate)] == [left]


def test_a_cancelled_holder_gives_its_slot_back(store: Any) -> None:
    from crux_gen import cancel_flow

    now = store.clock.time()
    gate = make_gate(lambda name: waiter.limits)
    ids = [waiter.start(input=n, store=store).flow_id for n in range(3)]
    held = [f.id for f in store.claim_due(now, 10, "w1", gate=gate)]
    (left,) = set(ids) - set(held)
    cancel_flow(held[0], "no longer needed", store=store)
    assert [f.id for f in store.claim_due(store.clock.time(), 10, "w2", gate=gate)] == [left]


def test_a_rate_lets_a_burst_through_then_one_per_interval(store: Any) -> None:
    clock = store.clock
    ids = [rated.start(input={"n": n}, store=store).flow_id for n in range(5)]
    Worker(store).run_once()
    assert len(RAN) == 2  # a burst of n=2 after an idle period
    blocked = [
        get_flow(i, store=store) for i in ids if get_flow(i, store=store).status == "pending"
    ]
    # the one tried since is blocked by the rate (the others were not tried yet)
    assert "rate lim-hourly" in {b.blocked_by for b in blocked}
    assert {b.blocked_by for b in blocked} <= {"rate lim-hourly", None}
    Worker(store).run_once()
    assert len(RAN) == 2  # nothing before its turn
    for expected in (3, 4, 5):  # one every 30 minutes after the burst
        clock.advance(1799)
        Worker(store).run_once()
        assert len(RAN) == expected - 1
        clock.advance(1)
        Worker(store).run_once()
        assert len(RAN) == expected
    # An hour of simulated time at most 2 + 2 starts: the rate held.
    assert sorted(RAN) == [0, 1, 2, 3, 4]


def test_due_flows_of_a_keyed_limit_are_taken_round_robin_across_keys(store: Any) -> None:
    for n in range(20):
        fair.start(input={"customer": "a", "n": n}, store=store)
    for n in range(3):
        fair.start(input={"customer": "b", "n": n}, store=store)
    Worker(store).run_once()
    assert len(RAN) == 23
    # b's three are done within the first six, not after a's twenty
    assert {"b0", "b1", "b2"} <= set(RAN[:6]), RAN


def test_round_robin_in_one_claim_and_a_key_blocks_only_its_own(store: Any) -> None:
    now = store.clock.time()
    gate = make_gate(lambda name: fair.limits)
    for customer, n in itertools.product("ab", range(3)):
        fair.start(input={"customer": customer, "n": n}, store=store, flow_id=f"{customer}{n}")
    claimed = [f.id for f in store.claim_due(now, 10, "w", gate=gate)]
    assert sorted(claimed) == ["a0", "b0"]  # one slot per customer
    assert get_flow("a1", store=store).blocked_by == "limit lim-customer key a"
    assert get_flow("b2", store=store).blocked_by == "limit lim-customer key b"


def test_a_signalled_flow_waiting_for_a_slot_is_blocked_not_polled(store: Any) -> None:
    ids = [waiter.start(input=n, store=store).flow_id for n in range(3)]
    Worker(store, concurrency=4).run_once()  # all three park on their Suspend
    assert [get_flow(i, store=store).status for i in ids] == ["suspended"] * 3
    now = store.clock.time()
    gate = make_gate(lambda name: waiter.limits)
    for i in ids:
        signal_flow(i, "go", i, store=store)
    first = [f.id for f in store.claim_due(now, 10, "w", gate=gate)]
    assert len(first) == 2
    (left,) = set(ids) - set(first)
    assert get_flow(left, store=store).blocked_by == "limit lim-two"
    assert store.due(now, 10) == []


def test_the_harness_honours_a_flows_limits(store: Any) -> None:
    from crux_gen.testing import FlowHarness

    first = FlowHarness(rated, input={"n": 1}, store=store)
    second = FlowHarness(rated, input={"n": 2}, store=store)
    third = FlowHarness(rated, input={"n": 3}, store=store)
    assert first.run().status == "completed" and second.run().status == "completed"
    assert third.run().status == "pending"  # a burst of 2 an hour: its turn has not come
    assert third.info.blocked_by == "rate lim-hourly" and third.steps_called == []
    third.advance("30m")
    assert third.run().status == "completed" and third.steps_called == ["work"]


def test_the_harness_takes_a_slot_only_while_its_flow_runs(store: Any) -> None:
    from crux_gen.testing import FlowHarness

    harnesses = [FlowHarness(sleeper, input={"n": n}, store=store) for n in range(3)]
    for h in harnesses:  # each runs to its sleep and lets go of the one slot
        assert h.run().status == "suspended"
    harnesses[0].advance("1h")
    assert [h.run().status for h in harnesses] == ["completed"] * 3


def test_migrate_copies_a_blocked_flow_due_and_no_slot(tmp_path: Any) -> None:
    from crux_gen import FakeClock, SQLiteStore
    from crux_gen.migrate import migrate
    from crux_gen.stores.memory import MemoryStore

    clock = FakeClock()
    source = MemoryStore(clock=clock)
    gate = make_gate(lambda name: waiter.limits)
    ids = [waiter.start(input=n, store=source).flow_id for n in range(3)]
    held = [f.id for f in source.claim_due(clock.time(), 10, "w", gate=gate)]
    (blocked,) = set(ids) - set(held)
    assert source.load(blocked).blocked_by == "limit lim-two"
    clock.advance(60)  # the workers stopped: their leases lapsed
    target = SQLiteStore(tmp_path / "to.db", clock=clock)
    assert migrate(source, target).flows == 3
    assert target.load(blocked).blocked_by is None  # no slot there: it arrives due
    assert len(target.claim_due(clock.time(), 10, "w3", gate=gate)) == 2  # two slots


def test_crux_gen_limits_and_list_show_the_limits_in_use(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from crux_gen import SQLiteStore

    from .test_cli_bulk import ok

    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    gate = make_gate(lambda name: waiter.limits)
    ids = [waiter.start(input=n, store=store).flow_id for n in range(3)]
    store.claim_due(store.clock.time(), 10, "w", gate=gate)
    out = ok(capsys, "limits", "--db", str(db))
    assert out.splitlines() == [
        "LIMIT           HELD  BLOCKED",
        "limit lim-two      2        1",
    ]
    assert json.loads(ok(capsys, "limits", "--db", str(db), "--json")) == [
        {"label": "limit lim-two", "held": 2, "blocked": 1}
    ]
    blocked = [i for i in ids if store.load(i).blocked_by]
    assert "blocked by limit" in ok(capsys, "list", "--db", str(db))  # (cut to fit)
    assert "limit lim-two" in ok(capsys, "show", blocked[0], "--db", str(db))
    store.close()
    empty = tmp_path / "empty.db"
    SQLiteStore(empty).close()
    assert (
        ok(capsys, "limits", "--db", str(empty))
        == "no limit in use: no slot held, no flow blocked\n"
    )


def test_the_dashboard_lists_the_limits_in_use_escaped(store: Any) -> None:
    from crux_gen.ui import make_app

    from .test_ui import call

    assert 'id="limits"' not in call(make_app(store)).text  # none in use: no section
    odd = Limit("<b>odd</b>", concurrency=1)
    gate = make_gate(lambda name: (odd,))
    for n in range(2):
        waiter.start(input=n, store=store)
    store.claim_due(store.clock.time(), 10, "w", gate=gate)
    page = call(make_app(store)).text
    row = '<tr class="limit"><td>limit &lt;b&gt;odd&lt;/b&gt;</td><td>1</td><td>1</td></tr>'
    assert 'id="limits"' in page and row in page


API = Limit("lim-api", concurrency=1)
CALLS: list[str] = []


@flow("lim-steps")
def steps(ctx: Any) -> Any:
    yield Step("free", lambda: CALLS.append(f"free {ctx.input}"))
    got = yield Step("api", lambda: CALLS.append(f"api {ctx.input}") or ctx.input, limits=[API])
    yield Sleep("after", "1h")
    return got


def test_a_step_limit_holds_a_slot_only_while_the_step_runs(store: Any) -> None:
    CALLS.clear()
    ids = [steps.start(input=n, store=store).flow_id for n in range(3)]
    worker = Worker(store, concurrency=4)
    worker.run_once()  # all three run at once; one takes the api slot, two park blocked
    assert len([c for c in CALLS if c.startswith("api")]) == 1
    blocked = [i for i in ids if get_flow(i, store=store).blocked_by == "limit lim-api"]
    assert len(blocked) == 1  # the slot's release made one of the two due again
    worker.run_once()
    worker.run_once()
    # each slot went back once its step's outcome was stored: every flow got past it
    assert sorted(c for c in CALLS if c.startswith("api")) == ["api 0", "api 1", "api 2"]
    assert [get_flow(i, store=store).status for i in ids] == ["suspended"] * 3
    assert store.limit_usage(store.clock.time()) == []


def test_a_step_that_finds_its_slot_full_parks_its_flow_holding_nothing(store: Any) -> None:
    CALLS.clear()
    first, second = (steps.start(input=n, store=store).flow_id for n in range(2))
    now = store.clock.time()
    # Another process holds the api slot: a flow of its own, claimed and mid-step.
    holder = waiter.start(input="x", store=store).flow_id
    store.claim(holder, "other", now)
    from crux_gen.limits import asks_for

    assert store.take_step(holder, "other", [("step 0", a) for a in asks_for([API], "x")], now)
    Worker(store, concurrency=4).run_once()
    assert sorted(CALLS) == ["free 0", "free 1"]  # neither called the limited step
    for flow_id in (first, second):
        info = get_flow(flow_id, store=store)
        assert info.blocked_by == "limit lim-api"
        assert store.load(flow_id).lease_owner is None  # it holds nothing
    assert store.due(now, 10) == []  # no polling while the slot is held
    store.give_back_step(holder, "step 0", now)  # the holder's step returned
    Worker(store, concurrency=4).run_once()
    assert sorted(c for c in CALLS if c.startswith("api")) == ["api 0", "api 1"]
    assert [get_flow(i, store=store).status for i in (first, second)] == ["suspended"] * 2
    assert CALLS.count("free 0") == 1 and CALLS.count("free 1") == 1  # replayed, not rerun


FLAKY: list[int] = []


@flow("lim-retried")
def retried(ctx: Any) -> Any:
    from crux_gen import Retry

    def call() -> str:
        FLAKY.append(len(store_usage(ctx)))
        if len(FLAKY) == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    return (yield Step("api", call, limits=[API], retry=Retry(3, backoff="fixed", delay="1s")))


USAGE: dict[str, Any] = {}


def store_usage(ctx: Any) -> list[Any]:
    """The limits in use seen from inside the step (the slot it holds)."""
    store = USAGE["store"]
    return list(store.limit_usage(store.clock.time()))


def test_each_attempt_of_a_limited_step_takes_the_slot_again(store: Any) -> None:
    FLAKY.clear()
    USAGE["store"] = store
    h = retried.start(input=None, store=store)
    worker = Worker(store)
    worker.run_once()
    store.clock.advance(2)
    worker.run_once()
    assert h.info().status == "completed" and len(FLAKY) == 2
    assert FLAKY == [1, 1]  # each attempt ran holding the one slot
    assert store.limit_usage(store.clock.time()) == []  # and gave it back


def test_flow_run_takes_its_flows_slot_like_a_worker(store: Any) -> None:
    """Limits are global: a flow's own limit holds for ``Flow.run`` in the caller's
    process too. The run takes the slot at its claim and gives it back when it parks;
    a run that finds the slot taken runs nothing and returns the flow pending,
    blocked, due again (for a worker) once the slot frees."""
    clock = store.clock
    first = sleeper.run(input={"n": 1}, store=store)
    assert first.status == "suspended"  # ran to its sleep: it holds no slot now
    second = sleeper.run(input={"n": 2}, store=store)
    assert second.status == "suspended"
    assert RAN == ["before 1", "before 2"]
    # A slot held by another (a worker's claim that has not parked): Flow.run waits.
    gate = make_gate(lambda name: waiter.limits)
    held = [waiter.start(input=n, store=store).flow_id for n in range(2)]
    assert len(store.claim_due(clock.time(), 10, "w1", gate=gate)) == 2
    blocked = waiter.run(input=3, store=store)
    assert blocked.status == "pending"
    info = get_flow(blocked.flow_id, store=store)
    assert info.blocked_by == "limit lim-two"
    assert info.history == ()  # nothing of it ran
    parked = Write(status="suspended", waiting_for="go", wait_kind="suspend")
    store.commit(held[0], "w1", clock.time(), parked)
    assert get_flow(blocked.flow_id, store=store).blocked_by is None
    Worker(store, flows=[waiter], concurrency=2).run_once()
    assert get_flow(blocked.flow_id, store=store).status == "suspended"  # ran to its wait


SOLO = Limit("lim-solo", concurrency=1)
OTHER = Limit("lim-other", concurrency=1)
#: What each step of ``chain`` saw held while it ran (the test sets ``CHAIN_USAGE[0]``).
CHAIN_SEEN: list[tuple[str, list[Any]]] = []
CHAIN_USAGE: list[Any] = [lambda: []]


@flow("lim-chain")
def chain(ctx: Any) -> Any:
    """Limited steps one after another: the slot passes from each to the next in the
    write between them (same limit), or goes back and is taken afresh (another)."""
    seen = CHAIN_SEEN.append
    for i, limit in enumerate([SOLO, SOLO, SOLO, OTHER, SOLO]):
        yield Step(f"c{i}", lambda i=i: seen((f"c{i}", CHAIN_USAGE[0]())), limits=[limit])
    return "done"


def test_a_slot_passed_from_step_to_step_is_held_once_and_given_back_at_the_end(
    store: Any,
) -> None:
    CHAIN_SEEN.clear()
    in_use = store.limit_usage
    CHAIN_USAGE[0] = lambda: [(u.label, u.held) for u in in_use(store.clock.time()) if u.held]
    flow_id = chain.start(store=store).flow_id
    Worker(store, flows=[chain], concurrency=1).run_once()
    assert get_flow(flow_id, store=store).status == "completed"
    assert [name for name, _ in CHAIN_SEEN] == ["c0", "c1", "c2", "c3", "c4"]
    limits = ["limit lim-solo"] * 3 + ["limit lim-other", "limit lim-solo"]
    for (name, held), limit in zip(CHAIN_SEEN, limits, strict=True):
        assert held == [(limit, 1)], (name, held)  # its own slot, held once, no other
    assert store.limit_usage(store.clock.time()) == []  # nothing left held
    # and the limit is free for the next flow
    second = chain.start(store=store).flow_id
    Worker(store, flows=[chain], concurrency=1).run_once()
    assert get_flow(second, store=store).status == "completed"
