"""The flow page (``GET /flows/<id>``) and its refresh (``GET /flows/<id>?tail=P``).

A flow's history is shown a window of ``HISTORY_PAGE`` records at a time (the
latest by default, ``?start=N`` for another), so a flow of 20,000 records is a
page of a few hundred kilobytes. The page's script then asks every few seconds
for what changed: ``?tail=P&start=S`` answers JSON with the page's head (status,
where the flow is, its lease, value, error) and foot (signals, forms) and only
the records from position *P* on, *P* being the first record the page shows
that may still change (waiting or retrying) or the end of the history.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from ..clock import when
from ..commands import describe
from ..control import consumed_in_this_run
from ..errors import CorruptRecordError, FlowNotFoundError, InvalidTypeError, InvalidValueError
from ..records import UNRESOLVED, StoredFlow, StoredRecord
from ..results import FlowInfo, HistoryEntry
from ..status import FINISHED, Status
from ..streams import published
from ..views import info_of
from . import pages
from .actions import DONE, check_no_nul
from .timeline import timeline
from .wsgi import Request, Response

if TYPE_CHECKING:
    from .host import Host

#: Records per window of the history.
HISTORY_PAGE = 200


@attrs.frozen
class Where:
    """Where a flow stands: the record it is on (``None``: none yet, or past the
    last one while it runs the next command), its lease, and its step attempts."""

    record: StoredRecord | None
    next_position: int
    lease_owner: str | None
    lease_expires: datetime | None
    attempts: int
    step_attempts: int

    @property
    def command(self) -> str:
        return "" if self.record is None else describe(self.record.kind, self.record.name)


def where(stored: StoredFlow) -> Where:
    """The record a flow is on: an unfinished flow's last record while it waits or
    retries (else the next position, the command it runs now), a failed flow's
    failed record, a finished flow's last."""
    records = stored.records
    last = records[-1] if records else None
    record: StoredRecord | None = last
    if Status(stored.status) == Status.FAILED:
        record = next((r for r in reversed(records) if r.state == "failed"), last)
    elif Status(stored.status) not in FINISHED and (last is None or last.state not in UNRESOLVED):
        record = None  # running the command after the last record (or none yet)
    live = stored.lease_expires is not None and stored.lease_owner is not None
    return Where(
        record=record,
        next_position=len(records),
        lease_owner=stored.lease_owner if live else None,
        lease_expires=when(stored.lease_expires) if live else None,
        attempts=record.attempts if record is not None else 0,
        step_attempts=sum(r.attempts for r in records if r.kind == "step"),
    )


def window(count: int, text: str | None) -> int:
    """The first position of the shown window: ``?start=N`` (clamped), else the
    latest window. ``ValueError`` for a start that is not a number."""
    latest = max(0, count - HISTORY_PAGE)
    if text is None or not text.strip():
        return latest
    return min(max(0, int(text)), latest)


def first_open(records: tuple[StoredRecord, ...], start: int) -> int:
    """The first position from *start* on whose record may still change (waiting or
    retrying), else the end of the history: where the next refresh starts."""
    for r in records[start:]:
        if r.state in UNRESOLVED:
            return r.position
    return len(records)


def light(r: StoredRecord) -> HistoryEntry:
    """A record as the timeline needs it: its timings, no decoded values."""
    return HistoryEntry(
        position=r.position,
        kind=r.kind,
        name=r.name,
        state=r.state,
        attempts=r.attempts,
        started_at=when(r.started_at),
        finished_at=when(r.finished_at),
        wake_at=when(r.wake_at),
        deadline=when(r.deadline),
    )


def load(dash: Host, request: Request, flow_id: str) -> StoredFlow | Response:
    """The stored flow, or the error page saying why there is none."""
    try:
        check_no_nul("flow id", flow_id, "no flow has such an id")
        return dash.store.load(flow_id)  # type: ignore[no-any-return]
    except FlowNotFoundError:
        return dash.error_page(request, 404, "No such flow", f"no flow has the id {flow_id!r}")
    except (InvalidTypeError, InvalidValueError) as exc:
        return dash.error_page(request, 404, "No such flow", str(exc))


