"""Crashing after any number of writes and resuming gives the same result as one
straight run, and no completed step runs twice: on every store.

``Process`` and ``CrashPlan`` are also used by ``tests/test_properties.py``. They
wrap a store without knowing its methods' signatures: every call goes through
``__getattr__``; calls to the write methods are counted, and ``commit`` is where
a process may die.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    MemoryStore,
    Retry,
    Sleep,
    SQLiteStore,
    Step,
    Suspend,
    flow,
    signal_flow,
)
from crux_gen.runner import resume

#: The store methods that write; the wrapper counts every call to them.
WRITES = frozenset({"commit", "start", "claim", "add_signal", "cancel", "release", "renew"})

STORES = ["memory", "sqlite"]


class Crash(BaseException):
    """The process dies: nothing after it runs (a ``BaseException``, so no
    ``except Exception`` in the library catches it)."""


class CrashPlan:
    """Where the processes of one scenario die: at the k-th commit of the whole
    scenario (counted over all its processes), before or after that commit lands.

    ``points`` maps k to ``True`` (die after the commit lands) or ``False`` (die
    before it does). Subclasses may override ``landed`` and ``crashed``.
    """

    def __init__(self, points: dict[int, bool] | None = None) -> None:
        self.points = dict(points or {})
        self.commits = 0
        self.writes: Counter[str] = Counter()
        self.crashes: list[tuple[int, bool]] = []

    def landed(self) -> None:
        """A commit went through (called before a crash after it)."""

    def returned(self, name: str) -> None:
        """The write method *name* returned to the process."""

    def crashed(self, landed: bool) -> None:
        """The process dies at this commit, which *landed* or not."""


class Process:
    """A store as one process sees it. The process dies where its ``CrashPlan``
    says; once dead it does nothing at all (no release, no renewal, no read), as
    after a SIGKILL: its lease is left to expire."""

    def __init__(self, store: Any, plan: CrashPlan) -> None:
        self._store = store
        self._plan = plan
        self.dead = False

    def _die(self, landed: bool) -> Crash:
        self.dead = True
        self._plan.crashes.append((self._plan.commits, landed))
        self._plan.crashed(landed)
        return Crash()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value  # clock, lease_ttl, ...

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                if name == "renew":  # from the lease keeper's thread: lose the lease quietly
                    return False
                raise Crash
            if name not in WRITES:
                return value(*args, **kwargs)
            plan = self._plan
            plan.writes[name] += 1
            if name != "commit":
                answer = value(*args, **kwargs)
                plan.returned(name)
                return answer
            plan.commits += 1
            after = plan.points.get(plan.commits)
            if after is False:
                raise self._die(landed=False)
            outcome = value(*args, **kwargs)
            plan.landed()
            if after:
                raise self._die(landed=True)
            plan.returned(name)
            return outcome

        return call


class Stores:
    """Opens, per simulated process, a store on one shared database: the same
    ``MemoryStore``, or a new ``SQLiteStore`` on one file (``synchronous="NORMAL"``),
    all on one ``FakeClock``. ``close()`` closes every one opened."""

    def __init__(self, kind: str, path: Path, clock: FakeClock, lease_ttl: str = "30s") -> None:
        self.kind, self.path, self.clock, self.lease_ttl = kind, path, clock, lease_ttl
        self._memory = MemoryStore(clock=clock, lease_ttl=lease_ttl) if kind == "memory" else None
        self._opened: list[Any] = []
        self.outside = self.open()  # what signals and inspects the flow from outside

    def open(self) -> Any:
        if self._memory is not None:
            return self._memory
        store = SQLiteStore(
            self.path, synchronous="NORMAL", clock=self.clock, lease_ttl=self.lease_ttl
        )
        self._opened.append(store)
        return store

    def process(self, plan: CrashPlan) -> Process:
        return Process(self.open(), plan)

    def after_crash(self) -> None:
        """Time passes until the dead process's lease has expired."""
        self.clock.advance(self.outside.lease_ttl + timedelta(seconds=1))

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Stores]]:
    made: list[Stores] = []

    def make() -> Stores:
        made.append(Stores(request.param, tmp_path / f"crux-{len(made)}.db", FakeClock()))
        return made[-1]

    yield make
    for s in made:
        s.close()


# -- the flow --------------------------------------------------------------------

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


def run_scenario(s: Stores, plan: CrashPlan) -> Any:
    """Run the flow to the end through processes that die as *plan* says; the
    signal is sent once the flow has parked, the clock moves between runs."""
    ran.clear()
    flaky_failures["left"] = 1
    process = s.process(plan)
    started = signalled = False
    result = None
    for _ in range(12):  # a few "processes", each may die
        try:
            if not started:
                started = True  # the flow exists once start() ran: it is no crash point
                result = crash_anywhere.run(store=process, flow_id="f")
            else:
                result = resume("f", store=process)
        except Crash:
            process = s.process(plan)  # a new process, on the same database
            s.after_crash()
            continue
        if result.status == "completed":
            break
        if not signalled:
            signal_flow("f", "go", "signal", store=s.outside)
            signalled = True
        s.clock.advance("2m")
    return result


def straight_run() -> tuple[Any, int]:
    """The result of one uninterrupted run on a MemoryStore, and how many commits it made."""
    plan = CrashPlan()
    s = Stores("memory", Path("unused"), FakeClock())
    result = run_scenario(s, plan)
    assert result is not None and result.status == "completed"
    assert plan.crashes == []
    return result.value, plan.commits


EXPECTED, COMMITS = straight_run()


def test_a_straight_run_makes_the_same_commits_on_every_store(
    stores: Callable[[], Stores],
) -> None:
    plan = CrashPlan()
    result = run_scenario(stores(), plan)
    assert result is not None and result.status == "completed"
    assert (result.value, plan.commits) == (EXPECTED, COMMITS)
    assert plan.writes["commit"] == COMMITS
    assert dict(ran) == {"a": 1, "b": 1, "flaky": 2, "d": 1}


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
@pytest.mark.parametrize("at", range(1, COMMITS + 1))
def test_a_crash_after_any_write_then_resuming_gives_the_straight_result(
    stores: Callable[[], Stores], at: int, after: bool
) -> None:
    plan = CrashPlan({at: after})
    result = run_scenario(stores(), plan)
    assert plan.crashes == [(at, after)]
    assert result is not None and result.status == "completed"
    assert result.value == EXPECTED
    # A step runs again only when the crash hit before its result was recorded.
    for name in ("a", "b", "d"):
        assert 1 <= ran[name] <= 2, (name, ran)
    assert sum(ran[n] - 1 for n in ("a", "b", "d")) <= 1
    assert 2 <= ran["flaky"] <= 3  # one blip, then success; at most one re-run
    if after:  # every commit that landed stays landed: nothing runs twice
        assert sum(ran.values()) == 5, ran
