"""``crux-gen fork`` on a SQLite file, with and without ``--json``, and its errors
(one line, exit code 1, nothing created)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FlowContext, SQLiteStore, Step, flow, resume
from crux_gen.cli import main
from crux_gen.flow import default_registry

made: Counter[str] = Counter()


def called(name: str) -> str:
    made[name] += 1
    return f"{name}#{made[name]}"


@flow("cli-fork-order")
def order(ctx: FlowContext) -> Any:
    reserved = yield Step("reserve", lambda: called("reserve"))
    charged = yield Step("charge", lambda: called("charge"))
    return [reserved, charged]


def crux(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``crux-gen ARGS`` in process: exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = crux(capsys, *args)
    assert (code, out) == (1, ""), (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "crux.db")
    made.clear()
    store = SQLiteStore(path)
    try:
        assert order.run(store=store, flow_id="order-1").value == ["reserve#1", "charge#1"]
    finally:
        store.close()
    return path


MODULE = ("--module", __name__)


def test_fork_at_a_name_as_json_then_a_worker_pass_runs_only_the_rest(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    code, out, err = crux(
        capsys, "fork", "order-1", "--at", "charge", *MODULE, "--db", db, "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown == {
        "id": shown["id"],
        "name": "cli-fork-order",
        "from": "order-1",
        "at": 1,
        "status": "pending",
    }
    store = SQLiteStore(db)
    try:
        assert resume(shown["id"], store=store, flows=[order]).value == ["reserve#1", "charge#2"]
        assert [r.name for r in store.load("order-1").records] == ["reserve", "charge"]
    finally:
        store.close()
    assert made == Counter({"reserve": 1, "charge": 2})


def test_fork_at_a_position_with_a_new_id_prints_what_it_did(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    code, out, err = crux(
        capsys, "fork", "order", "--at", "0", *MODULE, "--new-id", "again", "--db", db
    )
    assert code == 0, err
    assert out.splitlines() == [
        "forked flow order-1 (cli-fork-order) at position 0 as flow again",
        f"it is due now: the next worker pass running {__name__} runs it from position 0",
    ]
    store = SQLiteStore(db)
    try:
        assert store.load("again").status == "pending"
    finally:
        store.close()


def test_fork_errors_are_one_line_and_create_nothing(
    capsys: pytest.CaptureFixture[str], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = refused(capsys, "fork", "order-1", "--at", "9", *MODULE, "--db", db)
    assert "fork point at 9 is not a position from 0 to 2" in at
    neg = refused(capsys, "fork", "order-1", "--at", "-1", *MODULE, "--db", db)
    assert "fork point at -1" in neg
    name = refused(capsys, "fork", "order-1", "--at", "refund", *MODULE, "--db", db)
    assert "'refund' is the name of no record" in name
    taken = refused(
        capsys, "fork", "order-1", "--at", "1", *MODULE, "--new-id", "order-1", "--db", db
    )
    assert "flow id 'order-1' is taken" in taken
    gone = refused(capsys, "fork", "no-such-flow", "--at", "1", *MODULE, "--db", db)
    assert "no-such-flow" in gone
    monkeypatch.delitem(default_registry._flows, "cli-fork-order")  # as in a process of json
    other = refused(capsys, "fork", "order-1", "--at", "1", "--module", "json", "--db", db)
    assert "no flow named 'cli-fork-order' is registered" in other
    assert "json does not define it" in other
    code, out, _ = crux(capsys, "list", "--db", db, "--json")
    assert code == 0 and [f["id"] for f in json.loads(out)] == ["order-1"]
