"""``fork_flow``: a new flow that goes on from a point of another's history.

    new_id = fork_flow(flow_id, at="charge", store=store)   # runs "charge" again

The new flow has the original's name and input and a copy of its history before
position ``at`` (of its current run); it is stored ``"pending"`` and due, so a
worker pass or ``resume`` runs it: it replays the copied records and runs the
commands from ``at`` on afresh. The original is not changed. Before anything is
written the copied history is replayed against the flow registered in this
process (``replay.replay_check``): a divergence is a ``NonDeterminismError`` and
nothing is created.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from . import observe
from .control import consumed_in_this_run
from .errors import CruxError, InvalidTypeError, InvalidValueError
from .flow import check_flow_id, default_registry
from .opening import StorePath, using
from .records import CONSUMED, UNRESOLVED, StoredFlow, StoredRecord, StoredSignal, new_flow_id
from .replay import replay_check
from .status import Status
from .stores.base_fork import Forks
from .stores.caps import caps_of
from .views import info_of

if TYPE_CHECKING:
    from .stores.base import Store


#: ``FlowNotRegisteredError``'s fix for a caller of ``fork_flow`` (it takes no flows=).
_HINT = 'import the module that defines @flow("{name}") before forking its flows'


def fork_flow(
    flow_id: str, *, at: int | str, store: Store | StorePath, new_id: str | None = None
) -> str:
    """Create a new flow of *flow_id*'s name and input whose history is the
    original's before position *at*, due now; return its id.

    >>> fork_flow(flow_id, at=2, store=store)
    '5c1e…'

    *at* is a position as ``get_flow`` shows them (0 keeps nothing: the flow runs
    from its start) or a name: the position of the first record of that name (a
    step's, a wait's, …), which runs again. The kept history must replay against
    the flow registered in this process (else ``NonDeterminismError``, or
    ``CorruptRecordError``; nothing is created), ``FlowNotRegisteredError`` when
    none is. Raises ``FlowNotFoundError``; ``InvalidValueError`` naming *at* for a
    position past the history, negative, inside an ``All`` (cut before its
    header instead) or past a record still waiting, or a name no record has;
    ``FlowIdTakenError`` when *new_id* is stored already.
    """
    check_flow_id(flow_id)
    if new_id is not None:
        check_flow_id(new_id)
    with using(store) as opened:
        stored = opened.load(flow_id)
        flow = default_registry.get(stored.name, flow_id=flow_id, hint=_HINT)
        position = fork_position(stored.records, at)
        kept = attrs.evolve(stored, records=stored.records[:position])
        problem = replay_check(kept, flow.fn)
        if problem is not None and problem.error is not None:
            raise problem.error
        if problem is not None and problem.position is None:
            raise CruxError(f"flow {flow_id!r} cannot be forked at {position}: {problem.text}")
        now = opened.clock.time()
        fork = StoredFlow(
            id=new_id or new_flow_id(),
            name=stored.name,
            status=Status.PENDING.value,
            input=stored.input,
            created_at=now,
            updated_at=now,
            wake_at=now,
            priority=stored.priority,
            trace=observe.trace(),
            records=kept.records,
            signals=consumed_before(stored, position),
        )
        forks(opened).insert_fork(fork, source=flow_id)
        return fork.id


def forks(store: Any) -> Forks:
    """*store* as a ``Forks`` store (``Caps.forks``); ``InvalidTypeError`` naming it
    when it does not declare it."""
    if not caps_of(store).forks:
        raise InvalidTypeError(
            "store", store, "does not declare Caps.forks (insert_fork): it cannot fork flows"
        )
    return store  # type: ignore[no-any-return]


def fork_position(records: tuple[StoredRecord, ...], at: object) -> int:
    """The position *at* names in *records* (``fork_flow``'s ``at``), checked."""
    if isinstance(at, str):
        found = next((r.position for r in records if r.name == at), None)
        if found is None:
            names = ", ".join(dict.fromkeys(repr(r.name) for r in records if r.name)) or "none"
            raise InvalidValueError(
                "fork point at", at, f"is the name of no record of the flow (it has {names})"
            )
        position = found
    elif isinstance(at, int) and not isinstance(at, bool):
        if not 0 <= at <= len(records):
            raise InvalidValueError(
                "fork point at", at, f"is not a position from 0 to {len(records)} of the history"
            )
        position = at
    else:
        raise InvalidTypeError(
            "fork point at", at, f"is a {type(at).__name__}; give a position (int) or a name (str)"
        )
    check_cut(records, position, at)
    return position


def check_cut(records: tuple[StoredRecord, ...], position: int, at: object) -> None:
    """Refuse a cut inside an ``All`` (between its header and its last branch) or
    one that keeps a record not resolved yet (a wait, a step's retry)."""
    for record in records[:position]:
        if record.kind == "all":
            branches = _branches(record)
            if record.position < position <= record.position + branches:
                raise InvalidValueError(
                    "fork point at",
                    at,
                    f"is position {position}, inside the All {record.name!r} of positions "
                    f"{record.position} to {record.position + branches}; fork at "
                    f"{record.position} (the All runs again) or after {record.position + branches}",
                )
        if record.state in UNRESOLVED:
            raise InvalidValueError(
                "fork point at",
                at,
                f"is position {position}, past record {record.position} ({record.kind} "
                f"{record.name!r}) that is still {record.state}; fork at {record.position} "
                "or before",
            )


def _branches(header: StoredRecord) -> int:
    """How many branch records follow an ``All``'s header (``all_header_result``);
    0 for a header that does not say (written before headers held their count)."""
    try:
        count = json.loads(header.result or "null")["branches"]
    except (ValueError, TypeError, KeyError):
        return 0
    return count if isinstance(count, int) else 0


def consumed_before(stored: StoredFlow, position: int) -> tuple[StoredSignal, ...]:
    """The signals the records before *position* consumed (of the current run)."""
    if stored.run == 1:
        taken = {s.id for s in stored.signals if s.position is not None and s.position < position}
    else:
        mine = consumed_in_this_run(info_of(stored))
        taken = {signal_id for at, signal_id in mine.items() if at < position}
    return tuple(s for s in stored.signals if s.id in taken and s.state == CONSUMED)