def context(
    dash: Host, request: Request, stored: StoredFlow, start: int, tail: int | None
) -> dict[str, Any]:
    """What the page's parts show: the window of records from *start* (to the end
    of the history with *tail*, of which only the records from *tail* on are
    decoded: the page has the others), and the rest."""
    now = dash.store.clock.now()
    count = len(stored.records)
    upto = count if tail is not None else min(count, start + HISTORY_PAGE)
    decoded = stored.records[start if tail is None else tail : upto]
    info: FlowInfo = info_of(attrs.evolve(stored, records=decoded))
    consumed_by = consumed_in_this_run(info)
    who = dash.sessions.who(request) if dash.allow_actions else None
    choice = pages.signal_choice(stored.status, stored.wait_kind, stored.waiting_for)
    shown = stored.records[start:upto]
    lines = timeline(
        [light(r) for r in shown],
        now,
        created=info.created_at if start == 0 else None,
        updated=info.updated_at if upto == count else None,
    )
    return {
        "info": info,
        "where": where(stored),
        "finished": Status(info.status) in FINISHED,
        "timeline": lines,
        "entry_facts": lambda entry: pages.entry_facts(entry, consumed_by, now),
        "this_run": set(consumed_by.values()),
        "now": now,
        "authorized": who is not None,
        "csrf": "" if who is None else dash.sessions.csrf(who),
        "signal_choice": choice,
        "start": start,
        "count": len(stored.records),
        "page_size": HISTORY_PAGE,
        "tail_from": first_open(stored.records, start),
        "is_tail": upto == count,
        "published": published(dash.store, stored.id),  # events and streams
    }


def flow_page(
    dash: Host,
    request: Request,
    flow_id: str,
    status: int = 200,
    notice: tuple[str, str] | None = None,
) -> Response:
    """One flow: where it is, input, value or error, a window of its timeline and
    history, signals (and the action forms)."""
    found = load(dash, request, flow_id)
    if isinstance(found, Response):
        return found
    if "tail" in request.query:
        return tail(dash, request, found)
    if notice is None and request.query.get("done") in DONE:
        notice = ("ok", DONE[request.query["done"]])
    try:
        start = window(len(found.records), request.query.get("start"))
    except ValueError:
        return dash.error_page(
            request, 400, "Bad request", f"start {request.query['start']!r} is not a number"
        )
    try:
        parts = context(dash, request, found, start, None)
    except CorruptRecordError as exc:
        return dash.error_page(request, 500, "This flow's stored data is corrupt", str(exc))
    return dash.render(request, "flow.html", status, notice=notice, **parts)


def tail(dash: Host, request: Request, stored: StoredFlow) -> Response:
    """``?tail=P&start=S``: JSON of the parts that may have changed and the records
    from *P* on (``{"reload": true}`` when the page should load anew: its records
    are gone, or too many arrived)."""
    count = len(stored.records)
    try:
        after = int(request.query.get("tail", ""))
        start = int(request.query.get("start", "0"))
    except ValueError:
        return json_response(400, {"error": "tail and start must be numbers"})
    if request.query.get("head") == "1":  # a page of earlier records: its head and foot only
        after = start = count
    if after < 0 or start < 0 or after < start or after > count or count - start > 2 * HISTORY_PAGE:
        return json_response(200, {"reload": True, "run": stored.run, "status": stored.status})
    try:
        parts = context(dash, request, stored, start, after)
    except CorruptRecordError as exc:
        return json_response(200, {"reload": True, "error": str(exc)})
    new_bars = [b for b in parts["timeline"].bars if b.position >= after]

    def render(template: str, **more: Any) -> str:
        return dash.html(request, template, **parts, **more)

    return json_response(
        200,
        {
            "run": stored.run,
            "status": stored.status,
            "count": count,
            "from": after,
            "next": parts["tail_from"],
            "t0": parts["timeline"].t0,
            "t1": parts["timeline"].t1,
            "span": render("flow_span.html"),
            "shown": render("history_count.html"),
            "head": render("flow_head.html"),
            "foot": render("flow_foot.html"),
            "rows": render("timeline_rows.html", bars=new_bars),
            "items": render("history_items.html"),
        },
    )


def json_response(status: int, data: dict[str, Any]) -> Response:
    body = json.dumps(data, ensure_ascii=True).encode("ascii")
    return Response(status, body, "application/json", [("Cache-Control", "no-store")])
