"""``crux-gen fork ID --at N|NAME --module MODULE``: a new flow that goes on from a
point of another's history (as :func:`crux_gen.fork_flow` does). MODULE is
imported, as ``crux-gen start`` and ``worker`` do, so the kept history is
replayed against the flow it defines before anything is written."""

from __future__ import annotations

import re

import click

from ..errors import FlowNotRegisteredError
from ..forking import fork_flow
from . import db_option, find_flow, store_at
from .deploy import import_module
from .format import echo, to_json

#: ``--at`` is a position when it reads as an integer (``-1`` too: refused, named).
_INTEGER = re.compile(r"[+-]?[0-9]+")


@click.command("fork", short_help="Create a flow that goes on from a point of another's history.")
@click.argument("flow_id", metavar="ID")
@click.option(
    "--at",
    "at_text",
    required=True,
    metavar="N|NAME",
    help="The position to run again from (as `show` numbers them), or a name: its first record.",
)
@click.option(
    "--module",
    required=True,
    metavar="MODULE",
    help="The module that defines the flow (its history is replayed against it first).",
)
@click.option("--new-id", metavar="ID", default=None, help="The new flow's id (default: random).")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def fork_command(
    flow_id: str, at_text: str, module: str, new_id: str | None, db: str, as_json: bool
) -> None:
    """Create a new flow of ID's name and input whose history is ID's before
    position N (or the first record named NAME): the next pass of a worker
    running MODULE runs it, replaying that history and running the rest again.
    ID is left as it is. A history that no longer replays against MODULE's flow
    is refused, and nothing is created.

    \b
    Examples:
      crux-gen fork 7f3a1c2b9e0d --at charge --module myapp.flows
      crux-gen fork 7f3a1c2b9e0d --at 2 --module myapp.flows --new-id retry-7f3a --json
    """
    at: int | str = int(at_text) if _INTEGER.fullmatch(at_text.strip()) else at_text
    import_module(module)
    with store_at(db) as store:
        stored = find_flow(store, flow_id)
        try:
            made = fork_flow(stored.id, at=at, store=store, new_id=new_id)
        except FlowNotRegisteredError as exc:
            raise exc.with_hint(f"{module} does not define it; pass the module that does") from None
        kept = len(store.load(made).records)
    if as_json:
        shown = {"id": made, "name": stored.name, "from": stored.id, "at": kept}
        click.echo(to_json({**shown, "status": "pending"}))
        return
    echo(f"forked flow {stored.id} ({stored.name}) at position {kept} as flow {made}")
    echo(f"it is due now: the next worker pass running {module} runs it from position {kept}")
