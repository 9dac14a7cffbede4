"""The dashboard's WSGI plumbing on the standard library: what a handler reads of a
request, what it answers, and the headers every answer carries."""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

#: The largest form body an action reads.
MAX_BODY = 1 << 20

#: Every response's security headers: no inline script or style, no framing, no
#: referrer (a flow id in a URL stays on this host).
SECURITY_HEADERS: Headers = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]


class Request:
    """What a handler reads of one WSGI request."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.path = wsgi_text(environ.get("PATH_INFO", "")) or "/"
        prefix = str(environ.get("SCRIPT_NAME", "")).strip("/")
        #: The mount point, quoted for a URL: every link starts with it. It is ``""``
        #: or one ``/`` and a segment, never ``//host`` (a link to another site).
        self.base = quote(("/" + prefix if prefix else "").encode("latin-1", "replace"), safe="/")
        self.query = {
            k: v[-1]
            for k, v in parse_qs(
                wsgi_text(environ.get("QUERY_STRING", "")), keep_blank_values=True
            ).items()
        }

    def cookie(self, name: str) -> str | None:
        """The value of cookie *name*, if the request sent one."""
        jar = SimpleCookie()
        try:
            jar.load(str(self.environ.get("HTTP_COOKIE", "")))
        except CookieError:
            return None
        morsel = jar.get(name)
        return None if morsel is None else morsel.value

    def form(self) -> dict[str, str] | None:
        """The urlencoded body of a POST; ``None`` when it is larger than ``MAX_BODY``."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return None
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in fields.items()}


class Response:
    """A status, headers and an HTML (or static) body."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/html; charset=utf-8",
        headers: Headers | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers: Headers = [("Content-Type", content_type), *(headers or [])]


def wsgi_text(value: Any) -> str:
    """A WSGI environ string (bytes as latin-1, PEP 3333) as the UTF-8 text it holds."""
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it
        return text


def redirect(location: str, headers: Headers | None = None) -> Response:
    """303 See Other to *location* (after a POST, or the token's visit)."""
    return Response(303, b"", headers=[("Location", location), *(headers or [])])
