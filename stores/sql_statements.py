"""The text of every statement the SQL stores share, built once per dialect.

A ``Dialect`` holds what SQLite and PostgreSQL spell differently (parameter
marks, upsert, row locks, lists of values, index hints, the ``Any`` wait's name
test, the segment aggregate); ``Statements(dialect)`` builds every statement from
it, always with parameters, never formatted with values. The rules that must
read the same in both live here once: ``record_fits`` (the gap rule of a fenced
insert) and the due-ness fragments that serve both the due scan and a claim's
``only_if_due`` check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from crux_gen.records import StoredRecord, StoredSignal
from crux_gen.status import FINISHED

FLOW_COLUMNS = (
    "id, name, status, input, created_at, updated_at, result, error, cancel_reason, "
    "waiting_for, wait_kind, wake_at, deadline, lease_owner, lease_expires, "
    "parent_id, run, custom_status, priority, blocked_by, exclusive_key, holds, "
    "debounce_key, debounce_cap, blocked_until, fair_key, trace, recoveries, claimed_at"
)
#: How many columns a flow row has (``FLOW_COLUMNS``, in ``StoredFlow``'s order).
FLOW_WIDTH = len(FLOW_COLUMNS.split(","))
#: Where the lease sits in a flow row: ``row[LEASE:LEASE + 2]``.
LEASE = 13
#: Where the recovery count and the claim's time sit: ``row[RECOVERY:RECOVERY + 2]``.
RECOVERY = [c.strip() for c in FLOW_COLUMNS.split(",")].index("recoveries")
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
#: The finished statuses as an SQL list (constants of this code, not values).
FINISHED_LIST = "(" + ", ".join(f"'{s.value}'" for s in sorted(FINISHED)) + ")"
#: A ``blocked_by`` that names a limit (``crux_gen.limits.label``).
LIMIT_BLOCK = "(substr(blocked_by, 1, 6) = 'limit ' OR substr(blocked_by, 1, 5) = 'rate ')"
#: The statuses a worker may run (a limit's blocked flows among them).
UNFINISHED = "('pending', 'running', 'suspended')"


#: The indexes of flow control: SQLite's schema version 6, PostgreSQL's 5.
FLOW_CONTROL_INDEXES = (
    # The due scan's pending branch: due pending flows by due time (an index range).
    "CREATE INDEX flows_pending ON flows (wake_at) "
    "WHERE status = 'pending' AND blocked_by IS NULL AND wake_at IS NOT NULL",
    # One started, unfinished flow per exclusive key; the queue behind it.
    "CREATE UNIQUE INDEX flows_holding ON flows (holds) WHERE holds IS NOT NULL",
    "CREATE INDEX flows_queued ON flows (exclusive_key, priority, created_at) "
    "WHERE exclusive_key IS NOT NULL AND holds IS NULL AND status = 'pending'",
    # One pending flow per debounce key.
    "CREATE UNIQUE INDEX flows_debounced ON flows (debounce_key) WHERE debounce_key IS NOT NULL",
)

#: ``@flow(max_recoveries=)``'s columns: SQLite's schema version 10, PostgreSQL's 9
#: (``{real}``: the dialect's float type).
RECOVERY_DDL = (
    "ALTER TABLE flows ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE flows ADD COLUMN claimed_at {real}",
)


@attrs.frozen(cache_hash=True)  # (a key of the statements' caches, on every write)
class Dialect:
    """What one database spells its own way."""

    #: A positional parameter (``?``, ``%s``) and a named one (``:{}``, ``%({})s``).
    mark: str
    named: str
    #: ``INSERT OR REPLACE`` (SQLite) or ``INSERT … ON CONFLICT … DO UPDATE``.
    replace: bool
    #: Whether a transaction locks the rows it reads to change (``FOR UPDATE``);
    #: SQLite's ``BEGIN IMMEDIATE`` holds the whole file instead.
    locks: bool
    #: A step's fenced insert: ``WITH held AS (… FOR UPDATE) INSERT … FROM held``,
    #: or ``INSERT … SELECT … WHERE EXISTS (…)`` (sqlite3 counts the rows of a
    #: statement only when it begins with INSERT).
    cte_fence: bool
    #: ``{col}`` is one of a list given as one parameter ``{mark}``.
    in_list: str
    not_in_list: str
    #: ``{names}`` (an ``Any`` wait's JSON list) holds ``{name}``; an unreadable
    #: list holds every name (``base.any_names``).
    any_has: str
    #: `` INDEXED BY {}`` on SQLite: the due scan reads only partial indexes.
    hint: str
    #: The flow's completed prefix as one segment row (``stores/segments.py``).
    segment_build: str
    #: A list of values as the one parameter ``in_list`` takes.
    as_list: Callable[[Sequence[Any]], Any]
    #: An expression telling readers waiting on flow ``{flow}`` that it published or
    #: ended (PostgreSQL's ``pg_notify``, at commit; ``sql_publish.notifying``);
    #: ``""``: none (readers poll).
    notify: str = ""

    def lock(self, clause: str = "FOR UPDATE") -> str:
        return f" {clause}" if self.locks else ""

    def is_in(self, column: str, mark: str | None = None) -> str:
        return self.in_list.format(col=column, mark=mark or self.mark)

    def upsert(self, table: str, columns: str, key: str, rows: str) -> str:
        """Insert *rows* into *table*, a row whose *key* is taken replacing it."""
        if self.replace:
            return f"INSERT OR REPLACE INTO {table} ({columns}) {rows}"
        keys = {k.strip() for k in key.split(",")}
        changed = [c.strip() for c in columns.split(",") if c.strip() not in keys]
        update = ", ".join(f"{c} = EXCLUDED.{c}" for c in changed)
        return f"INSERT INTO {table} ({columns}) {rows} ON CONFLICT ({key}) DO UPDATE SET {update}"


def leased(
    row: tuple[Any, ...], owner: str, expires: float, recoveries: int, now: float
) -> tuple[Any, ...]:
    """A flow *row* as a claim by *owner* at *now* left it: its lease until
    *expires*, its recovery count and the claim's time."""
    row = (*row[:LEASE], owner, expires, *row[LEASE + 2 :])
    return (*row[:RECOVERY], recoveries, now, *row[RECOVERY + 2 :])


