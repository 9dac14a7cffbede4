"""Composing flows, on every store: ``All``, ``Any``, ``Child``, ``Version``,
``ContinueAsNew``, ``ctx.set_custom_status`` and ``Sleep(until=)`` — what ran, how
many times, what was stored, what a replay returns, what error is raised.

Scenarios follow Azure Durable Functions' orchestrator tests (fan-out/fan-in,
``task_any`` with a timer, sub-orchestrators, continue-as-new, custom status) and
DBOS's (child workflows, patching).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from crux_gen import (
    All,
    AnyResult,
    Child,
    ChildFlowError,
    ContinueAsNew,
    FlowContext,
    InvalidTypeError,
    InvalidValueError,
    NonDeterminismError,
    Retry,
    SerializationError,
    Sleep,
    Step,
    Suspend,
    Version,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen import Any as AnyOf
from crux_gen.clock import FakeClock
from crux_gen.testing import FlowHarness
from crux_gen.worker import Worker


class Calls:
    """How many times each side effect ran (thread-safe)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, name: str, value: Any = None) -> Any:
        with self._lock:
            self.counts[name] += 1
        return value


# -- Sleep(until=) ---------------------------------------------------------------------


def test_sleep_until_a_moment_parks_until_then(store: Any, clock: FakeClock) -> None:
    monday = clock.now() + timedelta(days=3)

    @flow("c-until")
    def weekly(ctx: FlowContext) -> Any:
        yield Sleep("monday-9am", until=monday)
        return (yield Step("report", lambda: "sent"))

    r = weekly.run(store=store)
    assert (r.status, r.waiting_for, r.wake_at) == ("suspended", "monday-9am", monday)
    clock.advance("2d")
    assert resume(r.flow_id, store=store).status == "suspended"
    clock.advance("1d")
    assert resume(r.flow_id, store=store).value == "sent"


def test_sleep_until_a_moment_already_past_resolves_at_once(store: Any, clock: FakeClock) -> None:
    @flow("c-past")
    def late(ctx: FlowContext) -> Any:
        yield Sleep("already", until=datetime(2020, 1, 1, tzinfo=timezone.utc))
        return "on"

    assert late.run(store=store).value == "on"


def test_sleep_refuses_a_naive_datetime_and_wants_one_of_duration_or_until() -> None:
    with pytest.raises(InvalidValueError, match="naive datetime"):
        Sleep("x", until=datetime(2026, 12, 7, 9, 0))
    with pytest.raises(InvalidTypeError, match="Sleep until"):
        Sleep("x", until="2026-12-07")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="exactly one"):
        Sleep("x")
    with pytest.raises(InvalidValueError, match="exactly one"):
        Sleep("x", "1h", until=datetime(2026, 12, 7, tzinfo=timezone.utc))
    assert Sleep("x", "1h").duration == timedelta(hours=1)


# -- Version -----------------------------------------------------------------------------


def test_version_gives_new_flows_latest_and_replays_the_recorded_value(store: Any) -> None:
    seen: list[int] = []

    @flow("c-version")
    def priced(ctx: FlowContext) -> Any:
        v = yield Version("new-pricing", latest=2)
        seen.append(v)
        yield Suspend("go")
        return "new" if v >= 2 else "old"

    r = priced.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).value == "new"
    assert seen == [2, 2]  # the first run, then the replay
    history = get_flow(r.flow_id, store=store).history
    assert next((h.kind, h.name, h.result) for h in history) == ("version", "new-pricing", 2)


def test_a_flow_that_recorded_an_older_version_keeps_its_branch(store: Any) -> None:
    @flow("c-pricing")
    def v1(ctx: FlowContext) -> Any:
        v = yield Version("pricing", latest=1)
        yield Suspend("go")
        return f"v{v}"

    r = v1.run(store=store)

    @flow("c-pricing")
    def v2(ctx: FlowContext) -> Any:
        v = yield Version("pricing", latest=2)
        yield Suspend("go")
        return f"v{v}"

    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store, flows=[v2]).value == "v1"
    assert v2.run(store=store).status == "suspended"  # a new flow records 2


