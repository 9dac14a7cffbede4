"""The dashboard for operating many flows (issue 20) in a real browser: Debian's
Chromium, headless, through Playwright (as ``tests/test_ui_browser.py``, whose
server and browser fixtures these tests share).

Both pages fit a 390-px phone with no horizontal scroll; a timeline of 20
branches has labels that never overlap each other nor a bar, on a desktop and on
a phone; a 20,000-record flow's page is under 2 MB and refreshes by fetching only
what changed, without reloading; tracebacks show without crux_gen's frames until
asked; a failed group is retried in bulk from the errors page after a
confirmation saying how many. Screenshots of both pages at 1280 and 390 px go to
``$ARTIFACTS`` (or the test's tmp_path), printed by the test.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crux_gen import (
    All,
    Child,
    FlowContext,
    Registry,
    SQLiteStore,
    Step,
    Suspend,
    flow,
    get_flow,
    resume,
)
from crux_gen.records import COMPLETED, WAITING, StoredFlow, StoredRecord, Write

from .test_ui_browser import TOKEN, browser, expect, serve

__all__ = ["browser"]  # the module-scoped Chromium of tests/test_ui_browser.py

STILL = 3600
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
REGISTRY = Registry()


class CardDeclined(Exception):
    pass


def decline(card: str) -> None:
    raise CardDeclined(f"card {card} was declined by the issuing bank")


@flow("ops-payment", registry=REGISTRY)
def payment(ctx: FlowContext) -> Generator[Any, Any, Any]:
    ctx.set_custom_status({"stage": "charging", "attempt": 1})
    yield Step("charge-card", lambda: decline(ctx.input["card"]))


@flow("ops-order-with-a-rather-long-name", registry=REGISTRY)
def order(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield Step("reserve-inventory", lambda: {"sku": ctx.input["sku"]})
    return (yield Child(payment, input=ctx.input, flow_id=f"{ctx.flow_id}-payment"))


@flow("ops-fan-out", registry=REGISTRY)
def fan_out(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield All(
        [Step(f"notify-warehouse-region-{n:02d}-of-twenty", lambda n=n: n) for n in range(20)]
    )
    return (yield Suspend("all-notified-confirmation"))


def scene(path: Path) -> dict[str, Any]:
    """Orders whose payment children failed (two error groups), a 20-branch flow."""
    store = SQLiteStore(path)
    ids: dict[str, Any] = {"declined": [], "expired": []}
    for n in range(3):
        flow_id = f"order-2026-11-{n:04d}-customer-with-a-long-reference"
        order.run(store=store, flow_id=flow_id, input={"sku": "A1", "card": "4242"})
        ids["declined"].append(f"{flow_id}-payment")
    for n in range(2):
        flow_id = f"order-2026-12-{n:04d}"
        order.run(store=store, flow_id=flow_id, input={"sku": "B2", "card": "0000"})
        ids["expired"].append(f"{flow_id}-payment")
    ids["fan"] = fan_out.run(store=store, flow_id="fan-out-20").flow_id
    ids["store"] = store
    return ids


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$ARTIFACTS/ui`` when set (CI keeps it), else tmp_path."""
    base = os.environ.get("ARTIFACTS")
    folder = Path(base) / "ui" if base else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def viewing(browser: Any, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def boxes(page: Any, selector: str) -> list[dict[str, float]]:
    return [b for b in (e.bounding_box() for e in page.locator(selector).all()) if b]


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


def test_both_pages_fit_a_phone_and_leave_screenshots(browser: Any, tmp_path: Path) -> None:
    ids = scene(tmp_path / "crux.db")
    folder = artifacts(tmp_path)
    print(f"\nscreenshots of the dashboard: {folder}")
    with serve(tmp_path / "crux.db", "--refresh", str(STILL)) as url:
        pages = {
            "flows": url,
            "errors": url + "errors",
            "flow-fan-out": url + "flows/" + ids["fan"],
            "flow-failed": url + "flows/" + urllib.parse.quote(ids["declined"][0], safe=""),
        }
        for viewport in (DESKTOP, PHONE):
            with viewing(browser, viewport) as page:
                for name, address in pages.items():
                    page.goto(address)
                    page.wait_for_load_state("load")
                    width = scroll_width(page)
                    assert width <= viewport["width"], f"{name}: {width} px wide"
                    shot = folder / f"{name}-{viewport['width']}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    assert shot.stat().st_size > 1000
                if viewport is PHONE:  # the table's cells are lines of a card, all shown
                    page.goto(url)
                    row = page.locator(f'#flows tr[data-flow-id="{ids["declined"][0]}"]')
                    expect(row.locator("td.parent a")).to_be_visible()
                    expect(row.locator("td.error-cell")).to_contain_text("CardDeclined")
                    assert row.bounding_box()["width"] <= PHONE["width"]


def test_twenty_branch_labels_never_overlap_on_a_desktop_or_a_phone(
    browser: Any, tmp_path: Path
) -> None:
    ids = scene(tmp_path / "crux.db")
    history = get_flow(ids["fan"], store=ids["store"]).history
    with serve(tmp_path / "crux.db", "--refresh", str(STILL)) as url:
        for viewport in (DESKTOP, PHONE):
            with viewing(browser, viewport) as page:
                page.goto(url + "flows/" + ids["fan"])
                labels = boxes(page, "#timeline .tl-label")
                tracks = boxes(page, "#timeline .tl-track")
                assert len(labels) == len(tracks) == len(history) == 22
                for i, a in enumerate(labels):
                    assert a["width"] > 20 and a["height"] >= 10
                    assert a["x"] >= 0 and a["x"] + a["width"] <= viewport["width"]
                    for b in labels[i + 1 :]:
                        assert not overlap(a, b), (viewport, a, b)
                    for t in tracks:
                        assert not overlap(a, t), (viewport, a, t)
                    size = page.evaluate(
                        "e => parseFloat(getComputedStyle(e).fontSize)",
                        page.locator("#timeline .tl-label").nth(i).element_handle(),
                    )
                    assert size >= 11
                for t in tracks:
                    assert t["width"] >= 100, (viewport, t)  # a bar has room to be seen
                shown = page.locator("#timeline .tl-label").all_inner_texts()
                for entry in history:
                    if entry.kind == "step":
                        assert f"#{entry.position} Step('{entry.name}')" in shown


RECORDS = 20_000


def long_flow(path: Path) -> SQLiteStore:
    """A suspended flow of 20,000 records (some 27 MB of JSON to show all of it)."""
    store = SQLiteStore(path)
    t = store.clock.time() - 3600
    pad = "x" * 1300
    records = [
        StoredRecord(n, "step", f"s{n}", COMPLETED, json.dumps({"n": n, "pad": pad}), None, 1, t, t)
        for n in range(RECORDS - 1)
    ]
    records.append(StoredRecord(RECORDS - 1, "suspend", "go", WAITING, started_at=t))
    store.put_flow(
        StoredFlow(
            id="long",
            name="ops-long",
            status="suspended",
            input="null",
            created_at=t,
            updated_at=t,
            waiting_for="go",
            wait_kind="suspend",
            records=tuple(records),
        )
    )
    return store


def test_a_20000_record_flow_pages_and_refreshes_only_what_changed(
    browser: Any, tmp_path: Path
) -> None:
    store = long_flow(tmp_path / "crux.db")
    with serve(tmp_path / "crux.db", "--refresh", "1") as url, viewing(browser, DESKTOP) as page:
        sizes: list[tuple[str, int]] = []
        page.on("response", lambda r: sizes.append((r.url, len(r.body()))))
        navigations: list[str] = []
        page.on("framenavigated", lambda f: navigations.append(f.url))
        first = page.goto(url + "flows/long")
        assert first is not None and len(first.body()) < 2_000_000
        expect(page.locator("#history li[data-position]")).to_have_count(200)
        page.wait_for_timeout(2500)  # two refreshes while nothing changes
        t = store.clock.time()
        assert store.claim("long", "me", t) is not None
        store.commit(
            "long",
            "me",
            t,
            Write(
                records=(
                    StoredRecord(RECORDS - 1, "suspend", "go", COMPLETED, '"yes"', None, 0, t, t),
                    StoredRecord(RECORDS, "step", "ship", COMPLETED, '"shipped"', None, 1, t, t),
                ),
                status="completed",
                result='"done"',
            ),
        )
        expect(page.locator('#status[data-status="completed"]')).to_have_count(1, timeout=8000)
        expect(page.locator(f'#history li[data-position="{RECORDS}"]')).to_have_count(1)
        expect(page.locator(f'#history li[data-position="{RECORDS - 1}"]')).to_have_attribute(
            "data-state", "completed"
        )
        expect(page.locator("#history li[data-position]")).to_have_count(201)
        expect(page.locator("#timeline rect.bar")).to_have_count(201)
        assert navigations == [url + "flows/long"]  # refreshed in place, never reloaded
        refreshes = [size for address, size in sizes if "?tail=" in address]
        assert len(refreshes) >= 2 and max(refreshes) < 50_000, refreshes
        page.locator("#history-first").click()
        expect(page.locator("#history li[data-position]").first).to_have_attribute(
            "data-position", "0"
        )


def test_a_traceback_hides_crux_gen_frames_until_asked(browser: Any, tmp_path: Path) -> None:
    ids = scene(tmp_path / "crux.db")
    failed = ids["declined"][0]
    with (
        serve(tmp_path / "crux.db", "--refresh", str(STILL)) as url,
        viewing(browser, DESKTOP) as page,
    ):
        page.goto(url + "flows/" + urllib.parse.quote(failed, safe=""))
        short = page.locator("#error pre.traceback:not(.traceback-full)")
        expect(short).to_be_visible()
        assert "/crux_gen/" not in short.inner_text()
        assert "decline" in short.inner_text()
        full = page.locator("#error pre.traceback-full")
        expect(full).to_be_hidden()
        page.locator("#error details.all-frames > summary").click()
        expect(full).to_be_visible()
        assert "/crux_gen/" in full.inner_text()


def test_a_failed_group_is_retried_in_bulk_after_a_confirmation_saying_how_many(
    browser: Any, tmp_path: Path
) -> None:
    ids = scene(tmp_path / "crux.db")
    store = ids["store"]
    options = ("--refresh", str(STILL), "--allow-actions", "--token", TOKEN)
    with serve(tmp_path / "crux.db", *options) as url, viewing(browser, DESKTOP) as page:
        page.goto(f"{url}errors?token={TOKEN}")
        groups = page.locator("#error-groups tr.error-group")
        expect(groups).to_have_count(7)  # the cards' two, and each parent order's own
        assert [g.get_attribute("data-count") for g in groups.all()] == ["3", "2"] + ["1"] * 5
        groups.first.locator("a.group-link").click()
        rows = page.locator("#flows tbody tr[data-status]")
        expect(rows).to_have_count(3)
        assert {r.get_attribute("data-flow-id") for r in rows.all()} == set(ids["declined"])
        page.locator("#bulk-retry button").click()
        go = page.locator("#bulk-go")
        expect(go).to_have_attribute("data-count", "3")
        expect(go).to_have_text("retry 3 flows")
        for flow_id in ids["declined"]:  # nothing yet
            assert get_flow(flow_id, store=store).status == "failed"
        go.click()
        expect(page.locator('#bulk-outcomes li[data-ok="yes"]')).to_have_count(3)
        for flow_id in ids["declined"]:
            assert get_flow(flow_id, store=store).status != "failed"
        for flow_id in ids["expired"]:
            assert get_flow(flow_id, store=store).status == "failed"
        done = [resume(f, store=store, flows=[payment]).status for f in ids["declined"]]
        assert done == ["failed"] * 3  # the card is still declined: they ran again
