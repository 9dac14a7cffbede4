"""The sans-IO interpreter, with no store: build a history, assert on decisions."""

from __future__ import annotations

from typing import Any

import pytest

from crux_gen import FlowContext, NonDeterminismError, Sleep, Step, Suspend, flow
from crux_gen.codec import ErrorInfo
from crux_gen.interpreter import (
    AwaitSignal,
    AwaitTimer,
    Failed,
    Finished,
    Interpreter,
    RunStep,
)
from crux_gen.records import COMPLETED, FAILED, WAITING, StoredRecord


def never() -> Any:
    raise AssertionError("a recorded step must not run on replay")


def body(ctx: FlowContext) -> Any:
    a = yield Step("a", never)
    try:
        yield Step("b", never)
    except ValueError as exc:
        a = f"{a}+{exc}"
    v = yield Suspend("go")
    yield Sleep("nap", "1h")
    return [a, v]


def interp(history: list[StoredRecord]) -> Interpreter:
    return Interpreter(body(FlowContext()), history, flow_id="f-1", flow_name="demo")


def test_a_fresh_flow_asks_to_run_its_first_step() -> None:
    decision = interp([]).next_decision()
    assert isinstance(decision, RunStep)
    assert (decision.position, decision.command.name, decision.record) == (0, "a", None)


def test_recorded_results_are_fed_back_without_running_anything() -> None:
    error = ErrorInfo("builtins.ValueError", "bad", "").encode()
    history = [
        StoredRecord(0, "step", "a", COMPLETED, result='"A"', attempts=1),
        StoredRecord(1, "step", "b", FAILED, error=error, attempts=1),
        StoredRecord(2, "suspend", "go", COMPLETED, result="7", attempts=1),
        StoredRecord(3, "sleep", "nap", COMPLETED, result="null", attempts=1),
    ]
    it = interp(history)
    assert it.is_replaying
    decision = it.next_decision()
    assert decision == Finished(["A+bad", 7])
    assert not it.is_replaying


def test_a_pending_wait_is_handed_to_the_runner_with_its_record() -> None:
    waiting = StoredRecord(2, "suspend", "go", WAITING, started_at=1.0, deadline=2.0)
    history = [
        StoredRecord(0, "step", "a", COMPLETED, result='"A"'),
        StoredRecord(1, "step", "b", COMPLETED, result="null"),
        waiting,
    ]
    decision = interp(history).next_decision()
    assert isinstance(decision, AwaitSignal)
    assert decision.record == waiting


def test_live_outcomes_are_sent_in_and_failures_thrown_in() -> None:
    it = interp([])
    assert isinstance(it.next_decision(), RunStep)
    it.resolve("A")
    assert isinstance(it.next_decision(), RunStep)
    it.fail(ValueError("boom"))
    assert isinstance(it.next_decision(), AwaitSignal)
    it.resolve({"ok": 1})
    assert isinstance(it.next_decision(), AwaitTimer)
    it.resolve(None)
    assert it.next_decision() == Finished(["A+boom", {"ok": 1}])


def test_a_different_command_at_a_recorded_position_is_non_determinism() -> None:
    history = [StoredRecord(0, "suspend", "a", COMPLETED, result="1")]
    with pytest.raises(NonDeterminismError) as info:
        interp(history).next_decision()
    assert (info.value.position, info.value.recorded, info.value.new) == (
        0,
        "Suspend('a')",
        "Step('a')",
    )


def test_an_exception_in_the_body_is_a_failed_decision() -> None:
    def broken(ctx: FlowContext) -> Any:
        yield Step("a", never)
        raise KeyError("k")

    it = Interpreter(broken(FlowContext()), [], flow_id="f", flow_name="b")
    it.next_decision()
    it.resolve(1)
    decision = it.next_decision()
    assert isinstance(decision, Failed)
    assert isinstance(decision.exception, KeyError)


def test_yielding_something_that_is_not_a_command_is_thrown_back_in() -> None:
    def sloppy(ctx: FlowContext) -> Any:
        try:
            yield "not a command"
        except TypeError as exc:
            return str(exc)

    decision = Interpreter(sloppy(FlowContext()), [], flow_id="f", flow_name="s").next_decision()
    assert isinstance(decision, Finished)
    assert "yielded 'not a command'" in decision.value


def test_a_flow_can_be_stepped_by_hand_with_no_store() -> None:
    @flow("by-hand")
    def onboarding(ctx: FlowContext) -> Any:
        yield Step("send-welcome", lambda: None)
        v = yield Suspend("email-verified", timeout="24h")
        plan = yield Step("plan", lambda: f"plan for {ctx.input['name']}")
        return (plan, v)

    gen = onboarding(FlowContext(input={"name": "Henri"}, flow_id="t", name="by-hand"))
    first = next(gen)
    assert isinstance(first, Step) and first.name == "send-welcome"
    cmd = gen.send(None)
    assert isinstance(cmd, Suspend) and cmd.name == "email-verified"
    cmd = gen.send({"verified_at": "now"})
    assert isinstance(cmd, Step) and cmd.fn() == "plan for Henri"
    with pytest.raises(StopIteration) as stop:
        gen.send("the plan")
    assert stop.value.value == ("the plan", {"verified_at": "now"})
    assert onboarding.fn.__name__ == "onboarding"
    assert onboarding.name == "by-hand"


def test_hand_stepping_can_throw_a_step_failure_in() -> None:
    @flow("by-hand-throw")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("charge", lambda: None)
        except ConnectionError:
            return "compensated"

    gen = f(FlowContext())
    next(gen)
    with pytest.raises(StopIteration) as stop:
        gen.throw(ConnectionError("down"))
    assert stop.value.value == "compensated"


def test_a_hand_made_context_gives_fresh_helper_values() -> None:
    ctx = FlowContext(input={}, flow_id="t", name="x")
    assert ctx.now().tzinfo is not None
    assert ctx.uuid4() != ctx.uuid4()
    assert 0 <= ctx.random() < 1
    assert ctx.is_replaying is False


def test_returning_before_the_recorded_history_is_consumed_is_non_determinism() -> None:
    def short(ctx: FlowContext) -> Any:
        return (yield Step("a", never))

    history = [
        StoredRecord(0, "step", "a", COMPLETED, result='"A"'),
        StoredRecord(1, "step", "b", COMPLETED, result='"B"'),
    ]
    it = Interpreter(short(FlowContext()), history, flow_id="f-1", flow_name="demo")
    with pytest.raises(NonDeterminismError, match="position 1 recorded Step\\('b'\\)") as info:
        it.next_decision()
    assert "the end of the flow" in str(info.value)


def test_raising_before_the_recorded_history_is_consumed_is_non_determinism() -> None:
    def raises(ctx: FlowContext) -> Any:
        yield Step("a", never)
        raise RuntimeError("new code raises here")

    history = [
        StoredRecord(0, "step", "a", COMPLETED, result='"A"'),
        StoredRecord(1, "suspend", "go", WAITING),
    ]
    it = Interpreter(raises(FlowContext()), history, flow_id="f-1", flow_name="demo")
    with pytest.raises(NonDeterminismError, match="position 1 recorded Suspend\\('go'\\)"):
        it.next_decision()
