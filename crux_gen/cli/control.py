"""The subcommands that change stored flows without running them: ``signal``,
``cancel``, ``retry``, ``delete`` and ``prune`` (as :mod:`crux_gen.control` does)."""

from __future__ import annotations

import json
import sys

import click

from ..commands import describe
from ..control import cancel_flow, delete_flow, signal_flow
from ..status import FINISHED, Status
from . import (
    CLIError,
    CLIStore,
    db_option,
    duration_option,
    find_flow,
    store_at,
)
from .format import at, cut, echo

# -- one flow: signal, cancel, retry, delete -------------------------------------------


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


# -- many flows: prune -----------------------------------------------------------------


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
