"""The statements of a flow's events and streams (``base_streams.Streams``), and
``publish``, which ``SqlStore``'s commit calls to store a write's custom status,
events and the body's stream writes in its transaction. On PostgreSQL an event
changed or an entry stored tells the readers waiting on the flow in the same
statement (``Dialect.notify``: no statement more)."""

from __future__ import annotations

from functools import cache
from typing import Any

from crux_gen.records import Write

from .sql_statements import Dialect

EVENT_COLUMNS = "flow_id, key, value, set_at"
STREAM_COLUMNS = "flow_id, key, seq, value, at, tag"


def notifying(d: Dialect, flow: str, before: str = ",", when: str = "") -> str:
    """*before* and *d*'s ``notify`` of the flow in column *flow* (if *when*), to end
    a statement with; ``""`` in a dialect without it (SQLite: readers poll)."""
    told = d.notify.format(flow=flow)
    told = f"CASE WHEN {when} THEN {told} END" if when else told
    return f"{before} {told}" if d.notify else ""


class StreamStatements:
    """The statements of events and streams in one dialect."""

    def __init__(self, d: Dialect) -> None:
        m = d.mark
        # Last write wins; the same value again changes nothing (a replay's).
        self.SET_EVENT = (
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({m}, {m}, {m}, {m}) "
            "ON CONFLICT (flow_id, key) DO UPDATE SET value = excluded.value, "
            "set_at = excluded.set_at WHERE events.value <> excluded.value"
            + notifying(d, "flow_id", " RETURNING")  # (a changed value wakes readers)
        )
        self.GET_EVENT = f"SELECT value FROM events WHERE flow_id = {m} AND key = {m}"
        # The next seq of the stream (the flow's row is locked: one writer at a
        # time); a tag stored already for the stream stores nothing.
        self.APPEND = (
            f"INSERT INTO streams ({STREAM_COLUMNS}) "
            f"SELECT {m}, {m}, COALESCE(MAX(seq), 0) + 1, {m}, {m}, {m} FROM streams "
            f"WHERE flow_id = {m} AND key = {m} ON CONFLICT (flow_id, key, tag) DO NOTHING "
            "RETURNING seq" + notifying(d, "flow_id")  # (a stored entry wakes readers)
        )
        self.AFTER = (
            "SELECT key, seq, value, at, tag FROM streams "
            f"WHERE flow_id = {m} AND key = {m} AND seq > {m} ORDER BY seq"
        )
        self.STATUS = f"SELECT status FROM flows WHERE id = {m}"
        self.EVENTS = f"SELECT key, value, set_at FROM events WHERE flow_id = {m} ORDER BY key"
        self.STREAMS = (
            f"SELECT key, seq, value, at, tag FROM streams WHERE flow_id = {m} ORDER BY key, seq"
        )
        self.PUT_EVENT = (
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({m}, {m}, {m}, {m}) "
            "ON CONFLICT (flow_id, key) DO UPDATE SET value = excluded.value, "
            "set_at = excluded.set_at"
        )
        self.PUT_ENTRY = (
            f"INSERT INTO streams ({STREAM_COLUMNS}) VALUES ({m}, {m}, {m}, {m}, {m}, {m}) "
            "ON CONFLICT (flow_id, key, seq) DO NOTHING"
        )
        self.SET_CUSTOM_STATUS = f"UPDATE flows SET custom_status = {m} WHERE id = {m}"


@cache
def statements(d: Dialect) -> StreamStatements:
    return StreamStatements(d)


def publish(store: Any, conn: Any, flow_id: str, now: float, write: Write) -> None:
    """*write*'s custom status, events and stream writes, in the commit's
    transaction (the flow's row locked by its lease check)."""
    s = statements(store._sql.dialect)
    if write.custom_status is not None:
        store._run(conn, s.SET_CUSTOM_STATUS, (write.custom_status, flow_id))
    for key, value in write.events:
        store._run(conn, s.SET_EVENT, (flow_id, key, value, now))
    for key, tag, entry in write.streams:
        store._run(conn, s.APPEND, (flow_id, key, entry, now, tag, flow_id, key)).fetchall()


def published_step(
    store: Any, conn: Any, flow_id: str, owner: str, now: float, write: Write
) -> bool:
    """A step's result with what its body published (``Write.is_published_step``),
    in the commit's transaction without the general path's reads: the step's fenced
    record (``PUT_RECORD_FENCED``: only while *owner* holds the lease of the running
    flow, and only where the record fits), then, only if it went in, its events and
    stream writes. ``False``: nothing was written (the general path decides why)."""
    if not store._put_fenced(conn, store._sql.fenced(flow_id, owner, write.records[0])):
        return False
    publish(store, conn, flow_id, now, write)
    return True


@cache
def step_with_events(sql: Any) -> str:
    """PostgreSQL (``Dialect.cte_fence``): a step's fenced record (``sql``'s
    ``PUT_RECORD_FENCED``) and its events in one statement, one round trip: the
    events (keys and values as two arrays) go in only with the record, as in
    ``published_step``, by ``SET_EVENT`` itself (its conflict rule, and whatever it
    returns); one row back when they did (``step_with_events_params``)."""
    m = sql.dialect.mark
    one = f"VALUES ({m}, {m}, {m}, {m})"
    rows = f"SELECT {m}, k, v, {m} FROM unnest({m}::text[], {m}::text[]) AS u(k, v) "
    set_event = statements(sql.dialect).SET_EVENT
    assert one in set_event  # (SET_EVENT's rows, one by one)
    events = set_event.replace(one, rows + "WHERE EXISTS (SELECT 1 FROM rec)", 1)
    return f"WITH rec AS ({sql.PUT_RECORD_FENCED} RETURNING 1), ev AS ({events}) SELECT 1 FROM rec"


def step_with_events_params(
    sql: Any, flow_id: str, owner: str, now: float, write: Write
) -> tuple[Any, ...]:
    events = dict(write.events)  # (a key twice: the last value, as one by one)
    keys, values = list(events), list(events.values())
    return (*sql.fenced(flow_id, owner, write.records[0]), flow_id, now, keys, values)


#: The tables of events and streams: SQLite's schema version 11, PostgreSQL's 10
#: (``{real}``, ``{int}``: the dialect's float and integer types).
STREAM_DDL = (
    "CREATE TABLE events (flow_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "set_at {real} NOT NULL, PRIMARY KEY (flow_id, key))",
    "CREATE TABLE streams (flow_id TEXT NOT NULL, key TEXT NOT NULL, seq {int} NOT NULL, "
    "value TEXT, at {real} NOT NULL, tag TEXT, PRIMARY KEY (flow_id, key, seq))",
    "CREATE UNIQUE INDEX streams_tag ON streams (flow_id, key, tag)",
)
