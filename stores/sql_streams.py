"""``SqlStreams``: a flow's events and streams in SQL (``base_streams.Streams``;
the statements and the commit's part are ``sql_publish``'s)."""

from __future__ import annotations

from collections.abc import Sequence

from crux_gen.errors import FlowNotFoundError
from crux_gen.records import CommitOutcome, Write

from .base_streams import EventRow, StreamRow
from .rules import RUNNING_OUTCOME
from .sql import C
from .sql_publish import (
    StreamStatements,
    published_step,
    statements,
    step_with_events,
    step_with_events_params,
)
from .sql_signals import SqlSignals


class SqlStreams(SqlSignals[C]):
    """``SqlSignals`` with the ``Streams`` methods."""

    @property
    def _streams_sql(self) -> StreamStatements:
        return statements(self._sql.dialect)

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        if write.is_published_step and self._put_published(flow_id, owner, now, write):
            return RUNNING_OUTCOME
        return super().commit(flow_id, owner, now, write)  # (its fence said no: the full write)

    def _put_published(self, flow_id: str, owner: str, now: float, write: Write) -> bool:
        """A step's write with what its body published, in one transaction without
        the general path's reads: whether it went in (else nothing of it did)."""
        if self._sql.dialect.cte_fence and not write.streams:
            # PostgreSQL: the step and its events in one statement, one round trip.
            params = step_with_events_params(self._sql, flow_id, owner, now, write)
            return bool(self._execute(step_with_events(self._sql), params) == 1)

        def put(conn: C) -> bool:
            return published_step(self, conn, flow_id, owner, now, write)

        return self._atomically(put)

    def _apply(self, conn: C, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """A step's write with what its body published goes in without the general
        path's reads (``published_step``), or, when its fence says no, that path's."""
        if write.is_published_step and published_step(self, conn, flow_id, owner, now, write):
            return RUNNING_OUTCOME
        return super()._apply(conn, flow_id, owner, now, write)

    def read_event(self, flow_id: str, key: str) -> tuple[str | None, str | None]:
        s = self._streams_sql
        with self._reading() as conn:
            status = self._run(conn, s.STATUS, (flow_id,)).fetchone()
            row = self._run(conn, s.GET_EVENT, (flow_id, key)).fetchone()
        return None if row is None else str(row[0]), None if status is None else str(status[0])

    def append_stream(self, flow_id: str, key: str, value: str | None, now: float) -> int:
        s = self._streams_sql

        def append(conn: C) -> int:
            if self._run(conn, s.STATUS, (flow_id,)).fetchone() is None:
                raise FlowNotFoundError(flow_id)
            self._lock_flows(conn, [flow_id])
            row = (flow_id, key, value, now, None, flow_id, key)
            return int(self._run(conn, s.APPEND, row).fetchall()[0][0])

        return self._atomically(append)

    def read_stream_after(
        self, flow_id: str, key: str, after: int
    ) -> tuple[list[StreamRow], str | None]:
        s = self._streams_sql
        with self._reading() as conn:
            status = self._run(conn, s.STATUS, (flow_id,)).fetchone()
            rows = self._run(conn, s.AFTER, (flow_id, key, after)).fetchall()
        return [StreamRow._make(r) for r in rows], None if status is None else str(status[0])

    def flow_events(self, flow_id: str) -> list[EventRow]:
        with self._reading() as conn:
            rows = self._run(conn, self._streams_sql.EVENTS, (flow_id,)).fetchall()
        return [EventRow._make(r) for r in rows]

    def flow_streams(self, flow_id: str) -> list[StreamRow]:
        with self._reading() as conn:
            rows = self._run(conn, self._streams_sql.STREAMS, (flow_id,)).fetchall()
        return [StreamRow._make(r) for r in rows]

    def put_streams(
        self, flow_id: str, events: Sequence[EventRow], entries: Sequence[StreamRow]
    ) -> None:
        s = self._streams_sql

        def put(conn: C) -> None:
            self._run_many(conn, s.PUT_EVENT, [(flow_id, *e) for e in events])
            self._run_many(conn, s.PUT_ENTRY, [(flow_id, *e) for e in entries])

        self._atomically(put)
