"""What the page modules (``bulk``, ``flowview``) use of the dashboard: a protocol,
so that they need not import ``app`` (which imports them); and the checks every
action's POST makes (its token, its form, its CSRF field), once."""

from __future__ import annotations

from typing import Any, Protocol

from .sessions import Sessions
from .wsgi import Request, Response


class Host(Protocol):
    """The dashboard (``app.Dashboard``) as a page module sees it."""

    store: Any
    allow_actions: bool
    sessions: Sessions

    def render(self, request: Request, template: str, code: int = 200, **context: Any) -> Response:
        """Render *template* with what every page needs."""
        ...

    def html(self, request: Request, template: str, **context: Any) -> str:
        """The text of *template* with what every page needs."""
        ...

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        """A page saying what went wrong."""
        ...


def no_token(dash: Host, request: Request) -> Response:
    """An action without the dashboard's token: 403, nothing changed."""
    return dash.error_page(
        request,
        403,
        "Forbidden",
        "actions need the dashboard's token: open the URL it printed at start "
        "(…/?token=…) or send an Authorization: Bearer header; nothing was changed",
    )


def action_form(dash: Host, request: Request, who: str) -> dict[str, str] | Response:
    """The form of an action's POST by session *who*, or the page refusing it (too
    large: 413; CSRF field missing or wrong: 403)."""
    form = request.form()
    if form is None:
        return dash.error_page(request, 413, "Too large", "the form is larger than 1 MiB")
    if not dash.sessions.csrf_ok(who, form.get("csrf", "")):
        return dash.error_page(
            request,
            403,
            "Forbidden",
            "the form's CSRF token is missing or wrong (reload the page); nothing was changed",
        )
    return form
