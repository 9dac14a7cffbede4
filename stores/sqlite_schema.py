"""The SQLite store's schema (DDL and migrations by ``PRAGMA user_version``) and
its dialect of the shared statements (``sql_statements``): always with
parameters, never formatted with values."""

from __future__ import annotations

import json
import sqlite3

import sqlite_utils

from .limit_schema import limit_ddl
from .sql_publish import STREAM_DDL
from .sql_statements import (
    FLOW_COLUMNS,
    FLOW_CONTROL_INDEXES,
    RECOVERY_DDL,
    Dialect,
    Statements,
)

__all__ = ["DUE", "FLOW_COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "STATEMENTS", "SYNCHRONOUS_MODES"]

SCHEMA_VERSION = 11
SYNCHRONOUS_MODES = ("FULL", "NORMAL")

#: What SQLite spells its own way (``sql_statements.Dialect``).
DIALECT = Dialect(
    mark="?",
    named=":{}",
    replace=True,
    locks=False,  # BEGIN IMMEDIATE holds the whole file
    cte_fence=False,
    in_list="{col} IN (SELECT value FROM json_each({mark}))",
    not_in_list="{col} NOT IN (SELECT value FROM json_each({mark}))",
    # An unreadable list (a corrupt row) holds every name; only strings are names.
    any_has=(
        "CASE WHEN json_valid({names}) IS NOT 1 THEN 1 "
        "WHEN json_type({names}) <> 'array' THEN 1 "
        "ELSE {name} IN (SELECT value FROM json_each({names}) WHERE type = 'text') END"
    ),
    hint=" INDEXED BY {}",
    # The subquery's ORDER BY orders the aggregates (an aggregate over it is never
    # flattened); the positions list lets a claim check that anyway.
    segment_build="""
SELECT count(*),
       json_array(json_group_array(position), json_group_array(kind),
                  json_group_array(name), json_group_array(state), json_group_array(error),
                  json_group_array(position) FILTER (WHERE result IS NULL)),
       group_concat(COALESCE(result, 'null'), char(30))
  FROM (SELECT position, kind, name, state, result, error FROM records
         WHERE flow_id = :flow AND position < :stop ORDER BY position)
""",
    as_list=lambda values: json.dumps(list(values)),
)
STATEMENTS = Statements(DIALECT)
#: The due scan (``bench/due_scan.py`` and a test read its plan).
DUE = STATEMENTS.DUE


def create_schema(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    db.table("flows").create(
        {
            "id": str, "name": str, "status": str, "input": str,
            "created_at": float, "updated_at": float,
            "result": str, "error": str, "cancel_reason": str,
            "waiting_for": str, "wait_kind": str, "wake_at": float, "deadline": float,
            "lease_owner": str, "lease_expires": float,
        },
        pk="id",
        not_null={"name", "status", "input", "created_at", "updated_at"},
    )  # fmt: skip
    # WITHOUT ROWID: a flow's history is one contiguous range of one b-tree, and a
    # step's insert touches that b-tree alone (sqlite-utils cannot say this).
    conn.execute(
        """CREATE TABLE records (
            flow_id TEXT NOT NULL, position INTEGER NOT NULL,
            kind TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
            result TEXT, error TEXT, attempts INTEGER NOT NULL,
            started_at FLOAT, finished_at FLOAT, wake_at FLOAT, deadline FLOAT,
            PRIMARY KEY (flow_id, position)
        ) WITHOUT ROWID"""
    )
    db.table("signals").create(
        {
            "id": int, "flow_id": str, "name": str, "payload": str, "state": str,
            "created_at": float, "error": str, "consumed_at": float, "position": int,
        },
        pk="id",
        not_null={"flow_id", "name", "payload", "state", "created_at"},
    )  # fmt: skip
    db.table("flows").create_index(["status", "updated_at"], index_name="flows_by_status")
    db.table("flows").create_index(["name", "updated_at"], index_name="flows_by_name")
    db.table("signals").create_index(["flow_id", "id"], index_name="signals_by_flow")
    # The worker's due query reads only these partial indexes (naming them with
    # INDEXED BY): flows that are not due, and consumed signals, cost it nothing.
    conn.execute(
        "CREATE INDEX flows_due ON flows (wake_at) "
        "WHERE status = 'suspended' AND wake_at IS NOT NULL"
    )
    conn.execute("CREATE INDEX flows_running ON flows (lease_expires) WHERE status = 'running'")
    conn.execute("CREATE INDEX signals_pending ON signals (flow_id, name) WHERE state = 'pending'")


def add_signal_keys_and_listing(conn: sqlite3.Connection) -> None:
    """Version 2: signals carry an idempotency key (one per flow and key), and a
    listing of all flows pages by ``updated_at`` through an index."""
    conn.execute("ALTER TABLE signals ADD COLUMN key TEXT")
    conn.execute(
        "CREATE UNIQUE INDEX signals_by_key ON signals (flow_id, key) WHERE key IS NOT NULL"
    )
    conn.execute("CREATE INDEX flows_by_update ON flows (updated_at, id)")


def add_segments(conn: sqlite3.Connection) -> None:
    """Version 3: a flow's completed history as one row (``stores/segments.py``), a
    derived copy of its records that a resume reads instead of one row per record."""
    conn.execute(
        "CREATE TABLE segments (flow_id TEXT PRIMARY KEY, count INTEGER NOT NULL, "
        "meta TEXT NOT NULL, results TEXT NOT NULL, checksum INTEGER NOT NULL)"
    )


def add_composition(conn: sqlite3.Connection) -> None:
    """Version 4: flows compose. A flow row names its parent (the flow that started
    it with ``Child``), its run (``ContinueAsNew``) and its custom status; earlier
    runs' records are kept in ``past_records``. Existing flows are run 1 of their
    own, with no parent."""
    conn.execute("ALTER TABLE flows ADD COLUMN parent_id TEXT")
    conn.execute("ALTER TABLE flows ADD COLUMN run INTEGER NOT NULL DEFAULT 1")
    conn.execute("ALTER TABLE flows ADD COLUMN custom_status TEXT")
    conn.execute(
        "CREATE INDEX flows_by_parent ON flows (parent_id, created_at, id) "
        "WHERE parent_id IS NOT NULL"
    )
    conn.execute(
        """CREATE TABLE past_records (
            flow_id TEXT NOT NULL, run INTEGER NOT NULL, position INTEGER NOT NULL,
            kind TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
            result TEXT, error TEXT, attempts INTEGER NOT NULL,
            started_at FLOAT, finished_at FLOAT, wake_at FLOAT, deadline FLOAT,
            PRIMARY KEY (flow_id, run, position)
        ) WITHOUT ROWID"""
    )


#: What the trigger ``records_in_order`` aborts a statement with (``GAP_ERROR``).
GAP_ERROR = "crux_gen: a record at a gap"


def add_record_order(conn: sqlite3.Connection) -> None:
    """Version 5: the gap rule in the schema. A record goes at position 0 or after
    the record before it; otherwise the statement is aborted (``GAP_ERROR``). A
    step's fenced insert then reads no ``records`` row itself (SQLite copies the
    rows of an ``INSERT … SELECT`` that reads its own table into a temporary table
    first), and the store turns the abort into the write's refusal."""
    conn.execute(
        "CREATE TRIGGER records_in_order BEFORE INSERT ON records "
        "WHEN NEW.position > 0 AND NOT EXISTS (SELECT 1 FROM records "
        "WHERE flow_id = NEW.flow_id AND position = NEW.position - 1) "
        f"BEGIN SELECT RAISE(ABORT, '{GAP_ERROR}'); END"
    )


def add_flow_control(conn: sqlite3.Connection) -> None:
    """Version 6: flow control (``Flow.start``, ``Exclusive``, ``Debounce``). A flow
    has a ``priority`` (due flows are taken higher first) and ``blocked_by`` (what a
    due flow waits for); ``exclusive_key``/``holds`` and ``debounce_key``/
    ``debounce_cap`` keep the exclusive and debounce keys, each unique where it
    must be so that racing starts leave one flow per key. Existing flows have
    priority 0 and none of these."""
    for ddl in (
        "ALTER TABLE flows ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE flows ADD COLUMN blocked_by TEXT",
        "ALTER TABLE flows ADD COLUMN exclusive_key TEXT",
        "ALTER TABLE flows ADD COLUMN holds TEXT",
        "ALTER TABLE flows ADD COLUMN debounce_key TEXT",
        "ALTER TABLE flows ADD COLUMN debounce_cap FLOAT",
        *FLOW_CONTROL_INDEXES,
    ):
        conn.execute(ddl)


def add_schedules(conn: sqlite3.Connection) -> None:
    """Version 7: the state of cron schedules, one row per name
    (``stores/sql_schedules.py``): what every worker firing it shares."""
    conn.execute(
        "CREATE TABLE schedules (name TEXT PRIMARY KEY, cron TEXT NOT NULL, "
        "tz TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0, last_tick FLOAT, "
        "last_flow TEXT, next_tick FLOAT NOT NULL)"
    )


def add_limits(conn: sqlite3.Connection) -> None:
    """Version 8: global limits (``Limit``): ``limit_state`` (a rate's GCRA time and
    the lock of a limit's slots, per name and key), ``limit_slots`` (one row per
    slot held, counted while its flow's lease is live), and on flows
    ``blocked_until`` (a rate's turn) and ``fair_key`` (round-robin across keys)."""
    for ddl in limit_ddl("FLOAT"):
        conn.execute(ddl)


def add_traces(conn: sqlite3.Connection) -> None:
    """Version 9: the W3C trace context a flow was started in and a signal sent in
    (``crux_gen.otel``: text, ``NULL`` when nothing was traced)."""
    conn.execute("ALTER TABLE flows ADD COLUMN trace TEXT")
    conn.execute("ALTER TABLE signals ADD COLUMN trace TEXT")


def add_recoveries(conn: sqlite3.Connection) -> None:
    """Version 10: ``@flow(max_recoveries=)``. A flow counts the claims in a row
    after a lapsed lease with nothing recorded (``recoveries``) and keeps when its
    lease was taken (``claimed_at``). Existing flows start at 0, never claimed."""
    for ddl in RECOVERY_DDL:
        conn.execute(ddl.format(real="FLOAT"))


def add_streams(conn: sqlite3.Connection) -> None:
    """Version 11: a flow's events (``ctx.set_event``: one value per key) and
    streams (``ctx.write_stream``: entries numbered per key, ``value`` ``NULL``
    closing it, ``tag`` a body write's: ``stores/base_streams.py``)."""
    for ddl in STREAM_DDL:
        conn.execute(ddl.format(real="FLOAT", int="INTEGER"))


#: Schema version -> the function that brings a database from the one before to it.
MIGRATIONS = {
    1: create_schema,
    2: add_signal_keys_and_listing,
    3: add_segments,
    4: add_composition,
    5: add_record_order,
    6: add_flow_control,
    7: add_schedules,
    8: add_limits,
    9: add_traces,
    10: add_recoveries,
    11: add_streams,
}
