"""One exception tree: every error crux_gen raises derives from :class:`CruxError`.

Each error keeps its data as attributes and builds its message from them.
"""

from __future__ import annotations

from typing import Any


class CruxError(Exception):
    """The root of every error crux_gen raises."""


class FlowNotFoundError(CruxError, LookupError):
    """No flow with this id is stored."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(
            f"no flow with id {flow_id!r} in this store; check the id, or the store path"
        )


class FlowClosedError(CruxError):
    """The flow is finished (or its wait has expired) and takes no more signals."""

    def __init__(self, flow_id: str, status: str, detail: str = "") -> None:
        self.flow_id = flow_id
        self.status = status
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"flow {flow_id!r} is {status}{extra}; it takes no more signals or runs")


class FlowStateError(CruxError, ValueError):
    """The flow's status does not allow this (e.g. retrying a flow that did not fail)."""

    def __init__(self, flow_id: str | None, status: str, wanted: str) -> None:
        self.flow_id = flow_id
        self.status = status
        self.wanted = wanted
        which = f"flow {flow_id!r} is" if flow_id else "a flow that is"
        super().__init__(f"{which} {status}; {wanted}")


class FlowBusyError(CruxError):
    """Another runner holds the flow's lease right now."""

    def __init__(self, flow_id: str, lease_expires: Any = None) -> None:
        self.flow_id = flow_id
        self.lease_expires = lease_expires
        until = f" until {lease_expires.isoformat()}" if lease_expires is not None else ""
        super().__init__(
            f"flow {flow_id!r} is being run by another runner (lease held{until}); "
            "try again later, or let the worker advance it"
        )


class LeaseLostError(CruxError):
    """This runner's lease was taken over (it expired); it may write nothing more."""

    def __init__(self, flow_id: str, owner: str) -> None:
        self.flow_id = flow_id
        self.owner = owner
        super().__init__(
            f"flow {flow_id!r}: runner {owner!r} lost its lease (it expired and another "
            "runner took the flow); nothing more was written by this runner"
        )


class FlowNameConflictError(CruxError):
    """A flow id already belongs to a flow of another name."""

    def __init__(self, flow_id: str, stored_name: str, requested_name: str) -> None:
        self.flow_id = flow_id
        self.stored_name = stored_name
        self.requested_name = requested_name
        super().__init__(
            f"flow id {flow_id!r} belongs to flow {stored_name!r}, not {requested_name!r}; "
            "use another id, or run it with the flow it belongs to"
        )


class FlowNotRegisteredError(CruxError, LookupError):
    """No ``@flow`` with this name is registered in this process."""

    def __init__(self, name: str, flow_id: str | None = None) -> None:
        self.name = name
        self.flow_id = flow_id
        of = f" (needed by flow {flow_id!r})" if flow_id else ""
        super().__init__(
            f"no flow named {name!r} is registered{of}; import the module that defines "
            f'@flow("{name}") before resuming'
        )


class NonDeterminismError(CruxError):
    """The flow yielded a different command than history recorded at that position."""

    def __init__(self, flow_id: str, name: str, position: int, recorded: str, new: str) -> None:
        self.flow_id = flow_id
        self.name = name
        self.position = position
        self.recorded = recorded
        self.new = new
        super().__init__(
            f"flow {flow_id!r} ({name}) at position {position} recorded {recorded} but the "
            f"code now yields {new}; deploy code that yields the recorded command, or "
            "start a new flow (the stored flow was left untouched)"
        )


class SerializationError(CruxError, TypeError):
    """A value could not be stored as JSON."""

    def __init__(self, what: str, value: Any, reason: str) -> None:
        self.what = what
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "…"
        super().__init__(
            f"{what} cannot be stored as JSON: {reason} (value {shown}); return JSON-able "
            "data: dicts, lists, str, int, float, bool, None, datetimes, attrs classes"
        )


class SignalValidationError(CruxError, ValueError):
    """A signal's payload does not fit the schema of the ``Suspend`` it is for."""

    def __init__(self, flow_id: str, signal: str, schema: Any, reason: str) -> None:
        self.flow_id = flow_id
        self.signal = signal
        self.schema = schema
        self.reason = reason
        schema_name = getattr(schema, "__qualname__", repr(schema))
        super().__init__(
            f"flow {flow_id!r}: signal {signal!r} does not fit schema {schema_name}: "
            f"{reason}; the signal was kept as rejected and the flow still waits"
        )


class StepFailedError(CruxError):
    """A recorded step failure whose original exception class cannot be rebuilt."""

    def __init__(self, step: str, type: str, message: str, traceback: str = "") -> None:
        self.step = step
        self.type = type
        self.message = message
        self.traceback = traceback
        super().__init__(f"step {step!r} failed with {type}: {message}")


class StoreError(CruxError):
    """The store cannot be read or written (full disk, read-only file, lost
    connection, not a crux_gen store); the message names the file or server."""


class StoreBusyError(StoreError):
    """Another writer kept the store locked for longer than its busy timeout."""


class StoreSchemaError(StoreError):
    """The store was written by a newer crux_gen, or is not a crux_gen store."""


class RecordConflictError(StoreError):
    """A record was written at a position that is already taken, or past a gap."""

    def __init__(self, flow_id: str, position: int, recorded: int) -> None:
        self.flow_id = flow_id
        self.position = position
        self.recorded = recorded
        super().__init__(
            f"flow {flow_id!r}: a record at position {position} conflicts with the "
            f"{recorded} recorded command(s); nothing was written"
        )


class CorruptRecordError(CruxError):
    """A stored value cannot be decoded: it names the flow, the position and the column."""

    def __init__(self, flow_id: str, position: int | None, column: str, reason: str) -> None:
        self.flow_id = flow_id
        self.position = position
        self.column = column
        self.reason = reason
        at = f" at position {position}" if position is not None else ""
        super().__init__(
            f"flow {flow_id!r}{at}: stored {column} cannot be decoded ({reason}); the row "
            "was changed outside crux_gen or written by an incompatible version"
        )
