"""The calls of step functions, off the executor's loop.

The loop hands :class:`Calls` the calls its writes cleared; each one's result (a
``Returned`` or ``Raised`` event) comes back on one queue, which the loop reads
when it has nothing to write. A call alone runs on the loop's own thread when the
executor says so (``inline``: nothing else could run meanwhile, so a handoff buys
nothing); the others run on a pool of threads (``CORE.md``: ``InlineSteps`` and
``PoolSteps``, one class with both ways).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from .effects import Call, Event, Raised, Returned

K = TypeVar("K")


class Crash:
    """A step function raised a ``BaseException`` (an exit, an interrupt) on the
    pool: the loop raises it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Calls(Generic[K]):
    """Run calls, each for a key (its flow's run), on *pool* (or a pool of
    *threads*, made when first needed); with *inline*, a call alone with none in
    flight runs on the calling thread."""

    def __init__(
        self, threads: int, *, pool: ThreadPoolExecutor | None = None, inline: bool = True
    ) -> None:
        self.threads = threads
        self.inline = inline
        self.in_flight = 0
        self._pool = pool
        self._own_pool = pool is None
        self._results: queue.SimpleQueue[tuple[K, Event | Crash] | None] = queue.SimpleQueue()

    def submit(self, calls: Sequence[tuple[K, Call]]) -> None:
        """Start *calls*; their results come back from :meth:`results`."""
        self.in_flight += len(calls)
        if self.inline and len(calls) == 1 and self.in_flight == 1:
            key, call = calls[0]
            self._results.put((key, _call(call)))  # an exit or an interrupt: raised here
            return
        if calls and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="crux-step")
        for key, call in calls:
            assert self._pool is not None
            self._pool.submit(self._on_pool, key, call)

    def _on_pool(self, key: K, call: Call) -> None:
        try:
            self._results.put((key, _call(call)))
        except BaseException as exc:  # an exit or an interrupt in the step: the loop raises it
            self._results.put((key, Crash(exc)))

    def results(self, timeout: float | None) -> list[tuple[K, Event | Crash]]:
        """The results that are in, waiting up to *timeout* seconds (``None``:
        without end) for the first; none when the wait ran out or was poked."""
        try:
            found = self._results.get(timeout=timeout)
        except queue.Empty:
            return []
        answers: list[tuple[K, Event | Crash]] = []
        while found is not None:  # (None: poked, the caller has something to do)
            answers.append(found)
            try:
                found = self._results.get_nowait()
            except queue.Empty:
                break
        self.in_flight -= len(answers)
        return answers

    def poke(self) -> None:
        """End a wait for results in progress, if any (from any thread)."""
        self._results.put(None)

    def close(self) -> None:
        """Let the pool go (when this made it), once its calls returned."""
        pool, self._pool = self._pool, None
        if pool is not None and self._own_pool:
            pool.shutdown(wait=True)


def _call(call: Call) -> Event:
    """Run a step's or condition's function: its value or its error."""
    try:
        return Returned(call.fn(), call)
    except Exception as exc:
        return Raised(exc, call)
