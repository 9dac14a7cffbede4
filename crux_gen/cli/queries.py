"""The subcommands that read flows and change nothing: ``list``, ``show`` and
``doctor``."""

from __future__ import annotations

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
from ..status import Status
from . import (
    MAX_COUNT,
    CLIError,
    Count,
    db_option,
    find_flow,
    store_at,
)
from .format import ELLIPSIS, clean, cut, echo, fold, relative, table, to_json, width
from .show import show_lines

# -- list ------------------------------------------------------------------------------


@click.command("list")
@db_option
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    help="Only flows with this status.",
)
@click.option("--flow", "name", metavar="NAME", help="Only flows of this name.")
@click.option(
    "--limit",
    type=Count(1, MAX_COUNT),
    default=50,
    show_default=True,
    help="At most this many flows, most recently updated first.",
)
@click.option(
    "--version",
    "version",
    metavar="NAME=N",
    help="Only flows whose current run recorded Version(NAME) as N; NAME=0: those that did "
    "not record it (they passed that point before the Version line existed, or have not "
    "reached it yet).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
def list_command(
    db: str, status: str | None, name: str | None, limit: int, version: str | None, as_json: bool
) -> None:
    """List flows, most recently updated first.

    Columns: id (shortened to fit; any unique start of an id works in the other
    commands), flow name, status, what the flow waits for, when it wakes (a
    timer, a retry backoff or a deadline), and when it was last updated.
    """
    wanted = None if version is None else version_option(version)
    with store_at(db) as store:
        if wanted is None:
            flows = store.list_flows(status=status, name=name, limit=limit)
        else:
            flows = store.list_flows(status=status, name=name, limit=limit, version=wanted)
        now = store.clock.now()
    if as_json:
        click.echo(to_json([flow_summary(f) for f in flows], indent=2))
        return
    if not flows:
        echo("no flows" + (" match" if status or name else " yet"))
        return
    corrupt = {f.id: found for f in flows if (found := corruption(f)) is not None}
    headers = ["ID", "FLOW", "STATUS", "WAITING FOR", "WAKE AT", "UPDATED"]
    rows = [
        [
            f.id,
            f.name,
            f"{f.status}, corrupt" if f.id in corrupt else f.status,
            f.waiting_for or "-",
            relative(when(f.wake_at), now) if f.status == Status.SUSPENDED else "-",
            relative(when(f.updated_at), now),
        ]
        for f in flows
    ]
    # Ids give up characters last, down to 12 and a "…" (a unique start is enough).
    fit = width()
    for line in table(headers, rows, fit, {0: 13, 1: 10, 3: 11}):
        echo(line)
    if len(flows) == limit:
        echo(f"(the {limit} most recently updated; --limit N for more)")
    for flow_id, exc in corrupt.items():
        short = flow_id if len(flow_id) <= 13 else flow_id[:12] + ELLIPSIS
        echo(cut(clean(f"corrupt: {short}: {corrupt_text(exc)}"), fit))


def version_option(text: str) -> tuple[str, int]:
    """``--version NAME=N`` as ``(NAME, N)``, else a ``CLIError`` naming the value."""
    name, sep, number = text.rpartition("=")
    if not sep or not name.strip() or not number.strip().isdigit():
        raise CLIError(
            f"--version {text!r} is not NAME=N (a Version name and a number, e.g. new-pricing=0)"
        )
    return name, int(number)


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


def flow_summary(f: StoredFlow) -> dict[str, Any]:
    """Build one object of ``list --json``; ``corrupt`` says why a row cannot be read back."""
    found = corruption(f)
    error = None if found is not None else ErrorInfo.decode(f.error, flow_id=f.id)
    return {
        "id": f.id,
        "name": f.name,
        "status": f.status,
        "waiting_for": f.waiting_for,
        "wake_at": _iso(f.wake_at),
        "created_at": _iso(f.created_at),
        "updated_at": _iso(f.updated_at),
        "cancel_reason": f.cancel_reason,
        "error": None if error is None else f"{error.type}: {error.message}",
        "custom_status": _custom_status(f),
        "parent_id": f.parent_id,
        "run": f.run,
        "corrupt": None if found is None else str(found),
    }


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
def show_command(flow_id: str, db: str, full: bool, as_json: bool) -> None:
    """Show a flow: its input, status and timeline.

    A running flow shows which runner holds its lease and until when, or that
    no runner holds it (a worker stopped between two steps, or crashed): a
    worker then picks it up.

    The timeline lists each recorded command in order, with its kind, name,
    state, attempts, how long it took and its result (cut to one line unless
    --full) or error with its traceback (crux_gen's own frames hidden unless
    --full); then every signal sent to the flow, with its idempotency key if it
    has one: pending, consumed (by which command), rejected with the validation
    error, or unused (still pending when the flow finished).
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        info = get_flow(stored.id, store=store)
        now = store.clock.now()
    if as_json:
        data = codec.converter.unstructure(info)
        click.echo(to_json({"id": info.flow_id, **data}, indent=2))
        return
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
