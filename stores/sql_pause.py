"""``SqlPause``: pausing and unpausing a flow, and a runner's write to a paused flow
(``SqlStore`` over its statements; ``stores/memory_pause.py`` is the reference).

A paused flow keeps its row as it was (its wait fields, its wake time and
deadline), so ``unpause`` sends it back by ``status.unpause_event`` of that row,
and the due scan, which reads only pending, running and suspended flows, never
finds it. A runner that holds it writes its step in hand as to the flow it was
(``_apply``), then the flow is paused again and the lease dropped.
"""

from __future__ import annotations

import functools
from typing import Any

from crux_gen.errors import FlowStateError
from crux_gen.records import CommitOutcome, Write
from crux_gen.status import FINISHED, Status, transition, unpause_event

from .rules import held, pause_status
from .sql import C
from .sql_cancel import SqlCancel
from .sql_statements import LIMIT_BLOCK, Dialect


class PauseStatements:
    """The statements of ``SqlPause``, in one dialect."""

    def __init__(self, d: Dialect) -> None:
        m = d.mark
        self.PAUSE_ROW = (
            "SELECT status, wait_kind, wake_at, blocked_by, exclusive_key, holds, "
            f"lease_owner, lease_expires FROM flows WHERE id = {m}" + d.lock()
        )
        self.SET_STATUS = f"UPDATE flows SET status = {m}, updated_at = {m} WHERE id = {m}"
        self.AS_WAS = f"UPDATE flows SET status = {m} WHERE id = {m}"
        # Paused: a limit's block let go (a paused flow holds no slot and waits for
        # none; its claim once unpaused asks again); with *drop*, its lease too.
        unblock = f"CASE WHEN {LIMIT_BLOCK} THEN NULL ELSE"
        self.PAUSED = (
            f"UPDATE flows SET status = 'paused', blocked_by = {unblock} blocked_by END, "
            f"blocked_until = {unblock} blocked_until END, "
            f"lease_owner = CASE WHEN {m} THEN NULL ELSE lease_owner END, "
            f"lease_expires = CASE WHEN {m} THEN NULL ELSE lease_expires END WHERE id = {m}"
        )
        self.HOLDER_ID = f"SELECT id FROM flows WHERE holds = {m}" + d.lock()
        self.TAKE_KEY = (
            f"UPDATE flows SET holds = {m}, blocked_by = NULL, wake_at = {m} WHERE id = {m}"
        )
        self.WAIT_FOR = f"UPDATE flows SET blocked_by = {m} WHERE id = {m}"
        self.LET_GO = (
            "UPDATE flows SET lease_owner = NULL, lease_expires = NULL "
            f"WHERE id = {m} AND lease_owner = {m} RETURNING status"
        )


@functools.cache
def statements(d: Dialect) -> PauseStatements:
    return PauseStatements(d)


class SqlPause(SqlCancel[C]):
    """``SqlCancel`` with ``pause`` and ``unpause``."""

    def pause(self, flow_id: str, now: float) -> bool:
        return self._atomically(lambda conn: self._pause(conn, flow_id, now))

    def _pause(self, conn: C, flow_id: str, now: float) -> bool:
        sql = statements(self._sql.dialect)
        row = self._paused_row(conn, flow_id)
        new = pause_status(flow_id, row[0])
        if new is None:
            return False  # paused already: nothing changed
        self._run(conn, sql.PAUSED, (False, False, flow_id))
        self._run(conn, sql.SET_STATUS, (new.value, now, flow_id))
        if not held(row[6], row[7], now):
            self._free_slots(conn, flow_id, now)  # (a runner's: when it lets go)
        return True

    def unpause(self, flow_id: str, now: float) -> bool:
        return self._atomically(lambda conn: self._unpause(conn, flow_id, now))

    def _unpause(self, conn: C, flow_id: str, now: float) -> bool:
        sql = statements(self._sql.dialect)
        status, wait_kind, wake_at, blocked_by, key, holds, *_ = self._paused_row(conn, flow_id)
        if status != Status.PAUSED:
            return False  # not paused: nothing changed
        new = transition(status, unpause_event(wait_kind, wake_at, blocked_by))
        self._run(conn, sql.SET_STATUS, (new.value, now, flow_id))
        if new == Status.PENDING and key is not None and blocked_by is not None and not holds:
            # Queued behind an exclusive key's holder: the queue moved on meanwhile.
            holder = self._run(conn, sql.HOLDER_ID, (key,)).fetchone()
            if holder is None:
                self._run(conn, sql.TAKE_KEY, (key, now, flow_id))
            else:
                self._run(conn, sql.WAIT_FOR, (holder[0], flow_id))
        self._announce(conn, flow_id)
        return True

    def release(self, flow_id: str, owner: str) -> None:
        # A paused flow's runner stopping at a command boundary (a lease check saw
        # the pause): its slots go back now, as its write would have given them.
        def let_go(conn: C) -> None:
            sql = statements(self._sql.dialect)
            rows = self._run(conn, sql.LET_GO, (flow_id, owner)).fetchall()
            if rows and rows[0][0] == Status.PAUSED:
                self._free_slots(conn, flow_id, self.clock.time())

        self._atomically(let_go)

    def _paused_row(self, conn: C, flow_id: str) -> tuple[Any, ...]:
        """The flow's ``(status, wait_kind, wake_at, blocked_by, exclusive_key,
        holds, lease_owner, lease_expires)``, locked; ``FlowNotFoundError`` when it
        is not stored."""
        return self._row(conn, flow_id, statements(self._sql.dialect).PAUSE_ROW)

    def _apply(self, conn: C, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        try:
            return super()._apply(conn, flow_id, owner, now, write)
        except FlowStateError as exc:
            # ``after_write`` refuses a paused flow's write before anything of it
            # is written (the lease and the refusals were checked).
            if exc.status != Status.PAUSED:
                raise
        sql = statements(self._sql.dialect)
        _, wait_kind, wake_at, blocked_by, *_ = self._paused_row(conn, flow_id)
        was = transition(Status.PAUSED, unpause_event(wait_kind, wake_at, blocked_by))
        self._run(conn, sql.AS_WAS, (was.value, flow_id))  # (within this transaction)
        outcome = super()._apply(conn, flow_id, owner, now, write)
        if outcome.status in FINISHED:
            return outcome
        # Written: paused again, and the runner stops here (a signal it waits for
        # that arrived: nothing was written, it takes it and writes again).
        drop = not outcome.signals
        self._run(conn, sql.PAUSED, (drop, drop, flow_id))
        if drop:
            self._free_slots(conn, flow_id, now)
        return CommitOutcome(Status.PAUSED.value, signals=outcome.signals)
