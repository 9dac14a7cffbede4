"""The SQLite store's schema (DDL and migrations by ``PRAGMA user_version``) and
the text of every SQL statement it runs; always with parameters, never formatted
with values."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from crux_gen.records import StoredRecord, StoredSignal

SCHEMA_VERSION = 4
SYNCHRONOUS_MODES = ("FULL", "NORMAL")

FLOW_COLUMNS = (
    "id, name, status, input, created_at, updated_at, result, error, cancel_reason, "
    "waiting_for, wait_kind, wake_at, deadline, lease_owner, lease_expires, "
    "parent_id, run, custom_status"
)
#: How many columns a flow row has (``FLOW_COLUMNS``, in ``StoredFlow``'s order).
FLOW_WIDTH = len(FLOW_COLUMNS.split(","))
#: Where the lease sits in a flow row: ``row[LEASE:LEASE + 2]``.
LEASE = 13
INSERT_WHOLE_FLOW = f"INSERT INTO flows ({FLOW_COLUMNS}) VALUES ({', '.join('?' * FLOW_WIDTH)})"
RECORD_COLUMNS = ", ".join(StoredRecord._fields)
SIGNAL_COLUMNS = ", ".join(StoredSignal._fields)
# What a resume needs: of resolved commands only what replay feeds back (building
# Python floats for their timings cost more than the rest of the row together).
RESOLVED = "state IN ('completed', 'failed')"
LEAN_RECORD_COLUMNS = (
    f"position, kind, name, state, result, error, "
    f"CASE WHEN {RESOLVED} THEN 0 ELSE attempts END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE started_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE finished_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE wake_at END, "
    f"CASE WHEN {RESOLVED} THEN NULL ELSE deadline END"
)
PUT_RECORD = (
    f"INSERT OR REPLACE INTO records (flow_id, {RECORD_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A step's commit in one statement (one implicit transaction): the record goes in
# only while the writer holds the lease of a running flow, and only at the next
# free position or over an unresolved record of its own, else nothing is written.
PUT_RECORD_FENCED = (
    f"INSERT OR REPLACE INTO records (flow_id, {RECORD_COLUMNS}) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM flows "
    "WHERE id = ? AND lease_owner = ? AND status = 'running') AND COALESCE("
    "(SELECT state IN ('waiting', 'retrying') FROM records WHERE flow_id = ? AND position = ?), "
    "? = COALESCE((SELECT max(position) FROM records WHERE flow_id = ?), -1) + 1)"
)
LEASE_CHECK = "SELECT status, lease_owner, cancel_reason, lease_expires FROM flows WHERE id = ?"
LEASE_ROW = "SELECT id, status, lease_owner, cancel_reason, lease_expires FROM flows WHERE id = ?"
LEASE_ROWS = (
    "SELECT id, status, lease_owner, cancel_reason, lease_expires FROM flows "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
# Signals still pending when their flow finishes are kept, marked unused.
UNUSED = "UPDATE signals SET state = 'unused' WHERE flow_id = ? AND state = 'pending'"
WAIT_CLEARED = (
    "UPDATE flows SET status = ?, waiting_for = NULL, wait_kind = NULL, wake_at = NULL, "
    "deadline = NULL, updated_at = ? WHERE id = ?"
)
SIGNAL_UPDATE = (
    "UPDATE signals SET state = ?, error = ?, position = ?, consumed_at = ? "
    "WHERE id = ? AND flow_id = ?"
)
PARK = (
    "UPDATE flows SET status = ?, result = ?, error = ?, waiting_for = ?, wait_kind = ?, "
    "wake_at = ?, deadline = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ? "
    "WHERE id = ?"
)
SET_CUSTOM_STATUS = "UPDATE flows SET custom_status = ? WHERE id = ?"
# Composition: a child flow, running and unclaimed, and a flow's children.
INSERT_CHILD = (
    "INSERT OR IGNORE INTO flows (id, name, status, input, created_at, updated_at, parent_id) "
    "VALUES (?, ?, 'running', ?, ?, ?, ?)"
)
CHILDREN = (
    "SELECT id FROM flows INDEXED BY flows_by_parent WHERE parent_id = ? ORDER BY created_at, id"
)
# A flow's status, and its parent's id and status (``None``s without one).
STATUS_AND_PARENT = (
    "SELECT f.status, p.id, p.status FROM flows f LEFT JOIN flows p ON p.id = f.parent_id "
    "WHERE f.id = ?"
)
CHILD_ROWS = "SELECT id, status FROM flows INDEXED BY flows_by_parent WHERE parent_id = ?"
# A finished child makes its suspended parent due at once.
WAKE_PARENT = (
    "UPDATE flows SET wake_at = :now WHERE id = :parent AND status = 'suspended' "
    "AND (wake_at IS NULL OR wake_at > :now)"
)
CANCEL = (
    "UPDATE flows SET status = 'cancelled', cancel_reason = ?, wake_at = NULL, "
    "updated_at = ? WHERE id = ?"
)
# ContinueAsNew: the current run's records kept as a past run, then a fresh run.
KEEP_PAST_RUN = (
    f"INSERT OR REPLACE INTO past_records (flow_id, run, {RECORD_COLUMNS}) "
    f"SELECT flow_id, :run, {RECORD_COLUMNS} FROM records WHERE flow_id = :flow"
)
NEW_RUN = (
    "UPDATE flows SET status = 'running', input = ?, run = run + 1, result = NULL, "
    "error = NULL, waiting_for = NULL, wait_kind = NULL, wake_at = NULL, deadline = NULL, "
    "updated_at = ? WHERE id = ?"
)
# A flow's segment (``stores/segments.py``): the completed prefix of its history in
# one row, rewritten when a park finds that prefix grown. The subquery's ORDER BY
# orders the aggregates (an aggregate over it is never flattened); the positions
# list lets a claim check that anyway.
SEGMENT_READ = "SELECT count, meta, results, checksum FROM segments WHERE flow_id = ?"
SEGMENT_TAIL = (
    f"SELECT {LEAN_RECORD_COLUMNS} FROM records WHERE flow_id = ? AND position >= ? "
    "ORDER BY position"
)
SEGMENT_PREFIX = (
    "SELECT COALESCE((SELECT count FROM segments WHERE flow_id = :flow), 0), "
    "COALESCE((SELECT min(position) FROM records WHERE flow_id = :flow AND position >= "
    "COALESCE((SELECT count FROM segments WHERE flow_id = :flow), 0) AND state NOT IN "
    "('completed', 'failed')), (SELECT max(position) + 1 FROM records WHERE flow_id = :flow), 0)"
)
SEGMENT_PUT = (
    "INSERT OR REPLACE INTO segments (flow_id, count, meta, results, checksum) "
    "VALUES (?, ?, ?, ?, ?)"
)
SEGMENT_BUILD = """
SELECT count(*),
       json_array(json_group_array(position), json_group_array(kind),
                  json_group_array(name), json_group_array(state), json_group_array(error),
                  json_group_array(position) FILTER (WHERE result IS NULL)),
       group_concat(COALESCE(result, 'null'), char(30))
  FROM (SELECT position, kind, name, state, result, error FROM records
         WHERE flow_id = :flow AND position < :stop ORDER BY position)
