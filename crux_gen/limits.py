"""Global limits (``Limit``, ``Rate``): the decisions. The store holds the slots
and the rate state (``limit_slots``, ``limit_rates``) and takes and gives them
back in the claim's and the commit's transactions; this module only decides
what to ask it (``SlotAsk``) for a flow of a given name and input.

>>> openai = Limit("openai", concurrency=8, rate="500/min")
>>> per_customer = Limit("per-customer", concurrency=2, key=lambda input: input["customer"])
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, cast

import attrs

from . import codec
from .durations import Duration, to_duration
from .errors import FlowBusyError, InvalidTypeError, InvalidValueError
from .records import StoredFlow

__all__ = ["Gate", "Limit", "Rate", "SlotAsk", "asks_for", "check_limits", "fair_key", "label"]

KeyFn = Callable[[Any], str]
#: ``"N/s"``, ``"N/min"``, ``"N/h"``, ``"N/d"``.
_SHORT = re.compile(r"\s*(\d+)\s*/\s*(s|sec|m|min|h|hour|d|day)\s*")
_PER = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_MAX = 2**31 - 1


def _positive(what: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is None and attribute.name != "n":
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(what, value, f"is a {type(value).__name__}, not an int")
        if not 1 <= value <= _MAX:
            raise InvalidValueError(what, value, f"is out of range; give an int from 1 to {_MAX}")

    return check


def _per(value: Duration) -> timedelta:
    per = to_duration(value, what="Rate per")
    if per <= timedelta(0):
        raise InvalidValueError("Rate per", value, "is not longer than zero")
    return per


@attrs.frozen
class Rate:
    """A GCRA budget: *n* starts per *per*, spaced ``per/n`` apart on average,
    with up to *burst* (default *n*) at once after an idle period.

    >>> Rate(500, per="1m")          # as "500/min"
    """

    n: int = attrs.field(validator=_positive("Rate n"))
    per: timedelta = attrs.field(default=timedelta(minutes=1), converter=_per)
    burst: int | None = attrs.field(default=None, kw_only=True, validator=_positive("Rate burst"))

    @property
    def interval(self) -> float:
        """Seconds between two starts on average (GCRA's emission interval)."""
        return self.per.total_seconds() / self.n

    @property
    def size(self) -> int:
        """How many may start at once after an idle period."""
        return self.n if self.burst is None else self.burst


def to_rate(value: object) -> Rate | None:
    """*value* (``None``, a ``Rate`` or ``"N/s"``, ``"N/min"``, ``"N/h"``, ``"N/d"``)
    as a ``Rate``; anything else is an ``InvalidValueError`` / ``InvalidTypeError``."""
    if value is None or isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise InvalidTypeError(
            "Limit rate", value, 'is not a Rate or a str; give "500/min" or Rate(500, per="1m")'
        )
    match = _SHORT.fullmatch(value)
    if match is None:
        raise InvalidValueError(
            "Limit rate", value, 'is not a rate; give "N/s", "N/min", "N/h" or "N/d"'
        )
    return Rate(int(match.group(1)), per=timedelta(seconds=_PER[match.group(2)]))


def _name(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidValueError("Limit name", value, "is not a non-empty str")


def _key(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not callable(value):
        raise InvalidTypeError(
            "Limit key",
            value,
            "is not callable; give a function of the flow's input returning a str, or None",
        )


@attrs.frozen(init=False)
class Limit:
    """A budget shared by every worker, thread and process on one store: at most
    *concurrency* holders at once and/or a *rate* of starts, per name (and per
    key value with *key*, a function of the flow's input returning a ``str``).

    On ``@flow(..., limits=[...])`` a slot is held from the claim until the flow
    parks or finishes (a waiting flow holds none); on ``Step(..., limits=[...])``
    while its function runs.
    """

    name: str = attrs.field(validator=_name)
    concurrency: int | None = attrs.field(validator=_positive("Limit concurrency"))
    rate: Rate | None
    key: KeyFn | None = attrs.field(validator=_key, eq=False)

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: Rate | str | None = None,
        key: KeyFn | None = None,
    ) -> None:
        self.__attrs_init__(name, concurrency, to_rate(rate), key)
        if self.concurrency is None and self.rate is None:
            raise InvalidValueError(
                f"Limit {name!r}", None, "has neither concurrency nor rate; give at least one"
            )

    @property
    def settings(self) -> tuple[object, ...]:
        """What two ``Limit``s of one name must agree on."""
        return (self.concurrency, self.rate, self.key is None)


@attrs.frozen
class SlotAsk:
    """What a claim asks the store for, for one limit: its *name* and *key* value
    (``""`` unkeyed), the *concurrency* (``None``: no slot) and the GCRA
    *interval* and *burst* (``None``: no rate)."""

    name: str
    key: str
    concurrency: int | None
    interval: float | None
    burst: int


@attrs.frozen
class LimitUsage:
    """One limit (and key) in use: ``crux-gen limits``. *label* as ``blocked_by``
    shows it; *held*: slots held now (under live leases); *blocked*: unfinished
    flows blocked by it."""

    label: str
    held: int
    blocked: int


def usage(
    held: Iterable[tuple[str, str, int]], blocked: Iterable[tuple[str, int]]
) -> list[LimitUsage]:
    """``LimitUsage`` rows from slots held per (name, key) and blocked flows per
    ``blocked_by``, sorted by label."""
    found: dict[str, list[int]] = {}
    for name, key, count in held:
        found.setdefault(label(name, key), [0, 0])[0] += count
    for text, count in blocked:
        found.setdefault(text, [0, 0])[1] += count
    return [LimitUsage(text, *counts) for text, counts in sorted(found.items())]


def label(name: str, key: str, *, rate: bool = False) -> str:
    """What ``blocked_by`` shows for a flow waiting for limit *name* (and *key*)."""
    text = f"{'rate' if rate else 'limit'} {name}"
    return f"{text} key {key}" if key else text


def unblocked(flow: StoredFlow) -> StoredFlow:
    """*flow* without a limit's block (``crux-gen migrate``: the target holds no
    slot, so a blocked flow arrives due); any other block is kept."""
    if flow.blocked_by is None or not flow.blocked_by.startswith(("limit ", "rate ")):
        return flow
    return attrs.evolve(flow, blocked_by=None, blocked_until=None)


#: name -> the first Limit registered under it (``check_limits``).
_KNOWN: dict[str, Limit] = {}
_KNOWN_LOCK = threading.Lock()


def _known(limit: object) -> bool:
    """*limit* is a ``Limit`` registered already (itself, not one of its name)."""
    return type(limit) is Limit and _KNOWN.get(limit.name) is limit


def check_limits(limits: Iterable[object] | None, *, what: str) -> tuple[Limit, ...]:
    """*limits* as a tuple of ``Limit``; a second ``Limit`` of a known name with
    other settings is a ``ValueError`` (``InvalidValueError``) naming both."""
    if limits is None:
        return ()
    if type(limits) in (list, tuple) and all(_known(x) for x in limits):
        return cast("tuple[Limit, ...]", tuple(limits))  # (a replayed Step's, say)
    if isinstance(limits, (str, bytes, Limit)) or not isinstance(limits, Iterable):
        raise InvalidTypeError(f"{what} limits", limits, "is not a list; give [Limit(...), ...]")
    found: list[Limit] = []
    with _KNOWN_LOCK:
        for limit in limits:
            if not isinstance(limit, Limit):
                raise InvalidTypeError(f"{what} limits", limit, "is not a Limit")
            found.append(limit)
            known = _KNOWN.setdefault(limit.name, limit)
            if known.settings != limit.settings:
                raise InvalidValueError(
                    f"{what} limit {limit.name!r}",
                    limit,
                    f"has other settings than the Limit of that name registered before ({known!r})",
                )
    return tuple(found)


def _key_value(limit: Limit, input: Any) -> str:
    if limit.key is None:
        return ""
    what = f"key of Limit {limit.name!r}"
    try:
        value = limit.key(input)
    except Exception as exc:
        raise InvalidValueError(what, input, f"could not be computed: {exc!r}") from exc
    if not isinstance(value, str):
        raise InvalidValueError(what, value, f"is a {type(value).__name__}, not a str")
    return value


def _ask(limit: Limit, key: str) -> SlotAsk:
    rate = limit.rate
    return SlotAsk(
        limit.name,
        key,
        limit.concurrency,
        None if rate is None else rate.interval,
        1 if rate is None else rate.size,
    )


def asks_for(limits: Sequence[Limit], input: Any) -> tuple[SlotAsk, ...]:
    """The store's asks for *limits* and a flow's *input* (keys computed)."""
    return tuple(_ask(limit, _key_value(limit, input)) for limit in limits)


def fair_key(asks: Sequence[SlotAsk]) -> str | None:
    """The key due flows are taken round-robin across: the first keyed limit's
    JSON ``[name, key]`` (``None``: no keyed limit)."""
    for ask in asks:
        if ask.key:
            return json.dumps([ask.name, ask.key])
    return None


class Blocked(FlowBusyError):
    """A due flow a limit held back at its claim (marked ``blocked_by``): the
    claim looks for another due flow in its place."""


#: How many times one ``claim_due`` looks again for due flows in place of blocked ones.
ROUNDS = 4

#: What a worker gives ``claim_due``: a flow's name and stored input -> its asks.
Gate = Callable[[str, str], Sequence[SlotAsk]]


def make_gate(limits_of: Callable[[str], Sequence[Limit]]) -> Gate:
    """A worker's ``Gate``: the asks of a flow of a name (*limits_of* gives its
    ``Limit``s) and stored input. A key function that fails on a stored input (a
    start checks it first) counts that flow under the key ``"?"``."""

    def gate(name: str, input: str) -> Sequence[SlotAsk]:
        limits = limits_of(name)
        if not limits:
            return ()
        try:
            return asks_for(limits, codec.decode(input))
        except Exception:
            return tuple(_ask(limit, "" if limit.key is None else "?") for limit in limits)

    return gate
