"""Reading a stored record never imports a module.

A recorded step failure is rebuilt as its class only when that class is already
there without importing anything: a builtin, or a class of a module already in
``sys.modules`` (which holds every class the module of a registered flow defines
or imports). Any other record is a ``StepFailedError`` carrying the recorded type
name, message and traceback: a row naming ``unittest.__main__``, or a module that
writes a file and raises ``SystemExit`` when imported, runs nothing, through
``resume``, the worker (in this process and ``crux-gen worker``) and
``crux-gen replay``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    ErrorInfo,
    StepFailedError,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.worker import Worker
from tests.test_cli import REPO, crux, load_module

from .test_errors_replay import raising_flow

#: What importing the module a hostile record names would do.
EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
raise SystemExit(3)
"""


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on ``sys.path`` that must never be imported: ``(name, marker)``."""
    name = f"crux_evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported.marker"
    place = tmp_path / "evil"
    place.mkdir()
    (place / f"{name}.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(place))
    yield name, marker
    sys.modules.pop(name, None)


def foreign(module: str, text: str) -> Exception:
    """An exception whose class says it lives in *module* (never imported here)."""
    kind = types.new_class("Boom", (Exception,))
    kind.__module__ = module
    return kind(text)


def foreign_flow(name: str, module: str) -> tuple[Any, list[BaseException]]:
    flow_and_seen: tuple[Any, list[BaseException]] = raising_flow(
        name, lambda: foreign(module, "out of boom")
    )
    return flow_and_seen


@pytest.mark.parametrize("how", ["resume", "worker"])
def test_a_record_naming_a_module_not_imported_imports_nothing(
    store: Any, evil: tuple[str, Path], how: str
) -> None:
    module, marker = evil
    body, seen = foreign_flow(f"foreign-{how}", module)
    r = body.run(store=store)
    assert r.status == "suspended"
    assert type(seen[0]).__module__ == module  # the first run caught the real thing
    signal_flow(r.flow_id, "go", None, store=store)
    with pytest.warns(UserWarning, match=f"{module}.Boom"):
        if how == "resume":
            assert resume(r.flow_id, store=store).status == "completed"
        else:
            assert Worker(store=store, flows=[body]).run_once() == 1
    assert get_flow(r.flow_id, store=store).status == "completed"
    assert not marker.exists()
    assert module not in sys.modules
    replayed = seen[1]
    assert isinstance(replayed, StepFailedError)
    assert (replayed.type, replayed.message) == (f"{module}.Boom", "out of boom")
    assert "Boom: out of boom" in replayed.traceback


def test_a_module_already_imported_is_read_without_running_its_getattr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"crux_lazy_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "getattr.marker"
    lazy = types.ModuleType(name)

    def module_getattr(attr: str) -> Any:  # what a lazy-importing package does
        marker.write_text(attr)
        return type(attr, (Exception,), {})

    lazy.__getattr__ = module_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, name, lazy)
    with pytest.warns(UserWarning):
        exc = ErrorInfo(f"{name}.Missing", "m", "tb").rebuild("s")
    assert isinstance(exc, StepFailedError)
    assert exc.type == f"{name}.Missing"
    assert not marker.exists()


LOOSE_FLOWS = """
from crux_gen import Step, Suspend, flow


class Declined(Exception):
    def __init__(self, *, code):
        self.code = code
        super().__init__(f"declined {code}")


def charge():
    raise Declined(code=402)


@flow("loose-module")
def loose(ctx):
    try:
        yield Step("charge", charge)
        branch = "no error"
    except Declined as exc:
        branch = ["declined", exc.code]
    except Exception as exc:
        branch = ["other", type(exc).__name__]
    yield Suspend("go")
    return branch
"""


def test_a_class_the_module_of_a_registered_flow_defines_is_rebuilt_outside_sys_modules(
    store: Any, tmp_path: Path
) -> None:
    (tmp_path / "crux_loose_flows.py").write_text(LOOSE_FLOWS)
    module = load_module(tmp_path / "crux_loose_flows.py")  # run from its file only
    assert module.__name__ not in sys.modules
    r = module.loose.run(store=store)
    signal_flow(r.flow_id, "go", None, store=store)
    done = resume(r.flow_id, store=store)
    assert (done.status, done.value) == ("completed", ["declined", 402])


def test_a_record_naming_unittest_main_is_not_imported(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys, warnings
        from crux_gen import ErrorInfo
        warnings.simplefilter("ignore")
        exc = ErrorInfo("unittest.__main__.X", "m", "tb").rebuild("s")
        print(json.dumps([type(exc).__name__, exc.type, "unittest.__main__" in sys.modules]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["StepFailedError", "unittest.__main__.X", False]


# -- in fresh processes: crux-gen replay, crux-gen worker -------------------------

SHOP_ERRORS = """
class OutOfStock(Exception):
    def __init__(self, *, sku):
        self.sku = sku
        super().__init__(f"no {sku}")
