"""The handlers, alone: a decision, a view and an event in, effects out. No store,
no clock, no thread (``crux_gen/handlers.py``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from crux_gen import Any as AnyOf
from crux_gen import (
    AnyResult,
    Child,
    ChildFlowError,
    ContinueAsNew,
    FlowIdTakenError,
    Retry,
    SerializationError,
    SignalValidationError,
    Sleep,
    Step,
    Suspend,
    Version,
    WaitUntil,
    flow,
)
from crux_gen.effects import (
    BUFFERED,
    DURABLE,
    GO_ON,
    Adopt,
    Call,
    CancelFlow,
    Finish,
    Fired,
    NewRun,
    Park,
    Raised,
    Record,
    Refused,
    Resolve,
    Returned,
    Settled,
    Take,
    Throw,
    Timer,
    View,
)
from crux_gen.flow import Registry
from crux_gen.handlers import (
    INLINE_BACKOFF,
    await_any,
    await_child,
    await_condition,
    await_signal,
    await_timer,
    continue_new,
    record_version,
    retry_plan,
    run_step,
)
from crux_gen.interpreter import (
    AwaitAny,
    AwaitChild,
    AwaitCondition,
    AwaitSignal,
    AwaitTimer,
    ContinueNew,
    RecordVersion,
    RunStep,
)
from crux_gen.records import (
    COMPLETED,
    CONSUMED,
    EXPIRED,
    FAILED,
    REJECTED,
    RETRYING,
    WAITING,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
)
from crux_gen.status import Status

T = 1_000.0


def fn() -> int:
    return 1


def view(now: float = T, record: StoredRecord | None = None) -> View:
    return View("f", now, record)


def only(effects: list[Any], kind: type) -> Any:
    [found] = [e for e in effects if isinstance(e, kind)]
    return found


# -- steps -------------------------------------------------------------------------------


def test_a_new_step_is_a_call_of_its_function_as_attempt_1() -> None:
    d = RunStep(3, Step("charge", fn), None)
    assert run_step(d, view()) == [Call(3, fn, 1, T, name="charge")]


def test_a_returned_value_is_recorded_durably_then_resolved() -> None:
    d = RunStep(3, Step("charge", fn), None)
    call = Call(3, fn, 1, T)
    effects = run_step(d, view(T + 2), Returned({"id": 7}, call))
    record, resolve = effects
    assert record == Record(
        StoredRecord(3, "step", "charge", COMPLETED, result='{"id":7}', attempts=1,
                     started_at=T, finished_at=T + 2),
        DURABLE,
    )  # fmt: skip
    assert resolve == Resolve({"id": 7})


def test_a_value_json_cannot_hold_fails_the_step_at_its_yield_without_a_retry() -> None:
    d = RunStep(0, Step("s", fn, retry=Retry(attempts=5)), None)
    effects = run_step(d, view(), Returned({1, object()}, Call(0, fn, 1, T)))
    assert only(effects, Record).record.state == FAILED
    assert isinstance(only(effects, Throw).exc, SerializationError)


def test_an_error_without_retry_is_recorded_and_thrown() -> None:
    boom = ValueError("no")
    effects = run_step(RunStep(0, Step("s", fn), None), view(), Raised(boom, Call(0, fn, 1, T)))
    record, throw = effects
    assert (record.record.state, record.record.attempts, record.write) == (FAILED, 1, DURABLE)
    assert "ValueError" in (record.record.error or "")
    assert throw == Throw(boom)


def test_a_short_backoff_keeps_the_flow_in_hand_and_the_next_try_follows_the_timer() -> None:
    step = Step("s", fn, retry=Retry(attempts=3, backoff="fixed", delay="1s"))
    d = RunStep(0, step, None)
    effects = run_step(d, view(), Raised(ValueError("x"), Call(0, fn, 1, T)))
    record, timer = effects
    assert record.write == DURABLE  # attempts survive a crash
    assert (record.record.state, record.record.attempts, record.record.wake_at) == (
        RETRYING, 1, T + 1,
    )  # fmt: skip
    assert timer == Timer(T + 1)
    # When the timer fires: attempt 2, begun when the first was.
    assert run_step(d, view(T + 1, record.record), Fired()) == [Call(0, fn, 2, T, name="s")]


def test_a_long_backoff_parks_the_flow_and_a_resume_before_it_parks_again() -> None:
    delay = INLINE_BACKOFF.total_seconds() + 1
    step = Step("s", fn, retry=Retry(attempts=3, backoff="fixed", delay=delay))
    d = RunStep(0, step, None)
    record, park = run_step(d, view(), Raised(ValueError("x"), Call(0, fn, 1, T)))
    assert park == Park("s", "retry", T + delay)
    assert record.write == BUFFERED  # written by the park
    resumed = RunStep(0, step, record.record)
    assert run_step(resumed, view(T + 1, record.record)) == [Park("s", "retry", T + delay)]
    assert run_step(resumed, view(T + delay, record.record)) == [Call(0, fn, 2, T, name="s")]


def test_spent_retries_throw_the_last_error() -> None:
    step = Step("s", fn, retry=Retry(attempts=2, backoff="fixed", delay="1s"))
    boom = KeyError("k")
    effects = run_step(RunStep(0, step, None), view(), Raised(boom, Call(0, fn, 2, T)))
    assert only(effects, Record).record.state == FAILED
    assert only(effects, Throw) == Throw(boom)


def test_retry_plan_is_the_one_retry_policy() -> None:
    retry = Retry(attempts=3, backoff="exponential", delay="1s")
    assert retry_plan(None, ValueError(), 1, T) is None
    assert retry_plan(retry, ValueError(), 1, T) == T + 1
    assert retry_plan(retry, ValueError(), 2, T) == T + 2
    assert retry_plan(retry, ValueError(), 3, T) is None
    only_keys = Retry(attempts=3, retry_on=(KeyError,))
    assert retry_plan(only_keys, ValueError(), 1, T) is None


# -- waits ---------------------------------------------------------------------------------


def test_a_sleep_parks_until_its_wake_time_then_resolves() -> None:
    d = AwaitTimer(1, Sleep("nap", "1h"), None)
    record, park = await_timer(d, view())
    assert park == Park("nap", "sleep", T + 3600)
    assert (record.record.state, record.record.wake_at) == (WAITING, T + 3600)
    later = AwaitTimer(1, d.command, record.record)
    done, resolve = await_timer(later, view(T + 3600, record.record))
    assert (done.record.state, done.write, resolve) == (COMPLETED, GO_ON, Resolve(None))


def test_a_condition_checks_then_parks_until_the_next_check_or_expires() -> None:
    wait = WaitUntil("ready", fn, every="1m", timeout="90s")
    d = AwaitCondition(2, wait, None)
    [call] = await_condition(d, view())
    assert call == Call(2, fn, 1, T, name="ready", kind="condition")
    record, park = await_condition(d, view(T + 1), Returned(0, call))
    assert park == Park("ready", "wait_until", T + 60, T + 90)
    assert (record.record.attempts, record.record.deadline) == (1, T + 90)
    later = AwaitCondition(2, wait, record.record)
    [call] = await_condition(later, view(T + 90, record.record))
    expired, finish = await_condition(later, view(T + 90, record.record), Returned(0, call))
    assert expired.record.state == EXPIRED
    assert finish == Finish(Status.EXPIRED, "ready", "wait_until")
    [call] = await_condition(later, view(T + 60, record.record))
    done, resolve = await_condition(later, view(T + 60, record.record), Returned("yes", call))
    assert (done.record.state, done.record.result, resolve) == (COMPLETED, '"yes"', Resolve("yes"))


def test_a_condition_that_raises_fails_the_wait_durably() -> None:
    d = AwaitCondition(0, WaitUntil("w", fn), None)
    boom = RuntimeError("down")
    record, throw = await_condition(d, view(), Raised(boom, Call(0, fn, 1, T)))
    assert (record.record.state, record.write, throw) == (FAILED, DURABLE, Throw(boom))


# -- version, continue-as-new ----------------------------------------------------------------


def test_a_version_records_its_latest_and_goes_on() -> None:
    record, resolve = record_version(RecordVersion(4, Version("fee", latest=3)), view())
    assert (record.record.result, record.write, resolve) == ("3", BUFFERED, Resolve(3))


def test_continue_as_new_records_and_starts_the_next_run() -> None:
    record, new = continue_new(ContinueNew(5, ContinueAsNew(input={"n": 2})), view())
    assert (record.record.kind, new) == ("continue_as_new", NewRun('{"n":2}'))
    when = datetime.now(timezone.utc)
    bad = continue_new(ContinueNew(5, ContinueAsNew(input={"at": object(), "w": when})), view())
    assert only(bad, Record).record.state == FAILED
    with pytest.raises(SerializationError):
        raise only(bad, Throw).exc


# -- signals -----------------------------------------------------------------------------


def signals(*items: StoredSignal) -> Any:
    """A View's pending: the signals of a name, oldest first, drawn as read."""
    drawn: list[int] = []

    def pending(name: str) -> Any:
        for signal in items:
            if signal.name == name:
                drawn.append(signal.id)
                yield signal

    pending.drawn = drawn  # type: ignore[attr-defined]
    return pending


