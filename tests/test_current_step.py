"""``current_step()`` inside step functions, on every store: the step's flow, name,
position (as ``get_flow`` shows it) and attempt (1, 2, … across retries), on the
thread that runs it (the pool's for ``All`` branches), ``None`` elsewhere; and
what the attempt after a crash reads, in real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from crux_gen import (
    All,
    ContinueAsNew,
    FlowContext,
    Retry,
    Sleep,
    Step,
    StepInfo,
    WaitUntil,
    current_step,
    flow,
    get_flow,
    resume,
)
from crux_gen.clock import FakeClock
from crux_gen.worker import Worker


def test_a_step_reads_its_flow_name_position_and_attempt(store: Any) -> None:
    seen: dict[str, Any] = {}

    def charge() -> str:
        info = current_step()
        seen["charge"] = info
        assert info is not None
        return f"{info.flow_id}:{info.position}"

    @flow("cs-plain")
    def plain(ctx: FlowContext) -> Any:
        seen["body"] = current_step()
        yield Step("prepare", lambda: seen.setdefault("prepare", current_step()))
        seen["between"] = current_step()
        key = yield Step("charge", charge)
        seen["after"] = current_step()
        return key

    r = plain.run(store=store, flow_id="cs-1")
    assert r.status == "completed"
    assert seen["prepare"] == StepInfo("cs-1", "prepare", 0, 1)
    assert seen["charge"] == StepInfo("cs-1", "charge", 1, 1)
    assert r.value == "cs-1:1"
    assert seen["body"] is None and seen["between"] is None and seen["after"] is None
    assert current_step() is None  # nothing leaks to the caller's thread
    positions = {h.name: h.position for h in get_flow("cs-1", store=store).history}
    assert positions == {"prepare": 0, "charge": 1}


def test_retried_attempts_read_1_2_3_with_the_same_key(store: Any) -> None:
    attempts: list[StepInfo] = []

    def flaky() -> str:
        info = current_step()
        assert info is not None
        attempts.append(info)
        if info.attempt < 3:
            raise ConnectionError(f"try {info.attempt}")
        return f"{info.flow_id}:{info.position}"

    @flow("cs-retry")
    def retried(ctx: FlowContext) -> Any:
        yield Step("first", lambda: 1)
        return (yield Step("call", flaky, retry=Retry(attempts=3, delay="100ms")))

    r = retried.run(store=store, flow_id="cs-2")
    assert r.status == "completed" and r.value == "cs-2:1"
    assert [(a.name, a.position, a.attempt) for a in attempts] == [
        ("call", 1, 1),
        ("call", 1, 2),
        ("call", 1, 3),
    ]
    assert {f"{a.flow_id}:{a.position}" for a in attempts} == {"cs-2:1"}
    assert get_flow("cs-2", store=store).history[1].attempts == 3


def test_a_parked_backoff_resumes_with_the_next_attempt(store: Any, clock: FakeClock) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        info = current_step()
        assert info is not None
        attempts.append(info.attempt)
        if info.attempt < 2:
            raise TimeoutError("slow")
        return "ok"

    @flow("cs-park")
    def parked(ctx: FlowContext) -> Any:
        return (yield Step("call", flaky, retry=Retry(attempts=3, delay="1h")))

    r = parked.run(store=store, flow_id="cs-3")
    assert r.status == "suspended" and attempts == [1]
    clock.advance(timedelta(hours=1))
    assert resume("cs-3", store=store).value == "ok"
    assert attempts == [1, 2]  # the store's count, read back in a new resume


def test_all_branches_on_the_pool_each_read_their_own_step(store: Any) -> None:
    barrier = threading.Barrier(3, timeout=20)
    seen: dict[str, tuple[StepInfo | None, str]] = {}

    def branch(n: int) -> int:
        barrier.wait()  # the three run at once, so on three threads
        seen[f"b{n}"] = (current_step(), threading.current_thread().name)
        return n

    @flow("cs-all")
    def fan(ctx: FlowContext) -> Any:
        yield Step("before", lambda: 0)
        return (yield All([Step(f"b{n}", lambda n=n: branch(n)) for n in range(3)]))

    r = fan.run(store=store, flow_id="cs-4")
    assert r.value == [0, 1, 2]
    history = get_flow("cs-4", store=store).history
    positions = {h.name: h.position for h in history if h.kind == "step"}
    for n in range(3):
        info, _thread = seen[f"b{n}"]
        assert info == StepInfo("cs-4", f"b{n}", positions[f"b{n}"], 1)
    assert len({thread for _, thread in seen.values()}) == 3
    assert sorted(positions[f"b{n}"] for n in range(3)) == [2, 3, 4]  # after the All's record


def test_a_condition_and_a_worker_with_concurrency(store: Any, clock: FakeClock) -> None:
    seen: list[Any] = []

    def ready() -> bool:
        seen.append(("condition", current_step()))
        return True

    def work() -> str:
        info = current_step()
        seen.append(("step", info))
        assert info is not None
        return info.flow_id

    @flow("cs-worker")
    def worked(ctx: FlowContext) -> Any:
        yield Sleep("nap", "1s")
        yield WaitUntil("ready", ready)
        return (yield Step("work", work))

    for n in range(3):
        assert worked.run(store=store, flow_id=f"cs-w{n}").status == "suspended"
    clock.advance(timedelta(hours=1))
    Worker(store=store, flows=[worked], concurrency=3).run_once()
    steps = sorted(
        (info.flow_id, info.name, info.position) for kind, info in seen if kind == "step"
    )
    assert steps == [(f"cs-w{n}", "work", 2) for n in range(3)]
    assert [info for kind, info in seen if kind == "condition"] == [None, None, None]
    for n in range(3):
        assert get_flow(f"cs-w{n}", store=store).value == f"cs-w{n}"


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from crux_gen import FlowContext, Retry, Step, current_step, flow, resume
    from crux_gen.stores.sqlite import SQLiteStore

    db, log, phase = sys.argv[1], sys.argv[2], sys.argv[3]

    def charge():
        info = current_step()
        with open(log, "a") as f:
            f.write(json.dumps([phase, info.name, info.position, info.attempt]) + "\\n")
            f.flush()
            os.fsync(f.fileno())
        if info.attempt == 1:
            raise ConnectionError("first try fails")
        if phase == "crash":
            os._exit(7)  # the process dies in attempt 2
        return f"{info.flow_id}:{info.position}"

    @flow("cs-crash")
    def crashing(ctx: FlowContext):
        yield Step("prepare", lambda: 1)
        return (yield Step("charge", charge, retry=Retry(attempts=5, delay=0)))

    store = SQLiteStore(db, lease_ttl="1s")
    if phase == "crash":
        crashing.run(store=store, flow_id="cs-x")
    else:
        print(json.dumps(resume("cs-x", store=store).value))
    """
)


