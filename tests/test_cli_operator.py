"""An operator's commands: ``delete``, ``prune --dry-run``, durations as ``list`` prints
them, ``--version``, and ``replay`` as a deploy gate; the real command in subprocesses."""

from __future__ import annotations

import importlib.metadata
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import crux_gen
from crux_gen import (
    FlowContext,
    FlowNotFoundError,
    FlowStateError,
    Registry,
    Step,
    flow,
)
from crux_gen import _version as version_module
from crux_gen.cli import control as commands  # prune's count, and its page size
from crux_gen.cli import main
from crux_gen.stores.sqlite import SQLiteStore
from tests.test_cli import REPO, Scene, crux, crux_all, dump


@pytest.fixture
def scene(tmp_path: Path) -> Any:
    s = Scene(tmp_path)
    yield s
    s.store.close()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.args, done.stdout, done.stderr)
    assert done.stderr.startswith("error: "), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    return done.stderr


def signal_rows(db: Path, flow_id: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(
            conn.execute("SELECT count(*) FROM signals WHERE flow_id = ?", (flow_id,)).fetchone()[0]
        )
    finally:
        conn.close()


def test_delete_removes_one_finished_flow_and_refuses_an_unfinished_one(scene: Scene) -> None:
    before = dump(scene.db)
    unfinished, unknown = crux_all(
        [["delete", scene.waiting], ["delete", "no-such-flow"]], scene.root
    )
    err = one_line_error(unfinished)
    assert f"flow {scene.waiting} (cli-onboarding) is suspended" in err
    assert f"cancel it first (crux-gen cancel {scene.waiting})" in err
    assert "no flow with id 'no-such-flow'" in one_line_error(unknown)
    assert dump(scene.db) == before

    assert signal_rows(scene.db, scene.completed) == 1
    deleted = crux("delete", scene.completed[:10], cwd=scene.root)  # a unique start will do
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == (
        f"deleted flow {scene.completed} (cli-onboarding, completed) with its 3 records "
        "and 1 signal\n"
    )
    with pytest.raises(FlowNotFoundError):
        scene.store.load(scene.completed)
    assert signal_rows(scene.db, scene.completed) == 0
    assert {f.id for f in scene.store.list_flows()} == {scene.waiting, scene.failed, scene.extra}

    again = crux("delete", scene.completed, cwd=scene.root)
    assert f"no flow with id {scene.completed!r}" in one_line_error(again)


def test_delete_that_loses_a_race_is_one_line_and_exit_1(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def resumed_meanwhile(self: SQLiteStore, flow_id: str) -> bool:
        raise FlowStateError(flow_id, "running", "only a finished flow can be deleted")

    monkeypatch.setattr(SQLiteStore, "delete", resumed_meanwhile)
    with pytest.raises(SystemExit) as exited:
        main(["delete", scene.completed, "--db", str(scene.db)])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"error: flow {scene.completed!r} is running; only a finished")


def test_prune_dry_run_says_how_many_and_deletes_nothing(scene: Scene) -> None:
    time.sleep(0.01)
    before = dump(scene.db)
    everything, recent = crux_all(
        [
            ["prune", "--finished-before", "0", "--dry-run"],  # bare seconds
            ["prune", "--finished-before", "1h30m", "--dry-run"],  # as list prints it
        ],
        scene.root,
    )
    assert everything.returncode == recent.returncode == 0, everything.stderr + recent.stderr
    assert everything.stdout.startswith("would delete 2 finished flows last updated before 20")
    assert "Z (1 completed, 1 failed)\nnothing deleted (--dry-run)\n" in everything.stdout
    assert recent.stdout.startswith("would delete 0 finished flows last updated before 20")
    assert dump(scene.db) == before

    kept = crux("prune", "--finished-before", "2d12h", cwd=scene.root)
    assert kept.returncode == 0 and kept.stdout.startswith("deleted 0 finished flows")
    pruned = crux("prune", "--finished-before", "0.0", cwd=scene.root)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 2 finished flows")
    assert {f.id for f in scene.store.list_flows()} == {scene.waiting, scene.extra}


def test_prune_dry_run_counts_what_prune_deletes_across_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()

    @flow("page-ok", registry=registry)
    def ok(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: 1))

    def boom() -> None:
        raise RuntimeError("no")

    @flow("page-bad", registry=registry)
    def bad(ctx: FlowContext) -> Any:
        return (yield Step("s", boom))

    store = SQLiteStore(tmp_path / "crux.db")
    done = [ok.run(store=store).flow_id for _ in range(11)]
    failed = [bad.run(store=store).flow_id for _ in range(2)]
    # Many flows updated at the same instant straddle the pages of 3.
    stamps = [100.0] * 4 + [50.0] * 5 + [10.0] * 2
    conn = sqlite3.connect(tmp_path / "crux.db")
    for flow_id, stamp in [*zip(done, stamps, strict=True), *((f, 50.0) for f in failed)]:
        conn.execute("UPDATE flows SET updated_at = ? WHERE id = ?", (stamp, flow_id))
    conn.commit()
    conn.close()
    monkeypatch.setattr(commands, "PAGE", 3)
    for before in (1000.0, 100.0, 50.1, 50.0, 10.0):
        counts = commands.count_finished(store, before)
        expected = sum(1 for s in [*stamps, 50.0, 50.0] if s < before)
        assert sum(counts.values()) == expected, before
    assert commands.count_finished(store, 1000.0) == {
        "cancelled": 0,
        "completed": 11,
        "expired": 0,
        "failed": 2,
    }
    counted = sum(commands.count_finished(store, 50.1).values())
    assert store.prune(50.1) == counted == 9
    store.close()


