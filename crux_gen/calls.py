"""The calls of step functions, off the executor's loop.

The loop hands :class:`Calls` the calls its writes cleared; each one's result (a
``Returned`` or ``Raised`` event) comes back on one queue, which the loop reads
when it has nothing to write. A call runs on a pool of threads fed by one queue
(no future, lock or condition per call: a fast step's handoff costs a few
microseconds), or, alone with none in flight when nothing else could run
meanwhile (one flow, or a worker of concurrency 1), on the loop's own thread
(``CORE.md``: ``InlineSteps`` and ``PoolSteps``, one class with both ways). A
call of another flow never waits for a slow step: with concurrency N > 1 every
call goes to the pool.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from . import observe
from .effects import Call, Event, Raised, Returned
from .stepinfo import in_step

K = TypeVar("K")
log = logging.getLogger("crux_gen")

#: How long the first result may take before calls still waiting for a thread get
#: one of their own (seconds).
GRACE = 0.001


class Crash:
    """A step function raised a ``BaseException`` (an exit, an interrupt): the loop
    raises it once the calls in flight returned."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Calls(Generic[K]):
    """Run calls, each for a key (its flow's run), on up to *threads* threads
    (one at first, more when calls wait for one: ``_grow``); with *inline*, a call
    alone with none in flight runs on the calling thread."""

    def __init__(self, threads: int, *, inline: bool = True) -> None:
        self.threads = threads
        self.inline = inline
        self.in_flight = 0
        self._todo: queue.SimpleQueue[tuple[K, Call] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[K, Event | Crash] | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        # Read once: each call timed (for the DEBUG line per step attempt, or an
        # observer's span and histogram: ``observe.py``) or not; observed or not;
        # a step's call with ``current_step()`` set (``stepinfo.py``).
        timed = observe.OBSERVER is not None or log.isEnabledFor(logging.DEBUG)
        self._run = in_step(observe.observed_calls(_timed if timed else _run))

    def submit(self, calls: Sequence[tuple[K, Call]]) -> list[tuple[K, Event | Crash]]:
        """Start *calls*; their results come back from :meth:`results`, but that of
        a call run inline, which is returned (it has ended: nothing is in flight)."""
        if not calls:  # (a round that cleared none: no thread for it)
            return []
        if self.inline and len(calls) == 1 and self.in_flight == 0:
            key, call = calls[0]
            return [(key, self._run(key, call))]
        self.in_flight += len(calls)
        if not self._started:
            self._start_thread()
        for item in calls:
            self._todo.put(item)
        return []

    def _grow(self) -> None:
        """Calls wait with no thread free to take them: a thread for each (up to
        *threads*). Threads start when calls wait, not when they are submitted: fast
        calls keep one or two threads busy (each handoff to a sleeping thread costs
        more than such a call), slow ones get a thread each after ``GRACE``."""
        for _ in range(min(self._todo.qsize(), self.threads - len(self._started))):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"crux-step-{len(self._started)}", daemon=True
        )
        self._started.append(thread)
        thread.start()

    def _serve(self) -> None:
        while (item := self._todo.get()) is not None:
            key, call = item
            self._results.put((key, self._run(key, call)))

    def results(self, timeout: float | None, gather: float = 0.0) -> list[tuple[K, Event | Crash]]:
        """The results that are in, waiting up to *timeout* seconds (``None``:
        without end) for the first, then up to *gather* seconds more for the other
        calls in flight (their records then share one write); none when the wait
        ran out or was poked."""
        try:
            found = self._first(timeout)
        except queue.Empty:
            return []
        answers: list[tuple[K, Event | Crash]] = []
        until = time.monotonic() + gather if gather > 0 else 0.0
        while found is not None:  # (None: poked, the caller has something to do)
            answers.append(found)
            try:
                found = self._results.get_nowait()
            except queue.Empty:
                left = until - time.monotonic()
                if len(answers) >= self.in_flight or left <= 0:
                    break
                try:
                    found = self._results.get(timeout=left)
                except queue.Empty:
                    break
        self.in_flight -= len(answers)
        return answers

    def _first(self, timeout: float | None) -> tuple[K, Event | Crash] | None:
        """The first result, waiting up to *timeout*; after ``GRACE`` with none,
        calls still waiting for a thread get one (a call that waits for another
        flow's call never waits for a thread held by the first)."""
        if len(self._started) < self.threads and (timeout is None or timeout > GRACE):
            try:
                return self._results.get(timeout=GRACE)
            except queue.Empty:
                self._grow()
            timeout = None if timeout is None else timeout - GRACE
        return self._results.get(timeout=timeout)

    def poke(self) -> None:
        """End a wait for results in progress, if any (from any thread)."""
        self._results.put(None)

    def close(self) -> None:
        """Stop the threads once the calls given them returned."""
        started, self._started = self._started, []
        for _ in started:
            self._todo.put(None)
        for thread in started:
            thread.join()


def _run(call: Call) -> Event | Crash:
    """Call *call*'s function: its value, its error, or a crash."""
    try:
        return Returned(call.fn(), call)
    except Exception as exc:
        return Raised(exc, call)
    except BaseException as exc:  # an exit or an interrupt in the step
        return Crash(exc)


def _timed(call: Call) -> Event | Crash:
    """:func:`_run`, with the seconds the call took in its event."""
    started = time.perf_counter()
    try:
        value = call.fn()
    except Exception as exc:
        return Raised(exc, call, time.perf_counter() - started)
    except BaseException as exc:
        return Crash(exc)
    return Returned(value, call, time.perf_counter() - started)
