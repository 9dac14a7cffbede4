"""What a parked flow waits on, as structure (``Wait``) and as the display string
``waiting_for`` of ``list_flows``, read from its stored row and, for an ``Any``,
an ``All`` or a ``Child``, the unresolved records of its current run.

A flow row keeps one name per park (``waiting_for``) and its ``wait_kind``; an
``Any`` keeps the JSON list of its signal names, and its record is named after
every branch (``suspend:approved|sleep:give-up|child:report``); a ``Child``
record is named after the child flow and holds its id. Pure: no store, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime

import attrs

from .clock import when
from .records import RETRYING, StoredFlow, StoredRecord
from .status import Status

SIGNAL = "signal"
TIMER = "timer"
CONDITION = "condition"
CHILD = "child"

#: The wait kinds a flow row names by ``waiting_for`` alone, and the ``Wait.kind``
#: of each (a step waiting out its retry backoff is a timer).
SIMPLE = {"suspend": SIGNAL, "sleep": TIMER, "retry": TIMER, "wait_until": CONDITION}

#: The wait kinds whose ``Wait``s need the flow's unresolved records.
NEEDS_RECORDS = frozenset({"any", "all", "child"})

#: An ``Any`` record's name: its branches as ``kind:name`` joined by ``|``.
_BRANCH = re.compile(r"\|(?=(?:suspend|sleep|child):)")


@attrs.frozen
class Wait:
    """One thing a suspended flow waits for (``FlowSummary.waits``).

    ``kind`` is ``"signal"`` (a ``Suspend``: ``name`` is the signal's), ``"timer"``
    (a ``Sleep``, or a step waiting out its retry backoff: its name),
    ``"condition"`` (a ``WaitUntil``'s name) or ``"child"`` (``name`` is the child
    flow's name, ``child_id`` its id). ``deadline`` is the wait's timeout (a
    timer's: its wake time), an aware UTC datetime, or ``None`` when it has none.
    """

    kind: str
    name: str
    deadline: datetime | None = None
    child_id: str | None = None


def waits_of(row: StoredFlow, records: Sequence[StoredRecord] = ()) -> tuple[Wait, ...]:
    """The ``Wait``s of the flow *row* (empty unless it is suspended); *records* are
    its unresolved records (``StoreAdmin.wait_records``), needed for the kinds
    of ``NEEDS_RECORDS`` only."""
    if row.status != Status.SUSPENDED or row.waiting_for is None:
        return ()
    kind = row.wait_kind or ""
    if kind in SIMPLE:
        wait = SIMPLE[kind]
        deadline = row.wake_at if wait == TIMER else row.deadline
        return (Wait(wait, row.waiting_for, when(deadline)),)
    if kind == "child":
        name = next((r.name for r in records if r.kind == "child"), "")
        return (Wait(CHILD, name, None, row.waiting_for),)
    if kind == "any":
        return _any(row, records)
    if kind == "all":
        return tuple(w for r in records if (w := _branch_wait(r)) is not None)
    return ()


def waiting_for(row: StoredFlow, waits: Sequence[Wait]) -> str | None:
    """The display string of what *row* waits for: a signal's or a timer's name,
    ``"child <id>"`` for a ``Child``, an ``Any``'s branches joined by ``" | "``,
    an ``All``'s name; an expired flow keeps the name of the wait that expired."""
    if row.waiting_for is None:
        return None
    kind = row.wait_kind
    if kind == "child":
        return f"child {row.waiting_for}"
    if kind == "any":
        if waits:
            return " | ".join(f"child {w.child_id}" if w.kind == CHILD else w.name for w in waits)
        names = _signal_names(row.waiting_for)
        return " | ".join(names) if names else row.waiting_for
    return row.waiting_for


def _any(row: StoredFlow, records: Sequence[StoredRecord]) -> tuple[Wait, ...]:
    """An ``Any``'s branches, in order: from its record when it is there, else its
    signal names (the row's JSON list) and its first timer."""
    record = next((r for r in reversed(records) if r.kind == "any"), None)
    if record is None:
        names = _signal_names(row.waiting_for)
        found = [Wait(SIGNAL, name) for name in names]
        if row.wake_at is not None:
            found.append(Wait(TIMER, "", when(row.wake_at)))
        return tuple(found)
    children = _any_children(record.result)
    branches = [b.partition(":") for b in _BRANCH.split(record.name)]
    timers = sum(1 for kind, _, _ in branches if kind == "sleep")
    found = []
    for index, (kind, _, name) in enumerate(branches):
        if kind == "suspend":
            found.append(Wait(SIGNAL, name))
        elif kind == "sleep":  # the record keeps the first wake time only
            found.append(Wait(TIMER, name, when(record.wake_at) if timers == 1 else None))
        elif kind == "child":
            found.append(Wait(CHILD, name, None, children.get(str(index))))
    return tuple(found)


def _branch_wait(record: StoredRecord) -> Wait | None:
    """What an ``All`` branch's unresolved record waits for: a child, or a step's
    next try (``None`` for the ``All``'s own record)."""
    if record.kind == "child" and record.result is not None:
        return Wait(CHILD, record.name, None, _child_id(record.result))
    if record.state == RETRYING:
        return Wait(TIMER, record.name, when(record.wake_at))
    return None


def _signal_names(waiting_for: str | None) -> list[str]:
    try:
        names = json.loads(waiting_for or "")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _any_children(result: str | None) -> dict[str, str]:
    try:
        state = json.loads(result or "{}")
    except ValueError:
        return {}
    children = state.get("children") if isinstance(state, dict) else None
    return {str(k): str(v) for k, v in children.items()} if isinstance(children, dict) else {}


def _child_id(result: str) -> str | None:
    try:
        state = json.loads(result)
    except ValueError:
        return None
    found = state.get("flow_id") if isinstance(state, dict) else None
    return found if isinstance(found, str) else None
