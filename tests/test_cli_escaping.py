"""Stored text never reaches the operator's terminal raw: ``crux-gen`` escapes it.

A step error that echoes user input, a flow name, a signal payload… may hold
terminal escape sequences (retitle the window, clear the screen, fake a prompt).
These tests store such text everywhere ``list`` and ``show`` print it, run the
real ``crux-gen`` in subprocesses and read its output as bytes (text mode would
turn a raw ``\\r`` into a newline and hide it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from crux_gen import FlowContext, Registry, Step, Suspend, cancel_flow, flow, signal_flow
from crux_gen.cli.format import clean, to_json
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]

TITLE = "\x1b]0;pwned\x07"  # OSC: set the terminal's title
CLEAR = "\x1b[2J"  # CSI: clear the screen
C1_CSI = "\x9b31m"  # the one-character C1 CSI: red text
CR = "\r"  # back to the start of the line: overwrite what was printed
BIDI = "\u202e"  # right-to-left override: reorder what follows
EVIL = f"{TITLE}{CLEAR}{C1_CSI}ok{CR}fake{BIDI}txt"
READABLE = "é 日本"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e")
# How the escaped text reads: still recognisable (in JSON values, as JSON escapes).
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\u009b31mok\\rfake\\u202etxt"
SHOWN_JSON = "\\u001b]0;pwned\\u0007\\u001b[2J\\u009b31mok\\rfake\\u202etxt"


@attrs.frozen
class Approval:
    by: str


registry = Registry()


def payload() -> dict[str, Any]:
    return {"plain": READABLE, "note": EVIL, EVIL: 1}


@flow(f"evil{TITLE}flow", registry=registry)
def evil(ctx: FlowContext) -> Any:
    yield Step(f"step{CLEAR}", lambda: payload())
    yield Suspend(f"wait{C1_CSI}", schema=Approval)
    yield Step("explode", lambda: explode(ctx.input["note"]))


def explode(note: str) -> None:
    raise ValueError(f"bad note {note}")


def crux(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m crux_gen``; its exit code, stdout and stderr decoded from UTF-8
    bytes as they were written (no newline translation)."""
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO), COLUMNS="80", PYTHONIOENCODING="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "crux_gen", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        timeout=60,
    )
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")


def cells(table: str) -> list[dict[str, str]]:
    """The rows of ``list``'s table, each cell under its header's name (a column starts
    where its header does; no header holds two spaces)."""
    header, *lines = table.rstrip("\n").split("\n")
    names = header.split("  ")
    names = [n.strip() for n in names if n.strip()]
    starts = [header.index(n) for n in names]
    ends = [*starts[1:], None]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)}
        for line in lines
    ]


def assert_inert(out: str) -> None:
    for char in RAW:
        assert char not in out, (char, out)


@pytest.fixture
def flows(tmp_path: Path) -> dict[str, str]:
    """Three flows holding escape sequences everywhere: waiting, failed, cancelled."""
    store = SQLiteStore(tmp_path / "crux.db")
    waiting = evil.run(input=payload(), store=store, flow_id=f"wait-{CLEAR}{CR}").flow_id
    signal_flow(waiting, f"wait{C1_CSI}", {"nobody": EVIL}, store=store)  # rejected
    signal_flow(waiting, f"other{TITLE}", [EVIL], store=store)  # pending
    evil.run(resume=waiting, store=store)  # rejects the bad one, keeps waiting
    failed = evil.run(input=payload(), store=store, flow_id=f"fail-{C1_CSI}").flow_id
    signal_flow(failed, f"wait{C1_CSI}", {"by": "ops"}, store=store)
    evil.run(resume=failed, store=store)
    cancelled = evil.run(input=payload(), store=store, flow_id=f"gone-{BIDI}").flow_id
    cancel_flow(cancelled, f"because {EVIL}", store=store)
    store.close()
    return {"waiting": waiting, "failed": failed, "cancelled": cancelled}


