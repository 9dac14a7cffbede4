"""A step's write carrying what its body published (``ctx.set_event``,
``ctx.write_stream``: ``Write.is_published_step``), on every store: the record
and its events and stream writes go in together or not at all (fenced on the
lease like a step alone), a replay stores nothing new, a batch (group commit)
keeps each flow's apart, and a failing write loses nothing else.

SQL stores write it in one transaction without the general path's reads
(``stores/sql_publish.py`` ``published_step``): checked here by the statements run.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from typing import Any

import pytest

from crux_gen import FakeClock, Step, flow, get_event, read_stream
from crux_gen.errors import LeaseLostError, StoreError
from crux_gen.records import Commit, Write
from crux_gen.stores.sql_publish import step_with_events
from crux_gen.worker import Worker

from .test_store_contract import rec, ttl


def published(
    position: int, value: str = "1", tag: str | None = None, *, stream: bool = True
) -> Write:
    """Step *position*'s record with the event ``progress`` = *value* and (with
    *stream*) one stream write, tagged as a body's."""
    return Write(
        (rec(position, f"s{position}"),),
        events=(("progress", value), ("other", "0")),
        streams=(("log", tag or f"1:{position}:0", value),) if stream else (),
    )


#: With a stream write, and events alone (PostgreSQL's one statement).
WITH = pytest.mark.parametrize("stream", [True, False], ids=["events+stream", "events"])


def nothing_published(store: Any, flow_id: str) -> bool:
    return store.flow_events(flow_id) == [] and store.flow_streams(flow_id) == []


