"""fork_flow on every store: a new flow with the history before ``at`` that runs
only the commands from ``at`` again; the original untouched; a fork of a changed
body refused with nothing created; bad ``at`` and ids refused naming them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import pytest

from crux_gen import (
    All,
    Child,
    ContinueAsNew,
    FlowContext,
    FlowIdTakenError,
    FlowNotFoundError,
    FlowNotRegisteredError,
    InvalidTypeError,
    InvalidValueError,
    MemoryStore,
    NonDeterminismError,
    Step,
    Suspend,
    flow,
    fork_flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.flow import default_registry
from crux_gen.records import StoredFlow, StoredRecord, StoredSignal
from crux_gen.stores.caps import Caps
from crux_gen.worker import Worker


class Calls(Counter[str]):
    def __call__(self, name: str) -> str:
        self[name] += 1
        return f"{name}#{self[name]}"


def three_steps(calls: Calls, name: str) -> Any:
    @flow(name)
    def body(ctx: FlowContext) -> Any:
        a = yield Step("one", lambda: calls("one"))
        b = yield Step("two", lambda: calls("two"))
        c = yield Step("three", lambda: calls("three"))
        return [ctx.input, a, b, c]

    return body


def stored_records(store: Any, flow_id: str) -> tuple[Any, ...]:
    found = store.load(flow_id)
    return (found.status, found.result, found.records, found.signals)


@pytest.mark.parametrize("at", [1, "two"])
def test_a_fork_runs_only_the_steps_from_at_and_leaves_the_original(store: Any, at: Any) -> None:
    calls = Calls()
    body = three_steps(calls, "fork-three")
    done = body.run(input="in", store=store, flow_id="orig")
    assert done.value == ["in", "one#1", "two#1", "three#1"]
    before = stored_records(store, "orig")

    new_id = fork_flow("orig", at=at, store=store)
    assert new_id != "orig"
    info = get_flow(new_id, store=store)
    assert (info.name, info.status, info.input) == ("fork-three", "pending", "in")
    assert [h.name for h in info.history] == ["one"]
    assert new_id in store.due(store.clock.time(), 10)

    forked = resume(new_id, store=store, flows=[body])
    assert forked.value == ["in", "one#1", "two#2", "three#2"]  # "one" replayed, not run
    assert calls == Counter({"one": 1, "two": 2, "three": 2})
    assert stored_records(store, "orig") == before  # the original is untouched


def test_a_fork_at_zero_runs_everything_and_at_the_end_runs_nothing(store: Any) -> None:
    calls = Calls()
    body = three_steps(calls, "fork-ends")
    body.run(input=7, store=store, flow_id="ends")
    whole = fork_flow("ends", at=0, store=store, new_id="from-start")
    assert whole == "from-start"
    assert resume(whole, store=store, flows=[body]).value == [7, "one#2", "two#2", "three#2"]
    last = fork_flow("ends", at=3, store=store)
    assert resume(last, store=store, flows=[body]).value == [7, "one#1", "two#1", "three#1"]
    assert calls == Counter({"one": 2, "two": 2, "three": 2})


def test_a_fork_of_a_changed_body_raises_and_creates_nothing(store: Any) -> None:
    calls = Calls()
    three_steps(calls, "fork-changed").run(store=store, flow_id="changed")

    @flow("fork-changed")  # deployed anew: a step renamed
    def renamed(ctx: FlowContext) -> Any:
        yield Step("one", lambda: calls("one"))
        yield Step("TWO", lambda: calls("two"))
        return None

    try:
        with pytest.raises(NonDeterminismError) as caught:
            fork_flow("changed", at=2, store=store, new_id="never")
        assert caught.value.position == 1
        with pytest.raises(FlowNotFoundError):
            store.load("never")
        # Cut before the divergence, the kept history replays: the fork is made.
        assert fork_flow("changed", at=1, store=store, new_id="fine") == "fine"
        assert [r.name for r in store.load("fine").records] == ["one"]
    finally:
        default_registry._flows.pop("fork-changed", None)


def test_a_fork_keeps_the_signals_its_kept_waits_consumed(store: Any) -> None:
    calls = Calls()

    @flow("fork-signals")
    def waits(ctx: FlowContext) -> Any:
        first = yield Suspend("first")
        yield Step("work", lambda: calls("work"))
        second = yield Suspend("second")
        return [first, second]

    r = waits.run(store=store, flow_id="sig")
    signal_flow("sig", "first", {"n": 1}, store=store, key="k1")
    resume("sig", store=store, flows=[waits])
    signal_flow("sig", "second", {"n": 2}, store=store)
    assert resume(r.flow_id, store=store, flows=[waits]).value == [{"n": 1}, {"n": 2}]

    new_id = fork_flow("sig", at="second", store=store)
    copied = store.load(new_id).signals
    assert [(s.name, s.state, s.position, s.key) for s in copied] == [
        ("first", "consumed", 0, "k1")
    ]
    original = store.load("sig").signals
    assert copied[0].id not in {s.id for s in original}
    assert len(original) == 2  # the original's signals are its own still
    # The fork waits for "second" again; a retried delivery of "first" is a no-op.
    assert resume(new_id, store=store, flows=[waits]).waiting_for == "second"
    assert signal_flow(new_id, "first", {"n": 1}, store=store, key="k1") is False
    signal_flow(new_id, "second", {"n": 3}, store=store)
    assert resume(new_id, store=store, flows=[waits]).value == [{"n": 1}, {"n": 3}]
    assert calls == Counter({"work": 1})


def test_a_cut_inside_an_all_or_past_a_wait_is_refused(store: Any) -> None:
    calls = Calls()

    @flow("fork-groups")
    def grouped(ctx: FlowContext) -> Any:
        both = yield All([Step("a", lambda: calls("a")), Step("b", lambda: calls("b"))])
        got = yield Suspend("go")
        return [both, got]

    grouped.run(store=store, flow_id="grp")  # records: All 0, a 1, b 2, Suspend 3 waiting
    for at in (1, 2, "a", "b"):
        with pytest.raises(
            InvalidValueError, match=r"inside the All 'step:a\|step:b' of positions 0 to 2"
        ):
            fork_flow("grp", at=at, store=store)
    with pytest.raises(InvalidValueError, match="still waiting"):
        fork_flow("grp", at=4, store=store)
    fork = fork_flow("grp", at="go", store=store)  # after the All: it is kept
    assert resume(fork, store=store, flows=[grouped]).waiting_for == "go"
    assert calls == Counter({"a": 1, "b": 1})
    again = fork_flow("grp", at=0, store=store)
    assert resume(again, store=store, flows=[grouped]).waiting_for == "go"
    assert calls == Counter({"a": 2, "b": 2})


def test_bad_forks_are_refused_naming_what_is_wrong(store: Any) -> None:
    calls = Calls()
    body = three_steps(calls, "fork-bad")
    body.run(store=store, flow_id="bad")
    with pytest.raises(InvalidValueError, match="fork point at 4 is not a position from 0 to 3"):
        fork_flow("bad", at=4, store=store)
    with pytest.raises(InvalidValueError, match="fork point at -1"):
        fork_flow("bad", at=-1, store=store)
    with pytest.raises(InvalidValueError, match="'nope' is the name of no record"):
        fork_flow("bad", at="nope", store=store)
    with pytest.raises(InvalidTypeError, match=r"fork point at 1\.5"):
        fork_flow("bad", at=1.5, store=store)  # type: ignore[arg-type]
    with pytest.raises(FlowNotFoundError):
        fork_flow("absent", at=0, store=store)
    with pytest.raises(FlowIdTakenError, match="flow id 'bad' is taken") as caught:
        fork_flow("bad", at=1, store=store, new_id="bad")
    assert caught.value.requested_by == "bad"
    assert store.list_flows() and len(store.list_flows()) == 1  # nothing created
    default_registry._flows.pop("fork-bad")
    with pytest.raises(FlowNotRegisteredError) as unknown:
        fork_flow("bad", at=1, store=store)
    assert str(unknown.value) == (
        "no flow named 'fork-bad' is registered (needed by flow 'bad'); "
        'import the module that defines @flow("fork-bad") before forking its flows'
    )
    assert len(store.list_flows()) == 1


def test_a_kept_child_keeps_its_result_and_a_child_from_at_is_new(store: Any) -> None:
    calls = Calls()

    @flow("fork-kid")
    def kid(ctx: FlowContext) -> Any:
        return (yield Step("kid-work", lambda: calls(f"kid-{ctx.input}")))

    @flow("fork-parent")
    def parent(ctx: FlowContext) -> Any:
        first = yield Child(kid, input="a")
        second = yield Child(kid, input="b")
        return [first, second]

    done = parent.run(store=store, flow_id="parent")
    assert done.value == ["kid-a#1", "kid-b#1"]
    old_children = set(store.load("parent").children)
    fork = fork_flow("parent", at=1, store=store)
    assert resume(fork, store=store, flows=[parent, kid]).value == ["kid-a#1", "kid-b#2"]
    assert calls == Counter({"kid-a": 1, "kid-b": 2})  # the kept child did not run again
    new_children = store.load(fork).children
    assert len(new_children) == 1 and not old_children & set(new_children)
    assert store.load(fork).parent_id is None


def test_a_fork_after_continue_as_new_copies_the_current_run_only(store: Any) -> None:
    calls = Calls()

    @flow("fork-loop")
    def loop(ctx: FlowContext) -> Any:
        yield Step("tick", lambda: calls(f"tick-{ctx.input}"))
        if ctx.input < 2:
            yield ContinueAsNew(input=ctx.input + 1)
        return (yield Step("end", lambda: calls("end")))

    assert loop.run(input=0, store=store, flow_id="loop").value == "end#1"
    assert store.load("loop").run == 3
    fork = fork_flow("loop", at="end", store=store)
    found = store.load(fork)
    assert (found.run, found.input, [r.name for r in found.records]) == (1, "2", ["tick"])
    assert resume(fork, store=store, flows=[loop]).value == "end#2"
    assert calls == Counter({"tick-0": 1, "tick-1": 1, "tick-2": 1, "end": 2})


def test_a_worker_pass_runs_a_fork(store: Any) -> None:
    calls = Calls()
    body = three_steps(calls, "fork-worker")
    body.run(input=1, store=store, flow_id="w")
    fork = fork_flow("w", at="three", store=store)
    assert Worker(store=store, flows=[body]).run_once() == 1
    assert get_flow(fork, store=store).value == [1, "one#1", "two#1", "three#2"]
    assert calls == Counter({"one": 1, "two": 1, "three": 2})


class NoForks:
    """A store of a user's own that declares no ``Caps.forks``."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner
        self.caps = Caps(where="NoForks")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_store_without_caps_forks_is_refused_naming_it() -> None:
    inner = MemoryStore()
    body = three_steps(Calls(), "fork-nocaps")
    body.run(store=inner, flow_id="nc")
    with pytest.raises(InvalidTypeError, match=r"does not declare Caps\.forks"):
        fork_flow("nc", at=1, store=NoForks(inner))
    assert [f.id for f in inner.list_flows()] == ["nc"]


