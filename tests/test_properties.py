"""Property: a flow script run with crashes anywhere ends as the straight run does.

Hypothesis writes random flow scripts (steps that succeed, fail a few times first
under an inline ``Retry``, or fail for good and are caught; ``Suspend`` for a named
signal, with or without a timeout, sent before the flow reaches it, by a step while
the flow runs, while it waits, while a run of it starts (also as its deadline
passes), after the deadline or never; ``Sleep``; ``ctx.now()``/``ctx.uuid4()``) and a
set of crash points (the k-th commit of the whole scenario, before or after it
lands). Each script runs (a) straight through and (b) with a process dying at each
crash point and a new one resuming after the dead one's lease expired.

Each run keeps the promise on its own (``check_promises``: no signal used twice, none
received in time lost, none taken after its deadline), and (b) ends as (a) did
(``check_same``): the same status, value and history, the same signals consumed, and
every step run as often, except for one extra run of a step per crash that hit while
that step was in flight (called, its result not yet recorded): a step whose record
landed never runs again.

Only the public API and the crashing store wrapper of ``test_crash_anywhere`` are
used, so this keeps working while the store protocol changes under it.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crux_gen import (
    FakeClock,
    FlowClosedError,
    FlowContext,
    Retry,
    Sleep,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.runner import resume
from tests.test_crash_anywhere import STORES, Crash, CrashPlan, Stores

# Waits are long next to what crashes cost (lease_ttl + 1 s each, at most
# MAX_CRASHES of them), so a crash never makes a signal late or lets a timer pass
# unobserved: the straight run and the crashing run see the same parks.
SLEEP = "1h"
TIMEOUT = "1d"
MAX_CRASHES = 5


# -- the world the flow's steps act on ---------------------------------------------


class World:
    """Side effects of the step functions of the current run."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight: str | None = None  # the last step called, its result not yet landed
        self.outside: Any = None  # the store a step signals through (another process)

    def reset(self, outside: Any) -> None:
        self.calls.clear()
        self.in_flight = None
        self.outside = outside


WORLD = World()


def step_value(n: int) -> dict[str, int]:
    return {"step": n, "value": n * 7 + 1}


def flaky_step(name: str, n: int, fails: int) -> dict[str, int]:
    WORLD.calls[name] += 1
    WORLD.in_flight = name
    if WORLD.calls[name] <= fails:
        raise ConnectionError(f"{name}: blip {WORLD.calls[name]}")
    return step_value(n)


def doomed_step(name: str, n: int) -> None:
    WORLD.calls[name] += 1
    WORLD.in_flight = name
    raise ValueError(f"step {n} failed for good")


def send_step(name: str, n: int) -> str:
    """A step whose side effect signals the flow while it runs."""
    WORLD.calls[name] += 1
    WORLD.in_flight = name
    signal_flow("p", f"sig{n}", {"signal": n}, store=WORLD.outside)
    return "sent"


def retry(attempts: int) -> Retry | None:
    return Retry(attempts=attempts, backoff="fixed", delay="10ms") if attempts > 1 else None


@flow("property-script")
def script_flow(ctx: FlowContext) -> Any:
    out: list[Any] = []
    yield Sleep("begin", SLEEP)
    for n, op in enumerate(ctx.input["ops"]):
        kind = op["op"]
        if kind == "step":
            name = f"s{n}"
            fn = partial(flaky_step, name, n, op["fails"])
            out.append((yield Step(name, fn, retry=retry(op["fails"] + 1))))
        elif kind == "doomed":
            name = f"s{n}"
            try:
                yield Step(name, partial(doomed_step, name, n), retry=retry(op["attempts"]))
            except ValueError as exc:
                out.append(f"caught {type(exc).__name__}: {exc}")
            else:
                out.append("not raised")
        elif kind == "suspend":
            if op["when"] == "in-run":
                yield Step(f"send{n}", partial(send_step, f"send{n}", n))
            timeout = TIMEOUT if op["timeout"] else None
            out.append((yield Suspend(f"sig{n}", timeout=timeout)))
        elif kind == "sleep":
            yield Sleep(f"nap{n}", SLEEP)
            out.append("slept")
        elif kind == "now":
            out.append(["now", ctx.now().isoformat()])
        else:
            assert kind == "uuid4"
            out.append(["uuid4", str(ctx.uuid4())])
    return out