def test_a_flow_that_passed_the_point_before_the_version_line_existed_replays_as_0(
    store: Any,
) -> None:
    calls = Calls()

    @flow("c-patch")
    def before(ctx: FlowContext) -> Any:
        yield Step("charge", lambda: calls("charge", 10))
        yield Suspend("go")
        return (yield Step("ship", lambda: calls("ship-old", "old")))

    r = before.run(store=store)

    @flow("c-patch")
    def after(ctx: FlowContext) -> Any:
        yield Step("charge", lambda: calls("charge", 10))
        if (yield Version("new-shipping", latest=1)) >= 1:
            yield Step("notify", lambda: calls("notify"))
            return (yield Step("ship", lambda: calls("ship-new", "new")))
        yield Suspend("go")
        return (yield Step("ship", lambda: calls("ship-old", "old")))

    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store, flows=[after]).value == "old"
    assert calls.counts == Counter({"charge": 1, "ship-old": 1})
    kinds = [h.kind for h in get_flow(r.flow_id, store=store).history]
    assert kinds == ["step", "suspend", "step"]  # the Version took no position
    assert after.run(store=store).value == "new"


def test_version_refuses_a_latest_below_1() -> None:
    with pytest.raises(InvalidValueError, match="Version latest"):
        Version("x", latest=0)
    with pytest.raises(InvalidTypeError, match="Version latest"):
        Version("x", latest="2")  # type: ignore[arg-type]


# -- All ---------------------------------------------------------------------------------


def test_all_runs_its_steps_at_the_same_time_and_returns_values_in_order(store: Any) -> None:
    barrier = threading.Barrier(4, timeout=20)

    def resize(n: int) -> int:
        barrier.wait()  # passes only when all four run at once
        return n * 10

    @flow("c-fan-out")
    def fan_out(ctx: FlowContext) -> Any:
        sizes = yield All([Step(f"resize-{n}", lambda n=n: resize(n)) for n in range(4)])
        return sum(sizes), sizes

    r = fan_out.run(store=store)
    assert r.value == [60, [0, 10, 20, 30]]
    history = get_flow(r.flow_id, store=store).history
    assert [(h.kind, h.name, h.state) for h in history] == [
        ("all", "step:resize-0|step:resize-1|step:resize-2|step:resize-3", "completed"),
        *[("step", f"resize-{n}", "completed") for n in range(4)],
    ]


def test_one_failing_branch_lets_the_others_finish_and_the_first_failure_is_thrown(
    store: Any,
) -> None:
    calls = Calls()

    def boom(n: int) -> Any:
        calls(f"b{n}")
        raise ValueError(f"bad {n}")

    @flow("c-fan-fail")
    def fan(ctx: FlowContext) -> Any:
        try:
            yield All(
                [
                    Step("ok-0", lambda: calls("ok-0", 0)),
                    Step("bad-1", lambda: boom(1)),
                    Step("ok-2", lambda: calls("ok-2", 2)),
                    Step("bad-3", lambda: boom(3)),
                ]
            )
        except ValueError as exc:
            return f"caught {exc}"
        return "no"

    r = fan.run(store=store)
    assert r.value == "caught bad 1"
    assert calls.counts == Counter({"ok-0": 1, "b1": 1, "ok-2": 1, "b3": 1})
    states = [h.state for h in get_flow(r.flow_id, store=store).history]
    assert states == ["completed", "completed", "failed", "completed", "failed"]
    # A replay throws the same (rebuilt) failure without running anything.
    assert resume(r.flow_id, store=store).value == "caught bad 1"
    assert sum(calls.counts.values()) == 4


