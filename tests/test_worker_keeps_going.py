"""A worker keeps going: a store error in a pass, a flow it cannot read, a ``stop()``
in the middle of a pass or a flow cancelled under it never lose or block other flows."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    Flow,
    FlowContext,
    MemoryStore,
    Registry,
    SQLiteStore,
    Step,
    StoreError,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.records import StoredFlow
from crux_gen.worker import Worker

WORKER_LOG = "crux_gen.worker"


def signalled(
    store: Any, calls: list[str], *, on_b: Any = None, n: int = 1
) -> tuple[Flow[Any], list[str]]:
    """*n* flows that ran step ``a``, wait for ``go`` and have it: due for a worker."""

    @flow("signalled", registry=Registry())
    def body(ctx: FlowContext) -> Any:
        yield Step("a", lambda: calls.append(f"{ctx.flow_id}:a"))
        yield Suspend("go")

        def b() -> str:
            calls.append(f"{ctx.flow_id}:b")
            if on_b is not None:
                on_b(ctx.flow_id)
            return "done"

        return (yield Step("b", b))

    ids = []
    for _ in range(n):
        r = body.run(store=store)
        assert r.status == "suspended"
        signal_flow(r.flow_id, "go", None, store=store)
        ids.append(r.flow_id)
    return body, ids


class FlakyDueStore(MemoryStore):
    """A store whose claim of due flows (the worker's due query) fails the first
    *failures* times (a disk error, say)."""

    def __init__(self, failures: int, **options: Any) -> None:
        super().__init__(**options)
        self.failures = failures

    def claim_due(self, *args: Any, **kwargs: Any) -> list[StoredFlow]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk I/O error reading the due flows of crux.db")
        return super().claim_due(*args, **kwargs)


def test_a_store_error_in_a_pass_is_logged_and_the_worker_backs_off_and_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyDueStore(failures=0)
    calls: list[str] = []
    body, [flow_id] = signalled(store, calls)
    store.failures = 2
    worker = Worker(store=store, flows=[body])
    runner = threading.Thread(target=worker.run_forever, kwargs={"poll": "10ms"})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        runner.start()
        deadline = time.monotonic() + 10
        while get_flow(flow_id, store=store).status != "completed":
            assert time.monotonic() < deadline, "the worker never advanced the flow"
            time.sleep(0.01)
        worker.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()
    failed = [r for r in caplog.records if "disk I/O error" in r.getMessage()]
    # One line each (a store away is no bug of ours: no traceback), backing off.
    assert [r.levelno for r in failed] == [logging.WARNING, logging.WARNING]
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in failed] == ["10ms", "20ms"]
    assert all(r.exc_info is None for r in failed)
    assert calls == [f"{flow_id}:a", f"{flow_id}:b"]


def test_a_flow_with_a_corrupt_record_is_reported_and_skipped_while_others_advance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL", clock=clock)
    calls: list[str] = []
    body, (bad, good) = signalled(store, calls, n=2)
    with sqlite3.connect(tmp_path / "crux.db") as db:
        db.execute(
            "UPDATE records SET result = 'not json' WHERE flow_id = ? AND position = 0", (bad,)
        )
    db.close()
    worker = Worker(store=store, flows=[body], skip_for="5m")

    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        assert worker.run_once() == 1
    assert get_flow(good, store=store).status == "completed"
    assert f"{bad}:b" not in calls
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert bad in error.getMessage() and "skipping it for 5m" in error.getMessage()
    assert error.exc_info is not None  # the traceback says what could not be read

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        assert worker.run_once() == 0  # skipped: not tried again within 5 minutes
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]

    clock.advance("6m")
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        assert worker.run_once() == 0
    assert [r for r in caplog.records if r.levelno == logging.ERROR and bad in r.getMessage()]
    store.close()


def test_stop_during_a_pass_leaves_the_flows_not_yet_started_due(store: Any) -> None:
    calls: list[str] = []
    worker: Worker | None = None

    def stop_the_worker(flow_id: str) -> None:
        assert worker is not None
        worker.stop()

    body, (first, second) = signalled(store, calls, on_b=stop_the_worker, n=2)
    worker = Worker(store=store, flows=[body])
    assert worker.run_once() == 1
    statuses = sorted(str(get_flow(i, store=store).status) for i in (first, second))
    assert statuses == ["completed", "suspended"]
    assert len([c for c in calls if c.endswith(":b")]) == 1

    assert worker.run_once() == 1  # stop() ended that pass only; the other flow is still due
    assert {str(get_flow(i, store=store).status) for i in (first, second)} == {"completed"}
    assert sorted(c for c in calls if c.endswith(":b")) == sorted([f"{first}:b", f"{second}:b"])


def test_a_flow_cancelled_while_the_worker_runs_it_stops_and_the_log_gives_the_reason(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    after_b: list[str] = []

    @flow("cancelled-mid-run", registry=Registry())
    def body(ctx: FlowContext) -> Any:
        yield Suspend("go")
        yield Step("b", lambda: cancel_flow(ctx.flow_id, "account deleted", store=store))
        yield Step("c", lambda: after_b.append("c"))

    r = body.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    worker = Worker(store=store, flows=[body])
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        assert worker.run_once() == 1
    info = get_flow(r.flow_id, store=store)
    assert info.status == "cancelled" and info.cancel_reason == "account deleted"
    assert after_b == []  # the next command did not start
    assert f"flow {r.flow_id} (cancelled-mid-run): cancelled: account deleted" in caplog.messages


def test_a_workers_repr_names_its_store_and_flows() -> None:
    store = MemoryStore()

    @flow("shown", registry=Registry())
    def shown(ctx: FlowContext) -> Any:
        yield Step("a", lambda: None)

    text = repr(Worker(store=store, flows=[shown], batch=7))
    assert text == f"Worker({store!r}, flows=['shown'], concurrency=1, batch=7)"


class FlakyCommitStore(MemoryStore):
    """A store whose step commits fail the first *failures* times (the server went away)."""

    def __init__(self, failures: int, **options: Any) -> None:
        super().__init__(**options)
        self.failures = failures

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("server closed the connection unexpectedly")
        return super().commit(*args, **kwargs)


def test_a_store_error_while_advancing_a_flow_does_not_set_it_aside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyCommitStore(failures=0, lease_ttl="50ms")
    calls: list[str] = []
    body, [flow_id] = signalled(store, calls)
    store.failures = 1
    worker = Worker(store=store, flows=[body], skip_for="1h")
    runner = threading.Thread(target=worker.run_forever, kwargs={"poll": "10ms"})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        runner.start()
        deadline = time.monotonic() + 10
        while get_flow(flow_id, store=store).status != "completed":
            assert time.monotonic() < deadline, "the flow was set aside after a store error"
            time.sleep(0.01)
        worker.stop()
        runner.join(timeout=10)
    assert not any("skipping it" in r.getMessage() for r in caplog.records)
    assert calls[-1] == f"{flow_id}:b"  # the step cut off by the failed commit ran again
