"""The subcommands that change stored flows without running them: ``signal``,
``cancel``, ``retry``, ``delete`` and ``prune`` (as :mod:`crux_gen.control` does).
``retry``, ``cancel`` and ``delete`` take one ID, or ``--all`` with the filters of
``list`` (:mod:`~crux_gen.cli.bulk`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
import click

from ..commands import describe
from ..control import cancel_flow, delete_flow, signal_flow
from ..records import StoredFlow, StoredRecord
from ..status import FINISHED, Status
from . import (
    CLIError,
    CLIStore,
    db_option,
    duration_option,
    find_flow,
    store_at,
)
from .bulk import Action, bulk_options, check_target, dry_run_one, run_all
from .filters import read_filters
from .format import at, cut, echo, to_json

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
BULK_JSON = click.option(
    "--json", "as_json", is_flag=True, help="JSON: an object, or with --all a list, one per flow."
)

# -- one flow: signal ------------------------------------------------------------------


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
@JSON_OPTION
def signal_command(
    flow_id: str, name: str, payload: str, key: str | None, db: str, as_json: bool
) -> None:
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
    waits = stored.status == Status.SUSPENDED and stored.waiting_for == name
    if as_json:
        found = {"id": stored.id, "name": stored.name, "signal": name, "key": key, "sent": sent}
        click.echo(to_json({**found, "waited_for": sent and waits}))
        return
    if not sent:
        echo(f"not sent: flow {stored.id} ({stored.name}) already has a signal with key {key!r}")
        return
    echo(f"sent {name!r} to flow {stored.id} ({stored.name})")
    if waits:
        echo("the flow waits for it: the next worker pass or resume delivers it")
    else:
        echo(f"kept pending until the flow reaches Suspend({name!r})")


# -- one flow or many: cancel, retry, delete -------------------------------------------


@click.command("cancel")
@click.argument("flow_id", metavar="ID", required=False)
@click.option(
    "--reason",
    default="cancelled with crux-gen cancel",
    show_default=True,
    help="Why; kept as the flow's cancel_reason.",
)
@db_option
@bulk_options
@BULK_JSON
def cancel_command(
    flow_id: str | None, reason: str, db: str, every: bool, dry_run: bool, as_json: bool,
    **given: Any,
) -> None:  # fmt: skip
    """Cancel an unfinished flow, or with --all every unfinished flow the filters
    select (at least one filter).

    It ends with status "cancelled" and the reason. A flow running in another
    process stops at its next command boundary (the step in hand finishes and
    is recorded). A finished flow is left as it is: exit code 1 (with --all it
    is reported as skipped).

    \b
    Examples:
      crux-gen cancel 7f3a1c2b9e0d --reason "customer left"
      crux-gen cancel --all --waiting-for email-verified --until 30d --dry-run
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        check_target("cancel", flow_id, every, filters)
        if every:
            if not filters.given:
                raise CLIError(
                    "cancel --all needs at least one filter (--status, --flow, --since, "
                    "--until, --waiting-for, …): it would cancel every unfinished flow"
                )
            action = Action("cancel", "cancelled", tuple(UNFINISHED_LIST), cancel_with(reason))
            run_all(store, action, filters, dry_run=dry_run, as_json=as_json)
            return
        assert flow_id is not None
        stored = find_flow(store, flow_id)
        if stored.status in FINISHED:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status} already; "
                "only an unfinished flow can be cancelled"
            )
        if dry_run:
            dry_run_one("cancel", stored, as_json)
            return
        if not cancel_flow(stored.id, reason, store=store):
            status = store.load(stored.id).status
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {status} already; "
                "only an unfinished flow can be cancelled"
            )
    if as_json:
        found = {"id": stored.id, "name": stored.name, "status": "cancelled"}
        click.echo(to_json({**found, "outcome": "cancelled", "reason": reason}))
        return
    echo(f"cancelled flow {stored.id} ({stored.name})")
    echo(f"reason: {reason}")


#: The unfinished statuses, in the order ``cancel --all`` goes through them.
UNFINISHED_LIST = sorted(s.value for s in Status if s not in FINISHED)


def cancel_with(reason: str) -> Any:
    """``cancel --all``'s action on one flow: ``None``, or why it was left."""

    def cancel(store: CLIStore, row: StoredFlow) -> str | None:
        return None if cancel_flow(row.id, reason, store=store) else "finished meanwhile"

    return cancel


#: The statuses ``retry`` takes (``retry_flow``).
RETRYABLE = (Status.FAILED.value, Status.CANCELLED.value, Status.EXPIRED.value)


def retry_one(store: CLIStore, row: StoredFlow) -> str | None:
    """``retry --all``'s action on one flow."""
    store.retry_failed(row.id, store.clock.now().timestamp())
    return None


def delete_one(store: CLIStore, row: StoredFlow) -> str | None:
    """``delete --all``'s action on one flow."""
    return None if delete_flow(row.id, store=store) else "deleted meanwhile"


