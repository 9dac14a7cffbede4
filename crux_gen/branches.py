"""Handlers of the commands that compose: ``Child``, ``Any`` and ``All``. Pure, as
every handler (``handlers.py``): they say which child flows to start (one owner of
child creation: ``new_child``), which to adopt into the runner's loop and which to
cancel, and what the flow gets once its branches settled.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .attempts import refused, run_step
from .codec import ErrorInfo
from .commands import AnyResult, Child, Sleep, Step, Suspend
from .effects import (
    GO_ON,
    OUTCOMES,
    Adopt,
    Call,
    CancelFlow,
    Effect,
    Event,
    Fired,
    Park,
    Quiet,
    Record,
    Refused,
    Resolve,
    Settled,
    StartChild,
    Take,
    Throw,
    Timer,
    View,
)
from .errors import ChildFlowError, SerializationError
from .interpreter import AwaitAny, AwaitChild, RunAll, RunStep, rebuild_exception, structured
from .records import (
    COMPLETED,
    CONSUMED,
    FAILED,
    REJECTED,
    RETRYING,
    WAITING,
    NewChild,
    SignalUpdate,
    StoredFlow,
    StoredRecord,
    StoredSignal,
    all_header_result,
)
from .status import FINISHED, Status

#: The status a child that is gone from the store reads as (deleted by hand: ``prune``
#: and ``delete`` keep a child while its parent is unfinished): its parent's
#: ``yield`` raises ``ChildFlowError`` instead of waiting forever.
MISSING_CHILD = "deleted"


def child_id_of(record: StoredRecord) -> str:
    """The id of the child flow a ``Child`` record (waiting) names."""
    found = codec.decode_stored(
        record.result, flow_id="?", position=record.position, column="result"
    )
    return str(found["flow_id"])


def child_outcome(
    record: StoredRecord, child: StoredFlow, now: float
) -> tuple[StoredRecord, Any, BaseException | None]:
    """The record of a finished (or missing) child, and the value or the
    ``ChildFlowError`` it gives its parent."""
    if child.status == Status.COMPLETED:
        done = record._replace(state=COMPLETED, result=child.result, attempts=1, finished_at=now)
        value = codec.decode_stored(child.result, flow_id=child.id, position=None, column="result")
        return done, value, None
    error = ChildFlowError(child.id, child.status, child.error)
    failed = record._replace(
        state=FAILED, result=None, error=ErrorInfo.from_exception(error).encode(),
        attempts=1, finished_at=now,
    )  # fmt: skip
    return failed, None, error


def ended(child: StoredFlow) -> bool:
    """Whether a child's parent can take its outcome now."""
    return child.status in FINISHED or child.status == MISSING_CHILD


def new_child(command: Child, view: View) -> NewChild:
    """The child flow a ``Child`` starts: its ``flow_id=`` or a new id, its name and
    its input as JSON text (``SerializationError`` when the input cannot be stored)."""
    what = f"the input of child flow {command.name!r} of {view.flow_id!r}"
    text = codec.encode(command.input, what=what)
    return NewChild(command.flow_id or view.new_id(), command.name, text)


def await_child(d: AwaitChild, view: View, event: Event = None) -> list[Effect]:
    """A ``Child``: start the child flow (in the write that records it), run it,
    and take its value or its failure once it ended, else park until it does (its
    end makes the parent due)."""
    command, record, now = d.command, view.record, view.now
    if isinstance(event, Refused):  # its id is taken: thrown at the yield
        return refused(d.position, "child", command.name, event.exc, now)
    if record is None:
        try:
            fresh = new_child(command, view)
        except SerializationError as exc:
            return refused(d.position, "child", command.name, exc, now)
        record = StoredRecord(
            d.position, "child", command.name, WAITING,
            result=codec.encode({"flow_id": fresh.flow_id}, what="a child id"), started_at=now,
        )  # fmt: skip
        return [StartChild((fresh,), record), Adopt(fresh.flow_id, command.flow)]
    if not isinstance(event, Settled):
        return [Adopt(child_id_of(record), command.flow)]
    child = event.children[child_id_of(record)]
    if not ended(child):
        return [Park(child.id, "child", None, children=(child.id,))]
    done, value, error = child_outcome(record, child, now)
    return [Record(done, GO_ON), Resolve(value) if error is None else Throw(error)]


