"""History segments: a derived copy of a flow's completed history in one row, so
that a resume reads a long history as one value instead of one row per record.

The ``records`` table stays the truth. When a flow parks, the store writes (in the
same transaction) the *completed prefix* of its history — records ``0 … n-1``, all
``completed`` or ``failed``, which never change again — as one segment row:

- ``count``: *n*;
- ``meta``: one JSON array ``[positions, kinds, names, states, errors, nulls]``,
  each a list over the *n* records but ``nulls``: the positions whose result is
  missing;
- ``results``: the result texts as they are stored, joined by ``SEPARATOR`` (a
  control character, which JSON text never holds raw) with ``null`` for a missing
  one; never parsed by the store, only split;
- ``checksum``: :func:`checksum` of the two texts, so that a segment changed by
  anything but its writer is not believed.

A claim reads the segment and the records from position ``n - 1`` on: record
``n - 1`` must equal the segment's last entry, and anything that does not add up
(no such row, a wrong checksum, a parse error, lists of the wrong length or type,
positions out of order) makes the store read the records rows instead
(:func:`history`). Operations
that drop records (``retry_failed``, ``delete``, ``prune``) drop the segments they
outdate in the same transaction; ``put_flow`` drops any left under its id.
"""

from __future__ import annotations

import json
import zlib
from functools import partial
from itertools import islice, repeat
from typing import Any

from crux_gen.records import COMPLETED, FAILED, StoredRecord

#: No segment for a shorter completed history: its rows load fast enough.
SEGMENT_MIN = 64
#: States a segment holds: the records a claim returns without timings or attempts.
SEGMENT_STATES = frozenset({COMPLETED, FAILED})
#: Between two result texts in ``results`` (ASCII's record separator).
SEPARATOR = "\x1e"
_STR = {str}
_STR_OR_NONE = {str, type(None)}
_new_record = partial(tuple.__new__, StoredRecord)


def rebuild_due(covered: int, prefix: int) -> bool:
    """Whether a park should rewrite the segment: the completed prefix (*prefix*
    records) holds at least ``SEGMENT_MIN`` records and has grown by an eighth of
    what the segment covers (*covered*), so the rows a claim reads past the segment
    stay few while a flow that parks often does not rewrite its segment each time."""
    return prefix >= SEGMENT_MIN and prefix - covered >= max(1, covered // 8)


def checksum(meta: str, results: str) -> int:
    """CRC-32 of the segment's two texts (UTF-8), as its ``checksum`` column holds it."""
    crc = zlib.crc32(meta.encode("utf-8", "surrogatepass"))
    return zlib.crc32(results.encode("utf-8", "surrogatepass"), crc)


def build(records: list[StoredRecord] | tuple[StoredRecord, ...]) -> tuple[int, str, str]:
    """``(count, meta, results)`` of a segment of *records* (a completed prefix,
    positions ``0 … n-1``), as the SQL stores build it in SQL (tests compare them)."""
    meta = [
        [r.position for r in records],
        [r.kind for r in records],
        [r.name for r in records],
        [r.state for r in records],
        [r.error for r in records],
        [r.position for r in records if r.result is None],
    ]
    results = SEPARATOR.join("null" if r.result is None else r.result for r in records)
    return len(records), json.dumps(meta, separators=(",", ":"), ensure_ascii=False), results


def history(
    count: Any, meta: Any, results: Any, crc: Any, tail: list[StoredRecord]
) -> tuple[StoredRecord, ...] | None:
    """The history a claim returns from a segment and *tail* (the lean records from
    position ``count - 1`` on), or ``None`` when the segment does not add up (the
    caller then reads the records rows)."""
    try:
        return _history(count, meta, results, crc, tail)
    except (ValueError, TypeError, IndexError, KeyError, RecursionError):
        return None


def _history(
    count: Any, meta: Any, results: Any, crc: Any, tail: list[StoredRecord]
) -> tuple[StoredRecord, ...] | None:
    if type(count) is not int or count < 1 or not tail or tail[0].position != count - 1:
        return None
    if type(meta) is not str or type(results) is not str or checksum(meta, results) != crc:
        return None
    positions, kinds, names, states, errors, nulls = json.loads(meta)
    texts: list[str | None] = results.split(SEPARATOR)  # type: ignore[assignment]
    if not (
        len(positions) == len(kinds) == len(names) == len(states) == len(errors) == count
        and len(texts) == count  # a text holding the separator makes it longer
        and positions == list(range(count))
        and set(map(type, kinds)) == _STR
        and set(map(type, names)) == _STR
        and set(states) <= SEGMENT_STATES
        and set(map(type, errors)) <= _STR_OR_NONE
    ):
        return None
    for position in nulls:
        if type(position) is not int or position < 0 or texts[position] != "null":
            return None
        texts[position] = None
    rows = list(
        map(
            _new_record,
            zip(
                positions, kinds, names, states, texts, errors,
                repeat(0), repeat(None), repeat(None), repeat(None), repeat(None),
            ),
        )
    )  # fmt: skip
    if rows[-1] != tail[0]:  # the row the segment ends with is not what it says
        return None
    rows.extend(islice(tail, 1, None))
    return tuple(rows)
