"""``crux-gen``: look at, signal, cancel, retry, prune and replay flows from a shell.

    crux-gen list --db crux.db --status suspended
    crux-gen show 7f3a1c2b9e0d --db crux.db
    crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24T10:00:00Z"}'
    crux-gen worker myapp.flows --db crux.db

Every subcommand takes ``--db PATH`` (default: ``$CRUX_DB``, else ``crux.db``).
Bad input or a ``CruxError`` prints one line on stderr and exits with code 1;
nothing is changed.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from . import codec
from .clock import when as _when
from .codec import ErrorInfo
from .commands import VALUE_KINDS, describe
from .control import cancel_flow, get_flow, signal_flow
from .durations import to_duration
from .errors import CruxError, FlowNotFoundError, NonDeterminismError
from .flow import FlowContext, default_registry
from .interpreter import Failed, Finished, Interpreter
from .records import StoredFlow
from .results import FlowInfo, HistoryEntry, SignalInfo
from .status import Status

if TYPE_CHECKING:
    from crux_gen.stores.sqlite import SQLiteStore

F = TypeVar("F", bound=Callable[..., Any])

ELLIPSIS = "…"
#: Ids shorter than this are never treated as prefixes of longer ids.
MIN_PREFIX = 4


class CLIError(click.ClickException):
    """A one-line error for the user; exit code 1."""

    exit_code = 1


# -- options shared by every subcommand ---------------------------------------------


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db",
        metavar="PATH",
        default="crux.db",
        envvar="CRUX_DB",
        show_default=True,
        show_envvar=True,
        help="The SQLite file holding the flows.",
    )(fn)


def open_store(db: str, *, create: bool = False) -> SQLiteStore:
    """The store at *db*; unless *create*, it must already be a crux_gen store
    (so a mistyped path is an error, not a new empty file)."""
    from crux_gen.errors import StoreSchemaError
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
        return SQLiteStore(db)
    except (sqlite3.Error, StoreSchemaError) as exc:
        raise CLIError(f"cannot open {db!r}: {exc}") from None


@contextmanager
def store_at(db: str, *, create: bool = False) -> Iterator[SQLiteStore]:
    store = open_store(db, create=create)
    try:
        yield store
    finally:
        store.close()


def find_flow(store: SQLiteStore, flow_id: str) -> StoredFlow:
    """The flow *flow_id* names: its whole id, or (as ``list`` shows them) a unique
    start of it, with or without the trailing ``…``."""
    text = flow_id.strip()
    text = text[: -len(ELLIPSIS)] if text.endswith(ELLIPSIS) else text
    if not text:
        raise CLIError("give a flow id (crux-gen list shows them)")
    try:
        return store.load(text)
    except FlowNotFoundError:
        if len(text) < MIN_PREFIX:
            raise
        matches = store.match_ids(text, 4)
        if len(matches) == 1:
            return store.load(matches[0])
        if len(matches) > 1:
            shown = ", ".join(m[: len(text) + 4] + ELLIPSIS for m in matches[:3])
            raise CLIError(
                f"id {text!r} is the start of several flows ({shown}); give more of it"
            ) from None
        raise


# -- formatting ----------------------------------------------------------------------


def width() -> int:
    """The terminal's width (80 when output is not a terminal)."""
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def cut(text: str, limit: int) -> str:
    """*text* on one line, at most *limit* characters, ``…`` marking a cut."""
    text = " ".join(text.split("\n"))
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def to_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def at(moment: datetime | None) -> str:
    """A moment as ``2026-01-01 10:00:00Z`` (UTC)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    """A duration in at most two units: ``12ms``, ``4.2s``, ``3m5s``, ``2h30m``, ``1d4h``."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            big, rest = divmod(whole, size)
            small = rest // sub_size
            return f"{big}{unit}{small}{sub}" if small else f"{big}{unit}"
    return f"{whole}s"