def test_durations_on_the_command_line_take_bare_seconds_and_what_list_prints(
    scene: Scene,
) -> None:
    calls = {
        "not a duration": ["prune", "--finished-before", "1h30"],
        "negative": ["prune", "--finished-before", "-5"],
        "too long": ["prune", "--finished-before", "36526d"],
        "bad poll": ["worker", "cliflows", "--poll", "1m1h"],
        "bad ttl": ["worker", "cliflows", "--lease-ttl", "soon"],
        "zero ttl": ["worker", "cliflows", "--lease-ttl", "0"],
        "bad synchronous": ["worker", "cliflows", "--synchronous", "OFF"],
    }
    before = dump(scene.db)
    results = dict(zip(calls, crux_all(list(calls.values()), scene.root), strict=True))
    err = {what: one_line_error(done) for what, done in results.items()}
    assert dump(scene.db) == before
    assert "--finished-before '1h30' is not a duration (try " in err["not a duration"]
    assert '"1h30m"' in err["not a duration"] and "a number of seconds" in err["not a duration"]
    assert "--finished-before '-5' is not a duration" in err["negative"]
    assert "--finished-before '36526d' is longer than 100 years" in err["too long"]
    assert "--poll '1m1h' is not a duration" in err["bad poll"]
    assert "--lease-ttl 'soon' is not a duration" in err["bad ttl"]
    assert "--lease-ttl must be longer than 0s" in err["zero ttl"]
    assert "'off' is not one of 'full', 'normal'" in err["bad synchronous"].lower()


def test_version_is_the_installed_distributions() -> None:
    installed = importlib.metadata.version("crux-gen")
    assert crux_gen.__version__ == installed
    script = Path(sys.executable).with_name("crux-gen")
    by_script = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    by_module = crux("--version", cwd=REPO)
    for done in (by_script, by_module):
        assert (done.returncode, done.stdout, done.stderr) == (0, f"crux-gen {installed}\n", "")


def test_version_falls_back_to_pyproject_when_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", not_installed)
    assert version_module.installed_version() == project["version"]
    assert version_module.checkout_version(tmp_path / "missing.toml") == "0+unknown"
    (tmp_path / "pyproject.toml").write_text(
        '[tool.x]\nversion = "9"\n\n[project]\nname = "x"\nversion = "1.2.3"\n'
    )
    assert version_module.checkout_version(tmp_path / "pyproject.toml") == "1.2.3"


def test_replay_of_a_module_that_registers_no_stored_flow_fails_the_gate(scene: Scene) -> None:
    (scene.root / "noflows.py").write_text("X = 1\n")
    (scene.root / "typo.py").write_text(
        (scene.root / "cliflows.py").read_text().replace('"cli-onboarding"', '"cli-onbaording"')
    )
    nothing, typo, right = crux_all(
        [["replay", "noflows"], ["replay", "typo"], ["replay", "cliflows"]], scene.root
    )
    assert "noflows registers no @flow" in one_line_error(nothing)
    err = one_line_error(typo)
    assert "typo registers none of the unfinished flows' names ('cli-onboarding'" in err
    assert "it registers 'cli-onbaording'" in err
    assert "0 ok, 0 diverge, 2 skipped" in typo.stdout
    assert right.returncode == 0, right.stdout + right.stderr


def test_signal_with_a_key_is_sent_once(scene: Scene) -> None:
    before = signal_rows(scene.db, scene.waiting)
    runs = crux_all(  # two deliveries of one event, at the same moment
        [
            ["signal", scene.waiting, "nudge", '{"n": 1}', "--key", "delivery-1"],
            ["signal", scene.waiting, "nudge", '{"n": 2}', "--key", "delivery-1"],
        ],
        scene.root,
    )
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    outs = sorted(r.stdout.split(":")[0].split(" '")[0] for r in runs)
    assert outs == ["not sent", "sent"], [r.stdout for r in runs]
    assert any("delivery-1" in r.stdout for r in runs)
    assert signal_rows(scene.db, scene.waiting) == before + 1