# -- scripts -----------------------------------------------------------------------

# When the signal a Suspend waits for is sent:
# - "before": while the flow is parked at an earlier Sleep (or its first one);
# - "in-run": by a step just before the Suspend, while the flow runs;
# - "waiting": once the flow has parked at the Suspend;
# - "resuming": while the next run of the parked flow starts (after it took the lease);
# - "resuming-late": the same, and the wait's deadline passes before that run looks
#   (the signal came in time);
# - "late": after the wait's deadline (refused); "never".
WHEN = ("before", "in-run", "waiting", "resuming", "resuming-late", "late", "never")
NEEDS_TIMEOUT = ("resuming-late", "late")


def _step(fails: int) -> dict[str, Any]:
    return {"op": "step", "fails": fails}


def _doomed(attempts: int) -> dict[str, Any]:
    return {"op": "doomed", "attempts": attempts}


def _suspend(timeout: bool, when: str) -> dict[str, Any]:
    return {"op": "suspend", "timeout": timeout or when in NEEDS_TIMEOUT, "when": when}


SUSPENDS = st.builds(_suspend, st.booleans(), st.sampled_from(WHEN))
OPS = st.one_of(
    st.builds(_step, st.integers(0, 2)),
    st.builds(_doomed, st.integers(1, 2)),
    SUSPENDS,
    SUSPENDS,
    st.sampled_from([{"op": "sleep"}, {"op": "now"}, {"op": "uuid4"}]),
)


SCRIPTS = st.lists(OPS, min_size=1, max_size=8)


def anchors(ops: list[dict[str, Any]]) -> dict[str, list[int]]:
    """For each park before a Suspend: the signals sent "before" (while the flow is
    parked at the last Sleep before that Suspend, or at the first one)."""
    found: dict[str, list[int]] = {}
    last = "begin"
    for n, op in enumerate(ops):
        if op["op"] == "sleep":
            last = f"nap{n}"
        elif op["op"] == "suspend" and op["when"] == "before":
            found.setdefault(last, []).append(n)
    return found


# -- running a script --------------------------------------------------------------


class Tracking(CrashPlan):
    """A crash plan that counts, per step, the crashes that hit while it was in
    flight (called, its result not landed): each allows that step one more run."""

    def __init__(self, points: dict[int, bool] | None = None) -> None:
        super().__init__(points)
        self.extra: Counter[str] = Counter()
        self.on_claim: list[Callable[[], None]] = []  # what happens while the next run starts

    def returned(self, name: str) -> None:
        if name in ("claim", "start"):
            actions, self.on_claim = self.on_claim, []
            for action in actions:
                action()

    def landed(self) -> None:
        WORLD.in_flight = None

    def crashed(self, landed: bool) -> None:
        if not landed and WORLD.in_flight is not None:
            self.extra[WORLD.in_flight] += 1
        WORLD.in_flight = None


class Outcome:
    """What a run of a script ended with, as a user can see it."""

    def __init__(self, s: Stores, plan: Tracking, result: Any, sends: dict[str, str]) -> None:
        info = get_flow("p", store=s.outside)
        self.info = info
        self.status = result.status
        self.value = result.value
        self.error = result.error
        self.waiting_for = result.waiting_for if result.status == "suspended" else None
        self.sends = sends
        self.calls = Counter(WORLD.calls)
        self.extra = plan.extra
        self.crashes = list(plan.crashes)
        self.commits = plan.commits
        self.stored_status = info.status
        self.history = [(h.kind, h.name, h.state) for h in info.history]
        self.step_results = [
            (h.name, h.result) for h in info.history if h.kind == "step" and h.state == "completed"
        ]
        self.volatile = [[h.kind, h.result] for h in info.history if h.kind in ("now", "uuid4")]
        self.consumed = sorted(
            (s.position, s.name, s.payload) for s in info.signals if s.state == "consumed"
        )


