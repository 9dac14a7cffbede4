"""Metrics: counters of flows and steps, histograms of step duration and schedule
lag, the gauge of due flows (``API.md``, "Observability"; the README lists them).

Every instrument carries ``crux.flow.name`` (the gauge: ``crux.store``, the store it
counts, as counting due flows per name would read their rows). What they count:

- ``crux.flows.started``: flows this process created (``Flow.run`` of a new id,
  ``Flow.start``, a ``Child`` once its parent's write committed, a schedule's tick),
  never an existing flow a start found;
- ``crux.flows.finished`` (``status``): slices that ended the flow (``completed``,
  ``failed``, ``expired``, ``cancelled``);
- ``crux.steps`` (``outcome``): step attempts, by what the step's handler decided:
  ``ok`` (its result stored), ``retry`` (it raised and is tried again), ``failed``
  (it raised, or its result could not be stored, and is not tried again); the same
  words as the DEBUG line of each attempt. A replayed step counts nothing;
- ``crux.step.duration`` (s): how long each attempt's function ran;
- ``crux.flow.schedule_lag`` (s): from when a claimed flow became due to its claim
  (:func:`due_since`), by the store's clock;
- ``crux.flows.due``: the due flows of each store this process runs flows of (at
  most ``observe.DUE_CAP`` counted), read when the SDK collects.

The process's own sums are also kept in a :class:`Tally`, which the dashboard's
``/metrics`` renders in Prometheus text (a ``MeterProvider``'s readers are fixed
when it is made, so it cannot be read from outside).
"""

from __future__ import annotations

import bisect
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Observation

from .. import observe
from .._version import __version__
from ..records import COMPLETED, FAILED, PENDING, RETRYING
from ..status import FINISHED, Status
from ..stores.caps import caps_of
from ..stores.rules import any_names

if TYPE_CHECKING:
    from ..flowrun import FlowRun
    from ..records import StoredFlow, StoredRecord
    from ..stores.base import Store

log = logging.getLogger("crux_gen")

#: Bucket bounds (seconds) of the step durations: a call of a few ms to a minute.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: ... and of the schedule lag: a worker's poll (1 s) to an hour behind.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: A step's outcome by the record its handler decided to store of the attempt.
OUTCOMES = {COMPLETED: "ok", RETRYING: "retry", FAILED: "failed"}
_FINISHED = frozenset(s.value for s in FINISHED)

Labels = tuple[tuple[str, str], ...]


