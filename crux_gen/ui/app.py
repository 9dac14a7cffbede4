"""The dashboard's WSGI app: its routes and pages. The request and response
plumbing is in :mod:`~crux_gen.ui.wsgi`, the token, sessions and CSRF checks in
:mod:`~crux_gen.ui.sessions`, what the forms do in :mod:`~crux_gen.ui.actions`,
and what the pages show, computed from the store, in :mod:`~crux_gen.ui.pages`.

Plain WSGI on the standard library, with Jinja2 (autoescape on) for the HTML.
Every link is built from the request's ``SCRIPT_NAME``, so the app works mounted
under any prefix. Pages:

- ``GET /``: counts per status, and a page of flows, filtered by ``status``,
  ``name``, ``q`` (an id or id prefix), ``since``/``until``, ``top`` (top-level
  only) and ``error_type``/``error_message``, paged by ``before`` (keyset, never
  an OFFSET) (:mod:`~crux_gen.ui.flows`);
- ``GET /errors``: the failed flows grouped by error type and message;
- ``POST /bulk`` (actions allowed): retry or cancel the filtered set, after a
  confirmation saying how many (:mod:`~crux_gen.ui.bulk`);
- ``GET /flows/<id>``: one flow, a window of its history (``?start=N``), and
  ``?tail=P`` its changes as JSON (:mod:`~crux_gen.ui.flowview`); with actions
  allowed, ``POST /flows/<id>`` with ``action`` = ``signal``, ``cancel``, ``pause``,
  ``unpause``, ``retry`` or ``fork`` (with ``at``: it leads to the new flow's page);
- ``GET /metrics``: the store's counts, and this process's metrics when it is
  instrumented, in the Prometheus text format (:mod:`~crux_gen.ui.promtext`);
- ``GET /static/<file>``: the stylesheet and the script that refreshes pages.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import quote

from ..commands import describe
from ..errors import (
    CruxError,
    FlowClosedError,
    FlowNotFoundError,
    FlowStateError,
    InvalidValueError,
    MissingDependencyError,
    StoreError,
)
from . import bulk, flows, flowview, pages, promtext
from .actions import ActionError, fork, nul_error, perform
from .host import action_form, no_token
from .sessions import Sessions
from .wsgi import SECURITY_HEADERS, Request, Response, StartResponse, redirect

try:
    import jinja2
except ImportError:  # pragma: no cover - the ui extra is part of the test extra
    raise MissingDependencyError("the dashboard (crux_gen.ui)", "ui", "Jinja2") from None

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def make_app(
    store: Any,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    refresh_seconds: float = 2,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app showing the flows of *store*; mount it under any prefix.

    >>> app = make_app(SQLiteStore("crux.db"))

    Read-only unless *allow_actions*: then the flow page has forms to signal,
    cancel, pause, unpause, retry and fork a flow (a fork needs the flow registered
    in this process: import its module first). A POST must come from a session (the cookie a visit
    of ``/?token=…`` sets, a new session per visit) or carry *token* in an
    ``Authorization: Bearer`` header, and carry the CSRF field of a page shown to
    that same session, else it gets 403 and changes nothing; a POST with
    ``?token=`` in its address is a 400. The signal form offers only the
    signal names the flow waits for, and another name is a 400. Pages reload
    their data every *refresh_seconds* (0: never).
    """
    if allow_actions and not (isinstance(token, str) and token):
        raise InvalidValueError(
            "make_app token", token, "must be a non-empty str when allow_actions is True"
        )
    if not isinstance(refresh_seconds, (int, float)) or refresh_seconds < 0:
        raise InvalidValueError("make_app refresh_seconds", refresh_seconds, "must be 0 or more")
    return Dashboard(
        store, allow_actions=allow_actions, token=token, refresh_seconds=refresh_seconds
    )


