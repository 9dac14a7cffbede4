"""The rules every store applies the same way, as pure functions of what it read:
the lease decision, the gap rule, which writes and signals are refused, which
children may start, what a retried flow keeps, what may be deleted.

``MemoryStore`` calls them on its dicts, ``SqlStore`` on the rows it read; each
rule has this one owner (``lease_outcome`` decides every lease check).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from crux_gen.clock import when
from crux_gen.commands import VALUE_KINDS
from crux_gen.errors import (
    CruxError,
    FlowBusyError,
    FlowClosedError,
    FlowIdTakenError,
    FlowNameConflictError,
    FlowStateError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    RecordConflictError,
    StoreError,
)
from crux_gen.records import (
    EXPIRED,
    FAILED,
    UNRESOLVED,
    WAITING,
    CommitOutcome,
    NewChild,
    StoredFlow,
    StoredRecord,
    Write,
    all_header_result,
)
from crux_gen.status import FINISHED, STOPPED, Status, transition

E = TypeVar("E", bound=Exception)

#: The errors ``commit_many`` and ``check_leases`` hand back for one item (nothing
#: of it applied) instead of raising them over the whole batch.
ITEM_ERRORS = (LeaseLostError, RecordConflictError, FlowNameConflictError, FlowIdTakenError)

#: Wait kinds the stores read: ``"any"`` keeps a JSON array of signal names in
#: ``waiting_for`` (due when one is pending); ``"child"`` is due by ``wake_at`` only.
WAIT_ANY = "any"
WAIT_CHILD = "child"

#: The kinds of a wait with a timeout: a retry waits for it again, from the retry.
TIMED_WAITS = ("suspend", "any", "wait_until")

#: What a commit that keeps the flow running answers (one object, no allocation).
RUNNING_OUTCOME = CommitOutcome(Status.RUNNING.value)


# -- leases ------------------------------------------------------------------------------


def lease_outcome(
    flow_id: str,
    owner: str,
    row: tuple[Any, ...] | None,
    now: float,
    renew: Callable[[], bool],
) -> CommitOutcome:
    """``check_lease`` from the flow's ``(status, lease_owner, cancel_reason,
    lease_expires)`` *row*: ``LeaseLostError`` unless *owner* holds the lease (a
    lapsed lease nobody took is renewed with *renew*), else status and reason."""
    if row is None or row[1] != owner:
        raise LeaseLostError(flow_id, owner)
    status, _, cancel_reason, expires = row
    if (expires or 0.0) <= now and not renew():
        raise LeaseLostError(flow_id, owner)  # lapsed, and taken meanwhile
    if status == Status.RUNNING:
        return RUNNING_OUTCOME
    return CommitOutcome(status, cancel_reason=cancel_reason)


def pending_due(flow: StoredFlow | dict[str, Any], now: float) -> bool:
    """Whether a ``"pending"`` flow (``Flow.start``) is due at *now*: its due time
    came and nothing blocks it (an exclusive holder, a limit: ``blocked_by``). The
    due scans' pending branch, for one flow (``claim(only_if_due=True)``)."""
    row = flow if isinstance(flow, dict) else attrs.asdict(flow, recurse=False)
    until = row["blocked_until"]  # a rate's turn: blocked until then
    free = row["blocked_by"] is None or (until is not None and until <= now)
    return free and row["wake_at"] is not None and row["wake_at"] <= now


def recovery_count(
    held_by: str | None, claimed_at: float | None, count: int, owner: str, recorded: Any
) -> int:
    """The recovery count a claim by *owner* stores (``@flow(max_recoveries=)``) of a
    flow whose lease *held_by* held (lapsed: a live one is never claimed) since
    *claimed_at*, with *count* stored: one more when ``recorded()`` (a record
    written or resolved since that claim) is falsy, 0 when it is truthy; *count*
    when nobody (or *owner* itself) held the lease."""
    if held_by in (None, owner):
        return count
    if claimed_at is None or recorded():  # (claimed before this was counted)
        return 0
    return count + 1


def lease_is_live(flow: StoredFlow, now: float) -> bool:
    """True while someone holds the flow's lease."""
    return held(flow.lease_owner, flow.lease_expires, now)


