"""Onboarding: a flow that sends a welcome email, waits up to a day for the user
to verify their address, asks an LLM for a first-week plan and schedules check-ins.

Run the whole story from the repository root, in one command::

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/python examples/onboarding.py

That starts the flow in this process (it suspends at ``email-verified``), signals
it from a second process and resumes it from a third, as a web app, a webhook
handler and a worker would. State lives in ``onboarding.db`` (SQLite, in the
current directory; ``--db PATH`` to change it), and the stand-in email sender
appends to ``onboarding-outbox.jsonl`` (``--outbox PATH``).

Or drive each stage yourself::

    .venv/bin/python examples/onboarding.py start           # prints the flow id
    .venv/bin/python examples/onboarding.py signal FLOW_ID  # the "user clicked the link" webhook
    .venv/bin/python examples/onboarding.py resume FLOW_ID  # prints "completed" and the plan

The ``first-week-plan`` step calls an OpenAI-compatible chat completions API when
``OPENAI_API_KEY`` is set (``OPENAI_BASE_URL``, default https://api.openai.com/v1;
``OPENAI_MODEL``, default gpt-4o-mini) and otherwise writes a plan locally, so the
example needs no network and no key.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Generator, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs

from crux_gen import (
    Command,
    CruxError,
    FlowContext,
    FlowResult,
    Retry,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore

DEFAULT_DB = "onboarding.db"
DEFAULT_OUTBOX = "onboarding-outbox.jsonl"


# -- Stand-ins for the services a real app would call ------------------------------


class LocalMailer:
    """A stand-in for an email API: each message becomes one JSON line in a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def send(self, to: str, template: str, data: dict[str, Any], idempotency_key: str) -> None:
        # A real email API takes an idempotency key too: a step interrupted by a
        # crash runs again (at-least-once), and the key stops a second email.
        message = {"to": to, "template": template, "data": data, "key": idempotency_key}
        with self.path.open("a", encoding="utf-8") as outbox:
            outbox.write(json.dumps(message) + "\n")

    def sent(self, template: str, key_prefix: str = "") -> list[dict[str, Any]]:
        """The messages sent with *template* whose key starts with *key_prefix*."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        messages = [json.loads(line) for line in lines if line.strip()]
        return [
            m for m in messages if m["template"] == template and m["key"].startswith(key_prefix)
        ]


mailer = LocalMailer(DEFAULT_OUTBOX)  # main() points it at --outbox


def chat_completion(prompt: str) -> str:
    """Ask an OpenAI-compatible chat completions endpoint (standard library only)."""
    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    body = {
        "model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "messages": [
            {"role": "system", "content": "You write short, friendly onboarding plans."},
            {"role": "user", "content": prompt},
        ],
    }
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response)
    return str(reply["choices"][0]["message"]["content"]).strip()


def make_plan(name: str, goal: str) -> str:
    """A first-week plan: from the LLM when OPENAI_API_KEY is set, else written locally."""
    if os.environ.get("OPENAI_API_KEY"):
        return chat_completion(
            f"Write a five-day first-week plan for {name}, a new user whose goal is "
            f"{goal!r}. One short line per day."
        )
    days = ["set up your workspace", "follow the tutorial", f"take a first step toward {goal}",
            "share what you made", "plan week two"]  # fmt: skip
    lines = [f"Day {n}: {task}." for n, task in enumerate(days, start=1)]
    return "\n".join([f"{name}'s first week ({goal}):", *lines])


def schedule_checkins(email: str, start: date) -> list[str]:
    """Stand-in for a scheduler API: one check-in a day for the first five days."""
    return [(start + timedelta(days=n)).isoformat() for n in range(1, 6)]


# -- The flow --------------------------------------------------------------------


@attrs.frozen
class EmailVerified:
    """The payload of the ``email-verified`` signal."""

    verified_at: str


@flow("onboarding")
def onboarding(ctx: FlowContext) -> Generator[Command, Any, dict[str, Any]]:
    """Welcome, wait for verification (24h at most), plan the first week, schedule check-ins."""
    email, name, goal = ctx.input["email"], ctx.input["name"], ctx.input["goal"]

    # Each step runs once; on every later run its recorded result is returned instead.
    yield Step(
        "send-welcome",
        lambda: mailer.send(email, "welcome", {"name": name}, f"{ctx.flow_id}/send-welcome"),
    )

    # Parks the flow: the process is free until a signal arrives (or 24h pass: "expired").
    verification: EmailVerified = yield Suspend(
        "email-verified", schema=EmailVerified, timeout="24h"
    )
    if not ctx.is_replaying:
        print(f"  [flow] {email} verified at {verification.verified_at}")

    plan: str = yield Step(
        "first-week-plan",
        lambda: make_plan(name, goal),
        retry=Retry(attempts=3, backoff="exponential"),
    )

    # ctx.now() is recorded, so a replay computes the same dates.
    today = ctx.now().date()
    checkins: list[str] = yield Step("schedule-checkins", lambda: schedule_checkins(email, today))
    return {"plan": plan, "checkins": checkins}


# -- The three stages, each of which can run in its own process -------------------


def start(store: SQLiteStore, email: str, name: str, goal: str, flow_id: str | None) -> str:
    """Start a flow (a web app's sign-up handler); returns its id."""
    result = onboarding.run(
        input={"email": email, "name": name, "goal": goal}, store=store, flow_id=flow_id
    )
    print(f"  flow id      {result.flow_id}")
    print(f"  status       {result.status}")
    if result.status == "suspended":
        print(f"  waiting_for  {result.waiting_for} (expires {_when(result.wake_at)})")
    sent = mailer.sent("welcome", f"{result.flow_id}/")
    print(f"  outbox       {len(sent)} welcome email(s) for this flow in {mailer.path}")
    return result.flow_id


def signal(store: SQLiteStore, flow_id: str, verified_at: str) -> None:
    """Record the ``email-verified`` signal (a webhook handler).

    This only writes the signal to the store: no step of the flow runs here.
    """
    signal_flow(flow_id, "email-verified", {"verified_at": verified_at}, store=store)
    print(f"  signal 'email-verified' recorded for flow {flow_id} (verified_at={verified_at})")


def resume(store: SQLiteStore, flow_id: str) -> FlowResult:
    """Continue the flow (a worker): completed steps are replayed, not run again."""
    result = onboarding.run(resume=flow_id, store=store)
    print(f"  status       {result.status}")
    if result.status == "completed":
        source = "the LLM" if os.environ.get("OPENAI_API_KEY") else "the local stand-in"
        print(f"  plan (from {source}):")
        for line in result.value["plan"].splitlines():
            print(f"    {line}")
        print(f"  check-ins    {', '.join(result.value['checkins'])}")
    elif result.waiting_for:
        print(f"  waiting_for  {result.waiting_for}")
    welcomes = len(mailer.sent("welcome", f"{flow_id}/"))
    print(f"  send-welcome ran {'exactly once' if welcomes == 1 else f'{welcomes} times'}"
          f" ({welcomes} welcome email(s) for this flow in {mailer.path})")  # fmt: skip
    return result


def demo(args: argparse.Namespace) -> int:
    """All three stages, in three processes, against one SQLite file."""
    print(f"Onboarding demo: store {args.db}, outbox {args.outbox}\n")
    print(f"1. Start (process {os.getpid()}): send the welcome email, then wait.")
    store = SQLiteStore(args.db)
    flow_id = start(store, args.email, args.name, args.goal, flow_id=args.flow_id)
    common = ["--db", args.db, "--outbox", args.outbox]
    stages = [
        ("2. Signal (a second process): the user clicked the verification link.", "signal"),
        ("3. Resume (a third process): replay the recorded steps, run the rest.", "resume"),
    ]
    script = os.path.relpath(__file__)
    if script.startswith(".."):
        script = __file__
    for title, command in stages:
        argv = [script, command, *common, flow_id]
        print(f"\n{title}\n  $ python {' '.join(argv)}", flush=True)
        if subprocess.run([sys.executable, *argv]).returncode != 0:
            print(f"error: the {command} stage failed", file=sys.stderr)
            return 1

    print("\n4. What the store recorded (get_flow, no code run):")
    info = get_flow(flow_id, store=store)
    for entry in info.history:
        print(f"  {entry.position}. {entry.kind:<8} {entry.name:<18} {entry.state}")
    for sig in info.signals:
        print(f"  signal {sig.name!r}: {sig.state}")
    return 0


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The crux_gen onboarding example.")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    parser.add_argument("--outbox", default=DEFAULT_OUTBOX, help="where emails are written")
    commands = parser.add_subparsers(dest="command")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        # Also accepted after the subcommand: `onboarding.py signal --db x.db ID`.
        sub.add_argument("--db", default=argparse.SUPPRESS)
        sub.add_argument("--outbox", default=argparse.SUPPRESS)
        return sub

    for sub in (add("demo", "start, signal and resume in three processes (the default)"),
                add("start", "start a flow, print its id")):  # fmt: skip
        sub.add_argument("--email", default="user@example.com")
        sub.add_argument("--name", default="Henri")
        sub.add_argument("--goal", default="shipping")
        sub.add_argument("--flow-id", help="an id of your own (default: a random one)")
    add("signal", "record the email-verified signal").add_argument("flow_id")
    add("resume", "resume a flow, print its result").add_argument("flow_id")
    # No subcommand: the demo, with its defaults.
    parser.set_defaults(
        command="demo", email="user@example.com", name="Henri", goal="shipping", flow_id=None
    )
    args = parser.parse_args(argv)
    mailer.path = Path(args.outbox)

    try:
        if args.command == "demo":
            return demo(args)
        store = SQLiteStore(args.db)
        if args.command == "start":
            start(store, args.email, args.name, args.goal, args.flow_id)
        elif args.command == "signal":
            signal(store, args.flow_id, datetime.now(timezone.utc).isoformat())
        else:
            resume(store, args.flow_id)
    except CruxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
