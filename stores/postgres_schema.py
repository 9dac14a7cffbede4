"""The PostgreSQL store's schema (DDL and migrations, in its own PostgreSQL schema,
with a version) and the text of every SQL statement it runs: always with
parameters (``%s``), never formatted with values. Table names are unqualified:
each connection's ``search_path`` is the store's schema.

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

from crux_gen.records import StoredRecord, StoredSignal

SCHEMA_VERSION = 4

FLOW_COLUMNS = (
    "id, name, status, input, created_at, updated_at, result, error, cancel_reason, "
    "waiting_for, wait_kind, wake_at, deadline, lease_owner, lease_expires, "
    "parent_id, run, custom_status"
)
#: How many columns a flow row has (``FLOW_COLUMNS``, in ``StoredFlow``'s order).
FLOW_WIDTH = len(FLOW_COLUMNS.split(","))
#: Where the lease sits in a flow row: ``row[LEASE:LEASE + 2]``.
LEASE = 13
RECORD_COLUMNS = ", ".join(StoredRecord._fields)
SIGNAL_COLUMNS = ", ".join(StoredSignal._fields)
_RECORD_MARKS = ", ".join(["%s"] * (len(StoredRecord._fields) + 1))
_RECORD_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in StoredRecord._fields[1:])

# What a resume needs: of resolved commands only what replay feeds back.
RESOLVED = "state IN ('completed', 'failed')"
LEAN_RECORD_COLUMNS = (
    f"position, kind, name, state, result, error, "
    f"CASE WHEN {RESOLVED} THEN 0 ELSE attempts END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE started_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE finished_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE wake_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE deadline END"
)

#: The channel a signal is announced on; the payload is the flow's id (a hint only).
WAKE_CHANNEL = "crux_wake"

ROW = f"SELECT {FLOW_COLUMNS} FROM flows WHERE id = %s"
EXISTS = "SELECT 1 FROM flows WHERE id = %s"
ROW_FOR_UPDATE = ROW + " FOR UPDATE"
ROW_FOR_UPDATE_SKIP_LOCKED = ROW + " FOR UPDATE SKIP LOCKED"
RECORDS = f"SELECT {RECORD_COLUMNS} FROM records WHERE flow_id = %s ORDER BY position"
LEAN_RECORDS = f"SELECT {LEAN_RECORD_COLUMNS} FROM records WHERE flow_id = %s ORDER BY position"
SIGNALS = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = %s ORDER BY id"
PENDING_SIGNALS = (
    f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = %s AND state = 'pending' ORDER BY id"
)
PENDING_NAMED = (
    f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = %s AND name = ANY(%s) "
    "AND state = 'pending' ORDER BY id"
)
HAS_PENDING_ANY = (
    "SELECT 1 FROM signals WHERE flow_id = %s AND name = ANY(%s) AND state = 'pending' LIMIT 1"
)
HAS_ANY_PENDING = "SELECT 1 FROM signals WHERE flow_id = %s AND state = 'pending' LIMIT 1"
HAS_PENDING = "SELECT 1 FROM signals WHERE flow_id = %s AND name = %s AND state = 'pending' LIMIT 1"
INSERT_FLOW = (
    "INSERT INTO flows (id, name, status, input, created_at, updated_at, lease_owner, "
    "lease_expires) VALUES (%s, %s, 'running', %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
TAKE_LEASE = "UPDATE flows SET lease_owner = %s, lease_expires = %s WHERE id = %s"
RENEW = "UPDATE flows SET lease_expires = %s WHERE id = %s AND lease_owner = %s"
RELEASE = (
    "UPDATE flows SET lease_owner = NULL, lease_expires = NULL WHERE id = %s AND lease_owner = %s"
)
DROP_LEASE = "UPDATE flows SET lease_owner = NULL, lease_expires = NULL WHERE id = %s"
LEASE_CHECK = "SELECT status, lease_owner, cancel_reason, lease_expires FROM flows WHERE id = %s"
LEASE_CHECK_FOR_UPDATE = LEASE_CHECK + " FOR UPDATE"
PUT_RECORD = (
    f"INSERT INTO records (flow_id, {RECORD_COLUMNS}) VALUES ({_RECORD_MARKS}) "
    f"ON CONFLICT (flow_id, position) DO UPDATE SET {_RECORD_UPDATE}"
)
# A step's commit in one statement (one round trip, one transaction): the flow row
# is locked, and the record goes in only while the writer holds the lease of a
# running flow, at the next free position or over an unresolved record of its own.
PUT_RECORD_FENCED = (
    "WITH held AS (SELECT 1 FROM flows WHERE id = %s AND lease_owner = %s "
    "AND status = 'running' FOR UPDATE) "
    f"INSERT INTO records (flow_id, {RECORD_COLUMNS}) SELECT {_RECORD_MARKS} FROM held "
    "WHERE COALESCE((SELECT state IN ('waiting', 'retrying') FROM records "
    "WHERE flow_id = %s AND position = %s), "
    "%s = COALESCE((SELECT max(position) FROM records WHERE flow_id = %s), -1) + 1) "
    f"ON CONFLICT (flow_id, position) DO UPDATE SET {_RECORD_UPDATE}"
)
RECORD_STATES = "SELECT position, state FROM records WHERE flow_id = %s AND position = ANY(%s)"
LAST_POSITION = "SELECT max(position) FROM records WHERE flow_id = %s"
UNUSED = "UPDATE signals SET state = 'unused' WHERE flow_id = %s AND state = 'pending'"
WAIT_CLEARED = (
    "UPDATE flows SET status = %s, waiting_for = NULL, wait_kind = NULL, wake_at = NULL, "
    "deadline = NULL, updated_at = %s WHERE id = %s"
)
SIGNAL_UPDATE = (
    "UPDATE signals SET state = %s, error = %s, position = %s, consumed_at = %s "
    "WHERE flow_id = %s AND id = %s"
)
PARK = (
    "UPDATE flows SET status = %s, result = %s, error = %s, waiting_for = %s, wait_kind = %s, "
    "wake_at = %s, deadline = %s, lease_owner = NULL, lease_expires = NULL, updated_at = %s "
    "WHERE id = %s"
)
SIGNAL_FLOW_ROW = "SELECT status, deadline, waiting_for FROM flows WHERE id = %s FOR UPDATE"
SIGNAL_KEY_SEEN = "SELECT 1 FROM signals WHERE flow_id = %s AND key = %s"
INSERT_SIGNAL = (
    "INSERT INTO signals (flow_id, name, payload, state, created_at, key) "
    "VALUES (%s, %s, %s, 'pending', %s, %s) RETURNING id"
)
NOTIFY = "SELECT pg_notify(%s, %s)"
CANCEL = (
    "UPDATE flows SET status = 'cancelled', cancel_reason = %s, wake_at = NULL, "
    "updated_at = %s WHERE id = %s"
)
# A descendant cancelled with its ancestor, unless it finished meanwhile (the
# WHERE is checked again once a concurrent commit's row lock is released).
CANCEL_UNFINISHED = CANCEL + " AND status NOT IN ('completed', 'failed', 'expired', 'cancelled')"
SET_CUSTOM_STATUS = "UPDATE flows SET custom_status = %s WHERE id = %s"
FLOW_NAME = "SELECT name, parent_id FROM flows WHERE id = %s"
# A flow's status, and its parent's id and status (``None``s without one).
STATUS_AND_PARENT_FOR_UPDATE = (
    "SELECT f.status, p.id, p.status FROM flows f LEFT JOIN flows p ON p.id = f.parent_id "
    "WHERE f.id = %s FOR UPDATE OF f"
)
# Lock order: every transaction that changes more than one flow row locks them all
# first, in one statement, by id; a flow's parent (which its end wakes) is locked
# with it. Two transactions then never hold one row each and wait for the other's.
LOCK_FLOWS = (
    "SELECT id FROM flows WHERE id = ANY(ARRAY(SELECT unnest(%(ids)s::text[]) UNION "
    "SELECT parent_id FROM flows WHERE id = ANY(%(ids)s) AND parent_id IS NOT NULL)) "
    "ORDER BY id FOR UPDATE"
)
# Composition: a child flow, running and unclaimed (one stored already is left).
INSERT_CHILD = (
    "INSERT INTO flows (id, name, status, input, created_at, updated_at, parent_id) "
    "VALUES (%s, %s, 'running', %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
CHILDREN = "SELECT id FROM flows WHERE parent_id = %s ORDER BY created_at, id"
CHILD_ROWS = "SELECT id, status FROM flows WHERE parent_id = %s"
ANY_FINISHED = (
    "SELECT 1 FROM flows WHERE id = ANY(%s) "
    "AND status IN ('completed', 'failed', 'expired', 'cancelled') LIMIT 1"
)
# A finished flow makes its suspended parent due at once.
WAKE_PARENT = (
    "UPDATE flows SET wake_at = %(now)s WHERE id = (SELECT parent_id FROM flows "
    "WHERE id = %(flow)s) AND status = 'suspended' AND (wake_at IS NULL OR wake_at > %(now)s) "
    "RETURNING id"
)
# ContinueAsNew: the current run's records kept as a past run, then a fresh run.
KEEP_PAST_RUN = (
    f"INSERT INTO past_records (flow_id, run, {RECORD_COLUMNS}) "
    f"SELECT flow_id, %(run)s, {RECORD_COLUMNS} FROM records WHERE flow_id = %(flow)s "
    f"ON CONFLICT (flow_id, run, position) DO UPDATE SET {_RECORD_UPDATE}"
)
CURRENT_RUN = "SELECT run FROM flows WHERE id = %s"
NEW_RUN = (
    "UPDATE flows SET status = 'running', input = %s, run = run + 1, result = NULL, "
    "error = NULL, waiting_for = NULL, wait_kind = NULL, wake_at = NULL, deadline = NULL, "
    "updated_at = %s WHERE id = %s"
)
RETRY = (
    "UPDATE flows SET status = %s, result = NULL, error = NULL, waiting_for = %s, "
    "wait_kind = 'retry', wake_at = %s, deadline = NULL, lease_owner = NULL, "
    "lease_expires = NULL, updated_at = %s WHERE id = %s"
)
DROP_RECORDS_FROM = "DELETE FROM records WHERE flow_id = %s AND position >= %s"
DELETE_RECORDS = "DELETE FROM records WHERE flow_id = %s"
DELETE_PAST_RECORDS = "DELETE FROM past_records WHERE flow_id = %s"
DELETE_SIGNALS = "DELETE FROM signals WHERE flow_id = %s"
DELETE_FLOW = "DELETE FROM flows WHERE id = %s"
_DUE_FLOWS = """
  SELECT id, wake_at AS t FROM flows
   WHERE status = 'suspended' AND wake_at <= %(now)s
     AND (lease_owner IS NULL OR lease_expires <= %(now)s)
  UNION
  SELECT id, COALESCE(lease_expires, updated_at) AS t FROM flows
   WHERE status = 'running' AND (lease_expires IS NULL OR lease_expires <= %(now)s)
  UNION
  SELECT f.id, f.updated_at AS t FROM signals s JOIN flows f ON f.id = s.flow_id
   WHERE s.state = 'pending' AND f.status = 'suspended'
     AND f.wait_kind = 'suspend' AND f.waiting_for = s.name
     AND (f.lease_owner IS NULL OR f.lease_expires <= %(now)s)
     AND (f.wake_at IS NULL OR f.wake_at > %(now)s)
  UNION
  SELECT f.id, f.updated_at AS t FROM signals s JOIN flows f ON f.id = s.flow_id
   WHERE s.state = 'pending' AND f.status = 'suspended' AND f.wait_kind = 'any'
     AND any_wait_has(f.waiting_for, s.name)
     AND (f.lease_owner IS NULL OR f.lease_expires <= %(now)s)
     AND (f.wake_at IS NULL OR f.wake_at > %(now)s)