def await_any(d: AwaitAny, view: View, event: Event = None) -> list[Effect]:
    """An ``Any``: start its children (in the write that records it) and run them;
    then the first event by the store's clock wins (among signals at one instant
    the first sent, by id; a signal before a timer or a child; then list order)
    and is recorded and given to the flow (a losing child is cancelled with
    ``cancel_losers``); with none, park until a signal, the first timer or a child's
    end. A signal that fits no schema is rejected, with the reason."""
    command = d.command
    if isinstance(event, Refused):  # an id is taken: thrown at the yield
        return refused(d.position, "any", command.name, event.exc, view.now)
    record = view.record
    if record is None:
        begun = _any_begun(d, view)
        if not isinstance(begun, StoredRecord):  # refused, or its children to start
            return begun
        record = begun
    child_ids = _any_children(record, view.flow_id)
    if child_ids and not isinstance(event, Settled):  # run them (again after arrivals)
        flows = {i: b.flow for i, b in enumerate(command.commands) if isinstance(b, Child)}
        return [Adopt(child_id, flows[index]) for index, child_id in child_ids.items()]
    settled = event.children if isinstance(event, Settled) else {}
    effects, best = _any_first(d, view, record, child_ids, settled)
    if best is not None:
        return [*effects, *_any_won(d, record, best, settled, child_ids, view)]
    branches = command.commands
    started = record.started_at if record.started_at is not None else view.now
    names = [b.name for b in branches if isinstance(b, Suspend)]
    waits = [b.wake_at(started) for b in branches if isinstance(b, Sleep)]
    if d.record is None and not child_ids:  # else the stored record stands
        effects.append(Record(record))
    park = Park(
        codec.encode(names, what="signal names"), "any", min(waits) if waits else None,
        children=tuple(child_ids.values()), signals=tuple(names),
    )  # fmt: skip
    return [*effects, park]


def _any_begun(d: AwaitAny, view: View) -> StoredRecord | list[Effect]:
    """An ``Any`` reached for the first time: its record, or the effects that
    start its children with it (or fail it: a child's input cannot be stored)."""
    command, now = d.command, view.now
    children: dict[str, str] = {}
    new: list[NewChild] = []
    adopt: list[Effect] = []
    for index, branch in enumerate(command.commands):
        if isinstance(branch, Child):
            try:
                fresh = new_child(branch, view)
            except SerializationError as exc:
                return refused(d.position, "any", command.name, exc, now)
            children[str(index)] = fresh.flow_id
            new.append(fresh)
            adopt.append(Adopt(fresh.flow_id, branch.flow))
    timers = [b.wake_at(now) for b in command.commands if isinstance(b, Sleep)]
    record = StoredRecord(
        d.position, "any", command.name, WAITING,
        result=codec.encode({"children": children}, what="child ids") if children else None,
        started_at=now, wake_at=min(timers) if timers else None,
    )  # fmt: skip
    if new:  # the children exist (and the record names them) before they run
        return [StartChild(tuple(new), record), *adopt]
    return record


def _any_first(
    d: AwaitAny,
    view: View,
    record: StoredRecord,
    child_ids: dict[int, str],
    settled: dict[str, StoredFlow],
) -> tuple[list[Effect], int | None]:
    """The branch of an ``Any`` that happened first (``None``: none yet), and the
    rejections of the signals that fit no schema, drawn on the way."""
    now = view.now
    started = record.started_at if record.started_at is not None else now
    effects: list[Effect] = []
    best: tuple[float, float, int] | None = None
    for index, branch in enumerate(d.command.commands):
        at: float | None = None
        order = float("inf")
        if isinstance(branch, Suspend):
            signal = view.peek(branch.name)
            while signal is not None:
                _, misfit = structured(branch, _payload(signal, view), flow_id=view.flow_id)
                if misfit is None:
                    break
                next(iter(view.pending(branch.name)))  # drawn: rejected
                reason = str(getattr(misfit, "reason", misfit))
                effects.append(Take(SignalUpdate(signal.id, REJECTED, error=reason), misfit))
                signal = view.peek(branch.name)
            if signal is not None:
                at, order = signal.created_at, signal.id
        elif isinstance(branch, Sleep):
            wake = branch.wake_at(started)
            if wake <= now:
                at = wake
        else:
            child = settled[child_ids[index]]
            if ended(child):
                at = child.updated_at
        if at is not None and (best is None or (at, order, index) < best):
            best = (at, order, index)
    return effects, None if best is None else best[2]


def _payload(signal: StoredSignal, view: View) -> Any:
    return codec.decode_stored(
        signal.payload, flow_id=view.flow_id, position=None, column=f"payload of signal {signal.id}"
    )