def sig(id: int, payload: str, at: float = T, name: str = "approved") -> StoredSignal:
    return StoredSignal(id, "f", name, payload, "pending", at)


def test_a_pending_signal_is_taken_recorded_and_resolved() -> None:
    d = AwaitSignal(2, Suspend("approved"), None)
    take, record, resolve = await_signal(d, View("f", T, None, signals(sig(7, '{"by":"ada"}'))))
    assert take == Take(SignalUpdate(7, CONSUMED, position=2))
    assert (record.record.state, record.record.result, record.write) == (
        COMPLETED, '{"by":"ada"}', GO_ON,
    )  # fmt: skip
    assert resolve == Resolve({"by": "ada"})


def test_without_a_signal_the_wait_parks_until_its_deadline_asking_for_arrivals() -> None:
    d = AwaitSignal(2, Suspend("approved", timeout="1h"), None)
    record, park = await_signal(d, View("f", T, None, signals()))
    assert (record.record.state, record.record.deadline) == (WAITING, T + 3600)
    assert park == Park("approved", "suspend", T + 3600, T + 3600, "approved")
    # Parked here before: the stored record stands; only the park is written again.
    again = AwaitSignal(2, d.command, record.record)
    assert await_signal(again, View("f", T + 5, record.record, signals())) == [park]


