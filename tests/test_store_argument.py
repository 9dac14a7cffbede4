"""``store=`` of every public call takes a store object, a SQLite file's path or a
``postgresql://`` URL (read as ``crux-gen --db`` reads them); anything else is a
``TypeError`` naming it and saying what to pass (``flow.run(store="crux.db")`` was
an ``AttributeError``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    CruxError,
    Registry,
    SQLiteStore,
    Step,
    Suspend,
    cancel_flow,
    delete_flow,
    flow,
    get_flow,
    list_flows,
    resume,
    signal_flow,
)

registry = Registry()
calls: list[str] = []


@flow("store-arg", registry=registry)
def waits(ctx: Any) -> Any:
    yield Step("one", lambda: calls.append("one"))
    got = yield Suspend("go")
    yield Step("two", lambda: calls.append("two"))
    return got


def test_every_call_takes_a_sqlite_path(tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    calls.clear()
    first = waits.run(input=None, store=str(db))  # a str: the file is made
    assert first.status == "suspended" and db.exists()
    assert signal_flow(first.flow_id, "go", 7, store=db) is True  # a Path
    done = resume(first.flow_id, store=str(db), flows=[waits])
    assert (done.status, done.value) == ("completed", 7)
    assert calls == ["one", "two"]  # each step once
    assert get_flow(first.flow_id, store=str(db)).value == 7
    assert [s.flow_id for s in list_flows(store=db)] == [first.flow_id]
    second = waits.run(store=db)
    assert cancel_flow(second.flow_id, "enough", store=str(db)) is True
    assert waits.run(resume=second.flow_id, store=str(db)).status == "cancelled"
    assert delete_flow(second.flow_id, store=str(db)) is True
    # What a store object sees is the same file.
    stored = SQLiteStore(db)
    try:
        assert [f.id for f in stored.list_flows()] == [first.flow_id]
        assert get_flow(first.flow_id, store=stored).status == "completed"
    finally:
        stored.close()


def test_every_call_takes_a_postgresql_url(pg_database: str) -> None:
    calls.clear()
    first = waits.run(store=pg_database)
    assert first.status == "suspended"
    assert signal_flow(first.flow_id, "go", "yes", store=pg_database) is True
    assert resume(first.flow_id, store=pg_database, flows=[waits]).value == "yes"
    assert get_flow(first.flow_id, store=pg_database).status == "completed"
    assert [s.flow_id for s in list_flows(store=pg_database)] == [first.flow_id]
    assert calls == ["one", "two"]


@pytest.mark.parametrize(
    "call",
    [
        lambda db: get_flow("f", store=db),
        lambda db: signal_flow("f", "go", 1, store=db),
        lambda db: cancel_flow("f", "why", store=db),
        lambda db: list_flows(store=db),
        lambda db: delete_flow("f", store=db),
        lambda db: resume("f", store=db),
        lambda db: waits.run(resume="f", store=db),
    ],
)
def test_a_path_with_no_store_is_refused_and_no_file_is_made(tmp_path: Path, call: Any) -> None:
    db = str(tmp_path / "typo.db")
    with pytest.raises(ValueError, match=r"typo\.db.*names no file") as caught:
        call(db)
    assert isinstance(caught.value, CruxError)
    assert not Path(db).exists()


@pytest.mark.parametrize("bad", [None, 42, b"crux.db", object()])
@pytest.mark.parametrize(
    "call",
    [
        lambda s: waits.run(store=s),
        lambda s: resume("f", store=s),
        lambda s: get_flow("f", store=s),
        lambda s: signal_flow("f", "go", 1, store=s),
        lambda s: cancel_flow("f", "why", store=s),
        lambda s: list_flows(store=s),
        lambda s: delete_flow("f", store=s),
    ],
)
def test_anything_else_is_a_type_error_saying_what_to_pass(bad: Any, call: Any) -> None:
    with pytest.raises(TypeError) as caught:
        call(bad)
    assert isinstance(caught.value, CruxError)
    text = str(caught.value)
    assert "store" in text and repr(bad)[:20] in text
    assert "SQLiteStore(path)" in text and "path" in text and "postgresql://" in text
