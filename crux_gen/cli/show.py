"""The lines of ``crux-gen show``: a flow's state, its lease, its timeline and its signals.

Every stored string is escaped here (:func:`~crux_gen.cli.format.clean`) before
widths are counted, and every line is folded to the terminal's width, so the
lines are safe to print as they are.
"""

from __future__ import annotations

from datetime import datetime

from ..commands import VALUE_KINDS, describe
from ..control import consumed_in_this_run
from ..results import FlowInfo, HistoryEntry, SignalInfo
from ..status import Status
from .format import (
    at,
    clean,
    cut,
    error_lines,
    error_text,
    fold,
    fold_all,
    relative,
    span,
    traceback_lines,
    value_lines,
)

PAD = "       "


def show_lines(
    info: FlowInfo,
    now: datetime,
    *,
    full: bool,
    fit: int,
    lease_owner: str | None = None,
    lease_expires: datetime | None = None,
) -> list[str]:
    """Build the whole of ``crux-gen show``: header, lease, input, value or error,
    timeline, signals; each line at most *fit* characters.

    *lease_owner* and *lease_expires* are the flow's lease as stored (a running
    flow's runner, and until when it holds the flow). Unless *full*, values are
    cut to one line and tracebacks hide crux_gen's own frames.
    """
    lines = [
        f"flow     {clean(info.flow_id)}",
        f"name     {clean(info.name)}",
        f"status   {status_text(info, now, lease_owner, lease_expires)}",
        f"created  {at(info.created_at)}",
        f"updated  {at(info.updated_at)} ({relative(info.updated_at, now)})",
    ]
    if info.status in (Status.SUSPENDED, Status.PAUSED) and info.wake_at is not None:
        word = "deadline" if info.deadline == info.wake_at else "wakes   "
        lines.insert(3, f"{word} {at(info.wake_at)} ({relative(info.wake_at, now)})")
    if info.status == Status.RUNNING:
        lines.insert(3, lease_text(now, lease_owner, lease_expires))
    if info.run > 1:
        lines.insert(3, f"run      {info.run} (ContinueAsNew; earlier runs' histories are kept)")
    lines += start_lines(info, now, lines)
    if info.parent_id is not None:  # (crux-gen show takes these ids, or a start of them)
        lines.append(f"parent   {clean(info.parent_id)}")
    for i, child in enumerate(info.children):
        lines.append(f"{'children' if i == 0 else '        '} {clean(child)}")
    if info.custom_status is not None:
        lines += value_lines("status", info.custom_status, "custom ", full=full, fit=fit, sep=" ")
    lines += value_lines("input", info.input, "", full=full, fit=fit, sep="    ")
    if info.status == Status.COMPLETED:
        lines += value_lines("value", info.value, "", full=full, fit=fit, sep="    ")
    if info.error is not None:
        lines.append(f"error    {error_text(info.error)}")
        lines += traceback_lines(info.error.traceback, "  ", full=full)

    consumed_by = consumed_in_this_run(info)
    this_run = set(consumed_by.values())
    labels = [clean(describe(entry.kind, entry.name)) for entry in info.history]
    align = min(max(map(len, labels), default=0), 32)
    lines += ["", f"timeline ({len(info.history)} recorded)" if info.history else "timeline: empty"]
    for entry in info.history:
        lines += entry_lines(entry, info, consumed_by, now, align=align, full=full, fit=fit)
    if info.signals:
        lines += ["", f"signals ({len(info.signals)})"]
        for sig in info.signals:
            earlier = info.run > 1 and sig.position is not None and sig.id not in this_run
            lines += signal_lines(sig, full=full, fit=fit, earlier_run=earlier)
    return fold_all(lines, fit)


def lease_is_live(now: datetime, owner: str | None, expires: datetime | None) -> bool:
    """Tell whether a runner holds the lease at *now*."""
    return owner is not None and expires is not None and expires > now


def status_text(
    info: FlowInfo,
    now: datetime,
    lease_owner: str | None = None,
    lease_expires: datetime | None = None,
) -> str:
    """Say ``suspended, waiting for 'x'``, ``cancelled: why``, ``expired waiting for 'x'``,
    ``running, but no runner holds it since …: a worker will pick it up``…"""
    status = info.status
    if status == Status.SUSPENDED and info.waiting_for:
        return clean(f"suspended, waiting for {info.waiting_for!r}")
    if status == Status.PAUSED:
        return clean(f"paused, waiting for {info.waiting_for!r}" if info.waiting_for else "paused")
    if status == Status.CANCELLED:
        return clean(f"cancelled: {info.cancel_reason}") if info.cancel_reason else "cancelled"
    if status == Status.EXPIRED and info.waiting_for:
        return clean(f"expired waiting for {info.waiting_for!r}")
    if status == Status.RUNNING and not lease_is_live(now, lease_owner, lease_expires):
        since = (
            f" since {at(lease_expires)} ({relative(lease_expires, now)})"
            if lease_expires is not None
            else ""
        )
        return f"running, but no runner holds it{since}: a worker will pick it up"
    return clean(str(status))


