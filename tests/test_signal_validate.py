"""``signal_flow(..., validate=True)`` on every store: the payload checked against
the schema of the ``Suspend`` the flow is parked on, found by the name its waiting
record keeps and never by an import (also in a process that never imported the
schema's module: ``sys.modules`` unchanged); what is not checked, and why."""

from __future__ import annotations

import importlib.abc
import json
import logging
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from crux_gen import (
    Any as AnyOf,
)
from crux_gen import (
    CruxError,
    FlowClosedError,
    FlowContext,
    FlowNotFoundError,
    SignalValidationError,
    Sleep,
    Suspend,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.effects import View
from crux_gen.handlers import await_signal
from crux_gen.interpreter import AwaitSignal
from crux_gen.schemas import noted_schema, schema_class, schema_note


@attrs.frozen
class Approval:
    by: str
    amount: int


@flow("sv-approve")
def approve(ctx: FlowContext) -> Any:
    early = yield Suspend("ready")
    decision = yield Suspend("approved", schema=Approval, timeout="1h")
    return {"early": early, "by": decision.by, "amount": decision.amount}


def parked_on_approved(store: Any, flow_id: str) -> None:
    assert approve.run(store=store, flow_id=flow_id).status == "suspended"
    assert signal_flow(flow_id, "ready", 1, store=store, validate=True)
    r = resume(flow_id, store=store)
    assert (r.status, r.waiting_for) == ("suspended", "approved")


def test_a_payload_that_does_not_fit_is_refused_and_nothing_is_stored(store: Any) -> None:
    parked_on_approved(store, "sv-1")
    before = get_flow("sv-1", store=store)
    with pytest.raises(SignalValidationError) as caught:
        signal_flow("sv-1", "approved", {"by": "ada", "amount": "lots"}, store=store, validate=True)
    error = caught.value
    assert isinstance(error, CruxError) and isinstance(error, ValueError)
    assert (error.flow_id, error.signal, error.schema) == ("sv-1", "approved", Approval)
    assert "amount" in error.reason and "nothing was stored" in str(error)
    with pytest.raises(SignalValidationError, match="by"):
        signal_flow("sv-1", "approved", {"amount": 3}, store=store, validate=True, key="k1")
    after = get_flow("sv-1", store=store)
    assert after.signals == before.signals  # the "ready" signal only
    assert (after.status, after.waiting_for) == ("suspended", "approved")
    # the refused key was not taken: the same key with a good payload is stored
    assert signal_flow("sv-1", "approved", {"by": "ada", "amount": 3}, store=store, key="k1")
    assert resume("sv-1", store=store).value == {"early": 1, "by": "ada", "amount": 3}


def test_a_payload_that_fits_is_stored_as_without_validate(store: Any) -> None:
    parked_on_approved(store, "sv-2")
    assert signal_flow("sv-2", "approved", {"by": "bo", "amount": 5}, store=store, validate=True)
    assert resume("sv-2", store=store).value == {"early": 1, "by": "bo", "amount": 5}
    history = get_flow("sv-2", store=store).history
    assert history[1].result == {"by": "bo", "amount": 5}  # the payload, as before


def test_the_waiting_record_keeps_the_schema_name_and_shows_no_result(store: Any) -> None:
    parked_on_approved(store, "sv-3")
    record = store.load("sv-3").records[-1]
    assert (record.kind, record.state) == ("suspend", "waiting")
    assert json.loads(record.result) == {"schema": f"{__name__}.Approval"}
    assert get_flow("sv-3", store=store).history[-1].result is None


def test_what_is_not_checked_is_stored_as_today(store: Any) -> None:
    # a signal sent before the flow reaches its Suspend: kept, checked when taken
    assert approve.run(store=store, flow_id="sv-4").status == "suspended"
    assert signal_flow("sv-4", "approved", {"wrong": True}, store=store, validate=True)
    # another signal name than the wait's: not checked either
    parked_on_approved(store, "sv-5")
    assert signal_flow("sv-5", "later", "anything", store=store, validate=True)
    # a wait without a schema
    assert signal_flow("sv-4", "ready", {"x": 1}, store=store, validate=True)
    r = resume("sv-4", store=store)  # takes "ready", then rejects the early bad one
    assert (r.status, r.waiting_for) == ("suspended", "approved")
    states = [(s.name, s.state) for s in get_flow("sv-4", store=store).signals]
    assert states == [("approved", "rejected"), ("ready", "consumed")]

    # an Any with Suspend branches: not checked (its branches' schemas are not kept)
    @flow("sv-any")
    def either(ctx: FlowContext) -> Any:
        won = yield AnyOf([Suspend("approved", schema=Approval), Sleep("give-up", "1d")])
        return won.name

    assert either.run(store=store, flow_id="sv-6").status == "suspended"
    assert signal_flow("sv-6", "approved", {"by": 1}, store=store, validate=True)


def test_validate_is_a_keyword_and_refusals_of_the_flow_come_first(store: Any) -> None:
    parked_on_approved(store, "sv-7")
    assert signal_flow("sv-7", "approved", {"by": "a", "amount": 1}, store=store)
    assert resume("sv-7", store=store).status == "completed"
    with pytest.raises(FlowClosedError):
        signal_flow("sv-7", "approved", {"by": 1}, store=store, validate=True)
    with pytest.raises(FlowNotFoundError):
        signal_flow("sv-nobody", "approved", {"by": 1}, store=store, validate=True)


class _NoImports(importlib.abc.MetaPathFinder):
    """Records every import asked for while it is in place (and finds nothing)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        self.asked.append(fullname)


@pytest.fixture
def schema_module(tmp_path: Path) -> Iterator[types.ModuleType]:
    """A module defining a schema class, imported from a file, removed afterwards."""
    (tmp_path / "sv_schema_mod.py").write_text(
        "import attrs\n\n@attrs.frozen\nclass Order:\n    qty: int\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("sv_schema_mod")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sv_schema_mod", None)


def test_a_schema_whose_module_is_not_imported_is_not_imported_to_check(
    store: Any, schema_module: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    order = schema_module.Order

    @flow("sv-foreign")
    def foreign(ctx: FlowContext) -> Any:
        return (yield Suspend("order", schema=order)).qty

    assert foreign.run(store=store, flow_id="sv-8").status == "suspended"
    with pytest.raises(SignalValidationError):  # module imported: checked
        signal_flow("sv-8", "order", {"qty": "many"}, store=store, validate=True)
    del sys.modules["sv_schema_mod"]  # as in a process that never imported it
    finder = _NoImports()
    sys.meta_path.insert(0, finder)
    try:
        with caplog.at_level(logging.WARNING, logger="crux_gen"):
            assert signal_flow("sv-8", "order", {"qty": "many"}, store=store, validate=True)
    finally:
        sys.meta_path.remove(finder)
    assert "sv_schema_mod" not in sys.modules and finder.asked == []
    assert "sv_schema_mod.Order" in caplog.text and "not validated" in caplog.text
    assert [s.payload for s in get_flow("sv-8", store=store).signals] == [{"qty": "many"}]


MAKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from sv_proc_mod import Order
    from crux_gen import Suspend, flow
    from crux_gen.stores.sqlite import SQLiteStore

    @flow("sv-proc")
    def proc(ctx):
        return (yield Suspend("order", schema=Order)).qty

    print(proc.run(store=SQLiteStore(sys.argv[1]), flow_id="sv-p").status)
    """
)

