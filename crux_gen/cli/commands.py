"""The subcommands of ``crux-gen``, one function each: list, show, signal, cancel,
retry, delete, prune, doctor, replay, worker and migrate."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import signal
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import click

from .. import codec
from ..clock import when
from ..codec import ErrorInfo, decode_stored
from ..commands import describe
from ..control import cancel_flow, delete_flow, get_flow, signal_flow
from ..doctor import check_store
from ..durations import format_duration, to_duration
from ..errors import CorruptRecordError, FlowNotFoundError, InvalidValueError
from ..flow import default_registry
from ..migrate import DEFAULT_BATCH, MigrationReport, migrate
from ..records import StoredFlow
from ..replay import replay_check
from ..status import FINISHED, Status
from . import (
    MAX_COUNT,
    CLIError,
    CLIStore,
    Count,
    db_option,
    find_flow,
    is_url,
    shown,
    store_at,
)
from .format import ELLIPSIS, at, clean, cut, echo, fold, relative, table, to_json, width
from .show import show_lines

#: The most threads ``worker --concurrency`` starts.
MAX_CONCURRENCY = 1024

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


# -- signal, cancel, retry, prune ------------------------------------------------------


@click.command("signal", short_help="Send a signal with a JSON payload to a flow.")
@click.argument("flow_id", metavar="ID")
@click.argument("name")
@click.argument("payload", metavar="JSON")
@click.option(
    "--key",
    metavar="KEY",
    default=None,
    help="An idempotency key: a second signal with the same key for the flow stores nothing.",
)
@db_option
def signal_command(flow_id: str, name: str, payload: str, key: str | None, db: str) -> None:
    """Send the signal NAME with a JSON payload to a flow ('-' reads it from stdin).

    The signal is stored at once; the flow takes it at its next run (a worker
    pass or a resume) when it reaches Suspend(NAME), first in first out. A
    finished flow, or one whose wait has expired, refuses it.

    \b
    Example:
      crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24"}'
      echo '{"verified_at": "2026-11-24"}' | crux-gen signal 7f3a email-verified -
      crux-gen signal 7f3a email-verified '{}' --key delivery-8812
    """
    text = sys.stdin.read() if payload == "-" else payload
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"the payload {cut(text, 40)!r} is not JSON ({exc}); quote it for the shell, "
            """e.g. '{"ok": true}'"""
        ) from None
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        sent = signal_flow(stored.id, name, value, store=store, key=key)
    if not sent:
        echo(f"not sent: flow {stored.id} ({stored.name}) already has a signal with key {key!r}")
        return
    waits = stored.status == Status.SUSPENDED and stored.waiting_for == name
    echo(f"sent {name!r} to flow {stored.id} ({stored.name})")
    if waits:
        echo("the flow waits for it: the next worker pass or resume delivers it")
    else:
        echo(f"kept pending until the flow reaches Suspend({name!r})")


@click.command("cancel")
@click.argument("flow_id", metavar="ID")
@click.option(
    "--reason",
    default="cancelled with crux-gen cancel",
    show_default=True,
    help="Why; kept as the flow's cancel_reason.",
)
@db_option
def cancel_command(flow_id: str, reason: str, db: str) -> None:
    """Cancel an unfinished flow.

    It ends with status "cancelled" and the reason. A flow running in another
    process stops at its next command boundary (the step in hand finishes and
    is recorded). A finished flow is left as it is: exit code 1.
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        if not cancel_flow(stored.id, reason, store=store):
            status = store.load(stored.id).status
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {status} already; "
                "only an unfinished flow can be cancelled"
            )
    echo(f"cancelled flow {stored.id} ({stored.name})")
    echo(f"reason: {reason}")


