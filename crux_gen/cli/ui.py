"""``crux-gen ui``: serve the dashboard (``crux_gen.ui.make_app``) with wsgiref."""

from __future__ import annotations

import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
from typing import Any
from urllib.parse import unquote_plus
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from . import CLIError, Count, Seconds, db_option, store_at
from .deploy import import_module
from .format import echo, to_json

#: Hosts only this machine can reach: any other --host prints a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request (a page's refresh never waits for
    another's); request threads do not keep the process alive."""

    daemon_threads = True


class ThreadingServer6(ThreadingServer):
    """The same on an IPv6 address."""

    address_family = socket.AF_INET6


#: A query field of an address: its separator, name and value.
QUERY_FIELD = re.compile(r"([?&])([^=&#\s'\"]*)=([^&#\s'\"]*)")


def without_token(text: str) -> str:
    """*text* (a log line) with the value of every ``token`` query field of the
    addresses in it (by its decoded name, any case) shown as ``…``."""

    def redact(field: re.Match[str]) -> str:
        mark, name, value = field.groups()
        if unquote_plus(name).strip().lower() == "token":
            value = "…"
        return f"{mark}{name}={value}"

    return QUERY_FIELD.sub(redact, text)


class QuietHandler(WSGIRequestHandler):
    """Log only the requests that went wrong: a page refreshing every 2 s would
    otherwise fill the terminal. A token in a logged address shows as ``…``."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        text = str(int(code)) if isinstance(code, int) else str(code)
        if text.startswith(("1", "2", "3")):
            return
        super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        """Every line this handler logs (requests that failed, bad request lines)."""
        super().log_message("%s", without_token(format % args))


@click.command("ui", short_help="Serve the web dashboard of the flows.")
@db_option
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=Count(0, 65535),
    help="The TCP port; 0 picks a free one (the printed address has it).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The interface to listen on; any but this machine's own prints a warning.",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Add forms to signal, cancel and retry flows, behind a token and a CSRF check.",
)
@click.option(
    "--token",
    default=None,
    envvar="CRUX_UI_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="The token actions need (default: a new one, printed at start).",
)
@click.option(
    "--refresh",
    default=2.0,
    show_default=True,
    type=Seconds(86400),
    help="Seconds between a page's reloads of its data (0: never; at most a day).",
)
@click.option(
    "--module",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="A module defining flows, imported first (repeatable): a flow page can fork its flows.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the address as one JSON object ({"url": ..., "token": ...}) first.',
)
def ui_command(
    db: str,
    port: int,
    host: str,
    allow_actions: bool,
    token: str | None,
    refresh: float,
    modules: tuple[str, ...],
    as_json: bool,
) -> None:
    """Serve the dashboard of the flows in --db until SIGINT or SIGTERM.

    The flows page has the counts per status and a table of flows, filtered by
    status and name, newest first; a flow's page has its input, status, a
    timeline of its commands, their results and errors, and its signals. Both
    reload their data every --refresh seconds.

    Read-only unless --allow-actions: then a flow's page can signal, cancel,
    pause, unpause and retry it, and fork it from any position of its history
    (the flows of the --module modules: a fork replays the history kept against
    the flow's code first), once the browser has visited the address printed at
    start (it carries the token). It listens on 127.0.0.1 only, unless --host
    says otherwise. The first line printed is the address it serves.

    \b
    Example:
      crux-gen ui --db crux.db
      crux-gen ui --db crux.db --port 0 --allow-actions --module myapp.flows
    """
    try:
        from ..ui import make_app
    except ImportError as exc:
        raise CLIError(f"the dashboard needs Jinja2: pip install 'crux-gen[ui]' ({exc})") from None
    if token is not None and not allow_actions:
        raise CLIError("--token is for --allow-actions (a read-only dashboard takes no token)")
    if allow_actions and token is not None and not token.strip():
        raise CLIError("--token is empty; give a token, or leave it out to have one made")
    for module in modules:
        import_module(module)
    made = allow_actions and token is None
    if made:
        token = secrets.token_urlsafe(24)
    with store_at(db) as store:
        app = make_app(store, allow_actions=allow_actions, token=token, refresh_seconds=refresh)
        server_class = ThreadingServer6 if ":" in host else ThreadingServer
        server = make_server(host, port, app, server_class=server_class, handler_class=QuietHandler)
        try:
            serve(server, host, made, token, as_json=as_json)
        finally:
            server.server_close()


def serve(
    server: WSGIServer, host: str, made: bool, token: str | None, *, as_json: bool = False
) -> None:
    """Print the address (and a made token), serve until SIGINT or SIGTERM."""
    port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    if as_json:
        click.echo(to_json({"url": url, "token": token if made else None}))
    else:
        click.echo(f"serving on {url}")
    if made and not as_json:
        click.echo(f"actions allowed with the token {token}: open {url}?token={token}")
    sys.stdout.flush()
    if host not in LOOPBACK:
        echo(
            f"warning: listening on {host}: anyone who can reach this host on port {port} "
            "can read every flow; put it behind your own authentication",
            err=True,
        )
    echo("Ctrl-C or SIGTERM stops it", err=True)
    stop = threading.Event()

    def stopping(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, stopping) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        thread.join(5)
        for s, handler in previous.items():
            signal.signal(s, handler)
