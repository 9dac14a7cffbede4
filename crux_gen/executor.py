"""The executor: one loop that owns every IO of the flows in its hands.

Each round it writes what its runs buffered, all in one transaction
(``Store.commit_many``; one run alone: ``Store.commit``). A run's write is
fenced: it fails on a lost lease and reports a cancel, so the write of step k's
record is the guard of step k+1. Then it hands the calls those writes cleared to
the step functions (on the loop's own thread when there is only one, else on a
pool), adopts the child flows the runs start, and waits for results or timers.
A run's decisions are made by the pure handlers through its ``FlowRun``; nothing
here decides what a flow does next (``CORE.md``, "One executor loop owns the IO").

``Flow.run`` and ``resume`` drive one claimed flow, and the children it adopts,
with :meth:`Executor.drive`; a worker feeds it the flows it claims (:meth:`take`)
and reports each as it stops (*on_end*).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import observe, steplimits
from .calls import Calls, Crash
from .effects import Call, Event, Fired
from .errors import (
    FlowIdTakenError,
    FlowNameConflictError,
    StoreError,
)
from .flow import Flow
from .flowrun import FlowRun
from .hand import Hand, OnEnd
from .records import Commit, CommitOutcome, LeaseCheck, StoredFlow, Write
from .results import FlowResult
from .status import FINISHED, STOPPED
from .stores.base import ITEM_ERRORS, check_write

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")

#: A store's refusals of a child a write would start (its id is taken): thrown at
#: the parent's ``yield`` instead of failing the run (or looping on it).
CHILD_REFUSALS = (FlowNameConflictError, FlowIdTakenError)


#: The longest a round waits for the results of other calls in flight once one
#: came in (half the last write's time, at most this): their records share a write.
GATHER_MAX = 0.002


class Executor(Hand):
    """Drive the flows in hand on *store*: up to *concurrency* step functions at a
    time (through *calls*, when the caller keeps them: ``calls.py``), one write per
    run per round, every write of a round in one transaction. With *should_stop*, each run stops
    at its next command boundary once it is true. Without *on_end*, a run's error
    is raised (``drive``); with it, the error ends that flow's tree only."""

    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = 8,
        should_stop: Callable[[], bool] | None = None,
        calls: Calls[FlowRun] | None = None,
        on_end: OnEnd | None = None,
        tick: float | None = None,
    ) -> None:
        self.store = store
        self.clock = store.clock
        self.concurrency = concurrency
        self.should_stop = should_stop
        self.on_end = on_end
        self.tick = tick  # the longest a wait for results lasts (a worker claims then)
        self.runs: list[FlowRun] = []
        self.roots: dict[FlowRun, StoredFlow] = {}  # the flows taken (not adopted), as claimed
        #: A store error that ended runs of this executor (a worker raises it once
        #: the flows in hand stopped).
        self.failure: StoreError | None = None
        #: Transactions written, and the writes they held (``writes / batches``).
        self.batches = 0
        self.writes = 0
        self._own_calls = calls is None
        self.calls: Calls[FlowRun] = Calls(concurrency) if calls is None else calls
        self._timers: list[tuple[float, int, FlowRun, int]] = []
        self._order = itertools.count()
        self._crash: BaseException | None = None  # a step function's exit or interrupt
        self._write_time = 0.0  # what the last round's write took (seconds)

    # -- taking flows ------------------------------------------------------------

    def drive(self, flow: Flow[Any], stored: StoredFlow, owner: str) -> FlowResult:
        """Run the flow *owner* claimed (and the children it adopts) until it parks,
        ends or stops; its lease is released on every way out."""
        try:
            top = self.take(flow, stored, owner)
            while self.runs:
                self.step()
        except BaseException:
            self.let_go()
            raise
        finally:
            self.close()
        while top.following is not None:  # ContinueAsNew: the last run's result
            top = top.following
        assert top.result is not None
        return top.result

    def let_go(self) -> None:
        """Every run in hand lets go of its lease (the caller was interrupted, or a
        run failed); what they wrote stands."""
        self._abandon(list(self.runs))

    def close(self) -> None:
        """Stop the step functions' threads (when this executor started them), once
        their calls returned."""
        if self._own_calls:
            self.calls.close()

    def step(self) -> None:
        """One round: the IO every run in hand asks for, or a wait for results or
        timers when none asks."""
        if self._crash is not None:
            self._wind_down(self._crash)
        due = [run for run in self.runs if run.wants_round]
        if not due:
            self._wait()
            return
        now = self.clock.time()
        writes: list[tuple[FlowRun, Write]] = []
        for run in due:
            write = run.write()
            published = run.ctx._published
            if published and (write is None or not (write.events or write.streams)):
                write = published.carried(write or Write())  # ahead of the calls
            if write is not None:
                if run.step_parts or any(call.limits for call in run.calls):
                    write = steplimits.prepared(run, write)
                writes.append((run, write))
        if writes:
            for (run, write), outcome in zip(writes, self._commit(writes, now), strict=True):
                self._guarded(run, self._written, run, write, outcome, now)
        if len(writes) < len(due):  # (the hot path, every run writing, skips this)
            self._unwritten(due, {run for run, _ in writes}, now)
        calls: list[tuple[FlowRun, Call]] = []
        for run in due:
            if run in self.runs and run.result is None:
                self._guarded(run, self._cleared, run, now, calls)
        self._dispatch(calls)

    def _unwritten(self, due: list[FlowRun], written: set[FlowRun], now: float) -> None:
        """The runs of a round that had nothing to write: those about to call have
        their leases checked (in one read), the others go on or retire."""
        checks = [run for run in due if run not in written and run.calls]
        for run, outcome in zip(checks, self._check(checks, now), strict=True):
            self._guarded(run, self._checked, run, outcome, now)
        for run in due:
            if run not in written and not run.calls:
                self._guarded(run, self._after, run, now)

    def _commit(
        self, writes: list[tuple[FlowRun, Write]], now: float
    ) -> list[CommitOutcome | Exception]:
        self.batches += 1
        self.writes += len(writes)
        items = [Commit(run.flow_id, run.owner, now, write) for run, write in writes]
        begun = time.perf_counter()
        try:
            return commit_round(self.store, items)
        finally:
            self._write_time = time.perf_counter() - begun

    def _written(
        self, run: FlowRun, write: Write, outcome: CommitOutcome | Exception, now: float
    ) -> None:
        if isinstance(outcome, CHILD_REFUSALS):  # nothing was written
            run.feed(run.refused(outcome))
            return
        if isinstance(outcome, Exception):
            raise outcome
        if write.free_slots or write.take_slots:  # a limited step's slots
            steplimits.settled(run, write, outcome.blocked)
            if outcome.blocked:  # parked, holding nothing, until a slot frees
                run.calls, run.paused, run.released = [], True, True
                self._retire(run)
                return
        if write.children and observe.OBSERVER is not None and outcome.status not in FINISHED:
            for child in write.children:  # created by this write (a cancelled flow's: not)
                observe.flow_started(child.name)
        if run.ctx._published and not outcome.signals:  # (signals: nothing written)
            run.ctx._published.written(write)
        event = run.settle(write, outcome)
        if event is not None:
            run.feed(event)
            return
        for cancel in run.cancels:  # an Any's losers, once its record is written
            self.store.cancel(cancel.flow_id, cancel.reason, now)
        run.cancels.clear()
        self._after(run, now)

    def _check(self, runs: list[FlowRun], now: float) -> list[CommitOutcome | Exception]:
        """The leases of *runs*, each about to call with nothing to write first, in
        one read (one alone: ``Store.check_lease``)."""
        if not runs:
            return []
        try:
            if len(runs) == 1:
                run = runs[0]
                return [self.store.check_lease(run.flow_id, run.owner, now)]
            checks = [LeaseCheck(r.flow_id, r.owner, now) for r in runs]
            return list(self.store.check_leases(checks))
        except (StoreError, *ITEM_ERRORS) as exc:  # one's own refusal, or the store's failure
            return [exc] * len(runs)

    def _checked(self, run: FlowRun, outcome: CommitOutcome | Exception, now: float) -> None:
        if isinstance(outcome, Exception):
            raise outcome
        if outcome.status in STOPPED:  # cancelled or paused meanwhile
            run.cancelled(outcome)
        self._after(run, now)

    def _after(self, run: FlowRun, now: float) -> None:
        if run.result is not None or run.paused:
            self._retire(run)
        elif run.continued is not None:
            self._next_run(run, now)

    def _cleared(self, run: FlowRun, now: float, calls: list[tuple[FlowRun, Call]]) -> None:
        """What *run*'s write (or lease check) made safe: start its timers, adopt its
        children, and its calls (into *calls*)."""
        if run.records or run.updates or run.end is not None or run.start is not None:
            return  # answered with an event and went on: it writes again first
        for position in run.new_timers:
            heapq.heappush(self._timers, (run.timers[position], next(self._order), run, position))
        run.new_timers.clear()
        if run.adopt:
            self._adopt(run)
        limited = [
            c for c in run.calls if c.limits and steplimits.part(c.position) not in run.step_parts
        ]
        if limited and not steplimits.take(self.store, run, limited, now):
            run.calls, run.paused, run.released = [], True, True  # parked, blocked
            self._retire(run)
            return
        calls += [(run, call) for call in run.calls]
        run.calls = []

    def _dispatch(self, calls: list[tuple[FlowRun, Call]]) -> None:
        for run, _ in calls:
            run.in_flight += 1
        for run, event in self.calls.submit(calls):  # run inline: in at once
            self._answer(run, event)

    def _wait(self) -> None:
        """Nothing to write: take the results that are in (waiting for one while
        calls run, at most a tick), else sleep until the first timer."""
        if self.calls.in_flight:
            timeout = self.tick
            if self._timers:
                due = self._timers[0][0] - self.clock.time()
                if due <= 0:
                    self._fire()
                    return
                timeout = due if timeout is None else min(due, timeout)
            # The others' results, for a part of what a write takes: one write for all.
            gather = min(self._write_time / 2, GATHER_MAX)
            for run, event in self.calls.results(timeout, gather):
                self._answer(run, event)
            return
        if self._timers:
            wait = self._timers[0][0] - self.clock.time()
            if wait > 0:
                self.clock.sleep(wait)
            self._fire()
            return
        stuck = ", ".join(run.flow_id for run in self.runs)
        raise RuntimeError(f"the executor has runs in hand and nothing to wait for: {stuck}")

    def poke(self) -> None:
        """End the wait for results in progress, if any (from any thread)."""
        self.calls.poke()

    def _answer(self, run: FlowRun, event: Event | Crash) -> None:
        run.in_flight -= 1
        if isinstance(event, Crash):
            self._crash = self._crash or event.exc
        elif self._crash is not None:
            run.keep(event)
        elif run.result is None and run in self.runs:
            self._guarded(run, run.feed, event)
            if observe.OBSERVER is not None:  # what the handler made of the attempt
                observe.attempt_ended(run, event)

    def _fire(self) -> None:
        now = self.clock.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, run, position = heapq.heappop(self._timers)
            if run.result is None and run.timers.pop(position, None) is not None:
                self._guarded(run, run.feed, Fired(position))

    def _wind_down(self, crash: BaseException) -> None:
        """A step function exited the process or was interrupted: the calls still
        running finish and their records are written (as a crash there would have
        left them), nothing more runs, and *crash* is raised."""
        while self.calls.in_flight:
            for run, event in self.calls.results(None):
                self._answer(run, event)
        for run in self.runs:
            if run.records:
                write = Write(tuple(sorted(run.records.values())))
                self.store.commit(run.flow_id, run.owner, self.clock.time(), write)
        raise crash


