"""The flow page for an on-call engineer (issue 20), at the WSGI level: where the flow
is, who holds its lease and until when, the attempts so far; tracebacks without
crux_gen's own frames (all of them one click away); a 20-branch timeline with one
row and one whole label per command; a 20,000-record history sent a window at a
time, and a refresh that answers only the records from the first that may still
change. In Chromium: ``tests/test_ui_browser_ops.py``."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crux_gen import All, FakeClock, FlowContext, Retry, Step, flow, get_flow
from crux_gen.records import COMPLETED, WAITING, StoredFlow, StoredRecord, Write
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.ui import make_app
from crux_gen.ui.timeline import LABEL

from .test_ui import Page, call, flow_path, section


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    opened: Any = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "crux.db", clock=clock)
    )
    yield opened
    opened.close()


def text_of(page: Page, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(dd|code|time|pre)>', page.text, re.S)
    assert found is not None, f"no #{element_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self) -> str:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the API timed out")
        return "done"


flaky = Flaky(10)


@flow("fp-retries")
def retries(ctx: FlowContext) -> Any:
    yield Step("prepare", lambda: 1)
    return (yield Step("call-api", flaky, retry=Retry(attempts=5, delay="1m")))


def test_the_page_says_which_command_a_retrying_flow_is_on_and_its_attempts(
    store: Any, clock: FakeClock
) -> None:
    flaky.failures = 10
    flow_id = retries.run(store=store).flow_id
    clock.advance("2m")
    retries.run(store=store, resume=flow_id)
    page = call(make_app(store), flow_path(flow_id))
    assert 'id="where" data-position="1"' in page.text
    assert text_of(page, "where-command") == "Step('call-api')"
    assert 'data-attempts="2" data-step-attempts="3"' in page.text
    assert text_of(page, "attempts") == "2 of this command, 3 step attempts in this run"
    assert text_of(page, "lease") == "nobody holds it"


def test_a_running_flow_shows_who_holds_its_lease_and_until_when(
    store: Any, clock: FakeClock
) -> None:
    store.start("held", "fp-retries", "null", "worker-7 <b>pid 42</b>", clock.time())
    page = call(make_app(store), flow_path("held"))
    assert text_of(page, "lease-owner") == "worker-7 <b>pid 42</b>"
    assert "<b>pid" not in page.text
    until = store.load("held").lease_expires
    assert until == clock.time() + 30
    assert text_of(page, "lease-until") == "2026-01-01 00:00:30Z"
    assert "running its first command" in text_of(page, "where")


def boom() -> None:
    raise KeyError("sku-<1>")


@flow("fp-fails")
def fails(ctx: FlowContext) -> Any:
    yield Step("lookup", boom)


def test_a_traceback_hides_crux_gen_frames_and_a_toggle_shows_them(store: Any) -> None:
    flow_id = fails.run(store=store).flow_id
    stored = get_flow(flow_id, store=store).error
    assert stored is not None and "crux_gen" in stored.traceback  # the engine's frames
    page = call(make_app(store), flow_path(flow_id))
    error = section(page, "error")
    short = re.search(r'<pre class="traceback">(.*?)</pre>', error, re.S)
    full = re.search(r'<pre class="traceback traceback-full">(.*?)</pre>', error, re.S)
    assert short is not None and full is not None
    shown, whole = html.unescape(short.group(1)), html.unescape(full.group(1))
    assert whole == stored.traceback
    frames = re.findall(r'^  File "([^"]*)"', shown, re.M)
    assert frames and all("/crux_gen/" not in f for f in frames)
    assert any(f.endswith("test_ui_flowpage.py") for f in frames)
    hidden = len(re.findall(r'^  File "[^"]*/crux_gen/', whole, re.M))
    assert hidden > 0
    notes = [int(n) for n in re.findall(r"^  \((\d+) crux_gen frames? hidden\)$", shown, re.M)]
    assert sum(notes) == hidden
    assert f"({hidden} crux_gen frame" in error  # the summary says how many
    assert shown.rstrip().endswith("KeyError: 'sku-<1>'")
    assert "sku-&lt;1&gt;" in error and "sku-<1>" not in error


@flow("fp-branches")
def branches(ctx: FlowContext) -> Any:
    return (
        yield All(
            [Step(f"notify-warehouse-region-{n:02d}-of-twenty", lambda n=n: n) for n in range(20)]
        )
    )


def test_twenty_branches_have_a_row_and_a_whole_label_each(store: Any) -> None:
    flow_id = branches.run(store=store).flow_id
    history = get_flow(flow_id, store=store).history
    page = call(make_app(store), flow_path(flow_id))
    rows = re.findall(
        r'<div class="tl-row" data-position="(\d+)">\s*<span class="tl-label" title="[^"]*">'
        r"([^<]*)</span>",
        page.text,
    )
    assert [int(p) for p, _ in rows] == [h.position for h in history]
    labels = {int(p): html.unescape(label) for p, label in rows}
    steps = [h for h in history if h.kind == "step"]
    assert len(steps) == 20
    for h in steps:  # each branch's label whole, on its own row
        assert labels[h.position] == f"#{h.position} Step('{h.name}')"
    [group] = [h for h in history if h.kind == "all"]
    assert len(labels[group.position]) == LABEL  # cut, whole in its title
    assert labels[group.position].endswith("…")


# -- a long history --------------------------------------------------------------------

RECORDS = 20_000
BIG = "x" * 1200  # about what a step result of the 27 MB flow weighed


@pytest.fixture(params=["memory", pytest.param("sqlite", marks=pytest.mark.slow)])
def big_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    """A store for a 24 MB history: SQLite's (a second or two) is left out of the fast loop."""
    opened: Any = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "crux.db", clock=clock)
    )
    yield opened
    opened.close()


