"""Where the core tells an observer what it does: the seam ``crux_gen.otel`` fills.

Off by default, and then it costs one ``is None`` test per slice and per step
attempt (no import of OpenTelemetry). ``crux_gen.otel.instrument()`` sets
:data:`OBSERVER`; the core calls it at these points, and nowhere else:

- ``trace()`` when a flow is started or signalled (or a child created): the text of
  the active trace context, stored with the flow or the signal (``None``: none);
- ``slice_trace(run)`` when a slice starts child flows: the text of the slice's
  own context, stored with each child (whose slices are then its children);
- ``flow_started(name)`` when this process creates a flow;
- ``slice_started(run, stored, store, now)`` when a runner took a flow in (claim
  to park or finish: one *slice*), before its replay; ``slice_ended(run, status)``
  when it leaves the runner (parked, finished, stopped, let go, continued as new);
- ``attempt(run, call, inner)`` around each call of a step function or a condition
  (on the thread that runs it), which returns ``inner(call)``'s event;
- ``attempt_ended(run, event, record)`` once the run's handler took that event (on
  the executor's thread): *record* is what it decided to store of the attempt
  (``completed``, ``retrying``, ``failed``; ``None``: nothing), so an observer
  learns a step's outcome without the pure handlers telling anyone;
- ``store_in_use(store)`` when a worker starts a pass on *store* (the stores whose
  due flows an observer may count).

Replayed commands call nothing here: a replay calls no function. (An event is an
``effects.Event`` or a ``calls.Crash``: ``Any`` here, as ``calls`` imports this;
a run, a ``flowrun.FlowRun``, likewise.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import schedules
from .stores.base import StoreAdmin

if TYPE_CHECKING:
    from .effects import Call, Event
    from .records import StoredFlow, StoredRecord
    from .stores.base import Store

#: A ``flowrun.FlowRun`` (``Any`` here, as ``flowrun`` imports this module).
FlowRun = Any


class Observer(Protocol):
    """What an instrumentation is told (``crux_gen.otel`` is the one we ship)."""

    def trace(self) -> str | None:
        """The active trace context as text to store (``None``: there is none)."""
        ...

    def slice_trace(self, run: FlowRun) -> str | None:
        """The trace context of *run*'s slice as text to store (``None``: none)."""
        ...

    def flow_started(self, name: str) -> None:
        """This process created a flow of *name*."""
        ...

    def slice_started(self, run: FlowRun, stored: StoredFlow, store: Store, now: float) -> None:
        """A runner took *stored* in as *run* (its slice begins); it may keep what it
        needs in ``run.observed``."""
        ...

    def slice_ended(self, run: FlowRun, status: str) -> None:
        """*run* left its runner with *status* (as stored: ``suspended``, ``completed``, ...)."""
        ...

    def attempt(
        self, run: FlowRun, call: Call, inner: Callable[[Call], Event | Any]
    ) -> Event | Any:
        """Around one attempt of a step function (or a condition's call): returns
        ``inner(call)``."""
        ...

    def attempt_ended(self, run: FlowRun, event: Any, record: StoredRecord | None) -> None:
        """*run*'s handler took *event* (a ``Returned`` or ``Raised``) and decided to
        store *record* of that attempt (``None``: none)."""
        ...

    def store_in_use(self, store: Store) -> None:
        """A worker of this process runs the flows of *store*."""
        ...


#: The most due flows :func:`due_count` counts (the gauge ``crux.flows.due`` and the
#: dashboard's ``crux_flows_due``): a backlog past it reads as this many.
DUE_CAP = 10_000

#: The observer in place (``crux_gen.otel.instrument``), or ``None``: nothing observed.
OBSERVER: Observer | None = None


def set_observer(observer: Observer | None) -> Observer | None:
    """Put *observer* in place (``None``: none); the one it replaces is returned."""
    global OBSERVER
    previous, OBSERVER = OBSERVER, observer
    return previous


def trace() -> str | None:
    """The trace context to store with a flow or a signal made now (``None`` when
    nothing observes, or no trace is active)."""
    observer = OBSERVER
    return None if observer is None else observer.trace()


def slice_trace(run: FlowRun) -> str | None:
    """The trace context to store with the child flows *run*'s slice starts."""
    observer = OBSERVER
    return None if observer is None or run.observed is None else observer.slice_trace(run)


def flow_started(name: str) -> None:
    observer = OBSERVER
    if observer is not None:
        observer.flow_started(name)


def slice_started(run: FlowRun, stored: StoredFlow, store: Store, now: float) -> None:
    observer = OBSERVER
    if observer is not None:
        observer.slice_started(run, stored, store, now)


def slice_ended(run: FlowRun, status: str) -> None:
    observer = OBSERVER
    if observer is not None and run.observed is not None:
        observer.slice_ended(run, status)
        run.observed = None


def attempt_ended(run: FlowRun, event: Any) -> None:
    """*run* took *event*, the outcome of one of its calls (the executor calls this
    only while ``OBSERVER`` is set)."""
    observer = OBSERVER
    if observer is not None:
        observer.attempt_ended(run, event, run.records.get(event.call.position))


def store_in_use(store: Store) -> None:
    observer = OBSERVER
    if observer is not None:
        observer.store_in_use(store)


def due_count(store: Any) -> int | None:
    """How many flows of *store* are due now (at most :data:`DUE_CAP`: one indexed
    query, ``StoreAdmin.due``), or ``None`` when it cannot say (a store without
    ``due``, or one that failed: the error is logged at DEBUG, never raised)."""
    if not isinstance(store, StoreAdmin):
        return None
    try:
        return len(store.due(cast("Store", store).clock.time(), DUE_CAP))
    except Exception:
        logging.getLogger("crux_gen").debug("counting the due flows failed", exc_info=True)
        return None


def observed_calls(
    inner: Callable[[Call], Event | Any],
) -> Callable[[Any, Call], Event | Any]:
    """How ``Calls`` runs a call for a run: *inner* alone, or through the observer
    in place when the ``Calls`` is made."""
    observer = OBSERVER
    if observer is None:
        return lambda _run, call: inner(call)
    attempt = observer.attempt
    return lambda run, call: attempt(run, call, inner)


schedules.TICK_STARTED.append(flow_started)  # (a schedule's tick creates flows too)