def send(s: Stores, sends: dict[str, str], n: int) -> None:
    """Send signal ``sig{n}`` from outside, once; note whether ``signal_flow`` took it."""
    name = f"sig{n}"
    if name in sends:
        return
    try:
        signal_flow("p", name, {"signal": n}, store=s.outside)
    except FlowClosedError:
        sends[name] = "refused"
    else:
        sends[name] = "sent"


def arrive(s: Stores, sends: dict[str, str], n: int, deadline: datetime | None) -> None:
    """Send ``sig{n}`` while a run starts; then let the clock reach *deadline*, if given."""
    send(s, sends, n)
    if deadline is not None:
        s.clock.advance(max(deadline - s.clock.now(), timedelta(0)))


def run_script(s: Stores, ops: list[dict[str, Any]], plan: Tracking) -> Outcome:
    """Run the script until it finishes or parks for good, through processes that
    die as *plan* says; signals go in and the clock moves as the script says."""
    WORLD.reset(s.outside)
    before = anchors(ops)
    process = s.process(plan)
    started = False
    sends: dict[str, str] = {}
    result = None
    for _ in range(100):
        try:
            if not started:
                started = True  # start() is no crash point: the flow exists from here on
                result = script_flow.run(input={"ops": ops}, store=process, flow_id="p")
            else:
                result = resume("p", store=process)
        except Crash:
            process = s.process(plan)  # a new process on the same database
            s.after_crash()
            continue
        if result.status != "suspended":
            break
        waiting = result.waiting_for or ""
        for n in before.get(waiting, ()):
            send(s, sends, n)
        n = int(waiting[3:]) if waiting.startswith("sig") else -1
        when = ops[n]["when"] if n >= 0 else None
        if when == "waiting" and waiting not in sends:
            send(s, sends, n)
            continue
        if when in ("resuming", "resuming-late") and waiting not in sends:
            # The signal arrives, in time, while the next run is starting (after it
            # took the lease); with "resuming-late", the deadline passes meanwhile.
            deadline = result.wake_at if when == "resuming-late" else None
            plan.on_claim.append(partial(arrive, s, sends, n, deadline))
            continue
        if result.wake_at is None:
            break  # parked for good: nothing will come
        s.clock.advance(max(result.wake_at - s.clock.now(), timedelta(0)) + timedelta(seconds=1))
        if when == "late":
            send(s, sends, n)
    else:
        pytest.fail(f"the flow did not settle: {result}")
    return Outcome(s, plan, result, sends)


def straight(kind: str, ops: list[dict[str, Any]], root: Path) -> Outcome:
    s = Stores(kind, root / "straight.db", FakeClock())
    try:
        return run_script(s, ops, Tracking())
    finally:
        s.close()


def crashing(kind: str, ops: list[dict[str, Any]], points: dict[int, bool], root: Path) -> Outcome:
    s = Stores(kind, root / "crashing.db", FakeClock())
    try:
        return run_script(s, ops, Tracking(points))
    finally:
        s.close()