def relative(moment: datetime | None, now: datetime) -> str:
    """``in 23h59m``, ``5m ago`` or ``now``."""
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], fit: int, shrink: dict[int, int]
) -> list[str]:
    """Rows as aligned columns within *fit* characters: the columns in *shrink*
    (index -> narrowest width) give up characters, widest first, each cell cut with ``…``."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    total = sum(widths) + 2 * (len(widths) - 1)
    while total > fit:
        candidates = [i for i, least in shrink.items() if widths[i] > least]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        total -= 1
    lines = []
    for row in [headers, *rows]:
        cells = [cut(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def error_lines(error: ErrorInfo, indent: str, *, with_traceback: bool) -> list[str]:
    lines = [f"{indent}error: {error.type}: {error.message}"]
    if with_traceback and error.traceback:
        lines += [f"{indent}  {line}" for line in error.traceback.rstrip("\n").splitlines()]
    return lines


def value_lines(
    label: str, value: Any, indent: str, *, full: bool, fit: int, sep: str = ": "
) -> list[str]:
    head = f"{indent}{label}{sep}"
    if full:
        text = to_json(value, indent=2).splitlines()
        return [head + text[0], *(indent + "  " + line for line in text[1:])]
    return [head + cut(to_json(value), max(fit - len(head), 10))]


# -- the group -----------------------------------------------------------------------

EPILOG = """\b
Examples:
  crux-gen list --status suspended
  crux-gen show 7f3a1c2b9e0d
  crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24"}'
  crux-gen retry 7f3a1c2b9e0d
  crux-gen worker myapp.flows --db /var/lib/myapp/crux.db
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate durable flows stored in an SQLite file: list them, show one's
    history, signal, cancel or retry it, prune finished flows, check a deploy
    with replay, and run a worker.

    Every command takes --db PATH (default: $CRUX_DB, else crux.db). Flow ids
    may be shortened to any unique start, as `list` shows them. Errors print
    one line on stderr and exit with code 1, changing nothing.
    """


# -- list ----------------------------------------------------------------------------


@cli.command("list")
@db_option
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    help="Only flows with this status.",
)
@click.option("--flow", "name", metavar="NAME", help="Only flows of this name.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="At most this many flows, most recently updated first.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
def list_command(db: str, status: str | None, name: str | None, limit: int, as_json: bool) -> None:
    """List flows, most recently updated first.

    Columns: id (shortened to fit; any unique start of an id works in the other
    commands), flow name, status, what the flow waits for, when it wakes (a
    timer, a retry backoff or a deadline), and when it was last updated.
    """
    with store_at(db) as store:
        flows = store.list_flows(status=status, name=name, limit=limit)
        now = store.clock.now()
    if as_json:
        click.echo(to_json([flow_summary(f) for f in flows], indent=2))
        return
    if not flows:
        click.echo("no flows" + (" match" if status or name else " yet"))
        return
    headers = ["ID", "FLOW", "STATUS", "WAITING FOR", "WAKE AT", "UPDATED"]
    rows = [
        [
            f.id,
            f.name,
            f.status,
            f.waiting_for or "-",
            relative(_when(f.wake_at), now) if f.status == Status.SUSPENDED else "-",
            relative(_when(f.updated_at), now),
        ]
        for f in flows
    ]
    # Ids give up characters last, down to 12 and a "…" (a unique start is enough).
    for line in table(headers, rows, width(), {0: 13, 1: 10, 3: 11}):
        click.echo(line)
    if len(flows) == limit:
        click.echo(f"(the {limit} most recently updated; --limit N for more)")


def _iso(ts: float | None) -> str | None:
    moment = _when(ts)
    return None if moment is None else moment.isoformat()


def flow_summary(f: StoredFlow) -> dict[str, Any]:
    error = ErrorInfo.decode(f.error)
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
    }


# -- show ----------------------------------------------------------------------------


@cli.command("show")
@click.argument("flow_id", metavar="ID")
@db_option
@click.option("--full", is_flag=True, help="Whole values, pretty-printed, and every traceback.")
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
def show_command(flow_id: str, db: str, full: bool, as_json: bool) -> None:
    """Show a flow: its input, status and timeline.

    The timeline lists each recorded command in order, with its kind, name,
    state, attempts, how long it took and its result (cut to one line unless
    --full) or error with its traceback; then every signal sent to the flow:
    consumed (by which command), pending, or rejected with the validation error.
    """
    with store_at(db) as store:
        info = get_flow(find_flow(store, flow_id).id, store=store)
        now = store.clock.now()
    if as_json:
        data = codec.converter.unstructure(info)
        click.echo(to_json({"id": info.flow_id, **data}, indent=2))
        return
    for line in show_lines(info, now, full=full, fit=width()):
        click.echo(line)


def show_lines(info: FlowInfo, now: datetime, *, full: bool, fit: int) -> list[str]:
    lines = [
        f"flow     {info.flow_id}",
        f"name     {info.name}",
        f"status   {status_text(info)}",
        f"created  {at(info.created_at)}",
        f"updated  {at(info.updated_at)} ({relative(info.updated_at, now)})",
    ]
    if info.status == Status.SUSPENDED and info.wake_at is not None:
        word = "deadline" if info.deadline == info.wake_at else "wakes   "
        lines.insert(3, f"{word} {at(info.wake_at)} ({relative(info.wake_at, now)})")
    lines += value_lines("input", info.input, "", full=full, fit=fit, sep="    ")
    if info.status == Status.COMPLETED:
        lines += value_lines("value", info.value, "", full=full, fit=fit, sep="    ")
    if info.error is not None:
        lines.append(f"error    {info.error.type}: {info.error.message}")
        lines += [f"  {line}" for line in info.error.traceback.rstrip("\n").splitlines()]

    consumed_by = {s.position: s.id for s in info.signals if s.position is not None}
    labels = [describe(entry.kind, entry.name) for entry in info.history]
    align = min(max(map(len, labels), default=0), 32)
    lines += ["", f"timeline ({len(info.history)} recorded)" if info.history else "timeline: empty"]
    for entry in info.history:
        lines += entry_lines(entry, info, consumed_by, now, align=align, full=full, fit=fit)
    if info.signals:
        lines += ["", f"signals ({len(info.signals)})"]
        for sig in info.signals:
            lines += signal_lines(sig, full=full, fit=fit)
    return lines


def status_text(info: FlowInfo) -> str:
    status = info.status
    if status == Status.SUSPENDED and info.waiting_for:
        return f"suspended, waiting for {info.waiting_for!r}"
    if status == Status.CANCELLED:
        return f"cancelled: {info.cancel_reason}" if info.cancel_reason else "cancelled"
    if status == Status.EXPIRED and info.waiting_for:
        return f"expired waiting for {info.waiting_for!r}"
    return str(status)


def entry_lines(
    entry: HistoryEntry,
    info: FlowInfo,
    consumed_by: dict[int, int],
    now: datetime,
    *,
    align: int,
    full: bool,
    fit: int,
) -> list[str]:
    label = describe(entry.kind, entry.name).ljust(align)
    facts = [entry.state]
    if entry.kind in VALUE_KINDS:  # ctx.now() & co.: just the value
        return [
            f"  {entry.position:>3}  {label}  recorded",
            *value_lines("value", entry.result, "       ", full=full, fit=fit),
        ]
    if entry.kind in ("step", "wait_until") and entry.attempts:
        facts.append(f"{entry.attempts} attempt{'s' if entry.attempts != 1 else ''}")
    if entry.started_at is not None and entry.finished_at is not None:
        took = (entry.finished_at - entry.started_at).total_seconds()
        facts.append(("waited " if entry.kind in ("suspend", "sleep") else "took ") + span(took))
    elif entry.started_at is not None:
        facts.append(f"since {at(entry.started_at)}")
    if entry.position in consumed_by:
        facts.append(f"signal #{consumed_by[entry.position]}")
    lines = [f"  {entry.position:>3}  {label}  " + ", ".join(facts)]
    pad = "       "
    if entry.state == "retrying" and entry.wake_at is not None:
        lines.append(f"{pad}next try {at(entry.wake_at)} ({relative(entry.wake_at, now)})")
    if entry.state == "waiting":
        if entry.deadline is not None:
            lines.append(f"{pad}deadline {at(entry.deadline)} ({relative(entry.deadline, now)})")
        elif entry.wake_at is not None:
            lines.append(f"{pad}wakes {at(entry.wake_at)} ({relative(entry.wake_at, now)})")
    if entry.state == "completed" and not (entry.kind == "sleep" and entry.result is None):
        lines += value_lines("result", entry.result, pad, full=full, fit=fit)
    if entry.error is not None:
        # The flow's own error (printed above) already carries this traceback
        # when it is this error that failed the flow.
        same = info.error is not None and (info.error.type, info.error.message) == (
            entry.error.type,
            entry.error.message,
        )
        lines += error_lines(entry.error, pad, with_traceback=full or not same)
        if same and not full:
            lines.append(f"{pad}  (the traceback is the flow's error above)")
    return lines


def signal_lines(sig: SignalInfo, *, full: bool, fit: int) -> list[str]:
    facts = [sig.state]
    if sig.position is not None:
        facts[0] += f" by #{sig.position}"
    lines = [f"  #{sig.id:<3} {sig.name!r}  {', '.join(facts)}  sent {at(sig.created_at)}"]
    pad = "       "
    lines += value_lines("payload", sig.payload, pad, full=full, fit=fit)
    if sig.error:
        why = f"{pad}rejected: {sig.error}"
        lines.append(why if full else cut(why, fit))
    return lines


# -- signal, cancel, retry, prune ----------------------------------------------------


@cli.command("signal", short_help="Send a signal with a JSON payload to a flow.")
@click.argument("flow_id", metavar="ID")
@click.argument("name")
@click.argument("payload", metavar="JSON")
@db_option
def signal_command(flow_id: str, name: str, payload: str, db: str) -> None:
    """Send the signal NAME with a JSON payload to a flow ('-' reads it from stdin).

    The signal is stored at once; the flow takes it at its next run (a worker
    pass or a resume) when it reaches Suspend(NAME), first in first out. A
    finished flow, or one whose wait has expired, refuses it.

    \b
    Example:
      crux-gen signal 7f3a1c2b9e0d email-verified '{"verified_at": "2026-11-24"}'
      echo '{"verified_at": "2026-11-24"}' | crux-gen signal 7f3a email-verified -
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
        signal_flow(stored.id, name, value, store=store)
    waits = stored.status == Status.SUSPENDED and stored.waiting_for == name
    click.echo(f"sent {name!r} to flow {stored.id} ({stored.name})")
    if waits:
        click.echo("the flow waits for it: the next worker pass or resume delivers it")
    else:
        click.echo(f"kept pending until the flow reaches Suspend({name!r})")


