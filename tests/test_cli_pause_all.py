"""``crux-gen pause --all`` and ``unpause --all`` with the filters of ``list``,
``--dry-run`` and ``--json``, reporting per flow, in process on a SQLite file and
a PostgreSQL database (``--db URL``); ``--dry-run`` of one ID."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FlowContext, Suspend, cancel_flow, flow, get_flow
from crux_gen.cli import main
from crux_gen.stores.sqlite import SQLiteStore


@flow("pause-all-wait")
def waiting(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


@flow("pause-all-other")
def other(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The ``--db`` value, and a store open on it."""
    if request.param == "sqlite":
        db = str(tmp_path / "crux.db")
        store: Any = SQLiteStore(db)
    else:
        db = request.getfixturevalue("pg_database")
        store = request.getfixturevalue("postgres_store_class")(db)
    yield db, store
    store.close()


def crux(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = crux(capsys, *args)
    assert code == 0, err
    return out


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = crux(capsys, *args)
    assert (code, out) == (1, ""), (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def statuses(store: Any, ids: list[str]) -> list[str]:
    return [str(get_flow(i, store=store).status) for i in ids]


def test_pause_all_and_unpause_all_by_flow_name(
    capsys: pytest.CaptureFixture[str], target: tuple[str, Any]
) -> None:
    db, store = target
    mine = [waiting.run(store=store).flow_id for _ in range(3)]
    theirs = other.run(store=store).flow_id
    cancel_flow(mine[2], "gone", store=store)  # finished: not selected
    mine = mine[:2]
    # --dry-run: what it would touch, nothing changed.
    dry = json.loads(ok(capsys, "pause", "--all", "--flow", "pause-all-wait", "--dry-run",
                        "--json", "--db", db))  # fmt: skip
    assert sorted(f["id"] for f in dry) == sorted(mine)
    assert {f["outcome"] for f in dry} == {"would pause"}
    assert statuses(store, [*mine, theirs]) == ["suspended"] * 3
    text = ok(capsys, "pause", "--all", "--flow", "pause-all-wait", "--dry-run", "--db", db)
    assert text.splitlines()[-1] == "would pause 2 flows (--dry-run: nothing changed)"
    # Paused, one line per flow, then the total.
    lines = ok(capsys, "pause", "--all", "--flow", "pause-all-wait", "--db", db).splitlines()
    assert sorted(line.split()[1] for line in lines[:-1]) == sorted(mine)
    assert all(line.startswith("paused ") for line in lines[:-1])
    assert lines[-1] == "2 paused"
    assert statuses(store, [*mine, theirs]) == ["paused", "paused", "suspended"]
    # Nothing left to pause under that filter; the other flow was never touched.
    again = json.loads(ok(capsys, "pause", "--all", "--flow", "pause-all-wait", "--json",
                          "--db", db))  # fmt: skip
    assert again == []
    # unpause --all: every paused flow (no filter needed), each back on its wait.
    back = json.loads(ok(capsys, "unpause", "--all", "--json", "--db", db))
    assert sorted(f["id"] for f in back) == sorted(mine)
    assert {(f["outcome"], f["status"]) for f in back} == {("unpaused", "paused")}
    assert statuses(store, [*mine, theirs]) == ["suspended"] * 3


def test_bulk_pause_refusals_and_one_id_dry_run(
    capsys: pytest.CaptureFixture[str], target: tuple[str, Any]
) -> None:
    db, store = target
    one = waiting.run(store=store).flow_id
    err = refused(capsys, "pause", "--all", "--db", db)
    assert "pause --all needs at least one filter" in err
    assert "not both" in refused(capsys, "pause", one, "--all", "--flow", "x", "--db", db)
    assert "paused flows only" in refused(
        capsys, "unpause", "--all", "--status", "suspended", "--db", db
    )
    assert "takes pending, running, suspended flows only" in refused(
        capsys, "pause", "--all", "--status", "completed", "--db", db
    )
    # One ID, --dry-run: said, not done.
    dry = json.loads(ok(capsys, "pause", one, "--dry-run", "--json", "--db", db))
    assert (dry["id"], dry["outcome"]) == (one, "would pause")
    assert statuses(store, [one]) == ["suspended"]
    ok(capsys, "pause", one, "--db", db)
    out = ok(capsys, "unpause", one, "--dry-run", "--db", db)
    assert out.splitlines() == [
        f"would unpause flow {one} (pause-all-wait, paused)",
        "nothing changed (--dry-run)",
    ]
    assert statuses(store, [one]) == ["paused"]
