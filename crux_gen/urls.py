"""URLs in messages: a leaf module (``opening`` and ``stores.postgres`` both print a
store's URL, and neither may import the other at the top: psycopg stays optional).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Any URL (``scheme://…``): one of another scheme than ``opening.URL_SCHEMES`` is
#: refused, naming those, rather than taken for a SQLite file's path.
ANY_URL = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")


def shown(db: str) -> str:
    """*db* as messages print it: a URL's password (in it or in its query) as ``***``."""
    if not ANY_URL.match(db):
        return db
    try:
        parts = urlsplit(db.strip())
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() == "password" for k, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/"
                )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # a malformed URL: show none of it rather than a password
        return db.strip().split("://", 1)[0] + "://…"
