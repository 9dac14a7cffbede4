"""The CLI and the dashboard on composed flows: ``show`` links parents and children and
shows the custom status and the run, ``list --json`` carries them, ``list --version``
finds the flows on an old branch, ``replay`` understands every new command, and the
approval example runs its whole story in separate processes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from crux_gen import get_flow, signal_flow
from crux_gen.cli import cli
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parent.parent

FLOWS = """
from crux_gen import All, Any, Child, ContinueAsNew, Sleep, Step, Suspend, Version, flow

@flow("cc-child")
def child(ctx):
    yield Suspend("ready")
    return {"made": ctx.input}

@flow("cc-parent")
def parent(ctx):
    ctx.set_custom_status({"stage": "fan-out"})
    sizes = yield All([Step(f"size-{n}", lambda n=n: n * 2) for n in range(3)])
    winner = yield Any([Suspend("approved"), Sleep("give-up", "3d")])
    if (yield Version("new-naming", latest=VERSION)) >= 2:
        name = "new"
    else:
        name = "old"
    ctx.set_custom_status({"stage": "child"})
    made = yield Child(child, input=name)
    return {"sizes": sizes, "winner": winner.name, "made": made}

@flow("cc-loop")
def loop(ctx):
    n = ctx.input
    yield Step("tick", lambda: n)
    if n < 4:
        yield ContinueAsNew(input=n + 1)
    return n
