"""``signal_many`` on every store: one transaction, one answer per signal, all or
nothing (the refused signal named by its index), the batch key per signal, and
the store's ``add_signals`` under it (keys within a batch, two batches at once)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from crux_gen import (
    CruxError,
    FlowClosedError,
    FlowContext,
    FlowNotFoundError,
    InvalidTypeError,
    InvalidValueError,
    SerializationError,
    Suspend,
    flow,
    get_flow,
    observe,
    resume,
    signal_flow,
    signal_many,
)


@flow("sm-wait")
def waiter(ctx: FlowContext) -> Any:
    first = yield Suspend("go")
    second = yield Suspend("go")
    return [first, second]


def parked(store: Any, *ids: str) -> None:
    for flow_id in ids:
        assert waiter.run(store=store, flow_id=flow_id).status == "suspended"


def signals_of(store: Any, flow_id: str) -> list[tuple[str, Any, str | None]]:
    return [(s.name, s.payload, s.key) for s in get_flow(flow_id, store=store).signals]


def test_a_batch_stores_every_signal_in_order_and_the_flows_take_them(store: Any) -> None:
    parked(store, "sm-a", "sm-b")
    answers = signal_many(
        [("sm-a", "go", 1), ("sm-b", "go", {"n": 2}), ("sm-a", "go", [3])], store=store
    )
    assert answers == [True, True, True]
    assert signals_of(store, "sm-a") == [("go", 1, None), ("go", [3], None)]
    assert signals_of(store, "sm-b") == [("go", {"n": 2}, None)]
    assert resume("sm-a", store=store).value == [1, [3]]  # first in, first taken
    b = resume("sm-b", store=store)
    assert (b.status, b.waiting_for) == ("suspended", "go")
    assert signal_many([], store=store) == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (("sm-nobody", "go", 1), FlowNotFoundError),
        (("sm-done", "go", 1), FlowClosedError),
    ],
)
def test_one_refused_signal_stores_nothing_of_the_batch_and_is_named(
    store: Any, bad: tuple[str, str, Any], error: type[CruxError]
) -> None:
    parked(store, "sm-a", "sm-b", "sm-done")
    assert signal_many([("sm-done", "go", 1), ("sm-done", "go", 2)], store=store) == [True, True]
    assert resume("sm-done", store=store).status == "completed"
    before = {f: signals_of(store, f) for f in ("sm-a", "sm-b", "sm-done")}
    batch = [("sm-a", "go", 1), ("sm-b", "go", 2), bad, ("sm-b", "go", 4)]
    with pytest.raises(error, match=r"^signal 2 of the batch: ") as caught:
        signal_many(batch, store=store)
    assert caught.value.item == 2  # type: ignore[attr-defined]
    assert getattr(caught.value, "flow_id", None) == bad[0]
    assert {f: signals_of(store, f) for f in before} == before  # items 0 and 1 undone
    # the flows were not woken either: a resume still waits
    assert resume("sm-a", store=store).status == "suspended"


def test_a_payload_that_cannot_be_stored_is_refused_before_the_store_is_asked(
    store: Any,
) -> None:
    parked(store, "sm-a")
    with pytest.raises(SerializationError, match=r"^signal 1 of the batch: .*'go' for flow 'sm-a'"):
        signal_many([("sm-a", "go", 1), ("sm-a", "go", object())], store=store)
    assert signals_of(store, "sm-a") == []


def test_bad_items_are_named_by_index(store: Any) -> None:
    parked(store, "sm-a")
    cases: list[tuple[Any, type[Exception], str]] = [
        ([("sm-a", "go", 1), ["sm-a", "go", 2]], InvalidTypeError, "signal 1 of the batch"),
        ([("sm-a", "go")], InvalidTypeError, "signal 0 of the batch"),
        ([("sm-a", "go", 1), (7, "go", 1)], InvalidTypeError, "signal 1 of the batch: flow id"),
        ([("sm-a", "", 1)], InvalidValueError, "signal 0 of the batch: signal name"),
        ("sm-a", InvalidTypeError, "signal_many signals"),
    ]
    for batch, error, text in cases:
        with pytest.raises(error, match=text):
            signal_many(batch, store=store)
    with pytest.raises(InvalidValueError, match="signal key"):
        signal_many([("sm-a", "go", 1)], store=store, key="")
    assert signals_of(store, "sm-a") == []


def test_a_batch_key_makes_a_second_delivery_store_nothing(store: Any) -> None:
    parked(store, "sm-a", "sm-b")
    batch = [("sm-a", "go", 1), ("sm-b", "go", 2), ("sm-a", "go", 3)]
    assert signal_many(batch, store=store, key="delivery-7") == [True, True, True]
    assert signal_many(batch, store=store, key="delivery-7") == [False, False, False]
    assert signals_of(store, "sm-a") == [("go", 1, "delivery-7:0"), ("go", 3, "delivery-7:2")]
    assert signals_of(store, "sm-b") == [("go", 2, "delivery-7:1")]
    # the key of one signal of the batch, sent alone, is the same signal
    assert signal_flow("sm-b", "go", 2, store=store, key="delivery-7:1") is False
    # a longer batch under the same key: only its new signal is stored
    longer = [*batch, ("sm-b", "go", 4)]
    assert signal_many(longer, store=store, key="delivery-7") == [False, False, False, True]
    # a retried delivery to a flow that finished since is answered quietly
    assert resume("sm-a", store=store).value == [1, 3]
    assert signal_many(batch[:1], store=store, key="delivery-7") == [False]


def test_add_signals_takes_a_key_once_within_a_batch(store: Any) -> None:
    parked(store, "sm-a")
    now = store.clock.time()
    got = store.add_signals([("sm-a", "go", "1", "k"), ("sm-a", "go", "2", "k")], now)
    assert got[1] is None and got[0] is not None
    assert (got[0].flow_id, got[0].payload, got[0].key, got[0].state) == (
        "sm-a",
        "1",
        "k",
        "pending",
    )
    assert signals_of(store, "sm-a") == [("go", 1, "k")]


def test_two_batches_at_once_over_the_same_flows_in_other_orders(store: Any) -> None:
    ids = [f"sm-c{n}" for n in range(6)]
    parked(store, *ids)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=20)

    def send(order: list[str], tag: str) -> None:
        try:
            barrier.wait()
            for round_ in range(5):
                batch = [(f, "go", f"{tag}{round_}") for f in order]
                assert signal_many(batch, store=store) == [True] * len(order)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=send, args=(ids, "x")),
        threading.Thread(target=send, args=(ids[::-1], "y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for f in ids:
        payloads = [p for _, p, _ in signals_of(store, f)]
        assert sorted(payloads) == sorted([f"x{r}" for r in range(5)] + [f"y{r}" for r in range(5)])


def test_every_signal_of_a_batch_keeps_the_trace_it_was_sent_in(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parked(store, "sm-a", "sm-b")
    traced = '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'
    monkeypatch.setattr(observe, "trace", lambda: traced)  # as an observer in place gives it
    assert signal_many([("sm-a", "go", 1), ("sm-b", "go", 2)], store=store) == [True, True]
    monkeypatch.undo()
    assert signal_many([("sm-a", "go", 3)], store=store) == [True]
    traces = [(s.payload, s.trace) for f in ("sm-a", "sm-b") for s in store.load(f).signals]
    assert sorted(traces) == [("1", traced), ("2", traced), ("3", None)]


class _OwnStore:
    """A user's own store written before ``signal_many``: every ``Store`` member
    (forwarded), no ``add_signals``, caps that declare no optional capability."""

    def __init__(self, inner: Any) -> None:
        from crux_gen.stores.caps import Caps

        self._inner = inner
        self.caps = Caps(where="OwnStore")

    def __getattr__(self, name: str) -> Any:
        if name == "add_signals":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_store_without_batches_is_still_a_store_and_signal_many_names_what_it_lacks() -> None:
    from crux_gen import Step
    from crux_gen.stores.memory import MemoryStore
    from crux_gen.worker import Worker

    inner = MemoryStore()
    own = _OwnStore(inner)
    parked(inner, "own-1")
    with pytest.raises(InvalidTypeError, match="signals=True"):
        signal_many([("own-1", "go", 1)], store=own)
    assert inner.load("own-1").signals == ()  # nothing stored
    assert signal_flow("own-1", "go", 1, store=own) is True  # one at a time still works

    @flow("sm-own-step")
    def one(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: 3))

    one.start(store=own, flow_id="own-2")
    assert Worker(own, [one]).run_once() >= 1  # a worker takes it as a store
    assert get_flow("own-2", store=inner).status == "completed"
