"""The subcommands that read flows and change nothing: ``list``, ``show`` and
``doctor``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import click

from .. import codec
from ..clock import when
from ..codec import ErrorInfo, decode_stored
from ..control import get_flow
from ..doctor import check_store
from ..errors import CorruptRecordError
from ..records import StoredFlow
from ..results import FlowInfo, FlowSummary
from ..status import Status
from ..streams import published
from ..waits import Wait
from . import (
    MAX_COUNT,
    Count,
    db_option,
    duration_option,
    find_flow,
    store_at,
)
from .filters import PAGE, count_matching, cursor, filter_options, matching, read_filters
from .follow import follow as follow_flow
from .format import (
    ELLIPSIS,
    JsonList,
    clean,
    column_widths,
    cut,
    echo,
    fold,
    relative,
    row_line,
    to_json,
    width,
)
from .published import published_lines
from .show import show_lines

# -- list and count --------------------------------------------------------------------

HEADERS = ["ID", "FLOW", "STATUS", "WAITING FOR", "WAKE AT", "UPDATED"]
#: Columns that give up characters to fit the terminal, and their narrowest width:
#: ids last, down to 12 and a "…" (a unique start is enough).
SHRINK = {0: 13, 1: 10, 3: 11}


@click.command("list")
@db_option
@filter_options
@click.option(
    "--limit",
    type=Count(1, MAX_COUNT),
    default=50,
    show_default=True,
    help="At most this many flows, most recently updated first (read page by page).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
def list_command(db: str, limit: int, as_json: bool, **given: Any) -> None:
    """List flows, most recently updated first.

    Columns: id (shortened to fit; any unique start of an id works in the other
    commands), flow name, status, what the flow waits for, when it wakes (a
    timer, a retry backoff or a deadline), and when it was last updated.

    When --limit flows were listed, the cursor of the next page is printed on
    stderr as "next page: --before CURSOR". Flows are read from the store a page
    at a time, so --limit 100000 streams.

    \b
    Examples:
      crux-gen list --status failed --since 12h --error Timeout
      crux-gen list --waiting-for email-verified --json
    """
    with store_at(db) as store:
        now = store.clock.now()
        filters = read_filters(now, **given)
        out: JsonList | FlowTable = JsonList() if as_json else FlowTable(now)
        last: StoredFlow | None = None
        for row, summary in matching(store, filters, page=limit):
            out.add(flow_summary(row, summary) if as_json else (row, summary))
            last = row
            if out.count == limit:
                break
        out.close()
    if not as_json and out.count == 0:
        echo("no flows" + (" match" if filters.given else " yet"))
    if out.count == limit and last is not None:
        echo(f"next page: --before {cursor(last)}", err=True)


class FlowTable:
    """``list``'s table, printed a page at a time with the widths of its first page;
    the rows that cannot be read back are named after it."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.fit = width()
        self.widths: list[int] | None = None
        self.pending: list[list[str]] = []
        self.corrupt: dict[str, CorruptRecordError] = {}
        self.count = 0

    def add(self, item: Any) -> None:
        """Add one ``(row, summary)``; a page of them is printed at once."""
        f, summary = item
        found = corruption(f)
        if found is not None:
            self.corrupt[f.id] = found
        status = f"{f.status}, corrupt" if found is not None else f.status
        if f.priority:
            status += f", priority {f.priority}"
        waits = summary.waiting_for or (f"blocked by {f.blocked_by}" if f.blocked_by else "-")
        timed = f.status in (Status.SUSPENDED, Status.PENDING) and f.wake_at is not None
        self.pending.append(
            [
                f.id,
                f.name,
                status,
                waits,
                relative(when(f.wake_at), self.now) if timed else "-",
                relative(when(f.updated_at), self.now),
            ]
        )
        self.count += 1
        if len(self.pending) >= PAGE:
            self.flush()

    def flush(self) -> None:
        """Print the rows added since the last flush (the header before the first)."""
        rows = [[clean(cell) for cell in row] for row in self.pending]
        self.pending = []
        if not rows:
            return
        if self.widths is None:
            self.widths = column_widths(HEADERS, rows, self.fit, SHRINK)
            echo(row_line(HEADERS, self.widths))
        for row in rows:
            echo(row_line(row, self.widths))

    def close(self) -> None:
        """Print what is left, then a line per row that cannot be read back."""
        self.flush()
        for flow_id, exc in self.corrupt.items():
            short = flow_id if len(flow_id) <= 13 else flow_id[:12] + ELLIPSIS
            echo(cut(clean(f"corrupt: {short}: {corrupt_text(exc)}"), self.fit))


