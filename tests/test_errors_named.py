"""Mistakes that used to be silent say what they are.

- A second, different function registered under a flow name warns
  (``FlowReplacedWarning``), naming both functions; the same function registered
  again (its module re-imported or reloaded) does not.
- A worker on a SQLite path that named no file logs a WARNING that it runs on a
  new, empty store (a typo would otherwise be polled forever); a store that
  existed, or that holds flows, is not warned about, and ``SQLiteStore(path)``
  alone stays quiet (``Flow.run`` makes a new file on purpose).
- With the ``crux_gen`` logger at DEBUG, each step attempt of a slice is a line:
  flow id, step, attempt, duration and outcome (``ok``, ``retry``, ``failed`` with
  the error's class); below DEBUG the calls are not even timed.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FlowContext,
    MemoryStore,
    Registry,
    Retry,
    SQLiteStore,
    Step,
    StepFailedError,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.calls import Calls
from crux_gen.effects import Call, Returned
from crux_gen.flow import FlowReplacedWarning
from crux_gen.worker import Worker

# -- a flow name registered twice -------------------------------------------------------


def test_a_second_function_under_a_flow_name_warns_naming_both() -> None:
    registry = Registry()

    @flow("orders", registry=registry)
    def place_order(ctx: FlowContext) -> Any:
        yield Step("a", lambda: 1)

    with pytest.warns(FlowReplacedWarning) as caught:

        @flow("orders", registry=registry)
        def place_order_v2(ctx: FlowContext) -> Any:
            yield Step("b", lambda: 2)

    [warning] = caught.list
    message = str(warning.message)
    here = f"{__name__}.test_a_second_function_under_a_flow_name_warns_naming_both.<locals>"
    assert f"{here}.place_order " in message, message
    assert f"{here}.place_order_v2:" in message, message
    assert "'orders'" in message
    assert warning.filename == __file__  # points at the second @flow
    assert registry.get("orders") is place_order_v2  # the later one replaces, as before


def test_the_same_function_registered_again_does_not_warn() -> None:
    registry = Registry()

    def make() -> Any:
        @flow("made", registry=registry)
        def body(ctx: FlowContext) -> Any:
            yield Step("a", lambda: 1)

        return body

    first = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = make()  # same module, same qualname: a re-run, not a clash
    assert registry.get("made") is second and second is not first


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("errnamed_flows", "errnamed_other"):
        sys.modules.pop(name, None)


FLOWS = """
from crux_gen import Step, flow

@flow("errnamed-{tag}")
def {fn}(ctx):
    yield Step("a", lambda: {value})