@click.command("retry")
@click.argument("flow_id", metavar="ID", required=False)
@db_option
@bulk_options
@BULK_JSON
def retry_command(
    flow_id: str | None, db: str, every: bool, dry_run: bool, as_json: bool, **given: Any
) -> None:
    """Make a failed, cancelled or expired flow run again from where it stopped;
    with --all, every failed flow the filters select (none: every failed flow;
    --status cancelled or --status expired for those).

    Drops the record of the step that failed the flow (and anything recorded
    after it, such as a ctx.now() value), keeps every completed step and
    consumed signal before it, and makes the flow due: status "suspended",
    waking now. The next worker pass or resume runs it: completed steps replay
    from their records, the failed step runs again with all its attempts.

    If the flow failed in its body instead (no failed step at the end of its
    history, for instance when it caught a step's failure and went on), nothing
    is dropped: the next run replays every record and runs the body again from
    where it raised, which is what you want after deploying a fix.

    A cancelled flow goes on from where it was cancelled, with its descendants
    cancelled with it; a wait with a timeout that expired (or that a cancelled
    flow was parked on) is waited for again, its timeout counted from the
    retry. Signals left unused when the flow ended are pending again.

    Runs no flow code itself. A flow that is not failed, cancelled or expired:
    exit code 1.

    \b
    Example, the flows that failed overnight with one error:
      crux-gen retry --all --since 12h --error "TimeoutError" --dry-run
      crux-gen retry --all --since 12h --error "TimeoutError"
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        check_target("retry", flow_id, every, filters)
        if every:
            if filters.status is None:  # every failed flow, not the cancelled ones
                filters = attrs.evolve(filters, status=Status.FAILED.value)
            action = Action("retry", "retried", RETRYABLE, retry_one)
            run_all(store, action, filters, dry_run=dry_run, as_json=as_json)
            return
        assert flow_id is not None
        stored = find_flow(store, flow_id)
        if stored.status not in RETRYABLE:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}; "
                "only a failed, cancelled or expired flow can be retried"
            )
        if dry_run:
            dry_run_one("retry", stored, as_json)
            return
        changed = store.retry_failed(stored.id, store.clock.now().timestamp())
        left = len(store.load(stored.id).records)
    # A failed branch of an All is reset (its record stays, waiting); the rest is dropped.
    reset = [r for r in changed if r.position < left]
    dropped = [r for r in changed if r.position >= left]
    if as_json:
        click.echo(to_json(retried_json(stored, reset, dropped, left - len(reset))))
        return
    retried_lines(stored, reset, dropped, left - len(reset))


def retried_json(
    stored: StoredFlow, reset: list[StoredRecord], dropped: list[StoredRecord], kept: int
) -> dict[str, Any]:
    """``retry ID --json``: what was reset, dropped and kept."""

    def records(found: list[StoredRecord]) -> list[dict[str, Any]]:
        return [{"position": r.position, "kind": r.kind, "name": r.name} for r in found]

    return {
        "id": stored.id, "name": stored.name, "status": Status.SUSPENDED.value,
        "outcome": "retried", "reset": records(reset), "dropped": records(dropped), "kept": kept,
    }  # fmt: skip


def retried_lines(
    stored: StoredFlow, reset: list[StoredRecord], dropped: list[StoredRecord], kept: int
) -> None:
    """``retry ID``'s report."""
    echo(f"retried flow {stored.id} ({stored.name})")
    if reset:
        echo(
            f"reset {len(reset)} failed branch(es) of its All to run again: "
            + ", ".join(f"{describe(r.kind, r.name)} at position {r.position}" for r in reset)
            + f"; kept {kept} records"
        )
        echo("it is due now: the next worker pass or resume runs those branches only")
    elif dropped and stored.status != Status.FAILED:  # a timed wait, waited for again
        first = dropped[0]
        echo(
            f"dropped the {stored.status} wait at position {first.position}, "
            f"{describe(first.kind, first.name)}; kept {kept}"
        )
        echo("it is due now: the next worker pass or resume waits for it again, afresh")
    elif dropped:
        first = dropped[0]
        echo(
            f"dropped the failed record at position {first.position}, "
            f"{describe(first.kind, first.name)}"
            + (f", and {len(dropped) - 1} after it" if len(dropped) > 1 else "")
            + f"; kept {kept}"
        )
        echo("it is due now: the next worker pass or resume runs it from there")
    elif stored.status != Status.FAILED:
        echo(f"it was {stored.status} after its {kept} records: nothing dropped")
        echo("it is due now: the next worker pass or resume goes on from there")
    else:
        echo(f"it failed in its body, after its {kept} records: nothing dropped")
        echo("it is due now: the next worker pass or resume replays it and runs the body")


