"""Every flow ends, under chaos: the bounded, seeded liveness stress on SQLite and
on PostgreSQL (``tests/stress/liveness.py`` holds it, and runs longer from a shell).

Two ``crux-gen worker`` processes run parents with ``All``, ``Any``, ``Child`` and
``ContinueAsNew`` (``tests/stress_flows.py``) while this process sends signals
(some keyed, some keys twice), cancels, retries, prunes and SIGKILLs the workers.
``check_store`` must find no stuck flow after every round and after the drain,
every flow must end, no completed step may run again, and no signal may be lost
or used twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    All,
    Child,
    FlowContext,
    LeaseLostError,
    Step,
    Suspend,
    cancel_flow,
    check_store,
    flow,
    resume,
)
from tests.stress.liveness import LOST_LEASE, Options, Report, check_steps, run

#: What the run does; the seed fixed, so a failure names a run to repeat with
#: ``python -m tests.stress.liveness --seed N``. Every shape issue 18 fixed is in it:
#: prunes reach children whose parent has not taken their end yet (item 5), pairs of
#: parents name one child id (item 2: the second gets FlowIdTakenError), flows that
#: failed on a step or a child branch of an All are retried (item 6).
CHAOS = Options(seconds=8.0, seed=20261206, shared_children=True, drain_seconds=30.0)


def db_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return str(tmp_path / "crux.db")
    url: str = request.getfixturevalue("pg_database")
    return url


def verdict(report: Report) -> str:
    shown = "\n".join(f[:2000] for f in report.failures[:20])
    return f"{report.summary()}\n{shown}"


def proves_something(report: Report) -> None:
    assert report.kills >= 2, f"the workers were barely killed: {report.summary()}"
    assert report.signals >= 20, report.summary()
    assert report.rounds >= 2, report.summary()
    assert report.retries + report.cancels + report.prunes >= 3, report.summary()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_flow_ends_under_signals_cancels_retries_prunes_and_kills(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    report = run(db_for(kind, tmp_path, request), tmp_path, CHAOS)
    assert report.failures == [], verdict(report)
    proves_something(report)


def test_the_step_check_tells_a_cut_run_from_a_completed_step_run_again() -> None:
    """The invariant has teeth: a step run again after a completed run is a failure
    unless that run failed on purpose or was cut by a kill before the flow went on."""
    rows = [
        (1, "f", "g0-s0-first", "start"), (1, "f", "g0-s0-first", "done"),
        (1, "f", "g0-s1-a", "start"),  # killed here: its record never committed
        (2, "f", "g0-s1-a", "start"), (2, "f", "g0-s1-a", "done"),
        (2, "f", "g0-s6-last", "start"), (2, "f", "g0-s6-last", "fail"),
        (3, "f", "g0-s6-last", "start"), (3, "f", "g0-s6-last", "done"),
    ]  # fmt: skip
    clean = Report()
    check_steps(rows, killed={1}, report=clean)
    assert (clean.failures, clean.repeated_steps) == ([], 2)
    rerun = Report()
    check_steps([*rows, (3, "f", "g0-s1-a", "start")], killed={1}, report=rerun)
    assert rerun.failures == [
        "step 'g0-s1-a' of flow f ran again after a run by process 2 that ended 'done'"
    ]
    went_on = Report()  # killed, but after it had gone on to a later stage
    check_steps([*rows, (1, "f", "g0-s4-x", "start")], killed={1}, report=went_on)
    assert len(went_on.failures) == 1 and "went on to a later stage" in went_on.failures[0]


def test_the_step_check_excuses_a_run_whose_runner_lost_the_lease_and_nothing_else() -> None:
    """A runner stalled past its lease (found under load: API.md's at-least-once for a
    runner that lost its lease): its step ran, its write was refused, the worker that
    took the flow ran the step again. Excused for that process and flow only, and only
    when that process went no further in the flow."""
    assert LOST_LEASE.search(str(LeaseLostError("f", "o1"))) is not None  # the log line
    rows = [
        (1, "f", "g0-s3-got3", "start"), (1, "f", "g0-s3-got3", "done"),  # refused
        (2, "f", "g0-s3-got3", "start"), (2, "f", "g0-s3-got3", "done"),
        (1, "k<f", "g0-s0-a", "start"), (1, "k<f", "g0-s0-a", "done"),  # a child's
        (2, "k<f", "g0-s0-a", "start"), (2, "k<f", "g0-s0-a", "done"),
    ]  # fmt: skip
    excused = Report()
    check_steps(rows, killed=set(), report=excused, lost={(1, "f"), (1, "k")})
    assert (excused.failures, excused.repeated_steps) == ([], 2)
    later = Report()  # the stalled runner called after the new holder's run
    check_steps([*rows[2:4], *rows[:2]], killed=set(), report=later, lost={(1, "f")})
    assert (later.failures, later.repeated_steps) == ([], 1)
    other_flow = Report()
    check_steps(rows, killed=set(), report=other_flow, lost={(1, "g"), (3, "f"), (3, "k")})
    assert len(other_flow.failures) == 2
    again = Report()  # it took the flow again later, and went on from there
    check_steps([*rows, (1, "f", "g0-s4-got9", "start")], set(), again, lost={(1, "f"), (1, "k")})
    assert again.failures == []
    went_on = Report()  # it went on before the step ran again: its record was written
    went_on_rows = [*rows[:2], (1, "f", "g0-s4-got9", "start"), *rows[2:]]
    check_steps(went_on_rows, set(), went_on, lost={(1, "f"), (1, "k")})
    assert went_on.failures == [
        "step 'g0-s3-got3' of flow f ran again after a run by process 1 that ended 'done' "
        "(it lost the lease, but went on to a later stage first)"
    ]


@flow("ls-leaf")
def _leaf(ctx: FlowContext) -> Any:
    yield Suspend("poke")


@flow("ls-fan")
def _fan(ctx: FlowContext) -> Any:
    return (yield All([Step("a", lambda: 1), Child(_leaf)]))


def test_a_flow_whose_all_failed_on_a_cancelled_child_ends_after_a_retry(store: Any) -> None:
    assert _fan.run(store=store, flow_id="fan").status == "suspended"
    [kid] = store.load("fan").children
    cancel_flow(kid, "no longer needed", store=store)
    assert resume("fan", store=store).status == "failed"  # ChildFlowError from the All
    store.retry_failed("fan", store.clock.time())
    result = resume("fan", store=store)
    assert result.status in ("failed", "completed", "suspended")
    assert check_store(store) == []