def held(lease_owner: str | None, lease_expires: float | None, now: float) -> bool:
    """A runner holds this lease (a row's fields) at *now*: pausing the flow leaves
    its limits' slots to it until it stops (its write or ``release``)."""
    return lease_owner is not None and (lease_expires or 0.0) > now


# -- writes --------------------------------------------------------------------------------


def check_records(
    flow_id: str, existing: dict[int, str], count: int, records: tuple[StoredRecord, ...]
) -> None:
    """Refuse a write whose records leave a gap or replace a resolved record.

    *existing* maps the positions the write touches to their stored states (only
    those that exist); *count* is how many records the flow has.
    """
    for record in records:
        position = record.position
        state = existing.get(position)
        if state is None:
            if position != count:
                raise RecordConflictError(flow_id, position, count)
            count += 1
            existing[position] = record.state
        elif state not in UNRESOLVED:
            raise RecordConflictError(flow_id, position, count)
        else:
            existing[position] = record.state


def check_write(flow_id: str, write: Write) -> None:
    """Refuse a write no store may apply (``InvalidValueError``), before anything
    of it (or of its batch) is: ``continue_as_new`` with a status, or a park on
    ``wait_kind="any"`` whose ``waiting_for`` is not a JSON array of names."""
    if write.continue_as_new is not None and write.status is not None:
        raise InvalidValueError(
            f"flow {flow_id!r} write continue_as_new",
            write.status,
            "comes with a status; continuing as new keeps the flow running (status=None)",
        )
    if write.wait_kind == WAIT_ANY and write.status == Status.SUSPENDED:
        try:
            names = json.loads(write.waiting_for or "")
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidValueError(
                f"flow {flow_id!r} write waiting_for",
                write.waiting_for,
                'must be a JSON array of signal names with wait_kind "any"',
            )


def any_names(waiting_for: str | None) -> list[str] | None:
    """The signal names a ``wait_kind="any"`` park waits for; ``None`` when the list
    is unreadable (a corrupt row): then any pending signal wakes the flow, whose
    runner parks it again with a list it wrote, or reports what else is corrupt
    (a corrupt row never strands its flow, nor fails the due query of others)."""
    try:
        names = json.loads(waiting_for or "")
    except (ValueError, RecursionError):
        return None
    if not isinstance(names, list):
        return None
    return [n for n in names if isinstance(n, str)]


def awaited_names(write: Write) -> list[str]:
    """The signal names whose pending signals stop *write* (``wait_signal`` and
    ``wait_signals``), in order, each once."""
    names = [] if write.wait_signal is None else [write.wait_signal]
    return list(dict.fromkeys([*names, *write.wait_signals]))


def child_cancel_reason(flow_id: str, reason: str) -> str:
    """The cancel reason of a descendant of *flow_id* cancelled with it."""
    return f"its parent flow {flow_id!r} was cancelled: {reason}"


def replaced_reason(flow_id: str) -> str:
    """The cancel reason of an ``Exclusive(on_conflict="cancel")`` holder that the
    start of *flow_id* replaced."""
    return f"replaced by {flow_id}"


# -- signals, children, retry, delete ---------------------------------------------------


def check_signal_allowed(
    flow_id: str, status: str, deadline: float | None, waiting_for: str | None, now: float
) -> None:
    """Refuse a signal for a finished flow, or one whose wait's deadline has passed."""
    if status in FINISHED:
        raise FlowClosedError(flow_id, status)
    parked = status in (Status.SUSPENDED, Status.PAUSED)  # a paused flow keeps its wait
    if parked and deadline is not None and deadline <= now:
        expired_at = when(deadline)
        assert expired_at is not None
        raise FlowClosedError(
            flow_id, "expired", f"its wait {waiting_for!r} timed out at {expired_at.isoformat()}"
        )


def in_batch(exc: E, index: int) -> E:
    """*exc*, raised for signal *index* of a batch (``add_signals``): its message
    names the signal, its ``item`` holds the index."""
    exc.item = index  # type: ignore[attr-defined]
    exc.args = (f"signal {index} of the batch: {exc}",)
    return exc


