"""``crux-gen pause ID`` and ``crux-gen unpause ID`` (as :func:`crux_gen.pause_flow`
and :func:`crux_gen.unpause_flow` do), or ``--all`` with the filters of ``list``
and ``--dry-run``, reporting per flow (:mod:`~crux_gen.cli.bulk`, as ``cancel
--all`` does)."""

from __future__ import annotations

from typing import Any

import click

from ..clock import when
from ..control import pause_flow, unpause_flow
from ..errors import FlowClosedError
from ..records import StoredFlow
from ..status import FINISHED, Status
from . import CLIError, CLIStore, db_option, find_flow, store_at
from .bulk import Action, bulk_options, check_target, dry_run_one, run_all
from .filters import read_filters
from .format import at, echo, to_json

JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="JSON: an object, or with --all a list, one per flow."
)
#: The statuses ``pause --all`` goes through: the unfinished ones not paused yet.
PAUSABLE = tuple(sorted(s.value for s in Status if s not in FINISHED and s != Status.PAUSED))


def pause_one(store: CLIStore, row: StoredFlow) -> str | None:
    """``pause --all``'s action on one flow: ``None``, or why it was left."""
    try:
        return None if pause_flow(row.id, store=store) else "paused meanwhile"
    except FlowClosedError:
        return "finished meanwhile"


def unpause_one(store: CLIStore, row: StoredFlow) -> str | None:
    """``unpause --all``'s action on one flow: ``None``, or why it was left."""
    return None if unpause_flow(row.id, store=store) else "not paused any more"


@click.command("pause")
@click.argument("flow_id", metavar="ID", required=False)
@db_option
@bulk_options
@JSON_OPTION
def pause_command(
    flow_id: str | None, db: str, every: bool, dry_run: bool, as_json: bool, **given: Any
) -> None:
    """Pause an unfinished flow, or with --all every pending, running or
    suspended flow the filters select (at least one filter): no worker or
    resume runs it until `unpause`.

    A flow running in another process stops at its next command boundary (the
    step in hand finishes and is recorded). Signals sent meanwhile are stored;
    timers and deadlines keep counting. Its children keep running. A flow
    paused already is left as it is (exit code 0, "already paused"); a
    finished one: exit code 1 (with --all: reported as skipped).

    \b
    Examples:
      crux-gen pause 7f3a1c2b9e0d
      crux-gen unpause 7f3a1c2b9e0d
      crux-gen pause --all --flow nightly-sync --dry-run
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        check_target("pause", flow_id, every, filters)
        if every:
            if not filters.given:
                raise CLIError(
                    "pause --all needs at least one filter (--status, --flow, --since, "
                    "--until, --waiting-for, …): it would pause every unfinished flow"
                )
            action = Action("pause", "paused", PAUSABLE, pause_one)
            run_all(store, action, filters, dry_run=dry_run, as_json=as_json)
            return
        assert flow_id is not None
        stored = find_flow(store, flow_id)
        if stored.status in FINISHED:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}; "
                "only an unfinished flow can be paused"
            )
        if dry_run and stored.status != Status.PAUSED:
            dry_run_one("pause", stored, as_json)
            return
        try:
            changed = not dry_run and pause_flow(stored.id, store=store)
        except FlowClosedError:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}; "
                "only an unfinished flow can be paused"
            ) from None
    outcome = "paused" if changed else "already paused"
    if as_json:
        found = {"id": stored.id, "name": stored.name, "status": "paused"}
        click.echo(to_json({**found, "outcome": outcome, "was": stored.status}))
        return
    if not changed:
        echo(f"flow {stored.id} ({stored.name}) is paused already; nothing changed")
        return
    echo(f"paused flow {stored.id} ({stored.name}, was {stored.status})")
    echo("no worker or resume runs it until: crux-gen unpause " + stored.id)


@click.command("unpause")
@click.argument("flow_id", metavar="ID", required=False)
@db_option
@bulk_options
@JSON_OPTION
def unpause_command(
    flow_id: str | None, db: str, every: bool, dry_run: bool, as_json: bool, **given: Any
) -> None:
    """Send a paused flow back to what it was: suspended on its wait (with its
    wake time and deadline), pending, or running; whatever became due while it
    was paused (a timer, a signal it waits for) runs at the next worker pass.
    With --all, every paused flow the filters select (none: every paused flow).
    A flow that is not paused is left as it is (exit code 0, "not paused").

    \b
    Examples:
      crux-gen unpause 7f3a1c2b9e0d --json
      crux-gen unpause --all --flow nightly-sync
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        check_target("unpause", flow_id, every, filters)
        if every:
            if filters.status not in (None, Status.PAUSED.value):
                raise CLIError(f"--status {filters.status}: unpause takes paused flows only")
            action = Action("unpause", "unpaused", (Status.PAUSED.value,), unpause_one)
            run_all(store, action, filters, dry_run=dry_run, as_json=as_json)
            return
        assert flow_id is not None
        stored = find_flow(store, flow_id)
        if dry_run and stored.status == Status.PAUSED:
            dry_run_one("unpause", stored, as_json)
            return
        changed = not dry_run and unpause_flow(stored.id, store=store)
        now = store.load(stored.id)
    outcome = "unpaused" if changed else "not paused"
    if as_json:
        wake = when(now.wake_at)
        found = {"id": now.id, "name": now.name, "status": now.status, "outcome": outcome}
        wait = {"waiting_for": now.waiting_for, "wake_at": wake.isoformat() if wake else None}
        click.echo(to_json({**found, **wait}))
        return
    if not changed:
        echo(f"flow {now.id} ({now.name}) is {now.status}, not paused; nothing changed")
        return
    echo(f"unpaused flow {now.id} ({now.name}): {standing(now)}")


def standing(row: StoredFlow) -> str:
    """Where an unpaused flow stands, in words."""
    if row.waiting_for is not None and row.wait_kind is not None:
        until = f" until {at(when(row.wake_at))}" if row.wake_at is not None else ""
        return f"{row.status}, waiting for {row.waiting_for!r}{until}"
    return f"{row.status}, due at the next worker pass"
