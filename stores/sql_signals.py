"""``SqlSignals``: many signals stored in one transaction (``add_signals``, for
``signal_many``), ``SqlStore`` over its statements and connection hooks."""

from __future__ import annotations

from collections.abc import Sequence

from crux_gen.errors import FlowClosedError, FlowNotFoundError
from crux_gen.records import StoredSignal

from .base_signals import SignalAsk
from .rules import check_signal_allowed, in_batch
from .sql import C, SqlStore


class SqlSignals(SqlStore[C]):
    """``SqlStore`` with ``add_signals``."""

    def add_signals(
        self, signals: Sequence[SignalAsk], now: float, *, trace: str | None = None
    ) -> list[StoredSignal | None]:
        return self._atomically(lambda conn: self._add_signals(conn, signals, now, trace))

    def _add_signals(
        self, conn: C, signals: Sequence[SignalAsk], now: float, trace: str | None
    ) -> list[StoredSignal | None]:
        # The flows are locked first, by id (``_lock_flows``), so two batches
        # naming the same flows in other orders queue instead of deadlocking; an
        # error leaves the transaction, and with it every signal inserted, undone.
        sql = self._sql
        flows = sorted({flow_id for flow_id, *_ in signals})
        self._lock_flows(conn, flows)
        stored: list[StoredSignal | None] = []
        for index, (flow_id, name, payload, key) in enumerate(signals):
            row = self._run(conn, sql.SIGNAL_FLOW_ROW, (flow_id,)).fetchone()
            try:
                if row is None:
                    raise FlowNotFoundError(flow_id)
                if (
                    key is not None
                    and self._run(conn, sql.SIGNAL_KEY_SEEN, (flow_id, key)).fetchone()
                ):
                    stored.append(None)  # sent before (or earlier in the batch) with this key
                    continue
                check_signal_allowed(flow_id, row[0], row[1], row[2], now)
            except (FlowNotFoundError, FlowClosedError) as exc:
                raise in_batch(exc, index) from None
            inserted = self._run(conn, sql.INSERT_SIGNAL, (flow_id, name, payload, now, key, trace))
            signal_id = int(inserted.fetchall()[0][0])
            stored.append(
                StoredSignal(
                    signal_id, flow_id, name, payload, "pending", now, key=key, trace=trace
                )
            )
        for flow_id in flows:
            self._announce(conn, flow_id)
        return stored