def retry_status(flow_id: str, status: str) -> Status:
    """The status a retried flow takes; ``FlowStateError`` unless it is ``"failed"``,
    ``"cancelled"`` or ``"expired"``."""
    try:
        return transition(status, "retry")
    except ValueError:
        raise FlowStateError(
            flow_id, status, "only a failed, cancelled or expired flow can be retried"
        ) from None


def pause_status(flow_id: str, status: str) -> Status | None:
    """The status a paused flow takes; ``None`` when it is paused already (nothing
    to do), ``FlowClosedError`` when it is finished."""
    if status == Status.PAUSED:
        return None
    if status in FINISHED:
        raise FlowClosedError(flow_id, status, "a finished flow cannot be paused")
    return transition(status, "pause")


def is_stopped(status: str) -> bool:
    """A runner stops at this status: finished, or paused (``status.STOPPED``)."""
    return status in STOPPED


def not_due(flow_id: str, status: str) -> CruxError:
    """What a worker's claim (``only_if_due``) of a stopped flow raises: a finished
    one is closed, a paused one is not due (``FlowBusyError``)."""
    if status == Status.PAUSED:
        return FlowBusyError(flow_id)
    return FlowClosedError(flow_id, status)


def parked(status: str, wait_kind: str | None) -> bool:
    """A flow parked on a wait, suspended or paused there: a child that finishes
    makes it due (a paused one once unpaused)."""
    return status == Status.SUSPENDED or (status == Status.PAUSED and wait_kind is not None)


def is_limit_block(blocked_by: str | None) -> bool:
    """*blocked_by* names a limit or a rate (``crux_gen.limits.label``), not an
    exclusive key's holder: pausing a flow lets go of it (a paused flow holds no
    slot and waits for none; its claim after ``unpause_flow`` asks again)."""
    return blocked_by is not None and blocked_by.startswith(("limit ", "rate "))


def cancelled_with(flow_id: str, cancel_reason: str | None) -> bool:
    """Whether a descendant's *cancel_reason* says it was cancelled with *flow_id*
    (``child_cancel_reason``): retrying *flow_id* retries it too."""
    prefix = child_cancel_reason(flow_id, "")
    return cancel_reason is not None and cancel_reason.startswith(prefix)


def retry_plan(
    records: tuple[StoredRecord, ...] | list[StoredRecord],
) -> tuple[int, tuple[StoredRecord, ...]]:
    """What a retried flow keeps of *records*: ``(keep, reset)``. The records from
    position *keep* on are dropped; each record of *reset* is written over the one
    at its position.

    The command whose failure ended the flow is the last record that is not a
    ``ctx.now()``-style value (its exception propagated, perhaps through an
    ``except`` block that re-raised or wrapped it):

    - a failed record: it is dropped (with the values after it), and the next run
      runs that command again;
    - a branch of an ``All`` whose failure was thrown at its ``yield``: the ``All``
      and its failed branches are reset to waiting and every other branch is kept,
      so the next run runs only the failed branches again;
    - a wait with a timeout (``Suspend``, ``WaitUntil``, an ``Any`` without
      children) the flow was parked on (a cancelled flow) or that expired: it is
      dropped, and the next run waits again, its timeout counted from then;
    - anything else (the flow caught the failure and went on, or there is none):
      the body itself raised; every record is kept, and the next run replays them
      all and runs the body again from where it raised.
    """
    last = len(records) - 1
    while last >= 0 and records[last].kind in VALUE_KINDS:
        last -= 1
    if last < 0:
        return len(records), ()
    if timed_wait(records[last]):
        return records[last].position, ()
    block = all_block(records, last)
    if block is not None:
        header, end = block
        failed = [r for r in records[header + 1 : end + 1] if r.state == FAILED]
        if not failed:
            return len(records), ()
        waiting = records[header]._replace(
            state=WAITING, result=all_header_result(end - header), finished_at=None
        )
        reset = [
            r._replace(state=WAITING, error=None, attempts=0, finished_at=None, wake_at=None)
            for r in failed
        ]
        return end + 1, (waiting, *reset)
    if records[last].state == FAILED:
        return records[last].position, ()
    return len(records), ()