@click.command("count")
@db_option
@filter_options
@click.option("--json", "as_json", is_flag=True, help='{"count": N}, for scripts.')
def count_command(db: str, as_json: bool, **given: Any) -> None:
    """Count the flows list would list with the same filters (no limit).

    Counted in the store when only --status, --flow, --since and --until are
    given; with the other filters, by reading the flows a page at a time.

    \b
    Example:
      crux-gen count --status failed --since 12h
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        found = count_matching(store, filters)
    if as_json:
        click.echo(to_json({"count": found}))
    else:
        echo(str(found))


def _iso(ts: float | None) -> str | None:
    moment = when(ts)
    return None if moment is None else moment.isoformat()


def corruption(f: StoredFlow) -> CorruptRecordError | None:
    """Say why the flow row *f* cannot be read back (its input, result or error), or
    return ``None``. Its history is not read: ``show`` names a corrupt record."""
    try:
        decode_stored(f.input, flow_id=f.id, position=None, column="input")
        decode_stored(f.result, flow_id=f.id, position=None, column="result")
        ErrorInfo.decode(f.error, flow_id=f.id)
    except CorruptRecordError as exc:
        return exc
    return None


def corrupt_text(exc: CorruptRecordError) -> str:
    """Say ``stored error at position 2 cannot be decoded (why)``: *exc* without advice."""
    at_position = f" at position {exc.position}" if exc.position is not None else ""
    return f"stored {exc.column}{at_position} cannot be decoded ({exc.reason})"


def flow_summary(f: StoredFlow, summary: FlowSummary | None = None) -> dict[str, Any]:
    """Build one object of ``list --json``; ``corrupt`` says why a row cannot be read
    back. ``waits`` is the structure behind ``waiting_for`` (*summary*'s)."""
    found = corruption(f)
    error = None if found is not None else ErrorInfo.decode(f.error, flow_id=f.id)
    return {
        "id": f.id,
        "name": f.name,
        "status": f.status,
        "waiting_for": summary.waiting_for if summary is not None else f.waiting_for,
        "waits": [] if summary is None else [wait_json(w) for w in summary.waits],
        "wake_at": _iso(f.wake_at),
        "created_at": _iso(f.created_at),
        "updated_at": _iso(f.updated_at),
        "cancel_reason": f.cancel_reason,
        "error": None if error is None else f"{error.type}: {error.message}",
        "custom_status": _custom_status(f),
        "parent_id": f.parent_id,
        "run": f.run,
        "priority": f.priority,
        "blocked_by": f.blocked_by,
        "corrupt": None if found is None else str(found),
    }


def wait_json(wait: Wait) -> dict[str, Any]:
    """One ``Wait`` of ``list --json``: its fields, the deadline in ISO 8601."""
    deadline = None if wait.deadline is None else wait.deadline.isoformat()
    return {"kind": wait.kind, "name": wait.name, "deadline": deadline, "child_id": wait.child_id}


def _custom_status(f: StoredFlow) -> Any:
    try:
        return decode_stored(f.custom_status, flow_id=f.id, position=None, column="custom_status")
    except CorruptRecordError:
        return None


# -- show ------------------------------------------------------------------------------


@click.command("show")
@click.argument("flow_id", metavar="ID")
@db_option
@click.option(
    "--full",
    is_flag=True,
    help="Whole values, pretty-printed, and whole tracebacks (crux_gen's frames too).",
)
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
@click.option(
    "--follow",
    is_flag=True,
    help="Then print new records, signals and status changes as they land, until the flow "
    "finishes (with --json: one JSON object per line).",
)
@click.option(
    "--poll",
    default="500ms",
    show_default=True,
    metavar="DURATION",
    help="How often --follow reads the flow again.",
)
def show_command(flow_id: str, db: str, full: bool, as_json: bool, follow: bool, poll: str) -> None:
    """Show a flow: its input, status and timeline.

    A running flow shows which runner holds its lease and until when, or that
    no runner holds it (a worker stopped between two steps, or crashed): a
    worker then picks it up.

    The timeline lists each recorded command in order, with its kind, name,
    state, attempts, how long it took and its result (cut to one line unless
    --full) or error with its traceback (crux_gen's own frames hidden unless
    --full); then every signal sent to the flow, with its idempotency key if it
    has one: pending, consumed (by which command), rejected with the validation
    error, or unused (still pending when the flow finished); then its events
    (ctx.set_event: each key's last value) and streams (ctx.write_stream: each
    key's values in order, and whether it was closed).

    With --follow, it goes on printing each record as it lands (and a record
    again when it moves on: a wait that completed, a retry), each signal sent
    and each change of status, until the flow finishes; Ctrl-C stops it.
    """
    every = duration_option(poll, "--poll").total_seconds()
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        info = get_flow(stored.id, store=store)
        now = store.clock.now()
        if follow:
            if not as_json:
                show_one(info, stored, now, full)
            fit = width()
            follow_flow(store, info, poll=every, full=full, fit=fit, as_json=as_json)
            return
        shown = published(store, stored.id)
    if as_json:
        data = codec.converter.unstructure(info)
        click.echo(to_json({"id": info.flow_id, **data, **shown}, indent=2))
        return
    show_one(info, stored, now, full)
    for line in published_lines(shown, full=full, fit=width()):
        echo(line)


def show_one(info: FlowInfo, stored: StoredFlow, now: datetime, full: bool) -> None:
    """Print ``show``'s lines of *info* (*stored* gives its lease)."""
    lines = show_lines(
        info,
        now,
        full=full,
        fit=width(),
        lease_owner=stored.lease_owner,
        lease_expires=when(stored.lease_expires),
    )
    for line in lines:
        echo(line)


# -- doctor ----------------------------------------------------------------------------


@click.command("doctor", short_help="List the unfinished flows that can never wake.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
def doctor_command(db: str, as_json: bool) -> None:
    """List every unfinished flow that can never wake, with the reason: one
    waiting for a child flow that is gone, or that finished without making it
    due; a timer with no wake time; an Any or All with nothing left that can
    end; a running flow whose lease lapsed long ago and that no worker took.

    A flow waiting for a signal is fine: the signal may still be sent. Exit
    code 1 when any flow is listed, else 0.
    """
    with store_at(db) as store:
        problems = check_store(store)
    if as_json:
        click.echo(to_json([attrs.asdict(p) for p in problems], indent=2))
    else:
        fit = width()
        for problem in problems:
            head = f"{problem.kind:<17} {problem.flow_id}  {problem.name}  {problem.status}"
            for line in fold(clean(head), fit, 18):
                echo(line)
            for line in fold(" " * 18 + clean(problem.reason), fit, 18):
                echo(line)
        count = len(problems)
        if count:
            echo(f"{count} unfinished {'flow' if count == 1 else 'flows'} can never wake")
        else:
            echo("no stuck flow: every unfinished flow waits on something that can still happen")
    if problems:
        raise click.exceptions.Exit(1)
