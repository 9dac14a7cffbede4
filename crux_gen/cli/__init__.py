"""``crux-gen``: look at, signal, cancel, retry, prune and replay flows from a shell.

    crux-gen list --db crux.db --status suspended
    crux-gen show 7f3a1c2b9e0d --db crux.db
    crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24T10:00:00Z"}'
    crux-gen worker myapp.flows --db crux.db

Every subcommand takes ``--db`` as a SQLite file's path or a ``postgresql://``
URL (default: ``$CRUX_DB``, else ``crux.db``); ``migrate`` copies every flow from
one store to another.
Bad input or a ``CruxError`` (a ``StoreError`` included) prints one line on
stderr and exits with code 1; nothing is changed. Stored text is escaped before
it reaches the terminal (:func:`crux_gen.cli.format.clean`).

This module holds the group, the entry point, ``--db`` and how a store is
opened, and the types of the options every subcommand shares. The subcommands
live by what they do to flows, one function each: ``queries`` (list, show,
doctor), ``control`` (signal, cancel, retry, delete, prune), ``deploy`` (replay,
worker: they import the user's MODULE), ``migrate`` and ``ui``; ``commands``
lists them all. ``show`` builds the lines of ``crux-gen show``, ``format`` the
escaping, widths and tables.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import click

from .. import __version__
from ..durations import SECONDS_TEXT, to_duration
from ..errors import CruxError, FlowNotFoundError, InvalidValueError, StoreError
from ..limits import LimitUsage
from ..opening import POSTGRES_EXTRA, unsupported_scheme
from ..opening import is_url as is_url
from ..opening import shown as shown
from ..records import StoredFlow
from ..stores.base import Store, StoreAdmin
from .format import ELLIPSIS, clean, cut, echo

F = TypeVar("F", bound=Callable[..., Any])


class CLIStore(Store, StoreAdmin, Protocol):
    """What the subcommands use of a store: ``SQLiteStore`` or ``PostgresStore``."""

    def limit_usage(self, now: float) -> list[LimitUsage]:
        """The limits in use (``crux-gen limits``)."""
        ...


#: Ids shorter than this are never treated as prefixes of longer ids.
MIN_PREFIX = 4

#: The stores' own default.
DEFAULT_LEASE_TTL = timedelta(seconds=30)


class CLIError(click.ClickException):
    """A one-line error for the user; exit code 1."""

    exit_code = 1


# -- numbers and durations in options --------------------------------------------------

#: The largest count a store takes (a 64-bit integer): ``--limit``, ``--batch``.
MAX_COUNT = 2**63 - 1

_WHOLE = re.compile(r"[+-]?\d+")


class Count(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A whole number from *low* to *high*, for every integer option: anything else
    (a word, ``1.5``, a number past what a store or the OS takes) is a usage error
    naming the option and the value, never an ``OverflowError`` from further in."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
            text = str(value)
        else:
            text = str(value).strip()
            if not _WHOLE.fullmatch(text):
                self.fail(f"{cut(text, 40)!r} is not a whole number", param, ctx)
            if len(text.lstrip("+-").lstrip("0")) > len(str(self.high)):
                number = self.high + 1 if not text.startswith("-") else self.low - 1
            else:
                number = int(text)
        if number < self.low:
            self.fail(f"{cut(text, 40)} is less than {self.low}", param, ctx)
        if number > self.high:
            self.fail(f"{cut(text, 40)} is too large (at most {self.high})", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "N"


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A finite number of seconds from 0 to *high* (``nan`` and ``inf`` are refused)."""

    name = "seconds"

    def __init__(self, high: float) -> None:
        self.high = high

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        text = str(value).strip()
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{cut(text, 40)!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not 0 <= number <= self.high:
            self.fail(
                f"{cut(text, 40)} is not a number of seconds from 0 to {self.high:g}", param, ctx
            )
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "SECONDS"


def duration_option(value: str, option: str) -> timedelta:
    """Read *value* of *option* as a duration: what the API takes (``"90"`` is
    seconds, as ``90`` is) and what ``list`` and ``show`` print (``"1h30m"``); a
    one-line error names both if it is not one."""
    given: str | float = float(value) if SECONDS_TEXT.fullmatch(value) else value
    try:
        return to_duration(given, what=option)
    except InvalidValueError as exc:
        if not exc.problem.startswith("is not a duration"):  # too long
            raise CLIError(f"{option} {value!r} {exc.problem}") from None
        raise CLIError(
            f"{option} {value!r} is not a duration "
            '(try "500ms", "30s", "10m", "1h30m", "2d" or a number of seconds)'
        ) from None


# -- --db and the store ----------------------------------------------------------------


def db_option(fn: F) -> F:
    """Add ``--db PATH|URL`` (default ``$CRUX_DB``, else ``crux.db``) to a subcommand."""
    return click.option(
        "--db",
        "db",
        metavar="PATH|URL",
        default="crux.db",
        envvar="CRUX_DB",
        show_default=True,
        show_envvar=True,
        help="The store holding the flows: a SQLite file, or a postgresql:// URL.",
    )(fn)


def open_store(
    db: str,
    *,
    create: bool = False,
    lease_ttl: timedelta = DEFAULT_LEASE_TTL,
    synchronous: str = "FULL",
) -> CLIStore:
    """Open the store *db* names: a ``PostgresStore`` for a ``postgresql://`` (or
    ``postgres://``) URL, else the ``SQLiteStore`` at that path (with *synchronous*).

    A SQLite file must already be a crux_gen store unless *create* (so a mistyped
    path is an error, not a new empty file); a PostgreSQL database must exist, and
    crux_gen's tables are made in it on first connect.
    """
    if unsupported := unsupported_scheme(db):
        raise CLIError(f"--db {shown(db)!r} {unsupported}")
    if is_url(db):
        return open_postgres(db.strip(), lease_ttl)
    from crux_gen.stores.sqlite import SQLiteStore

    if not create:
        if not os.path.exists(db):
            raise CLIError(f"no database at {db!r}; give --db PATH or set CRUX_DB")
        try:
            probe = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise CLIError(f"{db!r} is not an SQLite database ({exc})") from None
            raise CLIError(f"cannot open {db!r}: {exc}") from None
        if version == 0:
            raise CLIError(f"{db!r} is not a crux_gen store (no crux_gen tables in it)")
    try:
        return SQLiteStore(db, lease_ttl=lease_ttl, synchronous=synchronous)
    except (sqlite3.Error, StoreError) as exc:
        raise CLIError(f"cannot open {db!r}: {exc}") from None


def open_postgres(url: str, lease_ttl: timedelta) -> CLIStore:
    """A ``PostgresStore`` for *url*; a one-line error when PostgreSQL support (the
    ``postgres`` extra: psycopg and psycopg_pool) is not installed."""
    try:
        from crux_gen.stores.postgres import PostgresStore
    except ImportError as exc:
        missing = getattr(exc, "missing", None) or exc.name or ""  # MissingDependencyError
        if missing == "crux_gen.stores.postgres" or missing.startswith("psycopg"):
            raise CLIError(
                f"{shown(url)} is a PostgreSQL URL: PostgreSQL support needs "
                f"{POSTGRES_EXTRA} ({exc})"
            ) from None
        raise CLIError(f"cannot load crux_gen's PostgreSQL store: {exc}") from None
    # psycopg_pool logs each failed connection attempt; with logging not set up (all
    # but the worker) Python would print them raw on stderr before our one line.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        return PostgresStore(url, lease_ttl=lease_ttl)
    except CruxError as exc:
        raise CLIError(f"cannot open {shown(url)}: {exc}") from None


@contextmanager
def store_at(
    db: str,
    *,
    create: bool = False,
    lease_ttl: timedelta = DEFAULT_LEASE_TTL,
    synchronous: str = "FULL",
) -> Iterator[CLIStore]:
    """Open the store at *db* (see :func:`open_store`) and close it on the way out."""
    store = open_store(db, create=create, lease_ttl=lease_ttl, synchronous=synchronous)
    try:
        yield store
    finally:
        store.close()


def find_flow(store: CLIStore, flow_id: str) -> StoredFlow:
    """Load the flow *flow_id* names: its whole id, or (as ``list`` shows them) a
    unique start of it, with or without the trailing ``…``."""
    text = flow_id.strip()
    text = text[: -len(ELLIPSIS)] if text.endswith(ELLIPSIS) else text
    if not text:
        raise CLIError("give a flow id (crux-gen list shows them)")
    try:
        return store.load(text)
    except FlowNotFoundError:
        if len(text) < MIN_PREFIX:
            raise CLIError(
                f"no flow with id {text!r}, and a start of an id needs at least {MIN_PREFIX} "
                "characters (crux-gen list shows the ids)"
            ) from None
        matches = store.match_ids(text, 4)
        if len(matches) == 1:
            return store.load(matches[0])
        if len(matches) > 1:
            shown = ", ".join(m[: len(text) + 4] + ELLIPSIS for m in matches[:3])
            raise CLIError(
                f"id {text!r} is the start of several flows ({shown}); give more of it"
            ) from None
        raise


# -- the group -------------------------------------------------------------------------

EPILOG = """\b
Examples:
  crux-gen list --status suspended
  crux-gen show 7f3a1c2b9e0d
  crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24"}'
  crux-gen retry 7f3a1c2b9e0d
  crux-gen prune --finished-before 30d --dry-run
  crux-gen worker myapp.flows --db /var/lib/myapp/crux.db
  crux-gen migrate --from crux.db --to postgresql://app@db.internal/app
  crux-gen list --db postgresql://app@db.internal/app
  crux-gen ui --db crux.db --port 8765
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="crux-gen", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Operate durable flows stored in a SQLite file or PostgreSQL: list them,
    show one's history, signal, cancel, retry or delete it, prune finished
    flows, check a deploy with replay, run a worker, and migrate every flow to
    another store.

    Every command takes --db as a SQLite file's path or a postgresql:// URL
    (default: $CRUX_DB, else crux.db). Flow ids
    may be shortened to any unique start, as `list` shows them. Errors print
    one line on stderr and exit with code 1, changing nothing.
    """


# The subcommands use the helpers above, so they are imported after them.
from .commands import COMMANDS  # noqa: E402

for _command in COMMANDS:
    cli.add_command(_command)


# -- entry point -----------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one escaped line on stderr and exit with code 1."""
    echo(f"error: {cut(clean(message), 10_000)}", err=True)
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``crux-gen`` console script (also ``python -m crux_gen``)."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="crux-gen",
            standalone_mode=False,
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        sys.exit(1)
    except click.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        fail(exc.format_message() + hint)
    except click.ClickException as exc:
        fail(exc.format_message())
    except click.exceptions.Abort:
        fail("aborted")
    except (CruxError, ValueError, sqlite3.Error) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    sys.exit(code if isinstance(code, int) else 0)
