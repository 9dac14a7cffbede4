"""``crux-gen`` for real: ``python -m crux_gen`` in subprocesses, on a real SQLite file.

The flows live in a module written to a temporary directory (the CLI imports it for
``replay`` and ``worker``; this process loads the same file to create the flows).
Independent invocations run concurrently to keep the suite fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from crux_gen import FlowContext, Sleep, Step, flow, get_flow, signal_flow
from crux_gen.cli import cli, main
from crux_gen.errors import StoreBusyError, StoreError
from crux_gen.replay import ReplayProblem, replay_check
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]

FLOWS = """
import os

import attrs

from crux_gen import Step, Suspend, flow


@attrs.frozen
class EmailVerified:
    verified_at: str


def make_plan(name):
    if os.environ.get("CLI_FLOWS_BROKEN", "1") == "1":
        raise RuntimeError("LLM unavailable (503)")
    return f"a plan for {name}"


@flow("cli-onboarding")
def onboarding(ctx):
    yield Step("send-welcome", lambda: {"to": ctx.input["email"]})
    verification = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")
    plan = yield Step("first-week-plan", lambda: make_plan(ctx.input["name"]))
    return {"plan": plan, "at": verification.verified_at, "notes": "n" * 300}
"""
VERIFIED = {"verified_at": "2026-11-24T10:00:00Z"}


def crux(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO), COLUMNS="80", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "crux_gen", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def crux_all(
    calls: Sequence[Sequence[str]],
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: dict[int, str] | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent invocations concurrently (``stdin``: call index -> input); results
    in order."""
    given = stdin or {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(crux, *args, cwd=cwd, env=env, stdin=given.get(i))
            for i, args in enumerate(calls)
        ]
        return [f.result() for f in futures]


def dump(db: Path) -> list[str]:
    """The database's whole logical content, to check that nothing changed."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def entries(out: str) -> list[str]:
    """The report's entries, each folded line joined back to its first (continuation
    lines are indented), e.g. one entry per flow of ``replay``."""
    joined: list[str] = []
    for line in out.splitlines():
        if line.startswith(" ") and joined:
            joined[-1] += " " + line.strip()
        else:
            joined.append(line)
    return joined


def unwrapped(out: str) -> str:
    """*out* with every line's indent and line break gone, to find text folded across lines."""
    return "".join(line.strip() for line in out.splitlines())


