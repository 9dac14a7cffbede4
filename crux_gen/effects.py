"""What the handlers (``handlers.py``) decide, as values: the effects a runner
carries out, and the events it reports back.

A handler never calls a step function, reads the clock or writes the store: it
returns effects, and the runner does each one (``CORE.md``, "Handlers: decision
in, effects out"). Immutable values compared by value, so a test of a handler is a
list of effects in and out. Named tuples, as ``StoredRecord`` is, rather than frozen
attrs classes: a live step makes five of them, and a frozen attrs class's
``__init__`` (``object.__setattr__`` per field) cost a third more CPU per step on
``MemoryStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .records import NewChild, SignalUpdate, StoredFlow, StoredRecord, StoredSignal, new_flow_id
from .status import Status


def _no_signals(name: str) -> Iterable[StoredSignal]:
    return ()


#: When a record must be written (``Record.write``): before the flow's next command
#: (a step's result, a failure thrown into the flow: a crash must not lose it), at
#: once if the flow is parked and goes on past its wait (so the stored flow stops
#: saying it waits), or with the run's next write.
DURABLE = "durable"
GO_ON = "go_on"
BUFFERED = "buffered"


class View(NamedTuple):
    """What a handler may know besides its decision: the time (read once by the
    runner), the decision's record as the runner holds it now (``None`` before the
    first one; state between calls lives in the last record a handler emitted), and
    the pending signals of a name, oldest first (drawn lazily: each signal a handler
    draws it answers with a ``Take``). *records* are every record the decision has
    emitted or was replayed with, by position (an ``All``'s header and branches)."""

    flow_id: str
    now: float
    record: StoredRecord | None
    pending: Callable[[str], Iterable[StoredSignal]] = _no_signals
    peek: Callable[[str], StoredSignal | None] = lambda name: None
    new_id: Callable[[], str] = new_flow_id
    records: Mapping[int, StoredRecord] = {}


class Call(NamedTuple):
    """Call *fn* (a step's function, a condition) after the runner's guard (the lease
    is held, the flow is not cancelled): attempt *attempt*, the command begun at
    *started*. The runner reports ``Returned`` or ``Raised``."""

    position: int
    fn: Callable[[], Any]
    attempt: int
    started: float
    limits: tuple[Any, ...] = ()  # a step's ``Limit``s: a slot of each while fn runs
    name: str = ""  # the step's name, or the condition's wait (``WaitUntil``)
    kind: str = "step"  # or ``"condition"``


class Record(NamedTuple):
    """Keep *record* at its position in the run's next write (see *write*)."""

    record: StoredRecord
    write: str = BUFFERED


class Resolve(NamedTuple):
    """Send *value* into the flow at its ``yield``."""

    value: Any


class Throw(NamedTuple):
    """Throw *exc* into the flow at its ``yield``."""

    exc: BaseException


class Timer(NamedTuple):
    """Stay in hand until *at* (a short retry backoff), then ask the handler again
    with ``Fired`` (of *position*: an ``All``'s branch; -1, the decision itself)."""

    at: float
    position: int = -1


class Park(NamedTuple):
    """Suspend the flow: it waits for *waiting_for* (a ``kind`` wait) until
    *wake_at*, with the wait's *deadline*. With *wait_signal*, only if no signal of
    that name arrived meanwhile (else the runner reports ``Arrived``)."""

    waiting_for: str
    kind: str
    wake_at: float | None
    deadline: float | None = None
    wait_signal: str | None = None
    children: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()


class Finish(NamedTuple):
    """End the flow with *status* (an expired wait: *waiting_for*, *kind*; with
    *wait_signal*, only if no signal of that name arrived meanwhile)."""

    status: Status
    waiting_for: str | None = None
    kind: str | None = None
    wait_signal: str | None = None


class Take(NamedTuple):
    """Answer a pending signal: consumed at a position, or rejected with a reason
    (*warning*, when given, is logged)."""

    update: SignalUpdate
    warning: BaseException | None = None


class NewRun(NamedTuple):
    """End this run; the next run of the same flow starts with *input* (JSON text)."""

    input: str


class StartChild(NamedTuple):
    """Write *record* with the new child flows *children*, in one write, before
    they run (the store may refuse an id: ``Refused``)."""

    children: tuple[NewChild, ...]
    record: StoredRecord


class Adopt(NamedTuple):
    """Run the child flow *flow_id* (a flow of *flow*) until it parks or ends, then
    report it (``Settled``: every child adopted by one list of effects at once)."""

    flow_id: str
    flow: Any


class CancelFlow(NamedTuple):
    """Cancel the flow *flow_id* (an ``Any``'s losing child) with *reason*, once this
    run's records before it are written."""

    flow_id: str
    reason: str


Effect = (
    Call
    | Record
    | Resolve
    | Throw
    | Timer
    | Park
    | Finish
    | NewRun
    | Take
    | StartChild
    | Adopt
    | CancelFlow
)


class Returned(NamedTuple):
    """The function of *call* returned *value*, in *took* seconds (measured only
    while the ``crux_gen`` logger logs DEBUG: ``calls.py``; else ``None``)."""

    value: Any
    call: Call
    took: float | None = None


class Raised(NamedTuple):
    """The function of *call* raised *exc* (in *took* seconds, as ``Returned``)."""

    exc: Exception
    call: Call
    took: float | None = None


class Fired(NamedTuple):
    """The ``Timer`` of *position* ran out."""

    position: int = -1


class Arrived(NamedTuple):
    """A park or an expiry was not written: signals it waits for arrived (they are
    pending now)."""


class Refused(NamedTuple):
    """The store refused *start* (a ``StartChild``: the id ``exc.flow_id`` is
    taken): nothing was written."""

    exc: Exception
    start: StartChild | None = None


class Settled(NamedTuple):
    """The adopted child flows as they stand after their runs, by id (``status``
    ``"deleted"`` for one gone from the store)."""

    children: dict[str, StoredFlow]


class Quiet(NamedTuple):
    """Nothing the decision asked for is outstanding any more (no call, timer or
    adopted child): an ``All`` whose branches all stopped concludes."""


Event = Returned | Raised | Fired | Arrived | Refused | Settled | Quiet | None
#: A call's outcomes, for ``isinstance`` (a tuple: a ``X | Y`` union is built again
#: at each call, on a live step's path).
OUTCOMES = (Returned, Raised)
