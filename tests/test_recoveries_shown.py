"""A flow's recoveries in a row (``@flow(max_recoveries=)``) shown, on every store:
``get_flow(...).recoveries``, ``crux-gen show``'s lines and ``--json``, and the
dashboard's flow page; back to 0 (and not shown) once anything is recorded."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FakeClock, FlowContext, SQLiteStore, Step, flow, get_flow
from crux_gen.cli import main
from crux_gen.cli.show import show_lines
from crux_gen.ui import make_app
from crux_gen.worker import Worker

from .test_ui import call, flow_path


@flow("shown-recoveries", max_recoveries=5)
def crashy(ctx: FlowContext) -> Any:
    return (yield Step("work", lambda: "worked"))


def crashed_twice(store: Any, clock: FakeClock) -> str:
    """A flow whose last two runners died in its step: claimed, nothing recorded."""
    flow_id = crashy.start(store=store).flow_id
    for n in range(3):
        store.claim(flow_id, f"dead-{n}", clock.time())
        clock.advance(store.lease_ttl + timedelta(seconds=1))
    return flow_id


def test_recoveries_in_get_flow_show_and_the_flow_page(store: Any, clock: FakeClock) -> None:
    flow_id = crashed_twice(store, clock)
    info = get_flow(flow_id, store=store)
    assert info.recoveries == 2
    lines = show_lines(info, clock.now(), full=False, fit=200)
    assert (
        "recovery 2 in a row: runners' leases lapsed with nothing recorded (@flow max_recoveries)"
    ) in lines
    page = call(make_app(store), flow_path(flow_id)).text
    assert '<dd id="recoveries" data-recoveries="2">2 in a row' in page
    # Its step recorded: the count is back to 0, and nothing is shown.
    assert Worker(store, [crashy]).run_once() == 1
    info = get_flow(flow_id, store=store)
    assert (info.status, info.recoveries) == ("completed", 0)
    lines = show_lines(info, clock.now(), full=False, fit=200)
    assert not any(line.startswith("recovery") for line in lines)
    assert 'id="recoveries"' not in call(make_app(store), flow_path(flow_id)).text


def test_show_json_and_text_carry_the_recoveries(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db, clock=clock)
    flow_id = crashed_twice(store, clock)
    store.close()
    with pytest.raises(SystemExit):
        main(["show", flow_id, "--json", "--db", str(db)])
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["recoveries"]) == (flow_id, 2)
    with pytest.raises(SystemExit):
        main(["show", flow_id, "--db", str(db)])
    assert "recovery 2 in a row" in capsys.readouterr().out
