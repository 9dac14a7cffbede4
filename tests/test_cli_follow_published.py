"""``crux-gen show ID --follow`` streams a flow's events and stream entries as
they land (JSON Lines with ``--json``), escaped, on every store (``follow`` in
process while another thread advances the flow), and the command on SQLite."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FlowContext, Step, Suspend, flow, get_flow, signal_flow, write_stream
from crux_gen.cli import main
from crux_gen.cli.follow import follow
from crux_gen.stores.sqlite import SQLiteStore


def think() -> str:
    write_stream("tokens", "<think>")  # from a step function: lands at once
    return "ok"


@flow("follow-published")
def talker(ctx: FlowContext) -> Any:
    ctx.set_event("phase", "thinking")
    yield Step("think", think)
    ctx.write_stream("tokens", "Hel")
    ctx.write_stream("tokens", "lo\x1b[31m")
    answer = yield Suspend("go")
    ctx.write_stream("tokens", "!")
    ctx.close_stream("tokens")
    ctx.set_event("phase", "done")
    return answer


def finish_later(store: Any, flow_id: str, monkeypatch: pytest.MonkeyPatch) -> threading.Thread:
    """Finish the flow on a thread once ``follow`` has taken its first look (its first
    sleep between polls), so what it found stored already is told apart from what
    lands later however slow the machine is."""
    looked = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        looked.set()
        real_sleep(seconds)

    monkeypatch.setattr("crux_gen.cli.follow.time.sleep", sleep)

    def finish() -> None:
        looked.wait(30)
        signal_flow(flow_id, "go", "yes", store=store)
        talker.run(store=store, resume=flow_id)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_follow_json_streams_events_and_stream_entries(
    store: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_id = talker.run(store=store).flow_id
    first = get_flow(flow_id, store=store)
    thread = finish_later(store, flow_id, monkeypatch)
    try:
        capsys.readouterr()
        follow(store, first, poll=0.02, full=False, fit=200, as_json=True)
    finally:
        thread.join(10)
    out = capsys.readouterr().out
    assert "\x1b" not in out  # escaped: \u001b
    items = [json.loads(line) for line in out.splitlines()]
    assert items[0]["event"] == "flow" and items[-1]["event"] == "status"
    assert items[-1]["status"] == "completed"
    kinds = [i["event"] for i in items]
    # Those stored already come right after the flow, before anything new.
    events = [(i["key"], i["value"]) for i in items if i["event"] == "event"]
    assert events == [("phase", "thinking"), ("phase", "done")]
    assert kinds.index("event") == 1
    stream = [i for i in items if i["event"] == "stream"]
    assert [i["value"] for i in stream] == ["<think>", "Hel", "lo\x1b[31m", "!", None]
    assert [i["closed"] for i in stream] == [False] * 4 + [True]
    assert [i["seq"] for i in stream] == sorted(i["seq"] for i in stream)
    done = next(n for n, i in enumerate(items) if i["event"] == "event" and i["value"] == "done")
    assert kinds.index("signal") < done < len(items) - 1  # as it landed, before the end


def test_follow_prints_published_values_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = talker.run(store=store).flow_id
    thread = finish_later(store, flow_id, monkeypatch)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["show", flow_id, "--follow", "--poll", "20ms", "--db", str(db)])
    finally:
        thread.join(10)
    out = capsys.readouterr().out
    assert exited.value.code in (0, None)
    assert "\x1b" not in out  # escaped
    head, _, rest = out.partition(f"following flow {flow_id} until it finishes (Ctrl-C stops)\n")
    assert "event    'phase' set " in head and '       value: "thinking"' in head
    assert "stream   'tokens' #3: \"lo\\u001b[31m\"" in head.splitlines()
    lines = rest.splitlines()
    assert "stream   'tokens' #4: \"!\"" in lines
    closed = next(i for i, line in enumerate(lines) if line.endswith(" closed"))
    assert lines[closed].startswith("stream   'tokens' #")
    assert '       value: "done"' in lines
    assert lines[-1] == 'value    "yes"'
