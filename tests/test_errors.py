"""Every error crux_gen raises is a ``CruxError``; a bad argument is also the builtin a
caller expects (``ValueError``, ``TypeError``) and its message names the bad value."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    CruxError,
    FakeClock,
    FlowContext,
    FlowNotRegisteredError,
    MemoryStore,
    Registry,
    Retry,
    Sleep,
    SQLiteStore,
    Step,
    Suspend,
    WaitUntil,
    cancel_flow,
    delete_flow,
    flow,
    get_flow,
    list_flows,
    resume,
    signal_flow,
    to_duration,
)
from crux_gen.testing import FlowHarness
from crux_gen.worker import Worker

REGISTRY = Registry()


@flow("errors-demo", registry=REGISTRY)
def demo(ctx: FlowContext) -> Iterator[Any]:
    yield Suspend("go")


def not_a_generator(ctx: FlowContext) -> None:
    return None


def on_store(call: Callable[[MemoryStore], Any]) -> Callable[[Path], Any]:
    return lambda tmp: call(MemoryStore())


def on_sqlite(call: Callable[[SQLiteStore], Any]) -> Callable[[Path], Any]:
    return lambda tmp: call(SQLiteStore(tmp / "crux.db", synchronous="NORMAL"))


def started(call: Callable[[MemoryStore, str], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        store = MemoryStore()
        r = demo.run(input={}, store=store)
        return call(store, r.flow_id)

    return run


# (id, the call given a temporary directory, the builtin expected, text the message shows)
BAD_CALLS: list[Any] = [
    ("retry-attempts-0", lambda tmp: Retry(attempts=0), ValueError, "0"),
    ("retry-attempts-str", lambda tmp: Retry(attempts="3"), TypeError, "'3'"),
    ("retry-backoff", lambda tmp: Retry(backoff="random"), ValueError, "'random'"),
    ("retry-delay", lambda tmp: Retry(delay="soon"), ValueError, "'soon'"),
    ("retry-on", lambda tmp: Retry(retry_on=5), TypeError, "5"),
    ("duration", lambda tmp: to_duration("1 fortnight"), ValueError, "'1 fortnight'"),
    ("duration-negative", lambda tmp: Sleep("nap", -1), ValueError, "-1"),
    ("suspend-timeout", lambda tmp: Suspend("x", timeout="soon-ish"), ValueError, "'soon-ish'"),
    ("wait-every", lambda tmp: WaitUntil("x", bool, every="often"), ValueError, "'often'"),
    ("step-fn", lambda tmp: Step("x", 5), TypeError, "5"),
    ("step-name-blank", lambda tmp: Step(" ", bool), ValueError, "' '"),
    ("step-name-int", lambda tmp: Step(7, bool), TypeError, "7"),
    ("step-retry", lambda tmp: Step("x", bool, retry=3), TypeError, "3"),
    ("flow-name-empty", lambda tmp: flow(""), ValueError, "''"),
    ("flow-name-int", lambda tmp: flow(3), TypeError, "3"),  # type: ignore[arg-type]
    (
        "flow-not-a-generator",
        lambda tmp: flow("errors-plain", registry=Registry())(not_a_generator),
        TypeError,
        "not_a_generator",
    ),
    (
        "sqlite-synchronous",
        lambda tmp: SQLiteStore(tmp / "x.db", synchronous="OFF"),
        ValueError,
        "'OFF'",
    ),
    (
        "sqlite-lease-ttl",
        lambda tmp: SQLiteStore(tmp / "x.db", lease_ttl="ages"),
        ValueError,
        "ages",
    ),
    ("memory-lease-ttl", lambda tmp: MemoryStore(lease_ttl="ages"), ValueError, "'ages'"),
    ("worker-batch-0", on_store(lambda s: Worker(s, batch=0)), ValueError, "0"),
    ("worker-batch-str", on_store(lambda s: Worker(s, batch="10")), TypeError, "'10'"),
    ("worker-store-path", lambda tmp: Worker("crux.db"), TypeError, "'crux.db'"),  # type: ignore[arg-type]
    ("worker-flows-one", on_store(lambda s: Worker(s, flows=demo)), TypeError, "errors-demo"),
    ("worker-flows-item", on_store(lambda s: Worker(s, flows=["demo"])), TypeError, "'demo'"),
    ("worker-skip-for", on_store(lambda s: Worker(s, skip_for="a while")), ValueError, "a while"),
    ("worker-poll", on_store(lambda s: Worker(s).run_forever(poll="soon")), ValueError, "'soon'"),
    ("harness-flow", lambda tmp: FlowHarness(not_a_generator), TypeError, "not_a_generator"),
    ("harness-fakes", lambda tmp: FlowHarness(demo, fakes=5), TypeError, "5"),
    ("harness-flow-id", lambda tmp: FlowHarness(demo, flow_id=5), TypeError, "5"),
    ("harness-store", lambda tmp: FlowHarness(demo, store="crux.db"), TypeError, "'crux.db'"),
    ("harness-clock", lambda tmp: FlowHarness(demo, clock="now"), TypeError, "'now'"),
    (
        "harness-clock-not-the-stores",
        lambda tmp: FlowHarness(demo, store=MemoryStore(clock=FakeClock()), clock=FakeClock()),
        ValueError,
        "FakeClock",
    ),
    (
        "harness-advance-real-clock",
        on_sqlite(lambda s: FlowHarness(demo, store=s).advance("1h")),
        TypeError,
        "SystemClock",
    ),
    ("harness-advance-soon", lambda tmp: FlowHarness(demo).advance("soon"), ValueError, "'soon'"),
    ("run-flow-id", on_store(lambda s: demo.run(store=s, flow_id=5)), TypeError, "5"),
    (
        "run-two-ids",
        on_store(lambda s: demo.run(store=s, flow_id="a", resume="b")),
        ValueError,
        "'a'",
    ),
    ("resume-id", on_store(lambda s: resume(b"7f3a", store=s)), TypeError, "b'7f3a'"),
    ("signal-id", on_store(lambda s: signal_flow(7, "go", {}, store=s)), TypeError, "7"),
    ("signal-name", started(lambda s, i: signal_flow(i, "", {}, store=s)), ValueError, "''"),
    ("signal-key", started(lambda s, i: signal_flow(i, "go", {}, store=s, key=9)), TypeError, "9"),
    ("get-id", on_store(lambda s: get_flow(None, store=s)), TypeError, "None"),
    ("cancel-id", on_store(lambda s: cancel_flow("", "why", store=s)), ValueError, "''"),
    ("delete-id", on_store(lambda s: delete_flow(1.5, store=s)), TypeError, "1.5"),
    ("list-status", on_store(lambda s: list_flows(store=s, status="done")), ValueError, "'done'"),
    ("list-limit", on_store(lambda s: list_flows(store=s, limit=0)), ValueError, "0"),
    ("list-before", on_store(lambda s: list_flows(store=s, before="now")), TypeError, "'now'"),
    (
        "list-before-naive",
        on_store(lambda s: list_flows(store=s, before=datetime(2026, 1, 1))),
        ValueError,
        "2026",
    ),
    pytest.param(
        "fake-clock-naive",
        lambda tmp: FakeClock(datetime(2026, 1, 1)),
        ValueError,
        "2026",
    ),
]


def _id(case: Any) -> str:
    return str(case.values[0] if hasattr(case, "values") else case[0])


@pytest.mark.parametrize(
    ("what", "call", "builtin", "shown"), BAD_CALLS, ids=[_id(c) for c in BAD_CALLS]
)
def test_a_bad_argument_is_a_crux_error_and_the_builtin_naming_the_value(
    what: str, call: Callable[[Path], Any], builtin: type[Exception], shown: str, tmp_path: Path
) -> None:
    with pytest.raises(Exception) as caught:
        call(tmp_path)
    exc = caught.value
    assert isinstance(exc, CruxError), f"{what}: {type(exc).__name__}: {exc}"
    assert isinstance(exc, builtin), f"{what}: {type(exc).__mro__}"
    assert shown in str(exc), f"{what}: {exc}"


def test_nothing_is_stored_by_a_call_with_a_bad_argument() -> None:
    store = MemoryStore()
    r = demo.run(input={}, store=store)
    with pytest.raises(TypeError):
        signal_flow(r.flow_id, "go", {}, store=store, key=9)  # type: ignore[arg-type]
    assert not get_flow(r.flow_id, store=store).signals
    with pytest.raises(TypeError):
        demo.run(input={}, store=store, flow_id=5)  # type: ignore[arg-type]
    assert [f.flow_id for f in list_flows(store=store)] == [r.flow_id]


def test_an_unregistered_flow_names_the_fix_for_python_callers() -> None:
    store = MemoryStore()
    r = demo.run(input={}, store=store)  # in a registry resume() does not see
    with pytest.raises(FlowNotRegisteredError) as caught:
        resume(r.flow_id, store=store)
    exc = caught.value
    assert isinstance(exc, CruxError) and isinstance(exc, LookupError)
    assert (exc.name, exc.flow_id) == ("errors-demo", r.flow_id)
    assert exc.hint == 'import the module that defines @flow("errors-demo") or pass flows=[...]'
    assert str(exc) == (
        f"no flow named 'errors-demo' is registered (needed by flow {r.flow_id!r}); "
        'import the module that defines @flow("errors-demo") or pass flows=[...]'
    )
    assert resume(r.flow_id, store=store, flows=[demo]).status == "suspended"  # the fix works


def test_an_unregistered_flow_error_carries_the_hint_of_where_it_was_raised() -> None:
    cli = FlowNotRegisteredError(
        "onboarding", "7f3a", hint="pass the module that defines it as MODULE"
    )
    assert cli.hint == "pass the module that defines it as MODULE"
    assert str(cli).endswith(
        "is registered (needed by flow '7f3a'); pass the module that defines it as MODULE"
    )
    swapped = FlowNotRegisteredError("onboarding").with_hint('define @flow("{name}") in MODULE')
    assert isinstance(swapped, FlowNotRegisteredError)
    assert swapped.hint == 'define @flow("onboarding") in MODULE'
    assert (swapped.name, swapped.flow_id) == ("onboarding", None)
    with pytest.raises(FlowNotRegisteredError, match="as MODULE"):
        REGISTRY.get("nothing-here", hint="pass the module that defines it as MODULE")


def test_error_info_lives_in_errors_and_every_old_import_of_it_still_works() -> None:
    # errors needs ErrorInfo (a ChildFlowError's .error) and codec needs errors: ErrorInfo
    # lives in errors, on the leaves jsontext and exception_data, and codec re-exports it.
    import ast
    import importlib

    import crux_gen
    import crux_gen.codec
    import crux_gen.errors

    assert crux_gen.ErrorInfo is crux_gen.codec.ErrorInfo is crux_gen.errors.ErrorInfo
    imported: dict[str, set[str]] = {}
    for name in ("errors", "jsontext", "exception_data"):
        module = importlib.import_module(f"crux_gen.{name}")
        found = imported[name] = set()
        for node in ast.walk(ast.parse(Path(str(module.__file__)).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # from . import x, from .x import y
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crux_gen"):
                found.add(str(node.module))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("crux_gen")}
    assert imported == {
        "errors": {"exception_data", "jsontext"},
        "jsontext": set(),
        "exception_data": set(),
    }
