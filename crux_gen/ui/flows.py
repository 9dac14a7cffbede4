"""The flows page's filters and rows, and the errors page's groups: read from the
query string, checked (a bad value is a message naming it, shown on a 400 page),
and asked of the store through ``StoreAdmin.browse_flows`` and ``error_groups``.
No HTML here: the templates render these with autoescape."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import attrs

from ..clock import when
from ..control import summaries
from ..durations import moment_of
from ..records import StoredFlow
from ..status import FINISHED, Status
from ..stores.browse import ErrorGroup, error_key
from ..stores.caps import caps_of
from .pages import PAGE_SIZE, STATUSES, Text, at, parse_before, plain_text, value_text

#: The shortest id prefix searched as a prefix; a shorter text matches a whole id only.
MIN_PREFIX = 4
#: The most flows one bulk action touches (the confirmation says so when there are more).
BULK_LIMIT = 10_000
#: Error groups the errors page shows.
GROUPS = 200


@attrs.frozen
class Filters:
    """What the flows page shows: each field as typed (``text``) and as the store takes it."""

    text: dict[str, str]
    status: str | None = None
    name: str | None = None
    search: str | None = None
    since: float | None = None
    until: float | None = None
    top_level: bool = False
    error: tuple[str, str] | None = None

    def store_args(self) -> dict[str, Any]:
        """``browse_flows``'s keyword arguments."""
        return {
            "status": self.status,
            "name": self.name,
            "id_prefix": self.search,
            "since": self.since,
            "until": self.until,
            "top_level": self.top_level,
            "error": self.error,
        }

    def query(self, **more: str) -> str:
        """The query string of these filters (and *more*), for links and forms."""
        fields = {k: v for k, v in self.text.items() if v}
        fields.update({k: v for k, v in more.items() if v})
        return urlencode(fields)

    @property
    def any(self) -> bool:
        return any(self.text.values())

    def matches_id(self, flow_id: str) -> bool:
        """A search shorter than ``MIN_PREFIX`` matches a whole id only."""
        return self.search is None or len(self.search) >= MIN_PREFIX or flow_id == self.search


FIELDS = ("status", "name", "q", "since", "until", "top", "error_type", "error_message")


def read_filters(query: dict[str, str], now: datetime) -> tuple[Filters, str | None]:
    """The filters of a query string, and the message of the first bad one (``None``)."""
    text = {k: query.get(k, "").strip() for k in FIELDS}
    if "error_message" in query:  # a message may start or end with spaces
        text["error_message"] = query["error_message"]
    for key, value in text.items():
        if "\0" in value:
            return Filters({k: "" for k in FIELDS}), (
                f"{key} {value!r} holds a NUL character (\\x00), which no store can keep; "
                "no flow has it"
            )
    problem = None
    if text["status"] and text["status"] not in STATUSES:
        problem = f"status {text['status']!r} is none of {', '.join(STATUSES)}"
        text["status"] = ""
    times: dict[str, float | None] = {}
    for key in ("since", "until"):
        try:
            times[key] = moment(text[key], now, key)
        except ValueError as exc:
            problem, text[key], times[key] = str(exc), "", None
    error = None
    if text["error_type"]:
        error = (text["error_type"], text["error_message"])
    text["top"] = "1" if text["top"] else ""
    return Filters(
        text=text,
        status="failed" if error is not None else text["status"] or None,
        name=text["name"] or None,
        search=text["q"] or None,
        since=times["since"],
        until=times["until"],
        top_level=bool(text["top"]),
        error=error,
    ), problem


def moment(text: str, now: datetime, what: str) -> float | None:
    """A time filter's value: empty (``None``), else an age before *now* or an ISO
    8601 time (``durations.moment_of``: ``InvalidValueError`` naming it)."""
    return moment_of(text, now, what=what).timestamp() if text else None


@attrs.frozen
class Row:
    """One flow of the table."""

    flow_id: str
    name: str
    status: Status
    parent_id: str | None
    custom_status: Text | None
    error: Text | None
    error_type: str | None
    waiting_for: str | None
    wake_at: datetime | None
    updated_at: datetime
    updated_ts: float