def test_a_run_cut_short_mid_all_reruns_only_the_unfinished_branches(store: Any) -> None:
    calls = Calls()
    crash = threading.Event()
    crash.set()

    def flaky() -> str:
        calls("flaky")
        if crash.is_set():
            raise SystemExit("the process dies here")
        return "late"

    @flow("c-fan-crash")
    def fan(ctx: FlowContext) -> Any:
        return (
            yield All(
                [
                    Step("a", lambda: calls("a", "A")),
                    Step("b", flaky),
                    Step("c", lambda: calls("c", "C")),
                ]
            )
        )

    with pytest.raises(SystemExit):
        fan.run(store=store, flow_id="crashy")
    stored = store.load("crashy")
    assert stored.lease_owner is None and stored.status == "running"
    assert {r.name: r.state for r in stored.records} == {
        "step:a|step:b|step:c": "waiting", "a": "completed", "b": "waiting", "c": "completed",
    }  # fmt: skip
    crash.clear()
    assert resume("crashy", store=store).value == ["A", "late", "C"]
    assert calls.counts == Counter({"a": 1, "c": 1, "flaky": 2})


def test_a_retried_branch_with_a_long_backoff_parks_the_flow_and_only_it_runs_again(
    store: Any, clock: FakeClock
) -> None:
    calls = Calls()

    def once_broken() -> str:
        calls("flaky")
        if calls.counts["flaky"] == 1:
            raise ConnectionError("down")
        return "up"

    @flow("c-fan-retry")
    def fan(ctx: FlowContext) -> Any:
        return (
            yield All(
                [
                    Step("flaky", once_broken, retry=Retry(attempts=2, delay="1h")),
                    Step("fine", lambda: calls("fine", "ok")),
                ]
            )
        )

    r = fan.run(store=store)
    assert r.status == "suspended" and r.wake_at is not None
    clock.advance("61m")
    assert resume(r.flow_id, store=store).value == ["up", "ok"]
    assert calls.counts == Counter({"flaky": 2, "fine": 1})


def test_a_changed_all_list_is_a_non_determinism_error_naming_both_lists(store: Any) -> None:
    @flow("c-fan-change")
    def first(ctx: FlowContext) -> Any:
        yield All([Step("a", lambda: 1), Step("b", lambda: 2)])
        yield Suspend("go")

    r = first.run(store=store)

    @flow("c-fan-change")
    def second(ctx: FlowContext) -> Any:
        yield All([Step("a", lambda: 1), Step("c", lambda: 2)])
        yield Suspend("go")

    with pytest.raises(NonDeterminismError) as caught:
        resume(r.flow_id, store=store, flows=[second])
    text = str(caught.value)
    assert "All([Step('a'), Step('b')])" in text and "All([Step('a'), Step('c')])" in text


