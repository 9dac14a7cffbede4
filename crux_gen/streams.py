"""Reading what flows publish, from anywhere: ``get_event`` and ``read_stream``;
and ``write_stream``, a step function's own stream write.

A flow body publishes with ``ctx.set_event`` / ``ctx.write_stream`` /
``ctx.close_stream`` (``publishing.py``): stored with the flow's next write. A
step function writes with :func:`write_stream` at once, in a transaction of its
own (at least once: a retried attempt writes again; a failed attempt's writes are
kept).

A reader that waits (``get_event`` with a timeout, ``read_stream``) on a store
with ``Caps.stream_wakeups`` (PostgreSQL) is woken when the flow publishes, or
ends having published anything: the store's transaction sends a ``NOTIFY`` on a
channel of its own (not the workers' wake-up), and one listening connection per
store and process wakes the readers of that flow (``stores/postgres_notify.py``).
It registers before it reads again, so a value stored between its read and its
wait is not missed, and polls every ``store.reader_poll`` seconds (1 s) as a
fallback. On other stores (SQLite, memory) it polls every ``POLL`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, cast

from . import codec
from .errors import CruxError, FlowNotFoundError, InvalidTypeError, InvalidValueError
from .flow import check_flow_id
from .names import check_name
from .opening import StorePath, using
from .status import FINISHED
from .stepinfo import _RUNNING
from .stores.base import Store
from .stores.base_streams import Streams
from .stores.caps import FlowWatch, StreamWakeups, caps_of

__all__ = ["get_event", "read_stream", "write_stream"]

#: How often a waiting reader looks again (seconds), on a store without
#: ``Caps.stream_wakeups`` (one with them: its ``reader_poll``).
POLL = 0.02


def _streams(store: object, what: str) -> Streams:
    if not caps_of(store).streams:  # a store of a user's own, written before them
        raise InvalidTypeError(
            f"{what} store", store, "keeps no events or streams (its caps do not say streams=True)"
        )
    return cast(Streams, store)


class _Waiting:
    """How a reader of one flow waits for news: sleeps of ``POLL`` seconds, or on a
    store with ``Caps.stream_wakeups`` a ``FlowWatch`` made at the first wait
    (which returns at once: the reader reads again once watching, so a value
    stored between its first read and the watch is not missed)."""

    def __init__(self, store: object, flow_id: str) -> None:
        self._flow_id = flow_id
        self._wakeups = cast(StreamWakeups, store) if caps_of(store).stream_wakeups else None
        self._watch: FlowWatch | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Waiting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def wait(self, seconds: float) -> None:
        """Wait up to *seconds* (``math.inf``: no limit) for news of the flow."""
        if self._wakeups is None:
            time.sleep(min(POLL, seconds))
        elif self._watch is None:
            self._watch = self._stack.enter_context(self._wakeups.watch_flow(self._flow_id))
        else:
            self._watch.wait(min(self._wakeups.reader_poll, seconds))


def _timeout(timeout: object, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidTypeError(f"{what} timeout", timeout, "is not a number of seconds or None")
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidValueError(f"{what} timeout", timeout, "must be a finite number >= 0")
    return float(timeout)


def get_event(
    flow_id: str, key: str, *, store: Store | StorePath, timeout: float | None = None
) -> Any:
    """The value flow *flow_id* last set as its event *key* (``ctx.set_event``),
    or ``None`` when it has set none. With *timeout* (seconds), wait that long for
    it to be set (not past the flow's end: a finished flow sets no more events).

    >>> get_event(flow_id, "progress", store=store, timeout=5)
    {'done': 3, 'of': 10}

    ``FlowNotFoundError`` for an unknown flow.
    """
    check_flow_id(flow_id)
    check_name(key, what="event key")
    wait = _timeout(timeout, "get_event")
    give_up = time.monotonic() + (wait or 0.0)
    with using(store) as opened, _Waiting(opened, flow_id) as waiting:
        streams = _streams(opened, "get_event")
        while True:
            value, status = streams.read_event(flow_id, key)
            if status is None:
                raise FlowNotFoundError(flow_id)
            if value is not None:
                return codec.decode(value)
            if status in FINISHED or time.monotonic() >= give_up:
                return None
            waiting.wait(max(0.0, give_up - time.monotonic()))


def read_stream(
    flow_id: str, key: str, *, store: Store | StorePath, timeout: float | None = None
) -> Iterator[Any]:
    """Iterate the values of flow *flow_id*'s stream *key* from the first, in order,
    as they land; stop at ``ctx.close_stream(key)``, at the flow's end (once every
    value written before it was given), or when no new value came for *timeout*
    seconds (``None``: no such limit).

    >>> for token in read_stream(flow_id, "tokens", store=store, timeout=30):
    ...     print(token, end="")

    ``FlowNotFoundError`` (at the first ``next``) for an unknown flow.
    """
    check_flow_id(flow_id)
    check_name(key, what="stream key")
    wait = _timeout(timeout, "read_stream")
    return _read(flow_id, key, store, wait)


def _read(flow_id: str, key: str, store: Store | StorePath, wait: float | None) -> Iterator[Any]:
    with using(store) as opened, _Waiting(opened, flow_id) as waiting:
        streams = _streams(opened, "read_stream")
        after, last = 0, time.monotonic()
        while True:
            rows, status = streams.read_stream_after(flow_id, key, after)
            if status is None:
                raise FlowNotFoundError(flow_id)
            for row in rows:
                after = row.seq
                if row.value is None:
                    return
                yield codec.decode(row.value)
            if rows:
                last = time.monotonic()
            if status in FINISHED:
                return  # (read after its status: nothing more comes)
            if not rows:
                left = math.inf if wait is None else last + wait - time.monotonic()
                if left <= 0:
                    return
                waiting.wait(left)


def write_stream(key: str, value: Any) -> None:
    """Add *value* (JSON) to the stream *key* of the flow whose step function calls
    it, stored at once (at least once: a retried attempt writes again).

    >>> for token in llm.stream(prompt):
    ...     write_stream("tokens", token)

    ``CruxError`` outside a step function (a flow body writes ``ctx.write_stream``).
    """
    running = _RUNNING.get()
    if running is None:
        raise CruxError(
            "write_stream called outside a step function; in a flow body use "
            "ctx.write_stream(key, value)"
        )
    run, _call = running
    check_name(key, what="stream key")
    text = codec.encode(value, what=f"stream {key!r} of flow {run.flow_id!r}")
    streams = _streams(run.ctx._published.store, "write_stream")
    streams.append_stream(run.flow_id, key, text, run.clock.time())


def published(store: object, flow_id: str) -> dict[str, list[dict[str, Any]]]:
    """*flow_id*'s events and streams as ``crux-gen show --json`` and the dashboard
    show them: ``{"events": [{"key", "value", "set_at"}], "streams": [{"key",
    "values", "closed"}]}`` (by key; ``values`` every value stored, in order, also
    any after the close; a value that is no JSON as its stored text). Empty lists
    for a store without ``Caps.streams``."""
    if not caps_of(store).streams:
        return {"events": [], "streams": []}
    streams = cast(Streams, store)
    events = [
        {"key": e.key, "value": _loose(e.value), "set_at": _iso(e.set_at)}
        for e in streams.flow_events(flow_id)
    ]
    by_key: dict[str, dict[str, Any]] = {}
    for row in streams.flow_streams(flow_id):
        entry = by_key.setdefault(row.key, {"key": row.key, "values": [], "closed": False})
        if row.value is None:
            entry["closed"] = True
        else:
            entry["values"].append(_loose(row.value))
    return {"events": events, "streams": list(by_key.values())}


def _loose(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()
