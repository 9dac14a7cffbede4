"""``crux-gen show`` after ``ContinueAsNew``: a signal an earlier run consumed is
never credited to the record the current run holds at the same position (signal
rows keep the position, not the run); it says it was consumed in an earlier run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from crux_gen import (
    Any as AnyOf,
)
from crux_gen import (
    ContinueAsNew,
    FakeClock,
    Registry,
    Sleep,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.cli.show import show_lines
from crux_gen.control import consumed_in_this_run

registry = Registry()


@flow("show-runs", registry=registry)
def runs(ctx: Any) -> Any:
    if ctx.input == 1:  # run 1: position 0 consumes 'go', then a new run
        yield Suspend("go")
        yield ContinueAsNew(input=2)
    if ctx.input == 2:  # run 2: position 0 is a step, position 1 waits again
        yield Step("two", lambda: "stepped")
        yield ContinueAsNew(input=3)
    # run 3: position 0 waits for 'go' again
    return (yield Suspend("go"))


@flow("show-any-runs", registry=registry)
def any_runs(ctx: Any) -> Any:
    won = yield AnyOf([Suspend("go"), Sleep("nap", "1h")])
    if ctx.input == 1:
        yield ContinueAsNew(input=2)
    return won.name


def timeline_line(lines: list[str], position: int) -> str:
    [line] = [x for x in lines if x.startswith(f"  {position:>3}  ")]
    return line


def signal_line(lines: list[str], signal_id: int) -> str:
    [line] = [x for x in lines if x.startswith(f"  #{signal_id:<3} ")]
    return line


@pytest.mark.parametrize("payloads", [("first", "second"), ("same", "same")])
def test_a_signal_of_an_earlier_run_is_not_credited_to_the_record_now_at_its_position(
    store: Any, clock: FakeClock, payloads: tuple[str, str]
) -> None:
    flow_id = runs.run(input=1, store=store).flow_id
    signal_flow(flow_id, "go", payloads[0], store=store)
    clock.advance("1s")
    assert runs.run(resume=flow_id, store=store).status == "suspended"  # run 3 waits
    info = get_flow(flow_id, store=store)
    assert (info.run, info.history[0].kind) == (3, "suspend")
    [first] = info.signals
    assert (first.state, first.position) == ("consumed", 0)

    lines = show_lines(info, clock.now(), full=False, fit=100)
    assert "signal #" not in timeline_line(lines, 0)  # run 3's wait took nothing yet
    assert "consumed in an earlier run, at #0" in signal_line(lines, first.id)
    assert consumed_in_this_run(info) == {}

    # Run 3 consumes another 'go' at the same position: that one is credited.
    clock.advance("1s")
    signal_flow(flow_id, "go", payloads[1], store=store)
    done = runs.run(resume=flow_id, store=store)
    assert (done.status, done.value) == ("completed", payloads[1])
    info = get_flow(flow_id, store=store)
    second = next(s for s in info.signals if s.id != first.id)
    lines = show_lines(info, clock.now(), full=False, fit=100)
    assert f"signal #{second.id}" in timeline_line(lines, 0)
    assert f"signal #{first.id}" not in timeline_line(lines, 0)
    assert "consumed by #0" in signal_line(lines, second.id)
    assert "consumed in an earlier run, at #0" in signal_line(lines, first.id)
    assert consumed_in_this_run(info) == {0: second.id}


def test_a_step_at_the_position_of_an_earlier_runs_wait_takes_no_signal(
    store: Any, clock: FakeClock
) -> None:
    @flow("show-step-runs", registry=registry)
    def step_runs(ctx: Any) -> Any:
        if ctx.input == 1:
            yield Suspend("go")
            yield ContinueAsNew(input=2)
        yield Step("two", lambda: "stepped")
        return (yield Suspend("later"))

    flow_id = step_runs.run(input=1, store=store).flow_id
    signal_flow(flow_id, "go", "first", store=store)
    assert step_runs.run(resume=flow_id, store=store).status == "suspended"
    info = get_flow(flow_id, store=store)
    assert (info.run, info.history[0].kind) == (2, "step")
    lines = show_lines(info, clock.now(), full=False, fit=100)
    assert "signal #" not in timeline_line(lines, 0)
    assert "in an earlier run" in signal_line(lines, info.signals[0].id)


def test_an_any_won_by_a_signal_in_an_earlier_run(store: Any, clock: FakeClock) -> None:
    flow_id = any_runs.run(input=1, store=store).flow_id
    signal_flow(flow_id, "go", "won", store=store)
    assert any_runs.run(resume=flow_id, store=store).status == "suspended"
    info = get_flow(flow_id, store=store)
    assert (info.run, info.history[0].kind, info.history[0].state) == (2, "any", "waiting")
    assert consumed_in_this_run(info) == {}
    clock.advance("2h")  # run 2's Any is won by its timer: no signal for it
    assert any_runs.run(resume=flow_id, store=store).value == "nap"
    info = get_flow(flow_id, store=store)
    lines = show_lines(info, clock.now(), full=False, fit=100)
    assert "signal #" not in timeline_line(lines, 0)
    assert consumed_in_this_run(info) == {}


def test_a_first_run_credits_by_position_as_before(store: Any, clock: FakeClock) -> None:
    flow_id = runs.run(input=3, store=store).flow_id
    signal_flow(flow_id, "go", "only", store=store)
    assert runs.run(resume=flow_id, store=store).value == "only"
    info = get_flow(flow_id, store=store)
    assert consumed_in_this_run(info) == {0: info.signals[0].id}
    lines = show_lines(info, datetime.now().astimezone(), full=False, fit=100)
    assert f"signal #{info.signals[0].id}" in timeline_line(lines, 0)
