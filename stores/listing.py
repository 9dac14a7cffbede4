"""The rules of ``StoreAdmin.list_flows`` and ``count``, shared by every store: their
arguments checked, their SQL (the SQL stores), the *version* filter in Python
(``MemoryStore``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from crux_gen.errors import InvalidTypeError, InvalidValueError
from crux_gen.records import COMPLETED, StoredRecord
from crux_gen.status import FINISHED

#: ``list_flows``'s *before*: ``None``, an ``updated_at`` (strictly older), or the
#: keyset ``(updated_at, id)`` of the last flow of a page.
Before = float | tuple[float, str] | None

#: The largest ``LIMIT`` every store takes (a 64-bit integer); more is the same.
MAX_LIMIT = 2**63 - 1

#: The record kind of a ``Version`` command (``list_flows(version=...)``).
VERSION_KIND = "version"


def check_version(version: Any) -> tuple[str, int] | None:
    """``list_flows``'s *version* filter checked: ``None`` or ``(name, n)``, n >= 0."""
    if version is None:
        return None
    if (
        not isinstance(version, tuple)
        or len(version) != 2
        or not isinstance(version[0], str)
        or not isinstance(version[1], int)
        or isinstance(version[1], bool)
    ):
        raise InvalidTypeError("list_flows version", version, "is not a (name, int) pair")
    if version[1] < 0:
        raise InvalidValueError("list_flows version", version, "must have a number >= 0")
    return version


def version_matches(records: Sequence[StoredRecord], version: tuple[str, int]) -> bool:
    """Whether a run's *records* pass ``list_flows``'s *version* filter (``MemoryStore``;
    the SQL stores say the same in ``listing_query``)."""
    name, number = version
    mine = [r for r in records if r.kind == VERSION_KIND and r.name == name]
    if number == 0:
        return not mine
    return any(r.state == COMPLETED and r.result == str(number) for r in mine)


def listing_query(
    columns: str,
    mark: str,
    *,
    status: str | None,
    name: str | None,
    limit: int,
    before: Before,
    version: tuple[str, int] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of ``list_flows`` (*mark* is the driver's placeholder):
    newest update first, filtered, keyset-paged by ``before`` (never an OFFSET).
    *version* is matched against the records of each flow's current run (the
    ``records`` table holds no other run)."""
    where, params = filters(mark, status=status, name=name, since=since, until=until)
    before = check_before(before)
    if isinstance(before, tuple):
        # (updated_at, id) < (u, i), spelled so that any index on updated_at bounds it.
        where.append(f"updated_at <= {mark} AND (updated_at < {mark} OR id < {mark})")
        params.extend([before[0], before[0], before[1]])
    elif before is not None:
        where.append(f"updated_at < {mark}")
        params.append(before)
    version = check_version(version)
    if version is not None:
        found = (
            "SELECT 1 FROM records r WHERE r.flow_id = flows.id "
            f"AND r.kind = '{VERSION_KIND}' AND r.name = {mark}"
        )
        if version[1] == 0:
            where.append(f"NOT EXISTS ({found})")
            params.append(version[0])
        else:
            where.append(f"EXISTS ({found} AND r.state = '{COMPLETED}' AND r.result = {mark})")
            params.extend([version[0], str(version[1])])
    query = f"SELECT {columns} FROM flows"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += f" ORDER BY updated_at DESC, id DESC LIMIT {mark}"
    return query, [*params, min(int(limit), MAX_LIMIT)]


def filters(
    mark: str,
    *,
    status: str | None,
    name: str | None,
    since: float | None,
    until: float | None,
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and parameters of the filters ``list_flows`` and ``count``
    share: *status*, *name*, and ``since <= updated_at < until`` (each bound on the
    ``(status|name|…, updated_at)`` indexes)."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        (f"status = {mark}", status),
        (f"name = {mark}", name),
        (f"updated_at >= {mark}", check_time("since", since)),
        (f"updated_at < {mark}", check_time("until", until)),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    return where, params


def count_query(
    mark: str,
    *,
    status: str | None,
    name: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of ``count``: one ``COUNT(*)`` over an index range."""
    where, params = filters(mark, status=status, name=name, since=since, until=until)
    query = "SELECT COUNT(*) FROM flows"
    if where:
        query += " WHERE " + " AND ".join(where)
    return query, params


def in_range(updated_at: float, since: float | None, until: float | None) -> bool:
    """Whether *updated_at* passes ``since <= updated_at < until`` (``MemoryStore``)."""
    return (since is None or updated_at >= since) and (until is None or updated_at < until)


def check_time(what: str, moment: Any) -> float | None:
    """``list_flows``'s *since* / *until* checked: ``None`` or a finite number."""
    if moment is None:
        return None
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise InvalidTypeError(f"list_flows {what}", moment, "is not a time (seconds)")
    if not math.isfinite(moment):
        raise InvalidValueError(f"list_flows {what}", moment, "is not a finite time")
    return float(moment)


def check_before(before: Any) -> Before:
    """``list_flows``'s *before* checked: ``None``, a finite number, or a pair
    ``(number, id)``; else ``InvalidTypeError`` / ``InvalidValueError`` naming it."""
    if before is None:
        return None
    moment = before[0] if isinstance(before, tuple) and len(before) == 2 else before
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise InvalidTypeError(
            "list_flows before", before, "is not an updated_at nor an (updated_at, id) pair"
        )
    if not math.isfinite(moment):
        raise InvalidValueError("list_flows before", before, "is not a finite time")
    if moment is before:
        return float(moment)
    if not isinstance(before[1], str):
        raise InvalidTypeError("list_flows before", before, "has an id that is not a str")
    return (float(moment), before[1])


def check_prune(finished_before: Any, status: str | None) -> float | None:
    """``prune``'s *finished_before* and *status* checked: a finite time or ``None``;
    a finished status or ``None`` (an unfinished one is an ``InvalidValueError``,
    nothing deleted)."""
    if status is not None and status not in FINISHED:
        finished = ", ".join(sorted(s.value for s in FINISHED))
        raise InvalidValueError("prune status", status, f"is not a finished status ({finished})")
    return check_time("finished_before", finished_before)


def check_prune_limit(limit: Any) -> int | None:
    """``prune``'s *limit* checked: ``None`` (no bound) or an int of 1 or more."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidTypeError("prune limit", limit, "is not an int; give an int of 1 or more")
    if limit < 1:
        raise InvalidValueError("prune limit", limit, "must be an int of 1 or more")
    return limit