def row_of(flow: StoredFlow, waiting_for: str | None) -> Row:
    """The table's row of a stored flow (values that do not decode show as their
    text), with *waiting_for* as ``FlowSummary.waiting_for`` says it."""
    error = kind = None
    if flow.error is not None:
        kind, message = error_key(flow.error)
        error = plain_text(message)
    custom = None
    if flow.custom_status is not None:
        try:
            custom = value_text(json.loads(flow.custom_status))
        except ValueError:
            custom = plain_text(flow.custom_status)
    updated = when(flow.updated_at)
    assert updated is not None
    return Row(
        flow_id=flow.id,
        name=flow.name,
        status=Status(flow.status),
        parent_id=flow.parent_id,
        custom_status=custom,
        error=error,
        error_type=kind,
        waiting_for=waiting_for,
        wake_at=when(flow.wake_at),
        updated_at=updated,
        updated_ts=flow.updated_at,
    )


def browse(
    store: Any, f: Filters, before: float | tuple[float, str] | None, limit: int
) -> list[StoredFlow]:
    """One page of the stored flows the filters take (but a short search's whole-id
    rule, :meth:`Filters.matches_id`): by ``browse_flows``, or, on a store without
    it, by ``list_flows`` (status and name only: another filter is a ``ValueError``
    saying so)."""
    if caps_of(store).browses:
        return list(store.browse_flows(limit=limit, before=before, **f.store_args()))
    if f.search or f.since or f.until or f.top_level or f.error:
        raise ValueError(f"{caps_of(store).where} filters by status and name only")
    return list(store.list_flows(status=f.status, name=f.name, limit=limit, before=before))


def page_of(store: Any, f: Filters, before_text: str | None) -> tuple[list[Row], str | None]:
    """One page of rows, and the ``before`` of the next page (``None`` on the last)."""
    before: float | tuple[float, str] | None = None
    if before_text is not None:
        bound = parse_before(before_text)
        before = bound if isinstance(bound, tuple) else bound.timestamp()
    flows = browse(store, f, before, PAGE_SIZE + 1)
    shown = [flow for flow in flows[:PAGE_SIZE] if f.matches_id(flow.id)]
    waiting: dict[str, str | None] = {}
    if caps_of(store).browses:  # list_flows' display of what each waits for
        waiting = {s.flow_id: s.waiting_for for s in summaries(store, shown)}
    rows = [row_of(flow, waiting.get(flow.id, flow.waiting_for)) for flow in shown]
    if len(flows) <= PAGE_SIZE:
        return rows, None
    last = flows[PAGE_SIZE - 1]
    return rows, f"{last.updated_at!r},{last.id}"


def every_flow(store: Any, f: Filters, limit: int = BULK_LIMIT + 1) -> Iterator[StoredFlow]:
    """The flows the filters take, page by page (keyset), at most *limit*."""
    before: tuple[float, str] | None = None
    taken = 0
    while taken < limit:
        size = min(500, limit - taken)
        page = browse(store, f, before, size)
        for flow in page:
            if f.matches_id(flow.id):
                taken += 1
                yield flow
        if len(page) < size:
            return
        before = (page[-1].updated_at, page[-1].id)


def bulk_targets(store: Any, f: Filters, action: str) -> list[StoredFlow]:
    """The flows a bulk *action* touches: the failed ones for ``retry``, the
    unfinished ones for ``cancel`` (at most ``BULK_LIMIT + 1``: one more says "more")."""
    if action == "retry":
        keep = {Status.FAILED.value}
    else:
        keep = {s.value for s in Status} - {s.value for s in FINISHED}
    return [flow for flow in every_flow(store, f) if flow.status in keep]


@attrs.frozen
class Group:
    """One group of the errors page, with the link to its flows."""

    type: str
    message: Text
    count: int
    last_updated: str
    query: str


def groups_of(store: Any) -> list[Group]:
    """The failed flows' error groups, each with the query of its flows' list
    (``ValueError`` for a store without ``error_groups``)."""
    if not caps_of(store).browses:
        raise ValueError(f"{caps_of(store).where} cannot group failed flows by error")
    found: list[ErrorGroup] = store.error_groups(limit=GROUPS)
    return [
        Group(
            type=g.type,
            message=plain_text(g.message),
            count=g.count,
            last_updated=at(when(g.last_updated)) if math.isfinite(g.last_updated) else "",
            query=urlencode({"error_type": g.type, "error_message": g.message}),
        )
        for g in found
    ]
