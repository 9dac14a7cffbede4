"""Regenerate docs/flow-page.png, the README's screenshot of the dashboard's flow page.

    .venv/bin/python docs/screenshot.py [--out docs/flow-page.png]

Builds a small demo store in a temporary directory (the README's onboarding flow:
one completed, one waiting for its signal, one whose LLM step failed three times),
serves it with ``crux-gen ui`` and saves the flow page of the failed flow with
Debian's headless Chromium (``/usr/bin/chromium``, ``apt-get install chromium``;
Playwright from the ``test`` extra). Steps take time on a fake clock that started
half an hour ago, so the timeline's bars have lengths worth looking at.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
from playwright.sync_api import sync_playwright

from crux_gen import (
    FakeClock,
    FlowContext,
    Registry,
    Retry,
    SQLiteStore,
    Step,
    Suspend,
    flow,
    resume,
    signal_flow,
)

CHROMIUM = "/usr/bin/chromium"
OUT = Path(__file__).resolve().parent / "flow-page.png"

registry = Registry()
clock = FakeClock(datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30))


@attrs.frozen
class EmailVerified:
    verified_at: str


def send_welcome(email: str) -> dict[str, str]:
    clock.advance("1200ms")
    return {"to": email, "template": "welcome"}


def make_plan(name: str) -> str:
    clock.advance("4s")
    if name == "Grace":
        raise ConnectionError("LLM API unreachable")
    return f"a first-week plan for {name}"


def schedule(email: str, plan: str) -> dict[str, str]:
    clock.advance("800ms")
    return {"email": email, "plan": plan}


@flow("onboarding", registry=registry)
def onboarding(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield Step("send-welcome", lambda: send_welcome(ctx.input["email"]))
    yield Suspend("email-verified", schema=EmailVerified, timeout="24h")
    plan = yield Step(
        "first-week-plan",
        lambda: make_plan(ctx.input["name"]),
        retry=Retry(attempts=3, backoff="exponential", delay="2s"),
    )
    return (yield Step("schedule-checkins", lambda: schedule(ctx.input["email"], plan)))


def run_to_rest(store: SQLiteStore, flow_id: str) -> str:
    """Resume until the flow finishes or waits for its signal, moving the clock over
    retry backoffs (a step waiting to retry is suspended, waiting for itself)."""
    while True:
        r = resume(flow_id, store=store, flows=[onboarding])
        if r.status != "suspended" or r.waiting_for == "email-verified":
            return str(r.status)
        assert r.wake_at is not None
        clock.advance(max(r.wake_at - clock.now(), timedelta(0)))


def build(path: Path) -> str:
    """The demo store; returns the failed flow's id."""
    store = SQLiteStore(path, clock=clock)
    people = [("ada@example.com", "Ada"), ("grace@example.com", "Grace")]
    failed = ""
    for email, name in people:
        r = onboarding.run(input={"email": email, "name": name}, store=store)
        clock.advance("20s")
        signal_flow(r.flow_id, "email-verified", {"verified": True}, store=store)  # rejected
        run_to_rest(store, r.flow_id)
        clock.advance("15s")
        verified = {"verified_at": clock.now().isoformat().replace("+00:00", "Z")}
        signal_flow(r.flow_id, "email-verified", verified, store=store, key=f"k-{name}")
        if run_to_rest(store, r.flow_id) == "failed":
            failed = r.flow_id
    onboarding.run(input={"email": "linus@example.com", "name": "Linus"}, store=store)
    assert failed
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "crux.db"
        failed = build(db)
        script = shutil.which("crux-gen", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "crux_gen"]
        proc = subprocess.Popen(
            [*command, "ui", "--db", str(db), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # its start-up hint and request log
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            match = re.fullmatch(r"serving on (http://\S+/)\n", first)
            if match is None:
                sys.exit(f"crux-gen ui printed {first!r}, not 'serving on URL'")
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                page.goto(match.group(1))
                page.locator(f'#flows tr[data-flow-id="{failed}"] a.flow-link').click()
                page.wait_for_selector("#timeline svg rect.bar")
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
