"""``check_store``: find the unfinished flows that can never wake (``crux-gen doctor``).

Every unfinished flow must wait on something that can still happen: a signal
that may be sent, a timer with a wake time, a child that is unfinished (and whose
end wakes this flow), a lease that will expire. A flow waiting on nothing of the
kind stays unfinished forever; :func:`check_store` lists each one as a
:class:`Problem` naming why:

``child_gone``
    it waits for a child flow that is no longer stored (deleted or pruned);
``child_finished``
    a child it waits for has finished, yet the flow is not due (the child's end
    should have made it due in the same write);
``child_of_another``
    it waits for a flow whose parent is another flow, so that flow's end wakes
    the other one, not this one;
``nothing_left``
    an ``Any`` or ``All`` with no branch left that can end: no signal name, no
    timer, no unfinished child;
``no_wake_time``
    a timer-like wait (``Sleep``, a retry backoff, a ``WaitUntil`` re-check) with
    no wake time;
``unknown_wait``
    suspended with no wait a store knows (or a signal wait naming no signal) and
    no wake time;
``queued_behind_nothing``
    pending (``Exclusive(on_conflict="queue")``) behind a flow that is gone, has
    finished, or does not hold the key (its end lets only the next flow of its own
    key through), so nothing will let it start; or pending with no due time;
``lease_lapsed``
    running, its lease lapsed more than :data:`LAPSED_TTLS` lease times ago, and
    no worker has taken it since (a worker running with the flow's name
    registered takes it at once: is one running?).

A suspended flow waiting on a signal (``Suspend``, or an ``Any`` with a signal
branch) with no wake time is fine: the signal may still be sent. Only the store's
public reads are used (``list_flows``, ``load``), so it works on every store; a
flow found stuck is read again before it is reported, so a flow that a
concurrent write woke meanwhile is not listed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .clock import when
from .durations import format_duration
from .errors import FlowNotFoundError
from .records import WAITING, StoredFlow
from .status import FINISHED, Status, transition, unpause_event

if TYPE_CHECKING:
    from .stores.base import Store, StoreAdmin

    class CheckedStore(Store, StoreAdmin, Protocol):
        """A store ``check_store`` reads: ``load`` and ``list_flows``."""


#: A running flow whose lease lapsed longer ago than this many lease times, and
#: that no worker took since, is reported (``lease_lapsed``).
LAPSED_TTLS = 10

#: Wait kinds that end by their wake time alone.
TIMER_KINDS = frozenset({"sleep", "retry", "wait_until"})

#: What a timer-like wait kind is, in a reason.
TIMER_NAMES = {"sleep": "Sleep", "retry": "retry backoff", "wait_until": "WaitUntil re-check"}


@attrs.frozen
class Problem:
    """An unfinished flow that can never wake: *kind* is a short machine name
    (``"child_gone"``, ``"child_finished"``, ``"child_of_another"``,
    ``"nothing_left"``, ``"no_wake_time"``, ``"unknown_wait"``,
    ``"queued_behind_nothing"``, ``"lease_lapsed"``),
    *reason* says why in words."""

    flow_id: str
    name: str
    status: str
    kind: str
    reason: str


def check_store(store: CheckedStore) -> list[Problem]:
    """Every unfinished flow of *store* that can never wake, oldest created first.

    An empty list means each unfinished flow waits on something that can still
    happen. Reads only; a flow woken or finished while it is checked is not listed.
    """
    now = store.clock.now().timestamp()
    ttl = store.lease_ttl.total_seconds()
    unfinished = [
        flow
        for status in (Status.PENDING, Status.SUSPENDED, Status.RUNNING, Status.PAUSED)
        for flow in store.list_flows(status=status.value, limit=2**62)
    ]
    problems: list[Problem] = []
    for row in sorted(unfinished, key=lambda f: (f.created_at, f.id)):
        found = _diagnose(store, row, now, ttl)
        if found is None:
            continue
        # Read it again: a child that finished after the first read made it due in
        # the same write, and a flow that moved on since is not stuck.
        try:
            again = store.load(row.id)
        except FlowNotFoundError:
            continue
        if _wait_of(again) != _wait_of(row) or _diagnose(store, again, now, ttl) is None:
            continue
        kind, reason = found
        problems.append(Problem(row.id, row.name, row.status, kind, reason))
    return problems


def _wait_of(flow: StoredFlow) -> tuple[Any, ...]:
    """What a change of would mean the flow moved: status, run, wait and lease."""
    return (
        flow.status, flow.run, flow.updated_at, flow.wait_kind, flow.waiting_for,
        flow.wake_at, flow.lease_owner, flow.lease_expires, flow.blocked_by,
    )  # fmt: skip


def _diagnose(
    store: CheckedStore, flow: StoredFlow, now: float, ttl: float
) -> tuple[str, str] | None:
    """``(kind, reason)`` when *flow* can never wake, else ``None``. A paused flow
    is checked as what ``unpause_flow`` sends it back to."""
    if flow.status == Status.PAUSED:
        event = unpause_event(flow.wait_kind, flow.wake_at, flow.blocked_by)
        flow = attrs.evolve(flow, status=transition(flow.status, event).value)
    if flow.status == Status.RUNNING:
        return _lease(flow, now, ttl)
    if flow.status == Status.PENDING:
        return _queued(store, flow)
    if flow.status != Status.SUSPENDED or flow.wake_at is not None:
        return None  # a timer (or a deadline) wakes it
    kind = flow.wait_kind
    if kind == "suspend":
        if flow.waiting_for:
            return None  # the signal may still be sent
        return "unknown_wait", "waits for a signal but names none, and has no wake time"
    if kind in TIMER_KINDS:
        what = TIMER_NAMES[kind]
        return (
            "no_wake_time",
            f"waits on a {what} ({flow.waiting_for!r}) that has no wake time",
        )
    if kind == "child":
        return _children(store, flow, [flow.waiting_for or ""], wait="its child flow")
    if kind == "any":
        return _any(store, flow)
    if kind == "all":
        return _all(store, flow)
    return "unknown_wait", f"is suspended with wait kind {kind!r} and no wake time"


def _queued(store: CheckedStore, flow: StoredFlow) -> tuple[str, str] | None:
    """A pending flow is due by its due time, or (queued behind an ``Exclusive``
    holder) by that holder's end: stuck when it has neither, or when its holder is
    gone, finished or holds no key of its own."""
    kind = "queued_behind_nothing"
    if flow.blocked_by is None:
        return None if flow.wake_at is not None else (kind, "is pending with no due time")
    if flow.exclusive_key is None or flow.holds is not None:
        return None  # blocked by something else (a limit): its release lets it through
    try:
        holder = store.load(flow.blocked_by)
    except FlowNotFoundError:
        return kind, f"is queued behind flow {flow.blocked_by!r}, which is not stored"
    if holder.status in FINISHED:
        return kind, (
            f"is queued behind flow {holder.id!r}, which ended {holder.status}, yet it "
            "was not let through"
        )
    if holder.holds != flow.exclusive_key:
        return kind, (
            f"is queued behind flow {holder.id!r}, which does not hold its exclusive key, "
            "so its end lets another flow through"
        )
    return None


def _lease(flow: StoredFlow, now: float, ttl: float) -> tuple[str, str] | None:
    """A running flow is due as soon as no runner holds it: a problem only when its
    lease lapsed long ago and no worker has taken it since."""
    expires = flow.lease_expires
    if flow.lease_owner is None or expires is None or now - expires <= LAPSED_TTLS * ttl:
        return None
    lapsed = when(expires)
    assert lapsed is not None
    ago = format_duration(now - expires)
    return (
        "lease_lapsed",
        f"is running, but the lease of runner {flow.lease_owner} lapsed at "
        f"{lapsed.isoformat()} ({ago} ago, more than {LAPSED_TTLS} lease times) and no "
        f"worker has taken it since; a worker running with flow {flow.name!r} registered "
        "takes it",
    )


def _children(
    store: CheckedStore, flow: StoredFlow, child_ids: list[str], *, wait: str
) -> tuple[str, str] | None:
    """A wait on *child_ids* with no wake time: stuck when one of them is gone or
    finished (its end should have made *flow* due), or when none is *flow*'s own
    (their ends wake another flow)."""
    others: list[tuple[str, str | None]] = []
    for child_id in child_ids:
        try:
            child = store.load(child_id)
        except FlowNotFoundError:
            return (
                "child_gone",
                f"waits for {wait} {child_id!r}, which is not stored (deleted or pruned)",
            )
        if child.status in FINISHED:
            ended = when(child.updated_at)
            assert ended is not None
            return (
                "child_finished",
                f"waits for {wait} {child_id!r}, which ended {child.status} at "
                f"{ended.isoformat()}, yet it is not due",
            )
        if child.parent_id != flow.id:
            others.append((child_id, child.parent_id))
    if child_ids and len(others) == len(child_ids):
        child_id, parent = others[0]
        whose = f"whose parent is the flow {parent!r}" if parent else "which has no parent"
        return (
            "child_of_another",
            f"waits for {wait} {child_id!r}, {whose}: its end makes only its parent due, "
            "not this flow",
        )
    return None


def _waiting_record(flow: StoredFlow, kind: str) -> tuple[int, dict[str, Any]] | None:
    """The position and decoded result of *flow*'s last unresolved *kind* record."""
    for record in reversed(flow.records):
        if record.kind == kind and record.state == WAITING:
            try:
                found = json.loads(record.result) if record.result else {}
            except ValueError:
                found = {}
            return record.position, found if isinstance(found, dict) else {}
    return None


