"""The logging contract an app builds on (API.md, "Observability"): an INFO record as
each slice of a flow starts and as it ends (parked, finished: WARNING when it
failed), whoever runs it (``Flow.run``, ``resume``, a worker, a parent's loop for
its child), carrying ``flow_id``, ``flow_name``, ``status`` and ``waiting_for``; a
DEBUG record per step attempt carrying ``step``, ``attempt``, ``duration`` and
``outcome``; nothing for a command a slice replays."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crux_gen import (
    Child,
    ContinueAsNew,
    FakeClock,
    FlowContext,
    MemoryStore,
    Registry,
    Retry,
    Step,
    Suspend,
    flow,
    resume,
    signal_flow,
)
from crux_gen.worker import Worker

SLICE = ("flow_id", "flow_name", "status", "waiting_for")
ATTEMPT = ("flow_id", "step", "attempt", "outcome")


def fields(record: logging.LogRecord, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(record.__dict__[name] for name in names)


def slices(caplog: pytest.LogCaptureFixture, logger: str = "crux_gen") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and "slice" in r.__dict__]


def attempts(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "outcome" in r.__dict__]


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_each_slice_logs_its_start_and_its_end_with_the_flows_attributes(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    @flow("rec-wait", registry=Registry())
    def waits(ctx: FlowContext) -> Any:
        yield Step("before", lambda: ran.append("before"))
        yield Suspend("go")
        return (yield Step("after", lambda: ran.append("after") or "done"))

    caplog.set_level(logging.INFO, logger="crux_gen")
    fid = waits.run(store=store).flow_id
    signal_flow(fid, "go", {}, store=store)
    assert resume(fid, store=store, flows=[waits]).status == "completed"
    records = slices(caplog)
    assert [fields(r, SLICE) for r in records] == [
        (fid, "rec-wait", "running", None),  # Flow.run creates it, running
        (fid, "rec-wait", "suspended", "go"),  # and parks it
        (fid, "rec-wait", "suspended", "go"),  # resume takes it in, as stored
        (fid, "rec-wait", "completed", None),
    ]
    assert [r.levelno for r in records] == [logging.INFO] * 4
    assert [r.__dict__["slice"] for r in records] == ["start", "end", "start", "end"]
    assert [r.getMessage() for r in records] == [
        f"flow {fid} (rec-wait): run 1 taken in (stored as running)",
        f"flow {fid} (rec-wait): suspended, waiting for 'go'",
        f"flow {fid} (rec-wait): run 1 taken in (stored as suspended, waiting for 'go')",
        f"flow {fid} (rec-wait): completed",
    ]
    assert ran == ["before", "after"]
    assert not attempts(caplog)  # DEBUG is off: no attempt is logged


def test_each_step_attempt_logs_at_debug_and_a_replayed_step_logs_nothing(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("down")
        return "up"

    @flow("rec-steps", registry=Registry())
    def steps(ctx: FlowContext) -> Any:
        yield Step("flaky", flaky, retry=Retry(attempts=2, backoff="fixed", delay="1s"))
        yield Suspend("go")
        yield Step("last", lambda: 1 / 0)

    caplog.set_level(logging.DEBUG, logger="crux_gen")
    fid = steps.run(store=store).flow_id
    first = attempts(caplog)
    assert [fields(r, ATTEMPT) for r in first] == [
        (fid, "flaky", 1, "retry"),
        (fid, "flaky", 2, "ok"),
    ]
    assert first[0].__dict__["error"] == "ConnectionError"
    [retrying] = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert (retrying.levelno, fields(retrying, ("flow_id", "flow_name", "step", "attempt"))) == (
        logging.INFO,
        (fid, "rec-steps", "flaky", 1),
    )
    assert all(r.levelno == logging.DEBUG for r in first)
    assert all(isinstance(r.__dict__["duration"], float) for r in first)
    assert all(r.__dict__["duration"] >= 0 for r in first)
    caplog.clear()
    signal_flow(fid, "go", {}, store=store)
    assert Worker(store, [steps]).run_once() == 1
    # The worker's slice replays "flaky" (two attempts stored): only "last" is called.
    assert [fields(r, ATTEMPT) for r in attempts(caplog)] == [(fid, "last", 1, "failed")]
    assert len(tries) == 2
    ended = slices(caplog, "crux_gen.worker")[-1]
    assert ended.levelno == logging.WARNING
    assert fields(ended, SLICE) == (fid, "rec-steps", "failed", None)


def test_a_slice_that_replays_everything_logs_only_its_own_lines(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    @flow("rec-replay", registry=Registry())
    def twice(ctx: FlowContext) -> Any:
        yield Step("one", lambda: 1)
        yield Suspend("first")
        yield Step("two", lambda: 2)
        yield Suspend("second")

    fid = twice.run(store=store).flow_id
    signal_flow(fid, "first", {}, store=store)
    resume(fid, store=store, flows=[twice])
    caplog.set_level(logging.DEBUG, logger="crux_gen")
    resume(fid, store=store, flows=[twice])  # nothing arrived: it parks again at once
    assert [fields(r, SLICE) for r in slices(caplog)] == [
        (fid, "rec-replay", "suspended", "second"),
        (fid, "rec-replay", "suspended", "second"),
    ]
    assert not attempts(caplog)


def test_a_child_run_in_its_parents_loop_and_a_new_run_log_their_slices(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()

    @flow("rec-child", registry=registry)
    def child(ctx: FlowContext) -> Any:
        return (yield Step("c", lambda: "c"))

    @flow("rec-parent", registry=registry)
    def parent(ctx: FlowContext) -> Any:
        got = yield Child(child, input=None, flow_id="rec-kid")
        if ctx.input is None:
            yield ContinueAsNew(input=got)
        return got

    caplog.set_level(logging.INFO, logger="crux_gen")
    fid = parent.run(store=store).flow_id
    assert resume(fid, store=store, flows=[parent, child]).status == "completed"
    lines = [(r.getMessage(), r.__dict__["status"]) for r in slices(caplog)]
    assert lines == [
        (f"flow {fid} (rec-parent): run 1 taken in (stored as running)", "running"),
        ("flow rec-kid (rec-child): run 1 taken in (stored as running)", "running"),
        ("flow rec-kid (rec-child): completed", "completed"),
        (f"flow {fid} (rec-parent): continued as new (run 2)", "running"),
        (f"flow {fid} (rec-parent): run 2 taken in (stored as running)", "running"),
        (f"flow {fid} (rec-parent): completed", "completed"),
    ]


def test_nothing_is_logged_while_the_level_is_off(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    @flow("rec-quiet", registry=Registry())
    def quiet(ctx: FlowContext) -> Any:
        yield Step("a", lambda: 1)
        yield Step("b", lambda: 1 / 0)

    caplog.set_level(logging.WARNING, logger="crux_gen")
    fid = quiet.run(store=store).flow_id
    [only] = [r for r in caplog.records if r.name.startswith("crux_gen")]
    assert (only.levelno, fields(only, SLICE)) == (
        logging.WARNING,
        (fid, "rec-quiet", "failed", None),
    )
