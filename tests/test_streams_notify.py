"""Readers on PostgreSQL are woken by ``NOTIFY``: ``read_stream`` and ``get_event``
in this process get what another process (or store) stores at once, through one
listening connection per store and process, which comes back after it is lost and
stops with ``store.close()``.

The reading store's ``reader_poll`` (the fallback poll) is 30 s and a value is
wanted within 10 s: only a wake-up can do that (but in the two tests of the
fallback itself, which set it to 0.2 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    Child,
    FlowContext,
    FlowNotFoundError,
    Registry,
    Suspend,
    cancel_flow,
    flow,
    get_event,
    get_flow,
    read_stream,
    resume,
    signal_flow,
)
from tests import pg

REPO = Path(__file__).resolve().parents[1]
LISTENERS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'crux_gen readers'"
#: Longer than any test waits: a value that comes in time came by NOTIFY.
NO_POLL = 30.0
IN_TIME = 10.0

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from crux_gen import PostgresStore, Step, flow, write_stream

    def wait_for(path):
        while not os.path.exists(path):
            time.sleep(0.02)

    def tokens(go, n):
        wait_for(go)
        for i in range(n):
            write_stream("tok", i)
            time.sleep(0.2)
        return n

    @flow("nt-live")
    def live(ctx):
        n = yield Step("gen", lambda: tokens(ctx.input["go"], 3))
        yield Step("hold", lambda: wait_for(ctx.input["end"]))
        ctx.set_event("answer", n * 14)
        return n

    if __name__ == "__main__":
        store = PostgresStore(sys.argv[1], schema=sys.argv[2])
        go, end = sys.argv[3], sys.argv[4]
        print(live.run(input={"go": go, "end": end}, store=store, flow_id="nt-1").status)
        store.close()
    """
)


def listeners(server: pg.Server) -> set[int]:
    return {pid for (pid,) in server.execute(LISTENERS)}


def until(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    give_up = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < give_up, what
        time.sleep(0.02)
    return found


class Reader(threading.Thread):
    """``read_stream`` on a thread: each value with when it came, and when it ended."""

    def __init__(self, flow_id: str, store: Any, key: str = "tok") -> None:
        super().__init__(daemon=True)
        self.args_ = (flow_id, key, store)
        self.got: list[tuple[Any, float]] = []
        self.ended: float | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        flow_id, key, store = self.args_
        try:
            for value in read_stream(flow_id, key, store=store):
                self.got.append((value, time.monotonic()))
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()

    @property
    def values(self) -> list[Any]:
        return [value for value, _ in self.got]


@pytest.fixture
def store(pg_server: pg.Server, pg_schema: str) -> Iterator[Any]:
    s = pg.store_class()(pg_server.url, schema=pg_schema)
    s.reader_poll = NO_POLL
    yield s
    s.close()


@pytest.fixture
def sender(pg_server: pg.Server, pg_schema: str, store: Any) -> Iterator[Any]:
    """Another store on the same schema: another pool, as another host's."""
    s = pg.store_class()(pg_server.url, schema=pg_schema)
    yield s
    s.close()


def started(store: Any, *flow_ids: str) -> None:
    for flow_id in flow_ids:
        store.start(flow_id, "demo", "null", "me", store.clock.time())


def test_readers_here_get_what_another_process_writes_at_once(
    pg_server: pg.Server, pg_schema: str, store: Any, tmp_path: Path
) -> None:
    (tmp_path / "writer.py").write_text(WRITER)
    go, end = tmp_path / "go", tmp_path / "end"
    before = listeners(pg_server)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "writer.py"), pg_server.url, pg_schema, str(go), str(end)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def exists() -> bool:
            try:
                return get_flow("nt-1", store=store).status == "running"
            except FlowNotFoundError:
                return False

        until(exists, "the writer never started its flow")
        reader = Reader("nt-1", store)
        answer: list[tuple[Any, float]] = []
        asker = threading.Thread(
            target=lambda: answer.append(
                (get_event("nt-1", "answer", store=store, timeout=60), time.monotonic())
            ),
            daemon=True,
        )
        asker.start()
        until(lambda: listeners(pg_server) - before, "no listener LISTENs")
        time.sleep(0.3)  # both readers are past their reads, waiting
        go.touch()
        sent = time.monotonic()
        until(lambda: len(reader.got) == 3, "the stream's values did not come", IN_TIME)
        assert reader.values == [0, 1, 2]
        assert reader.got[-1][1] - sent < IN_TIME and reader.ended is None  # the flow runs on
        assert not answer  # no event yet: get_event still waits
        end.touch()
        done = time.monotonic()
        asker.join(IN_TIME)
        reader.join(IN_TIME)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    assert answer and answer[0][0] == 42 and answer[0][1] - done < IN_TIME
    assert reader.error is None and reader.values == [0, 1, 2]
    assert reader.ended is not None and reader.ended - done < IN_TIME  # ended with its flow
    assert len(listeners(pg_server) - before) == 1  # both readers, one connection


