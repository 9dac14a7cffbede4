"""The subcommands that import the user's MODULE of flows: ``replay`` checks a
deploy against the flows in progress, ``worker`` runs them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
from datetime import timedelta
from typing import Any

import attrs
import click

from ..durations import format_duration
from ..errors import FlowNotFoundError
from ..flow import default_registry
from ..records import StoredFlow
from ..replay import replay_check
from ..status import Status
from . import (
    CLIError,
    CLIStore,
    Count,
    db_option,
    duration_option,
    is_url,
    shown,
    store_at,
)
from .format import clean, echo, fold, to_json, width

#: The most threads ``worker --concurrency`` starts.
MAX_CONCURRENCY = 1024

# -- replay ----------------------------------------------------------------------------


@click.command("replay")
@click.argument("module")
@db_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object: the counts, and a list of the flows that diverge or are skipped.",
)
def replay_command(module: str, db: str, as_json: bool) -> None:
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
    with store_at(db) as store:
        tally = replay_unfinished(store, module, fit, quiet=as_json)
    checked, problems, names = tally.checked, tally.problems, tally.names
    if as_json:
        counts = {"checked": checked, "ok": checked - problems, "diverge": problems}
        click.echo(to_json({**counts, "skipped": tally.skipped, "flows": tally.found}))
    summary_line = (
        f"replayed {checked} unfinished flow{'s' if checked != 1 else ''} against {module}: "
        f"{checked - problems} ok, {problems} diverge{'s' if problems == 1 else ''}, "
        f"{tally.skipped} skipped"
    )
    for line in () if as_json else fold(clean(summary_line), fit):
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


@attrs.define
class ReplayTally:
    """What ``replay`` found: how many flows it replayed, how many of them diverge,
    how many it skipped (their name not registered), and every name it saw."""

    checked: int = 0
    problems: int = 0
    skipped: int = 0
    names: set[str] = attrs.field(factory=set)
    #: Each flow reported (``replay --json``): id, name, kind and text.
    found: list[dict[str, str]] = attrs.field(factory=list)

    def report(self, kind: str, flow: StoredFlow, text: str, fit: int, quiet: bool) -> None:
        """Note a flow that diverges or is skipped; print it unless *quiet*."""
        self.found.append({"id": flow.id, "name": flow.name, "kind": kind, "text": text})
        for line in () if quiet else replay_lines(kind, flow, text, fit):
            echo(line)


def replay_unfinished(
    store: CLIStore, module: str, fit: int, *, quiet: bool = False
) -> ReplayTally:
    """Replay every unfinished flow of *store*, oldest first, against the code
    registered under its name, printing the report of each one that diverges or
    is skipped (*module*, where the code came from, is named in the report)."""
    tally = ReplayTally()
    unfinished = [
        f
        for status in (Status.SUSPENDED, Status.RUNNING)
        for f in store.list_flows(status=status.value, limit=2**62)
    ]
    for summary in sorted(unfinished, key=lambda f: (f.created_at, f.id)):
        tally.names.add(summary.name)
        if summary.name not in default_registry:
            tally.skipped += 1
            tally.report("skipped", summary, f"(not in {module})", fit, quiet)
            continue
        try:
            stored = store.load(summary.id)
        except FlowNotFoundError:  # pruned meanwhile
            continue
        tally.checked += 1
        found = replay_check(stored, default_registry.get(stored.name).fn)
        if found is not None:
            tally.problems += 1
            tally.report(found.kind, stored, found.text, fit, quiet)
    return tally


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
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="What the worker logs to stderr (debug: each step attempt and its outcome).",
)
@click.option("--once", is_flag=True, help="Run one pass over the flows due now, then exit.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='On exit, one JSON object on stdout: {"advanced": N} with --once.',
)
def worker_command(
    module: str,
    db: str,
    poll: str,
    lease_ttl: str,
    synchronous: str,
    concurrency: int,
    log_level: str,
    once: bool,
    as_json: bool,
) -> None:
    """Run every due flow of MODULE until SIGINT or SIGTERM.

    Imports MODULE so its @flow functions register (the current directory is on
    the import path, as with python -m), then advances every due flow: a
    pending signal it waits for, a passed deadline, a due timer or retry, a
    crashed runner's flow. On SIGINT (Ctrl-C) or SIGTERM the flow in hand stops
    at its next command boundary, its lease is released, and the worker exits
    with code 0; another SIGINT or SIGTERM meanwhile changes nothing (it is
    logged). A SQLite file is created if it does not exist, with a warning on
    stderr (a mistyped --db would be polled, empty, forever); a PostgreSQL
    database (--db postgresql://...) must exist, and crux_gen's tables are made
    in it, so workers on many hosts can share it.

    With --once it runs one pass (every flow due now, each advanced until it
    parks or finishes), prints how many flows it advanced, and exits: for cron,
    and for scripts and tests.
    """
    period, ttl = worker_durations(db, poll, lease_ttl)
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # Until the worker runs, SIGINT or SIGTERM ends the process at once, with code 0
    # as later (a deploy that stops a worker still importing its module, say).
    signal.signal(signal.SIGINT, _stop_before_start)
    signal.signal(signal.SIGTERM, _stop_before_start)
    import_module(module)
    if not default_registry.names():
        raise CLIError(f"{module} registers no @flow; give the module that defines your flows")
    from ..worker import Worker

    formatter = log_to_stderr(log_level)
    with store_at(db, create=True, lease_ttl=ttl, synchronous=synchronous) as store:
        worker = Worker(
            store=store,
            concurrency=concurrency,
            not_registered_hint=(
                'give crux-gen worker the module that defines @flow("{name}") as MODULE '
                f"(this worker imported {module})"
            ),
        )
        if once:
            one_pass(worker, formatter, as_json, previous)
            return
        echo(worker_banner(db, ttl, synchronous, concurrency), err=True)
        run_until_stopped(worker, formatter, period)
        if as_json:
            click.echo(to_json({"stopped": True, "batches": worker.batches}))


def one_pass(
    worker: Any, formatter: logging.Formatter, as_json: bool, previous: tuple[Any, Any]
) -> None:
    """``worker --once``: one pass, stopped by SIGINT or SIGTERM at the next command
    boundary; then the signal handlers are what they were before the command."""
    stop_on_signals(worker, formatter)
    try:
        advanced = worker.run_once()
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    if as_json:
        click.echo(to_json({"advanced": advanced}))
    else:
        echo(f"advanced {advanced} flow{'s' if advanced != 1 else ''}")


def stop_on_signals(worker: Any, formatter: logging.Formatter) -> None:
    """From now on SIGINT and SIGTERM stop *worker* at its next command boundary."""
    stopper = Stopper(worker, formatter, logging.getLogger("crux_gen.cli"))
    signal.signal(signal.SIGINT, stopper)
    signal.signal(signal.SIGTERM, stopper)


def run_until_stopped(worker: Any, formatter: logging.Formatter, period: timedelta) -> None:
    """Run *worker* until SIGINT or SIGTERM (:class:`Stopper`)."""
    stop_on_signals(worker, formatter)
    try:
        worker.run_forever(poll=period)
    finally:
        # From here on the worker is done: one more signal must not kill the
        # process on its way out (Python restores the default handlers, which
        # kill, while it shuts down; it leaves ignored signals ignored).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_durations(db: str, poll: str, lease_ttl: str) -> tuple[timedelta, timedelta]:
    """``worker``'s ``--poll`` and ``--lease-ttl`` as durations, once its options are
    checked: no ``--synchronous`` given for PostgreSQL, a lease longer than 0s."""
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
    return period, ttl


def worker_banner(db: str, ttl: timedelta, synchronous: str, concurrency: int) -> str:
    """The line ``worker`` starts with: the store, its settings, the flows it runs."""
    settings = f"lease {format_duration(ttl)}"
    if not is_url(db):
        settings += f", synchronous {synchronous.upper()}"
    if concurrency > 1:
        settings += f", concurrency {concurrency}"
    return (
        f"worker on {shown(db)} ({settings}) for flows "
        f"{', '.join(default_registry.names())}; Ctrl-C or SIGTERM stops it"
    )


def log_to_stderr(level: str) -> logging.Formatter:
    """Log at *level* (``info``…) to stderr, stored text escaped; return the formatter,
    with which the :class:`Stopper` writes its own lines."""
    formatter = _CleanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    return formatter


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


# -- the MODULE argument ---------------------------------------------------------------


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