def test_a_late_signal_is_rejected_and_an_expired_wait_ends_the_flow() -> None:
    d = AwaitSignal(2, Suspend("approved", timeout="1h"), None)
    record, _ = await_signal(d, View("f", T, None, signals()))
    late = sig(8, "1", at=T + 3601)
    effects = await_signal(
        AwaitSignal(2, d.command, record.record), View("f", T + 3700, record.record, signals(late))
    )
    take, expired, finish = effects
    assert take == Take(SignalUpdate(8, REJECTED, error="it arrived after the wait's deadline"))
    assert expired.record.state == EXPIRED
    assert finish == Finish(Status.EXPIRED, "approved", "suspend", "approved")


def test_a_signal_that_fits_no_schema_is_rejected_with_a_warning_and_the_next_is_taken() -> None:
    @attrs.frozen
    class Approval:
        by: str

    d = AwaitSignal(0, Suspend("approved", schema=Approval), None)
    pending = signals(sig(1, '{"who":"x"}'), sig(2, '{"by":"bo"}'), sig(3, '{"by":"cy"}'))
    effects = await_signal(d, View("f", T, None, pending))
    rejected, taken, _, resolve = effects
    assert rejected.update.state == REJECTED and "by" in (rejected.update.error or "")
    assert isinstance(rejected.warning, SignalValidationError)
    assert taken == Take(SignalUpdate(2, CONSUMED, position=0))
    assert resolve == Resolve(Approval("bo"))
    assert pending.drawn == [1, 2]  # the third is left pending, never drawn


# -- children ------------------------------------------------------------------------------


@flow("h-leaf", registry=Registry())
def leaf(ctx: Any) -> Any:
    yield Step("x", fn)


def test_a_child_is_started_in_the_write_that_records_it_then_run() -> None:
    d = AwaitChild(1, Child(leaf, input={"n": 1}), None)
    start, adopt = await_child(d, View("p", T, None, new_id=lambda: "c1"))
    assert start.children == (NewChild("c1", "h-leaf", '{"n":1}'),)
    assert (start.record.state, start.record.result) == (WAITING, '{"flow_id":"c1"}')
    assert adopt == Adopt("c1", leaf)


