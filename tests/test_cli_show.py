"""``crux-gen show`` and ``replay`` on an 80-column terminal, signals' states and keys,
and tracebacks without crux_gen's own frames: the real command in subprocesses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from crux_gen import signal_flow
from crux_gen.cli.format import fold, hide_own_frames, is_own_frame
from crux_gen.stores.sqlite import SQLiteStore
from tests.test_cli import crux, crux_all, entries, fits, load_module, unwrapped

LONG_NAME = "quarterly-enterprise-customer-onboarding-with-manual-approval-" * 2
FLOWS = f"""
import attrs

from crux_gen import Step, Suspend, flow

NAME = {LONG_NAME!r}


@attrs.frozen
class Approval:
    approved_by: str


def explode(why):
    raise ValueError("the approval service refused the request: " + why)


@flow(NAME)
def wide(ctx):
    yield Step("collect-every-document-the-customer-uploaded-" * 2, lambda: {{
        "documents": ["passport-scan-front-and-back.pdf"] * 12,
        "k" * 90: "v" * 400,
    }})
    approval = yield Suspend("manager-approval-for-the-enterprise-contract-" * 2, schema=Approval)
    yield Step("notify", lambda: explode(approval.approved_by * 30))
"""
WAIT = "manager-approval-for-the-enterprise-contract-" * 2
LONG_ID = "customer-" + "0123456789" * 12


@pytest.fixture
def wide(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "wideflows.py").write_text(FLOWS)
    flows = load_module(tmp_path / "wideflows.py")
    store = SQLiteStore(tmp_path / "crux.db")
    run = flows.wide.run
    waiting = run(input={"note": "n " * 200, "id": "x" * 200}, store=store, flow_id=LONG_ID)
    key = "webhook-delivery-" + "abcdef" * 20
    signal_flow(waiting.flow_id, WAIT, {"nobody": "y" * 300}, store=store)  # rejected
    signal_flow(waiting.flow_id, "reminder-" * 20, [1] * 200, store=store, key=key)  # pending
    run(resume=waiting.flow_id, store=store)
    failed = run(input={}, store=store, flow_id=LONG_ID[::-1]).flow_id
    signal_flow(failed, WAIT, {"approved_by": "ops-manager "}, store=store, key=key)
    signal_flow(failed, "never-waited-for", {"x": 1}, store=store)  # unused once it fails
    run(resume=failed, store=store)
    store.close()
    return {"root": tmp_path, "waiting": waiting.flow_id, "failed": failed, "key": key}


def test_show_and_replay_fit_80_columns_with_long_ids_names_and_values(
    wide: dict[str, Any],
) -> None:
    root = wide["root"]
    renamed = FLOWS.replace('"collect-every-document', '"gather-every-document')
    (root / "wideflows_renamed.py").write_text(renamed)
    runs = crux_all(
        [
            ["show", wide["waiting"]],
            ["show", wide["waiting"], "--full"],
            ["show", wide["failed"]],
            ["show", wide["failed"], "--full"],
            ["replay", "wideflows_renamed"],
            ["replay", "wideflows"],
            ["list"],
        ],
        root,
    )
    for done in runs:
        assert done.returncode in (0, 1), done.stderr
        long_lines = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not long_lines, (done.args, long_lines)
    shown, full, failed, _, diverged, same, _ = runs
    # Ids and names are folded, never cut: all of them is there.
    for out in (shown.stdout, full.stdout):
        first, second = out.splitlines()[:2]
        assert first == f"flow     {LONG_ID[:71]}" and second == f"         {LONG_ID[71:]}"
        assert LONG_NAME in unwrapped(out)
    # Values are cut to a line unless --full, which folds them whole.
    assert "v" * 400 not in unwrapped(shown.stdout) and "…" in shown.stdout
    assert "v" * 400 in unwrapped(full.stdout)
    # The error message is folded, whole.
    error = next(x for x in entries(failed.stdout) if x.startswith("error    "))
    assert "the approval service refused the request: ops-manager ops-manager" in error
    assert "ops-manager" * 30 in unwrapped(failed.stdout).replace(" ", "")
    assert "\n\n  Traceback" not in failed.stdout  # no blank line left by the fold

    assert diverged.returncode == 1, diverged.stdout + diverged.stderr
    flow_entries = [x for x in entries(diverged.stdout) if x.startswith("diverges")]
    assert len(flow_entries) == 1
    assert LONG_ID in flow_entries[0].replace(" ", "")
    assert "position 0: recorded Step('collect-every-document" in flow_entries[0]
    assert same.returncode == 0, same.stdout + same.stderr


def squeezed(out: str) -> str:
    """*out* with every space and line break gone (a fold may cut inside a word)."""
    return "".join(out.split())


def test_show_gives_each_signal_its_state_and_key(wide: dict[str, Any]) -> None:
    waiting, failed = crux_all([["show", wide["waiting"]], ["show", wide["failed"]]], wide["root"])
    assert waiting.returncode == failed.returncode == 0, waiting.stderr + failed.stderr
    assert fits(waiting.stdout) and fits(failed.stdout)
    out = squeezed(waiting.stdout.split("\nsignals (2)\n")[1])
    assert squeezed(f"#1 '{WAIT}' rejected sent 20") in out
    assert squeezed("rejected: required field missing @ $.approved_by") in out
    assert squeezed(f"#2 '{'reminder-' * 20}' pending sent 20") in out
    assert f"key:'{wide['key'][:60]}" in out and "…" in out  # cut to fit the line

    out = squeezed(failed.stdout.split("\nsignals (2)\n")[1])
    assert squeezed(f"#3 '{WAIT}' consumed by #1 sent 20") in out
    assert f"key:'{wide['key'][:60]}" in out
    assert squeezed("#4 'never-waited-for' unused (still pending when the flow finished)") in out
    assert out.count("key:") == 1  # only the consumed signal was sent with a key

    full = crux("show", wide["waiting"], "--full", cwd=wide["root"])
    assert fits(full.stdout)
    assert f"key:'{wide['key']}'" in squeezed(full.stdout)


def test_show_hides_crux_gens_own_frames_unless_full(wide: dict[str, Any]) -> None:
    shown, full = crux_all(
        [["show", wide["failed"]], ["show", wide["failed"], "--full"]], wide["root"]
    )
    assert shown.returncode == full.returncode == 0, shown.stderr + full.stderr
    # (one frame since the executor calls step functions: "1 crux_gen frame hidden")
    assert re.search(r"\(\d+ crux_gen frames? hidden; --full shows (them|it)\)", shown.stdout)
    assert "crux_gen/calls.py" not in shown.stdout  # where step functions are called
    assert 'wideflows.py",line15,inexplode' in squeezed(shown.stdout)  # the flow's frames stay
    assert "in explode" in shown.stdout and "ValueError: the approval" in shown.stdout
    assert "crux_gen/calls.py" in unwrapped(full.stdout)
    assert "hidden" not in full.stdout


SITE = "/srv/app/.venv/lib/python3.11/site-packages"
TRACEBACK = f"""Traceback (most recent call last):
  File "{SITE}/crux_gen/driver.py", line 308, in _step
    value = self._call(command.fn)
            ^^^^^^^^^^^^^^^^^^^^^^
  File "{SITE}/crux_gen/driver.py", line 285, in _call
    return fn()
           ^^^^
  File "/srv/app/myapp/flows.py", line 24, in <lambda>
    plan = yield Step("plan", lambda: make_plan())
  File "/home/ada/src/crux_gen/examples/app.py", line 3, in make_plan
    raise KeyError("x")
  File "{SITE}/crux_gen/stores/sqlite.py", line 9, in load
    raise KeyError("x")