def test_twenty_readers_share_one_listening_connection(
    pg_server: pg.Server, store: Any, sender: Any
) -> None:
    before = listeners(pg_server)
    ids = [f"many-{i}" for i in range(10)]
    started(sender, *ids)
    readers = [Reader(ids[i % 10], store) for i in range(20)]  # two on each flow
    until(lambda: listeners(pg_server) - before, "no listener LISTENs")
    time.sleep(0.3)
    assert len(listeners(pg_server) - before) == 1
    now = sender.clock.time()
    sent = time.monotonic()
    for i, flow_id in enumerate(ids):
        sender.append_stream(flow_id, "tok", f'"v{i}"', now)
        sender.append_stream(flow_id, "tok", None, now)  # closed: the readers end
    for reader in readers:
        reader.join(IN_TIME)
    for i, reader in enumerate(readers):
        assert reader.error is None
        assert reader.values == [f"v{i % 10}"]
        assert reader.ended is not None and reader.ended - sent < IN_TIME
    assert len(listeners(pg_server) - before) == 1


def test_a_flows_end_ends_its_waiting_readers_at_once(store: Any, sender: Any) -> None:
    registry = Registry()

    @flow("nt-waits", registry=registry)
    def waits(ctx: FlowContext) -> Any:
        ctx.set_event("phase", "waiting")  # (stored with the park)
        return (yield Suspend("go"))

    @flow("nt-parent", registry=registry)
    def parent(ctx: FlowContext) -> Any:
        return (yield Child(waits, flow_id=f"{ctx.flow_id}-child"))

    finishing, cancelled = waits.run(store=sender), parent.run(store=sender)
    child = f"{cancelled.flow_id}-child"
    assert get_event(child, "phase", store=store) == "waiting"
    readers = [Reader(finishing.flow_id, store), Reader(child, store)]
    answer: list[Any] = []
    asker = threading.Thread(
        target=lambda: answer.append(get_event(finishing.flow_id, "x", store=store, timeout=60)),
        daemon=True,
    )
    asker.start()
    time.sleep(1.0)  # every reader is waiting
    assert all(reader.ended is None for reader in readers) and not answer
    sent = time.monotonic()
    signal_flow(finishing.flow_id, "go", "now", store=sender)
    assert resume(finishing.flow_id, store=sender, flows=[waits]).status == "completed"
    assert cancel_flow(cancelled.flow_id, "enough", store=sender)  # the child with it
    asker.join(IN_TIME)
    for reader in readers:
        reader.join(IN_TIME)
        assert reader.error is None and reader.values == []
        assert reader.ended is not None and reader.ended - sent < IN_TIME
    assert answer == [None]
    assert get_flow(child, store=store).status == "cancelled"


def test_the_end_of_a_flow_that_published_nothing_comes_by_the_poll(
    store: Any, sender: Any
) -> None:
    store.reader_poll = 0.2  # no NOTIFY at such an end: a NOTIFY serializes commits
    started(sender, "silent")
    reader = Reader("silent", store)
    time.sleep(0.5)
    assert reader.ended is None
    assert sender.cancel("silent", "enough", sender.clock.time())
    reader.join(IN_TIME)
    assert reader.error is None and reader.values == [] and reader.ended is not None


def test_a_lost_listener_comes_back_and_readers_get_every_value(
    pg_server: pg.Server, store: Any, sender: Any
) -> None:
    before = listeners(pg_server)
    started(sender, "lost")
    reader = Reader("lost", store)
    [first] = until(lambda: listeners(pg_server) - before, "no listener LISTENs")
    time.sleep(0.3)
    pg_server.execute("SELECT pg_terminate_backend(%s)", (first,))
    sender.append_stream("lost", "tok", "1", sender.clock.time())  # while it is away
    until(lambda: len(reader.got) == 1, "a value stored while the listener was lost", IN_TIME)

    def back() -> set[int]:
        now = listeners(pg_server) - before
        return set() if first in now else now  # (the terminated one may linger a moment)

    [second] = until(back, "the listener did not come back")
    assert second != first
    time.sleep(0.3)
    sent = time.monotonic()
    sender.append_stream("lost", "tok", "2", sender.clock.time())
    until(lambda: len(reader.got) == 2, "a value after the listener came back", IN_TIME)
    assert reader.got[1][1] - sent < IN_TIME
    sender.append_stream("lost", "tok", None, sender.clock.time())
    reader.join(IN_TIME)
    assert reader.error is None and reader.values == [1, 2] and reader.ended is not None