@click.command("delete")
@click.argument("flow_id", metavar="ID", required=False)
@db_option
@bulk_options
@BULK_JSON
def delete_command(
    flow_id: str | None, db: str, every: bool, dry_run: bool, as_json: bool, **given: Any
) -> None:
    """Delete one finished flow with its history and signals; with --all, every
    finished flow the filters select (at least one filter).

    Only a finished flow (completed, failed, expired or cancelled) can be
    deleted: cancel an unfinished one first. Exit code 1 for an unfinished
    flow or an id that names no flow; nothing is changed then. A child whose
    parent is unfinished is kept (with --all: reported as skipped).

    \b
    Example:
      crux-gen delete 7f3a1c2b9e0d
      crux-gen cancel 7f3a1c2b9e0d --reason "test data"; crux-gen delete 7f3a
      crux-gen delete --all --flow load-test --dry-run
    """
    with store_at(db) as store:
        filters = read_filters(store.clock.now(), **given)
        check_target("delete", flow_id, every, filters)
        if every:
            if not filters.given:
                raise CLIError(
                    "delete --all needs at least one filter (--status, --flow, --until, …); "
                    "to delete old finished flows, see crux-gen prune"
                )
            finished = tuple(sorted(s.value for s in FINISHED))
            run_all(
                store, Action("delete", "deleted", finished, delete_one), filters,
                dry_run=dry_run, as_json=as_json,
            )  # fmt: skip
            return
        assert flow_id is not None
        stored = find_flow(store, flow_id)
        if stored.status not in FINISHED:
            raise CLIError(
                f"flow {stored.id} ({stored.name}) is {stored.status}; only a finished flow "
                f"can be deleted: cancel it first (crux-gen cancel {stored.id})"
            )
        if dry_run:
            dry_run_one("delete", stored, as_json)
            return
        if not delete_flow(stored.id, store=store):
            raise CLIError(f"no flow with id {stored.id!r} (deleted meanwhile)")
    records, signals = len(stored.records), len(stored.signals)
    if as_json:
        found = {"id": stored.id, "name": stored.name, "status": stored.status}
        click.echo(to_json({**found, "outcome": "deleted", "records": records, "signals": signals}))
        return
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
    metavar="AGE",
    help='Only flows finished and last updated longer ago than this ("30d", "12h", '
    '"1h30m", or seconds).',
)
@click.option(
    "--status",
    type=click.Choice(sorted(s.value for s in FINISHED)),
    help="Only finished flows with this status.",
)
@click.option("--flow", "name", metavar="NAME", help="Only flows of this name.")
@click.option("--dry-run", is_flag=True, help="Say how many flows would go; delete nothing.")
@db_option
@JSON_OPTION
def prune_command(
    age: str | None, status: str | None, name: str | None, dry_run: bool, db: str, as_json: bool
) -> None:
    """Delete finished flows (completed, failed, expired, cancelled), with their
    history and signals, and say how many: those finished before --finished-before,
    with --status, of --flow (at least one of them; given together, they
    combine). Unfinished flows are never touched, nor a child whose parent is
    unfinished. With --dry-run, say how many it would delete, by status, and
    delete nothing.

    \b
    Examples:
      crux-gen prune --finished-before 30d --dry-run
      crux-gen prune --finished-before 30d
      crux-gen prune --status failed --flow load-test
    """
    if age is None and status is None and name is None:
        raise CLIError(
            "prune needs at least one of --finished-before AGE, --status, --flow "
            "(they combine): it would delete every finished flow"
        )
    keep = None if age is None else duration_option(age, "--finished-before")
    with store_at(db) as store:
        before = None if keep is None else store.clock.now() - keep
        cutoff = None if before is None else before.timestamp()
        if dry_run:
            counts = count_finished(store, cutoff, status=status, name=name)
        else:
            deleted = store.prune(cutoff, status=status, name=name)
    if dry_run:
        total = sum(counts.values())
        if as_json:
            click.echo(to_json({"would_delete": total, "by_status": counts, "dry_run": True}))
            return
        by_status = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        echo(
            f"would delete {prune_text(total, before, status, name)}"
            + (f" ({by_status})" if by_status and status is None else "")
        )
        echo("nothing deleted (--dry-run)")
        return
    if as_json:
        click.echo(to_json({"deleted": deleted}))
        return
    echo(f"deleted {prune_text(deleted, before, status, name)}")


def prune_text(count: int, before: Any, status: str | None, name: str | None) -> str:
    """``3 failed flows of 'load-test' last updated before …``: what ``prune`` took."""
    text = f"{count} {status or 'finished'} {'flow' if count == 1 else 'flows'}"
    text += "" if name is None else f" of {name!r}"
    return text + ("" if before is None else f" last updated before {at(before)}")


#: How many flows one ``list_flows`` call of ``prune --dry-run`` reads.
PAGE = 1000


def count_finished(
    store: CLIStore, before: float | None, *, status: str | None = None, name: str | None = None
) -> dict[str, int]:
    """Count the finished flows last updated before *before* (``None``: any time), of
    *status* and *name* when given, by status: exactly what ``store.prune`` deletes
    (a child whose parent is unfinished is not counted), each counted in the store."""
    statuses = [status] if status is not None else sorted(str(s) for s in FINISHED)
    return {s: store.prune(before, status=s, name=name, dry_run=True) for s in statuses}