def _any_children(record: StoredRecord, flow_id: str) -> dict[int, str]:
    """An ``Any`` record's children: branch index -> child flow id."""
    if not record.result:
        return {}
    state = codec.decode_stored(
        record.result, flow_id=flow_id, position=record.position, column="result"
    )
    return {int(k): v for k, v in (state.get("children") or {}).items()}


def _any_won(
    d: AwaitAny,
    record: StoredRecord,
    index: int,
    settled: dict[str, StoredFlow],
    child_ids: dict[int, str],
    view: View,
) -> list[Effect]:
    """Branch *index* of an ``Any`` won: the signal it takes, its record, the losing
    children it cancels, and what the flow gets at its ``yield``."""
    command, now = d.command, view.now
    branch = command.commands[index]
    effects: list[Effect] = []
    error: BaseException | None = None
    done = record._replace(state=COMPLETED, attempts=1, finished_at=now)
    if isinstance(branch, Suspend):
        signal = next(iter(view.pending(branch.name)))  # the one peeked: taken
        payload = _payload(signal, view)
        value, _ = structured(branch, payload, flow_id=view.flow_id)
        effects.append(Take(SignalUpdate(signal.id, CONSUMED, position=d.position)))
        result: dict[str, Any] = {"index": index, "name": branch.name, "value": payload}
    elif isinstance(branch, Sleep):
        value = None
        result = {"index": index, "name": branch.name, "value": None}
    else:
        done, value, error = child_outcome(record, settled[child_ids[index]], now)
        result = {"index": index, "name": branch.name, "value": value}
    if error is None:
        done = done._replace(result=codec.encode(result, what="an Any result"))
    effects.append(Record(done, GO_ON))
    if command.cancel_losers:
        reason = f"it lost the Any of flow {view.flow_id!r}"
        for other, child_id in child_ids.items():
            if other != index and not ended(settled[child_id]):
                effects.append(CancelFlow(child_id, reason))
    if error is not None:
        return [*effects, Throw(error)]
    return [*effects, Resolve(AnyResult(index, branch.name, value))]


def run_all(d: RunAll, view: View, event: Event = None) -> list[Effect]:
    """An ``All``: its header and a record per branch, written with the child flows
    it starts (each child branch gets a fresh id, or its ``flow_id=``); then every
    unfinished step is called (retried as any step is) and every unfinished child
    adopted, all at the same time, each branch's record kept as it settles. Once
    nothing is outstanding (``Quiet``) the flow gets every branch's value in list
    order, or the first failure in list order; or it parks until a branch's retry
    is due or a child ends. A child whose input cannot be stored, or whose id is
    taken, fails its branch only."""
    if isinstance(event, OUTCOMES):
        return _all_step(d, view, event.call.position, event)
    if isinstance(event, Fired):
        return _all_step(d, view, event.position, event)
    if isinstance(event, Settled):
        return _all_children_settled(d, view, event.children)
    if isinstance(event, Quiet):
        return _all_concluded(d, view)
    held = dict(view.records)
    first = d.position + 1
    if isinstance(event, Refused):  # that child's id is taken: its branch fails
        exc = event.exc
        taken = getattr(exc, "flow_id", None)
        changed = [
            _failed_branch(r, exc, view.now)
            for r in held.values()
            if r.position >= first and r.kind == "child" and r.state == WAITING
            and r.result is not None and child_id_of(r) == taken
        ]  # fmt: skip
        start = event.start.children if event.start is not None else ()
        new = [c for c in start if c.flow_id != taken]
    else:
        if d.position not in held:  # never reached: the header and a record per branch
            now = view.now
            branches = d.command.commands
            held[d.position] = StoredRecord(
                d.position, "all", d.command.name, WAITING,
                result=all_header_result(len(branches)), started_at=now,
            )  # fmt: skip
            for offset, branch in enumerate(branches):
                held[first + offset] = StoredRecord(
                    first + offset, branch.kind, branch.name, WAITING, started_at=now
                )
        changed, new = _all_children(d, view, held)
    held.update((r.position, r) for r in changed)
    effects: list[Effect] = []
    if new:  # (written with the header, which comes first)
        effects.append(StartChild(tuple(new), held[d.position]))
    elif d.position not in view.records:
        effects.append(Record(held[d.position]))
    effects += [Record(r) for r in changed if r.position != d.position]
    work = _all_work(d, view, held)
    if work:
        return effects + work
    return effects + _all_concluded(d, view._replace(records=held))


