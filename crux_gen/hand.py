"""The runs an executor holds: a claimed flow taken in, the children it adopts, and
how each run leaves (parked, ended, stopped, continued as new, or failed, with its
tree), its lease dropped on every way out. The loop that advances them and does
their IO is ``executor.py``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import observe, slicelog
from .effects import Settled
from .errors import (
    FlowBusyError,
    FlowClosedError,
    FlowNotFoundError,
    LeaseLostError,
    StoreError,
)
from .flow import Flow
from .flowrun import FlowRun, close_body
from .gcpause import paused_gc
from .guards import TIMED_OUT, poisoned, timed_out
from .handlers import MISSING_CHILD
from .leases import LEASES
from .publishing import Published
from .records import StoredFlow
from .results import FlowResult
from .status import Status
from .stores.base import ITEM_ERRORS
from .views import result_of as result_of

if TYPE_CHECKING:
    from crux_gen.clock import Clock
    from crux_gen.stores.base import Store

log = logging.getLogger("crux_gen")

#: What a worker is told when a flow it took stops: its result, or the error that
#: ended its run (the flow keeps its last durable state).
OnEnd = Callable[[StoredFlow, "FlowResult | None", "Exception | None"], None]


class Hand:
    """The flows an executor holds (``runs``), the ones it took rather than
    adopted (``roots``, as claimed), and what becomes of each."""

    store: Store
    clock: Clock
    should_stop: Callable[[], bool] | None
    on_end: OnEnd | None
    runs: list[FlowRun]
    roots: dict[FlowRun, StoredFlow]
    failure: StoreError | None

    def take(self, flow: Flow[Any], stored: StoredFlow, owner: str) -> FlowRun:
        """A flow *owner* claimed, into the loop (one of its roots)."""
        run = self._take(flow, stored, owner, None)
        self.roots[run] = stored
        return run

    def _take(
        self, flow: Flow[Any], stored: StoredFlow, owner: str, parent: FlowRun | None
    ) -> FlowRun:
        """A claimed flow into the loop, advanced to its first need of IO."""
        LEASES.hold(self.store, stored.id, owner)
        run: FlowRun | None = None
        try:
            with paused_gc(len(stored.records)):  # its replay
                run = FlowRun(
                    flow, stored, owner, self.clock, parent=parent, should_stop=self.should_stop
                )
                run.ctx._published = Published(stored.run, run.interp, self.store)
                observe.slice_started(run, stored, self.store, self.clock.time())
                slicelog.started(self.slice_log, run, stored)
                self.runs.append(run)
                error = poisoned(stored, flow.max_recoveries)  # (then never run)
                if error is None:
                    run.feed(None)
                else:
                    run.end = {"status": Status.FAILED.value, "error": error}
        except BaseException:  # (its replay diverged, a record is corrupt, ...)
            if run is not None:
                observe.slice_ended(run, run.status)
                slicelog.left(self.slice_log, run, "let go: its run failed")
                if run in self.runs:
                    self.runs.remove(run)
            LEASES.drop(stored.id, owner)
            _release(self.store, stored.id, owner)
            raise
        return run

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
        now = self.clock.time()
        children = {child_id: load_child(self.store, child_id, now) for child_id in run.adopted}
        run.adopted = []
        run.feed(Settled(children))

    def _next_run(self, run: FlowRun, now: float) -> None:
        """ContinueAsNew was written: the next run of the flow, under the same lease."""
        stored = self.store.claim(run.flow_id, run.owner, now)
        if stored.lease_owner != run.owner:  # cancelled meanwhile: nothing to run
            run.result = result_of(stored)
            run.released = True
            self._retire(run)
            return
        self.runs.remove(run)
        observe.slice_ended(run, "continued")
        slicelog.left(self.slice_log, run, f"continued as new (run {stored.run})")
        LEASES.drop(run.flow_id, run.owner)
        close_body(run)
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
        if run.paused and timed_out(run.timeout_at, self.clock.time()):
            self._time_out(run)
        elif run.paused:
            run.result = FlowResult(run.flow_id, Status(run.status), name=run.flow.name)
        if not run.released:
            _release(self.store, run.flow_id, run.owner)
        if run.observed is not None:
            observe.slice_ended(run, str(run.result.status) if run.result else run.status)
        if run.result is not None:
            slicelog.ended(self.slice_log, run, run.result)
        close_body(run)  # finally blocks of the flow run now, after the write
        parent = run.parent
        if parent is not None and parent.result is None and parent in self.runs:
            parent.awaiting.discard(run.flow_id)
            if not parent.awaiting:
                self._guarded(parent, self._settle_children, parent)
        stored = self.roots.pop(run, None)
        if stored is not None and self.on_end is not None:
            assert run.result is not None
            self.on_end(stored, run.result, None)

    def _time_out(self, run: FlowRun) -> None:
        """*run*'s flow timed out (``@flow(timeout=)``): cancelled with its
        descendants, as ``cancel_flow`` cancels them (one that finished meanwhile
        keeps its end)."""
        if self.store.cancel(run.flow_id, TIMED_OUT, self.clock.time()):
            run.result = FlowResult(
                run.flow_id, Status.CANCELLED, name=run.flow.name, cancel_reason=TIMED_OUT
            )
        else:
            run.result = result_of(self.store.load(run.flow_id))

    def _guarded(self, run: FlowRun, action: Callable[..., Any], *args: Any) -> None:
        """Do *action*; an error of it ends *run*'s tree (raised without *on_end*)."""
        try:
            action(*args)
        except Exception as exc:
            if isinstance(exc, LeaseLostError) and run.parent is not None:
                self._taken_over(run, exc)
            elif self.on_end is None:
                raise
            else:
                self._fail(run, exc)

    def _taken_over(self, run: FlowRun, exc: LeaseLostError) -> None:
        """Another runner took the adopted flow of *run* (its lease lapsed: this
        process stalled): it and the flows adopted under it let go, and nothing
        else; its parent keeps what it has (a step's result just in) and waits for
        the child's end, as for a child another runner has."""
        log.warning("%s", exc, extra={"flow_id": run.flow_id})
        self._abandon([r for r in self.runs if _under(r, run)])
        parent = run.parent
        if parent is not None and parent.result is None and parent in self.runs:
            parent.awaiting.discard(run.flow_id)
            if not parent.awaiting:
                self._guarded(parent, self._settle_children, parent)

    def _fail(self, run: FlowRun, exc: Exception) -> None:
        """*exc* ended the run of *run*'s flow and of every flow adopted under it:
        each lets go of its lease, keeping its last durable state."""
        root = _root(run)
        tree = [r for r in self.runs if _root(r) is root]
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
            observe.slice_ended(run, run.status)
            slicelog.left(self.slice_log, run, f"let go, {run.status} as stored")

    @property
    def slice_log(self) -> logging.Logger:
        """Where the lines of its slices go: a worker's (*on_end*) ``crux_gen.worker``."""
        return slicelog.WORKER_LOG if self.on_end is not None else slicelog.LOG


def _root(run: FlowRun) -> FlowRun:
    """The flow a worker took that *run* was adopted under (or *run* itself)."""
    while run.parent is not None:
        run = run.parent
    return run


def _under(run: FlowRun, top: FlowRun) -> bool:
    """Whether *run* is *top* or was adopted under it."""
    found: FlowRun | None = run
    while found is not None and found is not top:
        found = found.parent
    return found is top


def load_child(store: Store, child_id: str, now: float) -> StoredFlow:
    """The child flow as stored; one that is gone (deleted by hand: ``prune`` and
    ``delete`` keep a child while its parent is unfinished) reads as a child that
    ended ``"deleted"``, which its parent's ``yield`` raises as a ``ChildFlowError``
    instead of waiting forever."""
    try:
        return store.load(child_id)
    except FlowNotFoundError:
        return StoredFlow(child_id, "?", MISSING_CHILD, "null", 0.0, now)


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