"""
DUE_FLOWS = """
SELECT id, wake_at AS t FROM flows INDEXED BY flows_due
 WHERE status = 'suspended' AND wake_at <= :now
   AND (lease_owner IS NULL OR lease_expires <= :now)
UNION
SELECT id, COALESCE(lease_expires, updated_at) AS t FROM flows INDEXED BY flows_running
 WHERE status = 'running' AND (lease_expires IS NULL OR lease_expires <= :now)
UNION
SELECT f.id, f.updated_at AS t FROM signals s INDEXED BY signals_pending CROSS JOIN flows f
 WHERE s.state = 'pending' AND f.id = s.flow_id AND f.status = 'suspended'
   AND f.wait_kind = 'suspend' AND f.waiting_for = s.name
   AND (f.lease_owner IS NULL OR f.lease_expires <= :now)
   AND (f.wake_at IS NULL OR f.wake_at > :now)  -- else listed once, by its timer, above
UNION
SELECT f.id, f.updated_at AS t FROM signals s INDEXED BY signals_pending CROSS JOIN flows f
 WHERE s.state = 'pending' AND f.id = s.flow_id AND f.status = 'suspended'
   AND f.wait_kind = 'any'
   -- an unreadable list (a corrupt row) holds every name: base.any_names
   AND CASE WHEN NOT json_valid(f.waiting_for) THEN 1
            WHEN json_type(f.waiting_for) <> 'array' THEN 1
            ELSE s.name IN (SELECT value FROM json_each(f.waiting_for)) END
   AND (f.lease_owner IS NULL OR f.lease_expires <= :now)
   AND (f.wake_at IS NULL OR f.wake_at > :now)
"""
# claim(only_if_due) of an "any" wait: one of its names has a pending signal (any
# name, when the list is unreadable).
ANY_PENDING_AT_ALL = (
    "SELECT 1 FROM signals INDEXED BY signals_pending WHERE flow_id = ? AND state = 'pending' "
    "LIMIT 1"
)
ANY_PENDING = (
    "SELECT 1 FROM signals INDEXED BY signals_pending WHERE flow_id = ? AND state = 'pending' "
    "AND name IN (SELECT value FROM json_each(?)) LIMIT 1"
)
DUE = f"{DUE_FLOWS} ORDER BY t LIMIT :limit"
# The worker's batch claim: the same, leaving out the ids of a JSON list.
DUE_EXCLUDING = f"""
SELECT id FROM ({DUE_FLOWS})
 WHERE id NOT IN (SELECT value FROM json_each(:exclude))
 ORDER BY t LIMIT :limit
"""


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


#: Schema version -> the function that brings a database from the one before to it.
MIGRATIONS = {
    1: create_schema,
    2: add_signal_keys_and_listing,
    3: add_segments,
    4: add_composition,
}