def commit_round(store: Store, items: list[Commit]) -> list[CommitOutcome | Exception]:
    """Every write of a round in one transaction (one alone: the store's own
    ``commit``, its one-statement hot path): each one's outcome or its refusal; a
    write no store may apply fails alone, before anything is written; a failure of
    the store fails them all, and nothing of them was written."""
    if len(items) == 1:  # (the hot path: one flow in hand)
        item = items[0]
        try:
            check_write(item.flow_id, item.write)
        except Exception as exc:
            return [exc]
        try:
            return [store.commit(*item)]
        except (StoreError, *ITEM_ERRORS) as exc:
            return [exc]
    answers: list[CommitOutcome | Exception | None] = []
    valid: list[Commit] = []
    for item in items:
        try:
            check_write(item.flow_id, item.write)
        except Exception as exc:
            answers.append(exc)
            continue
        valid.append(item)
        answers.append(None)
    written: list[CommitOutcome | Exception] = []
    try:
        if len(valid) == 1:
            try:
                written = [store.commit(*valid[0])]
            except ITEM_ERRORS as exc:  # its own refusal, as commit_many gives it
                written = [exc]
        elif valid:
            written = list(store.commit_many(valid))
    except StoreError as exc:  # the store's failure: nothing of them was written
        written = [exc] * len(valid)
    found = iter(written)
    return [next(found) if a is None else a for a in answers]
