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
from .records import Commit, CommitOutcome, StoredFlow, Write
from .results import FlowResult
from .status import FINISHED, Status
from .stores.base import ITEM_ERRORS, check_write

if TYPE_CHECKING:
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")

#: A store's refusals of a child a write would start (its id is taken): thrown at
#: the parent's ``yield`` instead of failing the run (or looping on it).
CHILD_REFUSALS = (FlowNameConflictError, FlowIdTakenError)

#: What a worker is told when a flow it took stops: its result, or the error that
#: ended its run (the flow keeps its last durable state).
OnEnd = Callable[[StoredFlow, "FlowResult | None", "Exception | None"], None]


class _Crash:
    """A step function on the pool raised a ``BaseException`` (an exit, an
    interrupt): the loop raises it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Executor:
    """Drive the flows in hand on *store*: up to *concurrency* step functions at a
    time on a pool (or *pool*, kept by the caller; with *inline*, a call alone runs
    on the loop's thread), one write per run per round, every write of a round in
    one transaction. With *should_stop*, each run stops
    at its next command boundary once it is true. Without *on_end*, a run's error
    is raised (``drive``); with it, the error ends that flow's tree only."""

    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = 8,
        should_stop: Callable[[], bool] | None = None,
        pool: ThreadPoolExecutor | None = None,
        on_end: OnEnd | None = None,
        tick: float | None = None,
        inline: bool = True,
    ) -> None:
        self.store = store
        self.clock = store.clock
        self.concurrency = concurrency
        self.should_stop = should_stop
        self.on_end = on_end
        self.tick = tick  # the longest a wait for results lasts (a worker claims then)
        self.inline = inline  # a call alone runs on the loop's thread (no more flows to come)
        self.runs: list[FlowRun] = []
        self.roots: dict[FlowRun, StoredFlow] = {}  # the flows taken (not adopted), as claimed
        #: A store error that ended runs of this executor (a worker raises it once
        #: the flows in hand stopped).
        self.failure: StoreError | None = None
        #: Transactions written, and the writes they held (``writes / batches``).
        self.batches = 0
        self.writes = 0
        self._results: queue.SimpleQueue[tuple[FlowRun | None, Event | _Crash]] = (
            queue.SimpleQueue()
        )
        self._in_flight = 0
        self._timers: list[tuple[float, int, FlowRun, int]] = []
        self._order = itertools.count()
        self._pool = pool
        self._own_pool = pool is None
        self._crash: BaseException | None = None  # a step function's exit or interrupt

    # -- taking flows ------------------------------------------------------------

    def drive(self, flow: Flow[Any], stored: StoredFlow, owner: str) -> FlowResult:
        """Run the flow *owner* claimed (and the children it adopts) until it parks,
        ends or stops; its lease is released on every way out."""
        try:
            top = self.take(flow, stored, owner)
            while self.runs:
                self.step()
        except BaseException:
            self._abandon(list(self.runs))
            raise
        finally:
            self.close()
        while top.following is not None:  # ContinueAsNew: the last run's result
            top = top.following
        assert top.result is not None
        return top.result

    def take(self, flow: Flow[Any], stored: StoredFlow, owner: str) -> FlowRun:
        """A flow *owner* claimed, into the loop (one of its roots)."""
        run = self._take(flow, stored, owner, None)
        self.roots[run] = stored
        return run

    def close(self) -> None:
        """Let the pool go (when this executor made it), once its calls returned."""
        pool, self._pool = self._pool, None
        if pool is not None and self._own_pool:
            pool.shutdown(wait=True)

    def _take(
        self, flow: Flow[Any], stored: StoredFlow, owner: str, parent: FlowRun | None
    ) -> FlowRun:
        """A claimed flow into the loop, advanced to its first need of IO."""
        LEASES.hold(self.store, stored.id, owner)
        run: FlowRun | None = None
        try:
            run = FlowRun(
                flow, stored, owner, self.clock, parent=parent, should_stop=self.should_stop
            )
            self.runs.append(run)
            run.feed(None)
        except BaseException:  # (its replay diverged, a record is corrupt, ...)
            if run is not None:
                self.runs.remove(run)
            LEASES.drop(stored.id, owner)
            _release(self.store, stored.id, owner)
            raise
        return run

    # -- the loop ----------------------------------------------------------------

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
            if write is not None:
                writes.append((run, write))
        written = {run for run, _ in writes}
        for (run, write), outcome in zip(writes, self._commit(writes, now), strict=True):
            self._guarded(run, self._written, run, write, outcome, now)
        for run in due:
            if run not in written:  # a call with nothing to write first: check the lease
                self._guarded(run, self._checked if run.calls else self._after, run, now)
        calls: list[tuple[FlowRun, Call]] = []
        for run in due:
            if run in self.runs and run.result is None:
                self._guarded(run, self._cleared, run, now, calls)
        self._dispatch(calls)

    def _commit(
        self, writes: list[tuple[FlowRun, Write]], now: float
    ) -> list[CommitOutcome | Exception]:
        """Every write of the round, in one transaction: each one's outcome or error
        (a write no store may apply fails its own run only)."""
        items: list[Commit] = []
        outcomes: list[CommitOutcome | Exception | None] = []
        for run, write in writes:
            try:
                check_write(run.flow_id, write)
            except Exception as exc:
                outcomes.append(exc)
                continue
            items.append(Commit(run.flow_id, run.owner, now, write))
            outcomes.append(None)
        if not items:
            return [o for o in outcomes if o is not None]
        self.batches += 1
        self.writes += len(items)
        answers: list[CommitOutcome | Exception]
        try:
            if len(items) == 1:  # alone: the store's own commit (its one-statement hot path)
                try:
                    answers = [self.store.commit(*items[0])]
                except ITEM_ERRORS as exc:  # its own refusal, as commit_many gives it
                    answers = [exc]
            else:
                answers = list(self.store.commit_many(items))
        except StoreError as exc:  # nothing of the round was written
            answers = [exc] * len(items)
        found = iter(answers)
        return [next(found) if o is None else o for o in outcomes]

    def _written(
        self, run: FlowRun, write: Write, outcome: CommitOutcome | Exception, now: float
    ) -> None:
        if isinstance(outcome, CHILD_REFUSALS):  # nothing was written
            run.feed(run.refused(outcome))
            return
        if isinstance(outcome, Exception):
            raise outcome
        event = run.settle(write, outcome)
        if event is not None:
            run.feed(event)
            return
        for cancel in run.cancels:  # an Any's losers, once its record is written
            self.store.cancel(cancel.flow_id, cancel.reason, now)
        run.cancels.clear()
        self._after(run, now)

    def _checked(self, run: FlowRun, now: float) -> None:
        """A call with nothing to write first: the lease is checked instead."""
        outcome = self.store.check_lease(run.flow_id, run.owner, now)
        if outcome.status in FINISHED:
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
        calls += [(run, call) for call in run.calls]
        run.calls = []

    def _dispatch(self, calls: list[tuple[FlowRun, Call]]) -> None:
        """Hand *calls* to the step functions: on this thread when it is the only
        one (no handoff), else on the pool."""
        for run, _ in calls:
            run.in_flight += 1
            self._in_flight += 1
        if self.inline and len(calls) == 1 and self._in_flight == 1:
            run, call = calls[0]
            self._results.put((run, _call(call)))
            return
        if calls and self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="crux-step")
        for run, call in calls:
            assert self._pool is not None
            self._pool.submit(self._call_on_pool, run, call)

    def _call_on_pool(self, run: FlowRun, call: Call) -> None:
        try:
            self._results.put((run, _call(call)))
        except BaseException as exc:  # an exit or an interrupt in the step: the loop raises it
            self._results.put((run, _Crash(exc)))

    def _wait(self) -> None:
        """Nothing to write: take the results that are in (waiting for one while
        calls run), else sleep until the first timer."""
        if self._in_flight:
            timeout = self.tick
            if self._timers:
                due = self._timers[0][0] - self.clock.time()
                if due <= 0:
                    self._fire()
                    return
                timeout = due if timeout is None else min(due, timeout)
            try:
                run, event = self._results.get(timeout=timeout)
            except queue.Empty:
                return
            while True:  # every result that is in: one round for all
                if run is None:  # poked: the caller has something to do
                    return
                self._answer(run, event)
                try:
                    run, event = self._results.get_nowait()
                except queue.Empty:
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
        self._results.put((None, None))

    def _answer(self, run: FlowRun, event: Event | _Crash) -> None:
        run.in_flight -= 1
        self._in_flight -= 1
        if isinstance(event, _Crash):
            self._crash = self._crash or event.exc
        elif self._crash is not None:
            run.keep(event)
        elif run.result is None and run in self.runs:
            self._guarded(run, run.feed, event)

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
        while self._in_flight:
            run, event = self._results.get()
            if run is not None:
                self._answer(run, event)
        for run in self.runs:
            if run.records:
                write = Write(tuple(sorted(run.records.values())))
                self.store.commit(run.flow_id, run.owner, self.clock.time(), write)
        raise crash

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
        run.following = following
        if run in self.roots:
            self.roots[following] = self.roots.pop(run)

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
        if parent is not None and parent.result is None and parent in self.runs:
            parent.awaiting.discard(run.flow_id)
            if not parent.awaiting:
                self._guarded(parent, self._settle_children, parent)
        stored = self.roots.pop(run, None)
        if stored is not None and self.on_end is not None:
            assert run.result is not None
            self.on_end(stored, run.result, None)

    def _guarded(self, run: FlowRun, action: Callable[..., Any], *args: Any) -> None:
        """Do *action*; an error of it ends *run*'s tree (raised without *on_end*)."""
        try:
            action(*args)
        except Exception as exc:
            if self.on_end is None:
                raise
            self._fail(run, exc)

    def _fail(self, run: FlowRun, exc: Exception) -> None:
        """*exc* ended the run of *run*'s flow and of every flow adopted under it:
        each lets go of its lease, keeping its last durable state."""
        root = run
        while root.parent is not None:
            root = root.parent
        tree = [r for r in self.runs if r is root or _under(r, root)]
        self._abandon(tree)
        stored = self.roots.pop(root, None)
        if isinstance(exc, StoreError) and not isinstance(exc, ITEM_ERRORS):
            self.failure = self.failure or exc  # the store, not the flow
        elif stored is not None and self.on_end is not None:
            self.on_end(stored, None, exc)

    def _abandon(self, runs: list[FlowRun]) -> None:
        """*runs* let go of their leases; what they wrote stands."""
        for run in runs:
            if run in self.runs:
                self.runs.remove(run)
            run.result = run.result or FlowResult(run.flow_id, Status(run.status))
            LEASES.drop(run.flow_id, run.owner)
            if not run.released:
                _release(self.store, run.flow_id, run.owner)


def _under(run: FlowRun, root: FlowRun) -> bool:
    parent = run.parent
    while parent is not None:
        if parent is root:
            return True
        parent = parent.parent
    return False


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
