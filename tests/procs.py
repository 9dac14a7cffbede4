"""Flows and command-line entry points for the subprocesses of ``test_processes.py``.

Run from the repository root as ``python -m tests.procs COMMAND DB [options]``.
Every command prints its outcomes as JSON, one object a line, and exits 0 when
the outcome is one a test expects (``FlowBusyError`` and ``LeaseLostError``
included, printed as ``"busy"`` and ``"lease-lost"``); anything else is a
traceback and a non-zero exit.

Every step appends a line to the flow's side-effect log (its path is in the
flow's input), fsync'd, when it starts and when it is done::

    <time> <pid> <flow id> <step> start|done

so a test counts exactly how many times each step ran, and in which process.
``CRUX_TEST_SLEEP`` (JSON, step name -> seconds) makes steps of this process
sleep between the two lines. ``CRUX_TEST_GATE`` (JSON, step name -> a path) holds
a step of this process at its very entry, before its first line: it touches
``<path>.entered`` and waits (30 s at most) for ``<path>.go``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import attrs

from crux_gen import (
    FlowBusyError,
    FlowContext,
    FlowResult,
    LeaseLostError,
    Retry,
    Step,
    Suspend,
    flow,
    resume,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore


def effect(log: str, flow_id: str, step: str) -> dict[str, Any]:
    """The side effect of a step: a logged, fsync'd line before and after its work."""
    gate = json.loads(os.environ.get("CRUX_TEST_GATE", "{}")).get(step)
    if gate is not None:  # the runner has called the step; its work has not begun
        Path(gate + ".entered").touch()
        limit = time.monotonic() + 30
        while not os.path.exists(gate + ".go") and time.monotonic() < limit:
            time.sleep(0.005)
    pause = json.loads(os.environ.get("CRUX_TEST_SLEEP", "{}")).get(step, 0)
    _append(log, f"{time.time():.6f} {os.getpid()} {flow_id} {step} start\n")
    if pause:
        time.sleep(pause)
    _append(log, f"{time.time():.6f} {os.getpid()} {flow_id} {step} done\n")
    return {"step": step, "pid": os.getpid()}


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _step(ctx: FlowContext, name: str) -> Step:
    return Step(name, functools.partial(effect, ctx.input["log"], ctx.flow_id, name))


# -- flows ------------------------------------------------------------------------


@attrs.frozen
class EmailVerified:
    verified_at: str