def check_promises(o: Outcome, ops: list[dict[str, Any]]) -> None:
    """The script never fails (every failure in it is retried or caught). Each signal
    is consumed at most once, by a wait of its name, which evaluates to its payload;
    a wait expires only when no signal for it came before its deadline, and from the
    deadline on ``signal_flow`` refuses signals."""
    assert o.error is None, f"the flow failed: {o.error}"
    info = o.info
    waits = {h.position: h for h in info.history if h.kind == "suspend"}
    consumed: Counter[int] = Counter()
    for signal in info.signals:
        if signal.state == "consumed":
            assert signal.position is not None, signal
            wait = waits[signal.position]
            assert (wait.name, wait.state, wait.result) == (
                signal.name,
                "completed",
                signal.payload,
            )
            consumed[signal.position] += 1
    for position, wait in waits.items():
        assert consumed[position] == (wait.state == "completed"), ("used twice", wait)
        in_time = [
            signal
            for signal in info.signals
            if signal.name == wait.name
            and signal.state != "consumed"
            and (wait.deadline is None or signal.created_at < wait.deadline)
        ]
        if wait.state == "expired" or (wait.state == "waiting" and info.status == "suspended"):
            assert not in_time, f"a signal received in time was lost: {wait} {in_time}"
        if wait.state == "expired" and ops[int(wait.name[3:])]["when"] == "late":
            assert o.sends.get(wait.name) == "refused", o.sends


def check_same(a: Outcome, b: Outcome) -> None:
    """Run *b* (with crashes) ended as the straight run *a* did."""
    assert a.crashes == []
    assert (b.status, b.waiting_for) == (a.status, a.waiting_for)
    assert b.stored_status == a.stored_status == a.status
    assert b.history == a.history, "the replay took another path"
    assert b.step_results == a.step_results
    assert b.consumed == a.consumed, "a signal was lost or used twice"
    assert b.sends == a.sends  # the same signals accepted, the same refused
    if a.status == "completed":
        # Values of ctx.now()/ctx.uuid4() differ between the runs; each run's return
        # value holds the ones recorded in its own history.
        assert without_volatile(b.value) == without_volatile(a.value)
        for o in (a, b):
            seen = [v for v in o.value if isinstance(v, list)]
            assert len(seen) == len(o.volatile)
            for (kind, value), (rkind, recorded) in zip(seen, o.volatile, strict=True):
                assert kind == rkind
                if kind == "now":
                    assert datetime.fromisoformat(value) == datetime.fromisoformat(recorded)
                else:
                    assert uuid.UUID(value) == uuid.UUID(recorded)
    else:
        assert b.value == a.value
    # Completed steps ran as often as in the straight run; a crash while a step was
    # in flight allows that step one more run, and nothing else does.
    for name in set(a.calls) | set(b.calls):
        assert a.calls[name] <= b.calls[name] <= a.calls[name] + b.extra[name], (
            name,
            a.calls,
            b.calls,
            b.extra,
            b.crashes,
        )


def without_volatile(value: list[Any]) -> list[Any]:
    """A script's return value with each ctx.now()/ctx.uuid4() value left out."""
    return [v[0] if isinstance(v, list) else v for v in value]


def check(
    kind: str,
    ops: list[dict[str, Any]],
    points: dict[int, bool] | Callable[[int], dict[int, bool]],
) -> tuple[Outcome, Outcome]:
    """Run *ops* straight, then with crashes at *points* (or at the points that
    *points* picks given how many commits the straight run made); check both."""
    with tempfile.TemporaryDirectory() as root:
        a = straight(kind, ops, Path(root))
        b = crashing(
            kind, ops, points if isinstance(points, dict) else points(a.commits), Path(root)
        )
    check_promises(a, ops)
    check_promises(b, ops)
    check_same(a, b)
    return a, b


# -- the property ----------------------------------------------------------------------


def crashes_anywhere_end_as_the_straight_run(
    kind: str, ops: list[dict[str, Any]], data: st.DataObject
) -> None:
    def crash_points(commits: int) -> dict[int, bool]:
        return data.draw(
            st.dictionaries(
                st.integers(1, commits + 2), st.booleans(), min_size=1, max_size=MAX_CRASHES
            ),
            label="crash points (k-th commit: after it landed?)",
        )

    a, b = check(kind, ops, crash_points)
    event(f"ends {a.status}")
    event(f"{len(b.crashes)} crashes")
    event(f"steps re-run: {sum(b.calls.values()) > sum(a.calls.values())}")


