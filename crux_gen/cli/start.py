"""``crux-gen start``: create a flow from a shell for a worker to run.

The flow is stored ``"pending"`` and due (``Flow.start``), with its priority:
nothing of the flow runs in this process. Starting an id that exists already for
the same flow starts nothing (as ``Flow.run``), so a retried script never starts
two. The flow's ``Exclusive`` and ``Debounce`` apply as for ``Flow.start``.
"""

from __future__ import annotations

import json
import sys

import click

from ..flow import check_flow_id, default_registry
from ..starting import new_pending
from ..starts import PRIORITY_RANGE
from . import CLIError, Count, db_option, store_at
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
    type=Count(*PRIORITY_RANGE),
    default=0,
    show_default=True,
    metavar="N",
    help="Among due flows a worker takes higher priority first (then the earliest due).",
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
    flow = default_registry.get(flow_name)
    new = new_pending(flow, value, flow_id, priority, flow.exclusive, flow.debounce)
    with store_at(db, create=True) as store:
        found = store.enqueue(new, store.clock.time())
    started, status, new_id = found.created, found.flow.status, found.flow.id
    if as_json:
        shown = {"id": new_id, "name": flow_name, "status": status, "started": started}
        click.echo(to_json({**shown, "priority": found.flow.priority}))
    elif started:
        echo(f"started flow {new_id} ({flow_name}): the next worker pass runs it")
    else:
        echo(f"flow {new_id} ({flow_name}) exists already, {status}: nothing started")