def test_list_and_show_escape_every_stored_string(tmp_path: Path, flows: dict[str, str]) -> None:
    code, table, err = crux("list", cwd=tmp_path)
    assert code == 0, err
    assert_inert(table)
    assert all(len(line) <= 80 for line in table.split("\n"))  # widths count escapes
    # How wide each column is depends on the others (UPDATED reads "now", "4.2s ago"
    # or "1m5s ago" as the wall clock goes): read the cells at the header's offsets.
    rows = cells(table)
    assert sorted(row["ID"][:7] for row in rows) == ["fail-\\u", "gone-\\u", "wait-\\x"]
    waiting = next(row for row in rows if row["ID"].startswith("wait-\\x1b[2J"))  # escaped
    assert waiting["WAITING FOR"] == "wait\\u009b31m"
    name = "evil\\x1b]0;pwned\\x07flow"  # escaped, and cut to fit (at least 10 wide)
    for row in rows:
        assert row["FLOW"] == name or (
            len(row["FLOW"]) >= 10
            and row["FLOW"].endswith("…")
            and name.startswith(row["FLOW"][:-1])
        ), row

    for which in ("waiting", "failed", "cancelled"):
        prefix = flows[which][:5]  # "wait-", "fail-", "gone-": unique starts
        for extra in ([], ["--full"]):
            code, out, err = crux("show", prefix, *extra, cwd=tmp_path)
            assert code == 0, err
            assert_inert(out + err)
            assert all(len(line) <= 80 for line in out.split("\n"))
            assert "name     evil\\x1b]0;pwned\\x07flow" in out
            assert "Step('step\\x1b[2J')" in out
            # The input and the step's result: recognisable (whole with --full).
            assert (SHOWN_JSON if extra else "\\u001b]0;pwned\\u0007") in out
            assert READABLE in out  # plain non-ASCII text stays as it is
            if which == "waiting":
                assert "flow     wait-\\x1b[2J\\r" in out
                assert "status   suspended, waiting for 'wait\\x9b31m'" in out
                assert "'other\\x1b]0;pwned\\x07'  pending" in out  # a signal's name
                assert "rejected" in out
            if which == "failed":
                # Folded to 80 columns, at the space before the escaped text.
                assert f"error    builtins.ValueError: bad note\n         {SHOWN}\n" in out
                # The traceback keeps its own lines; the \r inside one is escaped.
                assert "  Traceback (most recent call last):\n" in out
                assert f"  ValueError: bad note {SHOWN}\n" in out
            if which == "cancelled":
                assert "flow     gone-\\u202e" in out
                assert f"status   cancelled: because {SHOWN}" in out


def test_json_output_escapes_c1_and_bidi_and_keeps_the_text_exact(
    tmp_path: Path, flows: dict[str, str]
) -> None:
    code, listed, err = crux("list", "--json", cwd=tmp_path)
    assert code == 0, err
    assert_inert(listed)
    assert READABLE not in listed  # list --json holds no input; see show below
    objects = {o["id"]: o for o in json.loads(listed)}
    assert set(objects) == set(flows.values())  # the exact ids, read back
    assert objects[flows["waiting"]]["waiting_for"] == f"wait{C1_CSI}"
    assert objects[flows["cancelled"]]["cancel_reason"] == f"because {EVIL}"
    assert EVIL in objects[flows["failed"]]["error"]

    for which in ("waiting", "failed"):
        code, shown, err = crux("show", flows[which][:5], "--json", cwd=tmp_path)
        assert code == 0, err
        assert_inert(shown)
        assert "\\u009b31m" in shown and "\\u202e" in shown and "\\u001b" in shown
        assert READABLE in shown  # not \u00e9 and \u65e5\u672c
        data = json.loads(shown)
        assert data["name"] == f"evil{TITLE}flow"
        assert data["input"] == payload()
        assert data["history"][0]["result"] == payload()
    assert data["history"][2]["error"]["message"] == f"bad note {EVIL}"


def test_messages_naming_stored_text_are_escaped(tmp_path: Path, flows: dict[str, str]) -> None:
    code, _, err = crux("cancel", "gone-", cwd=tmp_path)  # cancelled already
    assert code == 1
    assert_inert(err)
    assert err.startswith("error: flow gone-\\u202e (evil\\x1b]0;pwned\\x07flow) is cancelled")
    assert len(err.strip().split("\n")) == 1

    code, out, err = crux("signal", "wait-", f"note{CLEAR}", json.dumps(EVIL), cwd=tmp_path)
    assert code == 0, err
    assert_inert(out)
    assert "sent 'note\\x1b[2J' to flow wait-\\x1b[2J\\r (evil\\x1b]0;pwned\\x07flow)" in out


def test_clean_escapes_controls_and_bidi_overrides_only() -> None:
    assert clean(TITLE) == "\\x1b]0;pwned\\x07"
    assert clean("a\x00b\x7fc\x85d\x9fe") == "a\\x00b\\x7fc\\u0085d\\u009fe"
    assert clean("\u202a\u202e\u2066\u2069") == "\\u202a\\u202e\\u2066\\u2069"
    assert clean("line\nnext\ttab\r") == "line\\nnext\\ttab\\r"
    assert clean(f"{READABLE} \u00a0 ok") == f"{READABLE} \u00a0 ok"  # printable: unchanged
    text = to_json({"k": f"{C1_CSI}{BIDI}\x7f{READABLE}\x1b"})
    assert text == '{"k": "\\u009b31m\\u202e\\u007f' + READABLE + '\\u001b"}'
    assert json.loads(text) == {"k": f"{C1_CSI}{BIDI}\x7f{READABLE}\x1b"}