def _all_children(
    d: RunAll, view: View, held: dict[int, StoredRecord]
) -> tuple[list[StoredRecord], list[NewChild]]:
    """The child flows an ``All`` starts now (branches with no child yet: never
    reached, or reset by a retry because their child had failed), and its records
    that change: a new child's id, or the failure of one whose input cannot be stored."""
    first = d.position + 1
    changed: list[StoredRecord] = []
    new: list[NewChild] = []
    for offset, branch in enumerate(d.command.commands):
        record = held[first + offset]
        if not isinstance(branch, Child) or record.state != WAITING or record.result is not None:
            if d.position not in view.records:
                changed.append(record)  # the All is new: every branch record is written
            continue
        try:
            fresh = new_child(branch, view)
        except SerializationError as exc:
            changed.append(_failed_branch(record, exc, view.now))
            continue
        new.append(fresh)
        changed.append(
            record._replace(result=codec.encode({"flow_id": fresh.flow_id}, what="a child id"))
        )
    return changed, new


def _failed_branch(record: StoredRecord, exc: Exception, now: float) -> StoredRecord:
    return record._replace(
        state=FAILED, result=None, attempts=1, finished_at=now,
        error=ErrorInfo.from_exception(exc).encode(),
    )  # fmt: skip


def _all_work(d: RunAll, view: View, held: dict[int, StoredRecord]) -> list[Effect]:
    """A call for each step branch to try now, an adoption for each child branch
    that has not ended (a step whose stored backoff still runs waits: the ``All``
    parks for it)."""
    first = d.position + 1
    work: list[Effect] = []
    for offset, branch in enumerate(d.command.commands):
        record = held[first + offset]
        if record.state not in (WAITING, RETRYING):
            continue
        if isinstance(branch, Step):
            at = View(view.flow_id, view.now, record)
            work += [
                e for e in run_step(RunStep(record.position, branch, record), at) if type(e) is Call
            ]
        elif isinstance(branch, Child) and record.result is not None:
            work.append(Adopt(child_id_of(record), branch.flow))
    return work


def _all_step(d: RunAll, view: View, position: int, event: Event) -> list[Effect]:
    """What one step branch's attempt, or its backoff's end, gives: its record, and
    its next call or timer (its ``Resolve``/``Throw`` goes nowhere: the ``All``
    concludes once every branch stopped)."""
    branch = d.command.commands[position - d.position - 1]
    assert isinstance(branch, Step)
    record = view.records[position]
    effects: list[Effect] = []
    at = View(view.flow_id, view.now, record)
    for effect in run_step(RunStep(position, branch, record), at, event):
        if type(effect) is Record or type(effect) is Call:
            effects.append(effect)
        elif type(effect) is Timer:
            effects.append(Timer(effect.at, position))
    return effects


def _all_children_settled(d: RunAll, view: View, children: dict[str, StoredFlow]) -> list[Effect]:
    """The records of the child branches whose child ended."""
    effects: list[Effect] = []
    for record in view.records.values():
        if record.position <= d.position or record.kind != "child" or record.state != WAITING:
            continue
        child = children.get(child_id_of(record)) if record.result is not None else None
        if child is not None and ended(child):
            done, _, _ = child_outcome(record, child, view.now)
            effects.append(Record(done))
    return effects


def _all_concluded(d: RunAll, view: View) -> list[Effect]:
    """Every branch stopped: park until the first retry is due or a child ends, or
    resolve (values in list order) or throw (the first failure in list order)."""
    count = len(d.command.commands)
    branches = [view.records[d.position + 1 + offset] for offset in range(count)]
    wakes = [r.wake_at for r in branches if r.state == RETRYING and r.wake_at is not None]
    waiting = tuple(
        child_id_of(r) for r in branches
        if r.kind == "child" and r.state == WAITING and r.result is not None
    )  # fmt: skip
    if waiting or wakes:
        return [Park(d.command.name, "all", min(wakes) if wakes else None, children=waiting)]
    header = view.records[d.position]._replace(
        state=COMPLETED, result=all_header_result(count), attempts=1, finished_at=view.now
    )
    effects: list[Effect] = [Record(header, GO_ON)]
    for record in branches:
        if record.state == FAILED:
            return [*effects, Throw(rebuild_exception(record, flow_id=view.flow_id))]
    values = [
        codec.decode_stored(r.result, flow_id=view.flow_id, position=r.position, column="result")
        for r in branches
    ]
    return [*effects, Resolve(values)]
