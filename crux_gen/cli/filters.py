"""The filters ``list``, ``count`` and the bulk ``retry|cancel|delete --all`` share,
and the one stream of flows they select.

``--status``, ``--flow``, ``--since``, ``--until``, ``--before`` and ``--version``
are answered by the store (an index range, one page at a time); ``--waiting-for``
and ``--error`` are checked here on each page as it comes, so a filter never
loads more than a page of rows at once, whatever the store holds.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import attrs
import click

from ..control import first_time_at, summaries
from ..durations import moment_of
from ..errors import InvalidValueError
from ..records import StoredFlow
from ..results import FlowSummary
from ..status import Status
from . import CLIError, CLIStore

F = TypeVar("F", bound=Callable[..., Any])

#: How many rows one read of a stream takes from the store.
PAGE = 500

#: ``--before``'s cursor: the exact ``updated_at`` of the last flow shown, a colon,
#: its id (``next page: --before 1764990000.123456:7f3a…``).
_CURSOR = re.compile(r"(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?):(.+)", re.DOTALL)


@attrs.frozen
class Filters:
    """Which flows a command selects; times are the store's (seconds since the epoch)."""

    status: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    before: float | tuple[float, str] | None = None
    waiting_for: str | None = None
    error: str | None = None
    version: tuple[str, int] | None = None

    @property
    def given(self) -> bool:
        """Whether any filter was given."""
        return any(v is not None for v in attrs.astuple(self, recurse=False))

    @property
    def in_store(self) -> bool:
        """Whether the store alone answers them all (``count`` can count in it)."""
        return (
            self.waiting_for is None
            and self.error is None
            and self.before is None
            and (self.version is None)
        )

    def passes(self, summary: FlowSummary) -> bool:
        """Whether *summary* passes the filters the store does not answer."""
        if self.waiting_for is not None and self.waiting_for not in waited_names(summary):
            return False
        if self.error is not None:
            error = summary.error
            if error is None or self.error.casefold() not in error_of(summary).casefold():
                return False
        return True


def waited_names(summary: FlowSummary) -> set[str]:
    """What ``--waiting-for`` matches: each wait's name and child id, and the whole
    display string (an expired flow keeps the name of the wait that expired)."""
    names = {w.name for w in summary.waits} | {w.child_id for w in summary.waits if w.child_id}
    if summary.waiting_for is not None:
        names.add(summary.waiting_for)
    return names


def error_of(summary: FlowSummary) -> str:
    """A failed flow's error as ``list`` shows it: ``module.Type: message``."""
    error = summary.error
    return "" if error is None else f"{error.type}: {error.message}"


def filter_options(fn: F) -> F:
    """Add the filters of ``list`` to a subcommand (as keyword arguments ``status``,
    ``name``, ``since``, ``until``, ``before``, ``waiting_for``, ``error``, ``version``)."""
    options = [
        click.option(
            "--status",
            type=click.Choice([s.value for s in Status]),
            help="Only flows with this status.",
        ),
        click.option("--flow", "name", metavar="NAME", help="Only flows of this name."),
        click.option(
            "--since",
            metavar="AGE|TIME",
            help='Only flows updated at or after this: an age ("1h": an hour ago, "2d", '
            '"90m") or an ISO 8601 time ("2026-11-24T10:00:00Z"; no zone: UTC).',
        ),
        click.option(
            "--until", metavar="AGE|TIME", help="Only flows updated before this (as --since)."
        ),
        click.option(
            "--before",
            metavar="CURSOR",
            help="Continue after this cursor (list prints it as 'next page: --before CURSOR'), "
            "or only flows updated before an AGE|TIME.",
        ),
        click.option(
            "--waiting-for",
            metavar="NAME",
            help="Only suspended flows waiting for this signal, timer, condition or child "
            "(a child flow's name or id).",
        ),
        click.option(
            "--error",
            metavar="TEXT",
            help="Only flows whose error type or message holds TEXT (any case).",
        ),
        click.option(
            "--version",
            "version",
            metavar="NAME=N",
            help="Only flows whose current run recorded Version(NAME) as N; NAME=0: those "
            "that did not record it (they passed that point before the Version line "
            "existed, or have not reached it yet).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def read_filters(now: datetime, **given: Any) -> Filters:
    """The filters of :func:`filter_options`' options, times read against *now* (the
    store's clock); a bad value is a one-line ``CLIError`` naming the option."""
    before_text = given.get("before")
    version = given.get("version")
    return Filters(
        status=given.get("status"),
        name=given.get("name"),
        since=moment_option(given.get("since"), "--since", now),
        until=moment_option(given.get("until"), "--until", now),
        before=None if before_text is None else before_option(before_text, now),
        waiting_for=given.get("waiting_for"),
        error=given.get("error"),
        version=None if version is None else version_option(version),
    )


def moment_option(text: str | None, option: str, now: datetime) -> float | None:
    """``--since`` / ``--until``: an age before *now* or an ISO 8601 time
    (``durations.moment_of``), as the store time of its first microsecond (what
    ``list`` shows)."""
    if text is None:
        return None
    try:
        return first_time_at(moment_of(text, now, what=option))
    except InvalidValueError as exc:
        raise CLIError(str(exc)) from None


def before_option(text: str, now: datetime) -> float | tuple[float, str]:
    """``--before``: a cursor ``list`` printed (exact keyset), else an AGE|TIME."""
    found = _CURSOR.fullmatch(text.strip())
    if found is not None and math.isfinite(float(found.group(1))):
        return (float(found.group(1)), found.group(2))
    moment = moment_option(text, "--before", now)
    assert moment is not None
    return moment


def cursor(row: StoredFlow) -> str:
    """The ``--before`` cursor that continues after *row*, quoted for a shell."""
    return shlex.quote(f"{row.updated_at!r}:{row.id}")


def version_option(text: str) -> tuple[str, int]:
    """``--version NAME=N`` as ``(NAME, N)``, else a ``CLIError`` naming the value."""
    name, sep, number = text.rpartition("=")
    if not sep or not name.strip() or not number.strip().isdigit():
        raise CLIError(
            f"--version {text!r} is not NAME=N (a Version name and a number, e.g. new-pricing=0)"
        )
    return name, int(number)


def matching(
    store: CLIStore, filters: Filters, *, page: int | None = None
) -> Iterator[tuple[StoredFlow, FlowSummary]]:
    """Every flow *filters* selects, newest update first, read *page* rows (at
    most ``PAGE``) at a time (exact keyset paging: each flow once): its row and
    its summary."""
    page = PAGE if page is None else min(page, PAGE)
    bound = filters.before
    while True:
        rows = store.list_flows(
            status=filters.status,
            name=filters.name,
            limit=page,
            before=bound,
            version=filters.version,
            since=filters.since,
            until=filters.until,
        )
        for row, summary in zip(rows, summaries(store, rows), strict=True):
            if filters.passes(summary):
                yield row, summary
        if len(rows) < page:
            return
        bound = (rows[-1].updated_at, rows[-1].id)


def count_matching(store: CLIStore, filters: Filters) -> int:
    """How many flows *filters* selects: counted in the store when it can answer
    every filter, else by streaming them."""
    if filters.in_store:
        return store.count(
            status=filters.status, name=filters.name, since=filters.since, until=filters.until
        )
    return sum(1 for _ in matching(store, filters))