@click.command("retry")
@click.argument("flow_id", metavar="ID")
@db_option
def retry_command(flow_id: str, db: str) -> None:
    """Make a failed flow run again from the command that failed it.

    Drops the record of the step that failed the flow (and anything recorded
    after it, such as a ctx.now() value), keeps every completed step and
    consumed signal before it, and makes the flow due: status "suspended",
    waking now. The next worker pass or resume runs it: completed steps replay
    from their records, the failed step runs again with all its attempts.

    If the flow failed in its body instead (no failed step at the end of its
    history, for instance when it caught a step's failure and went on), nothing
    is dropped: the next run replays every record and runs the body again from
    where it raised, which is what you want after deploying a fix.

    Runs no flow code itself. A flow that is not "failed": exit code 1.
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        if stored.status != Status.FAILED:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}, not failed; "
                "only a failed flow can be retried"
            )
        changed = store.retry_failed(stored.id, store.clock.now().timestamp())
        left = len(store.load(stored.id).records)
    # A failed branch of an All is reset (its record stays, waiting); the rest is dropped.
    reset = [r for r in changed if r.position < left]
    dropped = [r for r in changed if r.position >= left]
    kept = left - len(reset)
    echo(f"retried flow {stored.id} ({stored.name})")
    if reset:
        echo(
            f"reset {len(reset)} failed branch(es) of its All to run again: "
            + ", ".join(f"{describe(r.kind, r.name)} at position {r.position}" for r in reset)
            + f"; kept {kept} records"
        )
        echo("it is due now: the next worker pass or resume runs those branches only")
    elif dropped:
        first = dropped[0]
        echo(
            f"dropped the failed record at position {first.position}, "
            f"{describe(first.kind, first.name)}"
            + (f", and {len(dropped) - 1} after it" if len(dropped) > 1 else "")
            + f"; kept {kept}"
        )
        echo("it is due now: the next worker pass or resume runs it from there")
    else:
        echo(f"it failed in its body, after its {kept} records: nothing dropped")
        echo("it is due now: the next worker pass or resume replays it and runs the body")


@click.command("delete")
@click.argument("flow_id", metavar="ID")
@db_option
def delete_command(flow_id: str, db: str) -> None:
    """Delete one finished flow with its history and signals.

    Only a finished flow (completed, failed, expired or cancelled) can be
    deleted: cancel an unfinished one first. Exit code 1 for an unfinished
    flow or an id that names no flow; nothing is changed then.

    \b
    Example:
      crux-gen delete 7f3a1c2b9e0d
      crux-gen cancel 7f3a1c2b9e0d --reason "test data"; crux-gen delete 7f3a
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        if stored.status not in FINISHED:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}; only a finished flow "
                f"can be deleted: cancel it first (crux-gen cancel {stored.id})"
            )
        if not delete_flow(stored.id, store=store):
            raise CLIError(f"no flow with id {stored.id!r} (deleted meanwhile)")
    records, signals = len(stored.records), len(stored.signals)
    echo(
        f"deleted flow {stored.id} ({stored.name}, {stored.status}) with its "
        f"{records} record{'s' if records != 1 else ''} and "
        f"{signals} signal{'s' if signals != 1 else ''}"
    )


@click.command("prune", short_help="Delete old finished flows and their history.")
@click.option(
    "--finished-before",
    "age",
    required=True,
    metavar="AGE",
    help='Delete flows finished and last updated longer ago than this ("30d", "12h", '
    '"1h30m", or seconds).',
)
@click.option("--dry-run", is_flag=True, help="Say how many flows would go; delete nothing.")
@db_option
def prune_command(age: str, dry_run: bool, db: str) -> None:
    """Delete old finished flows (completed, failed, expired, cancelled), with
    their history and signals, and say how many. Unfinished flows are never
    touched. With --dry-run, say how many it would delete, by status, and
    delete nothing.

    \b
    Example, keeping 30 days:
      crux-gen prune --finished-before 30d --dry-run
      crux-gen prune --finished-before 30d
    """
    keep = duration_option(age, "--finished-before")
    with store_at(db) as store:
        before = store.clock.now() - keep
        if dry_run:
            counts = count_finished(store, before.timestamp())
        else:
            deleted = store.prune(before.timestamp())
    if dry_run:
        total = sum(counts.values())
        by_status = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        echo(
            f"would delete {total} finished {'flow' if total == 1 else 'flows'} last updated "
            f"before {at(before)}" + (f" ({by_status})" if by_status else "")
        )
        echo("nothing deleted (--dry-run)")
        return
    plural = "flow" if deleted == 1 else "flows"
    echo(f"deleted {deleted} finished {plural} last updated before {at(before)}")


