"""``SqlLimits``: global limits on the SQL stores (``Limit``): slots and rate state
in the store, taken in the claim's transaction and given back in the transaction
of the commit that parks or ends the flow (or of its cancel).

- ``limit_state`` (one row per limit name and key value): the GCRA's theoretical
  arrival time ``tat``; its row is also the lock that orders the takers and the
  givers of one limit's slots (``FOR UPDATE`` on PostgreSQL; SQLite's
  ``BEGIN IMMEDIATE`` serialises every writer anyway), so a flow blocked while a
  holder gives its slot back is always seen by that holder's release.
- ``limit_slots`` (one row per slot held: limit, key, flow): a slot counts only
  while its flow's lease is live, so a crashed worker's slots come back when its
  leases expire, with no sweeper.

A flow that finds a slot full is marked ``blocked_by`` (``limit NAME [key K]``)
and leaves every due branch of the due scan; the release of a slot unblocks the
next one of that limit and key (highest priority, then the longest blocked), in
the releasing transaction. A flow a rate holds back is marked ``blocked_by``
(``rate NAME [key K]``) with ``blocked_until`` its turn: the due scan's last
branch takes it then (a wake time, not polling).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

from crux_gen.errors import FlowBusyError, FlowClosedError, LeaseLostError
from crux_gen.limits import (
    ROUNDS,
    Blocked,
    Gate,
    LimitUsage,
    SlotAsk,
    fair_key,
    label,
    usage,
)
from crux_gen.records import StoredFlow, Write

from .sql import C
from .sql_pause import SqlPause
from .sql_statements import LIMIT_BLOCK, UNFINISHED, Dialect


class LimitStatements:
    """The statements of ``SqlLimits``, in one dialect."""

    def __init__(self, d: Dialect) -> None:
        m = d.mark
        self.ENSURE = (
            f"INSERT INTO limit_state (name, key, tat) VALUES ({m}, {m}, 0) ON CONFLICT DO NOTHING"
        )
        self.STATE = f"SELECT tat FROM limit_state WHERE name = {m} AND key = {m}" + d.lock()
        self.SET_TAT = f"UPDATE limit_state SET tat = {m} WHERE name = {m} AND key = {m}"
        self.HELD = (
            "SELECT count(*) FROM limit_slots s JOIN flows f ON f.id = s.flow_id "
            f"WHERE s.name = {m} AND s.key = {m} AND NOT (s.flow_id = {m} AND s.part = {m}) "
            f"AND f.lease_owner IS NOT NULL AND f.lease_expires > {m}"
        )
        self.TAKE = (
            f"INSERT INTO limit_slots (name, key, flow_id, part) VALUES ({m}, {m}, {m}, {m}) "
            "ON CONFLICT DO NOTHING"
        )
        self.SLOTS_OF = f"SELECT DISTINCT name, key FROM limit_slots WHERE flow_id = {m}"
        self.GIVE_BACK = f"DELETE FROM limit_slots WHERE flow_id = {m}"
        self.PART_SLOTS = (
            f"SELECT DISTINCT name, key FROM limit_slots WHERE flow_id = {m} AND part = {m}"
        )
        self.GIVE_BACK_PART = f"DELETE FROM limit_slots WHERE flow_id = {m} AND part = {m}"
        self.HAND_OVER = (
            f"UPDATE limit_slots SET part = {m} "
            f"WHERE flow_id = {m} AND part = {m} AND name = {m} AND key = {m}"
        )
        self.LEASED = f"SELECT lease_owner, lease_expires FROM flows WHERE id = {m}" + d.lock()
        self.DROP = f"UPDATE flows SET lease_owner = NULL, lease_expires = NULL WHERE id = {m}"
        self.BLOCK = (
            f"UPDATE flows SET blocked_by = {m}, blocked_until = {m}, "
            f"fair_key = COALESCE(fair_key, {m}) WHERE id = {m}"
        )
        self.UNBLOCK_ONE = (
            "UPDATE flows SET blocked_by = NULL WHERE id = (SELECT id FROM flows "
            f"WHERE blocked_by = {m} AND blocked_until IS NULL AND status IN {UNFINISHED} "
            "ORDER BY priority DESC, updated_at, id LIMIT 1) RETURNING id"
        )
        self.SERVED = d.upsert(
            "fair_turns",
            "fair_key, served",
            "fair_key",
            f"SELECT {m}, COALESCE(max(served), 0) + 1 FROM fair_turns",
        )
        self.HELD_ALL = (
            "SELECT s.name, s.key, count(*) FROM limit_slots s JOIN flows f ON f.id = s.flow_id "
            f"WHERE f.lease_owner IS NOT NULL AND f.lease_expires > {m} GROUP BY s.name, s.key"
        )
        self.BLOCKED_ALL = (
            "SELECT blocked_by, count(*) FROM flows WHERE blocked_by IS NOT NULL "
            f"AND {LIMIT_BLOCK} AND status IN {UNFINISHED} GROUP BY blocked_by"
        )
        self.CLEAR = f"UPDATE flows SET blocked_by = NULL, blocked_until = NULL WHERE id = {m}"


#: ``SqlLimits._limit_sql``'s statements, by ``id`` of the store's ``Statements``.
_MADE: dict[int, LimitStatements] = {}


class _NotPassed(Exception):
    """``_passed_on`` found more than a step's record and a slot to pass on: its
    transaction is rolled back and the write goes the full way."""


@functools.cache
def statements(d: Dialect) -> LimitStatements:
    """The statements of *d* (made once per dialect)."""
    return LimitStatements(d)


class SqlLimits(SqlPause[C]):
    """``SqlPause`` with the slots and rates of limits."""

    def claim_due(
        self,
        now: float,
        limit: int,
        owner: str,
        *,
        exclude: Collection[str] = (),
        gate: Gate | None = None,
    ) -> list[StoredFlow]:
        sql, as_list = self._sql, self._sql.dialect.as_list
        rows: list[tuple[Any, ...]] = []
        tried = list(exclude)
        with self._lease_write() as conn:
            for _ in range(ROUNDS):  # again only when a limit blocked one
                params = {"now": now, "limit": int(limit) - len(rows), "exclude": as_list(tried)}
                found = self._run(conn, sql.DUE_EXCLUDING, params).fetchall()
                ids = list(dict.fromkeys(row[0] for row in found))  # unique, in order
                if not ids:
                    break
                tried += ids
                # Rows another worker is claiming right now are skipped, not waited for.
                locked = {
                    row[0]: tuple(row)
                    for row in self._run(conn, sql.ROWS_SKIP_LOCKED, (as_list(ids),)).fetchall()
                }
                blocked = False
                for flow_id in ids:
                    if flow_id not in locked:
                        continue
                    try:
                        rows.append(self._claim(conn, locked[flow_id], owner, now, gate=gate))
                    except Blocked:
                        blocked = True
                    except (FlowBusyError, FlowClosedError):
                        continue
                if not blocked or len(rows) >= limit:
                    break
        return self._claimed(rows)

    def limit_usage(self, now: float) -> list[LimitUsage]:
        """Every limit (and key) with a slot held or a flow blocked, at *now*."""
        sql = self._limit_sql()
        held = [(name, key, int(n)) for name, key, n in self._all(sql.HELD_ALL, (now,))]
        return usage(held, [(text, int(n)) for text, n in self._all(sql.BLOCKED_ALL, ())])

    def _gate(self, conn: C, flow: StoredFlow, gate: Gate | None, now: float) -> None:
        """Take *flow*'s slots and rate turns (*gate*'s asks for it) before its
        claim; a flow that finds none is marked blocked and ``Blocked`` raised
        (the claim skips it)."""
        asks = () if gate is None else gate(flow.name, flow.input)
        if not asks:
            return
        sql = self._limit_sql()
        blocked = self._take(conn, flow.id, [("", a) for a in asks], now)
        if blocked is not None:
            self._run(conn, sql.BLOCK, (*blocked, fair_key(asks), flow.id))
            raise Blocked(flow.id)
        if flow.blocked_by is not None or flow.blocked_until is not None:
            self._run(conn, sql.CLEAR, (flow.id,))
        served = flow.fair_key or fair_key(asks)
        if served is not None:  # its key goes to the back of the round
            self._run(conn, sql.SERVED, (served,))

    def _take(
        self, conn: C, flow_id: str, asks: Sequence[tuple[str, SlotAsk]], now: float
    ) -> tuple[str, float | None] | None:
        """Take every ask (a part, ``""`` or ``"step N"``, and its ``SlotAsk``) for
        *flow_id*, all or none: ``None`` when taken, else what blocks."""
        sql = self._limit_sql()
        tats: dict[tuple[str, str], float] = {}
        for name, key in sorted({(a.name, a.key) for _, a in asks}):  # one lock order
            self._run(conn, sql.ENSURE, (name, key))
            tats[name, key] = self._run(conn, sql.STATE, (name, key)).fetchone()[0]
        for part, ask in asks:
            blocked = self._blocked(conn, flow_id, part, ask, tats[ask.name, ask.key], now)
            if blocked is not None:
                return blocked
        for part, ask in asks:
            if ask.interval is not None:
                tat = tats[ask.name, ask.key] = max(tats[ask.name, ask.key], now) + ask.interval
                self._run(conn, sql.SET_TAT, (tat, ask.name, ask.key))
            if ask.concurrency is not None:
                self._run(conn, sql.TAKE, (ask.name, ask.key, flow_id, part))
        return None

    def take_step(
        self, flow_id: str, owner: str, asks: Sequence[tuple[str, SlotAsk]], now: float
    ) -> bool:
        """Before step functions run (``Step(..., limits=[...])``): take their slots
        (all or none) for the lease holder *owner*. ``False``: one is full (or a
        rate's turn has not come) and, in the same transaction, the flow is marked
        blocked by it, gives back every slot it holds and lets go of its lease: it
        waits holding nothing, due again when a slot frees (or at the rate's turn),
        and its next run reaches the step again. ``LeaseLostError`` when *owner*
        does not hold the lease."""
        sql = self._limit_sql()

        def take(conn: C) -> bool:
            leased = self._run(conn, sql.LEASED, (flow_id,)).fetchone()
            if leased is None or leased[0] != owner or (leased[1] or 0.0) <= now:
                raise LeaseLostError(flow_id, owner)
            return self._took(conn, flow_id, asks, now)

        return self._atomically(take)

    def _took(self, conn: C, flow_id: str, asks: Sequence[tuple[str, Any]], now: float) -> bool:
        """Take *asks* for the lease holder of *flow_id*; else mark it blocked, give
        back every slot it holds and drop its lease (``take_step``)."""
        sql = self._limit_sql()
        blocked = self._take(conn, flow_id, asks, now)
        if blocked is None:
            return True
        self._free_slots(conn, flow_id, now)  # (before its mark: it unblocks others)
        self._run(conn, sql.BLOCK, (*blocked, fair_key([a for _, a in asks]), flow_id))
        self._run(conn, sql.DROP, (flow_id,))
        return False

    def give_back_step(self, flow_id: str, part: str, now: float) -> None:
        """The step at *part* (``"step N"``) returned: its slots go back, each
        unblocking the next flow blocked by its limit and key. (A worker gives them
        back in the transaction that stores the attempt: ``Write.free_slots``.)"""
        self._atomically(lambda conn: self._give_back_part(conn, flow_id, part))

    def _limit_sql(self) -> LimitStatements:
        """This store's limit statements (made once per dialect; found by the
        identity of its statements, which live as long as their module)."""
        found = _MADE.get(id(self._sql))
        if found is None:
            found = _MADE[id(self._sql)] = statements(self._sql.dialect)
        return found

    def _passed_on(self, flow_id: str, owner: str, write: Write) -> bool:
        """A limited step's write (``Write.is_limited_step``) on the hot path: its
        record as a step's (one fenced statement: the lease and the gap rule) and
        each of its slots passed to the next limited step that asks for it, in one
        transaction. Anything else (the lease lost, a slot to take afresh or to give
        back, a rate's turn) and nothing of it stays: ``False``, the full write."""
        fenced = self._sql.fenced(flow_id, owner, write.records[0])

        def passed(conn: C) -> None:
            if not self._put_fenced(conn, fenced):
                raise _NotPassed
            takes = write.take_slots
            for part in write.free_slots:
                takes = self._give_back_part(conn, flow_id, part, takes, only_pass=True)
            if takes:
                raise _NotPassed

        try:
            self._atomically(passed)
        except _NotPassed:
            return False
        return True

    def _give_back_part(
        self,
        conn: C,
        flow_id: str,
        part: str,
        takes: tuple[tuple[str, SlotAsk], ...] = (),
        *,
        only_pass: bool = False,
    ) -> tuple[tuple[str, SlotAsk], ...]:
        """The slots of the step at *part* go back, each unblocking the next flow
        blocked by its limit and key; except one that an ask of *takes* (the next
        limited step of the flow, in the same write) would take at once: it passes to
        that step (its row's part changes; the count of the limit's slots does not,
        so there is nothing to check, nobody to unblock). The asks left are returned.
        (Only a plain slot passes: an ask with a rate takes its turn as any start.)"""
        sql = self._limit_sql()
        held = self._run(conn, sql.PART_SLOTS, (flow_id, part)).fetchall()
        if not held:
            return takes
        left, kept = list(takes), []
        for name, key in held:
            fits = [
                i
                for i, (_, ask) in enumerate(left)
                if ask.interval is None and ask.concurrency and (ask.name, ask.key) == (name, key)
            ]
            if not fits:
                kept.append((name, key))
                continue
            step, _ = left.pop(fits[0])
            self._run(conn, sql.HAND_OVER, (step, flow_id, part, name, key))
        if kept and only_pass:
            raise _NotPassed  # (``_passed_on``: the full write gives it back)
        if kept:
            self._run(conn, sql.GIVE_BACK_PART, (flow_id, part))
            self._unblock(conn, kept)
        return tuple(left)

    def _blocked(
        self, conn: C, flow_id: str, part: str, ask: SlotAsk, tat: float, now: float
    ) -> tuple[str, float | None] | None:
        """What blocks *ask* for *flow_id* (``blocked_by``, ``blocked_until``), or
        ``None``: a full slot count, else a rate whose turn has not come."""
        if ask.concurrency is not None:
            params = (ask.name, ask.key, flow_id, part, now)
            held = self._run(conn, self._limit_sql().HELD, params).fetchone()[0]
            if held >= ask.concurrency:
                return label(ask.name, ask.key), None
        if ask.interval is not None:
            turn = tat + ask.interval - ask.burst * ask.interval  # GCRA: the earliest start
            if turn > now:
                return label(ask.name, ask.key, rate=True), turn
        return None

    def _free_slots(self, conn: C, flow_id: str, now: float) -> None:
        """*flow_id* parked or ended: its slots go back, and each unblocks the next
        flow blocked by its limit and key, in this transaction."""
        sql = self._limit_sql()
        held: Sequence[Any] = self._run(conn, sql.SLOTS_OF, (flow_id,)).fetchall()
        if not held:
            return
        self._run(conn, sql.GIVE_BACK, (flow_id,))
        self._unblock(conn, held)

    def _unblock(self, conn: C, held: Sequence[Any]) -> None:
        """Slots of (name, key) in *held* came back: the next flow blocked by each is due."""
        sql = self._limit_sql()
        for name, key in sorted(held):
            self._run(conn, sql.STATE, (name, key))  # the limit's lock
            for (unblocked,) in self._run(conn, sql.UNBLOCK_ONE, (label(name, key),)).fetchall():
                self._announce(conn, unblocked)