def test_all_refuses_what_is_not_a_step_or_a_child() -> None:
    with pytest.raises(InvalidTypeError, match="All commands item"):
        All([Step("a", lambda: 1), Suspend("x")])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="All commands"):
        All(Step("a", lambda: 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="at least one"):
        AnyOf([])


# -- Any ---------------------------------------------------------------------------------


def approval_flow() -> Any:
    @flow("c-approval")
    def approval(ctx: FlowContext) -> Any:
        reminders = 0
        while True:
            winner = yield AnyOf(
                [Suspend("approved"), Suspend("rejected"), Sleep(f"remind-{reminders}", "1d")]
            )
            if winner.name.startswith("remind"):
                reminders += 1
                yield Step(f"send-reminder-{reminders}", lambda: "sent")
                continue
            return {"by": winner.name, "value": winner.value, "reminders": reminders}

    return approval


def test_any_returns_the_first_signal_and_leaves_the_others_pending(store: Any) -> None:
    approval = approval_flow()
    r = approval.run(store=store)
    assert r.status == "suspended"
    signal_flow(r.flow_id, "rejected", {"why": "budget"}, store=store)
    signal_flow(r.flow_id, "approved", {"who": "ada"}, store=store)
    done = resume(r.flow_id, store=store)
    assert done.value == {"by": "rejected", "value": {"why": "budget"}, "reminders": 0}
    info = get_flow(r.flow_id, store=store)
    assert [(s.name, s.state) for s in info.signals] == [
        ("rejected", "consumed"),
        ("approved", "unused"),
    ]
    record = info.history[0]
    assert (record.kind, record.result) == (
        "any",
        {"index": 1, "name": "rejected", "value": {"why": "budget"}},
    )


def test_any_with_a_timer_returns_to_the_flow_instead_of_expiring(
    store: Any, clock: FakeClock
) -> None:
    approval = approval_flow()
    r = approval.run(store=store)
    clock.advance("25h")
    again = resume(r.flow_id, store=store)
    assert again.status == "suspended"  # the reminder went out; it waits again
    clock.advance("2h")
    signal_flow(r.flow_id, "approved", "yes", store=store)
    assert resume(r.flow_id, store=store).value == {
        "by": "approved",
        "value": "yes",
        "reminders": 1,
    }
    history = get_flow(r.flow_id, store=store).history
    assert [h.name for h in history][1] == "send-reminder-1"


def test_the_first_event_by_the_stores_clock_wins(store: Any, clock: FakeClock) -> None:
    """The timer was up an hour before the signal came: the timer wins, although
    both are there when the flow runs again; the signal then wins the next Any."""
    approval = approval_flow()
    r = approval.run(store=store)
    clock.advance("25h")
    signal_flow(r.flow_id, "approved", "late", store=store)
    assert resume(r.flow_id, store=store).value == {
        "by": "approved", "value": "late", "reminders": 1,
    }  # fmt: skip
    history = get_flow(r.flow_id, store=store).history
    assert [(h.kind, h.state) for h in history] == [
        ("any", "completed"), ("step", "completed"), ("any", "completed"),
    ]  # fmt: skip
    assert history[0].result["name"] == "remind-0"
    assert history[2].result["name"] == "approved"


def test_signals_sent_at_the_same_moment_win_in_the_order_sent(store: Any) -> None:
    approval = approval_flow()
    r = approval.run(store=store)
    signal_flow(r.flow_id, "rejected", {"why": "budget"}, store=store)
    signal_flow(r.flow_id, "approved", {"who": "ada"}, store=store)  # same clock reading
    assert resume(r.flow_id, store=store).value["by"] == "rejected"


def test_an_any_replays_the_same_winner(store: Any) -> None:
    approval = approval_flow()

    @flow("c-approval-wrap")
    def twice(ctx: FlowContext) -> Any:
        winner = yield AnyOf([Suspend("approved"), Suspend("rejected")])
        assert isinstance(winner, AnyResult)
        yield Suspend("continue")
        return [winner.index, winner.name, winner.value]

    r = twice.run(store=store)
    signal_flow(r.flow_id, "approved", 1, store=store)
    assert resume(r.flow_id, store=store).status == "suspended"
    signal_flow(r.flow_id, "rejected", 2, store=store)
    signal_flow(r.flow_id, "continue", None, store=store)
    assert resume(r.flow_id, store=store).value == [0, "approved", 1]
    assert approval.name == "c-approval"


def test_a_signal_that_fits_no_schema_is_rejected_and_the_any_waits_on(store: Any) -> None:
    @flow("c-any-schema")
    def typed(ctx: FlowContext) -> Any:
        winner = yield AnyOf([Suspend("count", schema=int), Sleep("t", "1d")])
        return winner.value

    r = typed.run(store=store)
    signal_flow(r.flow_id, "count", "not a number", store=store)
    assert resume(r.flow_id, store=store).status == "suspended"
    signal_flow(r.flow_id, "count", 7, store=store)
    assert resume(r.flow_id, store=store).value == 7
    states = [s.state for s in get_flow(r.flow_id, store=store).signals]
    assert states == ["rejected", "consumed"]


def test_a_worker_wakes_an_any_on_any_of_its_signals(store: Any) -> None:
    approval = approval_flow()
    r = approval.run(store=store)
    worker = Worker(store, [approval])
    assert worker.run_once() == 0
    signal_flow(r.flow_id, "approved", "ok", store=store)
    assert worker.run_once() == 1
    assert get_flow(r.flow_id, store=store).value["by"] == "approved"


def test_a_changed_any_branch_set_is_a_non_determinism_error(store: Any) -> None:
    @flow("c-any-change")
    def first(ctx: FlowContext) -> Any:
        yield AnyOf([Suspend("a"), Suspend("b")])
        yield Suspend("go")

    r = first.run(store=store)
    signal_flow(r.flow_id, "a", None, store=store)
    resume(r.flow_id, store=store)

    @flow("c-any-change")
    def second(ctx: FlowContext) -> Any:
        yield AnyOf([Suspend("a"), Sleep("b", "1h")])
        yield Suspend("go")

    with pytest.raises(NonDeterminismError, match=r"Any\(\[Suspend\('a'\), Sleep\('b'\)\]\)"):
        resume(r.flow_id, store=store, flows=[second])


def test_any_refuses_a_suspend_timeout_and_non_waits() -> None:
    with pytest.raises(InvalidValueError, match="add a Sleep branch"):
        AnyOf([Suspend("x", timeout="1h")])
    with pytest.raises(InvalidTypeError, match="Any commands item"):
        AnyOf([Step("a", lambda: 1)])  # type: ignore[list-item]


# -- Child -------------------------------------------------------------------------------


def child_flows(calls: Calls) -> tuple[Any, Any]:
    @flow("c-provision")
    def provision(ctx: FlowContext) -> Any:
        account = yield Step("create-account", lambda: calls("create", f"acct-{ctx.input['user']}"))
        if ctx.input.get("wait"):
            yield Suspend("ready")
        if ctx.input.get("fail"):
            yield Step("explode", lambda: 1 / 0)
        return account

    @flow("c-onboard")
    def onboard(ctx: FlowContext) -> Any:
        try:
            account = yield Child(provision, input=ctx.input)
        except ChildFlowError as exc:
            return {"failed": exc.status, "child": exc.flow_id, "type": exc.error.type}
        return (yield Step("welcome", lambda: calls("welcome", f"hello {account}")))

    return provision, onboard


def test_a_child_flow_runs_and_its_value_comes_back(store: Any) -> None:
    calls = Calls()
    _provision, onboard = child_flows(calls)
    r = onboard.run(input={"user": "ada"}, store=store)
    assert r.value == "hello acct-ada"
    parent = get_flow(r.flow_id, store=store)
    [child_id] = parent.children
    child = get_flow(child_id, store=store)
    assert (child.name, child.status, child.parent_id, child.value) == (
        "c-provision", "completed", r.flow_id, "acct-ada",
    )  # fmt: skip
    assert len(child_id) == 32  # a fresh unguessable id
    assert resume(r.flow_id, store=store).value == "hello acct-ada"  # replay: no second child
    assert get_flow(r.flow_id, store=store).children == (child_id,)
    assert calls.counts == Counter({"create": 1, "welcome": 1})


def test_a_failing_child_raises_child_flow_error_which_replays_the_same(store: Any) -> None:
    calls = Calls()
    _provision, onboard = child_flows(calls)
    r = onboard.run(input={"user": "bob", "fail": True}, store=store)
    [child_id] = get_flow(r.flow_id, store=store).children
    assert r.value == {"failed": "failed", "child": child_id, "type": "builtins.ZeroDivisionError"}
    assert resume(r.flow_id, store=store).value == r.value


def test_a_waiting_child_parks_its_parent_which_is_due_as_soon_as_the_child_ends(
    store: Any,
) -> None:
    calls = Calls()
    provision, onboard = child_flows(calls)
    r = onboard.run(input={"user": "cy", "wait": True}, store=store)
    assert r.status == "suspended"
    [child_id] = get_flow(r.flow_id, store=store).children
    assert get_flow(child_id, store=store).status == "suspended"
    now = store.clock.time()
    assert store.due(now, 10) == []
    signal_flow(child_id, "ready", None, store=store)
    assert resume(child_id, store=store, flows=[provision]).value == "acct-cy"
    assert store.due(store.clock.time(), 10) == [r.flow_id]  # no poll needed
    assert resume(r.flow_id, store=store, flows=[onboard]).value == "hello acct-cy"
    assert calls.counts == Counter({"create": 1, "welcome": 1})


def test_a_worker_runs_a_parent_and_its_waiting_child_to_the_end(store: Any) -> None:
    calls = Calls()
    provision, onboard = child_flows(calls)
    r = onboard.run(input={"user": "di", "wait": True}, store=store)
    [child_id] = get_flow(r.flow_id, store=store).children
    signal_flow(child_id, "ready", None, store=store)
    worker = Worker(store, [provision, onboard])
    worker.run_once()
    worker.run_once()
    assert get_flow(r.flow_id, store=store).value == "hello acct-di"


def test_cancelling_a_parent_cancels_its_unfinished_children(store: Any) -> None:
    calls = Calls()
    _provision, onboard = child_flows(calls)
    r = onboard.run(input={"user": "ed", "wait": True}, store=store)
    [child_id] = get_flow(r.flow_id, store=store).children
    assert cancel_flow(r.flow_id, "user left", store=store) is True
    child = get_flow(child_id, store=store)
    assert child.status == "cancelled" and "user left" in (child.cancel_reason or "")


def test_a_child_with_a_given_id(store: Any) -> None:
    calls = Calls()
    provision, _ = child_flows(calls)

    @flow("c-named-child")
    def parent(ctx: FlowContext) -> Any:
        return (yield Child(provision, input={"user": "fi"}, flow_id="provision-fi"))

    r = parent.run(store=store)
    assert r.value == "acct-fi"
    assert get_flow("provision-fi", store=store).parent_id == r.flow_id


def test_child_refuses_what_is_not_a_flow() -> None:
    with pytest.raises(InvalidTypeError, match="Child flow"):
        Child(lambda ctx: None)  # type: ignore[arg-type]


# -- ContinueAsNew -----------------------------------------------------------------------


def test_continue_as_new_starts_the_same_flow_afresh_with_a_bounded_history(
    store: Any, store_kind: str
) -> None:
    # 10,000 runs; on PostgreSQL 1,000 (each run is a few round trips: 10,000 would
    # add ~30 s to the suite, and the bound is the same code path).
    iterations = 10_000 if store_kind != "postgres" else 1_000
    calls = Calls()

    @flow("c-poller")
    def poller(ctx: FlowContext) -> Any:
        n = ctx.input["n"]
        seen = yield Step("poll", lambda: calls("poll", n))
        if seen + 1 >= iterations:
            return seen + 1
        yield ContinueAsNew(input={"n": n + 1})

    r = poller.run(input={"n": 0}, store=store)
    assert r.value == iterations
    info = get_flow(r.flow_id, store=store)
    assert info.run == iterations
    assert [(h.kind, h.name) for h in info.history] == [("step", "poll")]  # one run's worth
    assert info.input == {"n": iterations - 1}
    assert calls.counts == Counter({"poll": iterations})


def test_pending_signals_carry_over_to_the_next_run(store: Any) -> None:
    @flow("c-inbox")
    def inbox(ctx: FlowContext) -> Any:
        got = yield Suspend("message")
        if ctx.input["count"] + 1 < 3:
            yield ContinueAsNew(input={"count": ctx.input["count"] + 1, "last": got})
        return got

    r = inbox.run(input={"count": 0}, store=store)
    for text in ("a", "b", "c"):
        signal_flow(r.flow_id, "message", text, store=store)
    assert resume(r.flow_id, store=store).value == "c"
    assert get_flow(r.flow_id, store=store).run == 3


# -- custom status ---------------------------------------------------------------------------


def test_custom_status_is_readable_without_running_the_flow(store: Any) -> None:
    @flow("c-progress")
    def progress(ctx: FlowContext) -> Any:
        for i in range(3):
            yield Step(f"part-{i}", lambda i=i: i)
            ctx.set_custom_status({"done": i + 1, "of": 3})
        yield Suspend("go")
        ctx.set_custom_status("finishing")
        return "ok"

    r = progress.run(store=store)
    assert get_flow(r.flow_id, store=store).custom_status == {"done": 3, "of": 3}
    signal_flow(r.flow_id, "go", None, store=store)
    resume(r.flow_id, store=store)
    assert get_flow(r.flow_id, store=store).custom_status == "finishing"


def test_a_custom_status_json_cannot_hold_is_refused_at_the_call(store: Any) -> None:
    @flow("c-bad-status")
    def bad(ctx: FlowContext) -> Any:
        try:
            ctx.set_custom_status({"lock": threading.Lock()})
        except SerializationError:
            return "refused"
        return "kept"
        yield  # a generator

    assert bad.run(store=store).value == "refused"


# -- the harness -------------------------------------------------------------------------


def test_the_harness_runs_every_command_and_fakes_steps_of_children_too() -> None:
    calls = Calls()
    _provision, onboard = child_flows(calls)
    h = FlowHarness(onboard, input={"user": "gu"}, fakes={"create-account": "acct-fake"})
    assert h.run().value == "hello acct-fake"
    assert h.steps_called == ["create-account", "welcome"]
    assert len(h.children) == 1

    a = FlowHarness(approval_flow())
    a.run()
    a.advance("25h")
    a.run()
    a.signal("approved", "fine")
    assert a.run().value == {"by": "approved", "value": "fine", "reminders": 1}
    assert a.steps_called == ["send-reminder-1"]


def test_the_harness_runs_all_version_continue_as_new_and_custom_status() -> None:
    @flow("c-harness-mix")
    def mix(ctx: FlowContext) -> Any:
        ctx.set_custom_status({"round": ctx.input})
        parts = yield All([Step("left", lambda: 1), Step("right", lambda: 2)])
        v = yield Version("mix", latest=3)
        if ctx.input < 2:
            yield ContinueAsNew(input=ctx.input + 1)
        yield Sleep("until", until=datetime(2030, 1, 1, tzinfo=timezone.utc))
        return [parts, v]

    h = FlowHarness(mix, input=0, fakes={"right": 20})
    r = h.run()
    assert r.status == "suspended" and h.info.run == 3
    assert h.custom_status == {"round": 2}
    assert h.steps_called.count("left") == 3 and h.steps_called.count("right") == 3
    h.advance(datetime(2030, 1, 2, tzinfo=timezone.utc) - h.now)
    assert h.run().value == [[1, 20], 3]


def test_flow_run_concurrency_must_be_a_positive_int(store: Any) -> None:
    @flow("c-threads")
    def threads(ctx: FlowContext) -> Any:
        return (yield All([Step("a", lambda: 1), Step("b", lambda: 2)]))

    with pytest.raises(InvalidValueError, match=r"Flow\.run concurrency"):
        threads.run(store=store, concurrency=0)
    with pytest.raises(InvalidTypeError, match=r"Flow\.run concurrency"):
        threads.run(store=store, concurrency="2")  # type: ignore[arg-type]
    assert threads.run(store=store, concurrency=1).value == [1, 2]  # one at a time


def test_an_input_json_cannot_hold_fails_the_child_or_continue_as_new_at_its_yield(
    store: Any,
) -> None:
    calls = Calls()
    provision, _ = child_flows(calls)

    @flow("c-bad-inputs")
    def bad_inputs(ctx: FlowContext) -> Any:
        caught = []
        for command in (
            Child(provision, input={"lock": threading.Lock()}),
            AnyOf([Child(provision, input=threading.Lock()), Sleep("t", "1h")]),
            ContinueAsNew(input=threading.Lock()),
        ):
            try:
                yield command
            except SerializationError:
                caught.append(command.kind)
        return caught

    r = bad_inputs.run(store=store)
    assert r.value == ["child", "any", "continue_as_new"]
    info = get_flow(r.flow_id, store=store)
    assert [(h.kind, h.state) for h in info.history] == [
        ("child", "failed"), ("any", "failed"), ("continue_as_new", "failed"),
    ]  # fmt: skip
    assert info.children == () and info.run == 1
    assert resume(r.flow_id, store=store).value == r.value  # the same on replay


def test_all_with_children_and_steps_waits_for_every_child(store: Any) -> None:
    calls = Calls()
    provision, _ = child_flows(calls)

    @flow("c-fan-children")
    def fan(ctx: FlowContext) -> Any:
        return (
            yield All(
                [
                    Child(provision, input={"user": "quick"}),
                    Step("local", lambda: calls("local", "here")),
                    Child(provision, input={"user": "slow", "wait": True}),
                ]
            )
        )

    r = fan.run(store=store)
    assert r.status == "suspended"  # one child waits for its signal
    info = get_flow(r.flow_id, store=store)
    assert len(info.children) == 2
    waiting = [c for c in info.children if get_flow(c, store=store).status == "suspended"]
    [slow] = waiting
    assert store.due(store.clock.time(), 10) == []
    signal_flow(slow, "ready", None, store=store)
    assert resume(slow, store=store).value == "acct-slow"
    assert store.due(store.clock.time(), 10) == [r.flow_id]
    assert resume(r.flow_id, store=store).value == ["acct-quick", "here", "acct-slow"]
    assert calls.counts == Counter({"create": 2, "local": 1})


def test_a_child_that_wins_an_any_gives_its_value_and_losers_can_be_cancelled(
    store: Any, clock: FakeClock
) -> None:
    calls = Calls()
    provision, _ = child_flows(calls)

    @flow("c-race-children")
    def race(ctx: FlowContext) -> Any:
        winner = yield AnyOf(
            [
                Child(provision, input={"user": "a", "wait": True}),
                Child(provision, input={"user": "b", "wait": True}),
                Sleep("too-late", "1d"),
            ],
            cancel_losers=True,
        )
        return [winner.index, winner.name, winner.value]

    r = race.run(store=store)
    assert r.status == "suspended"
    by_user = {
        get_flow(c, store=store).input["user"]: c for c in get_flow(r.flow_id, store=store).children
    }
    first, second = by_user["a"], by_user["b"]
    signal_flow(second, "ready", None, store=store)
    resume(second, store=store)
    assert store.due(store.clock.time(), 10) == [r.flow_id]
    done = resume(r.flow_id, store=store)
    assert done.value == [1, "c-provision", "acct-b"]
    loser = get_flow(first, store=store)
    assert loser.status == "cancelled" and r.flow_id in (loser.cancel_reason or "")


def test_a_failing_child_in_an_any_is_thrown_at_the_yield(store: Any) -> None:
    calls = Calls()
    provision, _ = child_flows(calls)

    @flow("c-any-fail")
    def risky(ctx: FlowContext) -> Any:
        try:
            yield AnyOf([Child(provision, input={"user": "x", "fail": True}), Suspend("skip")])
        except ChildFlowError as exc:
            return exc.status
        return "no"

    assert risky.run(store=store).value == "failed"


def test_a_concurrent_worker_runs_alls_and_children_of_many_flows(store: Any) -> None:
    calls = Calls()
    provision, onboard = child_flows(calls)

    @flow("c-worker-mix")
    def mix(ctx: FlowContext) -> Any:
        parts = yield All([Step(f"p{i}", lambda i=i: calls(f"p{i}", i)) for i in range(3)])
        made = yield Child(provision, input={"user": ctx.input})
        return [sum(parts), made]

    ids = [mix.run(store=store, input=f"u{n}", concurrency=2).flow_id for n in range(4)]
    assert {get_flow(i, store=store).value[1] for i in ids} == {f"acct-u{n}" for n in range(4)}
    waiting = [onboard.run(input={"user": f"w{n}", "wait": True}, store=store) for n in range(6)]
    for r in waiting:
        [child] = get_flow(r.flow_id, store=store).children
        signal_flow(child, "ready", None, store=store)
    worker = Worker(store, [provision, onboard, mix], concurrency=4)
    worker.run_once()  # the children finish, which makes their parents due
    worker.run_once()
    assert {get_flow(r.flow_id, store=store).value for r in waiting} == {
        f"hello acct-w{n}" for n in range(6)
    }
    assert calls.counts["create"] == 10 and calls.counts["welcome"] == 6