def timed_wait(record: StoredRecord) -> bool:
    """*record* is a wait with a timeout, parked on or expired, that a retry drops
    to wait for again (an ``Any`` that started children is kept: its children are
    its branches)."""
    if record.kind not in TIMED_WAITS or record.state not in (WAITING, EXPIRED):
        return False
    return not (record.kind == "any" and record.result)


def all_block(records: Sequence[StoredRecord], index: int) -> tuple[int, int] | None:
    """``(header, last)``, the indexes of the ``All`` whose branch record is at
    *index*, or ``None`` when that record is no ``All``'s branch."""
    header = index
    while header >= 0 and records[header].kind in ("step", "child"):
        header -= 1
    if header < 0 or header == index or records[header].kind != "all":
        return None
    head = records[header]
    try:
        count = json.loads(head.result or "null")["branches"]
    except (ValueError, TypeError, KeyError):
        # Written before headers held their count: the branches are the records
        # written with the header, in the same write (the same start time).
        count = 0
        while (
            header + count + 1 < len(records)
            and records[header + count + 1].kind in ("step", "child")
            and records[header + count + 1].started_at == head.started_at
        ):
            count += 1
    if not isinstance(count, int) or not header < index <= header + count < len(records):
        return None
    return header, header + count


def check_child(parent_id: str, child: NewChild, found: tuple[str, str | None] | None) -> None:
    """Refuse a child whose id is taken: by a flow of another name
    (``FlowNameConflictError``), or by a flow that is not *parent_id*'s child
    (``FlowIdTakenError``: a child has one parent, which its end wakes). *found*
    is the stored flow's ``(name, parent_id)``, ``None`` when the id is new."""
    if found is None:
        return
    name, parent = found
    if name != child.name:
        raise FlowNameConflictError(child.flow_id, name, child.name)
    if parent != parent_id:
        raise FlowIdTakenError(child.flow_id, parent, parent_id)


def deletable(flow_id: str, status: str, parent: tuple[str, str] | None) -> None:
    """Refuse to delete an unfinished flow, or a child whose parent is unfinished
    (it may still wait for the child: *parent* is its ``(id, status)``)."""
    if status not in FINISHED:
        raise FlowStateError(
            flow_id, status, "only a finished flow can be deleted; cancel it first"
        )
    if parent is not None and parent[1] not in FINISHED:
        raise FlowStateError(
            flow_id,
            status,
            f"its parent flow {parent[0]!r} is {parent[1]} and may still wait for it; "
            "delete it once its parent has finished",
        )


# -- put_flow ------------------------------------------------------------------------------


def new_flow(flow: StoredFlow) -> StoredFlow:
    """Check a flow given to ``put_flow`` and return it with its lease cleared.

    Its records must be at positions 0, 1, 2, … (else ``RecordConflictError``), and
    its signals must be its own, with distinct ids and keys (else
    ``InvalidValueError``); nothing is checked against what a store holds.
    """
    if not isinstance(flow, StoredFlow):
        raise InvalidTypeError("put_flow flow", flow, "is not a StoredFlow (what load returns)")
    check_records(flow.id, {}, 0, flow.records)
    ids: set[int] = set()
    keys: set[str] = set()
    for signal in flow.signals:
        if signal.flow_id != flow.id:
            raise InvalidValueError(
                f"put_flow signal {signal.id}", signal.flow_id, f"is not the flow {flow.id!r}"
            )
        if signal.id in ids:
            raise InvalidValueError("put_flow signal id", signal.id, "is given twice")
        if signal.key is not None and signal.key in keys:
            raise InvalidValueError("put_flow signal key", signal.key, "is given twice")
        ids.add(signal.id)
        if signal.key is not None:
            keys.add(signal.key)
    return attrs.evolve(flow, lease_owner=None, lease_expires=None)


def flow_exists(flow_id: str, where: str) -> StoreError:
    """The error of ``put_flow`` for an id *where* (a store) holds already."""
    return StoreError(
        f"flow {flow_id!r} is stored in {where} already; put_flow writes new flows only "
        "(nothing was written)"
    )