class Tally:
    """The sums of this process's counters and histograms since ``instrument()``,
    for the dashboard's ``/metrics``: thread-safe, a few dict updates a step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = {}
        #: (name, labels) -> [count per bucket (the last: above every bound), sum]
        self.histograms: dict[tuple[str, Labels], list[Any]] = {}
        self.buckets: dict[str, Sequence[float]] = {}

    def add(self, name: str, labels: Labels) -> None:
        key = (name, labels)
        with self.lock:
            self.counters[key] = self.counters.get(key, 0.0) + 1

    def record(self, name: str, labels: Labels, value: float, bounds: Sequence[float]) -> None:
        key = (name, labels)
        with self.lock:
            found = self.histograms.get(key)
            if found is None:
                self.buckets[name] = bounds
                found = self.histograms[key] = [[0] * (len(bounds) + 1), 0.0]
            found[0][bisect.bisect_left(bounds, value)] += 1
            found[1] += value

    def snapshot(self) -> tuple[dict[tuple[str, Labels], float], dict[tuple[str, Labels], Any]]:
        """A copy of the counters and the histograms (``[counts, sum]``)."""
        with self.lock:
            counters = dict(self.counters)
            histograms = {k: [list(v[0]), v[1]] for k, v in self.histograms.items()}
        return counters, histograms


class Metrics:
    """The instruments of *meter_provider* (``None``: OpenTelemetry's global one)."""

    def __init__(self, meter_provider: Any = None) -> None:
        provider = meter_provider
        if provider is None:
            provider = otel_metrics.get_meter_provider()
        meter = provider.get_meter("crux_gen", __version__)
        self.started = meter.create_counter(
            "crux.flows.started", unit="{flow}", description="Flows this process created"
        )
        self.finished = meter.create_counter(
            "crux.flows.finished", unit="{flow}", description="Flows that finished, by status"
        )
        # Counted in the tally alone and read from it at each collection: an SDK
        # counter's add (its attributes hashed, a measurement made) on every attempt
        # costs a durable step several µs more than this asynchronous one (the same
        # cumulative sum to every exporter).
        meter.create_observable_counter(
            "crux.steps", callbacks=[self.observe_steps], unit="{attempt}",
            description="Step attempts, by outcome",
        )  # fmt: skip
        self.duration = meter.create_histogram(
            "crux.step.duration", unit="s", description="How long a step attempt ran",
            explicit_bucket_boundaries_advisory=STEP_BUCKETS,
        )  # fmt: skip
        self.lag = meter.create_histogram(
            "crux.flow.schedule_lag", unit="s", description="From due to claimed",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )  # fmt: skip
        meter.create_observable_gauge(
            "crux.flows.due", callbacks=[self.observe_due], unit="{flow}",
            description="Due flows in the stores this process runs flows of",
        )  # fmt: skip
        self.stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stores_lock = threading.Lock()
        self.tally = Tally()

    def flow_started(self, name: str) -> None:
        self.started.add(1, {"crux.flow.name": name})
        self.tally.add("crux.flows.started", (("crux.flow.name", name),))

    def slice_started(self, run: FlowRun, stored: StoredFlow, store: Store, now: float) -> None:
        self.store_in_use(store)
        since = due_since(stored)
        if since is not None and since <= now:
            name = stored.name
            self.lag.record(now - since, {"crux.flow.name": name})
            self.tally.record(
                "crux.flow.schedule_lag", (("crux.flow.name", name),), now - since, LAG_BUCKETS
            )

    def slice_ended(self, run: FlowRun, status: str) -> None:
        if status in _FINISHED:
            name = run.flow.name
            self.finished.add(1, {"crux.flow.name": name, "status": status})
            labels = (("crux.flow.name", name), ("status", status))
            self.tally.add("crux.flows.finished", labels)

    def attempt_ended(self, run: FlowRun, event: Any, record: StoredRecord | None) -> None:
        """A step's attempt and what its handler made of it (a condition's call is
        not a step: not counted)."""
        call = event.call
        if call.kind != "step":
            return
        name = run.flow.name
        outcome = step_outcome(event, record)
        self.tally.add("crux.steps", (("crux.flow.name", name), ("outcome", outcome)))
        took = event.took
        if took is not None:
            self.duration.record(took, {"crux.flow.name": name})
            self.tally.record("crux.step.duration", (("crux.flow.name", name),), took, STEP_BUCKETS)

    def observe_steps(self, options: CallbackOptions) -> Iterable[Observation]:
        """The ``crux.steps`` counter's callback: the tally's sums so far (kept after
        ``uninstrument()``, as a counter's are)."""
        counters, _ = self.tally.snapshot()
        return [
            Observation(value, dict(labels))
            for (name, labels), value in counters.items()
            if name == "crux.steps"
        ]

    def store_in_use(self, store: Store) -> None:
        if store not in self.stores:
            with self._stores_lock:
                self.stores.add(store)

    def observe_due(self, options: CallbackOptions) -> Iterable[Observation]:
        """The gauge's callback: the due flows of each store in use (never raises:
        a store that cannot answer is left out of this collection)."""
        if not self.in_place():
            return []
        with self._stores_lock:
            stores = list(self.stores)
        found = []
        for store in stores:
            count = observe.due_count(store)
            if count is not None:
                found.append(Observation(count, {"crux.store": caps_of(store).where}))
        return found

    def in_place(self) -> bool:
        """Whether these are the metrics of the observer in place (after
        ``uninstrument()`` or another ``instrument()``, the gauge reports nothing)."""
        observer = observe.OBSERVER
        return observer is not None and getattr(observer, "metrics", None) is self


def step_outcome(event: Any, record: StoredRecord | None) -> str:
    """``ok``, ``retry`` or ``failed``: what the handler decided to store of the
    attempt *event* (``Returned`` or ``Raised``); with no record of it (the run
    failed meanwhile), by the event: a value returned is ``ok``."""
    if record is not None and record.attempts == event.call.attempt:
        outcome = OUTCOMES.get(record.state)
        if outcome is not None:
            return outcome
    return "ok" if type(event).__name__ == "Returned" else "failed"


def due_since(stored: StoredFlow) -> float | None:
    """When the flow *stored* (as its claim read it) became due, or ``None`` when
    that is not a wait for a runner:

    - ``pending`` (``Flow.start``, a schedule's tick): its due time ``wake_at`` (the
      start, a delay or debounce run out, an exclusive key freed), or the end of a
      rate limit's wait when later. A wait for a concurrency limit's slot counts
      (the store keeps no time of the slot freeing);
    - ``suspended``: the earliest of its timer (``wake_at``: a sleep, a retry
      backoff, a child that finished) and the arrival (``created_at``) of the first
      pending signal it waits for;
    - ``running``: ``None``; created running (``Flow.run``, a child its parent's
      loop adopts, the next run of ``ContinueAsNew``) or taken back from a runner
      that died, it never waited in the queue.
    """
    status = stored.status
    if status == Status.PENDING:
        due = stored.wake_at
        if due is not None and stored.blocked_until is not None:
            due = max(due, stored.blocked_until)
        return due
    if status != Status.SUSPENDED:
        return None
    times = [] if stored.wake_at is None else [stored.wake_at]
    names: list[str] | None = []
    if stored.wait_kind == "suspend":
        names = [stored.waiting_for or ""]
    elif stored.wait_kind == "any":
        names = any_names(stored.waiting_for)
    if names != []:
        times += [
            s.created_at
            for s in stored.signals
            if s.state == PENDING and (names is None or s.name in names)
        ]
    return min(times) if times else None
