"""``ReaderListener``: the one ``LISTEN`` connection of a ``PostgresStore`` in a
process, shared by every reader waiting on a flow's events and streams
(``get_event(..., timeout=)``, ``read_stream``: ``caps.StreamWakeups``).

A statement that changes an event, stores a stream entry or ends a flow that
published any calls ``pg_notify('crux_published', <flow id>)`` (``Dialect.notify``;
delivered at commit; not the workers' wake channel: a stream write wakes no idle
worker). A thread, started by the first reader, listens on its own connection
and wakes the ``FlowWatch`` of each reader waiting on that flow; readers read
again when woken, and every ``reader_poll`` seconds anyway (the fallback: a lost
connection, a missed notification, the end of a flow that published nothing).
After the connection is made, or made again after it was lost, every reader is
woken once: a value stored while nobody listened is read then.
The thread stops when the store is closed; a process forked from one that had it
starts one of its own (it never touches its parent's connection).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from .postgres_schema import PUBLISH_CHANNEL

#: How the listening connection shows in ``pg_stat_activity.application_name``.
APPLICATION_NAME = "crux_gen readers"
#: How long the listener blocks between looks at whether it was stopped (seconds).
TICK = 0.1
#: The longest wait between attempts to listen again after a lost connection.
MAX_BACKOFF = 5.0

Conn = psycopg.Connection[tuple[Any, ...]]


class FlowWatch:
    """One reader's registration for news of one flow (``caps.FlowWatch``)."""

    __slots__ = ("_event", "flow_id")

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until news of the flow came since the last ``wait`` returned (or
        since the watch began), or *timeout* seconds pass; ``True`` when woken."""
        woken = self._event.wait(timeout)
        self._event.clear()  # (news after this: the next wait returns at once)
        return woken


class ReaderListener:
    """The listening thread and the readers it wakes, by flow id."""

    def __init__(self, connect: Callable[[], Conn], where: str) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._watches: dict[str, set[FlowWatch]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._where = where
        #: How many times the listening connection was made (tests, debugging).
        self.connections = 0
        #: Whether the thread listens right now.
        self.listening = False

    @contextlib.contextmanager
    def watch(self, flow_id: str) -> Iterator[FlowWatch]:
        """A ``FlowWatch`` of *flow_id* while the block runs; the thread starts
        with the first one."""
        watch = FlowWatch(flow_id)
        with self._lock:
            self._watches.setdefault(flow_id, set()).add(watch)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"crux_gen readers {self._where}", daemon=True
                )
                self._thread.start()
        try:
            yield watch
        finally:
            with self._lock:
                watching = self._watches.get(flow_id)
                if watching is not None:
                    watching.discard(watch)
                    if not watching:
                        del self._watches[flow_id]

    def stop(self) -> None:
        """Stop the thread (it closes its connection) and wake every reader."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5 * TICK)
        self._wake_all()

    def _wake(self, flow_id: str) -> None:
        with self._lock:
            for watch in self._watches.get(flow_id, ()):
                watch.wake()

    def _wake_all(self) -> None:
        with self._lock:
            for watching in self._watches.values():
                for watch in watching:
                    watch.wake()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {PUBLISH_CHANNEL}".encode())
                    self.connections += 1
                    self.listening, backoff = True, 0.1
                    self._wake_all()  # what was stored while nobody listened
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=TICK):
                            self._wake(notice.payload)
            except psycopg.Error:
                pass  # lost (or never made): readers poll meanwhile; listen again
            finally:
                self.listening = False
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


def listener_connection(url: str, connect_timeout: float) -> Conn:
    """A connection of the listener's own (autocommit; not the pool's), with TCP
    keepalives: a connection the network dropped without a word errs within a
    minute or so, and is made again, rather than listening to nothing forever."""
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, int(connect_timeout)),
        application_name=APPLICATION_NAME,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
