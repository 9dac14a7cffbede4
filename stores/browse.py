"""What the dashboard asks of a store beyond ``list_flows``, shared by every store:
``browse_flows`` (a page of flows by id prefix, time, top level or the error that
failed them, as well as status and name) and ``error_groups`` (the failed flows
counted by error type and message).

A stored error is JSON text (``ErrorInfo.encode``); its type and message are read
from it here, in Python, on every store alike: a row whose error is not such JSON
(written by hand, or corrupt) is grouped as ``UNREADABLE`` instead of failing the
page, and no store needs a JSON function of its database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from crux_gen.errors import InvalidTypeError, InvalidValueError
from crux_gen.records import StoredFlow
from crux_gen.status import Status

from .listing import MAX_LIMIT, Before, check_before, filters, in_range
from .sql_statements import FLOW_COLUMNS

#: The type of an error group whose stored error is not readable JSON.
UNREADABLE = "(unreadable error)"
#: Rows a SQL store reads per batch while it filters by error in Python.
ERROR_BATCH = 500


@attrs.frozen
class ErrorGroup:
    """Failed flows sharing one error *type* and *message*: how many, and the
    ``updated_at`` of the latest."""

    type: str
    message: str
    count: int
    last_updated: float


@attrs.frozen
class Browse:
    """``browse_flows``'s filters, checked (:func:`browse_filter`)."""

    status: str | None = None
    name: str | None = None
    id_prefix: str | None = None
    since: float | None = None  # updated at or after
    until: float | None = None  # updated strictly before
    top_level: bool = False  # no parent (not a ``Child``)
    error: tuple[str, str] | None = None  # failed with this (type, message)


def browse_filter(**given: Any) -> Browse:
    """The filters of ``browse_flows(**given)`` checked: each a ``CruxError`` naming it."""
    for key in ("status", "name", "id_prefix"):
        value = given.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidTypeError(f"browse_flows {key}", value, "must be a str or None")
    status = given.get("status")
    if status is not None and status not in {s.value for s in Status}:
        raise InvalidValueError("browse_flows status", status, "is no flow status")
    for key in ("since", "until"):
        value = given.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidTypeError(f"browse_flows {key}", value, "must be a time (float) or None")
        if not math.isfinite(value):
            raise InvalidValueError(f"browse_flows {key}", value, "is not a finite time")
    error = given.get("error")
    if error is not None and not (
        isinstance(error, tuple) and len(error) == 2 and all(isinstance(e, str) for e in error)
    ):
        raise InvalidTypeError("browse_flows error", error, "must be a (type, message) pair")
    return Browse(
        status=status,
        name=given.get("name"),
        id_prefix=given.get("id_prefix") or None,
        since=None if given.get("since") is None else float(given["since"]),
        until=None if given.get("until") is None else float(given["until"]),
        top_level=bool(given.get("top_level", False)),
        error=error,
    )


def error_key(text: str | None) -> tuple[str, str]:
    """The ``(type, message)`` of a stored error's JSON text (``UNREADABLE`` and ``""``
    for anything else)."""
    try:
        data = json.loads(text or "")
    except (ValueError, RecursionError):
        return (UNREADABLE, "")
    if not isinstance(data, dict):
        return (UNREADABLE, "")
    kind, message = data.get("type"), data.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        return (UNREADABLE, "")
    return (kind, message)


def group_errors(rows: Iterable[tuple[str | None, int, float]], limit: int) -> list[ErrorGroup]:
    """Merge ``(error text, count, latest updated_at)`` rows by type and message:
    the most frequent groups first (then the latest, then by type and message)."""
    found: dict[tuple[str, str], list[float]] = {}
    for text, count, last in rows:
        key = error_key(text)
        seen = found.setdefault(key, [0, -math.inf])
        seen[0] += int(count)
        seen[1] = max(seen[1], float(last))
    groups = [ErrorGroup(k[0], k[1], int(v[0]), v[1]) for k, v in found.items()]
    groups.sort(key=lambda g: (-g.count, -g.last_updated, g.type, g.message))
    return groups[: max(int(limit), 0)]


def row_matches(row: dict[str, Any], f: Browse) -> bool:
    """Whether a ``MemoryStore`` flow row passes the filters *f*."""
    return (
        (f.status is None or row["status"] == f.status)
        and (f.name is None or row["name"] == f.name)
        and (f.id_prefix is None or row["id"].startswith(f.id_prefix))
        and in_range(row["updated_at"], f.since, f.until)
        and (not f.top_level or row["parent_id"] is None)
        and (f.error is None or (row["status"] == "failed" and error_key(row["error"]) == f.error))
    )