@cli.command("cancel")
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
    click.echo(f"cancelled flow {stored.id} ({stored.name})")
    click.echo(f"reason: {reason}")


@cli.command("retry")
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
        dropped = store.retry_failed(stored.id, store.clock.now().timestamp())
    kept = len(stored.records) - len(dropped)
    click.echo(f"retried flow {stored.id} ({stored.name})")
    if dropped:
        first = dropped[0]
        click.echo(
            f"dropped the failed record at position {first.position}, "
            f"{describe(first.kind, first.name)}"
            + (f", and {len(dropped) - 1} after it" if len(dropped) > 1 else "")
            + f"; kept {kept}"
        )
        click.echo("it is due now: the next worker pass or resume runs it from there")
    else:
        click.echo(f"it failed in its body, after its {kept} records: nothing dropped")
        click.echo("it is due now: the next worker pass or resume replays it and runs the body")


@cli.command("prune", short_help="Delete old finished flows and their history.")
@click.option(
    "--finished-before",
    "age",
    required=True,
    metavar="AGE",
    help='Delete flows finished and last updated longer ago than this ("30d", "12h").',
)
@db_option
def prune_command(age: str, db: str) -> None:
    """Delete old finished flows (completed, failed, expired, cancelled), with
    their history and signals. Unfinished flows are never touched.

    \b
    Example, keeping 30 days:
      crux-gen prune --finished-before 30d
    """
    keep = duration_option(age, "--finished-before")
    with store_at(db) as store:
        before = store.clock.now() - keep
        deleted = store.prune(before.timestamp())
    plural = "flow" if deleted == 1 else "flows"
    click.echo(f"deleted {deleted} finished {plural} last updated before {at(before)}")


