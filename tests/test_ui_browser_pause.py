"""The dashboard's Pause / Unpause and the retry of a cancelled flow (issue 23) in a
real browser: Debian's Chromium, headless, through Playwright, against
``crux-gen ui --allow-actions`` on a SQLite file (the server and browser fixtures
of ``tests/test_ui_browser.py``)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Generator
from pathlib import Path
from typing import Any

from crux_gen import (
    FlowContext,
    Registry,
    SQLiteStore,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    signal_flow,
)

from .test_ui_browser import TOKEN, browser, expect, page, serve

__all__ = ["browser", "page"]  # the Chromium and page fixtures of tests/test_ui_browser.py

STILL = 3600
REGISTRY = Registry()


@flow("ui-pause-order", registry=REGISTRY)
def order(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield Step("reserve", lambda: "reserved")
    return (yield Suspend("approve"))


def submit(page: Any, form_id: str) -> None:
    """Submit the flow page's form *form_id* and wait for the page it leads to."""
    with page.expect_navigation():
        page.locator(f"#{form_id} button[type=submit]").click()
    page.wait_for_load_state()


def test_a_flow_is_paused_and_unpaused_from_its_page(page: Any, tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = order.run(store=store).flow_id
    options = ("--refresh", str(STILL), "--allow-actions", "--token", TOKEN)
    with serve(db, *options) as url:
        page.goto(urllib.parse.urljoin(url, f"flows/{flow_id}?token={TOKEN}"))
        assert page.get_attribute("#status", "data-status") == "suspended"
        expect(page.locator('#pause-form input[name="action"]')).to_have_value("pause")
        submit(page, "pause-form")
        assert get_flow(flow_id, store=store).status == "paused"
        assert page.get_attribute("#status", "data-status") == "paused"
        expect(page.locator('#pause-form input[name="action"]')).to_have_value("unpause")
        # Paused on its wait: the signal form still offers it (stored, not consumed).
        options_shown = page.locator('#signal-form select[name="name"] option')
        assert options_shown.all_inner_texts() == ["approve"]
        signal_flow(flow_id, "approve", "yes", store=store)
        submit(page, "pause-form")
        info = get_flow(flow_id, store=store)
        assert (info.status, info.waiting_for) == ("suspended", "approve")
        assert page.get_attribute("#status", "data-status") == "suspended"
        assert store.due(store.clock.time(), 10) == [flow_id]  # the signal came meanwhile
    store.close()


def test_a_cancelled_flow_is_retried_from_its_page(page: Any, tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    store = SQLiteStore(db)
    flow_id = order.run(store=store).flow_id
    cancel_flow(flow_id, "by mistake", store=store)
    options = ("--refresh", str(STILL), "--allow-actions", "--token", TOKEN)
    with serve(db, *options) as url:
        page.goto(urllib.parse.urljoin(url, f"flows/{flow_id}?token={TOKEN}"))
        assert page.get_attribute("#status", "data-status") == "cancelled"
        expect(page.locator("#pause-form")).to_have_count(0)  # a finished flow
        submit(page, "retry-form")
        info = get_flow(flow_id, store=store)
        assert (info.status, info.cancel_reason) == ("suspended", None)
        assert [h.name for h in info.history] == ["reserve"]
        assert page.get_attribute("#status", "data-status") == "suspended"
    store.close()


#: The module ``crux-gen ui --module`` imports in its process: the flow ``fork_me``
#: defines here too, so its history replays there.
FLOWS_MODULE = """
from crux_gen import Step, Suspend, flow


@flow("ui-fork-browser")
def fork_me(ctx):
    yield Step("reserve", lambda: "reserved")
    yield Step("charge", lambda: "charged")
    return (yield Suspend("approve"))
"""


@flow("ui-fork-browser", registry=REGISTRY)
def fork_me(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield Step("reserve", lambda: "reserved")
    yield Step("charge", lambda: "charged")
    return (yield Suspend("approve"))


def test_a_flow_is_forked_from_a_position_of_its_history(page: Any, tmp_path: Path) -> None:
    db = tmp_path / "crux.db"
    (tmp_path / "fork_flows.py").write_text(FLOWS_MODULE)
    store = SQLiteStore(db)
    flow_id = fork_me.run(store=store).flow_id
    options = ("--refresh", str(STILL), "--allow-actions", "--token", TOKEN)
    with serve(db, *options, "--module", "fork_flows") as url:
        page.goto(urllib.parse.urljoin(url, f"flows/{flow_id}?token={TOKEN}"))
        expect(page.locator(".fork-form")).to_have_count(3)
        with page.expect_navigation():
            page.locator('#history-items li[data-position="1"] .fork-form button').click()
        page.wait_for_load_state()
        new_id = page.inner_text("#flow-id")
        assert new_id != flow_id and page.url.split("?")[0].endswith(f"/flows/{new_id}")
        expect(page.locator("#notice")).to_contain_text("Flow forked")
        assert page.get_attribute("#status", "data-status") == "pending"
        info = get_flow(new_id, store=store)
        assert [h.name for h in info.history] == ["reserve"] and info.status == "pending"
        assert [h.name for h in get_flow(flow_id, store=store).history] == [
            "reserve",
            "charge",
            "approve",
        ]
    store.close()
