"""What a user relies on when running flows, on every store, with a fake clock."""

from __future__ import annotations

import contextlib
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from crux_gen import (
    CruxError,
    FakeClock,
    FlowBusyError,
    FlowClosedError,
    FlowContext,
    FlowNameConflictError,
    FlowNotFoundError,
    FlowNotRegisteredError,
    NonDeterminismError,
    ParkingWarning,
    Retry,
    SerializationError,
    Sleep,
    Status,
    Step,
    StepFailedError,
    Suspend,
    WaitUntil,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)


@attrs.frozen
class EmailVerified:
    verified_at: str


class Calls:
    """Counts how many times each side effect ran."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: list[Any] = []

    def __call__(self, name: str, value: Any = None) -> Any:
        self.names.append(name)
        self.values.append(value)
        return value

    def count(self, name: str) -> int:
        return self.names.count(name)


def onboarding_flow(calls: Calls, name: str = "onboarding") -> Any:
    @flow(name)
    def onboarding(ctx: FlowContext) -> Any:
        yield Step("send-welcome", lambda: calls("send-welcome", {"to": ctx.input["email"]}))
        verification = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")
        calls("after-suspend", verification)
        plan = yield Step(
            "first-week-plan",
            lambda: calls("first-week-plan", f"plan for {ctx.input['name']}"),
            retry=Retry(attempts=3, backoff="exponential"),
        )
        return (
            yield Step(
                "schedule-checkins",
                lambda: calls("schedule-checkins", {"plan": plan, "at": verification.verified_at}),
            )
        )

    return onboarding


INPUT = {"email": "user@example.com", "name": "Henri"}


def test_onboarding_suspends_then_completes_after_signal(store: Any, clock: FakeClock) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls)
    r = onboarding.run(input=INPUT, store=store)
    assert r.status == "suspended"
    assert r.waiting_for == "email-verified"
    assert r.wake_at == clock.now() + timedelta(hours=24)
    assert r.wake_at.tzinfo is not None
    assert calls.names == ["send-welcome"]

    signal_flow(r.flow_id, "email-verified", {"verified_at": "2026-11-24T10:00:00Z"}, store=store)
    done = onboarding.run(resume=r.flow_id, store=store)
    assert done.status == "completed"
    assert done.value == {"plan": "plan for Henri", "at": "2026-11-24T10:00:00Z"}
    assert calls.count("send-welcome") == 1
    assert calls.count("first-week-plan") == 1
    assert calls.count("schedule-checkins") == 1
    after = calls.values[calls.names.index("after-suspend")]
    assert after == EmailVerified("2026-11-24T10:00:00Z")  # structured into the schema
    info = get_flow(r.flow_id, store=store)
    assert [h.name for h in info.history] == [
        "send-welcome",
        "email-verified",
        "first-week-plan",
        "schedule-checkins",
    ]
    assert [s.state for s in info.signals] == ["consumed"]
    assert info.signals[0].position == 1


def test_signal_payload_is_structured_into_the_schema(store: Any) -> None:
    seen: list[Any] = []

    @flow("schema-check")
    def schema_check(ctx: FlowContext) -> Any:
        v = yield Suspend("email-verified", schema=EmailVerified)
        seen.append(v)
        return v.verified_at

    r = schema_check.run(store=store)
    signal_flow(r.flow_id, "email-verified", {"verified_at": "now"}, store=store)
    done = resume(r.flow_id, store=store)
    assert done.value == "now"
    assert seen == [EmailVerified("now")]


def test_resume_finds_the_flow_by_its_stored_name(store: Any) -> None:
    calls = Calls()
    onboarding_flow(calls, "onboarding-by-name")
    started = onboarding_flow(calls, "onboarding-by-name").run(input=INPUT, store=store)
    signal_flow(started.flow_id, "email-verified", {"verified_at": "t"}, store=store)
    assert resume(started.flow_id, store=store).status == "completed"
    assert calls.count("send-welcome") == 1


def test_resume_of_an_unregistered_name_is_a_clear_error_and_changes_nothing(store: Any) -> None:
    @flow("soon-unregistered")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("nap", "1h")

    r = f.run(store=store)
    from crux_gen import default_registry

    default_registry._flows.pop("soon-unregistered")
    with pytest.raises(FlowNotRegisteredError, match="soon-unregistered"):
        resume(r.flow_id, store=store)
    assert get_flow(r.flow_id, store=store).status == "suspended"


def test_signal_sent_before_the_wait_is_kept(store: Any, clock: FakeClock) -> None:
    calls = Calls()

    @flow("early-signal")
    def early(ctx: FlowContext) -> Any:
        yield Sleep("warm-up", "1h")
        v = yield Suspend("go")
        calls("after", v)
        return v

    r = early.run(store=store)
    assert r.waiting_for == "warm-up"
    signal_flow(r.flow_id, "go", {"n": 1}, store=store)
    clock.advance("2h")
    done = resume(r.flow_id, store=store)
    assert done.status == "completed"
    assert done.value == {"n": 1}


def test_signals_of_one_name_are_consumed_first_in_first_out(store: Any) -> None:
    @flow("fifo")
    def fifo(ctx: FlowContext) -> Any:
        a = yield Suspend("tick")
        b = yield Suspend("tick")
        return [a, b]

    r = fifo.run(store=store)
    signal_flow(r.flow_id, "tick", 1, store=store)
    signal_flow(r.flow_id, "tick", 2, store=store)
    signal_flow(r.flow_id, "other", 3, store=store)
    done = resume(r.flow_id, store=store)
    assert done.value == [1, 2]
    states = {s.payload: s.state for s in get_flow(r.flow_id, store=store).signals}
    assert states == {1: "consumed", 2: "consumed", 3: "unused"}  # the flow finished


def test_a_rejected_signal_is_kept_and_the_flow_goes_on_waiting(store: Any) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls, "onboarding-rejects")
    r = onboarding.run(input=INPUT, store=store)
    signal_flow(r.flow_id, "email-verified", {"wrong": "shape"}, store=store)
    again = resume(r.flow_id, store=store)
    assert again.status == "suspended"
    assert again.waiting_for == "email-verified"
    info = get_flow(r.flow_id, store=store)
    assert [(s.state, s.payload) for s in info.signals] == [("rejected", {"wrong": "shape"})]
    assert "verified_at" in (info.signals[0].error or "")
    # A rejected signal is no reason for a worker to run the flow again.
    assert store.due(store.clock.now().timestamp(), 10) == []
    signal_flow(r.flow_id, "email-verified", {"verified_at": "later"}, store=store)
    assert resume(r.flow_id, store=store).status == "completed"
    assert calls.count("send-welcome") == 1


def test_a_wait_expires_when_no_signal_arrives_in_time(store: Any, clock: FakeClock) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls, "onboarding-expires")
    r = onboarding.run(input=INPUT, store=store)
    clock.advance("25h")
    with pytest.raises(FlowClosedError, match="expired"):
        signal_flow(r.flow_id, "email-verified", {"verified_at": "late"}, store=store)
    assert get_flow(r.flow_id, store=store).signals == ()
    done = resume(r.flow_id, store=store)
    assert done.status == "expired"
    assert done.waiting_for == "email-verified"
    assert done.wake_at is None
    assert calls.count("first-week-plan") == 0
    assert resume(r.flow_id, store=store).status == "expired"
    with pytest.raises(FlowClosedError):
        signal_flow(r.flow_id, "email-verified", {"verified_at": "late"}, store=store)


def test_a_flow_signalled_in_time_but_resumed_late_still_completes(
    store: Any, clock: FakeClock
) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls, "onboarding-late")
    r = onboarding.run(input=INPUT, store=store)
    clock.advance("23h")
    signal_flow(r.flow_id, "email-verified", {"verified_at": "in time"}, store=store)
    clock.advance("10d")
    assert resume(r.flow_id, store=store).status == "completed"


def test_the_timeout_counts_from_when_the_flow_first_reached_the_wait(
    store: Any, clock: FakeClock
) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls, "onboarding-deadline")
    r = onboarding.run(input=INPUT, store=store)
    clock.advance("20h")
    assert resume(r.flow_id, store=store).wake_at == r.wake_at  # not pushed back by the resume
    clock.advance("5h")
    assert resume(r.flow_id, store=store).status == "expired"


def test_cancel_a_suspended_flow(store: Any) -> None:
    calls = Calls()
    onboarding = onboarding_flow(calls, "onboarding-cancel")
    r = onboarding.run(input=INPUT, store=store)
    assert cancel_flow(r.flow_id, "user deleted account", store=store) is True
    done = resume(r.flow_id, store=store)
    assert done.status == "cancelled"
    assert done.cancel_reason == "user deleted account"
    assert calls.count("first-week-plan") == 0
    assert cancel_flow(r.flow_id, "again", store=store) is False
    assert get_flow(r.flow_id, store=store).cancel_reason == "user deleted account"
    with pytest.raises(FlowClosedError, match="cancelled"):
        signal_flow(r.flow_id, "email-verified", {"verified_at": "x"}, store=store)


def test_cancel_during_a_step_stops_at_the_next_command_boundary(store: Any) -> None:
    calls = Calls()
    box: dict[str, str] = {}

    @flow("cancel-mid-run")
    def mid(ctx: FlowContext) -> Any:
        yield Step("one", lambda: calls("one"))
        yield Step("two", lambda: (cancel_flow(box["id"], "stop now", store=store), calls("two")))
        yield Step("three", lambda: calls("three"))

    box["id"] = "cancel-me"
    r = mid.run(store=store, flow_id="cancel-me")
    assert r.status == "cancelled"
    assert r.cancel_reason == "stop now"
    info = get_flow("cancel-me", store=store)
    assert [h.name for h in info.history] == ["one", "two"]  # the step in hand was recorded
    assert info.status == "cancelled"


def test_a_completed_flow_cannot_be_cancelled(store: Any) -> None:
    @flow("quick")
    def quick(ctx: FlowContext) -> Any:
        return (yield Step("only", lambda: 1))

    r = quick.run(store=store)
    assert r.status == "completed"
    assert cancel_flow(r.flow_id, "too late", store=store) is False
    assert get_flow(r.flow_id, store=store).status == "completed"


def test_a_short_backoff_retries_in_process_and_persists_attempts(
    store: Any, clock: FakeClock
) -> None:
    tries: list[datetime] = []

    def flaky() -> str:
        tries.append(clock.now())
        if len(tries) < 3:
            raise ConnectionError(f"try {len(tries)}")
        return "ok"

    @flow("flaky-short")
    def f(ctx: FlowContext) -> Any:
        return (yield Step("call", flaky, retry=Retry(attempts=3, delay="100ms")))

    r = f.run(store=store)
    assert r.status == "completed"
    assert r.value == "ok"
    assert len(tries) == 3
    assert tries[1] - tries[0] == timedelta(milliseconds=100)
    assert tries[2] - tries[1] == timedelta(milliseconds=200)  # exponential
    assert get_flow(r.flow_id, store=store).history[0].attempts == 3


def test_a_long_backoff_parks_the_flow(store: Any, clock: FakeClock) -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise TimeoutError("upstream slow")
        return "ok"

    @flow("flaky-long")
    def f(ctx: FlowContext) -> Any:
        return (yield Step("call", flaky, retry=Retry(attempts=3, backoff="fixed", delay="10m")))

    r = f.run(store=store)
    assert r.status == "suspended"
    assert r.waiting_for == "call"
    assert r.wake_at == clock.now() + timedelta(minutes=10)
    entry = get_flow(r.flow_id, store=store).history[0]
    assert (entry.state, entry.attempts) == ("retrying", 1)
    assert entry.error is not None and entry.error.type == "builtins.TimeoutError"
    clock.advance("5m")
    assert resume(r.flow_id, store=store).status == "suspended"  # not due yet: not called
    assert len(tries) == 1
    clock.advance("5m")
    done = resume(r.flow_id, store=store)
    assert done.status == "completed"
    assert len(tries) == 2
    assert get_flow(r.flow_id, store=store).history[0].attempts == 2


def test_retry_attempts_survive_across_runs_and_run_out(store: Any, clock: FakeClock) -> None:
    tries: list[int] = []

    def always() -> None:
        tries.append(1)
        raise ConnectionError(f"down {len(tries)}")

    @flow("always-down")
    def f(ctx: FlowContext) -> Any:
        yield Step("call", always, retry=Retry(attempts=3, backoff="linear", delay="1h"))

    r = f.run(store=store)
    for _ in range(5):
        clock.advance("3h")
        r = resume(r.flow_id, store=store)
    assert r.status == "failed"
    assert len(tries) == 3
    assert r.error is not None
    assert r.error.type == "builtins.ConnectionError"
    assert r.error.message == "down 3"
    assert "always" in r.error.traceback


def test_only_retry_on_exceptions_are_retried(store: Any) -> None:
    tries: list[int] = []

    def bad() -> None:
        tries.append(1)
        raise KeyError("nope")

    @flow("retry-on")
    def f(ctx: FlowContext) -> Any:
        yield Step("call", bad, retry=Retry(attempts=5, delay=0, retry_on=(ConnectionError,)))

    assert f.run(store=store).status == "failed"
    assert len(tries) == 1


def test_spent_retries_are_thrown_into_the_flow_which_may_catch_them(store: Any) -> None:
    calls = Calls()

    def boom() -> None:
        calls("boom")
        raise ValueError("card declined")

    @flow("compensate")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("charge", boom, retry=Retry(attempts=2, delay=0))
        except ValueError as exc:
            yield Step("refund", lambda: calls("refund"))
            note = yield Suspend("ack")
            return f"handled: {exc} / {note}"

    r = f.run(store=store)
    assert r.status == "suspended"
    assert calls.names == ["boom", "boom", "refund"]
    signal_flow(r.flow_id, "ack", "ok", store=store)
    done = resume(r.flow_id, store=store)
    # The replay re-raised the recorded failure without calling the step again.
    assert done.value == "handled: card declined / ok"
    assert calls.names == ["boom", "boom", "refund"]


class NotRebuildable(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


def test_a_recorded_failure_with_an_odd_constructor_replays_as_its_own_class(
    store: Any,
) -> None:
    seen: list[BaseException] = []

    def boom() -> None:
        raise NotRebuildable(402, "payment required")

    @flow("odd-constructor")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("charge", boom)
        except NotRebuildable as exc:  # the same branch on the first run and on replay
            seen.append(exc)
        yield Suspend("ack")

    r = f.run(store=store)
    signal_flow(r.flow_id, "ack", None, store=store)
    assert resume(r.flow_id, store=store).status == "completed"
    assert [type(e) for e in seen] == [NotRebuildable, NotRebuildable]
    assert str(seen[1]) == "402: payment required"


def test_a_recorded_failure_whose_class_cannot_be_imported_replays_as_step_failed_error(
    store: Any,
) -> None:
    seen: list[BaseException] = []

    class Local(Exception):  # defined in a function: no import can find it
        pass

    def boom() -> None:
        raise Local("payment required")

    @flow("unimportable")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("charge", boom)
        except Exception as exc:
            seen.append(exc)
        yield Suspend("ack")

    r = f.run(store=store)
    signal_flow(r.flow_id, "ack", None, store=store)
    with pytest.warns(UserWarning, match="Local"):
        assert resume(r.flow_id, store=store).status == "completed"
    assert isinstance(seen[0], Local)
    assert isinstance(seen[1], StepFailedError)
    assert seen[1].type.endswith("Local")
    assert seen[1].message == "payment required"
    assert "boom" in seen[1].traceback


def test_an_uncaught_exception_in_the_body_fails_the_flow_and_keeps_completed_steps(
    store: Any,
) -> None:
    @flow("body-raises")
    def f(ctx: FlowContext) -> Any:
        yield Step("one", lambda: 1)
        raise RuntimeError("bug in the flow")

    r = f.run(store=store)
    assert r.status == "failed"
    assert r.error is not None
    assert (r.error.type, r.error.message) == ("builtins.RuntimeError", "bug in the flow")
    info = get_flow(r.flow_id, store=store)
    assert [(h.name, h.state) for h in info.history] == [("one", "completed")]
    assert resume(r.flow_id, store=store).status == "failed"


def test_a_step_result_that_cannot_be_serialized_is_recorded_as_its_failure(store: Any) -> None:
    calls: list[str] = []

    @flow("unserializable")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("socket", lambda: calls.append("socket") or object())
        except SerializationError as exc:
            assert "socket" in str(exc)
            caught = "caught"
        after = yield Step("after", lambda: calls.append("after") or 2)
        yield Suspend("go")
        return [caught, after]

    r = f.run(store=store)
    assert r.status == "suspended"
    history = get_flow(r.flow_id, store=store).history
    assert [(h.name, h.state) for h in history] == [
        ("socket", "failed"),
        ("after", "completed"),
        ("go", "waiting"),
    ]
    assert history[0].error is not None
    assert history[0].error.type == "crux_gen.errors.SerializationError"
    signal_flow(r.flow_id, "go", None, store=store)
    r = f.run(resume=r.flow_id, store=store)  # the replay throws the same, calling nothing
    assert (r.status, r.value) == ("completed", ["caught", 2])
    assert calls == ["socket", "after"]


def test_the_first_run_returns_the_same_round_tripped_value_as_a_replay(store: Any) -> None:
    seen: list[Any] = []
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    @flow("round-trip")
    def f(ctx: FlowContext) -> Any:
        v = yield Step("tuple", lambda: {"pair": (1, 2), "when": when, "tags": {"a"}})
        seen.append(v)
        yield Suspend("again")
        return v

    r = f.run(store=store)
    signal_flow(r.flow_id, "again", None, store=store)
    done = resume(r.flow_id, store=store)
    expected = {"pair": [1, 2], "when": when.isoformat(), "tags": ["a"]}
    assert seen == [expected, expected]
    assert done.value == expected


def test_non_determinism_names_position_and_commands_and_leaves_the_flow_untouched(
    store: Any,
) -> None:
    @flow("changing")
    def v1(ctx: FlowContext) -> Any:
        yield Step("charge-card", lambda: 1)
        yield Suspend("ok")

    r = v1.run(store=store)
    before = get_flow(r.flow_id, store=store)

    @flow("changing")
    def v2(ctx: FlowContext) -> Any:
        yield Step("bill", lambda: 1)
        yield Suspend("ok")

    with pytest.raises(NonDeterminismError) as info:
        resume(r.flow_id, store=store)
    err = info.value
    assert err.position == 0
    assert err.recorded == "Step('charge-card')"
    assert err.new == "Step('bill')"
    assert r.flow_id in str(err)
    after = get_flow(r.flow_id, store=store)
    assert (after.status, after.waiting_for, after.history) == (
        before.status,
        before.waiting_for,
        before.history,
    )

    @flow("changing")
    def v3(ctx: FlowContext) -> Any:
        yield Step("charge-card", lambda: 1)
        yield Suspend("ok")

    assert resume(r.flow_id, store=store).status == "suspended"


def test_a_second_runner_gets_flow_busy_at_once(store: Any) -> None:
    @flow("busy")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("nap", "1h")

    r = f.run(store=store)
    store.claim(r.flow_id, "someone-else", store.clock.now().timestamp())
    with pytest.raises(FlowBusyError, match=r.flow_id):
        resume(r.flow_id, store=store)


def test_a_crashed_runners_lease_expires_and_the_flow_can_be_resumed(
    store: Any, clock: FakeClock
) -> None:
    @flow("crashed")
    def f(ctx: FlowContext) -> Any:
        return (yield Step("work", lambda: "done"))

    store.start("crashed-1", "crashed", "null", "dead-runner", clock.now().timestamp())
    with pytest.raises(FlowBusyError):
        resume("crashed-1", store=store)
    clock.advance(store.lease_ttl + timedelta(seconds=1))
    assert store.due(clock.now().timestamp(), 10) == ["crashed-1"]
    assert resume("crashed-1", store=store).value == "done"


def test_unknown_ids_raise_flow_not_found(store: Any) -> None:
    @flow("exists")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("nap", 1)

    for call in (
        lambda: resume("nope", store=store),
        lambda: f.run(resume="nope", store=store),
        lambda: signal_flow("nope", "x", 1, store=store),
        lambda: cancel_flow("nope", "why", store=store),
        lambda: get_flow("nope", store=store),
    ):
        with pytest.raises(FlowNotFoundError, match="'nope'"):
            call()


def test_starting_with_an_existing_id_never_starts_a_second_copy(store: Any) -> None:
    calls = Calls()

    @flow("idempotent")
    def f(ctx: FlowContext) -> Any:
        yield Step("charge", lambda: calls("charge"))
        return (yield Suspend("done"))

    first = f.run(input={"order": 1}, store=store, flow_id="order-1")
    second = f.run(input={"order": 1}, store=store, flow_id="order-1")
    assert first.flow_id == second.flow_id == "order-1"
    assert second.status == "suspended"
    assert calls.count("charge") == 1

    @flow("other-name")
    def g(ctx: FlowContext) -> Any:
        yield Step("x", lambda: 1)

    with pytest.raises(FlowNameConflictError, match="order-1"):
        g.run(store=store, flow_id="order-1")


def test_resuming_a_finished_flow_returns_its_result_and_runs_nothing(store: Any) -> None:
    calls = Calls()

    @flow("finished")
    def f(ctx: FlowContext) -> Any:
        return (yield Step("one", lambda: calls("one", 42)))

    r = f.run(store=store)
    again = f.run(resume=r.flow_id, store=store)
    assert (again.status, again.value) == ("completed", 42)
    assert calls.count("one") == 1


def test_flow_ids_are_unguessable(store: Any) -> None:
    @flow("ids")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("nap", 1)

    ids = {f.run(store=store).flow_id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) >= 32 for i in ids)


def test_wait_until_checks_again_after_every_and_records_the_value(
    store: Any, clock: FakeClock
) -> None:
    checks: list[int] = []

    def paid() -> Any:
        checks.append(1)
        return {"paid": True} if len(checks) >= 3 else None

    @flow("wait-until")
    def f(ctx: FlowContext) -> Any:
        return (yield WaitUntil("invoice-paid", paid, every="10m"))

    r = f.run(store=store)
    assert (r.status, r.waiting_for) == ("suspended", "invoice-paid")
    assert r.wake_at == clock.now() + timedelta(minutes=10)
    clock.advance("10m")
    assert resume(r.flow_id, store=store).status == "suspended"
    clock.advance("10m")
    done = resume(r.flow_id, store=store)
    assert (done.status, done.value) == ("completed", {"paid": True})
    assert len(checks) == 3
    assert resume(r.flow_id, store=store).value == {"paid": True}
    assert len(checks) == 3


def test_wait_until_past_its_timeout_expires(store: Any, clock: FakeClock) -> None:
    @flow("wait-until-timeout")
    def f(ctx: FlowContext) -> Any:
        return (yield WaitUntil("never", lambda: False, every="1h", timeout="3h"))

    r = f.run(store=store)
    for _ in range(4):
        clock.advance("1h")
        r = resume(r.flow_id, store=store)
    assert (r.status, r.waiting_for, r.wake_at) == ("expired", "never", None)


def test_sleep_is_a_durable_timer(store: Any, clock: FakeClock) -> None:
    calls = Calls()

    @flow("sleeper")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("cool-off", "2d")
        return (yield Step("after", lambda: calls("after", "woke")))

    r = f.run(store=store)
    assert (r.status, r.waiting_for) == ("suspended", "cool-off")
    assert r.wake_at == clock.now() + timedelta(days=2)
    clock.advance("1d")
    assert resume(r.flow_id, store=store).status == "suspended"
    assert calls.names == []
    clock.advance("1d")
    assert resume(r.flow_id, store=store).value == "woke"


def test_finally_blocks_run_at_each_park_and_their_commands_are_not_run(store: Any) -> None:
    calls = Calls()

    @flow("parking")
    def f(ctx: FlowContext) -> Any:
        try:
            return (yield Suspend("go"))
        finally:
            calls("finally")
            yield Step("cleanup", lambda: calls("cleanup"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = f.run(store=store)
    assert r.status == "suspended"
    assert calls.names == ["finally"]
    assert any(
        issubclass(w.category, ParkingWarning) and "Step('cleanup')" in str(w.message)
        for w in caught
    )


def test_determinism_helpers_return_recorded_values_on_replay(store: Any) -> None:
    seen: list[Any] = []

    @flow("helpers")
    def f(ctx: FlowContext) -> Any:
        values = (ctx.now(), ctx.uuid4(), ctx.random())
        seen.append(values)
        yield Suspend("go")
        return [str(v) for v in values]

    r = f.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    done = resume(r.flow_id, store=store)
    assert seen[0] == seen[1]
    now, uid, rnd = seen[0]
    assert now == store.clock.now() and now.tzinfo is not None
    assert isinstance(uid, uuid.UUID) and uid.version == 4
    assert 0 <= rnd < 1
    assert done.value == [str(v) for v in seen[0]]


def test_calling_helpers_in_another_order_is_non_determinism(store: Any) -> None:
    @flow("helpers-order")
    def f(ctx: FlowContext) -> Any:
        ctx.now()
        yield Suspend("go")

    r = f.run(store=store)

    @flow("helpers-order")
    def g(ctx: FlowContext) -> Any:
        with contextlib.suppress(Exception):
            ctx.uuid4()  # swallowing the error does not hide the divergence
        yield Suspend("go")

    with pytest.raises(NonDeterminismError, match=r"ctx\.now\(\)"):
        resume(r.flow_id, store=store)


def test_is_replaying_is_true_only_while_recorded_commands_are_fed_back(store: Any) -> None:
    seen: list[tuple[str, bool]] = []

    @flow("replaying")
    def f(ctx: FlowContext) -> Any:
        seen.append(("start", ctx.is_replaying))
        yield Step("one", lambda: 1)
        seen.append(("after-one", ctx.is_replaying))
        yield Suspend("go")
        seen.append(("after-go", ctx.is_replaying))

    r = f.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    resume(r.flow_id, store=store)
    assert seen == [
        ("start", False),
        ("after-one", False),
        ("start", True),
        ("after-one", True),
        ("after-go", False),
    ]


def test_input_is_stored_as_json_and_read_back(store: Any) -> None:
    @flow("inputs")
    def f(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return ctx.input

    r = f.run(input={"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "n": (1, 2)}, store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    expected = {"when": "2026-01-01T00:00:00+00:00", "n": [1, 2]}
    assert resume(r.flow_id, store=store).value == expected
    assert get_flow(r.flow_id, store=store).input == expected
    with pytest.raises(SerializationError, match="input"):
        f.run(input={"sock": object()}, store=store)


def test_a_payload_that_cannot_be_serialized_stores_nothing(store: Any) -> None:
    @flow("payloads")
    def f(ctx: FlowContext) -> Any:
        yield Suspend("go")

    r = f.run(store=store)
    with pytest.raises(SerializationError, match="go"):
        signal_flow(r.flow_id, "go", {"x": object()}, store=store)
    assert get_flow(r.flow_id, store=store).signals == ()


def test_status_is_a_str_enum_with_bare_string_forms(store: Any) -> None:
    @flow("status-forms")
    def f(ctx: FlowContext) -> Any:
        return (yield Step("x", lambda: 1))

    r = f.run(store=store)
    assert r.status == "completed"
    assert isinstance(r.status, Status) and isinstance(r.status, str)
    assert str(r.status) == "completed"
    assert f"{r.status}" == "completed"


def test_every_library_error_derives_from_crux_error() -> None:
    import crux_gen

    for name in crux_gen.__all__:
        obj = getattr(crux_gen, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, CruxError), name


def test_helpers_called_inside_a_step_take_no_place_in_history(store: Any) -> None:
    stamps: list[Any] = []

    @flow("helpers-in-step")
    def f(ctx: FlowContext) -> Any:
        first = yield Step("stamp", lambda: stamps.append(ctx.now()) or ctx.uuid4().hex)
        yield Suspend("go")
        return first

    r = f.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    done = resume(r.flow_id, store=store)
    assert done.status == "completed"
    assert len(stamps) == 1  # the step ran once; its result, not the helpers, was recorded
    assert [h.kind for h in get_flow(r.flow_id, store=store).history] == ["step", "suspend"]


def test_a_run_that_calls_no_step_function_off_its_thread_starts_no_thread(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flow.run and resume of one flow run its steps on the caller's thread: a resume
    that only replays and parks again (or runs one step at a time) starts no thread
    (it started one per resume, joined at its end: half of a short resume's time)."""
    from crux_gen import calls as calls_module

    started: list[str] = []
    real = calls_module.Calls._start_thread

    def counting(self: Any) -> None:
        started.append("thread")
        real(self)

    monkeypatch.setattr(calls_module.Calls, "_start_thread", counting)
    ran: list[int] = []

    @flow("no-thread-resume")
    def f(ctx: FlowContext) -> Any:
        for i in range(3):
            yield Step(f"s{i}", lambda i=i: ran.append(i) or i)
        return (yield Suspend("go"))

    r = f.run(store=store)
    assert r.status == "suspended"
    for _ in range(3):
        assert resume(r.flow_id, store=store).status == "suspended"
    assert ran == [0, 1, 2]
    assert started == []
