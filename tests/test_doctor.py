"""``check_store`` and ``crux-gen doctor``: every unfinished flow that can never wake,
with the reason, on every store.

The stuck shapes are written raw (``put_flow``: a flow row and its records as a
store would hold them after a lost wake-up, a prune of a waited-on child, …), since
the runner no longer makes them; the healthy mix is made by real flows run by a
worker, so doctor is checked against what the runner writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

import crux_gen
from crux_gen import (
    All,
    Child,
    FlowContext,
    Problem,
    Retry,
    Sleep,
    Step,
    Suspend,
    check_store,
    flow,
    signal_flow,
)
from crux_gen import Any as AnyOf
from crux_gen.clock import FakeClock
from crux_gen.records import COMPLETED, WAITING, StoredFlow, StoredRecord
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

REPO = Path(__file__).resolve().parents[1]


def now(store: Any) -> float:
    return float(store.clock.now().timestamp())


def put(store: Any, flow_id: str, status: str = "suspended", **fields: Any) -> None:
    """Store one flow row (and its records) exactly as given."""
    t = fields.pop("t", now(store))
    store.put_flow(
        StoredFlow(
            id=flow_id, name=fields.pop("name", "demo"), status=status, input="null",
            created_at=t, updated_at=t, **fields,
        )
    )  # fmt: skip


def child_record(position: int, child_id: str, state: str = WAITING) -> StoredRecord:
    return StoredRecord(
        position, "child", "kid", state, result=json.dumps({"flow_id": child_id}), attempts=0
    )


def any_record(position: int, children: dict[str, str] | None) -> StoredRecord:
    result = None if children is None else json.dumps({"children": children})
    return StoredRecord(position, "any", "race", WAITING, result=result)


def step_record(position: int, state: str = COMPLETED, **fields: Any) -> StoredRecord:
    result = '"ok"' if state == COMPLETED else None
    return StoredRecord(position, "step", "work", state, result=result, attempts=1, **fields)


def kinds(problems: list[Problem]) -> dict[str, str]:
    return {p.flow_id: p.kind for p in problems}


# -- stuck shapes ----------------------------------------------------------------------


def test_a_parent_waiting_on_a_pruned_child_is_reported(store: Any) -> None:
    put(store, "p", wait_kind="child", waiting_for="c", records=(child_record(0, "c"),))
    [problem] = check_store(store)
    assert problem == Problem(
        "p", "demo", "suspended", "child_gone",
        "waits for its child flow 'c', which is not stored (deleted or pruned)",
    )  # fmt: skip


def test_a_parent_a_finished_child_did_not_wake_is_reported(store: Any) -> None:
    put(store, "p", wait_kind="child", waiting_for="c", records=(child_record(0, "c"),))
    put(store, "c", "completed", parent_id="p", result='"done"', name="kid")
    [problem] = check_store(store)
    assert (problem.flow_id, problem.kind) == ("p", "child_finished")
    assert "its child flow 'c', which ended completed at " in problem.reason
    assert problem.reason.endswith("yet it is not due")


def test_a_second_parent_of_a_shared_child_is_reported(store: Any) -> None:
    # Two parents yielded Child(flow_id="c"): only the first is its parent, so the
    # child's end makes only that one due (issue 18, item 2).
    put(store, "p1", wait_kind="child", waiting_for="c", records=(child_record(0, "c"),))
    put(store, "p2", wait_kind="child", waiting_for="c", records=(child_record(0, "c"),))
    put(store, "c", "running", parent_id="p1", name="kid")
    [problem] = check_store(store)
    assert (problem.flow_id, problem.kind) == ("p2", "child_of_another")
    assert "whose parent is the flow 'p1'" in problem.reason


def test_a_queued_flow_nothing_will_let_through_is_reported(store: Any) -> None:
    key = '["demo", "a"]'
    queued = {"exclusive_key": key, "wake_at": None}
    put(store, "behind-gone", "pending", blocked_by="gone", **queued)
    put(store, "done", "completed", result="1", exclusive_key=key)
    put(store, "behind-done", "pending", blocked_by="done", **queued)
    put(store, "other", "suspended", wait_kind="suspend", waiting_for="go", holds='["demo", "b"]')
    put(store, "behind-other", "pending", blocked_by="other", **queued)
    put(store, "holder", "suspended", wait_kind="suspend", waiting_for="go", holds=key)
    put(store, "fine", "pending", blocked_by="holder", **queued)
    put(store, "limited", "pending", blocked_by="limit openai")  # a Limit's: not ours
    put(store, "no-due", "pending")
    put(store, "due", "pending", wake_at=now(store))
    found = {p.flow_id: p for p in check_store(store)}
    assert set(found) == {"behind-gone", "behind-done", "behind-other", "no-due"}
    assert {p.kind for p in found.values()} == {"queued_behind_nothing"}
    assert "behind flow 'gone', which is not stored" in found["behind-gone"].reason
    assert "which ended completed" in found["behind-done"].reason
    assert "does not hold its exclusive key" in found["behind-other"].reason
    assert found["no-due"].reason == "is pending with no due time"


@pytest.mark.parametrize("kind", ["sleep", "retry", "wait_until"])
def test_a_timer_with_no_wake_time_is_reported(store: Any, kind: str) -> None:
    put(store, "t", wait_kind=kind, waiting_for="nap", records=(step_record(0),))
    [problem] = check_store(store)
    assert (problem.kind, problem.status) == ("no_wake_time", "suspended")
    assert "that has no wake time" in problem.reason and "'nap'" in problem.reason


def test_an_any_whose_child_ended_without_waking_it_is_reported(store: Any) -> None:
    records = (any_record(0, {"1": "c"}),)
    put(store, "p", wait_kind="any", waiting_for='["go"]', records=records)
    put(store, "c", "failed", parent_id="p", error=None, name="kid")
    [problem] = check_store(store)
    assert (problem.flow_id, problem.kind) == ("p", "child_finished")
    assert "the Any's child flow 'c', which ended failed" in problem.reason


def test_an_any_with_every_branch_settled_is_reported(store: Any) -> None:
    put(store, "p", wait_kind="any", waiting_for="[]", records=(any_record(0, None),))
    [problem] = check_store(store)
    assert problem.kind == "nothing_left"
    assert "every branch settled (no signal name" in problem.reason


def test_an_any_with_an_unreadable_signal_list_waits_for_any_signal(store: Any) -> None:
    # The stores wake such a flow on any pending signal (a corrupt row is not a
    # stuck flow): a signal may still be sent.
    put(store, "p", wait_kind="any", waiting_for="[not json", records=(any_record(0, None),))
    assert check_store(store) == []


def test_an_all_with_nothing_unfinished_is_reported(store: Any) -> None:
    records = (
        StoredRecord(0, "all", "fan", WAITING),
        step_record(1),
        child_record(2, "c", COMPLETED),
    )
    put(store, "p", wait_kind="all", waiting_for="fan", records=records)
    [problem] = check_store(store)
    assert problem.kind == "nothing_left"
    assert "waits in All 'fan' with no unfinished child and no retry time" in problem.reason


def test_an_all_waiting_on_a_finished_child_is_reported(store: Any) -> None:
    records = (
        StoredRecord(0, "all", "fan", WAITING, result='{"branches":2}'),
        child_record(1, "a"),
        child_record(2, "b"),
    )
    put(store, "p", wait_kind="all", waiting_for="fan", records=records)
    put(store, "a", "running", parent_id="p", name="kid")
    put(store, "b", "cancelled", parent_id="p", cancel_reason="test", name="kid")
    [problem] = check_store(store)
    assert (problem.kind, "'b'" in problem.reason) == ("child_finished", True)


def test_an_unknown_wait_with_no_wake_time_is_reported(store: Any) -> None:
    put(store, "w", wait_kind="mystery", waiting_for="x")
    put(store, "s", wait_kind="suspend", waiting_for=None)
    assert kinds(check_store(store)) == {"w": "unknown_wait", "s": "unknown_wait"}


def test_a_lease_lapsed_long_ago_that_no_worker_took_is_reported(
    store: Any, clock: FakeClock
) -> None:
    put(store, "r", "running", name="slow")
    store.claim("r", "ghost-runner", now(store))
    ttl = store.lease_ttl.total_seconds()
    clock.advance(ttl * 10)  # lapsed, but only 9 lease times ago: a worker may be slow
    assert check_store(store) == []
    clock.advance(ttl * 2)
    [problem] = check_store(store)
    assert (problem.flow_id, problem.status, problem.kind) == ("r", "running", "lease_lapsed")
    assert "the lease of runner ghost-runner lapsed at " in problem.reason
    assert "with flow 'slow' registered" in problem.reason


def test_problems_come_oldest_created_first_and_finished_flows_are_not_checked(
    store: Any,
) -> None:
    t = now(store)
    put(store, "late", wait_kind="sleep", waiting_for="nap", t=t)
    put(store, "early", wait_kind="sleep", waiting_for="nap", t=t - 5)
    put(store, "done", "completed", wait_kind="sleep", waiting_for="nap", t=t - 9)
    assert [p.flow_id for p in check_store(store)] == ["early", "late"]


def test_a_problem_is_a_frozen_value() -> None:
    problem = Problem("f", "demo", "suspended", "no_wake_time", "why")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        problem.kind = "other"  # type: ignore[misc]
    assert "Problem" in crux_gen.__all__ and "check_store" in crux_gen.__all__


# -- a healthy mix ---------------------------------------------------------------------


@flow("doctor-kid")
def doctor_kid(ctx: FlowContext) -> Any:
    yield Suspend("finish")
    return "kid done"


@flow("doctor-mix")
def doctor_mix(ctx: FlowContext) -> Any:
    shape = ctx.input
    if shape == "signal":
        return (yield Suspend("go"))
    if shape == "sleep":
        return (yield Sleep("nap", "1h"))
    if shape == "child":
        return (yield Child(doctor_kid, flow_id=ctx.flow_id + "-kid"))
    if shape == "any":
        return (yield AnyOf([Suspend("go"), Child(doctor_kid), Sleep("nap", "2h")]))
    if shape == "any-children":
        return (yield AnyOf([Child(doctor_kid), Child(doctor_kid)]))
    if shape == "all":
        return (yield All([Step("a", lambda: 1), Child(doctor_kid), Child(doctor_kid)]))
    if shape == "retry":
        return (yield Step("boom", fail, retry=Retry(attempts=3, delay="1h")))
    if shape == "done":
        return (yield Step("ok", lambda: "ok"))
    raise ValueError(shape)


def fail() -> None:
    raise RuntimeError("not yet")


SHAPES = ["signal", "sleep", "child", "any", "any-children", "all", "retry", "done"]


def test_flows_waiting_on_what_can_still_happen_are_not_reported(
    store: Any, clock: FakeClock
) -> None:
    for shape in SHAPES:
        doctor_mix.run(input=shape, store=store, flow_id=shape)
    worker = Worker(store, [doctor_mix, doctor_kid])
    while worker.run_once():
        pass
    statuses = {s: store.load(s).status for s in SHAPES}
    assert statuses == {s: "completed" if s == "done" else "suspended" for s in SHAPES}
    assert check_store(store) == []
    # A child still being run (leased, then lapsed a little) is fine too.
    kid = store.load("child-kid")
    assert kid.status == "suspended" and kid.parent_id == "child"
    put(store, "fresh", "running", name="doctor-mix")
    store.claim("fresh", "runner", now(store))
    clock.advance(store.lease_ttl * 3)
    assert check_store(store) == []
    # Ending the children wakes their parents; the end state is clean as well.
    for parent in ("child", "any-children", "all"):
        for kid_id in store.load(parent).children:
            signal_flow(kid_id, "finish", None, store=store)
    signal_flow("signal", "go", 1, store=store)
    while worker.run_once():
        pass
    assert store.load("all").status == "completed"
    assert store.load("child").status == "completed"
    assert check_store(store) == []


# -- crux-gen doctor -------------------------------------------------------------------


def crux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO), COLUMNS="80")
    return subprocess.run(
        [sys.executable, "-m", "crux_gen", *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_doctor_lists_each_stuck_flow_with_its_reason_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    put(store, "p" * 32, wait_kind="child", waiting_for="gone", records=(child_record(0, "gone"),))
    put(store, "\x1b[31mred", wait_kind="sleep", waiting_for="nap\x07", name="evil\x1b]0;x\x07")
    put(store, "fine", wait_kind="suspend", waiting_for="go")
    store.close()
    done = crux("doctor", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b[31mred" in done.stdout and "evil\\x1b]0;x\\x07" in done.stdout
    text = " ".join(done.stdout.split())
    assert f"child_gone {'p' * 32} demo suspended waits for its child flow 'gone'" in text
    assert "no_wake_time \\x1b[31mred" in text
    assert "fine" not in text
    assert done.stdout.splitlines()[-1] == "2 unfinished flows can never wake"
    assert all(len(line) <= 80 for line in done.stdout.splitlines())

    as_json = crux("doctor", "--db", str(db), "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    assert "\x1b" not in as_json.stdout
    found = json.loads(as_json.stdout)
    assert [(p["flow_id"], p["kind"], p["status"]) for p in found] == [
        ("p" * 32, "child_gone", "suspended"),
        ("\x1b[31mred", "no_wake_time", "suspended"),
    ]
    assert found[1]["name"] == "evil\x1b]0;x\x07" and "reason" in found[1]


def test_doctor_on_a_clean_store_says_so_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    put(store, "fine", wait_kind="suspend", waiting_for="go")
    store.close()
    done = crux("doctor", "--db", str(db), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "no stuck flow: every unfinished flow waits on something that can still happen\n"
    )
    assert crux("doctor", "--db", str(db), "--json", cwd=tmp_path).stdout == "[]\n"


def test_doctor_reads_postgresql_too(pg_server: Any, pg_database: str, tmp_path: Path) -> None:
    cls = crux_gen.PostgresStore
    store = cls(pg_database)
    put(store, "stuck", wait_kind="retry", waiting_for="charge")
    store.close()
    done = crux("doctor", "--db", pg_database, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert [p["kind"] for p in json.loads(done.stdout)] == ["no_wake_time"]


def test_doctor_names_a_missing_store(tmp_path: Path) -> None:
    done = crux("doctor", "--db", str(tmp_path / "nope.db"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no database at ")
