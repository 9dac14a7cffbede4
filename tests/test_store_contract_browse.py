"""The contract suite's part for the dashboard's queries (``StoreAdmin.browse_flows``
and ``StoreAdmin.error_groups``): every store (memory, SQLite, PostgreSQL, the
``store`` fixture of ``tests/conftest.py``) answers alike, through the protocol only."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from crux_gen.clock import FakeClock
from crux_gen.errors import InvalidTypeError, InvalidValueError
from crux_gen.records import NewChild, Write
from crux_gen.stores.browse import UNREADABLE, ErrorGroup


def error(kind: str, message: str, traceback: str = "") -> str:
    return json.dumps({"type": kind, "message": message, "traceback": traceback})


def failed(store: Any, flow_id: str, t: float, text: str) -> None:
    store.start(flow_id, "demo", "null", "me", t)
    store.commit(flow_id, "me", t, Write(status="failed", error=text))


def ids(rows: list[Any]) -> list[str]:
    return [r.id for r in rows]


def test_browse_flows_filters_by_id_prefix_time_and_top_level(store: Any, clock: FakeClock) -> None:
    assert store.caps.browses  # what the dashboard reads before it asks for these
    t = clock.time()
    store.start("order-1", "order", "null", "me", t + 1)
    store.commit("order-1", "me", t + 2, Write(children=(NewChild("order-1-pay", "pay", "null"),)))
    store.start("order-2", "order", "null", "me", t + 3)
    store.start("other-9", "order", "null", "me", t + 4)
    store.start("order%_", "order", "null", "me", t + 5)  # LIKE's wildcards are plain text
    everything = ids(store.browse_flows())
    assert everything == ids(store.list_flows())
    assert set(everything) == {"order-1", "order-1-pay", "order-2", "other-9", "order%_"}
    # order-1 and its child were written at one instant: the id breaks the tie
    assert ids(store.browse_flows(id_prefix="order-")) == ["order-2", "order-1-pay", "order-1"]
    assert ids(store.browse_flows(id_prefix="order%")) == ["order%_"]
    assert ids(store.browse_flows(id_prefix="order-1")) == ["order-1-pay", "order-1"]
    assert ids(store.browse_flows(id_prefix="nothing")) == []
    assert ids(store.browse_flows(since=t + 3)) == ["order%_", "other-9", "order-2"]
    assert ids(store.browse_flows(until=t + 3)) == ["order-1-pay", "order-1"]
    assert ids(store.browse_flows(since=t + 3, until=t + 5)) == ["other-9", "order-2"]
    top = ids(store.browse_flows(top_level=True))
    assert top == ["order%_", "other-9", "order-2", "order-1"]
    child = store.browse_flows(id_prefix="order-1-")[0]
    assert child.parent_id == "order-1"
    assert child == attrs.evolve(store.load("order-1-pay"), records=(), signals=())
    assert ids(store.browse_flows(top_level=True, id_prefix="order-1", name="order")) == ["order-1"]
    assert ids(store.browse_flows(status="suspended")) == []


def test_browse_flows_pages_by_keyset_with_its_filters(store: Any, clock: FakeClock) -> None:
    t = clock.time()
    for n in range(7):
        store.start(f"f{n}", "demo", "null", "me", t)  # one instant: the id breaks ties
    pages, before = [], None
    while True:
        page = store.browse_flows(limit=3, before=before, id_prefix="f")
        if not page:
            break
        pages.append(ids(page))
        before = (page[-1].updated_at, page[-1].id)
    assert pages == [["f6", "f5", "f4"], ["f3", "f2", "f1"], ["f0"]]


def test_browse_flows_by_error_takes_failed_flows_with_that_type_and_message(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for n in range(5):
        failed(store, f"a{n}", t + n, error("app.CardDeclined", "card declined", f"tb {n}"))
    failed(store, "b0", t + 10, error("app.CardDeclined", "card expired"))
    failed(store, "c0", t + 11, error("builtins.KeyError", "card declined"))
    store.start("run", "demo", "null", "me", t + 12)
    key = ("app.CardDeclined", "card declined")
    assert ids(store.browse_flows(error=key)) == ["a4", "a3", "a2", "a1", "a0"]
    assert ids(store.browse_flows(error=key, limit=2)) == ["a4", "a3"]
    assert ids(store.browse_flows(error=key, since=t + 1, until=t + 3)) == ["a2", "a1"]
    assert ids(store.browse_flows(error=key, status="running")) == []
    assert store.browse_flows(error=("app.CardDeclined", "card")) == []  # exact, not a part


def test_error_groups_count_failed_flows_by_type_and_message_most_first(
    store: Any, clock: FakeClock
) -> None:
    t = clock.time()
    for n in range(3):  # tracebacks differ: still one group
        failed(store, f"a{n}", t + n, error("app.CardDeclined", "card declined", f"line {n}"))
    failed(store, "b0", t + 5, error("builtins.KeyError", "'sku'"))
    failed(store, "b1", t + 7, error("builtins.KeyError", "'sku'"))
    failed(store, "c0", t + 6, "not json at all")
    store.start("run", "demo", "null", "me", t + 9)
    groups = store.error_groups()
    assert groups == [
        ErrorGroup("app.CardDeclined", "card declined", 3, t + 2),
        ErrorGroup("builtins.KeyError", "'sku'", 2, t + 7),
        ErrorGroup(UNREADABLE, "", 1, t + 6),
    ]
    assert store.error_groups(limit=1) == groups[:1]
    assert ids(store.browse_flows(error=(UNREADABLE, ""))) == ["c0"]
    store.retry_failed("b1", t + 20)  # retried: no longer failed
    assert [g.count for g in store.error_groups()] == [3, 1, 1]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.browse_flows(status="asleep"), InvalidValueError),
        (lambda s: s.browse_flows(id_prefix=3), InvalidTypeError),
        (lambda s: s.browse_flows(since="yesterday"), InvalidTypeError),
        (lambda s: s.browse_flows(until=float("nan")), InvalidValueError),
        (lambda s: s.browse_flows(error="boom"), InvalidTypeError),
        (lambda s: s.browse_flows(limit=0), InvalidValueError),
        (lambda s: s.error_groups(limit="10"), InvalidTypeError),
    ],
)
def test_browse_flows_and_error_groups_refuse_bad_arguments_by_name(
    store: Any, call: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"browse_flows|error_groups"):
        call(store)