def test_the_attempt_after_a_crash_reads_the_recorded_count_again(tmp_path: Path) -> None:
    """The store records an attempt when it ends (raised or returned): attempt 2,
    cut short by the process dying, is not recorded, so the new process runs
    attempt 2 again; the key ``flow_id:position`` stays the same."""
    script, log, db = tmp_path / "crash.py", tmp_path / "log.jsonl", tmp_path / "c.db"
    script.write_text(SCRIPT)
    first = subprocess.run(
        [sys.executable, str(script), str(db), str(log), "crash"], capture_output=True, timeout=60
    )
    assert first.returncode == 7, first.stderr.decode()
    time.sleep(1.2)  # the dead process's lease (1s) expires
    second = subprocess.run(
        [sys.executable, str(script), str(db), str(log), "rerun"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(second.stdout) == "cs-x:1"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        ["crash", "charge", 1, 1],
        ["crash", "charge", 1, 2],
        ["rerun", "charge", 1, 2],
    ]


def test_a_continue_as_new_run_counts_positions_from_0_again(store: Any) -> None:
    """The README's caveat: the key ``flow_id:position`` repeats across runs of one
    flow id, so a flow that continues as new adds something of its own."""
    seen: list[tuple[int, StepInfo | None]] = []

    @flow("cs-again")
    def again(ctx: FlowContext) -> Any:
        yield Step("work", lambda: seen.append((ctx.input, current_step())))
        if ctx.input < 2:
            yield ContinueAsNew(ctx.input + 1)
        return ctx.input

    assert again.run(input=1, store=store, flow_id="cs-5").value == 2
    assert seen == [(1, StepInfo("cs-5", "work", 0, 1)), (2, StepInfo("cs-5", "work", 0, 1))]
    assert get_flow("cs-5", store=store).run == 2
