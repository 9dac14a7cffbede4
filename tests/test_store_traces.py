"""The contract of trace contexts on every store (issue 22): ``StoredFlow.trace`` and
``StoredSignal.trace``, given to ``start``, ``enqueue``, ``add_signal`` and a
write's ``NewChild``, kept as given (``NULL`` when none), copied by ``put_flow``
and so by ``crux-gen migrate``.

Part of the contract suite (``tests/test_store_contract.py``): each test runs on
``memory``, ``sqlite`` and ``postgres`` and checks what ``load`` shows.
"""

from __future__ import annotations

from typing import Any

from crux_gen.migrate import checksum, migrate
from crux_gen.records import NewChild, NewPending, Write

from .test_store_contract import park, rec

START = '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
SIGNAL = (
    '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",'
    '"tracestate":"vendor=x"}'
)
SLICE = "00-0af7651916cd43dd8448eb211c80319c-00000000000000aa-01"  # a bare traceparent


def test_start_keeps_the_trace_it_is_given_and_a_second_start_does_not_change_it(
    store: Any,
) -> None:
    t = store.clock.time()
    assert store.start("f1", "demo", "null", "me", t, trace=START).trace == START
    assert store.load("f1").trace == START
    store.commit("f1", "me", t, park("go", "suspend"))
    assert store.start("f1", "demo", "null", "me", t + 1, trace="other").trace == START
    assert store.load("f1").trace == START
    assert store.start("f2", "demo", "null", "me", t).trace is None
    assert store.load("f2").trace is None


def test_enqueue_keeps_the_trace_of_the_start_that_created_the_flow(store: Any) -> None:
    t = store.clock.time()
    made = store.enqueue(NewPending("p1", "demo", "null", trace=START), t)
    assert made.created and made.flow.trace == START
    again = store.enqueue(NewPending("p1", "demo", "null", trace="other"), t + 1)
    assert not again.created and again.flow.trace == START
    assert store.load("p1").trace == START
    claimed = store.claim("p1", "w", t + 2)
    assert claimed.trace == START
    assert store.enqueue(NewPending("p2", "demo", "null"), t).flow.trace is None


def test_a_signal_keeps_its_trace_through_its_consumption(store: Any) -> None:
    t = store.clock.time()
    store.start("f1", "demo", "null", "me", t)
    store.commit("f1", "me", t, park("go", "suspend"))
    sent = store.add_signal("f1", "go", "1", t + 1, trace=SIGNAL)
    plain = store.add_signal("f1", "other", "2", t + 1)
    assert (sent.trace, plain.trace) == (SIGNAL, None)
    claimed = store.claim("f1", "w", t + 2)
    assert [(s.name, s.state, s.trace) for s in claimed.signals] == [
        ("go", "pending", SIGNAL),
        ("other", "pending", None),
    ]
    assert store.add_signal("f1", "go", "3", t + 2, key="k", trace=SIGNAL).trace == SIGNAL
    assert store.add_signal("f1", "go", "3", t + 2, key="k", trace="again") is None
    assert [s.trace for s in store.load("f1").signals] == [SIGNAL, None, SIGNAL]


def test_a_child_keeps_the_trace_of_the_slice_that_started_it(store: Any) -> None:
    t = store.clock.time()
    store.start("parent", "demo", "null", "me", t, trace=START)
    children = (NewChild("kid", "demo", "1", SLICE), NewChild("plain", "demo", "2"))
    store.commit("parent", "me", t, Write((rec(0, "start", kind="child"),), children=children))
    assert store.load("kid").trace == SLICE
    assert store.load("plain").trace is None
    assert store.load("parent").trace == START


def test_migrate_copies_the_traces_of_flows_and_signals(store: Any, target: Any) -> None:
    t = store.clock.time()
    store.start("f1", "demo", "null", "me", t, trace=START)
    store.commit("f1", "me", t, park("go", "suspend"))
    store.add_signal("f1", "go", "1", t, trace=SIGNAL)
    store.start("f2", "demo", "null", "me", t)
    store.commit("f2", "me", t, Write(status="completed", result="1"))
    report = migrate(store, target)
    assert report.copied == 2
    copied = target.load("f1")
    assert (copied.trace, [s.trace for s in copied.signals]) == (START, [SIGNAL])
    assert target.load("f2").trace is None
    assert checksum(copied) == checksum(store.load("f1"))  # the trace is in the checksum
