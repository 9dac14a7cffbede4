"""What the page modules (``bulk``, ``flowview``) use of the dashboard: a protocol,
so that they need not import ``app`` (which imports them)."""

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
