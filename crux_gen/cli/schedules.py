"""``crux-gen schedules`` and ``crux-gen schedule pause|resume|trigger|backfill``:
the cron schedules a store keeps (``crux_gen.schedules``), which the workers that
register a scheduled flow store and fire. Every subcommand takes ``--json``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import click

from ..durations import moment_of
from ..records import StoredSchedule
from ..schedules import backfill, pause, resume, schedule_store, tick_id, trigger
from . import db_option, store_at
from .format import echo, table, to_json, width

_JSON = click.option("--json", "as_json", is_flag=True, help="JSON on stdout, for scripts.")


def _local(moment: float, tz: str) -> str:
    """*moment* in the zone *tz*: ``2026-03-29 03:00:00+02:00``."""
    return datetime.fromtimestamp(moment, ZoneInfo(tz)).isoformat(sep=" ")


def _described(row: StoredSchedule) -> dict[str, Any]:
    return {
        "name": row.name,
        "cron": row.cron,
        "tz": row.tz,
        "paused": row.paused,
        "last_tick": None if row.last_tick is None else tick_id(row.last_tick),
        "last_flow": row.last_flow,
        "next_tick": tick_id(row.next_tick),
        "next_tick_local": _local(row.next_tick, row.tz),
    }


@click.command("schedules", short_help="List the cron schedules and their next ticks.")
@db_option
@_JSON
def schedules_command(db: str, as_json: bool) -> None:
    """List the schedules the store keeps: cron, zone, paused or not, the last
    tick fired, and the next tick in the schedule's zone and in UTC.

    A schedule is stored by the first worker that registers its flow
    (@flow(..., schedule=Schedule(...))).
    """
    with store_at(db) as store:
        rows = [_described(row) for row in schedule_store(store).list_schedules()]
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        echo("no schedules: a worker that registers a scheduled flow stores its schedule")
        return
    headers = ["NAME", "CRON", "TZ", "PAUSED", "LAST TICK", "NEXT TICK (ZONE)", "NEXT TICK (UTC)"]
    cells = [
        [
            r["name"], r["cron"], r["tz"], "yes" if r["paused"] else "no",
            r["last_tick"] or "-", r["next_tick_local"], r["next_tick"],
        ]
        for r in rows
    ]  # fmt: skip
    for line in table(headers, cells, width(), {0: 12, 1: 9}):
        echo(line)


@click.group("schedule", short_help="Pause, resume, trigger or backfill one schedule.")
def schedule_group() -> None:
    """Change one schedule for every worker: pause, resume, trigger, backfill."""


@schedule_group.command("pause")
@click.argument("name")
@db_option
@_JSON
def pause_command(name: str, db: str, as_json: bool) -> None:
    """Pause the schedule NAME: no worker fires its ticks until `resume`."""
    with store_at(db) as store:
        row = pause(name, store=store)
    if as_json:
        click.echo(to_json(_described(row)))
    else:
        echo(f"paused schedule {row.name}: no worker fires its ticks until resume")


@schedule_group.command("resume")
@click.argument("name")
@db_option
@_JSON
def resume_command(name: str, db: str, as_json: bool) -> None:
    """Resume the schedule NAME from its next tick (the paused ticks are not fired)."""
    with store_at(db) as store:
        row = resume(name, store=store)
    if as_json:
        click.echo(to_json(_described(row)))
    else:
        echo(f"resumed schedule {row.name}: next tick {tick_id(row.next_tick)}")


@schedule_group.command("trigger")
@click.argument("name")
@db_option
@_JSON
def trigger_command(name: str, db: str, as_json: bool) -> None:
    """Start one run of the schedule NAME now (a worker runs it), paused or not."""
    with store_at(db) as store:
        flow_id, started = trigger(name, store=store)
    if as_json:
        click.echo(to_json({"name": name, "id": flow_id, "started": started}))
    elif started:
        echo(f"started flow {flow_id}: the next worker pass runs it")
    else:
        echo(f"flow {flow_id} exists already: nothing started")


@schedule_group.command("backfill")
@click.argument("name")
@click.option("--from", "start", required=True, metavar="TIME", help="First tick (inclusive).")
@click.option("--to", "end", required=True, metavar="TIME", help="Last tick (exclusive).")
@db_option
@_JSON
def backfill_command(name: str, start: str, end: str, db: str, as_json: bool) -> None:
    """Start the flow of every tick of NAME with FROM <= tick < TO (ISO 8601; a
    time without a zone is UTC), oldest first. Ticks fired already start nothing
    again, so a backfill can be run twice.

    \b
    Example:
      crux-gen schedule backfill nightly-report --from 2026-03-01 --to 2026-03-08
    """
    with store_at(db) as store:
        now = datetime.fromtimestamp(store.clock.time(), timezone.utc)
        first = moment_of(start, now, what="--from")
        last = moment_of(end, now, what="--to")
        done = backfill(name, first, last, store=store)
    started = sum(1 for _, made in done if made)
    if as_json:
        flows = [{"id": flow_id, "started": made} for flow_id, made in done]
        found = {"name": name, "from": first.isoformat(), "to": last.isoformat()}
        click.echo(to_json({**found, "ticks": len(done), "started": started, "flows": flows}))
        return
    for flow_id, made in done:
        echo(f"{flow_id}  {'started' if made else 'exists already'}")
    echo(f"{len(done)} tick(s): {started} started, {len(done) - started} there already")
