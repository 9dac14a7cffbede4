"""The collector is paused while a long history is replayed, and only then
(``crux_gen/gcpause.py``): on for short ones, back on after, never left off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from crux_gen import FlowContext, Registry, Step, Suspend, flow, resume, signal_flow
from crux_gen.gcpause import LONG, paused_gc
from crux_gen.stores.memory import MemoryStore


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:  # pragma: no cover (pytest runs with it on)
        gc.disable()


def test_a_long_history_pauses_the_collector_for_the_block_only() -> None:
    with paused_gc(LONG):
        assert not gc.isenabled()
    assert gc.isenabled()
    with paused_gc(LONG - 1):
        assert gc.isenabled()  # short: left on


def test_an_error_in_the_block_turns_the_collector_back_on() -> None:
    with pytest.raises(ValueError), paused_gc(LONG):
        raise ValueError("replay diverged")
    assert gc.isenabled()


def test_one_paused_by_someone_else_is_not_turned_on() -> None:
    gc.disable()
    try:
        with paused_gc(LONG):
            assert not gc.isenabled()
        assert not gc.isenabled()  # theirs to turn back on
    finally:
        gc.enable()


def test_two_replays_at_once_never_leave_it_off() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with paused_gc(LONG):
            inside.set()
            assert leave.wait(timeout=10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(timeout=10)
    with paused_gc(LONG):  # (paused by the other already: left to it)
        leave.set()
        thread.join(timeout=10)
    assert gc.isenabled()


def test_the_replay_of_a_long_flow_runs_with_the_collector_paused() -> None:
    seen: list[tuple[bool, bool]] = []

    @flow("gc-long", registry=Registry())
    def long(ctx: FlowContext) -> Any:
        for i in range(LONG):
            yield Step(f"s{i}", lambda: 1)
        seen.append((ctx.is_replaying, gc.isenabled()))
        return (yield Suspend("go"))

    store = MemoryStore()
    parked = long.run(store=store)
    assert parked.status == "suspended"
    signal_flow(parked.flow_id, "go", "on", store=store)
    assert resume(parked.flow_id, store=store, flows=[long]).value == "on"
    # Live, the first time; replayed with the collector paused; on again after.
    assert seen == [(False, True), (True, False)]
    assert gc.isenabled()