def record_fits(m: str) -> str:
    """The gap rule in SQL, with parameters (position, flow id, flow id, position):
    a record goes at the next free position, or over an unresolved record. (The
    next position first: a step's append, the usual case, reads one index entry.)"""
    return (
        f"({m} = COALESCE((SELECT max(position) FROM records WHERE flow_id = {m}), -1) + 1 "
        f"OR EXISTS (SELECT 1 FROM records WHERE flow_id = {m} AND position = {m} "
        "AND state IN ('waiting', 'retrying')))"
    )


def timer_due(now: str, f: str = "") -> str:
    """A suspended flow's timer has come."""
    return f"{f}wake_at <= {now}"


def unheld(now: str, f: str = "") -> str:
    """Nobody holds the flow's lease (or it lapsed)."""
    return f"({f}lease_owner IS NULL OR {f}lease_expires <= {now})"


def signal_wakes(d: Dialect) -> str:
    """Pending signal ``s`` is one suspended flow ``f`` waits for."""
    any_has = d.any_has.format(names="f.waiting_for", name="s.name")
    return (
        f"(f.wait_kind = 'suspend' AND f.waiting_for = s.name OR f.wait_kind = 'any' AND {any_has})"
    )


def due_flows(d: Dialect) -> str:
    """Every due flow with its priority, the time it became due and its fairness
    key: a timer that came, a running flow nobody holds, a pending signal a
    suspended flow waits for, a pending flow (``Flow.start``) whose due time came,
    a flow a rate limit held back whose turn came. A flow a limit or an exclusive
    holder blocks (``blocked_by``) is none of these. Each branch reads one partial
    index (the due scan never reads flows that are not due)."""
    now = d.named.format("now")
    free = "blocked_by IS NULL"
    return f"""
SELECT id, priority, wake_at AS t, fair_key FROM flows{d.hint.format("flows_due")}
 WHERE status = 'suspended' AND {timer_due(now)} AND {unheld(now)} AND {free}
UNION
SELECT id, priority, wake_at AS t, fair_key FROM flows{d.hint.format("flows_pending")}
 WHERE status = 'pending' AND blocked_by IS NULL AND {timer_due(now)} AND {unheld(now)}
UNION
SELECT id, priority, COALESCE(lease_expires, updated_at) AS t, fair_key
  FROM flows{d.hint.format("flows_running")}
 WHERE status = 'running' AND (lease_expires IS NULL OR lease_expires <= {now}) AND {free}
UNION
SELECT f.id, f.priority, f.updated_at AS t, f.fair_key
  FROM signals s{d.hint.format("signals_pending")} CROSS JOIN flows f
 WHERE s.state = 'pending' AND f.id = s.flow_id AND f.status = 'suspended'
   AND {signal_wakes(d)} AND {unheld(now, "f.")} AND f.blocked_by IS NULL
   AND (f.wake_at IS NULL OR f.wake_at > {now})
UNION
SELECT id, priority, blocked_until AS t, fair_key FROM flows{d.hint.format("flows_rate_wait")}
 WHERE blocked_until IS NOT NULL AND blocked_until <= {now} AND {unheld(now)}
   AND status IN {UNFINISHED}
"""


