"""The PostgreSQL store's schema (DDL and migrations, in its own PostgreSQL schema,
with a version), its dialect of the shared statements (``sql_statements``) and
the statements only it runs: always with parameters (``%s``), never formatted
with values. Table names are unqualified: each connection's ``search_path`` is
the store's schema.

Every statement that touches one flow filters by its id (``id = %s`` or
``flow_id = %s``), the due scan, the listings, pruning, ``put_flow``'s check
that the signal ids it is given are free (a migration's, once per flow) and the
reads of a flow's children by ``parent_id`` (``CHILDREN``, ``CHILD_ROWS``: a
``load`` and a ``cancel``) aside, so the tables can be distributed by flow id
(Citus, or a sharded fleet) when one server is not enough.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from .limit_schema import limit_ddl
from .sql_publish import STREAM_DDL
from .sql_statements import FLOW_CONTROL_INDEXES, RECOVERY_DDL, Dialect, Statements

SCHEMA_VERSION = 10
#: The channel a flow's published values and its end are announced on (not the
#: workers' ``WAKE_CHANNEL``); the payload is the flow's id (a hint only).
PUBLISH_CHANNEL = "crux_published"

#: What PostgreSQL spells its own way (``sql_statements.Dialect``).
DIALECT = Dialect(
    mark="%s",
    named="%({})s",
    replace=False,
    locks=True,
    cte_fence=True,
    in_list="{col} = ANY({mark})",
    not_in_list="{col} <> ALL({mark})",
    # ``any_wait_has`` (schema version 4): a cast in the query itself would fail
    # the whole query on one corrupt row, for every worker.
    any_has="any_wait_has({names}, {name})",
    hint="",
    # Ordered aggregates.
    segment_build="""
SELECT count(*),
       json_build_array(
           json_agg(position ORDER BY position), json_agg(kind ORDER BY position),
           json_agg(name ORDER BY position), json_agg(state ORDER BY position),
           json_agg(error ORDER BY position),
           COALESCE(json_agg(position ORDER BY position) FILTER (WHERE result IS NULL),
                    '[]'::json))::text,
       string_agg(COALESCE(result, 'null'), chr(30) ORDER BY position)
  FROM records WHERE flow_id = %(flow)s AND position < %(stop)s
""",
    as_list=list,
    notify=f"pg_notify('{PUBLISH_CHANNEL}', {{flow}})",
)
STATEMENTS = Statements(DIALECT)
# Read by tests: a flow's children (found by parent_id), and a parent's wake.
CHILDREN = STATEMENTS.CHILDREN
CHILD_ROWS = STATEMENTS.CHILD_ROWS
WAKE_PARENT = STATEMENTS.WAKE_PARENT

#: The channel a signal is announced on; the payload is the flow's id (a hint only).
WAKE_CHANNEL = "crux_wake"
NOTIFY = "SELECT pg_notify(%s, %s)"
# Lock order: every transaction that changes more than one flow row, or finishes
# one, locks them all first, in one statement, by id; a flow's parent (which its
# end wakes) is locked with it. Two transactions then never hold one row each and
# wait for the other's.
LOCK_FLOWS = (
    "SELECT id FROM flows WHERE id = ANY(ARRAY(SELECT unnest(%(ids)s::text[]) UNION "
    "SELECT parent_id FROM flows WHERE id = ANY(%(ids)s) AND parent_id IS NOT NULL)) "
    "ORDER BY id FOR UPDATE"
)
# Move the id sequence past the ids put by hand (never backwards).
SIGNAL_IDS_PAST = (
    "SELECT setval(pg_get_serial_sequence('signals', 'id'), "
    "GREATEST(%s, (SELECT last_value FROM signals_id_seq)))"
)
SERVER_TIME = "SELECT extract(epoch FROM clock_timestamp())::float8"
MATCH_IDS = "SELECT id FROM flows WHERE starts_with(id, %s) ORDER BY id LIMIT %s"


def _create(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 1: the three tables and the indexes the due scan and listings read."""
    for ddl in (
        """CREATE TABLE flows (
            id text PRIMARY KEY, name text NOT NULL, status text NOT NULL,
            input text NOT NULL, created_at double precision NOT NULL,
            updated_at double precision NOT NULL, result text, error text,
            cancel_reason text, waiting_for text, wait_kind text,
            wake_at double precision, deadline double precision,
            lease_owner text, lease_expires double precision)""",
        """CREATE TABLE records (
            flow_id text NOT NULL, position integer NOT NULL, kind text NOT NULL,
            name text NOT NULL, state text NOT NULL, result text, error text,
            attempts integer NOT NULL, started_at double precision,
            finished_at double precision, wake_at double precision,
            deadline double precision, PRIMARY KEY (flow_id, position))""",
        """CREATE TABLE signals (
            id bigserial PRIMARY KEY, flow_id text NOT NULL, name text NOT NULL,
            payload text NOT NULL, state text NOT NULL,
            created_at double precision NOT NULL, error text,
            consumed_at double precision, position integer, key text)""",
        "CREATE INDEX flows_by_status ON flows (status, updated_at)",
        "CREATE INDEX flows_by_name ON flows (name, updated_at)",
        "CREATE INDEX flows_by_update ON flows (updated_at, id)",
        "CREATE INDEX flows_due ON flows (wake_at) "
        "WHERE status = 'suspended' AND wake_at IS NOT NULL",
        "CREATE INDEX flows_running ON flows (lease_expires) WHERE status = 'running'",
        "CREATE INDEX signals_by_flow ON signals (flow_id, id)",
        "CREATE INDEX signals_pending ON signals (flow_id, name) WHERE state = 'pending'",
        "CREATE UNIQUE INDEX signals_by_key ON signals (flow_id, key) WHERE key IS NOT NULL",
    ):
        conn.execute(ddl.encode())


