"""``SqlFork``: a forked flow created in one transaction (``Forks.insert_fork``, for
``fork_flow``), ``SqlStore`` over its statements and connection hooks."""

from __future__ import annotations

import attrs

from crux_gen.records import StoredFlow, StoredSignal

from .base_fork import ForkIdTakenError
from .sql import C, SqlStore
from .sql_statements import FLOW_WIDTH

#: A signal's columns but its id (the table gives it a new one).
_SIGNAL_FIELDS = StoredSignal._fields[1:]


class SqlFork(SqlStore[C]):
    """``SqlStore`` with ``insert_fork``."""

    def insert_fork(self, flow: StoredFlow, *, source: str) -> None:
        sql, mark = self._sql, self._sql.dialect.mark
        insert_signal = (
            f"INSERT INTO signals ({', '.join(_SIGNAL_FIELDS)}) "
            f"VALUES ({', '.join([mark] * len(_SIGNAL_FIELDS))})"
        )
        row = attrs.evolve(flow, lease_owner=None, lease_expires=None)

        def insert(conn: C) -> None:
            found = self._run(conn, sql.STATUS_AND_PARENT, (flow.id,)).fetchone()
            if found is not None:
                raise ForkIdTakenError(flow.id, found[1], source)
            self._run(conn, sql.INSERT_WHOLE_FLOW, attrs.astuple(row, recurse=False)[:FLOW_WIDTH])
            self._run(conn, sql.DELETE_SEGMENT, (flow.id,))
            self._run_many(conn, sql.PUT_RECORD, [(flow.id, *r) for r in flow.records])
            self._run_many(conn, insert_signal, [(flow.id, *tuple(s)[2:]) for s in flow.signals])
            self._announce(conn, flow.id)

        self._atomically(insert)
