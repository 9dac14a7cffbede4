"""One contract suite for every store: leases, fencing, conditional parks, due flows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowBusyError,
    FlowClosedError,
    FlowNameConflictError,
    FlowNotFoundError,
    LeaseLostError,
)
from crux_gen.errors import StoreError, StoreSchemaError
from crux_gen.records import COMPLETED, PENDING, StoredRecord, Write
from crux_gen.stores.base import Store
from crux_gen.stores.sqlite import SQLiteStore


def now(store: Any) -> float:
    return float(store.clock.now().timestamp())


def test_stores_implement_the_protocol(store: Any) -> None:
    assert isinstance(store, Store)


def test_start_creates_a_claimed_flow_and_claim_loads_its_history(store: Any) -> None:
    created = store.start("f1", "demo", '{"a":1}', "me", now(store))
    assert (created.status, created.lease_owner, created.input) == ("running", "me", '{"a":1}')
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    store.commit("f1", "me", now(store), Write(records=(record,)))
    store.commit(
        "f1", "me", now(store), Write(status="suspended", waiting_for="x", wait_kind="suspend")
    )
    claimed = store.claim("f1", "you", now(store))
    assert claimed.lease_owner == "you"
    assert [r[:6] for r in claimed.records] == [record[:6]]  # what replay needs
    assert store.load("f1").records == (record,)  # everything
    assert claimed.status == "suspended"
    row = store.load("f1")  # a claim takes the lease and changes nothing else
    assert (row.status, row.waiting_for, row.wait_kind) == ("suspended", "x", "suspend")
    assert (row.lease_owner, row.updated_at) == ("you", claimed.updated_at)


def test_a_live_lease_makes_other_claims_busy_until_it_expires(
    store: Any, clock: FakeClock
) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    with pytest.raises(FlowBusyError):
        store.claim("f1", "you", now(store))
    clock.advance(store.lease_ttl)
    assert store.claim("f1", "you", now(store)).lease_owner == "you"


def test_a_runner_that_lost_its_lease_writes_nothing(store: Any, clock: FakeClock) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    clock.advance(store.lease_ttl)
    store.claim("f1", "you", now(store))
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    with pytest.raises(LeaseLostError, match="'me'"):
        store.commit("f1", "me", now(store), Write(records=(record,)))
    assert store.load("f1").records == ()
    assert store.renew("f1", "me", now(store)) is False
    assert store.renew("f1", "you", now(store)) is True


def test_release_drops_the_lease_and_nothing_else(store: Any) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    store.commit(
        "f1", "me", now(store), Write(status="suspended", waiting_for="go", wait_kind="suspend")
    )
    store.claim("f1", "you", now(store))
    store.release("f1", "someone-else")  # not the holder: nothing happens
    assert store.load("f1").lease_owner == "you"
    store.release("f1", "you")
    row = store.load("f1")
    assert (row.status, row.waiting_for, row.lease_owner) == ("suspended", "go", None)


def test_a_park_waiting_for_a_signal_that_already_arrived_is_not_applied(store: Any) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    store.add_signal("f1", "go", '"payload"', now(store))
    outcome = store.commit(
        "f1",
        "me",
        now(store),
        Write(status="suspended", waiting_for="go", wait_kind="suspend", wait_signal="go"),
    )
    assert outcome.status == "running"
    assert [s.payload for s in outcome.signals] == ['"payload"']
    assert store.load("f1").lease_owner == "me"


def test_a_cancelled_flow_keeps_its_status_and_drops_the_lease_at_the_next_commit(
    store: Any,
) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    assert store.cancel("f1", "no longer needed", now(store)) is True
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    outcome = store.commit("f1", "me", now(store), Write(records=(record,)))
    assert (outcome.status, outcome.cancel_reason) == ("cancelled", "no longer needed")
    row = store.load("f1")
    assert (row.status, row.lease_owner, len(row.records)) == ("cancelled", None, 1)
    assert store.cancel("f1", "again", now(store)) is False


def test_signals_are_refused_for_finished_or_expired_flows(store: Any, clock: FakeClock) -> None:
    with pytest.raises(FlowNotFoundError):
        store.add_signal("nope", "go", "1", now(store))
    store.start("f1", "demo", "null", "me", now(store))
    deadline = now(store) + 60
    store.commit(
        "f1",
        "me",
        now(store),
        Write(status="suspended", waiting_for="go", wait_kind="suspend", deadline=deadline),
    )
    assert store.add_signal("f1", "go", "1", now(store)).state == PENDING
    clock.advance("61s")
    with pytest.raises(FlowClosedError, match="timed out"):
        store.add_signal("f1", "go", "2", now(store))
    assert len(store.load("f1").signals) == 1


def test_the_same_id_for_another_flow_name_is_a_conflict(store: Any) -> None:
    store.start("f1", "demo", "null", "me", now(store))
    with pytest.raises(FlowNameConflictError):
        store.start("f1", "other", "null", "you", now(store))


def test_due_finds_timers_signals_and_crashed_runs_and_nothing_else(
    store: Any, clock: FakeClock
) -> None:
    t = now(store)
    for flow_id, write in {
        "timer-due": Write(status="suspended", waiting_for="nap", wait_kind="sleep", wake_at=t + 5),
        "timer-later": Write(
            status="suspended", waiting_for="nap", wait_kind="sleep", wake_at=t + 3600
        ),
        "signalled": Write(status="suspended", waiting_for="go", wait_kind="suspend"),
        "wrong-signal": Write(status="suspended", waiting_for="go", wait_kind="suspend"),
        "done": Write(status="completed", result="1"),
    }.items():
        store.start(flow_id, "demo", "null", "me", t)
        store.commit(flow_id, "me", t, write)
    store.add_signal("signalled", "go", "1", t)
    store.add_signal("wrong-signal", "other", "1", t)
    store.start("crashed", "demo", "null", "dead", t)
    assert sorted(store.due(t, 10)) == ["signalled"]
    clock.advance(store.lease_ttl.total_seconds() + 10)
    assert sorted(store.due(now(store), 10)) == ["crashed", "signalled", "timer-due"]
    assert len(store.due(now(store), 2)) == 2


def test_list_flows_filters_by_status_and_name(store: Any) -> None:
    store.start("a", "one", "null", "me", 1.0)
    store.start("b", "two", "null", "me", 2.0)
    store.commit("b", "me", 3.0, Write(status="completed", result="1"))
    assert [f.id for f in store.list_flows()] == ["b", "a"]
    assert [f.id for f in store.list_flows(status="completed")] == ["b"]
    assert [f.id for f in store.list_flows(name="one")] == ["a"]
    assert len(store.list_flows(limit=1)) == 1


# -- SQLite specifics ----------------------------------------------------------------


def test_sqlite_store_checks_the_synchronous_mode(tmp_path: Path) -> None:
    assert SQLiteStore(tmp_path / "a.db", synchronous="normal").synchronous == "NORMAL"
    with pytest.raises(ValueError, match="'OFF'"):
        SQLiteStore(tmp_path / "b.db", synchronous="OFF")


def test_sqlite_store_uses_wal_a_schema_version_and_keeps_data_across_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crux.db"
    store = SQLiteStore(path)
    store.start("f1", "demo", '{"x":1}', "me", 1.0)
    store.close()
    again = SQLiteStore(path)
    assert again.load("f1").input == '{"x":1}'
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_sqlite_store_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreSchemaError, match="schema version 99"):
        SQLiteStore(path)


def test_the_due_query_reads_indexes_not_the_whole_table(tmp_path: Path) -> None:
    from crux_gen.stores.sqlite import _DUE

    store = SQLiteStore(tmp_path / "crux.db")
    plan = store._conn().execute("EXPLAIN QUERY PLAN " + _DUE, {"now": 0.0, "limit": 10})
    details = " | ".join(row[-1] for row in plan.fetchall())
    assert "flows_due" in details
    assert "flows_running" in details
    assert "signals_pending" in details
    assert "SCAN flows" not in details.replace("SCAN flows USING", "")


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "crux.db", clock=FakeClock())
    store.start("f1", "demo", "null", "me", 1.0)
    good = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    bad = StoredRecord(1, "step", None, COMPLETED, result="2", attempts=1)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="refused a write"):
        store.commit("f1", "me", 2.0, Write(records=(good, bad), status="completed"))
    row = store.load("f1")
    assert (row.records, row.status) == ((), "running")


def test_a_path_that_cannot_be_a_store_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-dir"):
        SQLiteStore(tmp_path / "no-such-dir" / "crux.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 200)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(junk)


def test_the_store_holds_json_only_and_nothing_is_pickled(tmp_path: Path) -> None:
    import json

    import attrs

    from crux_gen import Step, Suspend, flow, resume, signal_flow

    @attrs.frozen
    class Verified:
        at: str

    @flow("json-only")
    def f(ctx: Any) -> Any:
        yield Step("a", lambda: {"when": ctx.now(), "tags": {"x"}})
        v = yield Suspend("go", schema=Verified)
        yield Step("b", lambda: Verified(v.at))
        raise ValueError("the end")

    store = SQLiteStore(tmp_path / "crux.db")
    r = f.run(input={"n": (1, 2)}, store=store)
    signal_flow(r.flow_id, "go", {"at": "now"}, store=store)
    assert resume(r.flow_id, store=store).status == "failed"
    conn = sqlite3.connect(tmp_path / "crux.db")
    texts = [
        *conn.execute("SELECT input FROM flows"),
        *conn.execute("SELECT error FROM flows"),
        *conn.execute("SELECT result FROM records WHERE result IS NOT NULL"),
        *conn.execute("SELECT payload FROM signals"),
    ]
    assert len(texts) >= 5
    for (text,) in texts:
        assert isinstance(text, str)
        json.loads(text)
    blobs = conn.execute(
        "SELECT count(*) FROM records WHERE typeof(result) = 'blob' OR typeof(error) = 'blob'"
    ).fetchone()[0]
    assert blobs == 0
    source = Path(__file__).resolve().parent.parent
    for module in [*source.glob("crux_gen/*.py"), *source.glob("stores/*.py")]:
        text = module.read_text()
        assert "import pickle" not in text and "pickle." not in text, module


def test_a_file_locked_past_the_busy_timeout_is_a_crux_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    from crux_gen import CruxError
    from crux_gen.errors import StoreBusyError

    path = tmp_path / "crux.db"
    store = SQLiteStore(path, busy_timeout="100ms")
    store.start("f1", "demo", "null", "me", 1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    with pytest.raises(StoreBusyError, match="busy timeout") as info:
        store.add_signal("f1", "go", "1", 2.0)
    assert isinstance(info.value, CruxError)
    with pytest.raises(StoreBusyError):
        store.commit("f1", "me", 2.0, Write(records=(record,)))  # a step's one statement
    other.execute("ROLLBACK")
    row = store.load("f1")
    assert (row.records, row.signals) == ((), ())
