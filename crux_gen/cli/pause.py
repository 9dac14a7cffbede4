"""``crux-gen pause ID`` and ``crux-gen unpause ID`` (as :func:`crux_gen.pause_flow`
and :func:`crux_gen.unpause_flow` do)."""

from __future__ import annotations

import click

from ..clock import when
from ..control import pause_flow, unpause_flow
from ..errors import FlowClosedError
from ..records import StoredFlow
from . import CLIError, db_option, find_flow, store_at
from .format import at, echo, to_json

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")


@click.command("pause")
@click.argument("flow_id", metavar="ID")
@db_option
@JSON_OPTION
def pause_command(flow_id: str, db: str, as_json: bool) -> None:
    """Pause an unfinished flow: no worker or resume runs it until `unpause`.

    A flow running in another process stops at its next command boundary (the
    step in hand finishes and is recorded). Signals sent meanwhile are stored;
    timers and deadlines keep counting. Its children keep running. A flow
    paused already is left as it is (exit code 0, "already paused"); a
    finished one: exit code 1.

    \b
    Example:
      crux-gen pause 7f3a1c2b9e0d
      crux-gen unpause 7f3a1c2b9e0d
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        try:
            changed = pause_flow(stored.id, store=store)
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
@click.argument("flow_id", metavar="ID")
@db_option
@JSON_OPTION
def unpause_command(flow_id: str, db: str, as_json: bool) -> None:
    """Send a paused flow back to what it was: suspended on its wait (with its
    wake time and deadline), pending, or running; whatever became due while it
    was paused (a timer, a signal it waits for) runs at the next worker pass.
    A flow that is not paused is left as it is (exit code 0, "not paused").

    \b
    Example:
      crux-gen unpause 7f3a1c2b9e0d --json
    """
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        changed = unpause_flow(stored.id, store=store)
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
