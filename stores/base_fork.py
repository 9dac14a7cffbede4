"""The optional capability of a store that creates a forked flow (``fork_flow``,
``Caps.forks``), and the error for a fork's id that is taken."""

from __future__ import annotations

from typing import Protocol

from crux_gen.errors import CruxError, FlowIdTakenError
from crux_gen.records import StoredFlow


class Forks(Protocol):
    """A flow created with a history of its own copied in: all of it, or nothing."""

    def insert_fork(self, flow: StoredFlow, *, source: str) -> None:
        """Insert *flow* (a fork: ``crux_gen.forking``) in one transaction: its row
        as given, without a lease; its records (of positions 0, 1, 2, …) as given;
        and each of its signals as a new signal of that flow with the state,
        times, position, key and trace given (each gets a new id: the ids given
        are ignored). A flow stored under its id already is a
        :class:`ForkIdTakenError` naming *source* (the flow forked) and nothing
        is written."""
        ...


class ForkIdTakenError(FlowIdTakenError):
    """``fork_flow``'s ``new_id`` names a flow that is stored already (nothing was
    forked): a ``FlowIdTakenError``, with ``flow_id`` the taken id and
    ``requested_by`` the flow being forked."""

    def __init__(self, flow_id: str, parent_id: str | None, requested_by: str) -> None:
        self.flow_id = flow_id
        self.parent_id = parent_id
        self.requested_by = requested_by
        CruxError.__init__(
            self,
            f"flow id {flow_id!r} is taken: a flow with that id is stored already, so flow "
            f"{requested_by!r} was not forked; give another new_id (or none, for a new "
            "random id)",
        )