def test_insert_fork_gives_new_signal_ids_clears_the_lease_and_refuses_a_taken_id(
    store: Any,
) -> None:
    now = store.clock.time()
    record = StoredRecord(0, "suspend", "go", "completed", '"x"', None, 1, now, now)
    signal = StoredSignal(999, "elsewhere", "go", '"x"', "consumed", now, None, now, 0, "k")
    fork = StoredFlow(
        "forked", "fork-insert", "pending", "null", now, now, wake_at=now,
        lease_owner="someone", lease_expires=now + 60, records=(record,), signals=(signal,),
    )  # fmt: skip
    store.insert_fork(fork, source="orig")
    found = store.load("forked")
    assert (found.status, found.lease_owner, found.lease_expires) == ("pending", None, None)
    assert found.records == (record,)
    (copied,) = found.signals
    assert copied.id != 999 and copied._replace(id=999, flow_id="elsewhere") == signal
    later = store.add_signal("forked", "more", "1", now)
    assert later is not None and later.id > copied.id
    with pytest.raises(FlowIdTakenError, match="flow 'orig' was not forked"):
        store.insert_fork(attrs.evolve(fork, name="other", records=()), source="orig")
    again = store.load("forked")
    assert (again.name, again.records, len(again.signals)) == ("fork-insert", (record,), 2)
