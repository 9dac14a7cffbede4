"""The worker: advance every flow that is due, once or until stopped.

>>> worker = Worker(store=SQLiteStore("crux.db"), flows=[onboarding])
>>> worker.run_once()                 # every due flow, once; how many ran
3
>>> worker.run_forever(poll="1s")     # until worker.stop(), from any thread or a signal handler

A flow is due when a signal it waits for is pending, its ``Suspend`` or
``WaitUntil`` deadline has passed (it then ends ``"expired"``), its ``Sleep``,
``WaitUntil`` re-check or retry backoff is up, or it is ``running`` with no live
lease (its runner crashed, or a worker stopped it at a command boundary). The
store finds those with one indexed query per batch; flows that are not due cost
nothing. Many workers, in threads or processes, may share one store: checking
that a flow is still due and claiming it is one atomic step, so each due flow is
run by one worker, and a flow another worker just advanced is left alone.

With ``concurrency=N`` (default 1) a worker advances up to N flows at the same
time on one loop (``executor.py``): step functions run in a pool of N threads, so
a slow call in one flow holds up no other, and each flow still runs under its own
lease, one step at a time. Due flows are claimed a batch at a time (one
transaction, one read for their histories), and the writes that became ready in
one round of the loop, from every flow, share one transaction: one fsync for many
steps, each step still durable before its flow's next call.

Logging goes to the ``crux_gen.worker`` logger: a line when it takes a flow in and
one when the flow leaves it (its id, name and new status; INFO, or WARNING when
the flow failed: ``slicelog.py``), an ERROR line for a flow the worker cannot run.
Durations are written compactly (``5m``, ``1h30m``).
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from . import observe
from .calls import Calls
from .durations import Duration, format_duration, to_duration
from .errors import (
    FlowNotRegisteredError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    NonDeterminismError,
    RecordConflictError,
    StoreError,
)
from .executor import Executor
from .flow import Flow, default_registry
from .hand import _release
from .limits import Limit, make_gate
from .records import StoredFlow
from .results import FlowResult
from .retention import BATCH as RETENTION_BATCH
from .retention import Retention, retained_flows
from .runner import ALL_CONCURRENCY, find_flow
from .schedules import fire_schedules
from .stores.base import Store, StoreAdmin
from .stores.caps import Wakeups, caps_of, missing_members

log = logging.getLogger("crux_gen.worker")


class Worker:
    """Advance the due flows of *store*, finding their code among *flows*, then in
    the registry of ``@flow``.

    >>> Worker(store=store, flows=[onboarding]).run_once()
    1

    *concurrency* is how many flows run at the same time (threads for their step
    functions; their writes share commits); with 1, the default, flows run one
    after the other in the calling thread. *batch* is how many due flows one query
    fetches. A flow the worker cannot run
    (its name is not registered here, its code diverged from its history, or an
    unexpected error) is logged and left alone for *skip_for* (by the store's
    clock), or until the worker is restarted, so it never blocks the others.

    *not_registered_hint* is the fix the log line gives for a flow whose name is
    registered nowhere here (``{name}`` is replaced by that name); the default,
    :attr:`FlowNotRegisteredError.PYTHON_HINT`, fits a worker started from Python
    ("import the module that defines @flow(...) or pass flows=[...]").

    Each pass also deletes the old finished flows of the flows with a
    ``retention``, at most *retention_batch* a pass (``crux_gen.retention``).

    Bad arguments are ``InvalidTypeError`` / ``InvalidValueError`` (a ``CruxError``
    that is also a ``TypeError`` / ``ValueError``) naming the value.
    """

    def __init__(
        self,
        store: Store,
        flows: Iterable[Flow[Any]] | None = None,
        *,
        concurrency: int = 1,
        batch: int = 100,
        skip_for: Duration = "5m",
        not_registered_hint: str | None = None,
        retention_batch: int = RETENTION_BATCH,
    ) -> None:
        if missing_members(store, Store):
            raise InvalidTypeError(
                "Worker store", store, "is not a store; give SQLiteStore(path) or MemoryStore()"
            )
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise InvalidTypeError("Worker batch", batch, "is not an int; give an int of 1 or more")
        if batch < 1:
            raise InvalidValueError("Worker batch", batch, "must be an int of 1 or more")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise InvalidTypeError(
                "Worker concurrency", concurrency, "is not an int; give an int of 1 or more"
            )
        if concurrency < 1:
            raise InvalidValueError(
                "Worker concurrency", concurrency, "must be an int of 1 or more"
            )
        if not_registered_hint is not None and not isinstance(not_registered_hint, str):
            raise InvalidTypeError(
                "Worker not_registered_hint", not_registered_hint, "is not a str; give a str"
            )
        self.store = store
        self.flows: tuple[Flow[Any], ...] = _flows(flows)
        self.batch = batch
        self.concurrency = concurrency
        # How many steps of one All run at once: the worker's threads, or the default.
        self._all_threads = concurrency if concurrency > 1 else ALL_CONCURRENCY
        #: Transactions this worker wrote, and the writes they held (``writes /
        #: batches``: how many writes, of its flows, shared one transaction).
        self.batches = 0
        self.writes = 0
        self._advanced = 0  # flows advanced in the pass in progress
        self._executor: Executor | None = None  # the pass in progress
        self._claim_now = True  # claim at the next top-up (else once enough slots are free)
        self._poll = 1.0  # how long a pass waits for a result at most before claiming again
        self._calls: Calls[Any] | None = None  # kept while run_forever runs
        self.skip_for: timedelta = to_duration(skip_for, what="Worker skip_for")
        self.not_registered_hint = not_registered_hint
        self._stopping = False
        # SimpleQueue.put is reentrant, so stop() and wake() are safe in a signal handler.
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._skipped: dict[str, float] = {}  # flow id -> store-clock time to try it again
        self._skip_lock = threading.Lock()
        self._random = random.Random()
        self._gate = make_gate(lambda name: _limits_of(self.flows, name))
        self.retention = Retention(retention_batch)

    # -- control, from any thread --------------------------------------------------

    def stop(self) -> None:
        """Make ``run_forever`` (or a ``run_once`` in progress) return: the flow in
        hand stops at its next command boundary (the step running finishes and is
        recorded), its lease is released and it stays due for the next worker.

        Safe to call from any thread and from a signal handler. Called before
        ``run_forever`` starts, that call returns at once.
        """
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        """Start ``run_forever``'s next pass now rather than after the poll interval
        (for example right after ``signal_flow`` in the same process)."""
        self._wakeups.put(None)
        executor = self._executor
        if executor is not None:  # a pass in progress claims now
            self._claim_now = True
            executor.poke()

    # -- running -------------------------------------------------------------------

    def run_once(self) -> int:
        """Advance every flow that is due now, each at most once; return how many
        ran (including those that parked again)."""
        try:
            return self._run_pass()
        finally:
            self._stopping = False
            self._close_pool()

    def run_forever(self, poll: Duration = "1s") -> None:
        """Run a pass every *poll* (``"1s"``, ``"500ms"``, seconds) until ``stop()``.

        An error of the store (a pass that could not even query due flows) is
        logged and the next pass tries again.
        """
        every = to_duration(poll, what="Worker.run_forever poll")
        period = every.total_seconds()
        self._poll = period
        names = ", ".join(sorted(f.name for f in self.flows)) or "the @flow registry"
        log.info(
            "worker started on %s, polling every %s, concurrency %d; flows: %s",
            describe_store(self.store), format_duration(every), self.concurrency, names,
        )  # fmt: skip
        _warn_if_new(self.store)
        listening = threading.Event()
        if caps_of(self.store).wakeups:  # PostgreSQL: a signal wakes this worker at once (NOTIFY)
            listen = cast(Wakeups, self.store).wait_for_wake
            listening.set()
            threading.Thread(
                target=self._listen,
                args=(listen, listening),
                name="crux-worker-listen",
                daemon=True,
            ).start()
        failures = 0
        try:
            while not self._stopping:
                wait = period
                try:
                    self._run_pass()
                    failures = 0
                except StoreError as exc:
                    # The store is away (a full disk, a lost server): back off, doubling
                    # the wait up to 30 s (or the poll, if longer), and carry on.
                    failures += 1
                    wait = min(period * 2 ** (failures - 1), max(period, 30.0))
                    log.warning("%s; trying again in %s", exc, format_duration(wait))
                except Exception:
                    log.exception("worker pass failed; trying again in %s", format_duration(every))
                if self._stopping:
                    break
                self._wait(wait)
        finally:
            listening.clear()
            self._stopping = False
            self._close_pool()
            log.info("worker stopped")

    def _listen(self, wait_for_wake: Callable[[float], bool], listening: threading.Event) -> None:
        """Turn the store's announcements into wake-ups while the worker runs; only a
        hint: a missed one costs at most one poll."""
        while listening.is_set():
            try:
                if wait_for_wake(1.0):
                    self._wakeups.put(None)
            except Exception:  # the store logs and reconnects; polling goes on meanwhile
                log.debug("waiting for a wake-up failed", exc_info=True)
                time.sleep(1.0)

    def _wait(self, seconds: float) -> None:
        try:
            self._wakeups.get(timeout=seconds)
        except queue.Empty:
            return
        while True:  # several wake-ups make one pass
            try:
                self._wakeups.get_nowait()
            except queue.Empty:
                return

    def _now(self) -> float:
        return self.store.clock.time()

    def _should_stop(self) -> bool:
        return self._stopping

    def _run_pass(self) -> int:
        """One pass: claim due flows into free slots (one transaction a batch) and
        run them on one executor until nothing is due and every flow in hand has
        stopped; every flow at most once. A store error ends the pass once the
        flows in hand stopped."""
        self._advanced = 0
        self._claim_now = True
        tried: set[str] = set()
        observe.store_in_use(self.store)  # (the due flows an instrumentation counts)
        _chores(self)
        if self._calls is None:  # kept while run_forever runs: its threads
            self._calls = Calls(self._all_threads, inline=self.concurrency == 1)
        executor = Executor(
            self.store,
            concurrency=self._all_threads,
            should_stop=self._should_stop,
            calls=self._calls,
            on_end=self._ended,
            tick=self._poll,
        )
        self._executor = executor
        try:
            while True:
                claimed = self._top_up(executor, tried)
                if executor.runs:
                    executor.step()
                elif not claimed:
                    break  # nothing in hand, nothing more due
        except BaseException:  # interrupted: the flows in hand let go of their leases
            executor.let_go()
            raise
        finally:
            self._executor = None
            executor.close()
            self.batches += executor.batches
            self.writes += executor.writes
        if executor.failure is not None:
            raise executor.failure
        return self._advanced

    def _top_up(self, executor: Executor, tried: set[str]) -> bool:
        """Claim due flows into *executor*'s free slots (none once stopping or after
        a store error); flows tried in this pass and skipped ones are left out.
        Whether any was claimed."""
        free = self.concurrency - len(executor.roots)
        if free <= 0 or executor.failure is not None or self._stopping:
            return False
        if not self._claim_now and executor.roots and free < max(1, self.concurrency // 4):
            return False  # a claim per quarter of the slots freed, not per flow ended
        self._claim_now = False
        now = self._now()
        self._forget_skips(now)
        with self._skip_lock:
            exclude = tried | self._skipped.keys()
        try:
            claimed = self.store.claim_due(
                now, min(free, self.batch), secrets.token_hex(8), exclude=exclude, gate=self._gate
            )
        except StoreError as exc:
            executor.failure = exc
            return False
        self._claim_now = len(claimed) == min(free, self.batch)  # (fewer: none more is due)
        for stored in claimed:
            tried.add(stored.id)
            _take(self, executor, stored)
        return bool(claimed)

    def _forget_skips(self, now: float) -> None:
        with self._skip_lock:
            self._skipped = {k: t for k, t in self._skipped.items() if t > now}

    def _close_pool(self) -> None:
        calls, self._calls = self._calls, None
        if calls is not None:
            calls.close()

    def _ended(
        self, stored: StoredFlow, result: FlowResult | None, error: Exception | None
    ) -> None:
        """A flow this worker took stopped with *result*, or its run failed with
        *error*: log it (and skip a flow it cannot run for ``skip_for``)."""
        if error is None:
            assert result is not None
            self._advanced += 1
            return  # (its slice's end is logged: ``slicelog.py``)
        if not_advanced(self, stored.id, error):
            self._skip(stored.id)

    def _skip(self, flow_id: str) -> None:
        with self._skip_lock:
            self._skipped[flow_id] = self._now() + self.skip_for.total_seconds()

    def __repr__(self) -> str:
        names = [f.name for f in self.flows]
        return (
            f"Worker({self.store!r}, flows={names!r}, concurrency={self.concurrency}, "
            f"batch={self.batch})"
        )


def _chores(worker: Worker) -> None:
    """Before a pass claims: start the flows of the due ticks of the scheduled flows
    *worker* registers (*flows*, else the registry's; ``schedules.py``), and delete
    the old finished flows of those with a retention (``retention.py``)."""
    flows = worker.flows or [default_registry.get(n) for n in default_registry.names()]
    fire_schedules(worker.store, flows, worker._now())
    worker.retention.run(worker.store, retained_flows(worker.flows), worker._now())


def _take(worker: Worker, executor: Executor, stored: StoredFlow) -> None:
    """A flow *worker* claimed, into *executor*; one it cannot run is reported."""
    owner = stored.lease_owner
    assert owner is not None
    try:
        flow = find_flow(worker.flows, stored)
    except FlowNotRegisteredError as exc:
        _release(worker.store, stored.id, owner)  # never taken: no run to let it go
        worker._ended(stored, None, exc)
        return
    try:
        executor.take(flow, stored, owner)  # (lets go of the lease when it fails)
    except Exception as exc:
        worker._ended(stored, None, exc)


def _limits_of(flows: tuple[Flow[Any], ...], name: str) -> tuple[Limit, ...]:
    """The ``Limit``s of the flow named *name* (none when it is unknown here)."""
    found = next((f for f in flows if f.name == name), None)
    if found is None:
        try:
            found = default_registry.get(name)
        except FlowNotRegisteredError:
            return ()
    return found.limits


def not_advanced(worker: Worker, flow_id: str, exc: Exception) -> bool:
    """Log why *worker* could not advance flow *flow_id* (*exc*); whether to skip
    it for ``skip_for`` (the cause is the flow's own: its code, its history)."""
    if isinstance(exc, FlowNotRegisteredError):
        if worker.not_registered_hint is not None:
            exc = exc.with_hint(worker.not_registered_hint)
        known = sorted({f.name for f in worker.flows} | set(default_registry.names()))
        log.error(
            "%s (registered here: %s). Skipping this flow for %s",
            exc, ", ".join(map(repr, known)) or "none", format_duration(worker.skip_for),
            extra={"flow_id": flow_id, "flow_name": exc.name},
        )  # fmt: skip
    elif isinstance(exc, NonDeterminismError):
        log.error(
            "%s. Skipping this flow for %s", exc, format_duration(worker.skip_for),
            extra={"flow_id": flow_id, "flow_name": exc.name},
        )  # fmt: skip
    elif isinstance(exc, LeaseLostError):
        log.warning("%s", exc, extra={"flow_id": flow_id})
        return False
    elif isinstance(exc, RecordConflictError):
        # This flow's history, not the store: the others go on.
        log.error(
            "%s. Skipping this flow for %s", exc, format_duration(worker.skip_for),
            extra={"flow_id": flow_id},
        )  # fmt: skip
    else:
        log.error(
            "flow %s: the worker could not advance it; skipping it for %s",
            flow_id, format_duration(worker.skip_for), extra={"flow_id": flow_id},
            exc_info=exc,
        )  # fmt: skip
    return True


def _flows(flows: object) -> tuple[Flow[Any], ...]:
    """*flows* as a tuple of ``Flow``; ``InvalidTypeError`` naming what is not one."""
    if flows is None:
        return ()
    if isinstance(flows, Flow):
        raise InvalidTypeError(
            "Worker flows", flows, f"is one Flow, not a list; give flows=[{flows.name}]"
        )
    if isinstance(flows, str | bytes) or not isinstance(flows, Iterable):
        raise InvalidTypeError("Worker flows", flows, "is not a list of Flow; give flows=[...]")
    given = tuple(flows)
    for item in given:
        if not isinstance(item, Flow):
            raise InvalidTypeError(
                "Worker flows item", item, "is not a Flow; give functions decorated with @flow"
            )
    return given


def describe_store(store: Store) -> str:
    """A store for a log line: ``SQLiteStore('crux.db', lease_ttl 30s)``."""
    where = caps_of(store).where
    ttl = store.lease_ttl
    return f"{where}, lease_ttl {format_duration(ttl)}" if isinstance(ttl, timedelta) else where


def _warn_if_new(store: Store) -> None:
    """Log a WARNING when opening *store* created it and it holds no flow: a worker
    on a mistyped path would otherwise poll an empty file forever, silently."""
    caps = caps_of(store)
    if caps.created and not cast(StoreAdmin, store).list_flows(limit=1):
        log.warning(
            "%s named no file: opening it created a new, empty store; if that path is "
            "mistyped, this worker polls an empty file forever",
            caps.where,
        )