def browse_query(
    columns: str, mark: str, f: Browse, limit: int, before: Before
) -> tuple[str, list[Any]]:
    """The SQL of ``browse_flows`` but its error filter (which the caller applies to
    the rows, see :func:`error_key`): ``list_flows``' filters (``listing.filters``)
    and the dashboard's, newest update first, keyset-paged."""
    status = "failed" if f.error is not None else f.status
    where, params = filters(mark, status=status, name=f.name, since=f.since, until=f.until)
    if f.error is not None and f.status not in (None, "failed"):
        where.append("1 = 0")  # only failed flows have an error to match
    if f.id_prefix is not None:
        where.append(f"substr(id, 1, {mark}) = {mark}")
        params.extend([len(f.id_prefix), f.id_prefix])
    if f.top_level:
        where.append("parent_id IS NULL")
    if isinstance(before, tuple):
        where.append(f"updated_at <= {mark} AND (updated_at < {mark} OR id < {mark})")
        params.extend([before[0], before[0], before[1]])
    elif before is not None:
        where.append(f"updated_at < {mark}")
        params.append(before)
    query = f"SELECT {columns} FROM flows"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += f" ORDER BY updated_at DESC, id DESC LIMIT {mark}"
    return query, [*params, min(int(limit), MAX_LIMIT)]


def check_limit(limit: Any, what: str) -> int:
    """A ``limit`` argument checked: a positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidTypeError(what, limit, "must be an int")
    if limit < 1:
        raise InvalidValueError(what, limit, "must be a positive int")
    return limit


class SqlBrowse:
    """``browse_flows`` and ``error_groups`` of the SQL stores (a mixin of ``SqlAdmin``)."""

    _sql: ClassVar[Any]

    if TYPE_CHECKING:

        def _all(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]: ...

    def browse_flows(
        self, *, limit: int = 100, before: Before = None, **filters: Any
    ) -> list[StoredFlow]:
        """See ``StoreAdmin.browse_flows``."""
        f, limit = browse_filter(**filters), check_limit(limit, "browse_flows limit")
        bound = check_before(before)
        mark = self._sql.dialect.mark
        if f.error is None:
            query, params = browse_query(FLOW_COLUMNS, mark, f, limit, bound)
            return [StoredFlow(*row) for row in self._all(query, params)]
        found: list[StoredFlow] = []
        while len(found) < limit:  # batches of failed flows, matched by error here
            query, params = browse_query(FLOW_COLUMNS, mark, f, ERROR_BATCH, bound)
            batch = [StoredFlow(*row) for row in self._all(query, params)]
            found.extend(r for r in batch if error_key(r.error) == f.error)
            if len(batch) < ERROR_BATCH:
                break
            bound = (batch[-1].updated_at, batch[-1].id)
        return found[:limit]

    def error_groups(self, *, limit: int = 100) -> list[ErrorGroup]:
        """See ``StoreAdmin.error_groups``: one GROUP BY of the failed flows' errors."""
        limit = check_limit(limit, "error_groups limit")
        rows = self._all(
            "SELECT error, COUNT(*), MAX(updated_at) FROM flows "
            "WHERE status = 'failed' GROUP BY error"
        )
        return group_errors(((r[0], int(r[1]), float(r[2])) for r in rows), limit)


class MemoryBrowse:
    """``browse_flows`` and ``error_groups`` of ``MemoryStore`` (a mixin of ``MemoryAdmin``)."""

    _lock: Any
    _flows: dict[str, dict[str, Any]]

    if TYPE_CHECKING:

        def _snapshot(
            self, flow_id: str, *, history: bool = True, children: bool = False
        ) -> StoredFlow: ...

    def browse_flows(
        self, *, limit: int = 100, before: Before = None, **filters: Any
    ) -> list[StoredFlow]:
        """See ``StoreAdmin.browse_flows``."""
        f, limit = browse_filter(**filters), check_limit(limit, "browse_flows limit")
        bound = check_before(before)
        if isinstance(bound, float):
            bound = (bound, "")  # strictly older: no id sorts below ""
        with self._lock:
            rows = [
                row
                for row in self._flows.values()
                if (bound is None or (row["updated_at"], row["id"]) < bound) and row_matches(row, f)
            ]
            rows.sort(key=lambda r: (r["updated_at"], r["id"]), reverse=True)
            return [self._snapshot(r["id"], history=False) for r in rows[:limit]]

    def error_groups(self, *, limit: int = 100) -> list[ErrorGroup]:
        """See ``StoreAdmin.error_groups``."""
        limit = check_limit(limit, "error_groups limit")
        with self._lock:
            rows = [
                (row["error"], 1, row["updated_at"])
                for row in self._flows.values()
                if row["status"] == "failed"
            ]
        return group_errors(rows, limit)