def test_a_taken_child_id_is_thrown_at_the_yield() -> None:
    d = AwaitChild(1, Child(leaf, flow_id="taken"), None)
    taken = FlowIdTakenError("taken", "other", "p")
    record, throw = await_child(d, View("p", T, None), Refused(taken))
    assert (record.record.state, record.write, throw) == (FAILED, DURABLE, Throw(taken))


def test_a_child_that_ended_gives_its_value_or_error_else_the_parent_parks() -> None:
    waiting = StoredRecord(1, "child", "h-leaf", WAITING, result='{"flow_id":"c1"}', started_at=T)
    d = AwaitChild(1, Child(leaf), waiting)
    assert await_child(d, View("p", T, waiting)) == [Adopt("c1", leaf)]
    running = StoredFlow("c1", "h-leaf", "suspended", "null", T, T)
    assert await_child(d, View("p", T, waiting), Settled({"c1": running})) == [
        Park("c1", "child", None, children=("c1",))
    ]
    done = attrs.evolve(running, status="completed", result="7")
    record, resolve = await_child(d, View("p", T + 1, waiting), Settled({"c1": done}))
    assert (record.record.state, record.write, resolve) == (COMPLETED, GO_ON, Resolve(7))
    gone = StoredFlow("c1", "?", "deleted", "null", 0.0, T)
    record, throw = await_child(d, View("p", T + 1, waiting), Settled({"c1": gone}))
    assert isinstance(throw.exc, ChildFlowError) and throw.exc.status == "deleted"
    assert record.record.state == FAILED


# -- Any -------------------------------------------------------------------------------------


def heap(*items: StoredSignal) -> tuple[Any, Any, list[int]]:
    """``pending`` and ``peek`` over *items*, as the driver's heap gives them."""
    left = list(items)
    drawn: list[int] = []

    def peek(name: str) -> StoredSignal | None:
        return next((s for s in left if s.name == name), None)

    def pending(name: str) -> Any:
        while (signal := peek(name)) is not None:
            left.remove(signal)
            drawn.append(signal.id)
            yield signal

    return pending, peek, drawn


def test_an_any_signal_and_timer_due_at_one_instant_the_signal_wins() -> None:
    d = AwaitAny(0, AnyOf([Sleep("timeout", "1h"), Suspend("shipped")]), None)
    started = StoredRecord(0, "any", d.command.name, WAITING, started_at=T, wake_at=T + 3600)
    pending, peek, drawn = heap(sig(5, '"box"', at=T + 3600, name="shipped"))
    effects = await_any(
        AwaitAny(0, d.command, started), View("f", T + 3600, started, pending, peek=peek)
    )
    take, record, resolve = effects
    assert take == Take(SignalUpdate(5, CONSUMED, position=0))
    assert resolve == Resolve(AnyResult(1, "shipped", "box"))
    assert record.write == GO_ON and drawn == [5]


def test_an_any_without_an_event_parks_on_its_names_timer_and_children() -> None:
    d = AwaitAny(0, AnyOf([Suspend("a"), Suspend("b"), Sleep("t", "1m")]), None)
    pending, peek, drawn = heap(sig(1, '"x"', name="other"))
    record, park = await_any(d, View("f", T, None, pending, peek=peek))
    assert record.record.wake_at == T + 60
    assert park == Park('["a","b"]', "any", T + 60, signals=("a", "b"))
    assert drawn == []  # nothing drawn: a signal of another name stays pending


def test_an_any_child_that_ended_first_wins_and_the_losers_are_cancelled() -> None:
    command = AnyOf([Child(leaf, flow_id="c1"), Child(leaf, flow_id="c2")], cancel_losers=True)
    d = AwaitAny(0, command, None)
    start, *adopt = await_any(d, View("p", T, None))
    assert [c.flow_id for c in start.children] == ["c1", "c2"]
    assert adopt == [Adopt("c1", leaf), Adopt("c2", leaf)]
    ended = StoredFlow("c2", "h-leaf", "completed", "null", T, T + 5, result="9")
    running = StoredFlow("c1", "h-leaf", "suspended", "null", T, T + 1)
    later = AwaitAny(0, command, start.record)
    effects = await_any(
        later, View("p", T + 6, start.record), Settled({"c1": running, "c2": ended})
    )
    record, cancel, resolve = effects
    assert record.record.state == COMPLETED
    assert cancel == CancelFlow("c1", "it lost the Any of flow 'p'")
    assert resolve == Resolve(AnyResult(1, "h-leaf", 9))