def lease_text(now: datetime, owner: str | None, expires: datetime | None) -> str:
    """Say who holds a running flow's lease and until when, or how it was let go."""
    if owner is None:
        return "lease    released (its runner stopped between two commands)"
    runner = clean(owner)
    if expires is not None and expires > now:
        return f"lease    held by runner {runner} until {at(expires)} ({relative(expires, now)})"
    return f"lease    lapsed: runner {runner} stopped renewing it (crashed or cut off)"


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
    """Show one recorded command: position, label, state and facts, then result or error."""
    label = clean(describe(entry.kind, entry.name)).ljust(align)
    facts = [clean(entry.state)]
    if entry.kind in VALUE_KINDS:  # ctx.now() & co.: just the value
        return [
            f"  {entry.position:>3}  {label}  recorded",
            *value_lines("value", entry.result, PAD, full=full, fit=fit),
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
    lines = fold(f"  {entry.position:>3}  {label}  " + ", ".join(facts), fit, len(PAD))
    if entry.state == "retrying" and entry.wake_at is not None:
        lines.append(f"{PAD}next try {at(entry.wake_at)} ({relative(entry.wake_at, now)})")
    if entry.state == "waiting":
        if entry.deadline is not None:
            lines.append(f"{PAD}deadline {at(entry.deadline)} ({relative(entry.deadline, now)})")
        elif entry.wake_at is not None:
            lines.append(f"{PAD}wakes {at(entry.wake_at)} ({relative(entry.wake_at, now)})")
    if entry.state == "completed" and not (entry.kind == "sleep" and entry.result is None):
        lines += value_lines("result", entry.result, PAD, full=full, fit=fit)
    if entry.error is not None:
        # The flow's own error (printed above) already carries this traceback
        # when it is this error that failed the flow.
        same = info.error is not None and (info.error.type, info.error.message) == (
            entry.error.type,
            entry.error.message,
        )
        lines += error_lines(entry.error, PAD, with_traceback=full or not same, full=full)
        if same and not full:
            lines.append(f"{PAD}  (the traceback is the flow's error above)")
    return lines


#: What each state of a signal means, after its name in ``show``.
SIGNAL_STATES = {
    "pending": "pending",
    "consumed": "consumed",
    "rejected": "rejected",
    "unused": "unused (still pending when the flow finished)",
}


def start_lines(info: FlowInfo, now: datetime, lines: list[str]) -> list[str]:
    """A pending flow's due time (inserted into *lines*), and the lines of its
    priority, of what blocks it and of its recoveries in a row, to append."""
    if info.status == Status.PENDING and info.wake_at is not None and info.blocked_by is None:
        lines.insert(3, f"due      {at(info.wake_at)} ({relative(info.wake_at, now)})")
    more = [f"priority {info.priority}"] if info.priority else []
    if info.blocked_by is not None:
        more.append(f"blocked  by {clean(info.blocked_by)}")
    if info.recoveries:
        more.append(
            f"recovery {info.recoveries} in a row: runners' leases lapsed with nothing "
            "recorded (@flow max_recoveries)"
        )
    return more


def signal_lines(sig: SignalInfo, *, full: bool, fit: int, earlier_run: bool = False) -> list[str]:
    """Show one signal: id, name, state and when it was sent, then its idempotency
    key, its payload and why it was rejected. *earlier_run*: consumed by a run
    before the current one (``ContinueAsNew``), whose positions the timeline
    does not show."""
    state = SIGNAL_STATES.get(sig.state, clean(sig.state))
    if sig.position is not None:
        state += (
            f" in an earlier run, at #{sig.position}" if earlier_run else f" by #{sig.position}"
        )
    name = clean(repr(sig.name))
    lines = fold(f"  #{sig.id:<3} {name}  {state}  sent {at(sig.created_at)}", fit, len(PAD))
    if sig.key is not None:
        key = f"{PAD}key: {clean(repr(sig.key))}"
        lines.append(key if full else cut(key, fit))
    lines += value_lines("payload", sig.payload, PAD, full=full, fit=fit)
    if sig.error:
        why = f"{PAD}rejected: {clean(sig.error)}"
        lines.append(why if full else cut(why, fit))
    return lines
