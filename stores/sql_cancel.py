"""``SqlCancel``: cancelling a flow and the flows under it, the one ``Store`` call
that walks a tree of flows (``SqlStore`` over its statements and connection
hooks; ``SqlAdmin`` builds on it)."""

from __future__ import annotations

from crux_gen.status import FINISHED

from .rules import child_cancel_reason
from .sql import C, SqlStore


class SqlCancel(SqlStore[C]):
    """``SqlStore`` with ``cancel``."""

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        return self._atomically(lambda conn: self._cancel(conn, flow_id, reason, now))

    def _cancel(self, conn: C, flow_id: str, reason: str, now: float) -> bool:
        # The flow, its parent (which its end wakes) and its descendants are locked
        # first, in one statement, by id (``_lock_flows``): a child finishing at
        # the same time locks the same rows in the same order.
        sql = self._sql
        tree = self._descendants(conn, [flow_id])
        self._lock_flows(conn, [flow_id, *tree])
        if self._row(conn, flow_id)[2] in FINISHED:
            return False
        if sql.dialect.locks:
            more = [c for c in self._descendants(conn, [flow_id]) if c not in set(tree)]
            if more:  # started between the read and the lock (rare): locked now too
                self._lock_flows(conn, more)
                tree += more
        self._run(conn, sql.CANCEL, (reason, now, flow_id))
        self._run(conn, sql.UNUSED, (flow_id,))
        self._end_hold(conn, flow_id, now)
        self._free_slots(conn, flow_id, now)
        inherited = child_cancel_reason(flow_id, reason)
        for child in tree:  # children, their children, … (through finished ones too)
            if self._run(conn, sql.CANCEL_UNFINISHED, (inherited, now, child)).rowcount == 1:
                self._run(conn, sql.UNUSED, (child,))
                self._end_hold(conn, child, now)
                self._free_slots(conn, child, now)
        self._wake_parent(conn, flow_id, now)
        return True

    def _descendants(self, conn: C, roots: list[str]) -> list[str]:
        """The ids of *roots*' children, their children, … (each once, top down)."""
        seen, found, level = set(roots), list[str](), roots
        while level:
            rows = [self._run(conn, self._sql.CHILD_ROWS, (p,)).fetchall() for p in level]
            level = [child for row in rows for child, _ in row if child not in seen]
            seen.update(level)
            found += level
        return found