class Dashboard:
    """The WSGI app ``make_app`` returns."""

    def __init__(
        self, store: Any, *, allow_actions: bool, token: str | None, refresh_seconds: float
    ) -> None:
        self.store = store
        self.allow_actions = allow_actions
        self.refresh = f"{refresh_seconds:g}"
        self.sessions = Sessions(token)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("crux_gen.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(pages.FILTERS)
        self.templates.globals.update(describe=describe, ago=pages.ago)
        self.static = {
            f.name: f.read_bytes()
            for f in resources.files("crux_gen.ui").joinpath("static").iterdir()
            if f.name.endswith(tuple(STATIC_TYPES))
        }

    # -- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.route(request)
        except StoreError as exc:
            response = self.error_page(request, 503, "The store cannot be read", str(exc))
        except Exception:  # a bug of ours: say so without showing its traceback
            print(traceback.format_exc(), file=environ.get("wsgi.errors", sys.stderr))
            response = self.error_page(
                request, 500, "Internal error", "the dashboard failed; its log has the traceback"
            )
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        body = response.body
        headers = [*response.headers, *SECURITY_HEADERS, ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [] if request.method == "HEAD" else [body]

    def route(self, request: Request) -> Response:
        """Dispatch *request* by its path and method."""
        path = request.path
        if path.startswith("/static/"):
            return self.static_file(request, path[len("/static/") :])
        given = request.query.get("token")
        if given is not None and self.allow_actions:
            if request.method in ("GET", "HEAD"):
                return self.log_in(request, given)
            return self.error_page(
                request,
                400,
                "Bad request",
                "a token goes in no POST's address (servers log addresses): open "
                "…/?token=… once, then post the page's forms; nothing was changed",
            )
        if path == "/":
            if request.method not in ("GET", "HEAD"):
                return self.not_allowed(request)
            return self.flows_page(request)
        if path.startswith("/flows/") and len(path) > len("/flows/"):
            flow_id = path[len("/flows/") :]
            if request.method == "POST" and self.allow_actions:
                return self.act(request, flow_id)
            if request.method not in ("GET", "HEAD"):
                return self.not_allowed(request)
            return self.flow_page(request, flow_id)
        if path == "/metrics":  # read-only, as every page: no token (a scraper has none)
            if request.method not in ("GET", "HEAD"):
                return self.not_allowed(request)
            return promtext.metrics_page(self.store)
        if path == "/errors":
            if request.method not in ("GET", "HEAD"):
                return self.not_allowed(request)
            return self.errors_page(request)
        if path == "/bulk":
            if request.method == "POST" and self.allow_actions:
                return bulk.bulk(self, request)
            return self.not_allowed(request)
        if path == "/favicon.ico":  # browsers ask for it at the root: nothing, quietly
            return Response(204, headers=[("Cache-Control", "public, max-age=86400")])
        if path in ("/flows", "/flows/"):
            return redirect(request.base + "/")
        return self.error_page(request, 404, "Not found", f"nothing is at {path}")

    # -- pages ---------------------------------------------------------------------------

    def render(self, request: Request, template: str, code: int = 200, **context: Any) -> Response:
        """Render *template* with what every page needs."""
        return Response(code, self.html(request, template, **context).encode("utf-8", "replace"))

    def html(self, request: Request, template: str, **context: Any) -> str:
        """The text of *template* (a page or a part of one) with what every page needs."""
        return self.templates.get_template(template).render(
            base=request.base,
            refresh=self.refresh,
            allow_actions=self.allow_actions,
            flow_url=lambda flow_id: flow_url(request.base, flow_id),
            **context,
        )

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        """A page saying what went wrong, with a link back to the flows."""
        return self.render(
            request, "error.html", status, title=title, message=message, http_status=status
        )

    def not_allowed(self, request: Request) -> Response:
        """405: the dashboard is read-only (or the page takes no POST)."""
        why = (
            "this page takes no POST"
            if self.allow_actions
            else "the dashboard is read-only; start it with --allow-actions to act on flows"
        )
        response = self.error_page(request, 405, "Method not allowed", why)
        response.headers.append(("Allow", "GET, HEAD"))
        return response

    def flows_page(self, request: Request) -> Response:
        """Counts per status and one page of flows, filtered and keyset-paged."""
        now = self.store.clock.now()
        f, problem = flows.read_filters(request.query, now)
        before_text = request.query.get("before", "").strip() or None
        if before_text is not None and problem is None:
            try:
                pages.parse_before(before_text)
            except ValueError:
                problem = f"before {before_text!r} is not an ISO date and time"
        counts = pages.status_counts(self.store)
        rows: list[Any] = []
        next_url = first_url = None
        if problem is None:
            try:
                rows, next_before = flows.page_of(self.store, f, before_text)
            except (CruxError, ValueError) as exc:
                if isinstance(exc, StoreError):
                    raise
                problem = str(exc)
            else:
                if next_before is not None:
                    next_url = f"{request.base}/?{f.query(before=next_before)}"
                if before_text is not None:
                    first_url = f"{request.base}/" + (f"?{f.query()}" if f.any else "")
        who = self.sessions.who(request) if self.allow_actions else None
        return self.render(
            request,
            "flows.html",
            200 if problem is None else 400,
            counts=counts,
            limits=pages.limits_in_use(self.store),
            rows=rows,
            f=f,
            status=f.text["status"],
            name=f.text["name"],
            statuses=pages.STATUSES,
            next_url=next_url,
            first_url=first_url,
            problem=problem,
            now=now,
            csrf="" if who is None else self.sessions.csrf(who),
        )

    def errors_page(self, request: Request) -> Response:
        """The failed flows grouped by error type and message, each group a link to
        the list of its flows."""
        try:
            groups = flows.groups_of(self.store)
        except ValueError as exc:
            return self.error_page(request, 400, "Not available", str(exc))
        return self.render(request, "errors.html", groups=groups)

    def flow_page(
        self,
        request: Request,
        flow_id: str,
        status: int = 200,
        notice: tuple[str, str] | None = None,
    ) -> Response:
        """One flow (:mod:`crux_gen.ui.flowview`)."""
        return flowview.flow_page(self, request, flow_id, status, notice)

    def static_file(self, request: Request, name: str) -> Response:
        """The stylesheet or the script."""
        body = self.static.get(name)
        if body is None or request.method not in ("GET", "HEAD"):
            return self.error_page(request, 404, "Not found", f"no static file {name!r}")
        suffix = name[name.rfind(".") :]
        return Response(200, body, STATIC_TYPES[suffix], [("Cache-Control", "public, max-age=300")])

    # -- the token, and actions ----------------------------------------------------------

    def log_in(self, request: Request, given: str) -> Response:
        """``?token=…`` (on any page): with the right token, start a session and go on
        to the same page without the token in its address (:meth:`Sessions.start`);
        else 403."""
        if not self.sessions.is_token(given):
            return self.error_page(request, 403, "Forbidden", "that is not the dashboard's token")
        return self.sessions.start(request)

    def act(self, request: Request, flow_id: str) -> Response:
        """A POST from one of the flow page's forms: check the token and the CSRF field,
        then signal, cancel, pause, unpause, retry or fork the flow (:mod:`crux_gen.ui.actions`)."""
        who = self.sessions.who(request)
        if who is None:
            return no_token(self, request)
        if "\0" in flow_id:
            why = str(nul_error("flow id", flow_id, "no flow has such an id; nothing was changed"))
            return self.error_page(request, 404, "No such flow", why)
        form = action_form(self, request, who)
        if isinstance(form, Response):
            return form
        try:
            if form.get("action") == "fork":  # to the new flow's page
                made = fork(self.store, flow_id, form)
                return redirect(f"{flow_url(request.base, made)}?done=fork")
            done = perform(self.store, flow_id, form)
        except FlowNotFoundError:
            return self.error_page(request, 404, "No such flow", f"no flow has the id {flow_id!r}")
        except ActionError as exc:
            return self.flow_page(request, flow_id, exc.status, ("error", exc.message))
        except (FlowClosedError, FlowStateError) as exc:
            return self.flow_page(request, flow_id, 409, ("error", str(exc)))
        except (CruxError, ValueError, TypeError) as exc:
            if isinstance(exc, StoreError):
                raise
            return self.flow_page(request, flow_id, 400, ("error", str(exc)))
        return redirect(f"{flow_url(request.base, flow_id)}?done={done}")


def flow_url(base: str, flow_id: str) -> str:
    """The flow page's URL under the mount point *base*."""
    return f"{base}/flows/{quote(flow_id, safe='')}"
