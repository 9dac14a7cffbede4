"""Signals beyond one at a time: ``signal_many`` (a batch in one transaction) and
the check of ``signal_flow(..., validate=True)`` (the payload against the schema
of the ``Suspend`` the flow is parked on, before anything is stored)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from . import codec, observe
from .errors import CruxError, InvalidTypeError, SignalValidationError
from .flow import check_flow_id
from .names import check_name
from .opening import StorePath, using
from .records import WAITING
from .schemas import noted_schema, schema_class
from .status import Status
from .stores.base import Signals
from .stores.caps import caps_of
from .stores.rules import in_batch

if TYPE_CHECKING:
    from .stores.base import SignalAsk, Store

__all__ = ["check_payload", "signal_many"]

log = logging.getLogger("crux_gen")


def signal_many(
    signals: Iterable[tuple[str, str, Any]],
    *,
    store: Store | StorePath,
    key: str | None = None,
) -> list[bool]:
    """Record every ``(flow_id, name, payload)`` of *signals* in one transaction:
    all of them, or, when one is refused, none. One answer per signal, in order,
    as ``signal_flow`` gives it (``True``: stored).

    >>> signal_many([(a, "approved", {"by": "ada"}), (b, "approved", {"by": "ada"})], store=store)
    [True, True]

    With *key* (a batch's delivery id), signal ``i`` carries the key
    ``f"{key}:{i}"``: the same batch delivered again stores nothing and answers
    ``False`` for each signal. Raises, naming the signal's index (and with it in
    the error's ``item``), ``FlowNotFoundError``, ``FlowClosedError``, or
    ``SerializationError`` (checked for every payload before anything is
    stored), and ``InvalidTypeError`` / ``InvalidValueError`` for an item that is
    not a ``(flow_id, name, payload)`` triple of a non-empty str id and name.
    """
    if key is not None:
        check_name(key, what="signal key")
    if isinstance(signals, str | bytes | dict) or not isinstance(signals, Iterable):
        raise InvalidTypeError("signal_many signals", signals, f"is not a list of {_TRIPLES}")
    asks: list[SignalAsk] = []
    for index, item in enumerate(signals):
        try:
            asks.append(_ask(item, None if key is None else f"{key}:{index}"))
        except CruxError as exc:
            raise in_batch(exc, index) from None
    if not asks:
        return []
    trace = observe.trace()  # the request's, as signal_flow stores it
    with using(store) as opened:
        if not caps_of(opened).signals:  # a store of a user's own, written before it
            raise InvalidTypeError(
                "signal_many store", opened, "cannot store signals in one transaction "
                "(its caps do not say signals=True: it has no add_signals)",
            )  # fmt: skip
        stored = cast(Signals, opened).add_signals(asks, opened.clock.time(), trace=trace)
        return [s is not None for s in stored]


_TRIPLES = "(flow_id, name, payload) tuples"


def _ask(item: Any, key: str | None) -> SignalAsk:
    """One signal of a batch, checked and encoded, as the store takes it."""
    if not isinstance(item, tuple) or len(item) != 3:
        raise InvalidTypeError("signal", item, f"is not one of {_TRIPLES}")
    flow_id, name, payload = item
    check_flow_id(flow_id)
    check_name(name, what="signal name")
    encoded = codec.encode(payload, what=f"the payload of signal {name!r} for flow {flow_id!r}")
    return (flow_id, name, encoded, key)


def check_payload(store: Store, flow_id: str, name: str, encoded: str) -> None:
    """``SignalValidationError`` (nothing stored) when *encoded* does not fit the
    schema of the ``Suspend`` named *name* that flow *flow_id* is parked on.

    Nothing is checked when the flow is not parked on that wait (a signal may
    arrive before its ``Suspend``: it is stored, and checked when taken), when
    the wait has no schema (or one a name cannot find again), or when the class
    its record names cannot be found here without an import (a warning names it).
    """
    flow = store.load(flow_id)
    if flow.status != Status.SUSPENDED or flow.wait_kind != "suspend":
        return
    if flow.waiting_for != name:
        return
    record = next(
        (r for r in reversed(flow.records) if r.kind == "suspend" and r.state == WAITING),
        None,
    )
    schema_name = None if record is None or record.name != name else noted_schema(record.result)
    if schema_name is None:
        return
    schema, why = schema_class(schema_name)
    if schema is None:
        log.warning(
            "flow %s: signal %r not validated before storing: its schema %s %s",
            flow_id, name, schema_name, why,
        )  # fmt: skip
        return
    try:
        codec.structure(codec.decode(encoded), schema)
    except Exception as exc:
        reason = codec.structure_error_text(exc)
        error = SignalValidationError(flow_id, name, schema, reason)
        error.args = (
            f"flow {flow_id!r}: signal {name!r} does not fit schema {schema.__qualname__}: "
            f"{reason}; nothing was stored and the flow still waits",
        )
        raise error from None
