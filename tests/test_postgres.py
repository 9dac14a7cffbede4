"""What only the PostgreSQL store has: its own schema with a version, created once
however many processes connect first; a server that cannot be reached; a lazy
import; and statements that name the flow they touch.

Everything ``PostgresStore`` shares with the other stores is in the contract
suite and the flow-behaviour tests (the ``store`` fixture's ``"postgres"`` param).
Each test here has a fresh schema (``pg_schema``) or database (``pg_database``) of
its own on the session's server (``tests/pg.py``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    FlowNotFoundError,
    Registry,
    Sleep,
    Step,
    StoreError,
    StoreSchemaError,
    Suspend,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.records import COMPLETED, NewChild, StoredRecord, Write

from . import pg

REPO = Path(__file__).resolve().parent.parent


def tables(server: pg.Server, schema: str) -> set[str]:
    rows = server.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {name for (name,) in rows}


def in_database(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run *query* on the database of *url* (not the session's admin connection's)."""
    with pg.psycopg().connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


# -- its schema -----------------------------------------------------------------------


def test_the_first_connect_creates_the_crux_schema_with_a_version_and_the_tables(
    postgres_store_class: Any, pg_database: str
) -> None:
    PostgresStore = postgres_store_class
    assert in_database(pg_database, "SELECT 1 FROM pg_namespace WHERE nspname = 'crux'") == []
    store = PostgresStore(pg_database)
    assert store.schema == "crux"
    found = {
        name
        for (name,) in in_database(
            pg_database,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'crux'",
        )
    }
    assert {"flows", "records", "signals"} <= found
    [version_table] = [name for name in found if "version" in name]
    versions = in_database(pg_database, f'SELECT * FROM crux."{version_table}"')
    assert len(versions) == 1, versions  # one row: the schema's version
    [version] = [v for v in versions[0] if isinstance(v, int)]
    assert version >= 1
    in_public = in_database(
        pg_database,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert in_public == []  # nothing outside its own schema

    store.start("f1", "demo", '{"x":1}', "me", 1.0)
    store.close()
    again = PostgresStore(pg_database)  # the next connect finds it all there
    assert again.load("f1").input == '{"x":1}'
    assert in_database(pg_database, f'SELECT * FROM crux."{version_table}"') == versions
    again.close()


def test_a_schema_argument_keeps_the_tables_there_and_apart_from_other_schemas(
    postgres_store_class: Any, pg_database: str
) -> None:
    PostgresStore = postgres_store_class
    clock = FakeClock()
    one = PostgresStore(pg_database, schema="app_one", clock=clock)
    two = PostgresStore(pg_database, schema="app_two", clock=clock)
    one.start("f1", "demo", "null", "me", clock.time())
    with pytest.raises(FlowNotFoundError):
        two.load("f1")
    assert two.list_flows() == []
    schemas = {name for (name,) in in_database(pg_database, "SELECT nspname FROM pg_namespace")}
    assert {"app_one", "app_two"} <= schemas
    assert "crux" not in schemas
    one.close()
    two.close()


def test_a_schema_name_that_is_not_a_plain_sql_name_is_refused(postgres_store_class: Any) -> None:
    for bad in ("Crux", "crux; DROP TABLE flows", "", "1abc"):
        with pytest.raises(ValueError, match="schema"):
            postgres_store_class("postgresql://nobody@127.0.0.1:1/none", schema=bad)


def test_a_schema_of_a_newer_version_is_refused_naming_it(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    PostgresStore = postgres_store_class
    PostgresStore(pg_server.url, schema=pg_schema).close()
    [version_table] = [name for name in tables(pg_server, pg_schema) if "version" in name]
    [column] = [
        name
        for (name,) in pg_server.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (pg_schema, version_table),
        )
    ]
    pg_server.execute(f'UPDATE "{pg_schema}"."{version_table}" SET "{column}" = 99')
    with pytest.raises(StoreSchemaError, match="99"):
        PostgresStore(pg_server.url, schema=pg_schema)


def drop_traces(pg_server: pg.Server, schema: str) -> None:
    """Undo versions 10 (events and streams), 9 (the recovery count) and 8 (trace
    contexts) in *schema*."""
    for table in ("events", "streams"):
        pg_server.execute(f'DROP TABLE "{schema}".{table}')
    pg_server.execute(
        f'ALTER TABLE "{schema}".flows DROP COLUMN recoveries, DROP COLUMN claimed_at'
    )
    pg_server.execute(f'ALTER TABLE "{schema}".flows DROP COLUMN trace')
    pg_server.execute(f'ALTER TABLE "{schema}".signals DROP COLUMN trace')


def back_to_version_2(pg_server: pg.Server, schema: str) -> None:
    """Undo versions 10 (events, streams), 9 (recoveries), 8 (traces), 7 (limits),
    6 (schedules), 5 (flow control), 4 and 3 (composition) in *schema*, keeping its
    flows."""
    drop_traces(pg_server, schema)
    for table in ("limit_state", "limit_slots", "fair_turns", "schedules"):
        pg_server.execute(f'DROP TABLE "{schema}".{table}')
    pg_server.execute(
        f'ALTER TABLE "{schema}".flows DROP COLUMN priority, DROP COLUMN blocked_by, '
        "DROP COLUMN exclusive_key, DROP COLUMN holds, DROP COLUMN debounce_key, "
        "DROP COLUMN debounce_cap, DROP COLUMN blocked_until, DROP COLUMN fair_key"
    )
    pg_server.execute(f'DROP FUNCTION "{schema}".any_wait_has')
    pg_server.execute(f'DROP TABLE "{schema}".past_records')
    pg_server.execute(
        f'ALTER TABLE "{schema}".flows DROP COLUMN parent_id, DROP COLUMN run, '
        "DROP COLUMN custom_status"
    )
    pg_server.execute(f'UPDATE "{schema}".schema_version SET version = 2')


def test_a_version_1_schema_is_migrated_and_its_parked_flows_resume_with_a_segment(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    from crux_gen.records import StoredRecord, Write
    from crux_gen.stores import segments

    PostgresStore = postgres_store_class
    clock = FakeClock()
    old = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    t = clock.time()
    old.start("f1", "demo", "null", "me", t)
    done = tuple(
        StoredRecord(p, "step", f"s{p}", "completed", f'"{p}"', attempts=1)
        for p in range(segments.SEGMENT_MIN + 5)
    )
    old.commit("f1", "me", t, Write(records=done))
    old.close()
    # Back to version 1 as it was: no segments table, the flow parked without one.
    back_to_version_2(pg_server, pg_schema)
    pg_server.execute(f'DROP TABLE "{pg_schema}".segments')
    pg_server.execute(f'UPDATE "{pg_schema}".schema_version SET version = 1')
    pg_server.execute(
        f"UPDATE \"{pg_schema}\".flows SET status = 'suspended', lease_owner = NULL, "
        "lease_expires = NULL, waiting_for = 'nap', wait_kind = 'sleep', wake_at = 1"
    )

    store = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    assert "segments" in tables(pg_server, pg_schema)
    assert pg_server.execute(f'SELECT version FROM "{pg_schema}".schema_version') == [(10,)]
    claimed = store.claim("f1", "me", t)
    assert [(r.position, r.name, r.result) for r in claimed.records] == [
        (r.position, r.name, r.result) for r in done
    ]
    store.commit("f1", "me", t, Write(status="suspended", waiting_for="nap", wait_kind="sleep"))
    count = pg_server.execute(f'SELECT count FROM "{pg_schema}".segments')
    assert count == [(len(done),)]
    again = store.claim("f1", "me", t)
    assert again.records == claimed.records
    store.close()


def test_a_version_2_schema_is_migrated_and_its_flows_become_run_1_without_a_parent(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    PostgresStore = postgres_store_class
    clock = FakeClock()
    old = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    t = clock.time()
    old.start("f1", "demo", '{"n": 1}', "me", t)
    done = StoredRecord(0, "step", "one", "completed", "1", attempts=1)
    old.commit("f1", "me", t, Write((done,), status="suspended", waiting_for="go",
                                    wait_kind="suspend"))  # fmt: skip
    old.add_signal("f1", "go", "2", t, key="k")
    before = old.load("f1")
    old.close()
    back_to_version_2(pg_server, pg_schema)
    assert "past_records" not in tables(pg_server, pg_schema)

    store = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    assert "past_records" in tables(pg_server, pg_schema)
    assert pg_server.execute(f'SELECT version FROM "{pg_schema}".schema_version') == [(10,)]
    flow = store.load("f1")
    assert flow == attrs.evolve(before, claimed_at=None)  # (a column version 9 adds)
    assert (flow.parent_id, flow.run, flow.custom_status, flow.children) == (None, 1, None, ())
    assert store.due(t, 10) == ["f1"]
    store.claim("f1", "me", t)
    store.commit("f1", "me", t, Write(children=(NewChild("kid", "demo", "null"),)))
    store.commit("f1", "me", t, Write(continue_as_new='"again"'))
    again = store.load("f1")
    assert (again.run, again.children, again.records) == (2, ("kid",), ())
    past = pg_server.execute(f'SELECT run, position, name FROM "{pg_schema}".past_records')
    assert past == [(1, 0, "one")]
    store.close()


def test_a_finishing_child_announces_its_parents_wake_to_listening_workers(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    import psycopg

    from crux_gen.stores.postgres_schema import WAKE_CHANNEL

    clock = FakeClock()
    store = postgres_store_class(pg_server.url, schema=pg_schema, clock=clock)
    t = clock.time()
    store.start("p", "demo", "null", "me", t)
    store.commit("p", "me", t, Write(children=(NewChild("kid", "demo", "null"),)))
    store.commit("p", "me", t, Write(status="suspended", waiting_for="kid", wait_kind="child"))
    with psycopg.connect(pg_server.url, autocommit=True) as listener:
        listener.execute(f"LISTEN {WAKE_CHANNEL}".encode())
        store.claim("kid", "w", t)
        store.commit("kid", "w", t + 1, Write(status="completed", result="1"))
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == ["p"]
    assert store.load("p").wake_at == t + 1
    store.close()


CONNECT_AT_ONCE = """
    import sys, time
    from pathlib import Path
    from crux_gen.stores.postgres import PostgresStore

    url, n, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    (gate.parent / f"ready-{n}").touch()
    while not gate.exists():
        time.sleep(0.001)
    store = PostgresStore(url)
    store.start(f"flow-{n}", "demo", "null", "me", 1.0)
    store.close()
    print("ok")
"""


def test_processes_connecting_to_a_fresh_database_at_once_create_the_schema_once(
    postgres_store_class: Any, pg_database: str, tmp_path: Path
) -> None:
    n = 4
    gate = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CONNECT_AT_ONCE), pg_database, str(i), gate],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < n:  # all imported, none connected yet
            assert time.monotonic() < deadline, "the processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        gate.touch()  # all connect at once
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * n, outs
    assert [out for out, _ in outs] == ["ok\n"] * n
    found = {
        name
        for (name,) in in_database(
            pg_database,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'crux'",
        )
    }
    [version_table] = [name for name in found if "version" in name]
    assert len(in_database(pg_database, f'SELECT * FROM crux."{version_table}"')) == 1
    flows = in_database(pg_database, "SELECT id FROM crux.flows ORDER BY id")
    assert flows == [(f"flow-{i}",) for i in range(n)]


# -- a server that is not there -----------------------------------------------------------


def every_call(store: Any, flow_id: str) -> dict[str, Callable[[], Any]]:
    """Each public call of the store (and the module functions over it) on *flow_id*."""
    record = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    return {
        "start": lambda: store.start("new", "demo", "null", "me", 2.0),
        "claim": lambda: store.claim(flow_id, "you", 2.0),
        "claim only_if_due": lambda: store.claim(flow_id, "you", 2.0, only_if_due=True),
        "check_lease": lambda: store.check_lease(flow_id, "me", 2.0),
        "renew": lambda: store.renew(flow_id, "me", 2.0),
        "release": lambda: store.release(flow_id, "me"),
        "commit": lambda: store.commit(flow_id, "me", 2.0, Write(records=(record,))),
        "load": lambda: store.load(flow_id),
        "add_signal": lambda: store.add_signal(flow_id, "go", "1", 2.0),
        "cancel": lambda: store.cancel(flow_id, "why", 2.0),
        "due": lambda: store.due(2.0, 10),
        "list_flows": lambda: store.list_flows(),
        "match_ids": lambda: store.match_ids("f", 10),
        "retry_failed": lambda: store.retry_failed(flow_id, 2.0),
        "delete": lambda: store.delete(flow_id),
        "prune": lambda: store.prune(2.0),
        "get_flow": lambda: get_flow(flow_id, store=store),
        "signal_flow": lambda: signal_flow(flow_id, "go", 1, store=store),
    }


def assert_store_error_naming(error: BaseException, host: str) -> None:
    assert type(error) is StoreError or isinstance(error, StoreError), repr(error)
    assert not type(error).__module__.startswith("psycopg"), repr(error)
    assert host in str(error), str(error)


def test_a_server_nobody_listens_on_is_a_store_error_naming_the_host(
    postgres_store_class: Any,
) -> None:
    port = pg.free_port()
    url = f"postgresql://crux@127.0.0.1:{port}/crux"
    started = time.monotonic()
    try:
        store = postgres_store_class(url, connect_timeout="500ms")
    except StoreError as e:  # the first connect is in the constructor (it makes the schema)
        assert_store_error_naming(e, f"127.0.0.1:{port}")
        assert time.monotonic() - started < 30
        return
    for call, run in every_call(store, "f1").items():
        with pytest.raises(StoreError) as info:
            run()
        assert f"127.0.0.1:{port}" in str(info.value), call


def test_every_call_is_a_store_error_naming_the_host_while_the_server_is_away_and_works_after(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    """The server goes away (a TCP door to it closes, live connections and all) and
    comes back: meanwhile each call fails as a ``StoreError`` naming the host, never a
    psycopg error; afterwards the same store object carries on, nothing lost."""
    with pg.Proxy(pg_server.url) as door:
        store = postgres_store_class(door.url, schema=pg_schema, connect_timeout="100ms")
        store.start("f1", "demo", "null", "me", 1.0)
        before = store.load("f1")
        door.close()
        for call, run in every_call(store, "f1").items():
            started = time.monotonic()
            with pytest.raises(Exception) as info:
                run()
            assert_store_error_naming(info.value, "127.0.0.1")
            assert time.monotonic() - started < 15, call
        door.open()
        deadline = time.monotonic() + 30
        while True:  # the store reconnects by itself (with backoff)
            try:
                after = store.load("f1")
                break
            except StoreError:
                assert time.monotonic() < deadline, "the store did not reconnect"
                time.sleep(0.1)
        assert after == before
        assert store.check_lease("f1", "me", 2.0).status == "running"
        store.close()


# -- importing it --------------------------------------------------------------------------


def test_crux_gen_imports_psycopg_only_when_postgres_store_is_asked_for(
    postgres_store_class: Any,
) -> None:
    done = python(
        """
        import sys
        import crux_gen
        from crux_gen import SQLiteStore, MemoryStore
        assert "psycopg" not in sys.modules, "import crux_gen imported psycopg"
        assert "crux_gen.stores.postgres" not in sys.modules
        from crux_gen import PostgresStore
        from crux_gen.stores.postgres import PostgresStore as direct
        assert PostgresStore is direct
        assert crux_gen.PostgresStore is direct
        print("ok")
        """
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_without_psycopg_the_postgres_store_says_to_install_the_postgres_extra(
    postgres_store_class: Any,
) -> None:
    done = python(
        """
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        sys.modules["psycopg_pool"] = None
        import crux_gen
        crux_gen.SQLiteStore  # everything else works
        try:
            crux_gen.PostgresStore("postgresql://nobody@127.0.0.1:1/none")
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "crux-gen[postgres]" in done.stdout, done.stdout


# -- statements name their flow (distribution by flow id) ---------------------------------

TABLE = re.compile(
    r'(?<![\w.])(?:"?\w+"?\.)?"?(flows|records|past_records|signals)"?(?![\w.])', re.I
)
FILTER = {
    "flows": re.compile(r"(?<![\w])(?:\w+\.)?id\s*=", re.I),
    "records": re.compile(r"(?<![\w])(?:\w+\.)?flow_id\s*=", re.I),
    "past_records": re.compile(r"(?<![\w])(?:\w+\.)?flow_id\s*=", re.I),
    "signals": re.compile(r"(?<![\w])(?:\w+\.)?flow_id\s*=", re.I),
}
KEY_COLUMN = {"flows": "id", "records": "flow_id", "past_records": "flow_id", "signals": "flow_id"}


def touched(statement: str) -> set[str]:
    return {m.group(1).lower() for m in TABLE.finditer(statement)}


def unfiltered(statement: str) -> list[str]:
    """The tables *statement* touches without naming the flow by its id: an INSERT
    must give the id column, anything else must filter ``id =`` / ``flow_id =``."""
    text = " ".join(statement.split())
    missing = []
    for table in sorted(touched(text)):
        insert = re.search(rf'INSERT\s+INTO\s+(?:"?\w+"?\.)?"?{table}"?\s*\(([^)]*)\)', text, re.I)
        if insert is not None:
            columns = [c.strip().strip('"').lower() for c in insert.group(1).split(",")]
            if KEY_COLUMN[table] in columns:
                continue
        elif FILTER[table].search(text):
            continue
        missing.append(table)
    return missing


def test_the_filter_check_itself() -> None:
    assert unfiltered("SELECT * FROM flows WHERE id = %s") == []
    assert unfiltered("UPDATE crux.signals SET state = %s WHERE flow_id = %s AND id = %s") == []
    assert unfiltered("INSERT INTO records (flow_id, position) VALUES (%s, %s)") == []
    assert unfiltered("SELECT id FROM signals WHERE id = ANY(%s)") == ["signals"]
    assert unfiltered("SELECT id FROM flows WHERE status = 'failed'") == ["flows"]
    assert unfiltered("INSERT INTO signals (name) VALUES (%s)") == ["signals"]
    assert unfiltered("SELECT f.x FROM flows f JOIN records r ON r.flow_id = f.id") == ["flows"]
    joined = "SELECT f.x FROM flows f JOIN records r ON r.flow_id = f.id WHERE f.id = %s"
    assert unfiltered(joined) == []
    assert unfiltered("SELECT pg_notify(%s, %s)") == []


def test_every_statement_on_one_flow_filters_by_its_id(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    from crux_gen.stores import postgres_schema as sql

    clock = FakeClock()
    store = postgres_store_class(pg_server.url, schema=pg_schema, clock=clock)
    registry = Registry()
    ran: list[str] = []

    @flow("sharded", registry=registry)
    def body(ctx: FlowContext) -> Any:
        yield Step("one", lambda: ran.append("one") or 1)
        got = yield Suspend("go", timeout="1h")
        yield Sleep("nap", "1m")
        yield Step("two", lambda: ran.append("two") or 2)
        return got

    @flow("fails", registry=registry)
    def fails(ctx: FlowContext) -> Any:
        yield Step("boom", lambda: 1 / 0)

    seen: list[str] = []
    scans: list[str] = []  # the due scan and the listings: many flows by nature
    store.trace = seen.append

    r = body.run(input={"n": 1}, store=store)  # start, step, suspend
    assert r.status == "suspended"
    signal_flow(r.flow_id, "go", "yes", store=store, key="k1")
    signal_flow(r.flow_id, "go", "again", store=store, key="k1")  # the key: nothing stored
    mark = len(seen)
    assert store.due(clock.time(), 10) == [r.flow_id]
    scans += seen[mark:]
    claimed = store.claim(r.flow_id, "worker", clock.time(), only_if_due=True)
    assert claimed.lease_owner == "worker"
    assert store.renew(r.flow_id, "worker", clock.time())
    store.release(r.flow_id, "worker")
    assert resume(r.flow_id, store=store, flows=[body]).status == "suspended"  # the nap
    clock.advance("2m")
    done = resume(r.flow_id, store=store, flows=[body])
    assert (done.status, done.value, ran) == ("completed", "yes", ["one", "two"])
    assert get_flow(r.flow_id, store=store).status == "completed"

    failed = fails.run(store=store)
    assert failed.status == "failed"
    assert store.retry_failed(failed.flow_id, clock.time())
    assert store.cancel(failed.flow_id, "enough", clock.time())
    assert store.delete(failed.flow_id)

    parked = body.run(store=store)
    clock.advance("2h")  # its wait's deadline passes
    assert resume(parked.flow_id, store=store, flows=[body]).status == "expired"

    # Composition: children started, one finishing wakes its parent, a run
    # continued as new, a cancel that reaches a descendant.
    t = clock.time()
    store.start("parent", "demo", "null", "me", t)
    kids = (NewChild("kid-1", "demo", "1"), NewChild("kid-2", "demo", "2"))
    store.commit("parent", "me", t, Write(children=kids, custom_status='"two"'))
    store.commit("parent", "me", t, Write(continue_as_new='"again"'))
    store.commit(
        "parent",
        "me",
        t,
        Write(
            status="suspended",
            waiting_for="kid-1",
            wait_kind="child",
            wait_children=("kid-1",),
        ),
    )
    store.claim("kid-1", "me", t)
    store.commit("kid-1", "me", t, Write(status="completed", result="1"))
    store.claim("kid-2", "me", t)
    store.commit("kid-2", "me", t, Write(children=(NewChild("grandkid", "demo", "3"),)))
    assert store.load("parent").children == ("kid-1", "kid-2")
    assert store.cancel("parent", "enough", t)
    # A flow's children are found by parent_id: like the due scan, not one flow's.
    scans += [s for s in seen if s in (sql.CHILDREN, sql.CHILD_ROWS)]

    mark = len(seen)
    store.list_flows(status="completed", limit=5)
    store.list_flows(name="sharded", before=clock.time())
    store.match_ids(r.flow_id[:4], 5)
    store.prune(clock.time() - 3600)
    scans += seen[mark:]
    store.trace = None

    assert scans, "the due scan and the listings went through the trace hook too"
    checked = [s for s in seen if s not in scans and touched(s)]
    for table in ("flows", "records", "past_records", "signals"):  # the hook saw them used
        assert any(table in touched(s) for s in checked), table
    offenders = {s: unfiltered(s) for s in checked if unfiltered(s)}
    assert offenders == {}, "\n\n".join(f"{t}: {s}" for s, t in offenders.items())
    assert len(checked) >= 20, checked
    store.close()


# -- writes ---------------------------------------------------------------------------------


def test_a_write_the_server_refuses_is_a_store_error_and_nothing_of_it_is_applied(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    store = postgres_store_class(pg_server.url, schema=pg_schema, clock=FakeClock())
    store.start("f1", "demo", "null", "me", 1.0)
    good = StoredRecord(0, "step", "one", COMPLETED, result="1", attempts=1)
    bad = StoredRecord(1, "step", None, COMPLETED, result="2", attempts=1)  # type: ignore[arg-type]
    with pytest.raises(StoreError) as info:
        store.commit("f1", "me", 2.0, Write(records=(good, bad), status="completed"))
    assert not type(info.value).__module__.startswith("psycopg")
    row = store.load("f1")
    assert (row.records, row.status) == ((), "running")
    store.close()


def test_the_store_keeps_json_as_text_columns(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    """What the store keeps is JSON text it never interprets: readable with any SQL tool."""
    store = postgres_store_class(pg_server.url, schema=pg_schema, clock=FakeClock())
    registry = Registry()

    @flow("json-text", registry=registry)
    def body(ctx: FlowContext) -> Any:
        yield Step("a", lambda: {"tags": ["x"]})
        return (yield Suspend("go"))

    r = body.run(input={"n": [1, 2]}, store=store)
    signal_flow(r.flow_id, "go", {"ok": True}, store=store)
    assert resume(r.flow_id, store=store, flows=[body]).status == "completed"
    types = dict(
        pg_server.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s",
            (pg_schema,),
        )
    )
    for column in ("flows.input", "flows.result", "records.result", "signals.payload"):
        assert types[column] == "text", (column, types[column])
    store.close()


# -- one clock per deployment ---------------------------------------------------------------


def test_leases_and_deadlines_use_the_database_clock_so_a_skewed_host_steals_nothing(
    postgres_store_class: Any, pg_schema: str, pg_server: Any
) -> None:
    """A host whose clock runs an hour fast still reads the server's time, so the
    live lease of a runner on another host is not "expired" to it."""
    PostgresStore = postgres_store_class
    store = PostgresStore(pg_server.url, schema=pg_schema)
    [(server_now,)] = pg_server.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    assert abs(store.clock.time() - server_now) < 1.0
    held = store.start("held-1", "demo", "null", "runner-a", store.clock.time())
    assert held.lease_expires == pytest.approx(server_now + 30, abs=1.0)

    done = python(
        """
        import sys, time
        real = time.time
        time.time = lambda: real() + 3600  # this host's clock is an hour fast
        from crux_gen import FlowBusyError
        from crux_gen.stores.postgres import PostgresStore
        store = PostgresStore(sys.argv[1], schema=sys.argv[2])
        print("skew", round(store.clock.time() - real()))
        try:
            store.claim("held-1", "runner-b", store.clock.time())
            print("stolen")
        except FlowBusyError:
            print("busy")
        """,
        pg_server.url,
        pg_schema,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["skew", "0", "busy"]
    store.close()


def test_a_version_4_schema_gets_the_schedules_table_and_keeps_its_flows(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    PostgresStore = postgres_store_class
    clock = FakeClock()
    old = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    old.start("f1", "demo", "null", "me", clock.time())
    old.close()
    drop_traces(pg_server, pg_schema)  # versions 10, 9 and 8
    for table in ("schedules", "limit_state", "limit_slots", "fair_turns"):  # versions 6, 7
        pg_server.execute(f'DROP TABLE "{pg_schema}".{table}')
    pg_server.execute(  # and version 5's flow control: a schema as version 4 left it
        f'ALTER TABLE "{pg_schema}".flows DROP COLUMN priority, DROP COLUMN blocked_by, '
        "DROP COLUMN exclusive_key, DROP COLUMN holds, DROP COLUMN debounce_key, "
        "DROP COLUMN debounce_cap, DROP COLUMN blocked_until, DROP COLUMN fair_key"
    )
    pg_server.execute(f'UPDATE "{pg_schema}".schema_version SET version = 4')

    store = PostgresStore(pg_server.url, schema=pg_schema, clock=clock)
    assert pg_server.execute(f'SELECT version FROM "{pg_schema}".schema_version') == [(10,)]
    flow = store.load("f1")
    assert (flow.name, flow.priority, flow.blocked_by, flow.fair_key) == ("demo", 0, None, None)
    assert store.register_schedule("n", "0 2 * * *", "UTC", 1.0).next_tick == 1.0
    store.close()
