"""Flows of the liveness stress (``tests/stress/liveness.py``), run by
``crux-gen worker tests.stress_flows`` processes.

Every step function appends one fsync'd line to the side-effect log named in the
flow's input, when it starts and when it ends::

    <pid> <flow id> <step name> start
    <pid> <flow id> <step name> done|fail

Step names are ``g<run>-s<stage>-<label>``: the run of ``ContinueAsNew`` and the
stage of the flow's code (the branches of an ``All`` share one), so the stress
knows which step came after which. A step that consumes a signal's payload is
labelled ``got<sid>``, the sender's unique id of that signal.

A step planned to fail does so once: it leaves a marker file, and runs fine the
next time (after ``crux-gen retry``).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import Any

from crux_gen import (
    All,
    Child,
    ChildFlowError,
    ContinueAsNew,
    FlowContext,
    Sleep,
    Step,
    Suspend,
    flow,
)
from crux_gen import Any as AnyOf


def append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def effect(log: str, flow_id: str, name: str, fail_marker: str | None = None) -> str:
    """One step's side effect: log it; fail once when *fail_marker* is a new file."""
    pid = os.getpid()
    append(log, f"{pid} {flow_id} {name} start\n")
    if fail_marker is not None:
        marker = Path(fail_marker)
        if not marker.exists():
            marker.touch()
            append(log, f"{pid} {flow_id} {name} fail\n")
            raise RuntimeError(f"{name} fails once on purpose")
    append(log, f"{pid} {flow_id} {name} done\n")
    return name


def _step(ctx: FlowContext, stage: int, label: str, fail: bool = False) -> Step:
    given = ctx.input
    name = f"g{given.get('gen', 0)}-s{stage}-{label}"
    marker = None
    if fail:
        marker = os.path.join(given["marks"], f"{ctx.flow_id}-{name}")
    # A child is logged under its id and its parent's: a child id named by two parents
    # (``shared-N``) is free again once the first child is pruned, and the second
    # parent then starts a new flow under it, whose steps run for the first time.
    who = ctx.flow_id if "parent" not in given else f"{ctx.flow_id}<{given['parent']}"
    return Step(name, partial(effect, given["log"], who, name, marker))


def _leaf_input(ctx: FlowContext, **plan: Any) -> dict[str, Any]:
    return {"log": ctx.input["log"], "marks": ctx.input["marks"], "parent": ctx.flow_id, **plan}


@flow("st-leaf")
def leaf(ctx: FlowContext) -> Generator[Any, Any, str]:
    """A child: a step, maybe a wait for the signal ``poke``, maybe a failing step."""
    plan = ctx.input
    yield _step(ctx, 0, "a")
    if plan.get("wait"):
        poked = yield Suspend("poke")
        yield _step(ctx, 1, f"got{poked['sid']}")
    if plan.get("fail"):
        yield _step(ctx, 2, "boom", fail=True)
    return "leaf"


@flow("st-parent")
def parent(ctx: FlowContext) -> Generator[Any, Any, Any]:
    """A step; an ``All`` of two steps and a child; an ``Any`` of the signal ``go``, a
    waiting child and a timer; the signal ``go``; a child that may fail (caught);
    a step that may fail; then ``ContinueAsNew`` until the planned run count."""
    plan = ctx.input
    gen = plan.get("gen", 0)
    yield _step(ctx, 0, "first")
    yield All(
        [
            _step(ctx, 1, "a"),
            _step(ctx, 1, "b", fail=plan.get("fail_all", False)),
            Child(leaf, input=_leaf_input(ctx, wait=plan.get("all_child_waits", False))),
        ]
    )
    won = yield AnyOf(
        [
            Suspend("go"),
            Child(leaf, input=_leaf_input(ctx, wait=True)),
            Sleep("nap", f"{plan.get('nap_ms', 300)}ms"),
        ]
    )
    if won.name == "go":
        yield _step(ctx, 3, f"got{won.value['sid']}")
    go = yield Suspend("go")
    yield _step(ctx, 4, f"got{go['sid']}")
    shared = plan.get("shared_child")
    try:
        yield Child(
            leaf,
            input=_leaf_input(ctx, fail=plan.get("child_fails", False), wait=bool(shared)),
            flow_id=shared if shared else None,
        )
    except ChildFlowError:
        yield _step(ctx, 5, "child-failed")
    yield _step(ctx, 6, "last", fail=plan.get("fail_last", False))
    if gen < plan.get("gens", 0):
        yield ContinueAsNew({**plan, "gen": gen + 1})
    return gen
