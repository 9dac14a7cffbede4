"""Which markers each test gets, so that ``-m`` picks tests by what they need.

- ``postgres``: the test runs on the PostgreSQL server of ``tests/pg.py`` (a ``"postgres"``
  parameter, such as the ``store`` fixture's, or a ``pg_*``/``postgres_store_class`` fixture);
- ``browser``: the tests of ``tests/test_ui_browser.py``, ``tests/test_ui_browser_ops.py``
  and ``tests/test_trace_picture.py`` (Chromium through Playwright);
- ``processes``: the test starts other processes. Read from the test module's source: the
  test function, or a fixture of the module it uses, calls ``subprocess.run``, ``Popen``,
  ``os.fork``… itself or through a function or class of the module (or one imported from
  another module under tests/) that does; browser tests too;
- ``slow``: left out of the inner loop, ``pytest -m "not slow"``. Every ``postgres``,
  ``processes`` and ``browser`` test (each needs a schema of its own on the server, about
  0.1 s, and there are some 540 of them; a process costs a Python start-up, 0.3 s to
  seconds), and the tests in ``SLOW`` below, which took a second or more (setup, call and
  teardown) in a full run (``--durations=0``, 2 cores, other work running). Mark a new
  slow test ``@pytest.mark.slow``, or add it here.

``tests/conftest.py`` applies them (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import pytest

PG_FIXTURES = {"pg_server", "pg_schema", "pg_database", "postgres_store_class"}
BROWSER_MODULES = {"test_ui_browser.py", "test_ui_browser_ops.py", "test_trace_picture.py"}
TESTS = Path(__file__).resolve().parent
# Calls that start a process: subprocess.run(...), Popen(...), os.fork(), ...
SPAWNS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput"},
    "os": {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv"},
    "multiprocessing": {"Process", "Pool", "get_context"},
}

# module -> test functions (every parametrization of each) that are slow.
SLOW: dict[str, set[str]] = {
    "test_composition.py": {
        "test_continue_as_new_starts_the_same_flow_afresh_with_a_bounded_history",
    },
    "test_leases.py": {
        "test_a_failed_renewal_is_logged_and_retried_so_a_long_step_keeps_its_lease",
    },
    "test_properties.py": {
        "test_crashes_anywhere_on_a_memory_store_end_as_the_straight_run",
        "test_crashes_anywhere_on_a_sqlite_store_end_as_the_straight_run",
    },
    "test_worker.py": {
        "test_a_worker_polling_every_second_picks_up_a_signal_within_one_poll",
    },
}


def _starts_a_process(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == "Popen"
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.attr in SPAWNS.get(func.value.id, ())
    )


def _module_path(node: ast.ImportFrom, path: Path) -> Path | None:
    """The file under tests/ that ``from … import …`` *node* of *path* reads, if any."""
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        parts = (node.module or "").split(".") if node.module else []
    elif (node.module or "").split(".")[0] == "tests":
        base, parts = TESTS.parent, (node.module or "").split(".")
    else:
        return None
    found = base.joinpath(*parts).with_suffix(".py") if parts else None
    return found if found is not None and found.is_file() else None


@functools.cache
def _spawning(path: Path) -> frozenset[str]:
    """The names in module *path* (its functions and classes, and those it imports from
    other modules under tests/) that start a process, themselves or through another
    such name they use."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    uses: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (source := _module_path(node, path)):
            theirs = _spawning(source)
            found |= {a.asname or a.name for a in node.names if a.name in theirs}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if any(_starts_a_process(n) for n in ast.walk(node)):
                found.add(node.name)
            uses[node.name] = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    while True:
        more = {name for name, names in uses.items() if names & found} - found
        if not more:
            return frozenset(found)
        found |= more


def markers_of(item: pytest.Item) -> list[str]:
    """The names of the markers *item* gets (besides those it has already)."""
    path = Path(str(item.path))
    fixtures = set(getattr(item, "fixturenames", ()))
    params: dict[str, Any] = getattr(getattr(item, "callspec", None), "params", {})
    function = getattr(item, "originalname", item.name)
    names = []
    if fixtures & PG_FIXTURES or any(
        isinstance(v, str) and v == "postgres" for v in params.values()
    ):
        names.append("postgres")
    browser = path.name in BROWSER_MODULES
    if browser:
        names.append("browser")
    if browser or (path.suffix == ".py" and _spawning(path) & ({function} | fixtures)):
        names.append("processes")
    if names or function in SLOW.get(path.name, ()):
        names.append("slow")
    return names