def _any(store: CheckedStore, flow: StoredFlow) -> tuple[str, str] | None:
    try:
        names = json.loads(flow.waiting_for or "")
    except ValueError:
        names = None
    if not isinstance(names, list):
        names = None  # unreadable (a corrupt row): the stores wake it on any signal
    full = flow if flow.records else store.load(flow.id)
    found = _waiting_record(full, "any")
    children = found[1].get("children") if found is not None else None
    child_ids = [str(c) for c in children.values()] if isinstance(children, dict) else []
    problem = _children(store, flow, child_ids, wait="the Any's child flow")
    if problem is not None and (problem[0] != "child_of_another" or not names):
        return problem
    if names is None or names or (child_ids and problem is None):
        return None  # a signal may be sent, or a child of its own may end
    return (
        "nothing_left",
        "waits in an Any with every branch settled (no signal name, no timer, no "
        "unfinished child), yet it is not due",
    )


def _all(store: CheckedStore, flow: StoredFlow) -> tuple[str, str] | None:
    full = flow if flow.records else store.load(flow.id)
    found = _waiting_record(full, "all")
    child_ids: list[str] = []
    if found is not None:
        count = found[1].get("branches")  # recorded in the header (else: all that follow)
        end = found[0] + 1 + count if isinstance(count, int) else None
        for record in full.records[found[0] + 1 : end]:
            if record.kind == "child" and record.state == WAITING:
                try:
                    child_ids.append(str(json.loads(record.result or "")["flow_id"]))
                except (ValueError, KeyError, TypeError):
                    continue
    if child_ids:
        return _children(store, flow, child_ids, wait="the All's child flow")
    return (
        "nothing_left",
        f"waits in All {flow.waiting_for!r} with no unfinished child and no retry time, "
        "yet it is not due",
    )