#: How many flows one ``list_flows`` call of ``prune --dry-run`` reads.
PAGE = 1000


def count_finished(store: CLIStore, before: float) -> dict[str, int]:
    """Count the finished flows last updated before *before*, by status (what
    ``store.prune(before)`` deletes), reading ``PAGE`` flows at a time (keyset on
    ``(updated_at, id)``: each flow once, also when many share an instant)."""
    counts: dict[str, int] = {}
    for status in sorted(str(s) for s in FINISHED):
        counts[status] = 0
        bound: float | tuple[float, str] = before
        while True:
            page = store.list_flows(status=status, limit=PAGE, before=bound)
            counts[status] += len(page)
            if len(page) < PAGE:
                break
            bound = (page[-1].updated_at, page[-1].id)
    return counts


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


# -- replay ----------------------------------------------------------------------------


@click.command("replay")
@click.argument("module")
@db_option
def replay_command(module: str, db: str) -> None:
    """Check that deploying MODULE's flows breaks no flow in progress.

    Imports MODULE (the current directory is on the import path, as with
    python -m) and replays the history of every unfinished flow against the
    code of its name, running no step and writing nothing. Prints one line per
    flow whose history the code no longer yields (id, name, position, the
    recorded and the new command) or whose code now raises while replaying,
    and the flows whose name MODULE does not register as skipped.

    Exit code 1 when any flow diverges (or raises), and when MODULE registers
    none of the unfinished flows' names (a mistyped module must not pass a
    deploy gate); else 0. Run it against a copy of the production database:

    \b
      crux-gen replay myapp.flows --db prod-copy.db
    """
    import_module(module)
    registered = default_registry.names()
    if not registered:
        raise CLIError(f"{module} registers no @flow; give the module that defines your flows")
    fit = width()
    problems = skipped = checked = 0
    names: set[str] = set()
    with store_at(db) as store:
        unfinished = [
            f
            for status in (Status.SUSPENDED, Status.RUNNING)
            for f in store.list_flows(status=status.value, limit=2**62)
        ]
        for summary in sorted(unfinished, key=lambda f: (f.created_at, f.id)):
            names.add(summary.name)
            if summary.name not in default_registry:
                skipped += 1
                for line in replay_lines("skipped", summary, f"(not in {module})", fit):
                    echo(line)
                continue
            try:
                stored = store.load(summary.id)
            except FlowNotFoundError:  # pruned meanwhile
                continue
            checked += 1
            found = replay_check(stored, default_registry.get(stored.name).fn)
            if found is not None:
                problems += 1
                for line in replay_lines(found.kind, stored, found.text, fit):
                    echo(line)
    ok = checked - problems
    summary_line = (
        f"replayed {checked} unfinished flow{'s' if checked != 1 else ''} against {module}: "
        f"{ok} ok, {problems} diverge{'s' if problems == 1 else ''}, {skipped} skipped"
    )
    for line in fold(clean(summary_line), fit):
        echo(line)
    if names and names.isdisjoint(registered):
        stored_names = ", ".join(repr(n) for n in sorted(names)[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise CLIError(
            f"{module} registers none of the unfinished flows' names ({stored_names}{more}; "
            f"it registers {', '.join(repr(n) for n in registered[:5])}): check the module name"
        )
    if problems:
        raise click.exceptions.Exit(1)


def replay_lines(kind: str, flow: StoredFlow, text: str, fit: int) -> list[str]:
    """Write one flow of ``replay``'s report: ``kind  id  name  text`` on one line when
    it fits *fit*, else kind, id and name, then *text* indented below."""
    head = clean(f"{kind:<9} {flow.id}  {flow.name}")
    line = f"{head}  {clean(text)}"
    if len(line) <= fit:
        return [line]
    return [*fold(head, fit, 10), *fold(" " * 10 + clean(text), fit, 10)]


# -- worker ----------------------------------------------------------------------------


class _CleanFormatter(logging.Formatter):
    """Format log lines with stored text escaped (a traceback keeps its own newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(clean(line) for line in super().format(record).split("\n"))


@click.command("worker")
@click.argument("module")
@db_option
@click.option(
    "--poll",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help='How often to look for due flows ("500ms", "1s", "1m", or seconds).',
)
@click.option(
    "--lease-ttl",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="How long a flow stays claimed by a runner that stopped renewing its lease "
    "(crashed or cut off) before another worker takes it over.",
)
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "NORMAL"], case_sensitive=False),
    metavar="[FULL|NORMAL]",
    default="FULL",
    show_default=True,
    help="For a SQLite file: FULL, every recorded step survives a power cut; NORMAL, "
    "faster, survives a crash of the process, but a power cut may lose the last few commits.",
)
@click.option(
    "--concurrency",
    type=Count(1, MAX_CONCURRENCY),
    default=1,
    show_default=True,
    metavar="N",
    help="How many flows to advance at the same time (1 to 1024): step functions run in N "
    "threads (a slow call holds up no other flow) and their writes share commits.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="What the worker logs to stderr.",
)
def worker_command(
    module: str,
    db: str,
    poll: str,
    lease_ttl: str,
    synchronous: str,
    concurrency: int,
    log_level: str,
) -> None:
    """Run every due flow of MODULE until SIGINT or SIGTERM.

    Imports MODULE so its @flow functions register (the current directory is on
    the import path, as with python -m), then advances every due flow: a
    pending signal it waits for, a passed deadline, a due timer or retry, a
    crashed runner's flow. On SIGINT (Ctrl-C) or SIGTERM the flow in hand stops
    at its next command boundary, its lease is released, and the worker exits
    with code 0; another SIGINT or SIGTERM meanwhile changes nothing (it is
    logged). A SQLite file is created if it does not exist; a PostgreSQL
    database (--db postgresql://...) must exist, and crux_gen's tables are made
    in it, so workers on many hosts can share it.
    """
    period = duration_option(poll, "--poll")
    ttl = duration_option(lease_ttl, "--lease-ttl")
    given = click.get_current_context().get_parameter_source("synchronous")
    if is_url(db) and given == click.core.ParameterSource.COMMANDLINE:
        raise CLIError(
            "--synchronous is for a SQLite file; PostgreSQL makes each commit durable by "
            "its own settings (synchronous_commit)"
        )
    if not ttl:
        raise CLIError("--lease-ttl must be longer than 0s: a runner renews it while it runs")
    # Until the worker runs, SIGINT or SIGTERM ends the process at once, with code 0
    # as later (a deploy that stops a worker still importing its module, say).
    signal.signal(signal.SIGINT, _stop_before_start)
    signal.signal(signal.SIGTERM, _stop_before_start)
    import_module(module)
    if not default_registry.names():
        raise CLIError(f"{module} registers no @flow; give the module that defines your flows")
    from ..worker import Worker

    formatter = _CleanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    with store_at(db, create=True, lease_ttl=ttl, synchronous=synchronous) as store:
        worker = Worker(
            store=store,
            concurrency=concurrency,
            not_registered_hint=(
                'give crux-gen worker the module that defines @flow("{name}") as MODULE '
                f"(this worker imported {module})"
            ),
        )
        stopper = Stopper(worker, formatter, logging.getLogger("crux_gen.cli"))
        signal.signal(signal.SIGINT, stopper)
        signal.signal(signal.SIGTERM, stopper)
        settings = f"lease {format_duration(ttl)}"
        if not is_url(db):
            settings += f", synchronous {synchronous.upper()}"
        if concurrency > 1:
            settings += f", concurrency {concurrency}"
        echo(
            f"worker on {shown(db)} ({settings}) for flows "
            f"{', '.join(default_registry.names())}; Ctrl-C or SIGTERM stops it",
            err=True,
        )
        try:
            worker.run_forever(poll=period)
        finally:
            # From here on the worker is done: one more signal must not kill the
            # process on its way out (Python restores the default handlers, which
            # kill, while it shuts down; it leaves ignored signals ignored).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_before_start(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM before the worker started: nothing is in hand; exit 0."""
    with contextlib.suppress(OSError):
        os.write(2, f"{signal.Signals(signum).name} before the worker started: exiting\n".encode())
    raise SystemExit(0)


class Stopper:
    """The worker's SIGINT and SIGTERM handler: the first signal stops *worker* at
    its next command boundary; any later one is logged and changes nothing.

    It writes its log lines straight to file descriptor 2: a handler that wrote
    through ``sys.stderr`` could interrupt a log line being written there and
    fail with a reentrant call.
    """

    def __init__(self, worker: Any, formatter: logging.Formatter, log: logging.Logger) -> None:
        self.worker = worker
        self.formatter = formatter
        self.log = log
        self.stopping = False

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            self.note(
                logging.WARNING,
                f"{name}: already stopping; waiting for the step in hand to finish and be recorded",
            )
            return
        self.stopping = True
        self.worker.stop()
        self.note(
            logging.INFO,
            f"{name}: stopping at the next command boundary (the step in hand finishes "
            "and is recorded)",
        )

    def note(self, level: int, message: str) -> None:
        """Write one log line of *level* to stderr, if the log level lets it through."""
        if not self.log.isEnabledFor(level):
            return
        record = self.log.makeRecord(self.log.name, level, "", 0, message, (), None)
        with contextlib.suppress(OSError):
            os.write(2, (self.formatter.format(record) + "\n").encode("utf-8", "replace"))


# -- migrate ---------------------------------------------------------------------------

#: How often ``migrate`` says how far it got, on stderr (seconds).
PROGRESS_EVERY = 5.0


@click.command("migrate", short_help="Copy every flow from one store to another.")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="PATH|URL",
    help="The store to copy from: a SQLite file, or a postgresql:// URL. It is only read.",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="PATH|URL",
    help="The store to copy into: a SQLite file (created if missing), or a postgresql:// URL.",
)
@click.option(
    "--batch",
    type=Count(1, MAX_COUNT),
    default=DEFAULT_BATCH,
    show_default=True,
    help="How many flows one listing of the source reads.",
)
def migrate_command(source: str, target: str, batch: int) -> None:
    """Copy every flow, with its history, signals and status, from one store to
    another: from a SQLite file to PostgreSQL when you outgrow one machine.

    Leases are cleared: suspended flows continue on the target's workers, and
    a runner's flow that was cut off is due there. Each copy is read back and
    its record and signal counts and a checksum compared with the source's.
    The source is left as it was.

    It refuses, copying nothing, while a runner holds a lease on a source flow:
    stop the workers first (and anything else writing to the source). A flow
    already in the target with the same content is skipped, so running it again
    after an interruption finishes the job; one with other content is an error
    naming it, and is left as it is.

    \b
    Example:
      crux-gen migrate --from crux.db --to postgresql://app@db.internal/app
      crux-gen worker myapp.flows --db postgresql://app@db.internal/app
    """
    if same_store(source, target):
        raise CLIError(f"--from and --to are the same store ({shown(source)}); give another --to")
    fresh = not is_url(target) and not os.path.exists(target)
    began = last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            echo(f"{done} of {total} flows done, {last - began:.0f}s so far", err=True)

    report: MigrationReport | None = None
    try:
        with store_at(source) as src, store_at(target, create=True) as dst:
            report = migrate(src, dst, batch=batch, progress=progress)
    finally:
        if report is None and fresh:
            drop_if_empty(target)
    for line in migrate_lines(report, shown(source), shown(target)):
        for part in fold(clean(line), width()):
            echo(part)


def same_store(source: str, target: str) -> bool:
    """True when *source* and *target* name one store (one file, or one URL)."""
    if is_url(source) or is_url(target):
        return source.strip() == target.strip()
    try:
        return os.path.exists(source) and os.path.samefile(source, target)
    except OSError:
        return False


def drop_if_empty(path: str) -> None:
    """Remove the SQLite file a failed ``migrate`` created at *path* if no flow got
    into it (a refused migration leaves no empty store behind)."""
    from ..stores.sqlite import SQLiteStore

    with contextlib.suppress(Exception):
        store = SQLiteStore(path)
        try:
            empty = not store.list_flows(limit=1)
        finally:
            store.close()
        if empty:
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)


def migrate_lines(report: MigrationReport, source: str, target: str) -> list[str]:
    """The summary ``migrate`` prints."""

    def flows(n: int) -> str:
        return f"{n} flow{'s' if n != 1 else ''}"

    seconds = report.seconds
    took = "took " + (
        f"{seconds:.2f}s" if seconds < 60 else format_duration(timedelta(seconds=round(seconds)))
    )
    if not report.flows:
        return [f"{source} holds no flows: nothing to copy into {target}", took]
    statuses = ", ".join(f"{n} {status}" for status, n in report.by_status.items())
    return [
        f"migrated {flows(report.flows)} from {source} to {target}: {report.copied} copied, "
        f"{report.skipped} already there (same checksum)",
        f"by status: {statuses}",
        f"with {report.records} record{'s' if report.records != 1 else ''} and "
        f"{report.signals} signal{'s' if report.signals != 1 else ''}; counts and checksum "
        "verified for every flow",
        took,
    ]


# -- what the subcommands share --------------------------------------------------------


_SECONDS = re.compile(r"\s*\d+(\.\d+)?\s*")


def duration_option(value: str, option: str) -> timedelta:
    """Read *value* of *option* as a duration: what the API takes (``"90"`` is
    seconds, as ``90`` is) and what ``list`` and ``show`` print (``"1h30m"``); a
    one-line error names both if it is not one."""
    given: str | float = float(value) if _SECONDS.fullmatch(value) else value
    try:
        return to_duration(given, what=option)
    except InvalidValueError as exc:
        if not exc.problem.startswith("is not a duration"):  # too long
            raise CLIError(f"{option} {value!r} {exc.problem}") from None
        raise CLIError(
            f"{option} {value!r} is not a duration "
            '(try "500ms", "30s", "10m", "1h30m", "2d" or a number of seconds)'
        ) from None


def import_module(module: str) -> None:
    """Import *module* with the current directory first on the path (as ``python -m``)."""
    if module.endswith(".py") or os.sep in module:
        raise CLIError(
            f"{module!r} is a path; give a module name, e.g. myapp.flows for myapp/flows.py"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise CLIError(
                f"cannot import {module!r}: no module named {exc.name!r} "
                f"(looked in {cwd} and the installed packages)"
            ) from None
        raise CLIError(f"importing {module!r} failed: {where(exc)}") from None
    except Exception as exc:
        raise CLIError(f"importing {module!r} failed: {where(exc)}") from None


def where(exc: BaseException) -> str:
    """Say ``Type: message (file, line N)`` for the innermost frame of *exc*."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


COMMANDS = (
    list_command,
    show_command,
    signal_command,
    cancel_command,
    retry_command,
    delete_command,
    prune_command,
    doctor_command,
    replay_command,
    worker_command,
    migrate_command,
)