"""

SHOP_FLOWS = """
import types

from crux_gen import Step, Suspend, flow
from shop_errors import OutOfStock


class CardDeclined(Exception):
    pass


def out_of_stock():
    raise OutOfStock(sku="sku-1")


def declined():
    raise CardDeclined("402")


def hostile():
    kind = types.new_class("Boom", (Exception,))
    kind.__module__ = {evil!r}  # a module no process here has imported
    raise kind("out of boom")


def name_of(exc):
    return f"{{type(exc).__module__}}.{{type(exc).__qualname__}}"


@flow("shop")
def shop(ctx):
    seen = []
    try:
        yield Step("reserve", out_of_stock)
    except OutOfStock as exc:
        seen.append(["out-of-stock", name_of(exc), exc.sku])
    except Exception as exc:
        seen.append(["other", name_of(exc), None])
    try:
        yield Step("charge", declined)
    except CardDeclined as exc:
        seen.append(["declined", name_of(exc), str(exc)])
    except Exception as exc:
        seen.append(["other", name_of(exc), None])
    yield Suspend("go")
    return seen


@flow("hostile")
def hostile_flow(ctx):
    try:
        yield Step("call", hostile)
    except Exception as exc:
        caught = [name_of(exc), getattr(exc, "type", None), getattr(exc, "message", None)]
    yield Suspend("go")
    return caught
"""

START = """
import shopflows
from crux_gen import SQLiteStore
store = SQLiteStore("crux.db")
print(shopflows.shop.run(store=store, flow_id="shop-1").status)
print(shopflows.hostile_flow.run(store=store, flow_id="hostile-1").status)
"""


class Shop:
    """A directory holding a flows module, the module its errors live in, a module
    nobody may import, and a database with one parked flow of each kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.evil = f"crux_evil_{uuid.uuid4().hex[:8]}"
        self.marker = root / "imported.marker"
        (root / f"{self.evil}.py").write_text(EVIL.format(marker=str(self.marker)))
        (root / "shop_errors.py").write_text(SHOP_ERRORS)
        (root / "shopflows.py").write_text(SHOP_FLOWS.format(evil=self.evil))
        self.env = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
        self.env.update(PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))
        started = subprocess.run(
            [sys.executable, "-c", START],
            cwd=root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.stdout.split() == ["suspended", "suspended"], started.stderr
        self.store = SQLiteStore(root / "crux.db")


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    made = Shop(tmp_path)
    yield made
    made.store.close()


def test_crux_gen_replay_imports_nothing_a_record_names(shop: Shop) -> None:
    done = crux("replay", "shopflows", "--db", "crux.db", cwd=shop.root)
    assert not shop.marker.exists()
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(180)
def test_crux_gen_worker_stays_alive_and_caught_classes_take_the_same_branch(
    shop: Shop,
) -> None:
    signal_flow("shop-1", "go", None, store=shop.store)
    signal_flow("hostile-1", "go", None, store=shop.store)
    worker = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "worker", "shopflows", "--db", "crux.db", "--poll=50ms"],
        cwd=shop.root,
        env=shop.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while {get_flow(i, store=shop.store).status for i in ("shop-1", "hostile-1")} != {
            "completed"
        }:
            assert worker.poll() is None, worker.communicate()
            assert not shop.marker.exists()
            assert time.monotonic() < deadline, "the worker did not finish both flows"
            time.sleep(0.02)
        assert worker.poll() is None  # alive after replaying the hostile record
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert not shop.marker.exists()
    assert get_flow("shop-1", store=shop.store).value == [
        ["out-of-stock", "shop_errors.OutOfStock", "sku-1"],  # imported by the flows module
        ["declined", "shopflows.CardDeclined", "402"],  # defined by it
    ]
    assert get_flow("hostile-1", store=shop.store).value == [
        "crux_gen.errors.StepFailedError",
        f"{shop.evil}.Boom",
        "out of boom",
    ]
    assert f"{shop.evil}.Boom" in err  # the warning names the class it could not rebuild


def test_a_record_naming_an_internal_class_of_crux_gen_is_a_step_failed_error() -> None:
    import crux_gen.executor  # noqa: F401  (imported: only the rule keeps it out)
    from crux_gen import StepFailedError
    from crux_gen.codec import ErrorInfo

    for name in ("crux_gen.flowrun.ParkingWarning",):
        with pytest.warns(UserWarning, match="internal class of crux_gen"):
            rebuilt = ErrorInfo(type=name, message="x", traceback="").rebuild("s")
        assert isinstance(rebuilt, StepFailedError) and rebuilt.type == name
    # crux_gen's own errors, which a flow may catch, are rebuilt as themselves.
    from crux_gen import ChildFlowError

    info = ErrorInfo(type="crux_gen.errors.ChildFlowError", message="m", traceback="", args=None)
    assert isinstance(info.rebuild("s"), ChildFlowError)