SENDER = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from crux_gen import signal_flow
    from crux_gen.stores.sqlite import SQLiteStore

    store = SQLiteStore(sys.argv[1])
    store.load("sv-p")
    signal_flow("sv-p", "warm-up", 0, store=store, validate=True)
    before = set(sys.modules)
    sent = signal_flow("sv-p", "order", {"qty": "many"}, store=store, validate=True)
    print(json.dumps({"sent": sent, "new_modules": sorted(set(sys.modules) - before)}))
    """
)


def test_a_sender_process_imports_nothing_a_record_names(tmp_path: Path) -> None:
    """The flow parks in one process, with a schema of a module on its path; a
    sender that has the same path but never imported the module validates: it
    imports nothing (``sys.modules`` unchanged), stores the signal, warns."""
    (tmp_path / "sv_proc_mod.py").write_text(
        "import attrs\nprint('IMPORTED', flush=True)\n\n@attrs.frozen\nclass Order:\n    qty: int\n"
    )
    db = str(tmp_path / "v.db")
    (tmp_path / "maker.py").write_text(MAKER)
    (tmp_path / "sender.py").write_text(SENDER)
    made = subprocess.run(
        [sys.executable, str(tmp_path / "maker.py"), db, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert made.stdout.splitlines() == ["IMPORTED", "suspended"]
    sent = subprocess.run(
        [sys.executable, str(tmp_path / "sender.py"), db],
        capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert "IMPORTED" not in sent.stdout
    assert json.loads(sent.stdout) == {"sent": True, "new_modules": []}
    assert "sv_proc_mod.Order" in sent.stderr and "not validated" in sent.stderr


# -- the pure parts: the waiting record's note, and what a name finds ---------------------


def test_the_suspend_handler_notes_the_schema_and_an_expiry_clears_it() -> None:
    def none_pending(name: str) -> Iterator[Any]:
        return iter(())

    d = AwaitSignal(3, Suspend("approved", schema=Approval, timeout="1h"), None)
    record, _park = await_signal(d, View("f", 100.0, None, none_pending))
    assert record.record.result == json.dumps({"schema": f"{__name__}.Approval"})
    again = AwaitSignal(3, d.command, record.record)
    _expired, _finish = await_signal(again, View("f", 100.0 + 3600, record.record, none_pending))
    assert (_expired.record.state, _expired.record.result) == ("expired", None)
    plain = AwaitSignal(0, Suspend("approved"), None)
    assert await_signal(plain, View("f", 100.0, None, none_pending))[0].record.result is None


def test_which_schemas_get_a_name_and_what_a_name_finds() -> None:
    def local() -> type:
        @attrs.frozen
        class Inner:
            x: int

        return Inner

    assert noted_schema(schema_note(Approval)) == f"{__name__}.Approval"
    assert noted_schema(schema_note(int)) == "builtins.int"
    for unnamed in (None, Any, list[int], local(), "Approval"):
        assert schema_note(unnamed) is None, unnamed
    for bad in (None, "", "[1]", '{"schema": 3}', "not json"):
        assert noted_schema(bad) is None
    assert schema_class(f"{__name__}.Approval") == (Approval, "")
    assert schema_class("builtins.int") == (int, "")
    assert schema_class("os.path.join") == (None, "is not a class")
    assert schema_class("nowhere_at_all.Klass")[0] is None
    assert "nowhere_at_all" not in sys.modules
    assert schema_class("os.system; rm")[1] == "is not a module.qualname"


def test_a_name_never_calls_a_modules_lazy_getattr(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    lazy = types.ModuleType("sv_lazy")

    def lazy_getattr(name: str) -> Any:  # what a lazy-importing package does
        asked.append(name)
        raise AttributeError(name)

    lazy.__getattr__ = lazy_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "sv_lazy", lazy)
    assert schema_class("sv_lazy.Thing")[0] is None
    assert schema_class("sv_lazy.sub.Thing")[0] is None
    assert asked == []