def fits(out: str, columns: int = 80) -> bool:
    return all(len(line) <= columns for line in out.splitlines())


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_cli_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Scene:
    """A database with one flow in each interesting state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "crux.db"
        (root / "cliflows.py").write_text(FLOWS)
        self.flows = load_module(root / "cliflows.py")
        store = SQLiteStore(self.db)
        run = self.flows.onboarding.run
        # waiting: suspended at email-verified, with one rejected signal
        self.waiting = run(input={"email": "w@x.io", "name": "W"}, store=store).flow_id
        signal_flow(self.waiting, "email-verified", {"verified": True}, store=store)
        run(resume=self.waiting, store=store)
        # failed: its plan step raised
        self.failed = run(input={"email": "f@x.io", "name": "F"}, store=store).flow_id
        signal_flow(self.failed, "email-verified", VERIFIED, store=store)
        os.environ["CLI_FLOWS_BROKEN"] = "1"
        try:
            run(resume=self.failed, store=store)
            # completed: the same, with the plan step working
            self.completed = run(input={"email": "c@x.io", "name": "C"}, store=store).flow_id
            signal_flow(self.completed, "email-verified", VERIFIED, store=store)
            os.environ["CLI_FLOWS_BROKEN"] = "0"
            run(resume=self.completed, store=store)
        finally:
            os.environ.pop("CLI_FLOWS_BROKEN", None)
        self.extra = run(input={"email": "e@x.io", "name": "E"}, store=store).flow_id
        store.close()
        self.store = SQLiteStore(self.db)

    def info(self, flow_id: str) -> Any:
        return get_flow(flow_id, store=self.store)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    yield s
    s.store.close()


def test_list_and_show_describe_the_flows(scene: Scene) -> None:
    short = scene.waiting[:12]
    table, as_json, by_env, shown_waiting, shown_failed, full, as_object, shown_done = crux_all(
        [
            ["list", "--db", "crux.db"],
            ["list", "--json", "--status", "failed", "--flow", "cli-onboarding"],
            ["list", "--limit", "2"],  # --db from CRUX_DB
            ["show", short],
            ["show", scene.failed],
            ["show", scene.completed, "--full"],
            ["show", scene.failed, "--json"],
            ["show", scene.completed],
        ],
        scene.root,
        env={"CRUX_DB": "crux.db"},
    )
    for done in (table, as_json, by_env, shown_waiting, shown_failed, full, as_object, shown_done):
        assert done.returncode == 0, done.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "FLOW", "STATUS", "WAITING", "FOR", "WAKE", "AT", "UPDATED"]
    assert len(lines) == 5 and all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if line.startswith(scene.waiting[:12]))
    assert "cli-onboarding" in row and "suspended" in row and "email-verified" in row
    assert "in 23h" in row  # its deadline
    assert "…" in row  # the id was shortened to fit 80 columns

    objects = json.loads(as_json.stdout)
    assert [(o["id"], o["name"], o["status"]) for o in objects] == [
        (scene.failed, "cli-onboarding", "failed")
    ]
    assert objects[0]["error"] == "builtins.RuntimeError: LLM unavailable (503)"
    assert len(by_env.stdout.splitlines()) == 3  # header, 2 flows
    assert by_env.stderr.startswith("next page: --before ")  # a full page: where the next starts

    out = shown_waiting.stdout
    assert f"flow     {scene.waiting}" in out
    assert "status   suspended, waiting for 'email-verified'\ndeadline 20" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert 'input    {"email": "w@x.io", "name": "W"}' in out
    assert re.search(r"  0  Step\('send-welcome'\) +completed, 1 attempt, took ", out)
    assert re.search(r"  1  Suspend\('email-verified'\) +waiting, since ", out)
    assert "'email-verified'  rejected" in out
    assert "rejected: required field missing @ $.verified_at" in out  # the validation error

    out = shown_failed.stdout
    assert "status   failed" in out
    assert "error    builtins.RuntimeError: LLM unavailable (503)" in out
    assert "Traceback (most recent call last):" in out  # the traceback, once
    assert out.count("Traceback") == 1
    assert re.search(r"  2  Step\('first-week-plan'\) +failed, 1 attempt", out)
    assert re.search(r"  1  Suspend\('email-verified'\) +completed, waited .*, signal #", out)
    assert "consumed by #1" in out

    # results are cut to one line with a marker, unless --full
    assert "…" in shown_done.stdout and "n" * 300 not in shown_done.stdout
    assert all(len(line) <= 80 for line in shown_done.stdout.splitlines())
    assert "n" * 300 in unwrapped(full.stdout) and '"plan": "a plan for C"' in full.stdout
    assert fits(full.stdout)  # folded to 80 columns, whole

    data = json.loads(as_object.stdout)
    assert (data["id"], data["status"]) == (scene.failed, "failed")
    assert [h["name"] for h in data["history"]] == [
        "send-welcome",
        "email-verified",
        "first-week-plan",
    ]
    assert data["history"][2]["error"]["type"] == "builtins.RuntimeError"
    assert data["signals"][0]["state"] == "consumed"

    # the shortened id as list prints it (with its marker) is accepted too
    printed_id = row.split()[0]
    assert printed_id.endswith("…")
    assert crux("show", printed_id, cwd=scene.root).returncode == 0


def test_bad_input_is_one_line_on_stderr_exit_1_and_changes_nothing(scene: Scene) -> None:
    (scene.root / "not-a-db.db").write_text("hello")
    sqlite3.connect(scene.root / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    before = dump(scene.db)
    calls = {
        "unknown id": ["show", "no-such-flow"],
        "bad json": ["signal", scene.waiting, "email-verified", "{not json"],
        "signal unknown": ["signal", "no-such-flow", "email-verified", "{}"],
        "signal closed": ["signal", scene.completed, "email-verified", "{}"],
        "cancel closed": ["cancel", scene.completed, "--reason", "x"],
        "cancel unknown": ["cancel", "no-such-flow"],
        "retry not failed": ["retry", scene.waiting],
        "retry completed": ["retry", scene.completed],
        "bad status": ["list", "--status", "sleeping"],
        "missing id": ["show"],
        "no db": ["list", "--db", "missing.db"],
        "not sqlite": ["list", "--db", "not-a-db.db"],
        "not crux": ["list", "--db", "other.db"],
        "bad age": ["prune", "--finished-before", "a while"],
        "no module": ["replay", "no_such_module"],
        "path not module": ["replay", "cliflows.py"],
        "bad poll": ["worker", "cliflows", "--poll", "often"],
        "unknown command": ["frobnicate"],
    }
    results = dict(zip(calls, crux_all(list(calls.values()), scene.root), strict=True))
    for what, done in results.items():
        assert done.returncode == 1, (what, done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), (what, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (what, done.stderr)
        assert "Traceback" not in done.stderr
    assert dump(scene.db) == before
    assert not (scene.root / "missing.db").exists()
    err = {what: done.stderr for what, done in results.items()}
    assert "no flow with id 'no-such-flow'" in err["unknown id"]
    assert "is not JSON" in err["bad json"]
    assert "is completed" in err["signal closed"]
    assert "is completed already" in err["cancel closed"]
    assert "is suspended; only a failed, cancelled or expired" in err["retry not failed"]
    assert "'sleeping' is not one of" in err["bad status"]
    assert "Missing argument 'ID'" in err["missing id"]
    assert "no database at 'missing.db'" in err["no db"]
    assert "not an SQLite database" in err["not sqlite"]
    assert "not a crux_gen store" in err["not crux"]
    assert "'a while' is not a duration" in err["bad age"]
    assert "no module named 'no_such_module'" in err["no module"]


def test_signal_cancel_retry_and_prune_change_the_store(scene: Scene) -> None:
    signalled, from_stdin, cancelled, retried = crux_all(
        [
            ["signal", scene.waiting, "email-verified", json.dumps(VERIFIED)],
            ["signal", scene.waiting, "reminder-sent", "-"],  # stdin: no flow waits for it yet
            ["cancel", scene.extra, "--reason", "user deleted the account"],
            ["retry", scene.failed],
        ],
        scene.root,
        stdin={1: '{"at": "2026-11-25"}'},
    )
    for done in (signalled, from_stdin, cancelled, retried):
        assert done.returncode == 0, done.stderr
    assert "the flow waits for it" in signalled.stdout
    assert "kept pending until the flow reaches Suspend('reminder-sent')" in from_stdin.stdout
    pending = sorted((s.name, s.state) for s in scene.info(scene.waiting).signals)
    assert pending == [
        ("email-verified", "pending"),
        ("email-verified", "rejected"),
        ("reminder-sent", "pending"),
    ]
    info = scene.info(scene.extra)
    assert (info.status, info.cancel_reason) == ("cancelled", "user deleted the account")

    assert "dropped the failed record at position 2, Step('first-week-plan'); kept 2" in (
        retried.stdout
    )
    assert "it is due now" in retried.stdout
    for done in (signalled, from_stdin, cancelled, retried):
        assert all(len(line) <= 80 for line in done.stdout.splitlines())
    info = scene.info(scene.failed)
    assert (info.status, info.waiting_for, info.error) == ("suspended", "first-week-plan", None)
    assert [h.name for h in info.history] == ["send-welcome", "email-verified"]
    assert scene.store.due(time.time() + 1, 10).count(scene.failed) == 1
    os.environ["CLI_FLOWS_BROKEN"] = "0"  # the fix is deployed: the worker's next pass
    try:
        done = scene.flows.onboarding.run(resume=scene.failed, store=scene.store)
    finally:
        os.environ.pop("CLI_FLOWS_BROKEN", None)
    assert (done.status, done.value["plan"]) == ("completed", "a plan for F")

    kept, pruned = crux("prune", "--finished-before", "30d", cwd=scene.root), None
    assert kept.returncode == 0 and kept.stdout.startswith("deleted 0 finished flows")
    time.sleep(0.01)
    pruned = crux("prune", "--finished-before", "0s", cwd=scene.root)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 3 finished flows")
    left = {f.id: f.status for f in scene.store.list_flows()}
    assert left == {scene.waiting: "suspended"}


def test_replay_reports_flows_the_new_code_would_break(scene: Scene) -> None:
    renamed = FLOWS.replace('"send-welcome"', '"send-welcome-email"')
    (scene.root / "cliflows_renamed.py").write_text(renamed)
    (scene.root / "cliflows_other.py").write_text(
        FLOWS.replace('"cli-onboarding"', '"something-else"')
    )
    before = dump(scene.db)
    same, diverged, skipped = crux_all(
        [["replay", "cliflows"], ["replay", "cliflows_renamed"], ["replay", "cliflows_other"]],
        scene.root,
    )
    assert dump(scene.db) == before  # replay wrote nothing
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.splitlines()[-1] == (
        "replayed 2 unfinished flows against cliflows: 2 ok, 0 diverge, 0 skipped"
    )
    assert diverged.returncode == 1
    assert fits(diverged.stdout)
    lines = entries(diverged.stdout)
    line = next(x for x in lines if scene.waiting in x)
    assert line.startswith("diverges")
    assert "cli-onboarding" in line and "position 0" in line
    assert "recorded Step('send-welcome')" in line
    assert "now yields Step('send-welcome-email')" in line
    assert len([x for x in lines if x.startswith("diverges")]) == 2
    # A module that registers none of the unfinished flows' names checks nothing:
    # a deploy gate given the wrong module must not pass.
    assert skipped.returncode == 1
    assert len([x for x in skipped.stdout.splitlines() if x.startswith("skipped")]) == 2
    assert "cli-onboarding" in skipped.stdout and "0 ok, 0 diverge, 2 skipped" in skipped.stdout
    assert skipped.stderr.startswith("error: cliflows_other registers none of the unfinished")
    assert len(skipped.stderr.splitlines()) == 1
    assert "'cli-onboarding'" in skipped.stderr and "'something-else'" in skipped.stderr


def test_replay_reports_code_that_raises_while_replaying(scene: Scene) -> None:
    # The failed flow, made due again, consumed a signal whose recorded payload no
    # longer fits the new schema of its Suspend.
    scene.store.retry_failed(scene.failed, time.time())
    (scene.root / "cliflows_strict.py").write_text(
        FLOWS.replace("    verified_at: str\n", "    verified_at: str\n    by: str\n")
    )
    done = crux("replay", "cliflows_strict", cwd=scene.root)
    assert done.returncode == 1
    assert fits(done.stdout)
    raises = [x for x in entries(done.stdout) if x.startswith("raises")]
    assert len(raises) == 1 and scene.failed in raises[0]
    assert "position 1: after Suspend('email-verified')" in raises[0]
    assert "the code now raises SignalValidationError" in raises[0]
    assert "replayed 3 unfinished flows" in done.stdout


def test_worker_runs_due_flows_and_stops_cleanly_on_sigterm(scene: Scene) -> None:
    signal_flow(scene.waiting, "email-verified", VERIFIED, store=scene.store)
    environ = {**os.environ, "PYTHONPATH": str(REPO), "CLI_FLOWS_BROKEN": "0"}
    environ.pop("CRUX_DB", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "worker", "cliflows", "--poll", "100ms"],
        cwd=scene.root,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while scene.info(scene.waiting).status != "completed":
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker did not run the due flow"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert "new, empty store" not in err  # its crux.db was there (see test_errors_named.py)
    assert scene.info(scene.waiting).value["plan"] == "a plan for W"
    assert scene.info(scene.extra).status == "suspended"  # not due: left alone


def test_help_is_complete_for_every_command(tmp_path: Path) -> None:
    top = crux("--help", cwd=tmp_path)
    assert top.returncode == 0
    commands = [
        "list",
        "count",
        "start",
        "show",
        "signal",
        "cancel",
        "retry",
        "delete",
        "prune",
        "replay",
        "worker",
    ]
    for name in commands:
        assert f"  {name} " in top.stdout
    assert all(len(line) <= 80 for line in top.stdout.splitlines())
    runner = CliRunner()
    for name in commands:
        result = runner.invoke(cli, [name, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        assert "--db PATH" in result.output and "CRUX_DB" in result.output
        assert len(result.output.splitlines()) > 8
        assert all(len(line) <= 80 for line in result.output.splitlines()), name


def test_replay_check_runs_no_step_and_stops_at_the_live_edge(tmp_path: Path) -> None:
    calls: list[str] = []

    def step(name: str) -> Any:
        calls.append(name)
        return name

    @flow("replay-edge")
    def edge(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        ctx.now()
        yield Sleep("nap", "1h")
        ctx.now()  # past the recorded history: the check stops here
        yield Step("b", lambda: step("b"))

    store = SQLiteStore(tmp_path / "edge.db")
    parked = edge.run(store=store)
    assert parked.status == "suspended" and calls == ["a"]
    stored = store.load(parked.flow_id)
    assert replay_check(stored, edge.fn) is None

    def yields_early(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        ctx.now()
        return "done early"

    # A body that ends before its history does diverges: it would be a
    # NonDeterminismError on resume, named by what the code does instead.
    assert replay_check(stored, yields_early) == ReplayProblem(
        "diverges", 2, "position 2: recorded Sleep('nap'), the code now returns"
    )

    def raises_in_body(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        raise KeyError("gone")

    assert replay_check(stored, raises_in_body) == ReplayProblem(
        "diverges", 1, "position 1: recorded ctx.now(), the code now raises KeyError: 'gone'"
    )

    def reorders_helpers(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        ctx.uuid4()
        yield Sleep("nap", "1h")

    assert replay_check(stored, reorders_helpers) == ReplayProblem(
        "diverges", 1, "position 1: recorded ctx.now(), the code now yields ctx.uuid4()"
    )

    def raises_past_its_history(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        ctx.now()
        yield Sleep("nap", "1h")
        raise RuntimeError("new validation")

    # The parked Sleep is the live edge: a body that raises only past it is fine.
    assert replay_check(stored, raises_past_its_history) is None

    def raises_where_it_yielded(ctx: FlowContext) -> Any:
        yield Step("a", lambda: step("a"))
        ctx.now()
        raise RuntimeError("new validation")

    assert replay_check(stored, raises_where_it_yielded) == ReplayProblem(
        "diverges",
        2,
        "position 2: recorded Sleep('nap'), the code now raises RuntimeError: new validation",
    )
    # Stored values this code cannot read back: named, not raised.
    bad_input = attrs.evolve(stored, input="{x")
    found = replay_check(bad_input, edge.fn)
    assert found is not None and (found.kind, found.position) == ("corrupt", None)
    assert found.text.startswith("stored input cannot be decoded (")
    bad_record = attrs.evolve(stored, records=(stored.records[0]._replace(result="nope"),))
    found = replay_check(bad_record, edge.fn)
    assert found is not None and (found.kind, found.position) == ("corrupt", 0)
    assert found.text.startswith("position 0: stored result cannot be decoded (")
    assert calls == ["a"]  # no check ran a step
    store.close()


def test_store_errors_are_one_line_on_stderr_exit_1(scene: Scene) -> None:
    (scene.root / "a-file").write_text("not a directory")
    (scene.root / "a-dir").mkdir()
    newer = scene.root / "newer.db"
    SQLiteStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")  # written by a future crux_gen
    conn.close()
    calls = {
        "directory": ["list", "--db", "a-dir"],
        "under a file": ["worker", "cliflows", "--db", "a-file/crux.db"],
        "no such directory": ["worker", "cliflows", "--db", "no-dir/crux.db"],
        "newer schema": ["show", "anything", "--db", "newer.db"],
    }
    results = dict(zip(calls, crux_all(list(calls.values()), scene.root), strict=True))
    for what, done in results.items():
        assert done.returncode == 1, (what, done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), (what, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (what, done.stderr)
        assert "Traceback" not in done.stderr
    err = {what: done.stderr for what, done in results.items()}
    assert "cannot open 'a-dir'" in err["directory"]
    assert "cannot open 'a-file/crux.db'" in err["under a file"]
    assert "check that the directory exists and is writable" in err["no such directory"]
    assert "schema version 99, newer than this crux_gen" in err["newer schema"]
    assert not (scene.root / "no-dir").exists()


@pytest.mark.parametrize(
    ("method", "args", "raised"),
    [
        ("list_flows", ["list"], StoreBusyError("'crux.db' stayed locked by another writer")),
        (
            "add_signal",
            ["signal", "{id}", "x", "{{}}"],
            StoreError("attempt to write a readonly database"),
        ),
        ("load", ["show", "{id}"], sqlite3.OperationalError("disk I/O error")),
        ("cancel", ["cancel", "{id}"], StoreError("database or disk is full\nsecond line")),
    ],
)
def test_a_store_failing_mid_command_is_one_line_and_exit_1(
    scene: Scene,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    method: str,
    args: list[str],
    raised: Exception,
) -> None:
    def fails(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(SQLiteStore, method, fails)
    argv = [a.format(id=scene.waiting) for a in args] + ["--db", str(scene.db)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(raised).split("\n")[0] in err


def corrupt(db: Path, sql: str, *params: Any) -> None:
    """Change a stored value behind crux_gen's back."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def scene_ids(scene: Scene) -> list[str]:
    return [scene.waiting, scene.failed, scene.completed, scene.extra]