"""


def load(path: Path, version: int) -> ModuleType:
    (path / "ccflows.py").write_text(FLOWS.replace("VERSION", str(version)))
    spec = importlib.util.spec_from_file_location("ccflows", path / "ccflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Any]]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "crux.db", load(tmp_path, 2)
    sys.modules.pop("ccflows", None)


def cli_out(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_show_links_parent_and_children_and_shows_custom_status_and_run(
    scene: tuple[Path, Any],
) -> None:
    db, flows = scene
    store = SQLiteStore(db)
    r = flows.parent.run(store=store)
    signal_flow(r.flow_id, "approved", None, store=store)
    r = flows.parent.run(store=store, resume=r.flow_id)
    assert r.status == "suspended"  # waiting for its child
    info = get_flow(r.flow_id, store=store)
    [child] = info.children
    parent_text = cli_out("show", r.flow_id, "--db", str(db))
    assert f"children {child}\n" in parent_text
    assert 'custom status {"stage": "child"}' in parent_text
    assert "All([Step('size-0'), Step('size-1'), Step('size-2')])" in parent_text
    assert "Version('new-naming')" in parent_text and "Child('cc-child')" in parent_text
    child_text = cli_out("show", child, "--db", str(db))
    assert f"parent   {r.flow_id}\n" in child_text
    as_json = json.loads(cli_out("show", r.flow_id, "--db", str(db), "--json"))
    assert as_json["children"] == [child] and as_json["custom_status"] == {"stage": "child"}

    loop = flows.loop.run(input=0, store=store)
    assert loop.value == 4
    assert "run      5 (ContinueAsNew" in cli_out("show", loop.flow_id, "--db", str(db))


def test_list_json_carries_custom_status_parent_and_run(scene: tuple[Path, Any]) -> None:
    db, flows = scene
    store = SQLiteStore(db)
    r = flows.parent.run(store=store)
    rows = {row["id"]: row for row in json.loads(cli_out("list", "--db", str(db), "--json"))}
    assert rows[r.flow_id]["custom_status"] == {"stage": "fan-out"}
    assert rows[r.flow_id]["run"] == 1 and rows[r.flow_id]["parent_id"] is None


def test_list_version_finds_the_flows_on_the_old_branch(
    scene: tuple[Path, Any], tmp_path: Path
) -> None:
    db, flows = scene
    store = SQLiteStore(db)
    new = flows.parent.run(store=store).flow_id
    signal_flow(new, "approved", None, store=store)
    flows.parent.run(store=store, resume=new)  # records new-naming = 2
    waiting = flows.parent.run(store=store).flow_id  # not there yet: no record
    old_mod = load(tmp_path, 1)
    old = old_mod.parent.run(store=store).flow_id
    signal_flow(old, "approved", None, store=store)
    old_mod.parent.run(store=store, resume=old)  # records new-naming = 1

    def ids(spec: str) -> set[str]:
        out = cli_out("list", "--db", str(db), "--json", "--version", spec, "--flow", "cc-parent")
        return {row["id"] for row in json.loads(out)}

    assert ids("new-naming=2") == {new}
    assert ids("new-naming=1") == {old}
    assert ids("new-naming=0") == {waiting}
    bad = CliRunner().invoke(cli, ["list", "--db", str(db), "--version", "new-naming"])
    assert bad.exit_code != 0 and "is not NAME=N" in bad.output


def test_replay_understands_every_composition_command(scene: tuple[Path, Any]) -> None:
    db, flows = scene
    store = SQLiteStore(db)
    r = flows.parent.run(store=store)
    signal_flow(r.flow_id, "approved", None, store=store)
    flows.parent.run(store=store, resume=r.flow_id)
    flows.loop.run(input=0, store=store)
    out = cli_out("replay", "ccflows", "--db", str(db))
    assert "0 diverge" in out, out


def test_the_dashboard_shows_custom_status_parent_and_children(scene: tuple[Path, Any]) -> None:
    pytest.importorskip("jinja2")
    from wsgiref.util import setup_testing_defaults

    from crux_gen.ui import make_app

    db, flows = scene
    store = SQLiteStore(db)
    r = flows.parent.run(store=store)
    signal_flow(r.flow_id, "approved", None, store=store)
    flows.parent.run(store=store, resume=r.flow_id)
    [child] = get_flow(r.flow_id, store=store).children
    app = make_app(store)

    def page(path: str) -> str:
        environ: dict[str, Any] = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        chunks = app(environ, lambda status, headers: None)
        return b"".join(chunks).decode()

    parent_page = page(f"/flows/{r.flow_id}")
    assert "custom status" in parent_page and "child" in parent_page
    assert f'/flows/{child}"' in parent_page
    assert f'/flows/{r.flow_id}"' in page(f"/flows/{child}")


def test_the_approval_example_runs_its_story_in_separate_processes(tmp_path: Path) -> None:
    script = REPO / "examples" / "approval.py"
    done = subprocess.run(
        [sys.executable, str(script), "--db", str(tmp_path / "approval.db")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "a reminder went out" in lines[1]
    assert lines[2].endswith("the request is suspended")  # its child waits for the delivery
    assert lines[3].endswith("the request is completed")
    final = json.loads(lines[4])
    assert final["value"]["outcome"] == "provisioned" and final["value"]["reminders"] >= 1
    assert final["custom_status"] == {"stage": "done"} and len(final["children"]) == 1
    outbox = [json.loads(x) for x in (tmp_path / "approval-outbox.jsonl").read_text().splitlines()]
    kinds = [x["kind"] for x in outbox]
    assert kinds.count("order") == 1 and kinds.count("email") == 1 and "reminder" in kinds


def test_retry_of_a_flow_failed_in_an_all_says_which_branches_run_again(tmp_path: Path) -> None:
    from crux_gen import All, FlowContext, Step, flow, resume

    broken = {"bad": True}

    def flaky() -> str:
        if broken["bad"]:
            raise ValueError("down")
        return "up"

    @flow("cc-all-retry")
    def fan(ctx: FlowContext) -> Any:
        return (yield All([Step("ok", lambda: 1), Step("flaky", flaky)]))

    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    r = fan.run(store=store)
    assert r.status == "failed"
    out = cli_out("retry", r.flow_id, "--db", str(db))
    assert "reset 1 failed branch(es) of its All to run again: Step('flaky') at position 2" in out
    assert "kept 2 records" in out and "dropped" not in out
    broken["bad"] = False
    assert resume(r.flow_id, store=store).value == [1, "up"]
