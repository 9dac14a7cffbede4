"""A caught step failure takes the same branch on replay as on the first run.

Replay re-raises an instance of the recorded class whenever that class is there
without importing anything (a builtin, or a class of a module already imported),
rebuilt without calling ``__init__`` when that is what it takes; any other class
becomes ``StepFailedError``, with a warning (``tests/test_import_rule.py``).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    CorruptRecordError,
    ErrorInfo,
    FlowContext,
    SerializationError,
    Step,
    StepFailedError,
    Suspend,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.interpreter import rebuild_exception
from crux_gen.records import FAILED, StoredRecord


class PaymentDeclined(Exception):
    """A third-party style error: keyword-only constructor, message built from fields."""

    def __init__(self, *, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class TwoArgs(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


class NoisyInit(Exception):
    """Counts constructor calls: a replay must not run user code to rebuild it."""

    made = 0

    def __init__(self, message: str) -> None:
        NoisyInit.made += 1
        super().__init__(message)


def raise_key_error() -> Any:
    return {}["missing"]


def raise_json_error() -> Any:
    return json.loads("{not json")


def raise_called_process_error() -> Any:
    raise subprocess.CalledProcessError(2, ["git", "push"], output="out", stderr="denied")


def raise_payment_declined() -> Any:
    raise PaymentDeclined(code=402, reason="card declined")


def raise_two_args() -> Any:
    raise TwoArgs(402, "payment required")


def raise_file_not_found() -> Any:
    with open("/nonexistent/crux-gen/file.txt"):
        pass


def raise_serialization_error() -> Any:
    raise SerializationError("the result of step 'x'", object(), "it is not JSON")


RAISERS: list[tuple[Callable[[], Any], type[BaseException]]] = [
    (raise_key_error, KeyError),
    (raise_json_error, json.JSONDecodeError),
    (raise_called_process_error, subprocess.CalledProcessError),
    (raise_payment_declined, PaymentDeclined),
    (raise_two_args, TwoArgs),
    (raise_file_not_found, FileNotFoundError),
    (raise_serialization_error, SerializationError),
]


def catching_flow(name: str, fn: Callable[[], Any], kind: type[BaseException]) -> Any:
    """A flow that catches *kind* from its step, records what it caught, then parks."""
    seen: list[BaseException] = []
    calls: list[str] = []

    def step() -> Any:
        calls.append("step")
        return fn()

    @flow(name)
    def body(ctx: FlowContext) -> Any:
        try:
            yield Step("call", step)
            branch = "no error"
        except kind as exc:  # the branch a replay must take again
            seen.append(exc)
            branch = "caught"
        except Exception as exc:
            seen.append(exc)
            branch = "other"
        yield Suspend("go")
        return branch

    return body, seen, calls


@pytest.mark.parametrize(("fn", "kind"), RAISERS, ids=[k.__name__ for _, k in RAISERS])
def test_a_caught_step_failure_takes_the_same_branch_on_replay(
    store: Any, fn: Callable[[], Any], kind: type[BaseException]
) -> None:
    body, seen, calls = catching_flow(f"catch-{kind.__name__}", fn, kind)
    r = body.run(store=store)
    assert r.status == "suspended"
    signal_flow(r.flow_id, "go", None, store=store)
    done = resume(r.flow_id, store=store)
    assert (done.status, done.value) == ("completed", "caught")
    assert calls == ["step"]  # the replay re-raised it without calling the step
    first, replayed = seen
    assert type(replayed) is type(first)
    assert str(replayed) == str(first)
    assert replayed.args == first.args


def test_attributes_of_a_replayed_error_are_restored(store: Any) -> None:
    errors = [
        (raise_json_error, json.JSONDecodeError, ("msg", "doc", "pos", "lineno", "colno")),
        (raise_called_process_error, subprocess.CalledProcessError, ("returncode", "cmd")),
        (raise_payment_declined, PaymentDeclined, ("code", "reason")),
        (raise_file_not_found, FileNotFoundError, ("errno", "strerror", "filename")),
        (raise_serialization_error, SerializationError, ("what", "reason")),
    ]
    for fn, kind, names in errors:
        body, seen, _ = catching_flow(f"attrs-{kind.__name__}", fn, kind)
        r = body.run(store=store)
        signal_flow(r.flow_id, "go", None, store=store)
        resume(r.flow_id, store=store)
        first, replayed = seen
        for name in names:
            assert getattr(replayed, name) == getattr(first, name), (kind, name)


def test_an_attribute_that_is_not_json_comes_back_as_none(store: Any) -> None:
    def fn() -> Any:
        raise subprocess.CalledProcessError(1, ["ls"], output=b"\xff raw bytes")

    body, seen, _ = catching_flow("bytes-attribute", fn, subprocess.CalledProcessError)
    r = body.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).value == "caught"
    first, replayed = seen
    assert first.output == b"\xff raw bytes"  # type: ignore[attr-defined]
    assert replayed.output is None  # type: ignore[attr-defined]
    assert replayed.returncode == 1  # type: ignore[attr-defined]


def test_a_replay_does_not_call_the_error_classs_constructor(store: Any) -> None:
    def fn() -> Any:
        raise NoisyInit("boom")

    body, seen, _ = catching_flow("noisy-init", fn, NoisyInit)
    NoisyInit.made = 0
    r = body.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).value == "caught"
    assert NoisyInit.made == 1
    assert str(seen[1]) == "boom"


@pytest.fixture
def error_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module defining ``LateError``, on the import path, by a unique name."""
    name = f"crux_late_errors_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            class LateError(Exception):
                def __init__(self, *, item):
                    self.item = item
                    super().__init__(f"no {item}")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


