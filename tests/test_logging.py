"""What an app sees of crux_gen's logging: nothing at all until it configures logging;
then a failed flow at WARNING, a completed one at INFO, durations written as ``5m``,
and an unregistered flow's message giving the fix that applies where it was raised."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowContext,
    Registry,
    Retry,
    Step,
    Suspend,
    flow,
    signal_flow,
)
from crux_gen.worker import Worker

WORKER_LOG = "crux_gen.worker"
# What a duration must never look like in a log line: str() and repr() of a timedelta.
CLUNKY = re.compile(r"\b\d+:\d\d:\d\d\b|timedelta\(|\d+\.0s\b")


def flows() -> tuple[Any, Any]:
    registry = Registry()

    @flow("log-good", registry=registry)
    def good(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return (yield Step("b", lambda: "done"))

    @flow("log-bad", registry=registry)
    def bad(ctx: FlowContext) -> Any:
        yield Suspend("go")
        yield Step("boom", lambda: 1 / 0)

    return good, bad


def test_the_package_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("crux_gen").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_an_app_without_logging_configured_sees_nothing_on_stderr(tmp_path: Path) -> None:
    # A failed flow (WARNING), an unregistered one (ERROR) and a lost lease would all
    # reach stderr through logging's "last resort" handler without the NullHandler.
    script = textwrap.dedent(
        """
        from crux_gen import MemoryStore, Registry, Step, Suspend, flow, signal_flow
        from crux_gen.worker import Worker

        registry = Registry()

        @flow("quiet-bad", registry=registry)
        def bad(ctx):
            yield Suspend("go")
            yield Step("boom", lambda: 1 / 0)

        @flow("quiet-ghost", registry=registry)
        def ghost(ctx):
            yield Suspend("go")

        store = MemoryStore()
        ids = [bad.run(store=store).flow_id, ghost.run(store=store).flow_id]
        for fid in ids:
            signal_flow(fid, "go", {}, store=store)
        print(Worker(store, [bad]).run_once())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")


def test_a_failed_flow_is_logged_at_warning_and_a_completed_one_at_info(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = flows()
    ok_id = good.run(store=store).flow_id
    bad_id = bad.run(store=store).flow_id
    for fid in (ok_id, bad_id):
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger="crux_gen")
    assert Worker(store, [good, bad]).run_once() == 2
    lines = {r.__dict__["flow_id"]: r for r in caplog.records if r.name == WORKER_LOG}
    assert lines[ok_id].levelno == logging.INFO
    assert lines[ok_id].getMessage() == f"flow {ok_id} (log-good): completed"
    assert lines[bad_id].levelno == logging.WARNING
    assert lines[bad_id].getMessage() == (
        f"flow {bad_id} (log-bad): failed: builtins.ZeroDivisionError: division by zero"
    )


def test_durations_in_log_lines_are_compact(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("down")
        return "ok"

    @flow("log-flaky", registry=registry)
    def retried(ctx: FlowContext) -> Any:
        yield Suspend("go")
        return (yield Step("call", flaky, retry=Retry(attempts=2, backoff="fixed", delay="1s")))

    @flow("log-ghost", registry=Registry())
    def ghost(ctx: FlowContext) -> Any:
        yield Suspend("go")

    ids = [retried.run(store=store).flow_id, ghost.run(store=store).flow_id]
    for fid in ids:
        signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.DEBUG, logger="crux_gen")
    worker = Worker(store, [retried], skip_for=5400)
    worker.stop()  # run_forever returns after logging its start
    worker.run_forever(poll=0.25)
    worker.run_once()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("crux_gen")]
    assert any(m.startswith("worker started on ") for m in messages), messages
    started = "lease_ttl 30s, polling every 250ms, concurrency 1;"
    assert any(started in m for m in messages), messages
    assert any(m.endswith("retrying in 1s") for m in messages), messages
    assert any(m.endswith("Skipping this flow for 1h30m") for m in messages), messages
    assert not [m for m in messages if CLUNKY.search(m)]


def test_an_unregistered_flow_in_a_python_worker_says_import_it_or_pass_flows(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good, _ = flows()

    @flow("log-unknown", registry=Registry())
    def unknown(ctx: FlowContext) -> Any:
        yield Suspend("go")

    fid = unknown.run(store=store).flow_id
    signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    Worker(store, [good]).run_once()
    [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.getMessage().startswith(
        f"no flow named 'log-unknown' is registered (needed by flow {fid!r}); "
        'import the module that defines @flow("log-unknown") or pass flows=[...] '
        "(registered here: "
    )
    assert "'log-good'" in line.getMessage()
    assert line.getMessage().endswith("Skipping this flow for 5m")
    assert (line.__dict__["flow_id"], line.__dict__["flow_name"]) == (fid, "log-unknown")


def test_a_worker_can_give_the_fix_that_applies_where_it_runs(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @flow("log-elsewhere", registry=Registry())
    def elsewhere(ctx: FlowContext) -> Any:
        yield Suspend("go")

    fid = elsewhere.run(store=store).flow_id
    signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    hint = 'pass the module that defines @flow("{name}") as MODULE'
    Worker(store, not_registered_hint=hint).run_once()
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith(
        f"no flow named 'log-elsewhere' is registered (needed by flow {fid!r}); "
        'pass the module that defines @flow("log-elsewhere") as MODULE (registered here: '
    )
    assert "flows=[...]" not in line


def test_the_lease_keeper_and_worker_log_to_the_package_logger(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Apps filter and route by logger name: everything crux_gen logs is under "crux_gen".
    good, bad = flows()
    fid = bad.run(store=store).flow_id
    signal_flow(fid, "go", {}, store=store)
    caplog.set_level(logging.DEBUG)
    done = threading.Event()
    worker = Worker(store, [good, bad])
    thread = threading.Thread(target=lambda: (worker.run_once(), done.set()))
    thread.start()
    thread.join(10)
    assert done.is_set()
    names = {r.name for r in caplog.records}
    assert names and all(n == "crux_gen" or n.startswith("crux_gen.") for n in names), names