@flow("xproc-onboarding")
def onboarding(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    """The API.md example, with logged side effects."""
    yield _step(ctx, "send-welcome")
    verification = yield Suspend("email-verified", schema=EmailVerified, timeout="24h")
    plan = yield _step(ctx, "first-week-plan")
    checkins = yield _step(ctx, "schedule-checkins")
    return {
        "structured": isinstance(verification, EmailVerified),
        "verified_at": verification.verified_at,
        "ran_by": [plan["pid"], checkins["pid"]],
    }


@flow("xproc-chain")
def chain(ctx: FlowContext) -> Generator[Any, Any, list[Any]]:
    """Steps ``step-1`` … ``step-N``; with ``wait_at: k``, waits for signal ``go``
    before step k. Returns the results in order (a signal's payload included)."""
    done: list[Any] = []
    for i in range(1, ctx.input["steps"] + 1):
        if i == ctx.input.get("wait_at"):
            done.append((yield Suspend("go")))
        done.append((yield _step(ctx, f"step-{i}")))
    return done


@flow("xproc-retry")
def retried(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    """One step, ``charge``, that fails its first try (anywhere) and is retried
    after an in-process backoff of 1.5 s."""
    log = ctx.input["log"]

    def charge() -> dict[str, Any]:
        first = not os.path.exists(log) or " charge start" not in Path(log).read_text()
        result = effect(log, ctx.flow_id, "charge")
        if first:
            raise ConnectionError("the card processor timed out")
        return result

    return (yield Step("charge", charge, retry=Retry(attempts=3, backoff="fixed", delay="1.5s")))


@flow("xproc-between")
def between(ctx: FlowContext) -> Generator[Any, Any, list[Any]]:
    """``step-1``; then, in the flow body (no step), say so with the file
    ``<log>.between`` and wait for ``<log>.go``; then ``step-2``."""
    first = yield _step(ctx, "step-1")
    Path(ctx.input["log"] + ".between").touch()
    deadline = time.monotonic() + 30
    while not os.path.exists(ctx.input["log"] + ".go") and time.monotonic() < deadline:
        time.sleep(0.005)
    second = yield _step(ctx, "step-2")
    return [first, second]


@flow("xproc-deadline")
def deadline(ctx: FlowContext) -> Generator[Any, Any, Any]:
    """``step-1``, then ``Suspend("go", timeout="6s")``. While replaying, the body
    says so with the file ``<log>.replaying`` and waits for ``<log>.go`` first, so
    a test can send signals while the flow is held and let its deadline pass. (6 s:
    the test starts a second process and signals it before the deadline, which took
    over 2 s on 2 busy cores.)"""
    yield _step(ctx, "step-1")
    if ctx.is_replaying:
        Path(ctx.input["log"] + ".replaying").touch()
        limit = time.monotonic() + 30
        while not os.path.exists(ctx.input["log"] + ".go") and time.monotonic() < limit:
            time.sleep(0.005)
    return (yield Suspend("go", timeout="6s"))


# -- commands -----------------------------------------------------------------------


def _show(result: FlowResult) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "flow_id": result.flow_id,
        "outcome": str(result.status),
        "waiting_for": result.waiting_for,
        "value": result.value,
    }


def _attempt(run: Callable[[], FlowResult]) -> dict[str, Any]:
    """Run a flow; the outcome a test reads, expected errors included, and when."""
    try:
        shown = _show(run())
    except FlowBusyError as exc:
        shown = {"pid": os.getpid(), "flow_id": exc.flow_id, "outcome": "busy"}
    except LeaseLostError as exc:
        shown = {"pid": os.getpid(), "flow_id": exc.flow_id, "outcome": "lease-lost"}
    return {**shown, "t": time.time()}


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def cmd_start(args: argparse.Namespace, store: SQLiteStore) -> None:
    """Start flows; print each one's outcome (the id of a suspended one, say)."""
    _wait_for_go(args)
    for _ in range(args.count):
        target: Any
        if args.flow == "onboarding":
            inp: dict[str, Any] = {"log": args.log, "email": "user@example.com"}
            target = onboarding
        elif args.flow in ("retry", "between", "deadline"):
            inp = {"log": args.log}
            target = {"retry": retried, "between": between, "deadline": deadline}[args.flow]
        else:
            inp = {"log": args.log, "steps": args.steps, "wait_at": args.wait_at}
            target = chain
        fid = args.flow_id if args.count == 1 else None
        _emit(_attempt(lambda: target.run(input=inp, store=store, flow_id=fid)))  # noqa: B023


def _wait_for_go(args: argparse.Namespace) -> None:
    """Stand at the start line: say so with a file, then wait for the go file."""
    if args.ready is None:
        return
    Path(args.ready, str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while not os.path.exists(args.go):
        if time.monotonic() > deadline:
            sys.exit("no go file within 30 s")
        time.sleep(0.002)


def cmd_resume(args: argparse.Namespace, store: SQLiteStore) -> None:
    """Resume one flow, by ``resume()`` or ``Flow.run(resume=…)``."""
    _wait_for_go(args)
    if args.via == "run":
        target = {"xproc-chain": chain, "xproc-onboarding": onboarding}[args.name]
        _emit(_attempt(lambda: target.run(resume=args.flow_id, store=store)))
    else:
        _emit(_attempt(lambda: resume(args.flow_id, store=store)))


def cmd_keep_resuming(args: argparse.Namespace, store: SQLiteStore) -> None:
    """Try to resume every 0.1 s while the flow is busy; one line per try."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        outcome = _attempt(lambda: resume(args.flow_id, store=store))
        _emit(outcome)
        if outcome["outcome"] != "busy":
            return
        time.sleep(0.1)
    sys.exit("the flow stayed busy for 30 s")


def cmd_threads(args: argparse.Namespace, store: SQLiteStore) -> None:
    """One store shared by a thread per flow; each signals its flow and resumes it."""
    barrier = threading.Barrier(len(args.flow_ids))
    outcomes: dict[str, dict[str, Any]] = {}

    def work(flow_id: str) -> None:
        try:
            barrier.wait(timeout=20)
            signal_flow(flow_id, "go", {"by": threading.get_ident()}, store=store)
            outcomes[flow_id] = _attempt(lambda: resume(flow_id, store=store))
        except Exception:
            outcomes[flow_id] = {"outcome": "error", "error": traceback.format_exc()}

    threads = [threading.Thread(target=work, args=(fid,)) for fid in args.flow_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for fid in args.flow_ids:
        _emit({"flow_id": fid, **outcomes.get(fid, {"outcome": "hung"})})


def cmd_fork(args: argparse.Namespace, store: SQLiteStore) -> None:
    """Use a store in the parent, then in forked children and meanwhile in the
    parent, then in the parent again after the children exit.

    Each child runs its own flow to the end (start, signal, resume) and exits
    with ``os._exit``: 0 when it completed, 1 otherwise, 2 on an exception.
    """
    inp = {"log": args.log, "steps": 3, "wait_at": 2}
    before = chain.run(input=inp, store=store, flow_id="parent-before")
    _emit({"who": "parent", "flow_id": "parent-before", "outcome": str(before.status)})
    children = []
    for n in range(args.children):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                fid = f"child-{n}"
                started = chain.run(input=inp, store=store, flow_id=fid)
                signal_flow(fid, "go", {"child": n}, store=store)
                ended = resume(fid, store=store)
                _emit({"who": "child", "flow_id": fid, "started": str(started.status),
                       "outcome": str(ended.status)})  # fmt: skip
                code = 0 if ended.status == "completed" else 1
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        children.append(pid)
    during = chain.run(input={"log": args.log, "steps": 2}, store=store, flow_id="parent-during")
    _emit({"who": "parent", "flow_id": "parent-during", "outcome": str(during.status)})
    codes = {}
    deadline = time.monotonic() + 30
    for pid in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                codes[pid] = "hung"
                break
            time.sleep(0.01)
    _emit({"who": "parent", "children": sorted(codes.values(), key=str)})
    signal_flow("parent-before", "go", {"parent": True}, store=store)
    after = resume("parent-before", store=store)
    _emit({"who": "parent", "flow_id": "parent-before", "outcome": str(after.status)})
    fresh = chain.run(input={"log": args.log, "steps": 2}, store=store, flow_id="parent-after")
    _emit({"who": "parent", "flow_id": "parent-after", "outcome": str(fresh.status)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.procs")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Callable[..., None]) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("db")
        p.add_argument("--lease-ttl", default="30s")
        p.set_defaults(fn=fn)
        return p

    p = command("start", cmd_start)
    p.add_argument("--log", required=True)
    p.add_argument(
        "--flow", choices=["chain", "onboarding", "retry", "between", "deadline"], default="chain"
    )
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--wait-at", type=int)
    p.add_argument("--flow-id")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--ready", help="a directory to touch a file in when ready")
    p.add_argument("--go", help="a file whose appearance starts the run")
    p = command("resume", cmd_resume)
    p.add_argument("flow_id")
    p.add_argument("--via", choices=["resume", "run"], default="resume")
    p.add_argument("--name", default="xproc-chain", help="the flow, for --via run")
    p.add_argument("--ready", help="a directory to touch a file in when ready")
    p.add_argument("--go", help="a file whose appearance starts the run")
    p = command("keep-resuming", cmd_keep_resuming)
    p.add_argument("flow_id")
    p = command("threads", cmd_threads)
    p.add_argument("flow_ids", nargs="+")
    p = command("fork", cmd_fork)
    p.add_argument("--log", required=True)
    p.add_argument("--children", type=int, default=3)

    args = parser.parse_args(argv)
    # The lease keeper's thread is alive when the fork command forks; that is the point.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    args.fn(args, SQLiteStore(args.db, lease_ttl=args.lease_ttl))


if __name__ == "__main__":
    main()
