"""CI's smoke test of the built wheel, in a fresh venv with no checkout on its path
(``.ci/run``): a flow starts, suspends, is signalled, a worker finishes it, and the
CLI lists it; every public module imports. Run from an empty folder."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import crux_gen
from crux_gen import Step, Suspend, flow, get_flow, signal_flow
from crux_gen.stores import MemoryStore, SQLiteStore
from crux_gen.worker import Worker

here = Path(crux_gen.__file__).resolve()
assert "site-packages" in here.parts, f"crux_gen came from {here}, not the installed wheel"
for module in ("crux_gen.cli", "crux_gen.testing", "crux_gen.stores.sqlite", "crux_gen.migrate"):
    importlib.import_module(module)
assert MemoryStore is crux_gen.MemoryStore


@flow("smoke")
def smoke(ctx):  # type: ignore[no-untyped-def]
    first = yield Step("first", lambda: 1)
    go = yield Suspend("go")
    return first + go["n"]


store = SQLiteStore("smoke.db")
started = smoke.run(store=store)
assert started.status == "suspended", started
assert signal_flow(started.flow_id, "go", {"n": 2}, store=store)
assert Worker(store, [smoke]).run_once() == 1
done = get_flow(started.flow_id, store=store)
assert (done.status, done.value) == ("completed", 3), done
store.close()

cli = Path(sys.executable).with_name("crux-gen")
listed = subprocess.run(
    [str(cli), "list", "--db", "smoke.db"], capture_output=True, text=True, check=False
)
assert listed.returncode == 0, listed.stderr
assert "smoke" in listed.stdout and "completed" in listed.stdout, listed.stdout
print(f"smoke: crux-gen {crux_gen.__version__} from {here.parent} ran a flow in {os.getcwd()}")