def _add_segments(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 2: a flow's completed history as one row (``stores/segments.py``), a
    derived copy of its records that a resume reads instead of one row per record."""
    conn.execute(
        b"CREATE TABLE segments (flow_id text PRIMARY KEY, count integer NOT NULL, "
        b"meta text NOT NULL, results text NOT NULL, checksum bigint NOT NULL)"
    )


def _add_composition(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 3: flows compose. A flow row names its parent (the flow that started
    it with ``Child``), its run (``ContinueAsNew``) and its custom status; earlier
    runs' records are kept in ``past_records``. Existing flows are run 1 of their
    own, with no parent."""
    for ddl in (
        "ALTER TABLE flows ADD COLUMN parent_id text, "
        "ADD COLUMN run integer NOT NULL DEFAULT 1, ADD COLUMN custom_status text",
        "CREATE INDEX flows_by_parent ON flows (parent_id, created_at, id) "
        "WHERE parent_id IS NOT NULL",
        """CREATE TABLE past_records (
            flow_id text NOT NULL, run integer NOT NULL, position integer NOT NULL,
            kind text NOT NULL, name text NOT NULL, state text NOT NULL, result text,
            error text, attempts integer NOT NULL, started_at double precision,
            finished_at double precision, wake_at double precision,
            deadline double precision, PRIMARY KEY (flow_id, run, position))""",
    ):
        conn.execute(ddl.encode())


#: Schema version -> the function that brings a database from the one before to it.
def _add_any_wait_has(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 4: ``any_wait_has(waiting_for, name)``, whether an ``Any`` wait's
    list of signal names holds *name*, for the due query. A list that is not a JSON
    array (a corrupt row) holds every name: the flow wakes on any pending signal and
    its runner parks it again with a list it wrote, or reports what is corrupt; a
    cast in the query itself would fail the whole query, for every worker."""
    conn.execute(
        b"""CREATE OR REPLACE FUNCTION any_wait_has(waiting_for text, name text)
        RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN
          IF jsonb_typeof(waiting_for::jsonb) = 'array' THEN
            RETURN waiting_for::jsonb ? name;
          END IF;
          RETURN true;
        EXCEPTION WHEN others THEN
          RETURN true;
        END $$"""
    )


def _add_flow_control(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 5: flow control, as SQLite's version 6 (``sqlite_schema.add_flow_control``):
    ``priority``, ``blocked_by``, the exclusive and debounce keys and their indexes."""
    conn.execute(
        b"ALTER TABLE flows ADD COLUMN priority integer NOT NULL DEFAULT 0, "
        b"ADD COLUMN blocked_by text, ADD COLUMN exclusive_key text, ADD COLUMN holds text, "
        b"ADD COLUMN debounce_key text, ADD COLUMN debounce_cap double precision"
    )
    for ddl in FLOW_CONTROL_INDEXES:
        conn.execute(ddl.encode())


def _add_schedules(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 6: the state of cron schedules, one row per name
    (``stores/sql_schedules.py``): what every worker firing it shares."""
    conn.execute(
        b"CREATE TABLE schedules (name text PRIMARY KEY, cron text NOT NULL, "
        b"tz text NOT NULL, paused integer NOT NULL DEFAULT 0, "
        b"last_tick double precision, last_flow text, next_tick double precision NOT NULL)"
    )


def _add_limits(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 7: global limits, as SQLite's version 8 (``sqlite_schema.add_limits``)."""
    for ddl in limit_ddl("double precision"):
        conn.execute(ddl.encode())


def _add_traces(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 8: trace contexts, as SQLite's version 9 (``sqlite_schema.add_traces``)."""
    conn.execute(b"ALTER TABLE flows ADD COLUMN trace text")
    conn.execute(b"ALTER TABLE signals ADD COLUMN trace text")


def _add_recoveries(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 9: the recovery count, as SQLite's version 10
    (``sqlite_schema.add_recoveries``)."""
    for ddl in RECOVERY_DDL:
        conn.execute(ddl.format(real="double precision").encode())


def _add_streams(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Version 10: events and streams, as SQLite's version 11
    (``sqlite_schema.add_streams``)."""
    for ddl in STREAM_DDL:
        conn.execute(ddl.format(real="double precision", int="bigint").encode())


MIGRATIONS: dict[int, Callable[[psycopg.Connection[tuple[object, ...]], str], None]] = {
    1: _create,
    2: _add_segments,
    3: _add_composition,
    4: _add_any_wait_has,
    5: _add_flow_control,
    6: _add_schedules,
    7: _add_limits,
    8: _add_traces,
    9: _add_recoveries,
    10: _add_streams,
}
