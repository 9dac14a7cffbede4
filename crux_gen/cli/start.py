"""``crux-gen start``: create a flow from a shell for a worker to run.

The flow is stored ``"running"`` and held by no runner, which is what a worker
takes first (as a crashed runner's flow): nothing of the flow runs in this
process. Starting an id that exists already for the same flow starts nothing
(as ``Flow.run``), so a retried script never starts two.
"""

from __future__ import annotations

import json
import secrets
import sys

import click

from .. import codec
from ..errors import FlowBusyError, FlowNotFoundError
from ..flow import check_flow_id, default_registry
from ..records import new_flow_id
from . import MAX_COUNT, CLIError, CLIStore, Count, db_option, store_at
from .deploy import import_module
from .format import cut, echo, to_json


@click.command("start", short_help="Create a flow for a worker to run.")
@click.argument("flow_name", metavar="FLOW_NAME")
@click.option(
    "--module",
    required=True,
    metavar="MODULE",
    help="The module that defines the flow (imported to check that it registers FLOW_NAME).",
)
@click.option(
    "--input",
    "input_text",
    default="null",
    show_default=True,
    metavar="JSON",
    help="The flow's input, as JSON ('-' reads it from stdin).",
)
@click.option("--id", "flow_id", metavar="ID", help="The flow's id (default: a new random one).")
@click.option(
    "--priority",
    type=Count(-MAX_COUNT, MAX_COUNT),
    default=0,
    show_default=True,
    metavar="N",
    help="Reserved: this version keeps no priority (due flows run oldest first) and takes 0 only.",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def start_command(
    flow_name: str,
    module: str,
    input_text: str,
    flow_id: str | None,
    priority: int,
    db: str,
    as_json: bool,
) -> None:
    """Create the flow FLOW_NAME of MODULE with a JSON input, for a worker to run.

    Runs nothing here: the flow is stored due, and the next pass of a worker
    running MODULE takes it. With --id, an id that exists already for the same
    flow starts nothing and says so (its input is left as it was); for another
    flow's name it is an error.

    \b
    Examples:
      crux-gen start onboarding --module myapp.flows --input '{"email": "a@b.c"}'
      crux-gen start nightly-report --module myapp.flows --id report-2026-11-24
    """
    if priority != 0:
        raise CLIError(
            f"--priority {priority}: this version of crux_gen keeps no priority (a worker "
            "takes due flows oldest first); leave --priority out"
        )
    text = sys.stdin.read() if input_text == "-" else input_text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"--input {cut(text, 40)!r} is not JSON ({exc}); quote it for the shell, "
            """e.g. '{"email": "a@b.c"}'"""
        ) from None
    if flow_id is not None:
        check_flow_id(flow_id)
    import_module(module)
    if flow_name not in default_registry:
        names = ", ".join(repr(n) for n in default_registry.names()[:8]) or "none"
        raise CLIError(f"{module} registers no flow {flow_name!r} (it registers {names})")
    encoded = codec.encode(value, what=f"the input of flow {flow_name!r}")
    with store_at(db, create=True) as store:
        started, status, new_id = create(store, flow_name, encoded, flow_id or new_flow_id())
    if as_json:
        found = {"id": new_id, "name": flow_name, "status": status}
        click.echo(to_json({**found, "started": started, "priority": priority}))
    elif started:
        echo(f"started flow {new_id} ({flow_name}): the next worker pass runs it")
    else:
        echo(f"flow {new_id} ({flow_name}) exists already, {status}: nothing started")


def create(store: CLIStore, name: str, encoded: str, flow_id: str) -> tuple[bool, str, str]:
    """Store the flow *flow_id* due and unheld: ``(started, status, id)``; an existing
    one of the same name is left as it is (``started`` false)."""
    try:
        found = store.load(flow_id)
    except FlowNotFoundError:
        found = None
    owner = secrets.token_hex(8)
    try:
        stored = store.start(flow_id, name, encoded, owner, store.clock.time())
    except FlowBusyError:  # a runner holds it: it exists, and runs
        return False, "running", flow_id
    if stored.lease_owner == owner:
        store.release(flow_id, owner)
    return found is None, stored.status, flow_id