"""


def test_reloading_a_module_of_flows_does_not_warn_but_another_module_does(
    module_dir: Path,
) -> None:
    (module_dir / "errnamed_flows.py").write_text(FLOWS.format(tag="x", fn="order", value=1))
    (module_dir / "errnamed_other.py").write_text(FLOWS.format(tag="x", fn="order2", value=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = importlib.import_module("errnamed_flows")
        importlib.reload(module)  # what a dev server's autoreload does
        del sys.modules["errnamed_flows"]
        importlib.import_module("errnamed_flows")  # imported afresh
    clash = r"errnamed_flows\.order and now for errnamed_other\.order2"
    with pytest.warns(FlowReplacedWarning, match=clash):
        importlib.import_module("errnamed_other")


# -- a worker on a path that named no file ------------------------------------------------


def worker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "crux_gen.worker" and r.levelno == logging.WARNING
    ]


def start_worker(store: Any) -> None:
    worker = Worker(store)
    worker.stop()  # run_forever returns after its start
    worker.run_forever(poll=0.05)


def test_a_worker_on_a_new_empty_sqlite_file_warns_that_it_made_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crux_gen")
    typo = tmp_path / "crux.bd"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = SQLiteStore(typo)  # quiet by itself: Flow.run makes new files on purpose
    assert worker_warnings(caplog) == []
    start_worker(store)
    [line] = worker_warnings(caplog)
    assert str(typo) in line and "new, empty store" in line, line
    assert "polls an empty file forever" in line


def test_a_worker_on_an_existing_store_or_one_holding_flows_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crux_gen")
    registry = Registry()

    @flow("errnamed-one", registry=registry)
    def one(ctx: FlowContext) -> Any:
        yield Step("a", lambda: 1)

    existing = tmp_path / "crux.db"
    SQLiteStore(existing).close()
    start_worker(SQLiteStore(existing))  # the file was there
    fresh = SQLiteStore(tmp_path / "fresh.db")
    one.run(store=fresh)  # made here, and already holds a flow: an app + worker process
    start_worker(fresh)
    start_worker(MemoryStore())
    assert worker_warnings(caplog) == []


# -- DEBUG: each step attempt ----------------------------------------------------------------


def attempt_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "crux_gen" and hasattr(r, "outcome")]


def test_debug_logs_each_step_attempt_with_its_duration_and_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("down")
        return "up"

    @flow("errnamed-debug", registry=registry)
    def body(ctx: FlowContext) -> Any:
        yield Step("connect", flaky, retry=Retry(attempts=3, backoff="fixed", delay="1ms"))
        try:
            yield Step("boom", lambda: 1 / 0)
        except StepFailedError:
            pass
        except ZeroDivisionError:
            pass
        return "done"

    caplog.set_level(logging.DEBUG, logger="crux_gen")
    store = MemoryStore()
    result = body.run(store=store)
    assert result.status == "completed", result
    lines = attempt_lines(caplog)
    seen = [(r.flow_id, r.step, r.attempt, r.outcome, r.error) for r in lines]  # type: ignore[attr-defined]
    fid = result.flow_id
    assert seen == [
        (fid, "connect", 1, "retry", "ConnectionError"),
        (fid, "connect", 2, "retry", "ConnectionError"),
        (fid, "connect", 3, "ok", None),
        (fid, "boom", 1, "failed", "ZeroDivisionError"),
    ]
    assert all(r.levelno == logging.DEBUG for r in lines)
    assert all(isinstance(r.duration, float) and r.duration >= 0 for r in lines)  # type: ignore[attr-defined]
    assert lines[0].getMessage().startswith(f"flow {fid}: step 'connect' attempt 1 took ")
    assert lines[0].getMessage().endswith("ms: retry (ConnectionError)")
    assert lines[2].getMessage().endswith(": ok")
    # A replay runs no step and logs no attempt.
    caplog.clear()
    assert get_flow(fid, store=store).status == "completed"
    assert attempt_lines(caplog) == []


def test_below_debug_no_attempt_is_logged_nor_timed(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()

    @flow("errnamed-quiet", registry=registry)
    def body(ctx: FlowContext) -> Any:
        return (yield Step("a", lambda: 1))

    caplog.set_level(logging.INFO, logger="crux_gen")
    assert body.run(store=MemoryStore()).value == 1
    assert attempt_lines(caplog) == []
    calls: Calls[str] = Calls(1)
    [(_, quiet)] = calls.submit([("k", Call(0, lambda: 5, 1, 0.0))])  # run inline
    assert isinstance(quiet, Returned) and (quiet.value, quiet.took) == (5, None)
    caplog.set_level(logging.DEBUG, logger="crux_gen")
    timed_calls: Calls[str] = Calls(1)
    [(_, timed)] = timed_calls.submit([("k", Call(0, lambda: 6, 1, 0.0))])
    assert isinstance(timed, Returned) and timed.value == 6 and isinstance(timed.took, float)
    pooled: Calls[str] = Calls(2, inline=False)  # a worker's threads (concurrency > 1)
    try:
        assert pooled.submit([("k", Call(0, lambda: 7, 1, 0.0))]) == []
        [(_, on_thread)] = pooled.results(timeout=5)
    finally:
        pooled.close()
    assert isinstance(on_thread, Returned) and isinstance(on_thread.took, float)


# -- crux-gen worker: the same, on stderr ---------------------------------------------------

WORKER_FLOWS = """
from crux_gen import Step, Suspend, flow

@flow("errnamed-cli")
def waits(ctx):
    yield Suspend("go")
    return (yield Step("after-go", lambda: "went"))
"""


def read_until(stream: Any, text: str, seen: list[str], timeout: float = 30) -> None:
    """Read lines of *stream* into *seen* until one holds *text*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no line with {text!r} in:\n{''.join(seen)}")


def test_crux_gen_worker_warns_of_a_new_store_and_logs_attempts_at_debug(tmp_path: Path) -> None:
    from tests.test_cli import REPO, load_module

    (tmp_path / "errnamed_cli.py").write_text(WORKER_FLOWS)
    db = tmp_path / "typo.db"
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ["PYTHONPATH"] = str(REPO)
    worker = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "worker", "errnamed_cli", "--db", str(db),
         "--poll", "100ms", "--log-level", "DEBUG"],
        cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        read_until(worker.stderr, "new, empty store", seen)
        assert str(db) in seen[-1] and "WARNING" in seen[-1], seen[-1]
        waits = load_module(tmp_path / "errnamed_cli.py").waits
        fid = waits.run(store=str(db)).flow_id
        assert signal_flow(fid, "go", None, store=str(db))
        read_until(worker.stderr, "step 'after-go' attempt 1 took", seen)
        assert seen[-1].rstrip().endswith(": ok") and f"flow {fid}:" in seen[-1], seen[-1]
        assert "DEBUG crux_gen:" in seen[-1], seen[-1]
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, "".join(seen) + rest
    assert get_flow(fid, store=str(db)).value == "went"
