"""A flow's events and streams as ``crux-gen show`` (text and ``--json``) and the
dashboard's flow page show them: every key and value, escaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crux_gen import FlowContext, Step, Suspend, flow, write_stream
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.ui import make_app

from .test_cli import crux
from .test_ui import call, flow_path, section


@flow("shown-streams")
def shown(ctx: FlowContext) -> Any:
    ctx.set_event("phase<b>\x1b[31m", {"note": "<script>x</script>\x1b[2J"})
    yield Step("gen", lambda: [write_stream("tok", t) for t in ("a\x07", "<i>b</i>")])
    ctx.close_stream("tok")
    ctx.write_stream("open", 1)
    yield Suspend("go")


def stored_flow(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL")
    shown.run(store=store, flow_id="shown-1")
    return store


def test_show_lists_events_and_streams_escaped_and_json_has_them(tmp_path: Path) -> None:
    stored_flow(tmp_path).close()
    out = crux("show", "shown-1", "--db", "crux.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\x1b" not in text and "\x07" not in text
    events = text[text.index("events (1)") :]
    assert "'phase<b>\\x1b[31m'" in events
    assert '{"note": "<script>x</script>\\u001b[2J"}' in events
    assert "'tok'  2 values, closed" in text and "'open'  1 values, open" in text
    data = json.loads(crux("show", "shown-1", "--db", "crux.db", "--json", cwd=tmp_path).stdout)
    assert [(e["key"], e["value"]) for e in data["events"]] == [
        ("phase<b>\x1b[31m", {"note": "<script>x</script>\x1b[2J"})
    ]
    assert data["streams"] == [
        {"key": "open", "values": [1], "closed": False},
        {"key": "tok", "values": ["a\x07", "<i>b</i>"], "closed": True},
    ]


def test_a_flow_without_events_or_streams_shows_no_such_part(tmp_path: Path) -> None:
    @flow("shown-plain")
    def plain(ctx: FlowContext) -> Any:
        yield Step("s", lambda: 1)

    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL")
    plain.run(store=store, flow_id="plain-1")
    store.close()
    out = crux("show", "plain-1", "--db", "crux.db", cwd=tmp_path).stdout
    assert "events (" not in out and "streams (" not in out
    data = json.loads(crux("show", "plain-1", "--db", "crux.db", "--json", cwd=tmp_path).stdout)
    assert data["events"] == [] and data["streams"] == []


def test_the_flow_page_shows_events_and_streams_escaped(tmp_path: Path) -> None:
    store = stored_flow(tmp_path)
    page = call(make_app(store), flow_path("shown-1"))
    assert page.status == 200
    part = section(page, "published")
    assert "<script>" not in part and "<b>" not in part and "<i>" not in part
    assert "phase&lt;b&gt;" in part
    assert "&lt;i&gt;b&lt;/i&gt;" in part
    assert 'data-closed="yes"' in part and 'data-closed="no"' in part
    store.close()