#: The order a worker takes due flows in: higher priority first, then round-robin
#: across the key values of a keyed limit (``fair_key``: the first due flow of each
#: key, then the second of each, …; among keys, the one served longest ago
#: first), then the earliest due.
DUE_ORDER = "ORDER BY priority DESC, turn, served, t, id"
#: ``DUE_FLOWS`` with each flow's turn among the due flows of its priority and key,
#: and when its key was last served (``fair_turns``; 0: never).
TURNS = (
    "SELECT due.id, due.priority, due.t, ROW_NUMBER() OVER (PARTITION BY due.priority, "
    "COALESCE(due.fair_key, due.id) ORDER BY due.t, due.id) AS turn, "
    "COALESCE(ft.served, 0) AS served "
    "FROM ({}) due LEFT JOIN fair_turns ft ON ft.fair_key = due.fair_key"
)


class Statements:
    """Every statement of the shared SQL core, in one dialect."""

    def fenced(self, flow_id: str, owner: str, record: StoredRecord) -> tuple[Any, ...]:
        """``PUT_RECORD_FENCED``'s parameters, in its dialect's order."""
        at = record.position
        if self.dialect.cte_fence:
            return (flow_id, owner, flow_id, *record, at, flow_id, flow_id, at)
        return (flow_id, *record, flow_id, owner)

    def __init__(self, d: Dialect) -> None:
        m, now, flow = d.mark, d.named.format("now"), d.named.format("flow")
        self.dialect = d
        self.ROW = f"SELECT {FLOW_COLUMNS} FROM flows WHERE id = {m}"
        self.ROW_LOCKED = self.ROW + d.lock()
        self.ROW_SKIP_LOCKED = self.ROW + d.lock("FOR UPDATE SKIP LOCKED")
        self.ROWS_SKIP_LOCKED = (
            f"SELECT {FLOW_COLUMNS} FROM flows WHERE {d.is_in('id')} ORDER BY id"
            + d.lock("FOR UPDATE SKIP LOCKED")
        )
        self.EXISTS = f"SELECT 1 FROM flows WHERE id = {m}"
        self.RECORDS = f"SELECT {RECORD_COLUMNS} FROM records WHERE flow_id = {m} ORDER BY position"
        self.LEAN_RECORDS = (
            f"SELECT {LEAN_RECORD_COLUMNS} FROM records WHERE flow_id = {m} ORDER BY position"
        )
        self.SIGNALS = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = {m} ORDER BY id"
        self.PENDING_SIGNALS = (
            f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = {m} AND state = 'pending' "
            "ORDER BY id"
        )
        self.PENDING_NAMED = (
            f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE flow_id = {m} AND {d.is_in('name')} "
            "AND state = 'pending' ORDER BY id"
        )
        self.INSERT_FLOW = (
            "INSERT INTO flows (id, name, status, input, created_at, updated_at, lease_owner, "
            f"lease_expires, trace, claimed_at) VALUES ({m}, {m}, 'running', {m}, {m}, {m}, {m}, "
            f"{m}, {m}, {m}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._leases(d)
        self._records(d)
        self._signals(d)
        self._composition(d)
        self._segments(d)
        self._admin(d)
        # Due-ness, one rule for the scan and for one flow (claim(only_if_due)).
        self.DUE_FLOWS = due_flows(d)
        limit, exclude = d.named.format("limit"), d.named.format("exclude")
        turns = TURNS.format(self.DUE_FLOWS)
        self.DUE = f"SELECT id, t FROM ({turns}) turns {DUE_ORDER} LIMIT {limit}"
        self.DUE_EXCLUDING = (
            f"SELECT id, t FROM ({turns}) turns "
            f"WHERE {d.not_in_list.format(col='id', mark=exclude)} {DUE_ORDER} LIMIT {limit}"
        )
        self.WAKES = (
            f"SELECT 1 FROM flows f WHERE f.id = {flow} AND ({timer_due(now, 'f.')} "
            f"OR EXISTS (SELECT 1 FROM signals s{d.hint.format('signals_pending')} "
            f"WHERE s.flow_id = f.id AND s.state = 'pending' AND {signal_wakes(d)}))"
        )

    def _leases(self, d: Dialect) -> None:
        m = d.mark
        lease = "status, lease_owner, cancel_reason, lease_expires"
        self.LEASE_CHECK = f"SELECT {lease} FROM flows WHERE id = {m}"
        self.LEASE_CHECK_LOCKED = self.LEASE_CHECK + d.lock()
        self.LEASE_ROW = f"SELECT id, {lease} FROM flows WHERE id = {m}"
        self.LEASE_ROWS = f"SELECT id, {lease} FROM flows WHERE {d.is_in('id')}"
        # A claim counts one recovery (``rules.recovery_count``) when another runner's
        # lease lapsed with nothing recorded since its claim: no record written or
        # resolved from ``claimed_at`` on (each carries the time it was made).
        recorded = (
            "SELECT 1 FROM records r WHERE r.flow_id = flows.id AND "
            "(r.started_at >= flows.claimed_at OR r.finished_at >= flows.claimed_at)"
        )
        self.TAKE_LEASE = (
            f"UPDATE flows SET lease_owner = {m}, lease_expires = {m}, claimed_at = {m}, "
            f"recoveries = CASE WHEN lease_owner IS NULL OR lease_owner = {m} THEN recoveries "
            f"WHEN claimed_at IS NULL OR EXISTS ({recorded}) THEN 0 ELSE recoveries + 1 END "
            f"WHERE id = {m} RETURNING recoveries"
        )
        self.RENEW = f"UPDATE flows SET lease_expires = {m} WHERE id = {m} AND lease_owner = {m}"
        self.RELEASE = (
            "UPDATE flows SET lease_owner = NULL, lease_expires = NULL "
            f"WHERE id = {m} AND lease_owner = {m}"
        )
        self.DROP_LEASE = (
            f"UPDATE flows SET lease_owner = NULL, lease_expires = NULL WHERE id = {m}"
        )

    def _records(self, d: Dialect) -> None:
        m = d.mark
        columns = f"flow_id, {RECORD_COLUMNS}"
        marks = ", ".join([m] * (len(StoredRecord._fields) + 1))
        self.PUT_RECORD = d.upsert("records", columns, "flow_id, position", f"VALUES ({marks})")
        # A step's commit in one statement (one round trip, one transaction): the
        # record goes in only while the writer holds the lease of a running flow
        # (whose row PostgreSQL locks first), and only where it fits (``record_fits``).
        held = (
            f"SELECT 1 FROM flows WHERE id = {m} AND lease_owner = {m} "
            f"AND status = 'running'{d.lock()}"
        )
        fits, key = record_fits(m), "flow_id, position"
        if d.cte_fence:
            rows = f"SELECT {marks} FROM held WHERE {fits}"
            upsert = d.upsert("records", columns, key, rows)
            self.PUT_RECORD_FENCED = f"WITH held AS ({held}) {upsert}"
        else:
            # SQLite: its schema's trigger ``records_in_order`` refuses a gap, so this
            # SELECT reads no ``records`` row (which makes SQLite copy the SELECT's
            # rows into a temporary table first: a third of a step's cost); over a
            # record only while it is unresolved.
            update = ", ".join(f"{c} = excluded.{c}" for c in RECORD_COLUMNS.split(", ")[1:])
            self.PUT_RECORD_FENCED = (
                f"INSERT INTO records ({columns}) SELECT {marks} WHERE EXISTS ({held}) "
                f"ON CONFLICT ({key}) DO UPDATE SET {update} "
                "WHERE records.state IN ('waiting', 'retrying')"
            )
        self.RECORD_STATES = (
            f"SELECT position, state FROM records WHERE flow_id = {m} AND {d.is_in('position')}"
        )
        self.LAST_POSITION = f"SELECT max(position) FROM records WHERE flow_id = {m}"
        self.WAIT_CLEARED = (
            f"UPDATE flows SET status = {m}, waiting_for = NULL, wait_kind = NULL, "
            f"wake_at = NULL, deadline = NULL, recoveries = 0, updated_at = {m} WHERE id = {m}"
        )
        self.PARK = (
            f"UPDATE flows SET status = {m}, result = {m}, error = {m}, waiting_for = {m}, "
            f"wait_kind = {m}, wake_at = {m}, deadline = {m}, lease_owner = NULL, "
            f"lease_expires = NULL, recoveries = 0, updated_at = {m} WHERE id = {m}"
        )
        self.SET_CUSTOM_STATUS = f"UPDATE flows SET custom_status = {m} WHERE id = {m}"
        # ContinueAsNew: the current run's records kept as a past run, then a fresh run.
        self.CURRENT_RUN = f"SELECT run FROM flows WHERE id = {m}"
        self.KEEP_PAST_RUN = d.upsert(
            "past_records",
            f"flow_id, run, {RECORD_COLUMNS}",
            "flow_id, run, position",
            f"SELECT flow_id, {d.named.format('run')}, {RECORD_COLUMNS} FROM records "
            f"WHERE flow_id = {d.named.format('flow')}",
        )
        self.NEW_RUN = (
            f"UPDATE flows SET status = 'running', input = {m}, run = run + 1, result = NULL, "
            "error = NULL, waiting_for = NULL, wait_kind = NULL, wake_at = NULL, "
            f"deadline = NULL, recoveries = 0, updated_at = {m} WHERE id = {m}"
        )

    def _signals(self, d: Dialect) -> None:
        m = d.mark
        # Signals still pending when their flow finishes are kept, marked unused.
        self.UNUSED = (
            f"UPDATE signals SET state = 'unused' WHERE flow_id = {m} AND state = 'pending'"
        )
        self.SIGNAL_UPDATE = (
            f"UPDATE signals SET state = {m}, error = {m}, position = {m}, consumed_at = {m} "
            f"WHERE flow_id = {m} AND id = {m}"
        )
        self.SIGNAL_FLOW_ROW = (
            f"SELECT status, deadline, waiting_for FROM flows WHERE id = {m}" + d.lock()
        )
        self.SIGNAL_KEY_SEEN = f"SELECT 1 FROM signals WHERE flow_id = {m} AND key = {m}"
        self.INSERT_SIGNAL = (
            "INSERT INTO signals (flow_id, name, payload, state, created_at, key, trace) "
            f"VALUES ({m}, {m}, {m}, 'pending', {m}, {m}, {m}) RETURNING id"
        )
        self.CANCEL = (
            f"UPDATE flows SET status = 'cancelled', cancel_reason = {m}, wake_at = NULL, "
            f"updated_at = {m} WHERE id = {m}"
        )
        # A descendant cancelled with its ancestor, unless it finished meanwhile (on
        # PostgreSQL the WHERE is checked again once a concurrent commit's row lock
        # is released).
        self.CANCEL_UNFINISHED = self.CANCEL + f" AND status NOT IN {FINISHED_LIST}"

    def _composition(self, d: Dialect) -> None:
        m = d.mark
        by_parent = d.hint.format("flows_by_parent")
        self.FLOW_NAME = f"SELECT name, parent_id FROM flows WHERE id = {m}"
        # A flow's status, and its parent's id and status (``None``s without one).
        self.STATUS_AND_PARENT = (
            "SELECT f.status, p.id, p.status FROM flows f LEFT JOIN flows p ON p.id = f.parent_id "
            f"WHERE f.id = {m}" + d.lock("FOR UPDATE OF f")
        )
        # A child flow, running and unclaimed (one stored already is left).
        self.INSERT_CHILD = (
            "INSERT INTO flows (id, name, status, input, created_at, updated_at, parent_id, "
            f"trace) VALUES ({m}, {m}, 'running', {m}, {m}, {m}, {m}, {m}) "
            "ON CONFLICT (id) DO NOTHING "
            "RETURNING id"
        )
        self.CHILDREN = (
            f"SELECT id FROM flows{by_parent} WHERE parent_id = {m} ORDER BY created_at, id"
        )
        self.CHILD_ROWS = f"SELECT id, status FROM flows{by_parent} WHERE parent_id = {m}"
        self.ANY_FINISHED = (
            f"SELECT 1 FROM flows WHERE {d.is_in('id')} AND status IN {FINISHED_LIST} LIMIT 1"
        )
        # A finished flow makes its suspended parent due at once.
        now = d.named.format("now")
        self.WAKE_PARENT = (
            f"UPDATE flows SET wake_at = {now} WHERE id = (SELECT parent_id FROM flows "
            f"WHERE id = {d.named.format('flow')}) "
            "AND (status = 'suspended' OR (status = 'paused' AND wait_kind IS NOT NULL)) "
            f"AND (wake_at IS NULL OR wake_at > {now}) RETURNING id"
        )

    def _segments(self, d: Dialect) -> None:
        # A flow's segment (``stores/segments.py``): the completed prefix of its
        # history in one row, rewritten when a park finds that prefix grown.
        m, flow = d.mark, d.named.format("flow")
        self.SEGMENT_READ = (
            f"SELECT count, meta, results, checksum FROM segments WHERE flow_id = {m}"
        )
        self.SEGMENT_TAIL = (
            f"SELECT {LEAN_RECORD_COLUMNS} FROM records WHERE flow_id = {m} AND position >= {m} "
            "ORDER BY position"
        )
        self.SEGMENT_PREFIX = (
            f"SELECT COALESCE((SELECT count FROM segments WHERE flow_id = {flow}), 0), "
            f"COALESCE((SELECT min(position) FROM records WHERE flow_id = {flow} AND position >= "
            f"COALESCE((SELECT count FROM segments WHERE flow_id = {flow}), 0) AND state NOT IN "
            f"('completed', 'failed')), (SELECT max(position) + 1 FROM records "
            f"WHERE flow_id = {flow}), 0)"
        )
        self.SEGMENT_PUT = d.upsert(
            "segments",
            "flow_id, count, meta, results, checksum",
            "flow_id",
            f"VALUES ({m}, {m}, {m}, {m}, {m})",
        )
        self.SEGMENT_BUILD = d.segment_build
        self.DELETE_SEGMENT = f"DELETE FROM segments WHERE flow_id = {m}"
        self.DROP_SEGMENT_PAST = f"DELETE FROM segments WHERE flow_id = {m} AND count > {m}"

    def _admin(self, d: Dialect) -> None:
        m = d.mark
        self.RETRY = (
            f"UPDATE flows SET status = {m}, result = NULL, error = NULL, cancel_reason = NULL, "
            f"waiting_for = {m}, "
            f"wait_kind = 'retry', wake_at = {m}, deadline = NULL, lease_owner = NULL, "
            f"lease_expires = NULL, recoveries = 0, updated_at = {m} WHERE id = {m}"
        )
        self.UNUSED_AGAIN = (
            f"UPDATE signals SET state = 'pending' WHERE flow_id = {m} AND state = 'unused'"
        )
        self.DROP_RECORDS_FROM = f"DELETE FROM records WHERE flow_id = {m} AND position >= {m}"
        self.DELETE_RECORDS = f"DELETE FROM records WHERE flow_id = {m}"
        #: Everything of a flow, its row last: by its id, and by a list of ids.
        tables = ("records", "past_records", "segments", "signals", "events", "streams")
        self.DELETE = (
            *(f"DELETE FROM {t} WHERE flow_id = {m}" for t in tables),
            f"DELETE FROM flows WHERE id = {m}",
        )
        self.DELETE_MANY = (
            *(f"DELETE FROM {t} WHERE {d.is_in('flow_id')}" for t in tables),
            f"DELETE FROM flows WHERE {d.is_in('id')}",
        )
        # Finished flows, but not a child whose parent is unfinished (it may still
        # wait for it); ``SqlAdmin.prune`` adds its filters and the ``LIMIT``.
        # Of one name (a flow's retention), through ``flows_by_name``: the old
        # flows of that name only, however many other names keep.
        prunable = (
            f" WHERE status IN {FINISHED_LIST} "
            "AND NOT EXISTS (SELECT 1 FROM flows p WHERE p.id = f.parent_id "
            f"AND p.status NOT IN {FINISHED_LIST})"
        )
        self.PRUNE_BATCH = "SELECT id FROM flows f" + prunable
        self.PRUNE_BY_NAME = f"SELECT id FROM flows f{d.hint.format('flows_by_name')}" + prunable
        self.SIGNAL_IDS_TAKEN = (
            f"SELECT id, flow_id FROM signals WHERE {d.is_in('id')} ORDER BY id LIMIT 1"
        )
        self.INSERT_WHOLE_FLOW = (
            f"INSERT INTO flows ({FLOW_COLUMNS}) VALUES ({', '.join([m] * FLOW_WIDTH)})"
        )
        self.INSERT_WHOLE_SIGNAL = (
            f"INSERT INTO signals ({SIGNAL_COLUMNS}) "
            f"VALUES ({', '.join([m] * len(StoredSignal._fields))})"
        )
        self.COUNT = "SELECT status, COUNT(*) FROM flows GROUP BY status"
        # The unresolved records of several flows (``list_flows``'s waits): each
        # flow's by the records' primary key.
        self.WAIT_RECORDS = (
            f"SELECT flow_id, {RECORD_COLUMNS} FROM records WHERE {d.is_in('flow_id')} "
            "AND state IN ('waiting', 'retrying') ORDER BY flow_id, position"
        )