KeyError: 'x'""".split("\n")


def test_a_traceback_keeps_the_users_frames_and_counts_crux_gens() -> None:
    assert hide_own_frames(TRACEBACK) == [
        "Traceback (most recent call last):",
        "  (2 crux_gen frames hidden; --full shows them)",
        '  File "/srv/app/myapp/flows.py", line 24, in <lambda>',
        '    plan = yield Step("plan", lambda: make_plan())',
        '  File "/home/ada/src/crux_gen/examples/app.py", line 3, in make_plan',
        '    raise KeyError("x")',
        "  (1 crux_gen frame hidden; --full shows it)",
        "KeyError: 'x'",
    ]
    assert is_own_frame("C:\\Python311\\Lib\\site-packages\\crux_gen\\runner.py")
    assert not is_own_frame("/home/ada/crux_gen/myapp.py")  # no such module of crux_gen
    assert not is_own_frame("/srv/app/flows.py")


def test_fold_wraps_at_spaces_and_never_loses_text() -> None:
    line = "error    builtins.ValueError: " + "word " * 30 + "x" * 150
    folded = fold(line, 80)
    assert all(len(piece) <= 80 for piece in folded)
    assert all(piece.startswith(" " * 9) for piece in folded[1:])
    assert "".join(folded).replace(" ", "") == line.replace(" ", "")
    assert fold("short", 80) == ["short"]
    assert fold(" " * 70 + "^" * 30, 80) == [" " * 70 + "^" * 9 + "…"]
