"""Who may act on the dashboard: the token, the session cookie a visit of
``/?token=…`` sets, and the CSRF field of the forms shown to a session.

Sessions and CSRF values are MACs under a key derived from the token: any process
serving the same token knows the same sessions, and another token none of them.
No secret is kept on the server but the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote, urlencode

from .wsgi import Request, Response, redirect

#: The cookie of a session, set by a visit of ``/?token=…``: a random session id and
#: its MAC (never the token itself; HttpOnly, SameSite=Strict).
COOKIE = "crux_ui_session"


class Sessions:
    """The sessions of a dashboard started with *token* (``None``: no actions, so
    nobody acts and every check fails)."""

    def __init__(self, token: str | None) -> None:
        self._key = hmac.new(
            (token or secrets.token_hex(32)).encode("utf-8"), b"crux-ui key", hashlib.sha256
        ).digest()
        self._token = token

    def is_token(self, given: str) -> bool:
        """Whether *given* is the dashboard's token (compared in constant time)."""
        return self._token is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), self._token.encode("utf-8")
        )

    def start(self, request: Request) -> Response:
        """Start a session (a cookie naming a new random session id, with its MAC)
        and go on to the page *request* asked for, without the token in its address.

        The redirect stays on this dashboard whatever the path: it is the mount
        point, one ``/``, and the path quoted (``//host``, ``/\\host`` and
        ``https:…`` become paths under the mount point)."""
        rest = {k: v for k, v in request.query.items() if k != "token"}
        where = quote(request.path.encode("utf-8", "replace"), safe="/").lstrip("/")
        target = f"{request.base}/{where}" + (f"?{urlencode(rest)}" if rest else "")
        secure = "; Secure" if request.environ.get("wsgi.url_scheme") == "https" else ""
        session = secrets.token_hex(16)
        cookie = (
            f"{COOKIE}={session}.{self.mac('session', session)}; Path={request.base}/; "
            "HttpOnly; SameSite=Strict" + secure
        )
        return redirect(target, [("Set-Cookie", cookie)])

    def mac(self, purpose: str, value: str) -> str:
        """The MAC of *value* for *purpose* (``session``, ``csrf``) under the app's key."""
        message = f"{purpose}\0{value}".encode("utf-8", "replace")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def who(self, request: Request) -> str | None:
        """Who *request* acts as: ``session:<id>`` for a valid session cookie,
        ``bearer`` for the token in an ``Authorization: Bearer`` header, else ``None``."""
        if self._token is None:
            return None
        cookie = request.cookie(COOKIE)
        if cookie is not None:
            session, _, mac = cookie.partition(".")
            if session and hmac.compare_digest(
                mac.encode("utf-8", "replace"), self.mac("session", session).encode("ascii")
            ):
                return f"session:{session}"
        header = str(request.environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.is_token(value.strip()):
            return "bearer"
        return None

    def csrf(self, who: str) -> str:
        """The CSRF field of the forms shown to *who*: one value per session, shown
        only to it (a viewer without a session gets none)."""
        return self.mac("csrf", who)

    def csrf_ok(self, who: str, given: str) -> bool:
        """Whether *given* is the CSRF field of *who*'s forms (in constant time)."""
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.csrf(who).encode("ascii"))