"""
DUE = f"SELECT id, t FROM ({_DUE_FLOWS}) due ORDER BY t, id LIMIT %(limit)s"
# The worker's batch claim: the same, leaving out the ids of an array.
DUE_EXCLUDING = (
    f"SELECT id, t FROM ({_DUE_FLOWS}) due WHERE id <> ALL(%(exclude)s) "
    "ORDER BY t, id LIMIT %(limit)s"
)
# Lock the due flows no other worker is claiming right now.
ROWS_FOR_UPDATE_SKIP_LOCKED = (
    f"SELECT {FLOW_COLUMNS} FROM flows WHERE id = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED"
)
# A flow's segment (``stores/segments.py``): the completed prefix of its history in
# one row, rewritten when a park finds that prefix grown; ordered aggregates.
SEGMENT_READ = "SELECT count, meta, results, checksum FROM segments WHERE flow_id = %s"
SEGMENT_TAIL = (
    f"SELECT {LEAN_RECORD_COLUMNS} FROM records WHERE flow_id = %s AND position >= %s "
    "ORDER BY position"
)
SEGMENT_PREFIX = (
    "SELECT COALESCE((SELECT count FROM segments WHERE flow_id = %(flow)s), 0), "
    "COALESCE((SELECT min(position) FROM records WHERE flow_id = %(flow)s AND position >= "
    "COALESCE((SELECT count FROM segments WHERE flow_id = %(flow)s), 0) AND state NOT IN "
    "('completed', 'failed')), (SELECT max(position) + 1 FROM records "
    "WHERE flow_id = %(flow)s), 0)"
)
SEGMENT_PUT = (
    "INSERT INTO segments (flow_id, count, meta, results, checksum) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (flow_id) DO UPDATE SET count = EXCLUDED.count, "
    "meta = EXCLUDED.meta, results = EXCLUDED.results, checksum = EXCLUDED.checksum"
)
SEGMENT_BUILD = """
SELECT count(*),
       json_build_array(
           json_agg(position ORDER BY position), json_agg(kind ORDER BY position),
           json_agg(name ORDER BY position), json_agg(state ORDER BY position),
           json_agg(error ORDER BY position),
           COALESCE(json_agg(position ORDER BY position) FILTER (WHERE result IS NULL),
                    '[]'::json))::text,
       string_agg(COALESCE(result, 'null'), chr(30) ORDER BY position)
  FROM records WHERE flow_id = %(flow)s AND position < %(stop)s
