"""``crux-gen show ID --follow``: print a flow's new records, signals, events,
stream entries and status as they land, until it finishes.

The store is read again every ``--poll``; what changed since the last read is
printed as ``show`` prints it (a record that moved on, a waiting ``Suspend`` that
completed, is printed again with its new state). With ``--json`` each change is
one JSON object on its own line (JSON Lines): ``{"event": "flow", ...}`` first,
then ``record``, ``signal``, ``event`` (``ctx.set_event``: ``key``, ``value``,
``set_at``), ``stream`` (``ctx.write_stream`` / ``write_stream`` / ``close_stream``:
``key``, ``seq``, ``value``, ``closed``, ``at``) and ``status`` changes. The
events and stream entries stored before it started come first, after the flow.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, cast

import click

from .. import codec
from ..commands import describe
from ..control import consumed_in_this_run, get_flow
from ..errors import FlowNotFoundError
from ..results import FlowInfo
from ..stores.base_streams import Streams
from ..stores.caps import caps_of
from . import CLIStore
from .format import at, clean, echo, error_lines, fold_all, to_json, value_lines
from .show import entry_lines, signal_lines, status_text


def follow(
    store: CLIStore, first: FlowInfo, *, poll: float, full: bool, fit: int, as_json: bool
) -> None:
    """Print the changes of the flow *first* shows until it finishes (or is deleted,
    or Ctrl-C), reading it every *poll* seconds."""
    last = first
    published = Published(store, first.flow_id)
    if as_json:
        click.echo(to_json({"event": "flow", **codec.converter.unstructure(first)}))

    def show(item: dict[str, Any], info: FlowInfo) -> None:
        if as_json:
            click.echo(to_json(item))
            return
        for line in fold_all(lines_of(item, info, store, full=full, fit=fit), fit):
            echo(line)

    try:
        for item in published.changes():  # those stored already
            show(item, first)
        if not as_json and not first.status.finished:
            echo(f"following flow {first.flow_id} until it finishes (Ctrl-C stops)")
        while not last.status.finished:
            time.sleep(poll)
            try:
                info = get_flow(first.flow_id, store=store)
            except FlowNotFoundError:
                echo(f"flow {first.flow_id} was deleted", err=True)
                return
            items = changes(last, info)
            ended = items[-1:] if items and items[-1]["event"] == "status" else []
            for item in items[: len(items) - len(ended)] + published.changes() + ended:
                show(item, info)
            last = info
    except KeyboardInterrupt:
        return


class Published:
    """A flow's events and stream entries not shown yet (``changes``): an event
    whose value or time changed, a stream entry (by key and ``seq``) new."""

    def __init__(self, store: CLIStore, flow_id: str) -> None:
        self.store = cast(Streams, store) if caps_of(store).streams else None
        self.flow_id = flow_id
        self.events: dict[str, tuple[str, float]] = {}
        self.entries: set[tuple[str, int]] = set()

    def changes(self) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        found: list[dict[str, Any]] = []
        for event in self.store.flow_events(self.flow_id):
            if self.events.get(event.key) != (event.value, event.set_at):
                self.events[event.key] = (event.value, event.set_at)
                found.append({"event": "event", "key": event.key, "value": loose(event.value),
                              "set_at": iso(event.set_at)})  # fmt: skip
        for row in self.store.flow_streams(self.flow_id):
            if (row.key, row.seq) not in self.entries:
                self.entries.add((row.key, row.seq))
                value = None if row.value is None else loose(row.value)
                found.append({"event": "stream", "key": row.key, "seq": row.seq, "value": value,
                              "closed": row.value is None, "at": iso(row.at)})  # fmt: skip
        return found


def loose(text: str) -> Any:
    """A stored JSON value (one that is no JSON: its text, as ``show --json``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def changes(old: FlowInfo, new: FlowInfo) -> list[dict[str, Any]]:
    """What changed from *old* to *new*: records and signals new or changed, in
    order, then the status (or what the flow waits for) when it changed."""
    found: list[dict[str, Any]] = []
    if new.run != old.run:
        found.append({"event": "run", "run": new.run})
        before = {}
    else:
        before = {entry.position: entry for entry in old.history}
    for entry in new.history:
        if before.get(entry.position) != entry:
            found.append({"event": "record", **codec.converter.unstructure(entry)})
    signals = {sig.id: sig for sig in old.signals}
    for sig in new.signals:
        if signals.get(sig.id) != sig:
            found.append({"event": "signal", **codec.converter.unstructure(sig)})
    if (new.status, new.waiting_for) != (old.status, old.waiting_for):
        found.append(
            {
                "event": "status",
                "status": new.status.value,
                "waiting_for": new.waiting_for,
                "value": codec.converter.unstructure(new.value),
                "error": codec.converter.unstructure(new.error),
            }
        )
    return found


def lines_of(
    item: dict[str, Any], info: FlowInfo, store: CLIStore, *, full: bool, fit: int
) -> list[str]:
    """``show``'s lines for one change of :func:`changes`."""
    now = store.clock.now()
    event = item["event"]
    if event == "run":
        return [f"run      {item['run']} began (ContinueAsNew)"]
    if event == "record":
        [entry] = [e for e in info.history if e.position == item["position"]]
        consumed = consumed_in_this_run(info)
        labels = [clean(describe(e.kind, e.name)) for e in info.history]
        align = min(max(map(len, labels), default=0), 32)  # as show aligns them
        return entry_lines(entry, info, consumed, now, align=align, full=full, fit=fit)
    if event == "signal":
        [sig] = [s for s in info.signals if s.id == item["id"]]
        return signal_lines(sig, full=full, fit=fit)
    if event == "event":
        when = at(datetime.fromisoformat(item["set_at"]))
        head = f"event    {clean(repr(item['key']))} set {when}"
        return [head, *value_lines("value", item["value"], "       ", full=full, fit=fit)]
    if event == "stream":
        head = f"stream   {clean(repr(item['key']))} #{item['seq']}"
        if item["closed"]:
            return [head + " closed"]
        return value_lines(head, item["value"], "", full=full, fit=fit)
    lines = [f"status   {status_text(info, now)}"]
    if info.status.value == "completed":
        lines += value_lines("value", info.value, "", full=full, fit=fit, sep="    ")
    if info.error is not None:
        lines += error_lines(info.error, "", with_traceback=full, full=full)
    return lines