def test_a_step_and_what_its_body_published_go_in_together(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    assert published(0).is_published_step and published(0, stream=False).is_published_step
    assert store.commit("a", "me", t + 1, published(0, "10")).status == "running"
    assert store.commit("a", "me", t + 2, published(1, "11")).status == "running"
    assert store.commit("a", "me", t + 3, published(2, "11", stream=False)).status == "running"
    flow = store.load("a")
    assert [r.name for r in flow.records] == ["s0", "s1", "s2"] and flow.lease_owner == "me"
    assert [(e.key, e.value, e.set_at) for e in store.flow_events("a")] == [
        ("other", "0", t + 1),
        ("progress", "11", t + 2),
    ]
    assert [(s.seq, s.value, s.tag) for s in store.flow_streams("a")] == [
        (1, "10", "1:0:0"),
        (2, "11", "1:1:0"),
    ]


@WITH
@pytest.mark.parametrize("how", ["claimed", "expired", "deleted"])
@pytest.mark.parametrize("batch", [False, True], ids=["commit", "commit_many"])
def test_a_fenced_out_step_write_stores_neither_its_record_nor_what_it_published(
    store: Any, clock: FakeClock, how: str, batch: bool, stream: bool
) -> None:
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    if how == "claimed":  # another worker holds the flow now
        store.release("a", "me")
        store.claim("a", "thief", t)
    elif how == "expired":  # the lease ran out and another worker claimed it
        t += ttl(store) + 1
        store.claim("a", "thief", t)
    else:
        store.cancel("a", "not needed", t)
        assert store.delete("a") is True
    write = published(0, stream=stream)
    if batch:
        [outcome] = store.commit_many([Commit("a", "me", t, write)])
        assert isinstance(outcome, LeaseLostError)
    else:
        with pytest.raises(LeaseLostError):
            store.commit("a", "me", t, write)
    assert nothing_published(store, "a")
    if how != "deleted":
        flow = store.load("a")
        assert flow.records == () and flow.lease_owner == "thief"


def test_a_replayed_event_write_stores_nothing_new(store: Any, clock: FakeClock) -> None:
    """A replay's body sets the same value again and writes its stream entry under
    the same tag: the event keeps when it was set, the stream one entry."""
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.commit("a", "me", t + 1, published(0, "7", tag="1:0:0"))
    store.commit("a", "me", t + 5, published(1, "7", tag="1:0:0"))
    assert [r.name for r in store.load("a").records] == ["s0", "s1"]
    store.commit("a", "me", t + 6, published(2, "7", stream=False))
    assert [(e.key, e.value, e.set_at) for e in store.flow_events("a")] == [
        ("other", "0", t + 1),
        ("progress", "7", t + 1),
    ]
    assert [(s.seq, s.value, s.at) for s in store.flow_streams("a")] == [(1, "7", t + 1)]


def test_a_batch_of_published_steps_keeps_each_flow_apart(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for flow_id in ("ok-1", "lost", "gone", "ok-2"):
        store.start(flow_id, "demo", "null", "me", t)
    store.release("lost", "me")
    store.claim("lost", "thief", t)
    store.cancel("gone", "not needed", t)
    store.delete("gone")
    outcomes = store.commit_many(
        [
            Commit("ok-1", "me", t + 1, published(0, "1")),
            Commit("lost", "me", t + 1, published(0, "2")),
            Commit("gone", "me", t + 1, published(0, "3")),
            Commit("ok-2", "me", t + 1, Write((rec(0, "plain"),))),
            Commit("ok-2", "me", t + 1, published(1, "4")),
            Commit("ok-2", "me", t + 1, published(2, "5", stream=False)),
        ]
    )
    assert [getattr(o, "status", type(o)) for o in outcomes] == [
        "running", LeaseLostError, LeaseLostError, "running", "running", "running",
    ]  # fmt: skip
    assert [e.value for e in store.flow_events("ok-1")] == ["0", "1"]
    assert [e.value for e in store.flow_events("ok-2")] == ["0", "5"]
    assert [s.value for s in store.flow_streams("ok-2")] == ["4"]
    assert [r.name for r in store.load("ok-2").records] == ["plain", "s1", "s2"]
    assert nothing_published(store, "lost") and store.load("lost").records == ()
    assert nothing_published(store, "gone")


def test_sql_stores_write_a_published_step_without_the_general_paths_reads(
    store: Any, store_kind: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store_kind == "memory":
        pytest.skip("MemoryStore runs no statements")
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    ran: list[str] = []
    run = store._run

    def spy(conn: Any, query: str, params: Any = ()) -> Any:
        ran.append(query)
        return run(conn, query, params)

    monkeypatch.setattr(store, "_run", spy)
    store.commit("a", "me", t, published(0))
    store.commit_many([Commit("a", "me", t, published(1))])
    store.commit("a", "me", t, published(2, stream=False))
    sql = store._sql
    assert sql.LEASE_CHECK_LOCKED not in ran and sql.LAST_POSITION not in ran
    if store_kind == "postgres":  # events alone: the record and them in one statement
        assert ran[-1] == step_with_events(sql)
    assert [r.name for r in store.load("a").records] == ["s0", "s1", "s2"]
    assert len(store.flow_events("a")) == 2 and len(store.flow_streams("a")) == 2


def failing(store: Any, store_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, *store*'s event upsert fails as a full disk would."""
    if store_kind == "sqlite":
        error: Exception = sqlite3.OperationalError("database or disk is full")
    else:
        import psycopg

        error = psycopg.OperationalError("could not extend file: No space left on device")
    run = store._run

    def upsert_fails(conn: Any, query: str, params: Any = ()) -> Any:
        if "INSERT INTO events" in query:  # (PostgreSQL: with the step's record)
            raise error
        return run(conn, query, params)

    monkeypatch.setattr(store, "_run", upsert_fails)


@WITH
@pytest.mark.parametrize("batch", [False, True], ids=["commit", "commit_many"])
def test_a_failing_event_upsert_writes_nothing_of_its_step_and_loses_nothing(
    store: Any,
    store_kind: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    batch: bool,
    stream: bool,
) -> None:
    """The record does not go in without its event; what was stored before stays,
    and so does the lease: the same write succeeds once the store does."""
    if store_kind == "memory":
        pytest.skip("MemoryStore's writes do not fail")
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    store.start("b", "demo", "null", "me", t)
    store.commit("a", "me", t, published(0, "before"))
    before_a, before_b = store.load("a"), store.load("b")
    failing(store, store_kind, monkeypatch)
    write = published(1, "after", stream=stream)
    with pytest.raises(StoreError, match=r"disk is full|No space left"):
        if batch:  # a failure of the store fails the batch: nothing of it is written
            store.commit_many(
                [Commit("b", "me", t, Write((rec(0, "b0"),))), Commit("a", "me", t, write)]
            )
        else:
            store.commit("a", "me", t, write)
    assert store.load("a") == before_a and store.load("b") == before_b
    assert [e.value for e in store.flow_events("a")] == ["0", "before"]
    assert [s.value for s in store.flow_streams("a")] == ["before"]
    monkeypatch.undo()
    assert store.commit("a", "me", t + 1, write).status == "running"
    assert [r.name for r in store.load("a").records] == ["s0", "s1"]
    assert [e.value for e in store.flow_events("a")] == ["0", "after"]


def counted(i: int) -> int:
    return i


@flow("pub-group")
def group_flow(ctx: Any) -> Any:
    total = 0
    for i in range(3):
        ctx.set_event("progress", i)
        ctx.write_stream("log", i)
        total += yield Step(f"s{i}", functools.partial(counted, i))
    return total


def test_a_worker_group_commits_several_flows_with_their_events(store: Any) -> None:
    handles = [group_flow.start(store=store) for _ in range(4)]
    batches: list[int] = []
    commit_many = store.commit_many

    def spy(batch: Any) -> Any:
        batches.append(sum(1 for item in batch if item.write.events))
        return commit_many(batch)

    store.commit_many = spy
    assert Worker(store, [group_flow], concurrency=4).run_once() == 4
    assert max(batches) > 1  # events of several flows were committed together
    for h in handles:
        assert h.result(timeout=0).value == 3
        assert get_event(h.flow_id, "progress", store=store) == 2
        assert list(read_stream(h.flow_id, "log", store=store)) == [0, 1, 2]
        assert [r.name for r in store.load(h.flow_id).records] == ["s0", "s1", "s2"]


def test_postgres_one_statement_step_wakes_a_waiting_get_event(
    store: Any, store_kind: str, clock: FakeClock
) -> None:
    """The event of a step's one statement tells waiting readers (NOTIFY, as
    ``SET_EVENT`` does): ``get_event`` returns at once, not at its next poll."""
    if store_kind != "postgres":
        pytest.skip("PostgreSQL's one statement and NOTIFY")
    store.reader_poll = 30.0  # (a reader woken only by its poll would wait 30 s)
    t = clock.time()
    store.start("a", "demo", "null", "me", t)
    got: list[tuple[Any, float]] = []
    asker = threading.Thread(
        target=lambda: got.append(
            (get_event("a", "progress", store=store, timeout=60), time.monotonic())
        ),
        daemon=True,
    )
    asker.start()
    time.sleep(1.0)  # the reader is waiting
    assert not got
    sent = time.monotonic()
    assert store.commit("a", "me", t, published(0, '"now"', stream=False)).status == "running"
    asker.join(10)
    assert got and got[0][0] == "now" and got[0][1] - sent < 10
