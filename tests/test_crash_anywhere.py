"""Crashing after any number of writes and resuming gives the same result as one
straight run, and no completed step runs twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from crux_gen import FakeClock, FlowContext, Retry, Sleep, Step, Suspend, flow, signal_flow
from crux_gen.runner import resume
from crux_gen.stores.memory import MemoryStore


class Crash(BaseException):
    """The process dies: nothing after it runs."""


class DyingStore:
    """A MemoryStore seen from a process that dies at its *at*-th commit, before or
    after that commit lands; once dead it does nothing (no release, no renewal)."""

    def __init__(self, inner: MemoryStore, at: int, after: bool) -> None:
        self.inner, self.at, self.after = inner, at, after
        self.commits = 0
        self.dead = False
        self.clock = inner.clock
        self.lease_ttl = inner.lease_ttl

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self.dead:
            raise Crash
        self.commits += 1
        if self.commits == self.at and not self.after:
            self.dead = True
            raise Crash
        outcome = self.inner.commit(*args, **kwargs)
        if self.commits == self.at:
            self.dead = True
            raise Crash
        return outcome

    def release(self, *args: Any, **kwargs: Any) -> None:
        if not self.dead:
            self.inner.release(*args, **kwargs)

    def renew(self, *args: Any, **kwargs: Any) -> bool:
        return False if self.dead else self.inner.renew(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


ran: Counter[str] = Counter()
flaky_failures = {"left": 0}


def step(name: str, value: Any) -> Step:
    def fn() -> Any:
        ran[name] += 1
        return value

    return Step(name, fn)


def flaky() -> str:
    ran["flaky"] += 1
    if flaky_failures["left"] > 0:
        flaky_failures["left"] -= 1
        raise ConnectionError("blip")
    return "ok"


@flow("crash-anywhere")
def crash_anywhere(ctx: FlowContext) -> Any:
    a = yield step("a", {"n": 1})
    ctx.now()
    b = yield step("b", [a["n"], 2])
    go = yield Suspend("go")
    yield Sleep("nap", "1m")
    c = yield Step("flaky", flaky, retry=Retry(attempts=3, delay="10ms"))
    d = yield step("d", {"from": [b, go, c]})
    return {"a": a, "d": d}


def straight_run() -> tuple[Any, int]:
    """The result of one uninterrupted run, and how many commits it made."""
    ran.clear()
    flaky_failures["left"] = 1
    inner = MemoryStore(clock=FakeClock())
    counting = DyingStore(inner, at=10**9, after=True)
    r = crash_anywhere.run(store=counting, flow_id="f")
    signal_flow("f", "go", "signal", store=inner)
    r = resume("f", store=counting)
    inner.clock.advance("2m")  # type: ignore[attr-defined]
    r = resume("f", store=counting)
    assert r.status == "completed"
    return r.value, counting.commits


EXPECTED, COMMITS = straight_run()


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
@pytest.mark.parametrize("at", range(1, COMMITS + 1))
def test_a_crash_after_any_write_then_resuming_gives_the_straight_result(
    at: int, after: bool
) -> None:
    ran.clear()
    flaky_failures["left"] = 1
    clock = FakeClock()
    inner = MemoryStore(clock=clock, lease_ttl="30s")
    signal_flow_sent = False
    process = DyingStore(inner, at=at, after=after)
    result = None
    for _ in range(12):  # a few "processes", each may die; the clock moves between them
        try:
            if inner._flows.get("f") is None:
                result = crash_anywhere.run(store=process, flow_id="f")
            else:
                result = resume("f", store=process)
        except Crash:
            process = DyingStore(inner, at=10**9, after=True)  # the next process lives
            clock.advance(inner.lease_ttl + timedelta(seconds=1))
            continue
        if result.status == "completed":
            break
        if not signal_flow_sent:
            signal_flow("f", "go", "signal", store=inner)
            signal_flow_sent = True
        clock.advance("2m")
    assert result is not None and result.status == "completed"
    assert result.value == EXPECTED
    # A step runs again only when the crash hit before its result was recorded.
    for name in ("a", "b", "d"):
        assert 1 <= ran[name] <= 2, (name, ran)
    assert sum(ran[n] - 1 for n in ("a", "b", "d")) <= 1
    assert 2 <= ran["flaky"] <= 3  # one blip, then success; at most one re-run
