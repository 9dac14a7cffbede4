"""Approval: a purchase request that fans out its checks, waits for a manager with
reminders, and provisions what was bought in a child flow.

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/python examples/approval.py

runs the whole story on ``approval.db`` (``--db PATH``): the request's three checks
run at the same time (``All``); the flow then waits for ``approved`` or
``rejected``, sending a reminder each day nobody answers (``Any`` with a
``Sleep``), holding no process meanwhile; a manager approves it from another
process; the flow calls the ``provision`` flow (``Child``), which orders the item
and waits for the vendor's delivery signal; the delivery arrives; the parent,
woken as soon as its child finished, records the outcome. Each stage is a
separate process, as a web app, a webhook handler and a worker would be.

Drive it yourself::

    .venv/bin/python examples/approval.py start                    # prints the request's flow id
    .venv/bin/python examples/approval.py tick                     # a worker pass (reminds daily)
    .venv/bin/python examples/approval.py decide FLOW_ID approved  # the manager's answer
    .venv/bin/python examples/approval.py deliver FLOW_ID          # the vendor's delivery (child)
    .venv/bin/python examples/approval.py show FLOW_ID             # status, custom status, children

A day is ``--day`` long (default ``"1d"``; the demo uses ``"2s"``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from crux_gen import (
    All,
    Child,
    ChildFlowError,
    FlowContext,
    Sleep,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen import Any as AnyOf
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

DEFAULT_DB = "approval.db"
LOG = "approval-outbox.jsonl"


def send(kind: str, **fields: Any) -> dict[str, Any]:
    """A stand-in for email and HTTP calls: one JSON line in the outbox file."""
    line = {"kind": kind, **fields}
    with open(LOG, "a") as out:
        out.write(json.dumps(line) + "\n")
    return line


# -- The checks a request goes through (run at the same time) --------------------------


def check_budget(request: dict[str, Any]) -> dict[str, Any]:
    return {"check": "budget", "ok": request["price"] <= 5_000}


def check_vendor(request: dict[str, Any]) -> dict[str, Any]:
    return {"check": "vendor", "ok": request["vendor"] not in {"shady-corp"}}


def check_policy(request: dict[str, Any]) -> dict[str, Any]:
    return {"check": "policy", "ok": request["item"] != "yacht"}


# -- The child flow: order the item, wait for the delivery ------------------------------


@flow("provision")
def provision(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    request = ctx.input
    order = yield Step("place-order", lambda: send("order", item=request["item"]))
    ctx.set_custom_status({"stage": "waiting for delivery"})
    delivered = yield Suspend("delivered")
    return {"order": order["item"], "delivered": delivered}


# -- The parent flow ---------------------------------------------------------------------


@flow("purchase-approval")
def purchase_approval(ctx: FlowContext) -> Generator[Any, Any, dict[str, Any]]:
    request = ctx.input
    day = request.get("day", "1d")
    ctx.set_custom_status({"stage": "checking"})
    checks = yield All(
        [
            Step("check-budget", lambda: check_budget(request)),
            Step("check-vendor", lambda: check_vendor(request)),
            Step("check-policy", lambda: check_policy(request)),
        ]
    )
    failed = [c["check"] for c in checks if not c["ok"]]
    if failed:
        return {"outcome": "refused", "failed": failed}

    yield Step("ask-manager", lambda: send("email", to=request["manager"], about=request["item"]))
    reminders = 0
    while True:
        ctx.set_custom_status({"stage": "waiting for the manager", "reminders": reminders})
        answer = yield AnyOf(
            [Suspend("approved"), Suspend("rejected"), Sleep(f"reminder-{reminders + 1}", day)]
        )
        if answer.name in ("approved", "rejected"):
            break
        reminders += 1
        yield Step(
            f"remind-{reminders}", lambda n=reminders: send("reminder", to=request["manager"], n=n)
        )
    if answer.name == "rejected":
        return {"outcome": "rejected", "by": answer.value, "reminders": reminders}

    ctx.set_custom_status({"stage": "provisioning"})
    try:
        provisioned = yield Child(provision, input=request)
    except ChildFlowError as exc:
        return {"outcome": "provisioning failed", "child": exc.flow_id, "status": exc.status}
    ctx.set_custom_status({"stage": "done"})
    return {"outcome": "provisioned", "reminders": reminders, **provisioned}


# -- The stages, each run in a process of its own ------------------------------------------


def stage(args: argparse.Namespace) -> None:
    store = SQLiteStore(args.db)
    if args.stage == "start":
        request = {
            "item": "laptop", "price": 1_800, "vendor": "acme", "manager": "grace@example.com",
            "day": args.day,
        }  # fmt: skip
        print(purchase_approval.run(input=request, store=store).flow_id)
    elif args.stage == "tick":
        print(Worker(store, [purchase_approval, provision]).run_once())
    elif args.stage == "decide":
        signal_flow(args.flow_id, args.answer, "grace@example.com", store=store)
        Worker(store, [purchase_approval, provision]).run_once()
        print(get_flow(args.flow_id, store=store).status)
    elif args.stage == "deliver":
        [child] = get_flow(args.flow_id, store=store).children
        signal_flow(child, "delivered", {"at": "dock 4"}, store=store)
        worker = Worker(store, [purchase_approval, provision])
        worker.run_once()  # the child finishes, which makes its parent due at once
        worker.run_once()  # the parent records the outcome
        print(get_flow(args.flow_id, store=store).status)
    elif args.stage == "show":
        info = get_flow(args.flow_id, store=store)
        print(json.dumps({
            "status": info.status, "custom_status": info.custom_status,
            "children": list(info.children), "value": info.value,
        }))  # fmt: skip


def demo(args: argparse.Namespace) -> None:
    """The whole story, each stage in a fresh process."""

    def run(*stage_args: str) -> str:
        cmd = [sys.executable, __file__, "--db", args.db, "--day", "2s", *stage_args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

    Path(LOG).unlink(missing_ok=True)
    flow_id = run("start")
    print(f"request {flow_id} is waiting for the manager after its checks")
    time.sleep(2.2)
    run("tick")
    print("a day passed with no answer: a reminder went out")
    print(f"the manager approved it: the request is {run('decide', flow_id, 'approved')}")
    print(f"the vendor delivered: the request is {run('deliver', flow_id)}")
    print(run("show", flow_id))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--day", default="1d", help='how long a "day" is (the demo: "2s")')
    sub = p.add_subparsers(dest="stage")
    sub.add_parser("start")
    sub.add_parser("tick")
    decide = sub.add_parser("decide")
    decide.add_argument("flow_id")
    decide.add_argument("answer", choices=["approved", "rejected"])
    for name in ("deliver", "show"):
        sub.add_parser(name).add_argument("flow_id")
    args = p.parse_args(argv)
    if args.stage is None:
        demo(args)
    else:
        stage(args)


if __name__ == "__main__":
    main()
