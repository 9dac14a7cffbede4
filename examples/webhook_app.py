"""A sign-up web app on crux_gen: a WSGI app (stdlib ``wsgiref``, no framework) and
a worker beside it.

Run it from the repository root (installed as the README says)::

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/python examples/webhook_app.py serve --db signup.db --port 8000

    curl -X POST localhost:8000/signup -d '{"email": "henri@example.com", "name": "Henri"}'
    # 201 {"flow_id": "7f3a…", "status": "suspended", "waiting_for": "email-verified", …}
    curl 'localhost:8000/verify?flow=7f3a…&token=Qx9…'  # the link in the welcome email
    # 202 {"flow_id": "7f3a…", "status": "verifying"}
    curl 'localhost:8000/status?flow=7f3a…'
    # 200 {"flow_id": "7f3a…", "status": "completed", "value": {…}, …}

- ``POST /signup`` (JSON ``{"email", "name"}``) starts the ``webhook-signup`` flow
  in the request: it sends the welcome email (a step) and suspends until the
  address is verified, at most ``--verify-within`` (default ``24h``). Returns its id.
- ``GET /verify?flow=ID&token=T`` records the ``email-verified`` signal and returns
  at once; the worker runs the rest. The link's token is the signal's idempotency
  key: of any number of clicks on one link, concurrent or not, exactly one is
  recorded (202) and the others get 409 (``signal_flow(..., key=token)`` returned
  ``False``: nothing stored). A link whose wait expired: 410; a wrong token: 403;
  an unknown id: 404. Errors are JSON ``{"error": code, "message": text}``.
- ``GET /status?flow=ID``: where the flow stands.

Where the worker runs (the choice of this example): ``serve`` starts a thread in
the same process that runs ``Worker.run_forever``; ``/verify`` wakes it, so a
verification is handled at once, and its poll (``--poll``, default ``1s``) expires
flows whose link timed out. For more throughput, or to deploy the web tier and
the workers separately, run ``serve --no-worker`` and any number of::

    .venv/bin/python examples/webhook_app.py worker --db signup.db

each of which stops cleanly (the step in hand finishes) on SIGINT or SIGTERM.
Both processes need the flow's code, so both import this module.

With no arguments, ``.venv/bin/python examples/webhook_app.py`` is a self-contained demo:
it serves on a free port in a temporary directory, signs up, verifies, waits for
the flow to complete, prints what happened, and exits.

The "emails" (and the other steps' side effects) are JSON lines appended to an
outbox file next to the database (``signup.outbox.jsonl`` for ``signup.db``),
one line each time a step runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timezone
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import attrs

from crux_gen import (
    Command,
    FlowClosedError,
    FlowContext,
    FlowNotFoundError,
    Step,
    Suspend,
    flow,
    get_flow,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

log = logging.getLogger("webhook_app")

#: Where steps append their side effects; ``main`` sets it next to the database.
OUTBOX = Path("signup.outbox.jsonl")


# -- The flow -------------------------------------------------------------------------


def send(flow_id: str, step: str, to: str, subject: str, body: str) -> dict[str, str]:
    """A stand-in email API: append the message to the outbox, durably."""
    message = {"flow_id": flow_id, "step": step, "to": to, "subject": subject, "body": body}
    with open(OUTBOX, "a") as f:
        f.write(json.dumps(message) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return message


def first_week_plan(flow_id: str, name: str) -> list[str]:
    plan = [f"Day 1: {name} sets up a profile", "Day 3: first project", "Day 7: review"]
    send(flow_id, "first-week-plan", "planner", "plan", json.dumps(plan))
    return plan


@attrs.frozen
class EmailVerified:
    """The payload of the ``email-verified`` signal."""

    verified_at: str


@flow("webhook-signup")
def signup(ctx: FlowContext) -> Generator[Command, Any, dict[str, Any]]:
    """Welcome, wait for the verification link, plan the first week, schedule check-ins."""
    fid, email, name = ctx.flow_id, ctx.input["email"], ctx.input["name"]
    link = f"/verify?flow={fid}&token={ctx.input['token']}"
    yield Step("send-welcome", lambda: send(fid, "send-welcome", email, "Welcome!", link))
    verified: EmailVerified = yield Suspend(
        "email-verified", schema=EmailVerified, timeout=ctx.input["verify_within"]
    )
    plan: list[str] = yield Step("first-week-plan", lambda: first_week_plan(fid, name))
    yield Step(
        "schedule-checkins",
        lambda: send(fid, "schedule-checkins", email, "Check-ins", "; ".join(plan)),
    )
    return {"verified_at": verified.verified_at, "plan": plan}


# -- The WSGI app ---------------------------------------------------------------------

Response = tuple[int, dict[str, Any]]
StartResponse = Callable[..., Any]
REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
}


def error(http_status: int, code: str, message: str, **extra: Any) -> Response:
    return http_status, {"error": code, "message": message, **extra}


class SignupApp:
    """The WSGI application: ``SignupApp(store, verify_within="24h", on_signal=worker.wake)``.

    One store object serves every request thread (``SQLiteStore`` keeps a
    connection per thread). *on_signal* is called after a verification is recorded.
    """

    def __init__(
        self,
        store: SQLiteStore,
        *,
        verify_within: str = "24h",
        on_signal: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.verify_within = verify_within
        self.on_signal = on_signal

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        routes = {"/signup": ("POST", self.signup), "/verify": ("GET", self.verify)}
        routes["/status"] = ("GET", self.status)
        if path not in routes:
            status, body = error(404, "not_found", f"no route {path}")
        elif method != routes[path][0]:
            status, body = error(405, "method_not_allowed", f"use {routes[path][0]} {path}")
        else:
            status, body = routes[path][1](environ)
        data = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(f"{status} {REASONS[status]}", headers)
        return [data]

    def signup(self, environ: dict[str, Any]) -> Response:
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            data = json.loads(environ["wsgi.input"].read(size) or b"{}")
        except ValueError:
            return error(400, "bad_json", "the body must be a JSON object")
        if not isinstance(data, dict) or not isinstance(data.get("email"), str):
            return error(400, "bad_request", 'send {"email": "...", "name": "..."}')
        name = data.get("name") or data["email"].split("@")[0]
        token = secrets.token_urlsafe(16)  # the link's token: the signal's idempotency key
        user = {
            "email": data["email"],
            "name": str(name),
            "verify_within": self.verify_within,
            "token": token,
        }
        result = signup.run(input=user, store=self.store)
        return 201, {
            "flow_id": result.flow_id,
            "status": str(result.status),
            "waiting_for": result.waiting_for,
            "verify_url": f"/verify?flow={result.flow_id}&token={token}",
        }

    def verify(self, environ: dict[str, Any]) -> Response:
        flow_id, token = _query(environ, "flow"), _query(environ, "token")
        if flow_id is None or token is None:
            return error(
                400, "bad_request", "give the link's flow and token: /verify?flow=ID&token=T"
            )
        try:
            if get_flow(flow_id, store=self.store).input.get("token") != token:
                return error(403, "bad_token", "this verification link is not valid")
            now = datetime.now(timezone.utc).isoformat()
            # The token is the key: a second click on the same link (even at the same
            # moment, from another request thread or process) stores nothing.
            stored = signal_flow(
                flow_id, "email-verified", {"verified_at": now}, store=self.store, key=token
            )
        except FlowNotFoundError:
            return error(404, "unknown_flow", f"no sign-up with id {flow_id!r}")
        except FlowClosedError as exc:
            if exc.status == "expired":
                return error(410, "expired", "this verification link has expired; sign up again")
            return error(
                409, "finished", f"this sign-up is already {exc.status}", status=exc.status
            )
        if not stored:
            return error(409, "already_verified", "this address is already verified")
        if self.on_signal is not None:
            self.on_signal()
        return 202, {"flow_id": flow_id, "status": "verifying"}

    def status(self, environ: dict[str, Any]) -> Response:
        flow_id = _query(environ, "flow")
        if flow_id is None:
            return error(400, "bad_request", "give the flow id: /status?flow=ID")
        try:
            info = get_flow(flow_id, store=self.store)
        except FlowNotFoundError:
            return error(404, "unknown_flow", f"no sign-up with id {flow_id!r}")
        return 200, {
            "flow_id": info.flow_id,
            "name": info.name,
            "status": str(info.status),
            "waiting_for": info.waiting_for,
            "value": info.value,
            "error": info.error.message if info.error else None,
        }


def _query(environ: dict[str, Any], name: str) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    return values[0] if values else None


# -- Serving ----------------------------------------------------------------------------


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per request, so a slow request does not hold up the others."""

    daemon_threads = True


class LoggingHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop())


def serve(args: argparse.Namespace) -> int:
    store = SQLiteStore(args.db)
    worker = Worker(store, [signup]) if args.worker else None
    app = SignupApp(
        store,
        verify_within=args.verify_within,
        on_signal=worker.wake if worker is not None else None,
    )
    server = make_server(
        args.host, args.port, app, server_class=ThreadingWSGIServer, handler_class=LoggingHandler
    )
    threads = [threading.Thread(target=server.serve_forever, name="http", daemon=True)]
    if worker is not None:
        run = threading.Thread(target=worker.run_forever, args=(args.poll,), name="worker")
        threads.append(run)
    stopping: list[int] = []
    _stop_on_signals(lambda: stopping.append(1))  # a handler only sets a flag (no locks)
    for t in threads:
        t.start()
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    while not stopping:
        time.sleep(0.1)
    server.shutdown()  # no new requests
    if worker is not None:
        worker.stop()  # the flow in hand reaches its next command boundary
    for t in threads:
        t.join()
    server.server_close()
    log.info("stopped")
    return 0


def work(args: argparse.Namespace) -> int:
    worker = Worker(SQLiteStore(args.db), [signup])
    _stop_on_signals(worker.stop)
    worker.run_forever(poll=args.poll)
    return 0


