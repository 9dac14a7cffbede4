"""How a flow is started: ``Exclusive`` and ``Debounce`` (the flow-control rules
of ``@flow(..., exclusive=..., debounce=...)``), the check of a start's
``priority``, and the keys a store keeps for them. The store applies the rules
(``Store.enqueue``); this module only decides what to ask it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from .durations import Duration, to_duration, to_optional_duration
from .errors import InvalidTypeError, InvalidValueError
from .records import CANCEL, QUEUE, SKIP

#: The priorities a start may take: every store keeps them exactly (a 32-bit int).
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
ON_CONFLICT = (QUEUE, SKIP, CANCEL)
KeyFn = Callable[[Any], str]


def check_priority(value: object) -> int:
    """*value* as a start's priority: an ``int`` (not a ``bool``) within
    ``PRIORITY_RANGE``; else ``InvalidTypeError`` / ``InvalidValueError`` naming it.

    >>> check_priority(5)
    5
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            "priority", value, f"is a {type(value).__name__}, not an int; give an int such as 5"
        )
    low, high = PRIORITY_RANGE
    if not low <= value <= high:
        raise InvalidValueError(
            "priority", value, f"is out of range; give an int from {low} to {high}"
        )
    return value


def _key_fn(what: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and not callable(value):
            raise InvalidTypeError(
                f"{what} key",
                value,
                "is not callable; give a function of the flow's input "
                "returning a str (key=lambda input: input['account']), or None",
            )

    return check


def _on_conflict(instance: Any, attribute: Any, value: Any) -> None:
    if value not in ON_CONFLICT:
        raise InvalidValueError(
            "Exclusive on_conflict", value, f"is none of {', '.join(map(repr, ON_CONFLICT))}"
        )


@attrs.frozen
class Exclusive:
    """At most one started, unfinished flow of this name per key value.

    >>> @flow("sync-account", exclusive=Exclusive(key=lambda input: input["account"]))

    *key* is a function of the flow's input returning a ``str`` (``None``: one per
    name). Starting another while one holds the key: ``"queue"`` (the default)
    creates it ``"pending"``, ``blocked_by`` the holder's id, and it starts when the
    holder finishes; ``"skip"`` creates nothing and returns the holder's handle;
    ``"cancel"`` cancels the holder (reason ``"replaced by <new id>"``) and starts
    the new one.
    """

    key: KeyFn | None = attrs.field(default=None, validator=_key_fn("Exclusive"))
    on_conflict: str = attrs.field(default=QUEUE, validator=_on_conflict)


def _period(value: Duration) -> timedelta:
    return to_duration(value, what="Debounce period")


def _max_wait(value: Duration | None) -> timedelta | None:
    return to_optional_duration(value, what="Debounce max_wait")


@attrs.frozen
class Debounce:
    """Run once after starts stop coming for *period* (trailing edge).

    >>> @flow("reindex", debounce=Debounce("30s", key=lambda input: input["doc"], max_wait="5m"))

    A start creates the flow ``"pending"``, due at now + *period*; a start while a
    flow of this name and key is still pending (not yet taken by a worker)
    replaces its input and moves it to now + *period*, never later than
    *max_wait* after the first of those starts; the same flow id is returned.
    """

    period: timedelta = attrs.field(converter=_period)
    key: KeyFn | None = attrs.field(default=None, kw_only=True, validator=_key_fn("Debounce"))
    max_wait: timedelta | None = attrs.field(
        default=None,
        kw_only=True,
        converter=_max_wait,
    )


def key_of(name: str, rule: Exclusive | Debounce, input: Any) -> str:
    """The store's key for *rule* of flow *name* and this *input*: the JSON
    ``[name, key]`` (``[name]`` without a key function). A key function that raises
    or returns anything but a ``str`` is an ``InvalidValueError`` naming it."""
    what = f"{type(rule).__name__} key of flow {name!r}"
    if rule.key is None:
        return json.dumps([name])
    try:
        value = rule.key(input)
    except Exception as exc:
        raise InvalidValueError(what, input, f"could not be computed: {exc!r}") from exc
    if not isinstance(value, str):
        raise InvalidValueError(what, value, f"is a {type(value).__name__}, not a str")
    return json.dumps([name, value])


__all__ = [
    "ON_CONFLICT",
    "PRIORITY_RANGE",
    "Debounce",
    "Exclusive",
    "check_priority",
    "key_of",
]