# -- replay --------------------------------------------------------------------------


class _ReachedLive(BaseException):
    """Replay got past the recorded history (raised inside the flow's generator;
    a BaseException, so the flow's ``except Exception`` blocks let it through)."""


class _ReplayDriver:
    """What ``ctx.now()`` & co. read during a replay check: recorded values only."""

    def __init__(self, interp: Interpreter) -> None:
        self.interp = interp

    @property
    def is_replaying(self) -> bool:
        return self.interp.is_replaying

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        found, value = self.interp.recorded_value(kind)
        if not found:
            raise _ReachedLive
        return value


def replay_check(stored: StoredFlow, fn: Any) -> tuple[str, str] | None:
    """Replay *stored*'s history against the flow body *fn*: ``None`` when it replays
    cleanly, else ``("diverges" or "raises", what happens)``. Runs no step and writes
    nothing: it stops at the first decision that is not recorded."""
    ctx = FlowContext(input=codec.decode(stored.input), flow_id=stored.id, name=stored.name)
    records = stored.records
    interp = Interpreter(fn(ctx), records, flow_id=stored.id, flow_name=stored.name)
    ctx._driver = _ReplayDriver(interp)
    try:
        decision = interp.next_decision()
    except NonDeterminismError as exc:
        return "diverges", (
            f"position {exc.position}: recorded {exc.recorded}, the code now yields {exc.new}"
        )
    except _ReachedLive:
        return None
    except Exception as exc:  # a record this code cannot read back, for one
        return "raises", f"replay failed: {type(exc).__name__}: {exc}"
    finally:
        interp.close()
    position = interp.position
    if isinstance(decision, Finished | Failed) and position < len(records):
        recorded = describe(records[position].kind, records[position].name)
        if isinstance(decision, Finished):
            return "diverges", f"position {position}: recorded {recorded}, the code now returns"
        return "raises", (
            f"position {position}: recorded {recorded}, the code now raises "
            f"{type(decision.exception).__name__}: {decision.exception}"
        )
    if isinstance(decision, Failed):
        raised = f"{type(decision.exception).__name__}: {decision.exception}"
        if position == 0:
            return "raises", f"position 0: the code raises {raised} before its first command"
        last = describe(records[position - 1].kind, records[position - 1].name)
        return "raises", f"position {position - 1}: after {last} the code now raises {raised}"
    return None


