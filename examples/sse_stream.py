"""Streaming a (fake) LLM's tokens to a browser as server-sent events while a
worker runs the flow: ``ctx.set_event`` / ``get_event``, ``write_stream`` /
``read_stream``.

A WSGI app on the standard library's ``wsgiref`` (Flask is not among this
project's dependencies; a Flask view returning ``Response(gen(),
mimetype="text/event-stream")`` over the same generator is the same thing), and
a ``Worker`` in a thread beside it. Run it from the repository root (installed as
the README says)::

    python3 -m venv .venv && .venv/bin/pip install --config-settings editable_mode=strict -e .
    .venv/bin/python examples/sse_stream.py serve --db chat.db --port 8000

    curl -X POST localhost:8000/ask -d '{"prompt": "why are durable flows useful"}'
    # 201 {"flow_id": "3c9e…"}
    curl -N 'localhost:8000/stream?flow=3c9e…'
    # data: "WHY"
    # data: "ARE"
    # …
    # event: end
    # data: {"status": "completed", "phase": "done", "value": "WHY ARE …"}

- ``POST /ask`` (JSON ``{"prompt"}``) starts the ``sse-answer`` flow (``start``:
  the worker runs it) and returns its id at once.
- ``GET /stream?flow=ID`` answers ``text/event-stream``: one ``data:`` event per
  token as the step writes it (``read_stream``, which waits for each), then an
  ``end`` event with the flow's status, its ``phase`` event (``get_event``) and
  value. A client that connects late gets every token from the first.
- ``GET /phase?flow=ID``: the flow's ``phase`` event, waiting up to 5 s for it.

The flow: ``ctx.set_event("phase", "generating")``; a step that calls the fake
model, which ``write_stream``s each token as it "arrives" (``--delay`` seconds
apart) and returns the whole text; ``ctx.close_stream``; ``phase`` ``"done"``.
A token written by an attempt that then fails stays in the stream (a step's
stream writes are at least once): a real app would number the attempt
(``current_step().attempt``) or write from the flow body, once.

With no arguments (``.venv/bin/python examples/sse_stream.py``) it is a
self-contained demo: it serves on a free port in a
temporary directory, asks a question, prints the events as they arrive (and
whether the flow was still running at the first token), and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from crux_gen import (
    Command,
    FlowContext,
    FlowNotFoundError,
    Step,
    flow,
    get_event,
    get_flow,
    read_stream,
    write_stream,
)
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker

#: Seconds between two tokens of the fake model (``--delay``).
DELAY = [0.05]


def fake_llm(prompt: str) -> str:
    """A stand-in model: the prompt's words, upper-cased, one token at a time."""
    tokens = prompt.upper().split() or ["(SILENCE)"]
    for token in tokens:
        time.sleep(DELAY[0])
        write_stream("tokens", token)  # stored now: every reader sees it
    return " ".join(tokens)


@flow("sse-answer")
def answer(ctx: FlowContext) -> Generator[Command, Any, str]:
    ctx.set_event("phase", "generating")
    text: str = yield Step("generate", lambda: fake_llm(ctx.input["prompt"]))
    ctx.close_stream("tokens")
    ctx.set_event("phase", "done")
    return text


# -- The web app ------------------------------------------------------------------------

Start = Callable[[str, list[tuple[str, str]]], Any]


class ChatApp:
    """The WSGI app: ``POST /ask``, ``GET /stream``, ``GET /phase``."""

    def __init__(self, store: SQLiteStore, on_start: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_start = on_start

    def __call__(self, environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if (method, path) == ("POST", "/ask"):
            return self.ask(environ, start)
        if method == "GET" and path in ("/stream", "/phase") and "flow" in query:
            try:
                get_flow(query["flow"], store=self.store)
            except FlowNotFoundError:
                return reply(start, 404, {"error": "not-found", "message": "no such flow"})
            if path == "/phase":
                phase = get_event(query["flow"], "phase", store=self.store, timeout=5)
                return reply(start, 200, {"phase": phase})
            start("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
            return self.events(query["flow"])
        return reply(start, 404, {"error": "not-found", "message": f"{method} {path}"})

    def ask(self, environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            prompt = json.loads(environ["wsgi.input"].read(size))["prompt"]
        except (ValueError, KeyError, TypeError):
            return reply(start, 400, {"error": "bad-request", "message": 'give {"prompt": …}'})
        if not isinstance(prompt, str):
            return reply(start, 400, {"error": "bad-request", "message": "prompt: a string"})
        handle = answer.start(input={"prompt": prompt}, store=self.store)
        if self.on_start is not None:
            self.on_start()  # the worker takes it now rather than at its next poll
        return reply(start, 201, {"flow_id": handle.flow_id})

    def events(self, flow_id: str) -> Iterator[bytes]:
        """One SSE event per token as it lands, then ``end``."""
        for token in read_stream(flow_id, "tokens", store=self.store, timeout=30):
            yield f"data: {json.dumps(token)}\n\n".encode()
        info = get_flow(flow_id, store=self.store)
        end = {
            "status": str(info.status),
            "phase": get_event(flow_id, "phase", store=self.store),
            "value": info.value,
        }
        yield f"event: end\ndata: {json.dumps(end)}\n\n".encode()


def reply(start: Start, status: int, body: dict[str, Any]) -> list[bytes]:
    reasons = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found"}
    start(f"{status} {reasons[status]}", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- Running it -------------------------------------------------------------------------


def serve_in_thread(store: SQLiteStore, host: str, port: int) -> tuple[Any, Worker, list[Any]]:
    worker = Worker(store, [answer])
    app = ChatApp(store, on_start=worker.wake)
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=QuietHandler)
    threads = [
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
        threading.Thread(target=worker.run_forever, args=("1s",), name="worker"),
    ]
    for t in threads:
        t.start()
    return server, worker, threads


def stop(server: Any, worker: Worker, threads: list[threading.Thread]) -> None:
    server.shutdown()
    worker.stop()
    for t in threads:
        t.join()
    server.server_close()


def sse(url: str) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` of a ``text/event-stream`` as the events arrive."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        event = "message"
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                yield event, json.loads(line[len("data: ") :])
                event = "message"


def post(url: str, body: Any) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with opener.open(req, timeout=10) as response:
        return json.loads(response.read())


def demo(prompt: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp, "chat.db"))
        server, worker, threads = serve_in_thread(store, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            flow_id = post(base + "/ask", {"prompt": prompt})["flow_id"]
            print("POST /ask -> a flow of", get_flow(flow_id, store=store).name)
            for n, (event, data) in enumerate(sse(f"{base}/stream?flow={flow_id}")):
                if n == 0:
                    running = get_flow(flow_id, store=store).status == "running"
                    print("first token while the flow was running:", running)
                print(f"{event}: {json.dumps(data)}", flush=True)
        finally:
            stop(server, worker, threads)
            store.close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("serve", help="serve the app and a worker")
    run.add_argument("--db", default="chat.db")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--delay", type=float, default=0.05, help="seconds between tokens")
    ask = sub.add_parser("demo", help="the self-contained demo (the default)")
    ask.add_argument("--prompt", default="durable flows stream tokens as they come")
    ask.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    DELAY[0] = args.delay if args.command else DELAY[0]
    if args.command != "serve":
        return demo(getattr(args, "prompt", "durable flows stream tokens as they come"))
    store = SQLiteStore(args.db)
    server, worker, threads = serve_in_thread(store, args.host, args.port)
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop(server, worker, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
