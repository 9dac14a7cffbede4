"""Every name a user passes is one every store can keep: a NUL character (which
PostgreSQL refuses in text) or a lone surrogate (which is not UTF-8) is refused
where the name is given, with an ``InvalidValueError`` (a ``ValueError``) naming
it, before anything is written.

Before, a NUL passed the checks: on PostgreSQL the write failed and the step ran
again at every resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import crux_gen
from crux_gen import (
    Child,
    CruxError,
    FlowContext,
    InvalidValueError,
    Sleep,
    Step,
    Suspend,
    Version,
    WaitUntil,
    cancel_flow,
    flow,
    get_flow,
    list_flows,
    resume,
    signal_flow,
)
from crux_gen.flow import check_flow_id

NUL = "charge\x00card"
SURROGATE = "charge\udcffcard"


@flow("names-target")
def target(ctx: FlowContext) -> Any:
    yield Suspend("go")
    return "done"


MAKERS: dict[str, Callable[[str], object]] = {
    "Step": lambda n: Step(n, lambda: 1),
    "Suspend": lambda n: Suspend(n),
    "WaitUntil": lambda n: WaitUntil(n, lambda: True),
    "Sleep": lambda n: Sleep(n, "1s"),
    "Version": lambda n: Version(n, latest=1),
    "Child flow_id": lambda n: Child(target, flow_id=n),
    "Any branch": lambda n: crux_gen.Any([Suspend(n), Sleep("t", "1s")]),
    "@flow": lambda n: flow(n),
    "flow id": check_flow_id,
}


@pytest.mark.parametrize("bad", [NUL, SURROGATE, "\x00"], ids=["nul", "surrogate", "only-nul"])
@pytest.mark.parametrize("maker", list(MAKERS))
def test_a_name_no_store_can_keep_is_refused_where_it_is_given(maker: str, bad: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        MAKERS[maker](bad)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, CruxError)
    assert repr(bad) in str(caught.value)  # it names the value


CALLS: list[str] = []


def charge() -> str:
    CALLS.append("charge")
    return "charged"


@flow("names-nul-step")
def nul_step(ctx: FlowContext) -> Any:
    yield Step(ctx.input, charge)
    return "done"


@flow("names-nul-child")
def nul_child(ctx: FlowContext) -> Any:
    return (yield Child(target, flow_id=ctx.input))


@flow("names-nul-wait")
def nul_wait(ctx: FlowContext) -> Any:
    return (yield Suspend(ctx.input))


@pytest.mark.parametrize("body", [nul_step, nul_child, nul_wait], ids=lambda f: f.name)
def test_a_flow_yielding_a_nul_name_fails_at_once_and_writes_no_record(
    store: Any, body: Any
) -> None:
    CALLS.clear()
    r = body.run(input=NUL, store=store)
    assert r.status == "failed"
    assert CALLS == []  # the step never ran
    info = get_flow(r.flow_id, store=store)
    assert info.history == ()
    assert info.error is not None and info.error.type == "crux_gen.errors.InvalidValueError"
    assert repr(NUL) in info.error.message
    assert [f.flow_id for f in list_flows(store=store)] == [r.flow_id]  # no child either
    assert resume(r.flow_id, store=store).status == "failed"  # and it stays so
    assert CALLS == []


def test_a_signal_name_or_key_holding_nul_is_refused_and_nothing_stored(store: Any) -> None:
    r = target.run(store=store)
    with pytest.raises(InvalidValueError, match="signal name"):
        signal_flow(r.flow_id, "go\x00", None, store=store)
    with pytest.raises(InvalidValueError, match="signal key"):
        signal_flow(r.flow_id, "go", None, store=store, key="delivery\x00-1")
    assert get_flow(r.flow_id, store=store).signals == ()
    assert get_flow(r.flow_id, store=store).status == "suspended"


def test_a_flow_id_holding_nul_is_refused_and_nothing_stored(store: Any) -> None:
    with pytest.raises(InvalidValueError, match="flow id"):
        target.run(store=store, flow_id="order\x00-1")
    assert list_flows(store=store) == []
    with pytest.raises(InvalidValueError, match="flow id"):
        resume("order\x00-1", store=store)


def test_a_cancel_reason_holding_nul_is_refused_and_the_flow_runs_on(store: Any) -> None:
    r = target.run(store=store)
    with pytest.raises(InvalidValueError, match="cancel reason"):
        cancel_flow(r.flow_id, "gone\x00", store=store)
    assert get_flow(r.flow_id, store=store).status == "suspended"
