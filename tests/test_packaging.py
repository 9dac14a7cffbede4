"""What installing crux-gen gives a user's project: ``crux_gen`` and ``crux_gen.stores``
with their types, a pytest plugin that loads by itself, and no top-level ``stores``.

Each check runs in a subprocess started from a temporary directory, so it sees the
installed package (the strict editable install's link tree under build/), never this
checkout's folders through the current directory or pytest's rootdir.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

import crux_gen
import crux_gen.errors
import crux_gen.stores
import crux_gen.stores.memory
import crux_gen.stores.sqlite

REPO = Path(__file__).resolve().parent.parent
# The source folder of each top package: stores/ is crux_gen.stores (pyproject's
# [tool.setuptools.package-dir]); there is no crux_gen/stores in the checkout.
PACKAGE_DIRS = {"crux_gen": REPO / "crux_gen", "crux_gen.stores": REPO / "stores"}
REINSTALL = (
    "reinstall: .venv/bin/pip install --config-settings editable_mode=strict -e '.[test]' "
    "(strict editable mode links each file at install time; a new module or package "
    "needs a reinstall, and a new package an entry in pyproject's packages)"
)


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run *args* in *cwd* as a user's shell would: no PYTHONPATH pointing at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_no_top_level_stores_package_is_installed(tmp_path: Path) -> None:
    gone = _run([sys.executable, "-c", "import stores"], cwd=tmp_path)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert "ModuleNotFoundError: No module named 'stores'" in gone.stderr

    found = _run(
        [
            sys.executable,
            "-c",
            "import crux_gen.stores.sqlite as s, crux_gen.stores.memory as m; "
            "print(s.SQLiteStore.__module__, m.MemoryStore.__module__)",
        ],
        cwd=tmp_path,
    )
    assert found.returncode == 0, f"{found.stderr}\n{REINSTALL}"
    assert found.stdout.split() == ["crux_gen.stores.sqlite", "crux_gen.stores.memory"]


def test_every_module_of_the_source_tree_is_installed_and_the_cli_runs(tmp_path: Path) -> None:
    # A subpackage missing from pyproject's packages, or a module added since the
    # install, is missing from the installed package: users get ModuleNotFoundError.
    sources = {}
    for package, root in PACKAGE_DIRS.items():
        for folder, _, names in os.walk(root):
            for name in names:
                if name.endswith(".py") and name != "__main__.py":
                    path = Path(folder, name)
                    parts = path.relative_to(root).with_suffix("").parts
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    sources[".".join((package, *parts))] = str(path.resolve())
    assert {"crux_gen", "crux_gen.stores", "crux_gen.stores.sqlite", "crux_gen.cli"} <= set(sources)
    script = textwrap.dedent(
        """\
        import importlib, json, os, sys
        found = {}
        for module in json.loads(sys.argv[1]):
            try:
                found[module] = os.path.realpath(importlib.import_module(module).__file__)
            except ImportError as exc:
                found[module] = repr(exc)
        print(json.dumps(found))
        """
    )
    done = _run([sys.executable, "-c", script, json.dumps(sorted(sources))], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sources, REINSTALL

    cli = _run([str(Path(sys.executable).with_name("crux-gen")), "--help"], cwd=tmp_path)
    assert cli.returncode == 0, f"{cli.stderr}\n{REINSTALL}"
    assert "Usage: crux-gen" in cli.stdout


def test_a_checkout_of_crux_gen_first_on_sys_path_still_has_crux_gen_stores() -> None:
    # `python -m pytest` from the repository root (the README's command) puts the
    # checkout's crux_gen/ before the installed one; it has no stores/ in it.
    script = (
        "import os, crux_gen, crux_gen.stores.sqlite as s; "
        "print(crux_gen.__file__); print(os.path.realpath(s.__file__))"
    )
    done = _run([sys.executable, "-c", script], cwd=REPO)
    assert done.returncode == 0, f"{done.stderr}\n{REINSTALL}"
    assert done.stdout.splitlines() == [
        str(REPO / "crux_gen" / "__init__.py"),
        str(REPO / "stores" / "sqlite.py"),
    ]


def tomllib_loads(text: str) -> dict[str, Any]:
    """*text* read as TOML (Python 3.11's tomllib; skipped on 3.10, which has none)."""
    tomllib = pytest.importorskip("tomllib")
    loaded: dict[str, Any] = tomllib.loads(text)
    return loaded


def _sources(into: Path) -> Path:
    """A copy of what a build reads (pyproject's files), so this checkout's build/ is
    left alone."""
    src = into / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for name in ("crux_gen", "stores"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds as it would for a user (build isolation, pyproject's
    build-system), from a copy of the sources."""
    out = tmp_path_factory.mktemp("wheel")
    src = _sources(out)
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        cwd=out,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (made,) = out.glob("crux_gen-*.whl")
    return made


def test_the_wheel_holds_stores_as_crux_gen_stores_and_no_top_level_stores(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "crux_gen",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    stores = {
        name.removeprefix("crux_gen/stores/")
        for name in names
        if name.startswith("crux_gen/stores/")
    }
    expected = {path.name for path in (REPO / "stores").iterdir() if path.suffix == ".py"}
    assert stores == expected | {"py.typed"}


def test_the_wheel_says_mit_as_an_spdx_expression_and_carries_the_license(wheel: Path) -> None:
    # PEP 639: License-Expression (not the deprecated License: field and table form,
    # which setuptools stops building in 2027) and the file under .dist-info/licenses.
    info = wheel.name.split("-py")[0] + ".dist-info"
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(f"{info}/METADATA").decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers, metadata[:2000]
    assert "License-File: LICENSE" in headers, metadata[:2000]
    assert not [h for h in headers if h.startswith("License:")], metadata[:2000]
    license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert license_text == (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "crux_gen contributors" in license_text


def test_the_build_system_asks_for_a_setuptools_that_reads_spdx_licenses() -> None:
    # setuptools < 77 refuses `license = "MIT"` (a string) and knows no license-files.
    pyproject = tomllib_loads((REPO / "pyproject.toml").read_text())
    (requirement,) = pyproject["build-system"]["requires"]
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", requirement)
    assert found and int(found.group(1)) >= 77, requirement
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]


def test_the_sdist_carries_the_license(tmp_path: Path) -> None:
    # The sdist the build backend makes (setuptools of the build-system's version,
    # installed beside the test, not into this venv).
    pyproject = tomllib_loads((REPO / "pyproject.toml").read_text())
    backend = tmp_path / "backend"
    got = _run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(backend),
         *pyproject["build-system"]["requires"]],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    src = _sources(tmp_path)
    shutil.copy(REPO / "MANIFEST.in", src / "MANIFEST.in")
    for extra in SDIST_EXTRAS:
        if (REPO / extra).is_dir():
            shutil.copytree(REPO / extra, src / extra, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src / extra).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / extra, src / extra)
    out = tmp_path / "dist"
    out.mkdir()
    script = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(backend)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=src, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sdist = out / done.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[-1] for name in archive.getnames()}
        top = archive.getnames()[0].split("/")[0]
        pkg_info = archive.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert "LICENSE" in names, sorted(names)
    assert "License-Expression: MIT" in metadata.split("\n\n", 1)[0].splitlines()
    # What its tests need: every file git tracks (the tests, the examples and
    # benchmarks they run, the docs and CI script they read), none left behind.
    tracked = _tracked_files()
    missing = sorted(name for name in tracked if name not in names)
    assert not missing, f"not in the sdist (add them to MANIFEST.in): {missing}"


#: What the sdist carries besides the packages (MANIFEST.in), copied for its build.
SDIST_EXTRAS = ("tests", "examples", "bench", "docs", ".ci", ".gitignore", "CHANGELOG.md")


def _tracked_files() -> list[str]:
    """The files git tracks in this checkout (skipped where it is not one)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    done = _run(["git", "ls-files"], cwd=REPO)
    assert done.returncode == 0, done.stderr
    return [name for name in done.stdout.splitlines() if (REPO / name).is_file()]


def test_what_the_examples_write_is_git_ignored() -> None:
    # The stores and outboxes the examples make where they run (their defaults,
    # named in their source) must not show up in `git status` after a demo.
    written = set()
    for example in (REPO / "examples").glob("*.py"):
        written |= set(re.findall(r'"([\w.-]+\.(?:db|jsonl))"', example.read_text()))
    assert {"onboarding.db", "onboarding-outbox.jsonl", "signup.outbox.jsonl"} <= written
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in sorted(written):
        for place in (name, f"examples/{name}"):
            ignored = _run(["git", "check-ignore", "-q", place], cwd=REPO)
            assert ignored.returncode == 0, f"{place} is not git-ignored"


@pytest.mark.parametrize("conftest", [False, True], ids=["entry-point", "conftest-too"])
def test_a_project_with_its_own_stores_package_runs_under_pytest_with_our_plugin(
    tmp_path: Path, conftest: bool
) -> None:
    _write(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "stores/__init__.py": 'OWNER = "the user\'s app"\n',
            "stores/orders.py": "def total() -> int:\n    return 42\n",
            "test_user.py": """\
                import stores
                from stores.orders import total

                from crux_gen import MemoryStore, Step, flow


                @flow("user-flow")
                def user_flow(ctx):
                    return (yield Step("total", total))


                def test_own_stores_package_is_the_users():
                    assert stores.OWNER == "the user's app"
                    assert total() == 42


                def test_crux_fixtures_are_there(request, crux_store, crux_clock):
                    assert request.config.pluginmanager.has_plugin("crux_gen.pytest_plugin")
                    assert user_flow.run(store=crux_store).value == 42
                    assert user_flow.run(store=MemoryStore()).value == 42
                """,
        },
    )
    if conftest:  # what the README tells users of a source checkout to add
        _write(tmp_path, {"conftest.py": 'pytest_plugins = ["crux_gen.pytest_plugin"]\n'})
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{REINSTALL}"
    assert re.search(r"\b2 passed\b", done.stdout), done.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it comes with the test extra: pip install -e '.[test]')",
)
def test_mypy_strict_on_a_users_module_sees_crux_gens_types(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app.py": """\
                from collections.abc import Generator
                from typing import Any

                from crux_gen import FlowContext, MemoryStore, SQLiteStore, Step, StoreError, flow
                from crux_gen.stores.memory import MemoryStore as MemoryStoreItself


                @flow("typed")
                def typed(ctx: FlowContext) -> Generator[Any, Any, int]:
                    yield Step("a", lambda: 1)
                    return 1


                def open_store(path: str) -> SQLiteStore | MemoryStore:
                    try:
                        return SQLiteStore(path)
                    except StoreError:
                        return MemoryStoreItself()


                reveal_type(typed)
                reveal_type(open_store("crux.db"))
                wrong: int = MemoryStoreItself()
                """,
        },
    )
    checked = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-color-output",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "app.py",
        ],
        cwd=tmp_path,
    )
    out = checked.stdout + checked.stderr
    assert "import-not-found" not in out and "import-untyped" not in out, f"{out}\n{REINSTALL}"
    assert re.search(r'Revealed type is "crux_gen\.flow\.Flow\[(builtins\.)?int\]"', out), out
    assert (
        'Revealed type is "crux_gen.stores.sqlite.SQLiteStore | crux_gen.stores.memory.MemoryStore"'
        in out
    ), out
    assert re.search(
        r"app\.py:23: error: Incompatible types in assignment \(expression has type "
        r'"MemoryStore", variable has type "int"\)',
        out,
    ), out
    assert checked.returncode == 1, out
    assert "Found 1 error in 1 file" in out, out


def test_the_store_classes_and_errors_are_exported_from_crux_gen() -> None:
    from crux_gen import CorruptRecordError, MemoryStore, SQLiteStore, StoreError

    assert SQLiteStore is crux_gen.stores.sqlite.SQLiteStore
    assert MemoryStore is crux_gen.stores.memory.MemoryStore
    assert StoreError is crux_gen.errors.StoreError
    assert CorruptRecordError is crux_gen.errors.CorruptRecordError
    assert issubclass(StoreError, crux_gen.CruxError)
    assert issubclass(CorruptRecordError, crux_gen.CruxError)
    assert {"SQLiteStore", "MemoryStore", "StoreError", "CorruptRecordError"} <= set(
        crux_gen.__all__
    )


def test_the_store_classes_are_exported_from_crux_gen_stores_postgres_lazily(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        """\
        import sys
        sys.modules["psycopg"] = None  # as if the postgres extra were not installed
        sys.modules["psycopg_pool"] = None
        from crux_gen.stores import MemoryStore, SQLiteStore
        import crux_gen, crux_gen.stores
        assert SQLiteStore is crux_gen.SQLiteStore and MemoryStore is crux_gen.MemoryStore
        assert "crux_gen.stores.postgres" not in sys.modules
        assert sorted(crux_gen.stores.__all__) == ["MemoryStore", "SQLiteStore"]
        try:
            from crux_gen.stores import PostgresStore
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    done = _run([sys.executable, "-c", script], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MissingDependencyError"), done.stdout
    assert "crux-gen[postgres]" in done.stdout, done.stdout
    if importlib.util.find_spec("psycopg") is not None:
        from crux_gen.stores import PostgresStore

        assert PostgresStore is crux_gen.PostgresStore


def test_ci_runs_the_readmes_test_command_exactly() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    command = next(b for b in blocks if "pytest" in b)
    ci = (REPO / ".ci" / "run").read_text()
    assert f'README_TESTS="{command}"' in ci


def test_the_readmes_pgserver_route_runs_as_written() -> None:
    # The README's "Trying it without a server" block (```python pgserver), run in a
    # fresh folder: it starts a PostgreSQL of its own and stops it on exit.
    from tests import pg

    readme = (REPO / "README.md").read_text()
    [block] = re.findall(r"```python pgserver\n(.*?)```", readme, flags=re.S)
    code = textwrap.dedent(block)
    pytest.importorskip("pgserver")
    pg.store_class()
    work = Path(tempfile.mkdtemp(prefix="crux-pgr-", dir=pg.short_tempdir()))
    try:
        done = _run([sys.executable, "-c", code], cwd=work, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout == "[]\n", done.stdout + done.stderr
        assert (work / "pgdata" / "PG_VERSION").exists()
        assert not (work / "pgdata" / "postmaster.pid").exists()  # stopped on exit
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_examples_install_and_run_the_way_the_readme_does() -> None:
    # The README's Set-up line: a venv, the strict editable install, and the venv's
    # python running the example. Each example's docstring says the same, so a
    # reader starting from the example ends up with the same install.
    readme = (REPO / "README.md").read_text()
    [line] = [
        line
        for line in re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
        if "examples/onboarding.py" in line
    ]
    install, run = line.split(" && .venv/bin/python ")
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert run == "examples/onboarding.py"
    for example in sorted((REPO / "examples").glob("*.py")):
        doc = ast.get_docstring(ast.parse(example.read_text())) or ""
        name = f"examples/{example.name}"
        assert install in doc, f"{name} does not say the README's install: {install}"
        assert f".venv/bin/python {name}" in doc, name
        stray = re.findall(r"(?m)^\s*(?:pip install|python3? examples/).*$", doc)
        assert not stray, f"{name} says another way: {stray}"