def demo() -> int:
    """Serve on a free port in a temporary directory; sign up, verify, watch it complete."""
    global OUTBOX
    with tempfile.TemporaryDirectory() as tmp:
        OUTBOX = Path(tmp, "signup.outbox.jsonl")
        store = SQLiteStore(Path(tmp, "signup.db"))
        worker = Worker(store, [signup])
        app = SignupApp(store, on_signal=worker.wake)
        server = make_server(
            "127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=LoggingHandler
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        run = threading.Thread(target=worker.run_forever, args=("1s",))
        run.start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            _, body = request("POST", base + "/signup", {"email": "henri@example.com"})
            print("POST /signup  ->", body)
            print("GET  /verify  ->", request("GET", base + body["verify_url"]))
            status_url = base + "/status?flow=" + body["flow_id"]
            deadline = time.monotonic() + 10
            while (state := request("GET", status_url)[1])["status"] != "completed":
                if time.monotonic() > deadline:
                    raise SystemExit(f"the flow did not complete: {state}")
                time.sleep(0.05)
            print("GET  /status  ->", state)
            print("GET  /verify  ->", request("GET", base + body["verify_url"]), "(again)")
            print("outbox:")
            for line in OUTBOX.read_text().splitlines():
                message = json.loads(line)
                print(f"  {message['step']:<18} to {message['to']}: {message['subject']}")
        finally:
            worker.stop()
            run.join()
            server.shutdown()
            server.server_close()
            store.close()
    return 0


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """A JSON HTTP call, with no proxy: ``(status, decoded body)``, 4xx included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def main(argv: list[str] | None = None) -> int:
    global OUTBOX
    parser = argparse.ArgumentParser(description="A sign-up web app on crux_gen.")
    commands = parser.add_subparsers(dest="command")
    served = commands.add_parser("serve", help="the web app, with a worker thread")
    worker = commands.add_parser("worker", help="a worker process only")
    for sub in (served, worker):
        sub.add_argument("--db", default="signup.db", help="the SQLite file (default signup.db)")
        sub.add_argument("--poll", default="1s", help="the worker's poll interval (default 1s)")
    served.add_argument("--host", default="127.0.0.1")
    served.add_argument("--port", type=int, default=8000, help="0 for a free port")
    served.add_argument("--verify-within", default="24h", help="how long a link is valid")
    served.add_argument(
        "--no-worker", dest="worker", action="store_false", help="run workers separately"
    )
    args = parser.parse_args(argv)
    if args.command is None:
        return demo()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    OUTBOX = Path(args.db).with_suffix(".outbox.jsonl")
    return serve(args) if args.command == "serve" else work(args)


if __name__ == "__main__":
    sys.exit(main())