def test_a_corrupt_row_is_shown_as_corrupt_and_never_stops_a_listing(scene: Scene) -> None:
    corrupt(scene.db, "UPDATE flows SET result = 'not json' WHERE id = ?", scene.completed)
    corrupt(scene.db, "UPDATE flows SET error = '[]' WHERE id = ?", scene.failed)
    corrupt(
        scene.db,
        "UPDATE records SET result = '{x' WHERE flow_id = ? AND position = 0",
        scene.waiting,
    )
    before = dump(scene.db)
    table, as_json, done, failed, waiting, as_object, extra, replayed = crux_all(
        [
            ["list"],
            ["list", "--json"],
            ["show", scene.completed],
            ["show", scene.failed],
            ["show", scene.waiting],
            ["show", scene.failed, "--json"],
            ["show", scene.extra],
            ["replay", "cliflows"],
        ],
        scene.root,
    )
    assert dump(scene.db) == before

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 1 + 4 + 2  # header, every flow, a note per corrupt flow
    assert all(len(line) <= 80 for line in lines)
    row = {f: next(x for x in lines if x.startswith(f[:12])) for f in scene_ids(scene)}
    assert "completed, corrupt" in row[scene.completed]
    assert "failed, corrupt" in row[scene.failed]
    assert "suspended " in row[scene.extra] and "corrupt" not in row[scene.extra]
    assert "corrupt" not in row[scene.waiting]  # a corrupt record: show names it
    notes = [x for x in lines if x.startswith("corrupt: ")]
    assert notes[0].startswith(f"corrupt: {scene.completed[:12]}…: stored result cannot be")
    assert notes[1].startswith(f"corrupt: {scene.failed[:12]}…: stored error cannot be")

    assert as_json.returncode == 0, as_json.stderr
    objects = {o["id"]: o for o in json.loads(as_json.stdout)}
    assert set(objects) == set(scene_ids(scene))
    assert scene.completed in objects[scene.completed]["corrupt"]
    assert "stored result cannot be decoded" in objects[scene.completed]["corrupt"]
    assert "stored error cannot be decoded" in objects[scene.failed]["corrupt"]
    assert objects[scene.failed]["status"] == "failed"
    assert objects[scene.extra]["corrupt"] is None  # the others print as usual
    assert objects[scene.extra]["status"] == "suspended"

    for shown, flow_id, position, column in (
        (done, scene.completed, None, "result"),
        (failed, scene.failed, None, "error"),
        (waiting, scene.waiting, 0, "result"),
        (as_object, scene.failed, None, "error"),
    ):
        assert shown.returncode == 1, shown.stdout
        assert shown.stdout == ""
        assert shown.stderr.startswith(f"error: flow {flow_id!r}")
        assert len(shown.stderr.strip().splitlines()) == 1 and "Traceback" not in shown.stderr
        assert f"stored {column} cannot be decoded" in shown.stderr
        assert (f"at position {position}:" in shown.stderr) == (position is not None)
    assert extra.returncode == 0, extra.stderr

    # The replay check names the corrupt flow, and goes on with the others.
    assert replayed.returncode == 1
    line = next(x for x in entries(replayed.stdout) if scene.waiting in x)
    assert line.startswith("corrupt") and "position 0" in line and "result" in line
    assert "replayed 2 unfinished flows" in replayed.stdout
