"""``retry``, ``cancel`` and ``delete`` over many flows: ``--all`` with the filters
of ``list``, ``--dry-run``, a line (or JSON object) per flow, and a progress line
on stderr when it is a terminal.

The flows are read a page at a time as they are acted on (:func:`matching`): a
flow a bulk action changes moves out of the filter or past the page's cursor, so
each flow is seen once and 100,000 of them are never held at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import attrs
import click

from ..errors import CruxError, FlowNotFoundError, FlowStateError, StoreError
from ..records import StoredFlow
from . import CLIError, CLIStore
from .filters import Filters, error_of, filter_options, matching
from .format import JsonList, clean, echo, to_json

F = TypeVar("F", bound=Callable[..., Any])

#: How often the progress line is redrawn, in seconds.
REDRAW = 0.2


def bulk_options(fn: F) -> F:
    """Add ``--all``, the filters of ``list`` and ``--dry-run`` to ``retry``, ``cancel``
    and ``delete`` (keyword arguments ``every``, ``dry_run`` and the filters')."""
    fn = click.option(
        "--dry-run", is_flag=True, help="Print the flows it would touch; change nothing."
    )(fn)
    fn = filter_options(fn)
    return click.option(
        "--all",
        "every",
        is_flag=True,
        help="Every flow the filters select (the filters of list), instead of one ID.",
    )(fn)


def check_target(verb: str, flow_id: str | None, every: bool, filters: Filters) -> None:
    """One ID, or ``--all`` with filters: anything else is a one-line error."""
    if flow_id is not None and every:
        raise CLIError(f"give one ID or --all, not both (crux-gen {verb} --help)")
    if flow_id is None and not every:
        raise CLIError(f"give the ID of a flow, or --all with filters (crux-gen {verb} --help)")
    if flow_id is not None and filters.given:
        raise CLIError("the filters (--status, --flow, --since, …) select flows for --all only")


@attrs.frozen
class Action:
    """What a bulk command does to one flow.

    *apply* acts on a flow and returns ``None``, or the reason it left the flow
    as it was (it finished meanwhile, …); *statuses* are those it applies to.
    """

    verb: str  # "retry"
    done: str  # "retried"
    statuses: tuple[str, ...]
    apply: Callable[[CLIStore, StoredFlow], str | None]


def stderr() -> TextIO:
    """Where the progress line goes: stderr (as it is when the command runs)."""
    return sys.stderr


class Progress:
    """``retried 1200 of 40000`` on stderr, redrawn in place while a bulk action
    runs, only when stderr is a terminal; cleared before each line of stdout."""

    def __init__(self, verb: str, total: int | None, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stderr() if stream is None else stream
        self.live = self.stream.isatty()
        self.verb = verb
        self.total = total
        self.count = 0
        self.shown = False
        self.drawn_at = 0.0

    def step(self) -> None:
        """One more flow done: redraw, at most every ``REDRAW`` seconds."""
        self.count += 1
        now = time.monotonic()
        if self.live and now - self.drawn_at >= REDRAW:
            of = f" of {self.total}" if self.total is not None else ""
            self.stream.write(f"\r\x1b[K{self.verb} {self.count}{of}")
            self.stream.flush()
            self.shown, self.drawn_at = True, now

    def clear(self) -> None:
        """Take the progress line away (before a line of stdout, and at the end)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


class Report:
    """The per-flow report of a bulk action: a line or a JSON object per flow, then
    (text only) a total."""

    def __init__(self, action: Action, *, dry_run: bool, as_json: bool, total: int | None):
        self.action = action
        self.dry_run = dry_run
        self.json = JsonList() if as_json else None
        self.progress = Progress(action.done if not dry_run else "read", total)
        self.counts: dict[str, int] = {}

    def flow(self, row: StoredFlow, outcome: str, reason: str | None = None) -> None:
        """Report *outcome* (``"retried"``, ``"skipped"``, ``"would retry"``…) for *row*."""
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.progress.clear()
        if self.json is not None:
            self.json.add(
                {"id": row.id, "name": row.name, "status": row.status, "outcome": outcome,
                 "reason": reason}
            )  # fmt: skip
        else:
            echo(
                f"{outcome:<11} {row.id}  {row.name}  {row.status}"
                + (f": {reason}" if reason else "")
            )
        self.progress.step()

    def close(self) -> None:
        """End the report: the JSON list, or a line of totals."""
        self.progress.clear()
        if self.json is not None:
            self.json.close()
            return
        if self.dry_run:
            n = self.counts.get(f"would {self.action.verb}", 0)
            flows = "flow" if n == 1 else "flows"
            echo(f"would {self.action.verb} {n} {flows} (--dry-run: nothing changed)")
            return
        parts = [f"{n} {outcome}" for outcome, n in self.counts.items()]
        echo(", ".join(parts) if parts else f"no flow to {self.action.verb}")


def run_all(
    store: CLIStore, action: Action, filters: Filters, *, dry_run: bool, as_json: bool
) -> None:
    """Apply *action* to every flow *filters* selects, among the statuses it applies to
    (``--status``, if given, must be one of them), reporting each; a one-line error
    with exit code 1 at the end when any flow failed."""
    if filters.status is not None and filters.status not in action.statuses:
        raise CLIError(
            f"--status {filters.status}: {action.verb} takes {', '.join(action.statuses)} "
            "flows only"
        )
    statuses = [filters.status] if filters.status is not None else list(action.statuses)
    total = None
    if filters.in_store:
        total = sum(
            store.count(status=s, name=filters.name, since=filters.since, until=filters.until)
            for s in statuses
        )
    report = Report(action, dry_run=dry_run, as_json=as_json, total=total)
    failed = 0
    try:
        for status in statuses:
            for row, _ in matching(store, attrs.evolve(filters, status=status)):
                if dry_run:
                    report.flow(row, f"would {action.verb}", error_of_row(row, _))
                    continue
                try:
                    reason = action.apply(store, row)
                except (FlowStateError, FlowNotFoundError) as exc:
                    reason = str(exc)
                except StoreError:
                    raise
                except CruxError as exc:
                    failed += 1
                    report.flow(row, "failed", str(exc))
                    continue
                report.flow(row, "skipped" if reason else action.done, reason)
    finally:
        report.close()
    if failed:
        raise CLIError(f"{failed} flow{'s' if failed != 1 else ''} could not be {action.done}")


def error_of_row(row: StoredFlow, summary: Any) -> str | None:
    """A dry run's note on a flow: its error, if it failed."""
    text = error_of(summary)
    return clean(text) if text else None


def dry_run_one(verb: str, stored: StoredFlow, as_json: bool) -> None:
    """``--dry-run`` of one ID (checked as the real command checks it)."""
    if as_json:
        found = {"id": stored.id, "name": stored.name, "status": stored.status}
        click.echo(to_json({**found, "outcome": f"would {verb}", "reason": None}))
        return
    echo(f"would {verb} flow {stored.id} ({stored.name}, {stored.status})")
    echo("nothing changed (--dry-run)")
