"""The README's Python snippets run as written (docs are tests).

Every ```python block runs, in the order of the README, in one namespace (a reader
going from top to bottom: the tour defines ``onboarding`` and ``store``, later
sections use them), in an empty temporary directory. A line a block prints must
be shown in that block as a comment (``print(r.status)  # completed``). The
pytest-style tests of "Testing your flows" are called with the plugin's fixtures.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import crux_gen
from crux_gen import FakeClock, SQLiteStore
from crux_gen.cli import main
from crux_gen.flow import default_registry
from crux_gen.testing import FlowHarness

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[str, str]]:
    """``(section heading, code)`` of every ```python block, in order."""
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1).strip() == "python":
            headings = re.findall(r"^## (.+)$", text[: match.start()], flags=re.MULTILINE)
            blocks.append((headings[-1] if headings else "", match.group(2)))
    return blocks


def fixtures(tmp_path: Path, name: str) -> dict[str, Any]:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / f"{name}.db", synchronous="NORMAL", clock=clock)
    return {
        "crux_clock": clock,
        "crux_store": store,
        "crux_harness": functools.partial(FlowHarness, store=store),
    }


def run_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run every block; the namespace, with ``__ran__`` (the sections run, in order)."""
    work = tmp_path / "readme"
    work.mkdir()
    monkeypatch.chdir(work)
    # "Deploying" imports the tour's flow from the app's own module, myapp.flows.
    myapp, flows = types.ModuleType("myapp"), types.ModuleType("myapp.flows")
    myapp.flows = flows  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myapp", myapp)
    monkeypatch.setitem(sys.modules, "myapp.flows", flows)
    # The README's @flows (a scheduled one among them) leave the default registry
    # as it was: no later test's worker fires the README's schedule.
    monkeypatch.setattr(default_registry, "_flows", dict(default_registry._flows))
    namespace: dict[str, Any] = {"__name__": "readme"}
    ran: list[str] = []
    called: list[str] = []
    for n, (section, code) in enumerate(python_blocks()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md block {n + 1} ({section})", "exec"), namespace)
        for line in out.getvalue().splitlines():
            assert f"# {line}" in code, f"{section}: prints {line!r}, which it does not show"
        if "onboarding" in namespace:
            flows.onboarding = namespace["onboarding"]  # type: ignore[attr-defined]
        for name, fn in list(namespace.items()):
            if name.startswith("test_") and callable(fn) and name not in called:
                given = fixtures(tmp_path, name)
                fn(**{p: given[p] for p in inspect.signature(fn).parameters})
                called.append(name)
        ran.append(section)
    namespace["__ran__"] = ran
    namespace["__tests__"] = called
    return namespace


def test_every_python_block_of_the_readme_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = README.read_text()
    other = {m.group(1).strip() for m in FENCE.finditer(text)} - {"python", "sh", "text", ""}
    assert not other, f"blocks this test would not run: {other}; use ```python, ```sh, ```text"
    namespace = run_readme(tmp_path, monkeypatch)
    assert namespace["__ran__"] == [section for section, _ in python_blocks()]
    for section in ("A quick tour", "Where the names live", "Choosing a store", "Deploying"):
        assert section in namespace["__ran__"]
    assert len(namespace["__tests__"]) >= 5  # the pytest-style examples were called


def test_the_quick_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "tour"
    work.mkdir()
    monkeypatch.chdir(work)
    (section, tour), *_ = python_blocks()
    assert section == "A quick tour"
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(tour, namespace)  # nothing given: its stand-in functions are in the block
    r = namespace["r"]
    assert (r.status, r.value) == (
        "completed",
        {"email": "user@example.com", "plan": "a first-week plan for Henri"},
    )
    assert out.getvalue().splitlines()[:2] == [
        "suspended email-verified",
        "completed {'email': 'user@example.com', 'plan': 'a first-week plan for Henri'}",
    ]
    assert (work / "crux.db").exists()


def test_the_readme_says_where_every_public_name_lives() -> None:
    [code] = [c for s, c in python_blocks() if s == "Where the names live"]
    imported: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.setdefault(node.module, set()).update(a.name for a in node.names)
    assert imported["crux_gen"] == set(crux_gen.__all__)
    assert imported["crux_gen.worker"] == {"Worker"}
    assert imported["crux_gen.testing"] == {"FlowHarness"}


def call(app: Any, query: str) -> tuple[int, str]:
    environ: dict[str, Any] = {"QUERY_STRING": query}
    setup_testing_defaults(environ)
    got: list[str] = []
    body = b"".join(app(environ, lambda status, headers: got.append(status)))
    return int(got[0].split()[0]), body.decode()


def test_the_deploying_recipe_answers_a_second_click_with_409(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = run_readme(tmp_path, monkeypatch)
    app, sign_up = namespace["app"], namespace["sign_up"]
    link = sign_up("grace@example.com", "Grace")
    query = link.split("?", 1)[1]
    flow_id = query.split("flow=")[1].split("&")[0]
    assert call(app, query.replace("token=", "token=forged")) == (403, "this link is not valid")
    assert call(app, query) == (202, "verifying")
    assert call(app, query) == (409, "already verified")  # the same link again: nothing stored
    signals = crux_gen.get_flow(flow_id, store=namespace["store"]).signals
    assert [s.name for s in signals] == ["email-verified"]
    assert call(app, "flow=nope&token=t") == (404, "no such sign-up")
    assert call(app, "") == (404, "no such sign-up")

    # A link clicked after its wait timed out: 410 (on a fake clock, no waiting).
    clock = FakeClock()
    namespace["store"] = SQLiteStore(tmp_path / "expiry.db", clock=clock)
    late = sign_up("ada@example.com", "Ada").split("?", 1)[1]
    clock.advance("25h")
    assert call(app, late) == (410, "this link has expired")


def test_the_many_flows_session_prints_what_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text()
    section = text[text.index("### Many flows at once") :]
    blocks = FENCE.findall(section)
    (_, shop), (_, session) = blocks[0], blocks[1]
    (tmp_path / "shop.py").write_text(shop)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRUX_DB", str(tmp_path / "shop.db"))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delitem(sys.modules, "shop", raising=False)
    commands = re.split(r"^\$ crux-gen ", session, flags=re.MULTILINE)[1:]
    assert len(commands) >= 10
    try:
        for command in commands:
            line, *expected = command.splitlines()
            with pytest.raises(SystemExit):
                main(shlex.split(line))
            out, err = capsys.readouterr()
            assert (out + err).splitlines() == expected, line
    finally:
        sys.modules.pop("shop", None)
