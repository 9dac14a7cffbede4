"""The executor: one loop that owns every IO of the flows in its hands.

Each round it writes what its runs buffered (one fenced write per run: the
write of step k's record is the guard of step k+1, since it fails on a lost
lease and reports a cancel), hands the calls those writes cleared to the step
functions (on the loop's own thread when it is the only one, else on a pool),
adopts the child flows a run starts, and waits for results, timers or nothing.
A run's decisions are made by the pure handlers through its ``FlowRun``; nothing
here decides what a flow does next (``CORE.md``, "One executor loop owns the IO").

``Flow.run`` and ``resume`` drive one claimed flow, and the children it adopts,
with :meth:`Executor.drive`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import when
from .codec import ErrorInfo
from .effects import Call, Event, Fired, Raised, Returned, Settled
from .errors import (
    FlowBusyError,
    FlowClosedError,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowNotFoundError,
    StoreError,
)
from .flow import Flow
from .flowrun import FlowRun
from .handlers import MISSING_CHILD
from .leases import LEASES
from .records import StoredFlow, Write
from .results import FlowResult
from .status import FINISHED, Status

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")

#: A store's refusals of a child a write would start (its id is taken): thrown at
#: the parent's ``yield`` instead of failing the run (or looping on it).
CHILD_REFUSALS = (FlowNameConflictError, FlowIdTakenError)


class _Crash:
    """A step function on the pool raised a ``BaseException`` (an exit, an
    interrupt): the loop raises it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Executor:
    """Drive the flows in hand on *store*: up to *concurrency* step functions at a
    time on a pool (an ``All``'s branches), one write per run per round. With
    *should_stop*, each run stops at its next command boundary once it is true."""

    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = 8,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.clock = store.clock
        self.concurrency = concurrency
        self.should_stop = should_stop
        self.runs: list[FlowRun] = []
        self._results: queue.SimpleQueue[tuple[FlowRun, Event | _Crash]] = queue.SimpleQueue()
        self._in_flight = 0
        self._timers: list[tuple[float, int, FlowRun, int]] = []
        self._order = itertools.count()
        self._pool: ThreadPoolExecutor | None = None
        self._top: FlowRun | None = None
        self._crash: BaseException | None = None  # a step function's exit or interrupt

    # -- one claimed flow --------------------------------------------------------

    def drive(self, flow: Flow[Any], stored: StoredFlow, owner: str) -> FlowResult:
        """Run the flow *owner* claimed (and the children it adopts) until it parks,
        ends or stops; its lease is released on every way out."""
        try:
            self._top = self._take(flow, stored, owner, None)
            while self.runs:
                self._step()
        except BaseException:
            self._abandon()
            raise
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True)
        assert self._top is not None and self._top.result is not None
        return self._top.result

    def _take(
        self, flow: Flow[Any], stored: StoredFlow, owner: str, parent: FlowRun | None
    ) -> FlowRun:
        """A claimed flow into the loop, advanced to its first need of IO."""
        LEASES.hold(self.store, stored.id, owner)
        try:
            run = FlowRun(
                flow, stored, owner, self.clock, parent=parent, should_stop=self.should_stop
            )
        except BaseException:
            LEASES.drop(stored.id, owner)
            _release(self.store, stored.id, owner)
            raise
        self.runs.append(run)
        run.feed(None)
        return run

    # -- the loop ----------------------------------------------------------------

    def _step(self) -> None:
        """One round: the IO every run in hand asks for, or a wait for results or
        timers when none asks."""
        if self._crash is not None:
            self._wind_down(self._crash)
        due = [run for run in self.runs if run.wants_round]
        if due:
            for run in due:
                self._round(run)
            return
        self._wait()

    def _round(self, run: FlowRun) -> None:
        """Write what *run* buffered (or check its lease before a call), then carry
        out what the write cleared."""
        now = self.clock.time()
        write = run.write()
        if write is not None:
            try:
                outcome = self.store.commit(run.flow_id, run.owner, now, write)
            except CHILD_REFUSALS as exc:  # nothing was written
                run.feed(run.refused(exc))
                return
            event = run.settle(write, outcome)
            if event is not None:
                run.feed(event)
                return
            for cancel in run.cancels:  # an Any's losers, once its record is written
                self.store.cancel(cancel.flow_id, cancel.reason, now)
            run.cancels.clear()
        elif run.calls:
            outcome = self.store.check_lease(run.flow_id, run.owner, now)
            if outcome.status in FINISHED:
                run.cancelled(outcome)
        if run.result is not None or run.paused:
            self._retire(run)
        elif run.continued is not None:
            self._next_run(run, now)
        else:
            self._cleared(run, now)

    def _cleared(self, run: FlowRun, now: float) -> None:
        """What *run*'s write (or lease check) made safe: start its timers, adopt its
        children, call its step functions."""
        for position in run.new_timers:
            heapq.heappush(self._timers, (run.timers[position], next(self._order), run, position))
        run.new_timers.clear()
        if run.adopt:
            self._adopt(run)
        calls, run.calls = run.calls, []
        if len(calls) == 1 and self._in_flight == 0:  # alone: on this thread
            run.in_flight += 1
            self._in_flight += 1
            self._results.put((run, _call(calls[0])))
            return
        for call in calls:
            run.in_flight += 1
            self._in_flight += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="crux-step")
            self._pool.submit(self._call_on_pool, run, call)

    def _call_on_pool(self, run: FlowRun, call: Call) -> None:
        try:
            self._results.put((run, _call(call)))
        except BaseException as exc:  # an exit or an interrupt in the step: the loop raises it
            self._results.put((run, _Crash(exc)))

    def _wait(self) -> None:
        """Nothing to write: take a result (waiting for one while calls run), else
        sleep until the first timer."""
        if self._in_flight:
            timeout = None
            if self._timers:
                timeout = self._timers[0][0] - self.clock.time()
                if timeout <= 0:
                    self._fire()
                    return
            try:
                run, event = self._results.get(timeout=timeout)
            except queue.Empty:
                return
            self._answer(run, event)
            while True:  # every result that is in: one round for all
                try:
                    run, event = self._results.get_nowait()
                except queue.Empty:
                    return
                self._answer(run, event)
        if self._timers:
            wait = self._timers[0][0] - self.clock.time()
            if wait > 0:
                self.clock.sleep(wait)
            self._fire()
            return
        stuck = ", ".join(run.flow_id for run in self.runs)
        raise RuntimeError(f"the executor has runs in hand and nothing to wait for: {stuck}")

    def _answer(self, run: FlowRun, event: Event | _Crash) -> None:
        run.in_flight -= 1
        self._in_flight -= 1
        if isinstance(event, _Crash):
            self._crash = self._crash or event.exc
        elif self._crash is not None:
            run.keep(event)
        elif run.result is None:
            run.feed(event)

    def _wind_down(self, crash: BaseException) -> None:
        """A step function exited the process or was interrupted: the calls still
        running finish and their records are written (as a crash there would have
        left them), nothing more runs, and *crash* is raised."""
        while self._in_flight:
            self._answer(*self._results.get())
        for run in self.runs:
            if run.records:
                write = Write(tuple(sorted(run.records.values())))
                self.store.commit(run.flow_id, run.owner, self.clock.time(), write)
        raise crash

    def _fire(self) -> None:
        now = self.clock.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, run, position = heapq.heappop(self._timers)
            if run.result is None and run.timers.pop(position, None) is not None:
                run.feed(Fired(position))

    # -- children ------------------------------------------------------------------

    def _adopt(self, run: FlowRun) -> None:
        """Run *run*'s new child flows in this loop until each parks or ends (one
        another runner has is left to it); then *run* gets them as they stand."""
        adopt, run.adopt = run.adopt, {}
        run.adopted = list(adopt)
        for child_id, flow in adopt.items():
            owner = secrets.token_hex(8)
            try:
                stored = self.store.claim(child_id, owner, self.clock.time(), only_if_due=True)
            except (FlowBusyError, FlowClosedError, FlowNotFoundError):
                continue
            if stored.lease_owner != owner:
                continue
            run.awaiting.add(child_id)
            self._take(flow, stored, owner, run)
        if not run.awaiting:
            self._settle_children(run)

    def _settle_children(self, run: FlowRun) -> None:
        children = {child_id: self._load_child(child_id) for child_id in run.adopted}
        run.adopted = []
        run.feed(Settled(children))

    def _load_child(self, child_id: str) -> StoredFlow:
        """The child flow as stored; one that is gone (deleted by hand: ``prune`` and
        ``delete`` keep a child while its parent is unfinished) reads as a child that
        ended ``"deleted"``, which its parent's ``yield`` raises as a
        ``ChildFlowError`` instead of waiting forever."""
        try:
            return self.store.load(child_id)
        except FlowNotFoundError:
            return StoredFlow(child_id, "?", MISSING_CHILD, "null", 0.0, self.clock.time())

    # -- ends ----------------------------------------------------------------------

    def _next_run(self, run: FlowRun, now: float) -> None:
        """ContinueAsNew was written: the next run of the flow, under the same lease."""
        stored = self.store.claim(run.flow_id, run.owner, now)
        if stored.lease_owner != run.owner:  # cancelled meanwhile: nothing to run
            run.result = result_of(stored)
            run.released = True
            self._retire(run)
            return
        self.runs.remove(run)
        LEASES.drop(run.flow_id, run.owner)
        run.close()
        following = self._take(run.flow, stored, run.owner, run.parent)
        if run is self._top:
            self._top = following

    def _retire(self, run: FlowRun) -> None:
        """*run* parked, ended or stopped: out of the loop, its lease dropped, its
        body closed; its parent settles once its last adopted child is out."""
        if run in self.runs:
            self.runs.remove(run)
        LEASES.drop(run.flow_id, run.owner)
        if run.paused:
            run.result = FlowResult(run.flow_id, Status(run.status), name=run.flow.name)
        if not run.released:
            _release(self.store, run.flow_id, run.owner)
        run.close()  # finally blocks of the flow run now, after the write
        parent = run.parent
        if parent is not None and parent.result is None:
            parent.awaiting.discard(run.flow_id)
            if not parent.awaiting:
                self._settle_children(parent)

    def _abandon(self) -> None:
        """A run failed (or the caller was interrupted): every run in hand lets go
        of its lease; what they wrote stands."""
        runs, self.runs = self.runs, []
        for run in runs:
            LEASES.drop(run.flow_id, run.owner)
            if not run.released:
                _release(self.store, run.flow_id, run.owner)


def result_of(stored: StoredFlow) -> FlowResult:
    """The ``FlowResult`` a stored flow stands at."""
    return FlowResult(
        stored.id,
        stored.status,
        value=codec.decode_stored(stored.result, flow_id=stored.id, position=None, column="result"),
        error=ErrorInfo.decode(stored.error, flow_id=stored.id),
        cancel_reason=stored.cancel_reason,
        waiting_for=stored.waiting_for,
        wake_at=when(stored.wake_at),
        name=stored.name,
    )


def _call(call: Call) -> Event:
    """Run a step's or condition's function: its value or its error."""
    try:
        return Returned(call.fn(), call)
    except Exception as exc:
        return Raised(exc, call)


def _release(store: Store, flow_id: str, owner: str) -> None:
    """Drop a lease on the way out of a run that already failed or stopped: a
    store error here is logged, never raised over the error in hand (the lease
    then lapses by itself)."""
    try:
        store.release(flow_id, owner)
    except StoreError:
        log.warning(
            "flow %s: could not release the lease of runner %s", flow_id, owner, exc_info=True
        )
