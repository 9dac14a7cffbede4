"""``SqlAdmin``: the ``StoreAdmin`` protocol of the SQL stores, written once over
``SqlStore``'s statements and connection hooks (listing, due, retry, delete,
prune, ``put_flow``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from crux_gen.errors import StoreError
from crux_gen.records import StoredFlow, StoredRecord
from crux_gen.status import Status

from .browse import SqlBrowse
from .listing import Before, check_prune, check_prune_limit, count_query, listing_query
from .rules import cancelled_with, deletable, flow_exists, new_flow, retry_plan, retry_status
from .sql import C
from .sql_fork import SqlFork
from .sql_schedules import SqlSchedules
from .sql_start import SqlStart
from .sql_statements import FLOW_COLUMNS, FLOW_WIDTH
from .sql_streams import SqlStreams


class SqlAdmin(SqlStart[C], SqlSchedules[C], SqlStreams[C], SqlFork[C], SqlBrowse):
    """``SqlStore`` with ``cancel``, ``enqueue``, the schedules table and the
    operator's calls."""

    #: The store in messages: ``flow_exists``'s *where*, and a phrase ("in …", "at …").
    _where: str
    _at: str

    def _signal_ids_put(self, conn: C, last: int) -> None:
        """``put_flow`` wrote signals with ids up to *last*: later ones go above."""

    def list_flows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: Before = None,
        version: tuple[str, int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFlow]:
        query, params = listing_query(
            FLOW_COLUMNS,
            self._sql.dialect.mark,
            status=status,
            name=name,
            limit=limit,
            before=before,
            version=version,
            since=since,
            until=until,
        )
        return [StoredFlow(*row) for row in self._all(query, params)]

    def count(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        query, params = count_query(
            self._sql.dialect.mark, status=status, name=name, since=since, until=until
        )
        return int(self._all(query, params)[0][0])

    def wait_records(self, flow_ids: Sequence[str]) -> dict[str, tuple[StoredRecord, ...]]:
        ids = list(dict.fromkeys(flow_ids))
        if not ids:
            return {}
        found: dict[str, list[StoredRecord]] = {}
        for row in self._all(self._sql.WAIT_RECORDS, (self._sql.dialect.as_list(ids),)):
            found.setdefault(row[0], []).append(StoredRecord._make(row[1:]))
        return {flow_id: tuple(records) for flow_id, records in found.items()}

    def count_flows(self) -> dict[str, int]:
        """How many flows each status has (statuses with none are left out): one
        scan of the ``flows_by_status`` index."""
        return {status: int(n) for status, n in self._all(self._sql.COUNT)}

    def due(self, now: float, limit: int) -> list[str]:
        return [row[0] for row in self._all(self._sql.DUE, {"now": now, "limit": int(limit)})]

    def retry_failed(self, flow_id: str, now: float) -> tuple[StoredRecord, ...]:
        with self._write() as conn:
            row = self._row(conn, flow_id, self._sql.ROW_LOCKED)
            if row[2] != Status.CANCELLED:
                return self._retry(conn, flow_id, retry_status(flow_id, row[2]), now)
            # A cancelled flow: with the descendants cancelled with it, locked first.
            tree = self._descendants(conn, [flow_id])
            self._lock_flows(conn, [flow_id, *tree])
            dropped = self._retry(conn, flow_id, retry_status(flow_id, row[2]), now)
            for child in tree:
                found = StoredFlow(*self._row(conn, child))
                if found.status == Status.CANCELLED and cancelled_with(
                    flow_id, found.cancel_reason
                ):
                    self._retry(conn, child, retry_status(child, found.status), now)
            return dropped

    def _retry(self, conn: C, flow_id: str, status: Status, now: float) -> tuple[StoredRecord, ...]:
        """``retry_failed`` of one flow, in the caller's transaction."""
        sql = self._sql
        history = tuple(
            map(StoredRecord._make, self._run(conn, sql.RECORDS, (flow_id,)).fetchall())
        )
        keep, reset = retry_plan(history)
        dropped = tuple(sorted([*reset[1:], *history[keep:]]))
        self._run(conn, sql.DROP_RECORDS_FROM, (flow_id, keep))
        self._run_many(conn, sql.PUT_RECORD, [(flow_id, *r) for r in reset])
        first = min([keep, *(r.position for r in reset)])
        self._run(conn, sql.DROP_SEGMENT_PAST, (flow_id, first))
        self._run(
            conn,
            sql.RETRY,
            (status.value, dropped[0].name if dropped else None, now, now, flow_id),
        )
        self._run(conn, sql.UNUSED_AGAIN, (flow_id,))
        return dropped

    def delete(self, flow_id: str) -> bool:
        with self._write() as conn:
            found = self._run(conn, self._sql.STATUS_AND_PARENT, (flow_id,)).fetchone()
            if found is None:
                return False
            deletable(flow_id, found[0], None if found[1] is None else (found[1], found[2]))
            for query in self._sql.DELETE:
                self._run(conn, query, (flow_id,))
            return True

    def prune(
        self,
        finished_before: float | None = None,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        batch: int = 500,
    ) -> int:
        # In batches of *batch* flows, one transaction each, so runners writing
        # meanwhile wait for one short transaction at most.
        before = check_prune(finished_before, status)
        left = check_prune_limit(limit)
        sql, m = self._sql, self._sql.dialect.mark
        query = sql.PRUNE_BATCH if name is None else sql.PRUNE_BY_NAME
        params: list[Any] = []
        for clause, value in (
            (f"updated_at < {m}", before),
            (f"status = {m}", status),
            (f"name = {m}", name),
        ):
            if value is not None:
                query += f" AND {clause}"
                params.append(value)
        if dry_run:
            found = int(self._all(f"SELECT count(*) FROM ({query}) q", params)[0][0])
            return found if left is None else min(found, left)
        if not self._all(f"{query} LIMIT 1", params):
            return 0  # nothing to delete: no write transaction (a worker's retention, mostly)
        # Oldest first; the rows taken are locked, and rows another pruner holds
        # skipped (PostgreSQL), so two pruners never take one flow.
        query += f" ORDER BY updated_at LIMIT {m}" + sql.dialect.lock("FOR UPDATE SKIP LOCKED")
        deleted = 0
        while left is None or left > 0:
            size = batch if left is None else min(batch, left)
            with self._write() as conn:
                found_ids = [row[0] for row in self._run(conn, query, (*params, size))]
                gone = 0
                for statement in sql.DELETE_MANY if found_ids else ():
                    gone = self._run(conn, statement, (sql.dialect.as_list(found_ids),)).rowcount
            if not found_ids:
                break
            deleted += gone  # the rows of flows the last statement deleted
            left = None if left is None else left - len(found_ids)
        return deleted

    def put_flow(self, flow: StoredFlow) -> None:
        given, sql = new_flow(flow), self._sql
        with self._write() as conn:
            if self._run(conn, sql.EXISTS, (given.id,)).fetchone():
                raise flow_exists(given.id, self._where)
            ids = sorted(s.id for s in given.signals)
            if ids:
                taken = self._run(conn, sql.SIGNAL_IDS_TAKEN, (sql.dialect.as_list(ids),))
                found = taken.fetchone()
                if found is not None:
                    raise StoreError(
                        f"signal id {found[0]} of flow {given.id!r} is taken by a signal of "
                        f"flow {found[1]!r} {self._at}; nothing was written"
                    )
            self._run(conn, sql.INSERT_WHOLE_FLOW, attrs.astuple(given, recurse=False)[:FLOW_WIDTH])
            self._run(conn, sql.DELETE_SEGMENT, (given.id,))
            self._run_many(conn, sql.PUT_RECORD, [(given.id, *r) for r in given.records])
            self._run_many(conn, sql.INSERT_WHOLE_SIGNAL, [tuple(s) for s in sorted(given.signals)])
            if ids:
                self._signal_ids_put(conn, ids[-1])