def test_without_a_listener_readers_poll_and_the_listener_comes_when_it_can(
    pg_server: pg.Server, store: Any, sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    module = sys.modules[type(store).__module__]
    real = module.listener_connection

    def refused(url: str, timeout: float) -> Any:
        raise psycopg.OperationalError("listener refused (test)")

    monkeypatch.setattr(module, "listener_connection", refused)
    before = listeners(pg_server)
    store.reader_poll = 0.2  # the fallback
    started(sender, "polled")
    reader = Reader("polled", store)
    time.sleep(0.5)
    sender.append_stream("polled", "tok", "1", sender.clock.time())
    until(lambda: len(reader.got) == 1, "a polling reader missed a value", IN_TIME)
    assert listeners(pg_server) - before == set()  # nobody listens: it was polled
    store.reader_poll = NO_POLL
    monkeypatch.setattr(module, "listener_connection", real)
    until(lambda: listeners(pg_server) - before, "the listener never came", IN_TIME)
    time.sleep(0.5)  # past a poll of 0.2 s: the reader now waits on the listener
    sender.append_stream("polled", "tok", "2", sender.clock.time())
    sender.append_stream("polled", "tok", None, sender.clock.time())
    reader.join(IN_TIME)
    assert reader.error is None and reader.values == [1, 2] and reader.ended is not None


def test_close_stops_the_listener_and_its_connection(
    pg_server: pg.Server, pg_schema: str, sender: Any
) -> None:
    store = pg.store_class()(pg_server.url, schema=pg_schema)
    before, running = listeners(pg_server), set(threading.enumerate())
    started(sender, "closing")
    reader = Reader("closing", store)
    until(lambda: listeners(pg_server) - before, "no listener LISTENs")
    threads = [
        t for t in set(threading.enumerate()) - running if t.name.startswith("crux_gen readers")
    ]
    assert len(threads) == 1
    sender.append_stream("closing", "tok", "1", sender.clock.time())
    sender.append_stream("closing", "tok", None, sender.clock.time())
    reader.join(IN_TIME)
    assert reader.values == [1]
    store.close()
    assert not any(t.is_alive() for t in threads)
    until(lambda: not (listeners(pg_server) - before), "the listener's connection stayed")


def test_a_forked_child_listens_on_its_own_and_leaves_its_parents_listener(
    pg_server: pg.Server, store: Any, sender: Any
) -> None:
    before = listeners(pg_server)
    started(sender, "in-parent", "in-child")
    reader = Reader("in-parent", store)
    [parents] = until(lambda: listeners(pg_server) - before, "no listener LISTENs")
    time.sleep(0.3)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: the parent's store object, read in this process
        code = 2
        try:
            os.close(read_end)
            got = list(read_stream("in-child", "tok", store=store, timeout=IN_TIME * 2))
            os.write(write_end, json.dumps(got).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        until(lambda: len(listeners(pg_server) - before) == 2, "the child made no listener")
        time.sleep(0.3)
        sent = time.monotonic()
        sender.append_stream("in-child", "tok", '"c"', sender.clock.time())
        sender.append_stream("in-child", "tok", None, sender.clock.time())
        with os.fdopen(read_end) as pipe:
            told = pipe.read()  # at the child's exit
        assert time.monotonic() - sent < IN_TIME
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and json.loads(told) == ["c"]
    # The parent's listener was left alone: the same connection wakes its reader.
    assert parents in listeners(pg_server)
    sent = time.monotonic()
    sender.append_stream("in-parent", "tok", '"p"', sender.clock.time())
    until(lambda: len(reader.got) == 1, "the parent's reader was not woken", IN_TIME)
    assert reader.got[0][1] - sent < IN_TIME
    sender.append_stream("in-parent", "tok", None, sender.clock.time())
    reader.join(IN_TIME)
    assert reader.values == ["p"]


def test_what_a_flow_publishes_wakes_no_idle_worker(pg_server: pg.Server, sender: Any) -> None:
    from crux_gen.stores.postgres_schema import WAKE_CHANNEL

    started(sender, "quiet")
    with pg.psycopg().connect(pg_server.url, autocommit=True) as worker:
        worker.execute(f"LISTEN {WAKE_CHANNEL}".encode())
        sender.append_stream("quiet", "tok", "1", sender.clock.time())
        assert sender.cancel("quiet", "enough", sender.clock.time())  # an end does not either
        assert list(worker.notifies(timeout=1.0)) == []