def late_flow(name: str, module: str) -> Any:
    return raising_flow(name, lambda: importlib.import_module(module).LateError(item="stock"))


def raising_flow(name: str, error: Callable[[], BaseException]) -> Any:
    """A flow whose step raises *error()*; the flow catches it (kept in the list it
    returns with the flow), then waits for the signal "go"."""
    seen: list[BaseException] = []

    def step() -> Any:
        raise error()

    @flow(name)
    def body(ctx: FlowContext) -> Any:
        try:
            yield Step("call", step)
        except Exception as exc:
            seen.append(exc)
        yield Suspend("go")
        return "done"

    return body, seen


def test_a_recorded_class_whose_module_is_already_imported_is_rebuilt(
    store: Any, error_module: str
) -> None:
    body, seen = late_flow("late-import", error_module)
    r = body.run(store=store)  # the step imported the module: it is in sys.modules
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).status == "completed"
    replayed = seen[1]
    assert type(replayed) is sys.modules[error_module].LateError
    assert (str(replayed), replayed.item) == ("no stock", "stock")  # type: ignore[attr-defined]


def test_a_recorded_class_whose_module_is_not_imported_is_step_failed_error_and_not_imported(
    store: Any, error_module: str
) -> None:
    body, seen = late_flow("late-not-imported", error_module)
    r = body.run(store=store)
    del sys.modules[error_module]  # as in a fresh worker process that never imported it
    signal_flow(r.flow_id, "go", None, store=store)
    with pytest.warns(UserWarning, match=f"{error_module}.LateError"):
        assert resume(r.flow_id, store=store).status == "completed"
    assert error_module not in sys.modules  # a record never imports a module
    replayed = seen[1]
    assert isinstance(replayed, StepFailedError)
    assert (replayed.type, replayed.message) == (f"{error_module}.LateError", "no stock")


def test_a_recorded_class_that_cannot_be_imported_is_step_failed_error_with_a_warning(
    store: Any, error_module: str, tmp_path: Path
) -> None:
    body, seen = late_flow("gone-module", error_module)
    r = body.run(store=store)
    del sys.modules[error_module]
    (tmp_path / f"{error_module}.py").unlink()  # the code that defined it is gone
    importlib.invalidate_caches()
    signal_flow(r.flow_id, "go", None, store=store)
    with pytest.warns(UserWarning, match=f"{error_module}.LateError"):
        assert resume(r.flow_id, store=store).status == "completed"
    replayed = seen[1]
    assert isinstance(replayed, StepFailedError)
    assert replayed.type == f"{error_module}.LateError"
    assert replayed.message == "no stock"
    assert "LateError" in replayed.traceback


def failed_record(info: ErrorInfo | str) -> StoredRecord:
    text = info if isinstance(info, str) else info.encode()
    return StoredRecord(0, "step", "charge", FAILED, error=text, attempts=1)


@pytest.mark.parametrize(
    "type_name",
    [
        "builtins.int",  # a class, not an exception
        "os.system",  # a function
        "subprocess.Popen",  # a class that does things when built
        "builtins.KeyboardInterrupt",  # not an Exception: would escape the flow
        "no_such_module_crux.Error",
        "",
        ".relative.Error",
        "builtins",
    ],
)
def test_a_record_naming_anything_but_an_importable_exception_class_is_step_failed_error(
    type_name: str,
) -> None:
    with pytest.warns(UserWarning):
        exc = rebuild_exception(failed_record(ErrorInfo(type_name, "bad", "tb")))
    assert isinstance(exc, StepFailedError)
    assert (exc.type, exc.message, exc.traceback) == (type_name, "bad", "tb")


def test_an_error_record_written_before_args_were_recorded_still_replays() -> None:
    old = '{"type":"builtins.ValueError","message":"bad","traceback":""}'
    exc = rebuild_exception(failed_record(old))
    assert type(exc) is ValueError
    assert exc.args == ("bad",)
    old_key = '{"type":"builtins.KeyError","message":"\'k\'","traceback":""}'
    assert type(rebuild_exception(failed_record(old_key))) is KeyError


def test_an_error_info_round_trips_its_args_and_attributes() -> None:
    try:
        raise_payment_declined()
    except PaymentDeclined as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.args == ("402: card declined",)
    assert info.attributes == {"code": 402, "reason": "card declined"}
    assert ErrorInfo.decode(info.encode()) == info


def test_an_error_whose_message_holds_a_lone_surrogate_is_still_stored(store: Any) -> None:
    seen: list[BaseException] = []

    def step() -> Any:
        raise ValueError("bad name \udcff")

    @flow("surrogate-error")
    def body(ctx: FlowContext) -> Any:
        try:
            yield Step("call", step)
        except ValueError as exc:
            seen.append(exc)
        yield Suspend("go")

    r = body.run(store=store)
    assert r.status == "suspended"
    info = get_flow(r.flow_id, store=store).history[0].error
    assert info is not None and info.type == "builtins.ValueError"
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).status == "completed"
    assert type(seen[1]) is ValueError


@pytest.mark.parametrize("text", ["[]", '"x"', "{not json", '{"type": 3, "message": "m"}', "7"])
def test_a_corrupt_error_record_is_a_corrupt_record_error(text: str) -> None:
    with pytest.raises(CorruptRecordError) as caught:
        ErrorInfo.decode(text, flow_id="f-1", position=4)
    assert (caught.value.flow_id, caught.value.position, caught.value.column) == ("f-1", 4, "error")
