"""``crux-gen migrate``: copy every flow from one store to another (from a SQLite
file to PostgreSQL when one machine is outgrown)."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta
from pathlib import Path

import attrs
import click

from ..durations import format_duration
from ..migrate import DEFAULT_BATCH, MigrationReport, migrate
from . import (
    MAX_COUNT,
    CLIError,
    Count,
    is_url,
    shown,
    store_at,
)
from .format import clean, echo, fold, to_json, width

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
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
def migrate_command(source: str, target: str, batch: int, as_json: bool) -> None:
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
    if as_json:
        found = {"from": shown(source), "to": shown(target), "flows": report.flows}
        click.echo(to_json({**found, **attrs.asdict(report)}))
        return
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
    copied = f"{report.schedules} schedule{'s' if report.schedules != 1 else ''}"
    if not report.flows:
        if report.schedules:
            return [f"{source} holds no flows; copied {copied} into {target}", took]
        return [f"{source} holds no flows: nothing to copy into {target}", took]
    statuses = ", ".join(f"{n} {status}" for status, n in report.by_status.items())
    return [
        f"migrated {flows(report.flows)} from {source} to {target}: {report.copied} copied, "
        f"{report.skipped} already there (same checksum)",
        f"by status: {statuses}",
        f"with {report.records} record{'s' if report.records != 1 else ''} and "
        f"{report.signals} signal{'s' if report.signals != 1 else ''}; counts and checksum "
        "verified for every flow",
        *([f"and {copied} (their state: paused, last and next tick)"] if report.schedules else []),
        took,
    ]