"""
DELETE_SEGMENT = "DELETE FROM segments WHERE flow_id = %s"
DROP_SEGMENT_PAST = "DELETE FROM segments WHERE flow_id = %s AND count > %s"
SIGNAL_IDS_TAKEN = "SELECT id, flow_id FROM signals WHERE id = ANY(%s) ORDER BY id LIMIT 1"
INSERT_WHOLE_FLOW = f"INSERT INTO flows ({FLOW_COLUMNS}) VALUES ({', '.join(['%s'] * FLOW_WIDTH)})"
INSERT_WHOLE_SIGNAL = (
    f"INSERT INTO signals ({SIGNAL_COLUMNS}) "
    f"VALUES ({', '.join(['%s'] * len(StoredSignal._fields))})"
)
# Move the id sequence past the ids put by hand (never backwards).
SIGNAL_IDS_PAST = (
    "SELECT setval(pg_get_serial_sequence('signals', 'id'), "
    "GREATEST(%s, (SELECT last_value FROM signals_id_seq)))"
)
# Finished flows, but not a child whose parent is unfinished (it may still wait for it).
PRUNE_BATCH = (
    "SELECT id FROM flows f WHERE status IN ('completed', 'failed', 'expired', 'cancelled') "
    "AND updated_at < %s AND NOT EXISTS (SELECT 1 FROM flows p WHERE p.id = f.parent_id "
    "AND p.status NOT IN ('completed', 'failed', 'expired', 'cancelled')) LIMIT %s"
)


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


MIGRATIONS: dict[int, Callable[[psycopg.Connection[tuple[object, ...]], str], None]] = {
    1: _create,
    2: _add_segments,
    3: _add_composition,
    4: _add_any_wait_has,
}