@cli.command("replay")
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

    Exit code 1 when any flow diverges (or raises), else 0. Run it against a
    copy of the production database:

    \b
      crux-gen replay myapp.flows --db prod-copy.db
    """
    import_module(module)
    problems = skipped = checked = 0
    with store_at(db) as store:
        unfinished = [
            f
            for status in (Status.SUSPENDED, Status.RUNNING)
            for f in store.list_flows(status=status.value, limit=2**62)
        ]
        for summary in sorted(unfinished, key=lambda f: (f.created_at, f.id)):
            if summary.name not in default_registry:
                skipped += 1
                click.echo(f"skipped   {summary.id}  {summary.name}  (not in {module})")
                continue
            try:
                stored = store.load(summary.id)
            except FlowNotFoundError:  # pruned meanwhile
                continue
            checked += 1
            found = replay_check(stored, default_registry.get(stored.name).fn)
            if found is not None:
                problems += 1
                label, what = found
                click.echo(f"{label:<9} {stored.id}  {stored.name}  {what}")
    ok = checked - problems
    click.echo(
        f"replayed {checked} unfinished flow{'s' if checked != 1 else ''} against {module}: "
        f"{ok} ok, {problems} diverge{'s' if problems == 1 else ''}, {skipped} skipped"
    )
    if problems:
        raise click.exceptions.Exit(1)


# -- worker --------------------------------------------------------------------------


@cli.command("worker")
@click.argument("module")
@db_option
@click.option(
    "--poll",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help='How often to look for due flows ("500ms", "1s", "1m").',
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="What the worker logs to stderr.",
)
def worker_command(module: str, db: str, poll: str, log_level: str) -> None:
    """Run every due flow of MODULE until SIGINT or SIGTERM.

    Imports MODULE so its @flow functions register (the current directory is on
    the import path, as with python -m), then advances every due flow: a
    pending signal it waits for, a passed deadline, a due timer or retry, a
    crashed runner's flow. On SIGINT (Ctrl-C) or SIGTERM the flow in hand stops
    at its next command boundary, its lease is released, and the worker exits
    with code 0. The database is created if it does not exist.
    """
    duration_option(poll, "--poll")
    import_module(module)
    if not default_registry.names():
        raise CLIError(f"{module} registers no @flow; give the module that defines your flows")
    from .worker import Worker

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with store_at(db, create=True) as store:
        worker = Worker(store=store)

        def stop(signum: int, frame: Any) -> None:
            worker.stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        click.echo(
            f"worker on {db} for flows {', '.join(default_registry.names())}; "
            "Ctrl-C or SIGTERM stops it",
            err=True,
        )
        worker.run_forever(poll=poll)


def duration_option(value: str, option: str) -> timedelta:
    try:
        return to_duration(value, what=option)
    except ValueError:
        raise CLIError(
            f'{option} {value!r} is not a duration (try "500ms", "30s", "10m", "12h", "30d")'
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
    """``Type: message (file, line N)`` for the innermost frame of *exc*."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


# -- entry point ---------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    click.echo(f"error: {cut(message, 10_000)}", err=True)
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``crux-gen`` console script (also ``python -m crux_gen``)."""
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