# Reproducible in CI (derandomize: the same examples every run, no example database);
# sized so that the whole file takes a few seconds on 2 cores.
PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@settings(PROPERTY, max_examples=200)
@given(ops=SCRIPTS, data=st.data())
def test_crashes_anywhere_on_a_memory_store_end_as_the_straight_run(
    ops: list[dict[str, Any]], data: st.DataObject
) -> None:
    crashes_anywhere_end_as_the_straight_run("memory", ops, data)


@settings(PROPERTY, max_examples=80)  # a fresh SQLite file per run: costlier (file I/O)
@given(ops=SCRIPTS, data=st.data())
def test_crashes_anywhere_on_a_sqlite_store_end_as_the_straight_run(
    ops: list[dict[str, Any]], data: st.DataObject
) -> None:
    crashes_anywhere_end_as_the_straight_run("sqlite", ops, data)


# -- a defect the property found (fixed in 714259e) ----------------------------------


@flow("signal-while-resuming")
def wait_for_go(ctx: FlowContext) -> Any:
    go = yield Suspend("go", timeout="1h")
    if not ctx.input:
        return go

    def webhook() -> None:  # another process signals the flow while this step runs
        signal_flow(ctx.flow_id, "more", {"n": 2}, store=WORLD.outside)

    yield Step("webhook", webhook)
    return [go, (yield Suspend("more"))]


class SignalWhenClaimed(CrashPlan):
    """No crash: a webhook delivers "go" just after the next run took the lease, a
    second before the wait's deadline; the run looks at the clock a second later."""

    def __init__(self, s: Stores) -> None:
        super().__init__()
        self.s = s

    def returned(self, name: str) -> None:
        if name == "claim":
            signal_flow("g", "go", {"ok": True}, store=self.s.outside)
            self.s.clock.advance("1s")


def resume_as_the_deadline_passes(s: Stores, then: bool) -> Any:
    """Park the flow at "go", then resume it as the signal and the deadline come."""
    WORLD.reset(s.outside)
    assert wait_for_go.run(input=then, store=s.outside, flow_id="g").status == "suspended"
    s.clock.advance(timedelta(hours=1) - timedelta(seconds=1))
    return resume("g", store=s.process(SignalWhenClaimed(s)))


@pytest.mark.parametrize("kind", STORES)
def test_a_signal_received_in_time_is_not_lost_when_the_deadline_passes_during_a_resume(
    kind: str, tmp_path: Path
) -> None:
    # Shrunk from the property: ops=[_suspend(True, "resuming-late")], no crash needed.
    # Before 714259e the run expired the wait without asking the store for signals
    # that had arrived since it took the lease: the signal stayed pending, unused.
    s = Stores(kind, tmp_path / "crux.db", FakeClock())
    try:
        result = resume_as_the_deadline_passes(s, then=False)
        signals = get_flow("g", store=s.outside).signals
        assert [x.state for x in signals] == ["consumed"], signals
        assert (result.status, result.value) == ("completed", {"ok": True})
    finally:
        s.close()


@pytest.mark.parametrize("kind", STORES)
def test_a_signal_sent_while_the_flow_runs_on_after_a_wait_took_its_signal_late(
    kind: str, tmp_path: Path
) -> None:
    # Shrunk from the property: ops=[_suspend(True, "resuming-late"),
    # _suspend(False, "in-run")], no crash needed.
    s = Stores(kind, tmp_path / "crux.db", FakeClock())
    try:
        result = resume_as_the_deadline_passes(s, then=True)
        assert result.error is None, result.error
        assert (result.status, result.value) == ("completed", [{"ok": True}, {"n": 2}])
    finally:
        s.close()
