"""Events and streams on every store: ``ctx.set_event`` / ``get_event`` (the last
value set, published with the flow's next write, waited for), ``ctx.write_stream``
and ``crux_gen.write_stream`` / ``read_stream`` (in order, as they land, stopping
at a close, the flow's end or a quiet ``timeout``); a replay writes nothing twice;
deleted with the flow; copied by ``migrate``; bad input refused."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from crux_gen import (
    CruxError,
    FlowContext,
    FlowNotFoundError,
    InvalidTypeError,
    InvalidValueError,
    Retry,
    Step,
    Suspend,
    delete_flow,
    flow,
    get_event,
    get_flow,
    read_stream,
    resume,
    signal_flow,
    write_stream,
)
from crux_gen.flow import CLOSED
from crux_gen.migrate import migrate
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore


@flow("ev-progress")
def progress(ctx: FlowContext) -> Any:
    ctx.set_event("phase", "started")
    yield Step("one", lambda: 1)
    ctx.set_event("phase", {"done": 1})
    ctx.set_event("other", [1, 2])
    go = yield Suspend("go")
    ctx.set_event("phase", "finished")
    ctx.write_stream("log", f"go {go}")
    return go


def test_get_event_reads_the_last_value_set_and_none_for_a_key_never_set(store: Any) -> None:
    r = progress.run(store=store, flow_id="ev-1")
    assert r.status == "suspended"
    assert get_event("ev-1", "phase", store=store) == {"done": 1}
    assert get_event("ev-1", "other", store=store) == [1, 2]
    assert get_event("ev-1", "never", store=store) is None
    with pytest.raises(FlowNotFoundError):
        get_event("no-such-flow", "phase", store=store)
    assert signal_flow("ev-1", "go", 7, store=store)
    assert resume("ev-1", store=store, flows=[progress]).value == 7
    assert get_event("ev-1", "phase", store=store) == "finished"
    # The replay set "started" and {"done": 1} again: nothing of it was written.
    events = {e.key: e for e in store.flow_events("ev-1")}
    assert sorted(events) == ["other", "phase"]
    assert [e.value for e in store.flow_streams("ev-1")] == ['"go 7"']


def test_get_event_waits_up_to_its_timeout_for_the_value(store: Any) -> None:
    progress.run(store=store, flow_id="ev-2")
    started = time.monotonic()
    assert get_event("ev-2", "never", store=store, timeout=0.15) is None
    assert time.monotonic() - started >= 0.15

    got: list[Any] = []
    reader = threading.Thread(
        target=lambda: got.append(get_event("ev-2-late", "phase", store=store, timeout=10))
    )

    @flow("ev-late")
    def late(ctx: FlowContext) -> Any:
        yield Suspend("go")
        ctx.set_event("phase", "set late")
        return None

    late.run(store=store, flow_id="ev-2-late")
    reader.start()
    time.sleep(0.1)
    assert got == []  # still waiting
    signal_flow("ev-2-late", "go", None, store=store)
    resume("ev-2-late", store=store, flows=[late])
    reader.join(10)
    assert got == ["set late"]


def test_a_finished_flow_ends_the_wait_for_an_event_it_never_set(store: Any) -> None:
    @flow("ev-done")
    def done(ctx: FlowContext) -> Any:
        yield Step("s", lambda: 1)
        return 1

    done.run(store=store, flow_id="ev-3")
    started = time.monotonic()
    assert get_event("ev-3", "phase", store=store, timeout=30) is None
    assert time.monotonic() - started < 5


@flow("st-tokens")
def tokens(ctx: FlowContext) -> Any:
    ctx.write_stream("tokens", "a")
    ctx.write_stream("tokens", "b")  # (two writes at one position)
    ctx.write_stream("meta", {"n": 1})
    yield Step("gen", lambda: [write_stream("tokens", t) for t in ("c", "d")] and 2)
    ctx.write_stream("tokens", "e")
    answer = yield Suspend("go")
    ctx.write_stream("tokens", answer)
    ctx.close_stream("tokens")
    ctx.write_stream("tokens", "after close")
    return "done"


def test_body_and_step_writes_are_read_in_order_once_each_across_a_replay(store: Any) -> None:
    assert tokens.run(store=store, flow_id="st-1").status == "suspended"
    # Not closed, flow parked: a quiet timeout ends the reading.
    assert list(read_stream("st-1", "tokens", store=store, timeout=0.05)) == list("abcde")
    signal_flow("st-1", "go", "f", store=store)
    assert resume("st-1", store=store, flows=[tokens]).value == "done"
    # The replay wrote a, b, e and meta again: stored once each.
    assert list(read_stream("st-1", "tokens", store=store)) == list("abcdef")
    assert list(read_stream("st-1", "meta", store=store)) == [{"n": 1}]
    rows = [r for r in store.flow_streams("st-1") if r.key == "tokens"]
    assert [r.seq for r in rows] == list(range(1, 9))
    assert rows[6].value is None and rows[7].value == '"after close"'  # kept, never read
    assert [r.tag is None for r in rows[:5]] == [False, False, True, True, False]


def test_a_finished_flow_ends_the_reading_and_a_stream_never_written_is_empty(store: Any) -> None:
    @flow("st-end")
    def ends(ctx: FlowContext) -> Any:
        ctx.write_stream("s", 1)
        yield Step("x", lambda: write_stream("s", 2))
        ctx.write_stream("s", 3)
        return None

    ends.run(store=store, flow_id="st-2")
    assert list(read_stream("st-2", "s", store=store)) == [1, 2, 3]
    assert list(read_stream("st-2", "nothing", store=store)) == []
    with pytest.raises(FlowNotFoundError):
        next(read_stream("no-such", "s", store=store))


def test_a_retried_step_writes_again_at_least_once(store: Any) -> None:
    tries: list[int] = []

    def flaky() -> int:
        tries.append(1)
        write_stream("s", f"try {len(tries)}")
        if len(tries) < 2:
            raise ConnectionError("once")
        return len(tries)

    @flow("st-retry")
    def retried(ctx: FlowContext) -> Any:
        return (yield Step("flaky", flaky, retry=Retry(attempts=3, delay="1ms")))

    r = retried.run(store=store, flow_id="st-3")  # (a 1 ms backoff: retried in hand)
    assert (r.status, r.value, len(tries)) == ("completed", 2, 2)
    assert list(read_stream("st-3", "s", store=store)) == ["try 1", "try 2"]


def test_a_reader_gets_values_while_the_flow_still_runs(store: Any) -> None:
    gate = threading.Event()

    def produce() -> int:
        for t in ("x", "y"):
            write_stream("live", t)
        gate.wait(10)  # the step is still running while the reader reads
        write_stream("live", "z")
        return 3

    @flow("st-live")
    def live(ctx: FlowContext) -> Any:
        yield Step("produce", produce)
        ctx.close_stream("live")
        return None

    worker = threading.Thread(target=lambda: live.run(store=store, flow_id="st-4"))
    worker.start()
    seen: list[Any] = []
    for _ in range(200):
        try:
            reading = read_stream("st-4", "live", store=store, timeout=10)
            seen.append(next(reading))
            break
        except FlowNotFoundError:
            time.sleep(0.01)
    seen.append(next(reading))
    assert seen == ["x", "y"]
    gate.set()
    seen.extend(reading)
    worker.join(10)
    assert seen == ["x", "y", "z"]


def test_events_and_streams_are_deleted_with_their_flow(store: Any) -> None:
    tokens.run(store=store, flow_id="st-del")
    progress.run(store=store, flow_id="ev-del")
    for flow_id in ("st-del", "ev-del"):
        assert store.flow_events(flow_id) or store.flow_streams(flow_id)
        store.cancel(flow_id, "test", store.clock.time())
        assert delete_flow(flow_id, store=store)
        assert store.flow_events(flow_id) == [] and store.flow_streams(flow_id) == []


def test_prune_deletes_the_events_and_streams_of_the_flows_it_deletes(store: Any) -> None:
    @flow("st-prune")
    def short(ctx: FlowContext) -> Any:
        ctx.set_event("e", ctx.input)
        yield Step("w", lambda: write_stream("s", ctx.input))
        ctx.write_stream("s", "end")
        return None

    for n in range(3):
        short.run(input=n, store=store, flow_id=f"pr-{n}")
    progress.run(store=store, flow_id="pr-kept")  # suspended: not prunable
    assert store.prune(store.clock.time() + 1, name="st-prune") == 3
    for n in range(3):
        assert store.flow_events(f"pr-{n}") == [] and store.flow_streams(f"pr-{n}") == []
    assert get_event("pr-kept", "phase", store=store) == {"done": 1}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_migrate_copies_events_and_streams(store: Any, kind: str, tmp_path: Any) -> None:
    tokens.run(store=store, flow_id="st-mig")
    progress.run(store=store, flow_id="ev-mig")
    target: Any = (
        MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "to.db", synchronous="NORMAL")
    )
    migrate(store, target)
    for flow_id in ("st-mig", "ev-mig"):
        assert target.flow_events(flow_id) == store.flow_events(flow_id)
        assert target.flow_streams(flow_id) == store.flow_streams(flow_id)
    assert get_event("ev-mig", "phase", store=target) == {"done": 1}
    assert list(read_stream("st-mig", "tokens", store=target, timeout=0)) == list("abcde")
    migrate(store, target)  # again: skipped, nothing doubled
    assert target.flow_streams("st-mig") == store.flow_streams("st-mig")


def test_bad_input_is_refused_naming_it(store: Any) -> None:
    @flow("st-bad-key")
    def bad_key(ctx: FlowContext) -> Any:
        ctx.write_stream("", 1)
        yield Step("never", lambda: 1)

    @flow("st-bad-value")
    def bad_value(ctx: FlowContext) -> Any:
        ctx.set_event("k", object())
        yield Step("never", lambda: 1)

    assert bad_key.run(store=store, flow_id="b-1").status == "failed"
    assert "stream key" in str(get_flow_error(store, "b-1"))
    assert bad_value.run(store=store, flow_id="b-2").status == "failed"
    assert "SerializationError" in get_flow_error(store, "b-2")
    with pytest.raises(CruxError, match="outside a step function"):
        write_stream("s", 1)
    with pytest.raises(InvalidValueError, match="timeout"):
        get_event("b-1", "k", store=store, timeout=-1)
    with pytest.raises(InvalidTypeError, match="timeout"):
        read_stream("b-1", "k", store=store, timeout="1s")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="event key"):
        get_event("b-1", " ", store=store)

    @flow("st-bad-step")
    def bad_step(ctx: FlowContext) -> Any:
        return (yield Step("w", lambda: write_stream("s", object())))

    assert bad_step.run(store=store, flow_id="b-3").status == "failed"
    assert "SerializationError" in get_flow_error(store, "b-3")
    assert store.flow_streams("b-3") == []  # nothing stored of a value refused


def get_flow_error(store: Any, flow_id: str) -> str:
    error = get_flow(flow_id, store=store).error
    return f"{error.type}: {error.message}" if error is not None else ""


def test_a_context_stepped_by_hand_keeps_what_it_published() -> None:
    ctx = FlowContext(flow_id="hand", name="st-tokens")
    gen = tokens.fn(ctx)
    next(gen)
    assert ctx.streams == {"tokens": ["a", "b"], "meta": [{"n": 1}]}
    progress_ctx = FlowContext(flow_id="hand2")
    next(progress.fn(progress_ctx))
    assert progress_ctx.events == {"phase": "started"}
    assert CLOSED == "<closed>"