def long_flow(store: Any, clock: FakeClock) -> str:
    """A suspended flow of 20,000 records: 19,999 completed steps and a waiting Suspend."""
    t = clock.time()
    records = [
        StoredRecord(n, "step", f"s{n}", COMPLETED, json.dumps({"n": n, "pad": BIG}), None, 1, t, t)
        for n in range(RECORDS - 1)
    ]
    records.append(StoredRecord(RECORDS - 1, "suspend", "go", WAITING, started_at=t))
    store.put_flow(
        StoredFlow(
            id="long",
            name="fp-long",
            status="suspended",
            input="null",
            created_at=t,
            updated_at=t,
            waiting_for="go",
            wait_kind="suspend",
            records=tuple(records),
        )
    )
    return "long"


def positions(text: str) -> list[int]:
    return [int(p) for p in re.findall(r'<li data-position="(\d+)"', text)]


def test_a_20000_record_flow_is_sent_a_window_at_a_time(big_store: Any, clock: FakeClock) -> None:
    store = big_store
    flow_id = long_flow(store, clock)
    app = make_app(store)
    page = call(app, flow_path(flow_id))
    assert page.status == 200
    assert len(page.text.encode()) < 2_000_000
    assert positions(page.text) == list(range(RECORDS - 200, RECORDS))
    assert 'id="history-count">20000 recorded, #19800 to #19999 shown' in page.text
    assert 'data-start="19800" data-from="19999" data-count="20000"' in page.text
    first = call(app, flow_path(flow_id) + "?start=0")
    assert positions(first.text) == list(range(200))
    assert 'id="history-later" href="/flows/long?start=200"' in first.text
    assert positions(call(app, flow_path(flow_id) + "?start=400").text) == list(range(400, 600))
    assert positions(call(app, flow_path(flow_id) + "?start=99999").text)[0] == 19800
    assert call(app, flow_path(flow_id) + "?start=x").status == 400


def tail(app: Any, query: str) -> dict[str, Any]:
    page = call(app, flow_path("long") + query)
    assert page.status == 200 and page.headers["Content-Type"] == "application/json"
    data: dict[str, Any] = json.loads(page.text)
    data["size"] = len(page.text)
    return data


def test_the_refresh_answers_only_the_records_that_may_have_changed(
    big_store: Any, clock: FakeClock
) -> None:
    store = big_store
    flow_id = long_flow(store, clock)
    app = make_app(store)
    quiet = tail(app, "?tail=19999&start=19800")
    assert positions(quiet["items"]) == [19999]  # the waiting Suspend only
    assert (quiet["status"], quiet["count"], quiet["next"]) == ("suspended", RECORDS, 19999)
    assert quiet["size"] < 20_000

    clock.advance("1m")
    t = clock.time()
    assert store.claim(flow_id, "me", t) is not None
    store.commit(
        flow_id,
        "me",
        t,
        Write(
            records=(
                StoredRecord(19999, "suspend", "go", COMPLETED, '"yes"', None, 0, t - 60, t),
                StoredRecord(20000, "step", "ship", COMPLETED, '"shipped"', None, 1, t, t),
            ),
            status="completed",
            result='"done"',
        ),
    )
    moved = tail(app, "?tail=19999&start=19800")
    assert positions(moved["items"]) == [19999, 20000]
    assert re.findall(r'data-position="(\d+)"', moved["rows"]) == [
        "19999",
        "19999",
        "20000",
        "20000",
    ]
    assert (moved["status"], moved["count"], moved["next"]) == (
        "completed",
        RECORDS + 1,
        RECORDS + 1,
    )
    assert 'data-status="completed"' in moved["head"]
    assert moved["shown"].strip() == "20001 recorded, #19800 to #20000 shown"
    assert moved["size"] < 40_000
    assert tail(app, "?tail=20001&start=19800")["items"] == ""
    earlier = tail(app, "?tail=400&start=200&head=1")
    assert earlier["items"] == "" and 'data-status="completed"' in earlier["head"]
    assert tail(app, "?tail=20005&start=19800")["reload"] is True  # records the page lacks
    assert tail(app, "?tail=100&start=0")["reload"] is True  # too many to add


def test_a_started_flow_shows_pending_with_its_priority_and_what_blocks_it(store: Any) -> None:
    from crux_gen import Exclusive, Suspend

    @flow("ui-one-at-a-time", exclusive=Exclusive(key=lambda i: i["k"]))
    def one(ctx: FlowContext) -> Any:
        return (yield Suspend("go"))

    holder = one.start(input={"k": "a"}, store=store, flow_id="holder-<1>")
    queued = one.start(input={"k": "a"}, store=store, priority=4)
    app = make_app(store)
    page = call(app, flow_path(queued.flow_id))
    assert page.status == 200
    assert 'data-status="pending"' in page.text and "not started yet" in page.text
    assert text_of(page, "priority") == "4"
    assert text_of(page, "blocked-by") == holder.flow_id  # escaped, shown as stored
    assert "holder-<1>" not in page.text  # never raw
    free = call(app, flow_path(holder.flow_id))
    assert 'id="blocked-by"' not in free.text and 'id="priority"' not in free.text
