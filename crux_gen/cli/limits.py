"""``crux-gen limits``: the global limits in use (``Limit``): for each limit and
key value, the slots held now and the flows waiting for it."""

from __future__ import annotations

import attrs
import click

from ..limits import LimitUsage
from . import db_option, store_at
from .format import clean, echo, to_json


@click.command("limits", short_help="List the limits in use: slots held, flows blocked.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
def limits_command(db: str, as_json: bool) -> None:
    """List every limit (and key value) with a slot held or a flow blocked by it:
    HELD is how many slots are held now (by flows running under a live lease; a
    waiting flow holds none), BLOCKED how many due flows wait for it (a full
    ``limit``, or a ``rate`` whose turn has not come). ``crux-gen list`` shows
    which flows, in its WAITING FOR column ("blocked by ...")."""
    with store_at(db) as store:
        found: list[LimitUsage] = store.limit_usage(store.clock.time())
    if as_json:
        click.echo(to_json([attrs.asdict(u) for u in found], indent=2))
        return
    if not found:
        echo("no limit in use: no slot held, no flow blocked")
        return
    wide = max(len(u.label) for u in found)
    echo(f"{'LIMIT':<{wide}}  {'HELD':>5}  {'BLOCKED':>7}")
    for u in found:
        echo(f"{clean(u.label):<{wide}}  {u.held:>5}  {u.blocked:>7}")
