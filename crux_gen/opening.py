"""What ``store=`` takes besides a store object: a SQLite file's path or a
``postgresql://`` URL, read the same way as ``crux-gen --db``.

``onboarding.run(input=..., store="crux.db")`` opens a ``SQLiteStore`` on that
file for the call and closes it after; ``signal_flow(..., store="postgresql://
app@db/app")`` a ``PostgresStore``. A store object keeps its connections between
calls, so a long-lived process passes one; a path suits scripts and a REPL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InvalidTypeError, InvalidValueError
from .stores.caps import missing_members
from .urls import ANY_URL as _ANY_URL
from .urls import shown as shown

if TYPE_CHECKING:
    from .clock import Clock
    from .records import StoredFlow
    from .stores.base import Store

#: A ``store=`` that names a store rather than being one.
StorePath = str | os.PathLike[str]

#: How a PostgreSQL URL starts (``--db`` and ``store=``).
URL_SCHEMES = ("postgresql://", "postgres://")


#: What to install when PostgreSQL support is missing.
POSTGRES_EXTRA = "pip install 'crux-gen[postgres]'"

#: What a refused ``store=`` says to give instead.
WHAT_TO_PASS = (
    "give a store (SQLiteStore(path), PostgresStore(url), MemoryStore()), "
    "a SQLite file's path or a postgresql:// URL"
)


def is_url(db: str) -> bool:
    """True when *db* is a PostgreSQL URL rather than a SQLite file's path."""
    return db.strip().lower().startswith(URL_SCHEMES)


def unsupported_scheme(db: str) -> str | None:
    """What is wrong with *db* when it is a URL of a scheme crux_gen has no store for
    (``mysql://…``, ``sqlite:///…``), naming the ones it takes; else ``None``."""
    found = _ANY_URL.match(db)
    if found is None or is_url(db):
        return None
    scheme = found.group(1)
    sqlite = scheme.lower().startswith("sqlite")
    return (
        f"is a {scheme}:// URL, which crux_gen has no store for: it takes "
        f"{' or '.join(URL_SCHEMES)} URLs (PostgreSQL), or the path of a SQLite file"
        + (" as it is (crux.db, /var/lib/app/crux.db), not a sqlite:// URL" if sqlite else "")
    )


def open_store(spec: str | os.PathLike[str], *, create: bool, what: str = "store") -> Store:
    """The store *spec* names: a ``PostgresStore`` for a ``postgresql://`` (or
    ``postgres://``) URL, else the ``SQLiteStore`` at that path. A SQLite file that
    does not exist is made only with *create* (``Flow.run`` of a new flow): anywhere
    else a mistyped path is an ``InvalidValueError`` naming it, not a new empty file.
    """
    text = os.fspath(spec)
    if not isinstance(text, str):
        raise InvalidTypeError(what, spec, f"is a bytes path; {WHAT_TO_PASS}")
    unsupported = unsupported_scheme(text)
    if unsupported:
        raise InvalidValueError(what, shown(text), unsupported)
    if is_url(text):
        from .stores.postgres import PostgresStore  # MissingDependencyError without psycopg

        return PostgresStore(text.strip())
    if not text.strip():
        raise InvalidValueError(what, spec, f"is empty; {WHAT_TO_PASS}")
    if not create and not os.path.exists(text):
        raise InvalidValueError(
            what,
            spec,
            "names no file: give the path of an existing crux_gen store (Flow.run makes "
            "one), or a store object",
        )
    from .stores.sqlite import SQLiteStore

    return SQLiteStore(text)


class StoreObject(Protocol):
    """What :func:`check_store` asks of a ``store=`` object before taking it for a
    store (a wrapper that forwards to one too); each call then uses the parts of
    ``Store`` and ``StoreAdmin`` it needs."""

    clock: Clock

    def load(self, flow_id: str) -> StoredFlow: ...


def check_store(store: object, what: str = "store") -> None:
    """Refuse, naming it, a ``store=`` that is neither a store nor a path or URL."""
    if isinstance(store, str | os.PathLike):
        return
    kind = type(store)
    if missing_members(store, StoreObject):
        raise InvalidTypeError(what, store, f"is a {kind.__name__}, not a store; {WHAT_TO_PASS}")


@contextmanager
def using(store: Any, *, create: bool = False, what: str = "store") -> Iterator[Any]:
    """*store* itself when it is a store object; for a path or URL, the store it
    names (:func:`open_store`), closed on the way out."""
    if not isinstance(store, str | os.PathLike):
        check_store(store, what)
        yield store
        return
    opened = open_store(store, create=create, what=what)
    try:
        yield opened
    finally:
        opened.close()
