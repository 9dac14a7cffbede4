"""The dashboard (``crux_gen.ui.make_app``, ``crux-gen ui``) at the WSGI level: what
each page shows of the store, escaping, paging, the token and CSRF checks, a
mount under a prefix, and the CLI serving it in a real subprocess. The pages in
a real browser: ``tests/test_ui_browser.py``."""

from __future__ import annotations

import html
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlencode, urlsplit
from wsgiref.util import setup_testing_defaults

import attrs
import pytest

from crux_gen import (
    All,
    Child,
    ContinueAsNew,
    FakeClock,
    FlowContext,
    Retry,
    Sleep,
    Step,
    Suspend,
    WaitUntil,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen import Any as AnyOf
from crux_gen.errors import InvalidValueError, StoreError
from crux_gen.records import StoredFlow
from crux_gen.stores.caps import Caps
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.ui import make_app

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
TOKEN = "t0ken-for-tests"


# -- flows in every status -------------------------------------------------------------


@flow("ui-waits")
def waits(ctx: FlowContext) -> Any:
    sent = yield Step("send-email", lambda: {"to": ctx.input["email"]})
    answer = yield Suspend("email-verified", timeout="1h")
    return {"sent": sent, "answer": answer}


class CardDeclined(Exception):
    pass


def decline() -> None:
    raise CardDeclined("card ending 4242 was declined")


@flow("ui-fails")
def fails(ctx: FlowContext) -> Any:
    yield Step("reserve", lambda: "ok")
    yield Step("charge-card", decline)


@flow("ui-echo")
def echo(ctx: FlowContext) -> Any:
    value = yield Step("echo", lambda: ctx.input)
    got = yield Suspend("reply")
    return [value, got]


@attrs.define
class Scene:
    suspended: str
    completed: str
    failed: str
    cancelled: str
    expired: str


def scene(store: Any, clock: FakeClock) -> Scene:
    """One flow in each status but running (a run goes on until it parks or ends)."""
    suspended = waits.run(store=store, input={"email": "ada@example.com"}).flow_id
    clock.advance("1s")
    completed = waits.run(store=store, input={"email": "bob@example.com"}).flow_id
    signal_flow(completed, "email-verified", {"at": "noon"}, store=store, key="k-1")
    signal_flow(completed, "late", [1, 2], store=store)  # never waited for: unused
    clock.advance("1s")
    waits.run(store=store, resume=completed)
    clock.advance("1s")
    failed = fails.run(store=store).flow_id
    clock.advance("1s")
    cancelled = waits.run(store=store, input={"email": "cy@example.com"}).flow_id
    cancel_flow(cancelled, "account deleted", store=store)
    clock.advance("1s")
    expired = waits.run(store=store, input={"email": "di@example.com"}).flow_id
    clock.advance("2h")
    waits.run(store=store, resume=expired)
    return Scene(suspended, completed, failed, cancelled, expired)


# -- calling the app -------------------------------------------------------------------


@attrs.frozen
class Page:
    status: int
    headers: dict[str, str]
    text: str

    def links(self) -> list[str]:
        """Every href, src and form action of the page."""
        return Links.of(self.text)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "action") and value is not None:
                self.found.append(value)

    @classmethod
    def of(cls, text: str) -> list[str]:
        parser = cls()
        parser.feed(text)
        return parser.found


App = Callable[[dict[str, Any], Any], Iterable[bytes]]


def call(
    app: App,
    path: str = "/",
    *,
    method: str = "GET",
    form: dict[str, str] | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    script_name: str = "",
    query: str | None = None,
) -> Page:
    """Call *app* as a WSGI server would for *path* (a URL path, with its query; with
    *query*, *path* is the raw ``PATH_INFO``, such as ``//evil.example/``)."""
    parts = urlsplit(path)
    path_info = unquote_to_bytes(parts.path).decode("latin-1") if query is None else path
    body = urlencode(form).encode() if form is not None else b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        # PEP 3333: the path's bytes, percent-decoded, as latin-1 text.
        "PATH_INFO": path_info,
        "QUERY_STRING": parts.query if query is None else query,
        "SCRIPT_NAME": script_name,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(response_headers)

    out = b"".join(app(environ, start_response))
    return Page(seen["status"], seen["headers"], out.decode("utf-8"))


def flow_path(flow_id: str) -> str:
    return "/flows/" + quote(flow_id, safe="")


def counts(page: Page) -> dict[str, str]:
    return dict(re.findall(r'<span class="count" data-status="(\w+)">([^<]*)</span>', page.text))


def row_ids(page: Page) -> list[str]:
    return re.findall(r'<tr data-flow-id="([^"]*)"', page.text)


def section(page: Page, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', page.text, re.S)
    assert found is not None, f"no section {name!r} in the page"
    return found.group(1)


def log_in(app: App, script_name: str = "") -> str:
    """Visit ``/?token=…`` and return the session cookie it sets."""
    page = call(app, "/?token=" + TOKEN, script_name=script_name)
    assert page.status == 303
    assert page.headers["Location"] == f"{script_name}/"
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert f"Path={script_name}/" in cookie
    return cookie.split(";")[0]


def csrf_of(page: Page) -> str:
    """The CSRF field of the page's forms (a page for a viewer without a session has none)."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


# -- the flows page --------------------------------------------------------------------


def test_counts_show_every_status_with_how_many_flows_have_it(store: Any, clock: FakeClock) -> None:
    scene(store, clock)
    waits.run(store=store, input={"email": "ed@example.com"})
    page = call(make_app(store))
    assert page.status == 200
    assert counts(page) == {
        "pending": "0",
        "running": "0",
        "suspended": "2",
        "completed": "1",
        "failed": "1",
        "expired": "1",
        "cancelled": "1",
        "paused": "0",
    }


def test_count_flows_counts_by_status_in_one_query_on_every_store(
    store: Any, clock: FakeClock
) -> None:
    assert store.count_flows() == {}
    scene(store, clock)
    assert store.count_flows() == {
        "suspended": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
        "expired": 1,
    }


def test_a_store_without_count_flows_is_counted_by_one_capped_page_per_status(
    store: Any, clock: FakeClock
) -> None:
    class Plain:
        """A store of a user's own: listings, but no count_flows."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.clock = inner.clock

        def list_flows(self, **kwargs: Any) -> Any:
            return self.inner.list_flows(**kwargs)

    scene(store, clock)
    assert counts(call(make_app(Plain(store))))["failed"] == "1"


def test_the_table_lists_flows_newest_first_with_their_wait_and_links(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    page = call(make_app(store))
    assert row_ids(page) == [s.expired, s.cancelled, s.failed, s.completed, s.suspended]
    row = re.search(
        rf'<tr data-flow-id="{s.suspended}" data-status="suspended">(.*?)</tr>', page.text, re.S
    )
    assert row is not None
    assert f'<a class="flow-link" href="/flows/{s.suspended}">' in row.group(1)
    assert '<td class="waiting">email-verified</td>' in row.group(1)
    assert "2026-01-01 01:00:00Z" in row.group(1)  # wake at: the wait's deadline
    assert 'id="next-page"' not in page.text


def test_the_filter_by_status_and_name_shows_only_matching_flows(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store)
    failed = call(app, "/?status=failed&name=")
    assert row_ids(failed) == [s.failed]
    assert '<option value="failed" selected>' in failed.text
    named = call(app, "/?status=&name=ui-fails")
    assert row_ids(named) == [s.failed]
    assert 'name="name" value="ui-fails"' in named.text
    both = call(app, "/?status=suspended&name=ui-waits")
    assert row_ids(both) == [s.suspended]
    none = call(app, "/?status=completed&name=ui-fails")
    assert row_ids(none) == [] and "no flows match this filter" in none.text
    # The counts stay those of the whole store.
    assert counts(both)["cancelled"] == "1"


def test_a_bad_filter_is_a_400_page_that_says_why(store: Any) -> None:
    app = make_app(store)
    bad = call(app, "/?status=sleeping")
    assert bad.status == 400 and "status &#39;sleeping&#39; is none of" in bad.text
    bad = call(app, "/?before=yesterday")
    assert bad.status == 400 and "is not an ISO date" in bad.text


def test_a_nul_character_in_any_input_is_a_clear_400_on_every_store(
    store: Any, clock: FakeClock
) -> None:
    """Issue 18, item 15: no store can hold a NUL (PostgreSQL's text cannot), so no
    flow name, flow id, signal key or cancel reason has one; the dashboard says so
    naming the value, on every store alike, instead of a 503 from PostgreSQL."""
    waiting = echo.run(store=store, input=1).flow_id
    app = make_app(store, allow_actions=True, token=TOKEN)
    for query in ("name=%00", "name=ui-echo%00", "status=suspended&name=a%00b"):
        page = call(app, "/?" + query)
        assert page.status == 400, query
        assert "NUL" in page.text and "\\x00" in html.unescape(page.text), query
        assert row_ids(page) == []
    missing = call(app, "/flows/a%00b")
    assert missing.status == 404 and "NUL" in missing.text
    cookie = log_in(app)
    csrf = csrf_of(call(app, flow_path(waiting), cookie=cookie))
    for form in (
        {"action": "signal", "name": "reply", "payload": "1", "key": "k\x00"},
        {"action": "signal", "name": "reply\x00", "payload": "1"},
        {"action": "cancel", "reason": "gone\x00"},
    ):
        page = call(
            app, flow_path(waiting), method="POST", cookie=cookie, form={"csrf": csrf, **form}
        )
        assert page.status == 400, form
        assert "NUL" in page.text and "nothing was" in page.text, form
    info = get_flow(waiting, store=store)
    assert (info.status, info.signals) == ("suspended", ())


def test_sixty_flows_page_in_two_pages_newest_first_and_none_twice(
    store: Any, clock: FakeClock
) -> None:
    ids = []
    for _ in range(60):
        ids.append(waits.run(store=store, input={"email": "x@example.com"}).flow_id)
        clock.advance("1s")
    fails.run(store=store)  # another status: the filter keeps it out
    app = make_app(store)
    first = call(app, "/?status=suspended")
    assert len(row_ids(first)) == 50
    found = re.search(r'<a id="next-page" href="([^"]+)"', first.text)
    assert found is not None
    next_url = found.group(1).replace("&amp;", "&")
    assert next_url.startswith("/?") and "status=suspended" in next_url and "before=" in next_url
    second = call(app, next_url)
    assert 'id="next-page"' not in second.text
    assert 'id="first-page" href="/?status=suspended"' in second.text
    assert row_ids(first) + row_ids(second) == ids[::-1]


def test_flows_updated_at_the_same_instant_are_never_split_across_two_pages(
    store: Any, clock: FakeClock
) -> None:
    # Three bursts of 30 flows, each burst at one instant: a page may not end inside
    # one (the next page's `before` would skip the rest of it, or show it twice).
    ids = []
    for _ in range(3):
        for _ in range(30):
            ids.append(waits.run(store=store, input={"email": "x@example.com"}).flow_id)
        clock.advance("1s")
    app = make_app(store)
    seen: list[str] = []
    url: str | None = "/"
    while url is not None:
        page = call(app, url)
        seen += row_ids(page)
        found = re.search(r'<a id="next-page" href="([^"]+)"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 90


def test_a_page_ends_between_flows_that_differ_in_the_store_below_a_microsecond(
    tmp_path: Path,
) -> None:
    # Stores keep float seconds: 100 flows 0.3 µs apart round to a handful of distinct
    # microseconds in the page's links. Every flow still shows exactly once.
    store = SQLiteStore(tmp_path / "crux.db", synchronous="NORMAL")
    base = 1_767_225_600.0
    for n in range(100):
        at = base + n * 3e-7
        store.put_flow(
            StoredFlow(
                id=f"f{n:03}",
                name="burst",
                status="completed",
                input="null",
                created_at=at,
                updated_at=at,
            )
        )
    store.put_flow(
        StoredFlow(
            id="old",
            name="burst",
            status="completed",
            input="null",
            created_at=base - 60,
            updated_at=base - 60,
        )
    )
    app = make_app(store)
    seen: list[str] = []
    url: str | None = "/"
    while url is not None:
        page = call(app, url)
        seen += row_ids(page)
        found = re.search(r'<a id="next-page" href="([^"]+)"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(seen) == sorted([f"f{n:03}" for n in range(100)] + ["old"])
    assert len(seen) == len(set(seen))
    store.close()


# -- the flow page ---------------------------------------------------------------------


def test_the_flow_page_shows_input_status_timeline_history_and_signals(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store)
    page = call(app, flow_path(s.completed))
    assert page.status == 200
    assert f'<h1 id="flow-id">{s.completed}</h1>' in page.text
    assert '<span id="status" data-status="completed"' in page.text
    assert "bob@example.com" in re.search(r'<pre id="input">(.*?)</pre>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert '<a id="back" href="/">' in page.text
    timeline = section(page, "timeline")
    assert "<svg" in timeline
    bars = re.findall(r'<rect class="bar" data-name="([^"]*)" data-state="([^"]*)"', timeline)
    assert bars == [("send-email", "completed"), ("email-verified", "completed")]
    history = section(page, "history")
    items = re.findall(r'<li data-position="(\d+)" data-state="(\w+)"', history)
    assert items == [("0", "completed"), ("1", "completed")]
    assert history.count('<pre class="result">') == 2
    assert "noon" in history  # the Suspend's result: the signal's payload
    signals = section(page, "signals")
    assert re.findall(r'<li data-signal-id="(\d+)" data-state="(\w+)"', signals) == [
        (str(get_flow(s.completed, store=store).signals[0].id), "consumed"),
        (str(get_flow(s.completed, store=store).signals[1].id), "unused"),
    ]
    assert "k-1" in signals  # the idempotency key
    assert "still pending when the flow finished" in signals


def test_a_failed_flow_shows_the_error_with_its_traceback_and_marks_the_bar(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    page = call(make_app(store), flow_path(s.failed))
    assert '<span id="status" data-status="failed"' in page.text
    error = section(page, "error")
    assert "CardDeclined: card ending 4242 was declined" in error
    assert '<pre class="traceback">' in error and "decline" in error
    assert 'data-name="charge-card" data-state="failed"' in section(page, "timeline")
    assert '<span class="mark" data-state="failed">✗' in section(page, "timeline")
    failed_item = re.search(r'<li data-position="1" data-state="failed".*?</li>', page.text, re.S)
    assert failed_item is not None and '<pre class="error">' in failed_item.group(0)


def test_a_suspended_flow_shows_what_it_waits_for_and_a_cancelled_one_why(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store)
    waiting = call(app, flow_path(s.suspended))
    assert '<code id="waiting-for">email-verified</code>' in waiting.text
    assert 'data-name="email-verified" data-state="waiting"' in waiting.text
    cancelled = call(app, flow_path(s.cancelled))
    assert "reason: account deleted" in cancelled.text
    expired = call(app, flow_path(s.expired))
    assert 'data-status="expired"' in expired.text


def test_a_long_result_is_cut_and_shown_whole_in_a_details(store: Any) -> None:
    r = echo.run(store=store, input={"text": "x" * 500})
    page = call(make_app(store), flow_path(r.flow_id))
    short = re.search(r'<pre class="result">(.*?)</pre>', page.text, re.S)
    assert short is not None and short.group(1).endswith("…")
    assert len(html.unescape(short.group(1))) == 200
    assert re.search(
        r'<details data-key="result-0"><summary>show all</summary><pre class="full">', page.text
    )
    assert "x" * 500 in page.text


def test_an_unknown_flow_is_a_404_page(store: Any) -> None:
    page = call(make_app(store), "/flows/no-such-flow")
    assert page.status == 404
    assert "no-such-flow" in page.text and '<meta name="crux-refresh"' in page.text
    assert call(make_app(store), "/nothing/here").status == 404


def test_a_corrupt_row_is_a_500_page_with_the_message_and_no_traceback(store: Any) -> None:
    store.put_flow(
        StoredFlow(
            id="broken",
            name="ui-waits",
            status="suspended",
            input="{not json",
            created_at=1_767_225_600.0,
            updated_at=1_767_225_600.0,
        )
    )
    app = make_app(store)
    page = call(app, "/flows/broken")
    assert page.status == 500
    assert "stored input cannot be decoded" in page.text
    assert "Traceback" not in page.text and "File " not in page.text
    assert row_ids(call(app, "/")) == ["broken"]  # the listing reads no payload


def test_store_values_are_escaped_and_never_become_markup(store: Any) -> None:
    r = echo.run(store=store, input={"a": XSS[0], "b": XSS[1], XSS[0]: "key"})
    signal_flow(r.flow_id, "other", XSS, store=store, key=XSS[1])
    signal_flow(r.flow_id, XSS[0], XSS[1], store=store)
    app = make_app(store, allow_actions=True, token=TOKEN)
    for page in (call(app, flow_path(r.flow_id)), call(app, "/?name=" + quote(XSS[0]))):
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "onerror=alert(1)>" not in page.text
    page = call(app, flow_path(r.flow_id))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(page, "history")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;script&gt;" in section(page, "signals")
    # The only scripts are our own file.
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/ui.js" defer>']
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_a_flow_id_with_slashes_and_spaces_has_working_links(store: Any) -> None:
    flow_id = "team/a b?c#d&é"
    echo.run(store=store, input=1, flow_id=flow_id)
    app = make_app(store)
    listing = call(app, "/")
    link = re.search(r'<a class="flow-link" href="([^"]+)"', listing.text)
    assert link is not None
    href = link.group(1).replace("&amp;", "&")
    assert href == flow_path(flow_id)
    page = call(app, href)
    assert page.status == 200 and '<h1 id="flow-id">team/a b?c#d&amp;é</h1>' in page.text


def test_every_page_says_how_often_it_reloads_and_serves_its_script(store: Any) -> None:
    r = echo.run(store=store, input=1)
    app = make_app(store, refresh_seconds=5)
    for path in ("/", flow_path(r.flow_id), "/flows/missing"):
        assert '<meta name="crux-refresh" content="5">' in call(app, path).text
    script = call(app, "/static/ui.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "location.replace(location.href)" in script.text  # the same address: the filter stays
    assert call(app, "/static/ui.css").status == 200
    assert call(app, "/static/nope.js").status == 404
    assert call(app, "/favicon.ico").status == 204
    head = call(app, "/", method="HEAD")
    assert head.status == 200 and head.text == ""


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self) -> str:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the API timed out")
        return "done"


def test_a_retried_step_shows_its_attempts_and_its_retrying_state(
    store: Any, clock: FakeClock
) -> None:
    flaky = Flaky(2)

    @flow("ui-flaky")
    def retried(ctx: FlowContext) -> Any:
        return (yield Step("call-api", flaky, retry=Retry(attempts=3, delay="1m")))

    r = retried.run(store=store)
    app = make_app(store)
    page = call(app, flow_path(r.flow_id))
    bar = re.search(
        r'<rect class="bar" data-name="call-api" data-state="retrying"[^>]*>', page.text
    )
    assert bar is not None and 'data-attempts="1"' in bar.group(0)
    item = re.search(r'<li data-position="0" data-state="retrying".*?</li>', page.text, re.S)
    assert item is not None and "TimeoutError: the API timed out" in item.group(0)
    assert "next try 2026-01-01 00:01:00Z" in item.group(0)
    for _ in range(2):
        clock.advance("5m")
        retried.run(store=store, resume=r.flow_id)
    page = call(app, flow_path(r.flow_id))
    assert (
        'data-name="call-api" data-state="completed" data-position="0" data-attempts="3"'
        in page.text
    )
    assert re.search(r'<span class="mark" data-state="completed"[^>]*>\u00d73</span>', page.text)


def test_a_store_that_fails_is_a_503_page_and_a_bug_a_500_without_its_traceback(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    class Down:
        clock = store.clock
        caps = Caps(where="Down", counts=True)

        def count_flows(self) -> dict[str, int]:
            raise StoreError("database is locked")

        def load(self, flow_id: str) -> Any:
            raise RuntimeError("a bug")

    app = make_app(Down())
    page = call(app, "/")
    assert page.status == 503 and "database is locked" in page.text
    page = call(app, "/flows/x")
    assert page.status == 500 and "a bug" not in page.text and "Traceback" not in page.text
    assert "RuntimeError: a bug" in capsys.readouterr().err  # wsgi.errors has it


# -- read-only, and actions ------------------------------------------------------------


def test_read_only_has_no_forms_and_refuses_every_post_with_405(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store)
    page = call(app, flow_path(s.failed))
    assert "<form id=" not in page.text.replace('<form id="filter"', "")
    for path in (flow_path(s.suspended), "/"):
        refused = call(app, path, method="POST", form={"action": "cancel", "reason": "x"})
        assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD"
    assert get_flow(s.suspended, store=store).status == "suspended"
    # A token in the address changes nothing either.
    assert call(app, "/?token=" + TOKEN).status == 200


def test_make_app_with_actions_needs_a_token(store: Any) -> None:
    with pytest.raises(InvalidValueError, match="token"):
        make_app(store, allow_actions=True)


def test_an_action_without_the_token_or_the_csrf_field_is_403_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store, allow_actions=True, token=TOKEN)
    page = call(app, flow_path(s.suspended))
    assert 'id="actions-locked"' in page.text  # the forms show, and say they need the token
    assert 'name="csrf"' not in page.text  # and carry no CSRF value: no session has one
    cookie = log_in(app)
    csrf = csrf_of(call(app, flow_path(s.suspended), cookie=cookie))
    cancel = {"action": "cancel", "reason": "x"}
    attempts = [
        {"form": {**cancel, "csrf": csrf}},  # no token
        {"form": {**cancel, "csrf": csrf}, "cookie": "crux_ui_session=forged"},
        {"form": {**cancel, "csrf": csrf}, "headers": {"Authorization": "Bearer wrong"}},
        {"form": cancel, "cookie": cookie},  # no CSRF field
        {"form": {**cancel, "csrf": "0" * 64}, "cookie": cookie},
        {"form": cancel, "headers": {"Authorization": f"Bearer {TOKEN}"}},
    ]
    for attempt in attempts:
        refused = call(app, flow_path(s.suspended), method="POST", **attempt)  # type: ignore[arg-type]
        assert refused.status == 403, attempt
        assert "nothing was changed" in refused.text
    assert get_flow(s.suspended, store=store).status == "suspended"
    assert call(app, "/?token=wrong").status == 403


def test_signal_cancel_and_retry_from_the_flow_page(store: Any, clock: FakeClock) -> None:
    s = scene(store, clock)
    waiting = echo.run(store=store, input=1).flow_id  # the scene's has expired by now
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    page = call(app, flow_path(waiting), cookie=cookie)
    assert 'id="actions-locked"' not in page.text
    assert '<form id="signal-form"' in page.text and '<form id="cancel-form"' in page.text
    assert '<form id="retry-form"' not in page.text  # only a failed flow
    csrf = csrf_of(page)

    def post(flow_id: str, **form: str) -> Page:
        return call(
            app, flow_path(flow_id), method="POST", cookie=cookie, form={"csrf": csrf, **form}
        )

    sent = post(waiting, action="signal", name="reply", payload='{"ok": true}', key="d-1")
    assert sent.status == 303 and sent.headers["Location"] == flow_path(waiting) + "?done=signal"
    assert "Signal sent" in call(app, sent.headers["Location"]).text
    again = post(waiting, action="signal", name="reply", payload="1", key="d-1")
    assert again.headers["Location"].endswith("?done=signal-kept")
    [signal] = get_flow(waiting, store=store).signals
    assert (signal.name, signal.payload, signal.key) == ("reply", {"ok": True}, "d-1")
    bad = post(waiting, action="signal", name="reply", payload="{nope")
    assert bad.status == 400 and "the payload is not JSON" in bad.text

    done = post(waiting, action="cancel", reason="asked by <b>support</b>")
    assert done.status == 303
    info = get_flow(waiting, store=store)
    assert (info.status, info.cancel_reason) == ("cancelled", "asked by <b>support</b>")
    twice = post(waiting, action="cancel", reason="again")
    assert twice.status == 409 and "only an unfinished flow can be cancelled" in twice.text
    closed = post(waiting, action="signal", name="reply", payload="1")
    assert closed.status == 409

    failed_page = call(app, flow_path(s.failed), cookie=cookie)
    assert '<form id="retry-form"' in failed_page.text
    retried = post(s.failed, action="retry")
    assert retried.status == 303
    assert get_flow(s.failed, store=store).status == "suspended"
    assert post(s.failed, action="retry").status == 409
    assert post("missing", action="retry").status == 404


def test_the_token_visit_on_any_page_comes_back_to_it_without_the_token(store: Any) -> None:
    r = echo.run(store=store, input=1)
    app = make_app(store, allow_actions=True, token=TOKEN)
    page = call(app, flow_path(r.flow_id) + "?token=" + TOKEN + "&done=x", script_name="/ops")
    assert page.status == 303
    assert page.headers["Location"] == "/ops" + flow_path(r.flow_id) + "?done=x"
    assert "Path=/ops/;" in page.headers["Set-Cookie"]


def test_an_unknown_action_an_empty_name_and_a_huge_form_are_refused(store: Any) -> None:
    r = echo.run(store=store, input=1)
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    csrf = csrf_of(call(app, flow_path(r.flow_id), cookie=cookie))
    for form, status, says in (
        ({"action": "delete"}, 400, "no action &#39;delete&#39;"),
        ({"action": "signal", "name": " "}, 400, "give the signal&#39;s name"),
        ({"action": "signal", "name": "reply", "payload": "x" * (1 << 20)}, 413, "larger than"),
    ):
        page = call(
            app, flow_path(r.flow_id), method="POST", cookie=cookie, form={"csrf": csrf, **form}
        )
        assert page.status == status and says in page.text
    assert get_flow(r.flow_id, store=store).signals == ()
    assert call(app, "/", method="POST", cookie=cookie, form={"csrf": csrf}).status == 405


def test_a_bearer_header_with_the_csrf_field_may_act(store: Any, clock: FakeClock) -> None:
    s = scene(store, clock)
    app = make_app(store, allow_actions=True, token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    csrf = csrf_of(call(app, flow_path(s.suspended), headers=bearer))
    done = call(
        app,
        flow_path(s.suspended),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
        form={"csrf": csrf, "action": "cancel", "reason": "scripted"},
    )
    assert done.status == 303
    assert get_flow(s.suspended, store=store).status == "cancelled"


# -- after ContinueAsNew, a signal is credited to the run that took it (issue 18, item 13)


@flow("ui-ticks")
def ticks(ctx: FlowContext) -> Any:
    got = yield Suspend("tick")
    if ctx.input < 2:
        yield ContinueAsNew(input=ctx.input + 1)
    last = yield AnyOf([Suspend("done"), Sleep("give-up", "1d")])
    return [got, last.name]


def history_facts(page: Page, position: int) -> str:
    item = re.search(
        rf'<li data-position="{position}" .*?<span class="facts">(.*?)</span>', page.text, re.S
    )
    assert item is not None, f"no history item #{position}"
    return item.group(1)


def taken_in(page: Page) -> dict[int, tuple[str, str]]:
    """Signal id -> (where it was taken: this-run, an-earlier-run; its facts)."""
    found = re.findall(
        r'<li data-signal-id="(\d+)" data-state="consumed" data-taken-in="([\w-]+)">'
        r'.*?<span class="facts">(.*?)</span>',
        section(page, "signals"),
        re.S,
    )
    return {int(i): (where, facts) for i, where, facts in found}


def test_after_continue_as_new_a_signal_shows_the_run_that_took_it(
    store: Any, clock: FakeClock
) -> None:
    flow_id = ticks.run(store=store, input=0).flow_id
    app = make_app(store)
    ids = []
    for run in (1, 2):  # each run takes one "tick" at #0, then continues as new
        signal_flow(flow_id, "tick", None, store=store)
        clock.advance("1s")
        assert ticks.run(store=store, resume=flow_id).status == "suspended"
        ids.append(get_flow(flow_id, store=store).signals[-1].id)
        page = call(app, flow_path(flow_id))
        assert get_flow(flow_id, store=store).run == run + 1
        assert '<dd id="run">' + str(run + 1) in page.text
        # The new run's #0 waits: no signal of an earlier run is credited to it.
        assert "took signal" not in history_facts(page, 0)
        assert 'data-name="tick" data-state="waiting"' in page.text
        shown = taken_in(page)
        assert set(shown) == set(ids)
        for signal_id in ids:
            where, facts = shown[signal_id]
            assert where == "an-earlier-run" and "an earlier run" in facts
    # The third run takes its own tick at #0: that one, and only it, is this run's.
    signal_flow(flow_id, "tick", "mine", store=store)
    clock.advance("1s")
    ticks.run(store=store, resume=flow_id)
    info = get_flow(flow_id, store=store)
    mine = info.signals[-1]
    assert (mine.position, mine.payload, info.run) == (0, "mine", 3)
    page = call(app, flow_path(flow_id))
    facts = history_facts(page, 0)
    assert f"took signal #{mine.id}" in facts and facts.count("took signal") == 1
    shown = taken_in(page)
    assert shown[mine.id][0] == "this-run" and "taken by #0" in shown[mine.id][1]
    assert "earlier" not in shown[mine.id][1]
    assert [shown[i][0] for i in ids] == ["an-earlier-run"] * 2
    # An Any of this run takes a signal: credited to it too.
    signal_flow(flow_id, "done", {"ok": True}, store=store)
    assert ticks.run(store=store, resume=flow_id).value == ["mine", "done"]
    done = get_flow(flow_id, store=store).signals[-1]
    page = call(app, flow_path(flow_id))
    assert f"took signal #{done.id}" in history_facts(page, 1)
    assert taken_in(page)[done.id][0] == "this-run"
    assert [taken_in(page)[i][0] for i in ids] == ["an-earlier-run"] * 2
    # A run-1 flow's signals are all its own.
    one = echo.run(store=store, input=1).flow_id
    signal_flow(one, "reply", 2, store=store)
    echo.run(store=store, resume=one)
    page = call(app, flow_path(one))
    assert [w for w, _ in taken_in(page).values()] == ["this-run"]
    assert 'id="run"' not in page.text


# -- per-session CSRF, no open redirect, no token in a logged URL (issue 18, item 17) ---


def test_the_csrf_value_is_per_session_and_a_viewer_without_one_sees_none(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store, allow_actions=True, token=TOKEN)
    ann, bob = log_in(app), log_in(app)
    assert ann != bob  # each visit of the token's address is a session of its own
    page_a = call(app, flow_path(s.suspended), cookie=ann)
    page_b = call(app, flow_path(s.suspended), cookie=bob)
    csrf_a, csrf_b = csrf_of(page_a), csrf_of(page_b)
    assert csrf_a != csrf_b
    assert csrf_a == csrf_of(call(app, flow_path(s.failed), cookie=ann))  # stable per session
    anonymous = call(app, flow_path(s.suspended))
    assert 'name="csrf"' not in anonymous.text
    for page in (page_a, page_b, anonymous):
        assert TOKEN not in page.text
    # The token itself is in no cookie: a session cookie names the session only.
    assert TOKEN not in ann and TOKEN not in bob
    # Another session's CSRF value (as a page shown to it would leak) is refused.
    cancel = {"action": "cancel", "reason": "x"}
    crossed = call(
        app, flow_path(s.suspended), method="POST", cookie=bob, form={**cancel, "csrf": csrf_a}
    )
    assert crossed.status == 403 and "nothing was changed" in crossed.text
    # A made-up session with a real session's CSRF value is no session.
    sid = ann.split("=", 1)[1].split(".")[0]
    forged = call(
        app,
        flow_path(s.suspended),
        method="POST",
        cookie=f"crux_ui_session={sid}.{'0' * 64}",
        form={**cancel, "csrf": csrf_a},
    )
    assert forged.status == 403
    assert get_flow(s.suspended, store=store).status == "suspended"
    done = call(
        app, flow_path(s.suspended), method="POST", cookie=ann, form={**cancel, "csrf": csrf_a}
    )
    assert done.status == 303 and get_flow(s.suspended, store=store).status == "cancelled"
    # Another app with another token knows none of these sessions.
    other = make_app(store, allow_actions=True, token="another-token")
    assert 'id="actions-locked"' in call(other, flow_path(s.failed), cookie=ann).text


@pytest.mark.parametrize("script_name", ["", "/ops"])
@pytest.mark.parametrize(
    "path",
    [
        "//evil.example/",
        "//evil.example",
        "///evil.example/x",
        "/\\evil.example",
        "/\\/evil.example",
        "https://evil.example",
        "https://evil.example/flows/x",
        "/flows/https://evil.example",
        "javascript:alert(1)",
    ],
)
def test_the_token_visit_never_redirects_off_the_dashboard(path: str, script_name: str) -> None:
    app = make_app(MemoryStore(), allow_actions=True, token=TOKEN)
    page = call(app, path, query=f"token={TOKEN}&done=x", script_name=script_name)
    assert page.status == 303
    location = page.headers["Location"]
    assert location.startswith(script_name + "/"), location
    rest = location[len(script_name) + 1 :]
    assert not rest.startswith(("/", "\\")), location
    # As a browser reads it (a backslash is a slash to it): a path on this host.
    for seen in (location, location.replace("\\", "/")):
        parts = urlsplit(seen)
        assert (parts.scheme, parts.netloc) == ("", ""), location
    assert "token" not in location and location.endswith("?done=x")
    assert "Set-Cookie" in page.headers
    # A wrong token on the same address is a 403 page, no redirect at all.
    wrong = call(app, path, query="token=wrong", script_name=script_name)
    assert wrong.status == 403 and "Location" not in wrong.headers


def test_a_mount_point_that_starts_with_two_slashes_makes_no_off_site_link(store: Any) -> None:
    r = echo.run(store=store, input=1)
    app = make_app(store, allow_actions=True, token=TOKEN)
    page = call(app, "/", query=f"token={TOKEN}", script_name="//evil.example")
    assert urlsplit(page.headers["Location"]).netloc == ""
    listing = call(app, "/", script_name="//evil.example")
    for link in listing.links() + call(app, flow_path(r.flow_id), script_name="//x").links():
        assert urlsplit(link).netloc == "" and not link.startswith("//"), link


def test_a_post_with_the_token_in_its_url_is_refused_and_changes_nothing(
    store: Any, clock: FakeClock
) -> None:
    s = scene(store, clock)
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    csrf = csrf_of(call(app, flow_path(s.suspended), cookie=cookie))
    form = {"action": "cancel", "reason": "x", "csrf": csrf}
    for who in ({"cookie": cookie}, {}):
        refused = call(
            app, flow_path(s.suspended) + "?token=" + TOKEN, method="POST", form=form, **who
        )  # type: ignore[arg-type]
        assert refused.status == 400, who
        assert "token" in refused.text and "nothing was changed" in refused.text
        assert "Set-Cookie" not in refused.headers  # and it logs nobody in
    # Even a wrong token in a POST's URL is refused the same way.
    wrong = call(app, flow_path(s.suspended) + "?token=x", method="POST", form=form, cookie=cookie)
    assert wrong.status == 400
    assert get_flow(s.suspended, store=store).status == "suspended"


# -- the signal form offers what the flow waits for (issue 18, item 16) -----------------


@flow("ui-any")
def any_wait(ctx: FlowContext) -> Any:
    got = yield AnyOf([Suspend("shipped"), Sleep("give-up", "3d"), Suspend("cancelled-by-user")])
    return got.name


@flow("ui-kid")
def kid(ctx: FlowContext) -> Any:
    return (yield Suspend("kid-go"))


@flow("ui-parent")
def parent(ctx: FlowContext) -> Any:
    return (yield Child(kid, input=1))


@flow("ui-parent-all")
def parent_all(ctx: FlowContext) -> Any:
    return (yield All([Child(kid, input=1), Child(kid, input=2)]))


@flow("ui-sleeps")
def sleeps(ctx: FlowContext) -> Any:
    yield Sleep("nap", "1h")


@flow("ui-polls")
def polls(ctx: FlowContext) -> Any:
    return (yield WaitUntil("ready", lambda: False, every="1m"))


@flow("ui-retries")
def retries(ctx: FlowContext) -> Any:
    return (yield Step("call-api", Flaky(5), retry=Retry(attempts=3, delay="1m")))


def signal_names_offered(page: Page) -> list[str] | None:
    """The names the signal form offers (``None``: no signal form on the page)."""
    form = re.search(r'<form id="signal-form".*?</form>', page.text, re.S)
    if form is None:
        return None
    select = re.search(r'<select name="name"[^>]*>(.*?)</select>', form.group(0), re.S)
    assert select is not None, "the signal form's name is not a choice of names"
    assert '<input name="name"' not in form.group(0)  # no free-text name
    return [html.unescape(v) for v in re.findall(r'<option value="([^"]*)"', select.group(1))]


def test_the_signal_form_offers_exactly_the_names_the_flow_waits_for(
    store: Any, clock: FakeClock
) -> None:
    one = echo.run(store=store, input=1).flow_id
    either = any_wait.run(store=store).flow_id
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    assert signal_names_offered(call(app, flow_path(one), cookie=cookie)) == ["reply"]
    page = call(app, flow_path(either), cookie=cookie)
    assert signal_names_offered(page) == ["shipped", "cancelled-by-user"]
    assert "[&#34;shipped&#34;" not in section(page, "actions")  # never the JSON wait list
    # The read-only dashboard offers no form at all.
    assert signal_names_offered(call(make_app(store), flow_path(either))) is None


def test_no_signal_form_for_a_flow_that_waits_on_no_signal(store: Any, clock: FakeClock) -> None:
    waiting = {
        "child": parent.run(store=store).flow_id,
        "all": parent_all.run(store=store).flow_id,
        "sleep": sleeps.run(store=store).flow_id,
        "wait_until": polls.run(store=store).flow_id,
        "retry": retries.run(store=store).flow_id,
    }
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    for kind, flow_id in waiting.items():
        assert store.load(flow_id).wait_kind == kind
        page = call(app, flow_path(flow_id), cookie=cookie)
        assert page.status == 200
        assert signal_names_offered(page) is None, kind
        assert '<form id="cancel-form"' in page.text  # cancelling stays possible
        why = re.search(r'<p id="no-signal-form">(.*?)</p>', page.text, re.S)
        assert why is not None and "takes no signal now" in why.group(1), kind  # and says why


def test_a_signal_the_flow_does_not_wait_for_is_refused_with_400_and_not_stored(
    store: Any, clock: FakeClock
) -> None:
    one = echo.run(store=store, input=1).flow_id
    either = any_wait.run(store=store).flow_id
    dad = parent.run(store=store).flow_id
    child_id = store.load(dad).waiting_for
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)

    def post(flow_id: str, name: str) -> Page:
        page = call(app, flow_path(flow_id), cookie=cookie)
        form = {"csrf": csrf_of(page), "action": "signal", "name": name, "payload": "1"}
        return call(app, flow_path(flow_id), method="POST", cookie=cookie, form=form)

    for flow_id, name in (
        (one, "reply-typo"),
        (either, '["shipped", "cancelled-by-user"]'),  # what the old form prefilled
        (either, "give-up"),  # a Sleep branch's name is no signal
        (dad, child_id),
        (dad, "kid-go"),  # the child's wait, not the parent's
    ):
        refused = post(flow_id, name)
        assert refused.status == 400, (flow_id, name)
        assert repr(name) in html.unescape(refused.text)  # names the bad value
        assert "nothing was sent" in refused.text
        assert get_flow(flow_id, store=store).signals == ()
    # The names it waits for are taken, and the flow takes them at its next run.
    assert post(either, "cancelled-by-user").status == 303
    assert resume(either, store=store, flows=[any_wait]).value == "cancelled-by-user"
    assert post(one, "reply").status == 303
    assert echo.run(store=store, resume=one).value == [1, 1]


def test_a_signal_to_a_running_or_finished_flow_is_refused_and_not_stored(
    store: Any, clock: FakeClock
) -> None:
    running = store.start("r-1", "ui-echo", "1", "someone", clock.time()).id
    done = waits.run(store=store, input={"email": "a@example.com"}).flow_id
    cancel_flow(done, "gone", store=store)
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    for flow_id, status in ((running, 400), (done, 409)):
        page = call(app, flow_path(flow_id), cookie=cookie)
        assert signal_names_offered(page) is None
        form = {"csrf": csrf_of(page), "action": "signal", "name": "reply", "payload": "1"}
        refused = call(app, flow_path(flow_id), method="POST", cookie=cookie, form=form)
        assert refused.status == status, flow_id
        assert get_flow(flow_id, store=store).signals == ()


# -- mounted under a prefix ------------------------------------------------------------


def mounted(prefix: str, app: App) -> App:
    """A dispatcher like Flask's or Werkzeug's: *app* under *prefix*, 404 elsewhere."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ = {
                **environ,
                "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + prefix,
                "PATH_INFO": path[len(prefix) :],
            }
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not the dashboard"]

    return dispatch


def test_mounted_under_a_prefix_every_link_stays_under_it(store: Any, clock: FakeClock) -> None:
    s = scene(store, clock)
    for _ in range(55):
        echo.run(store=store, input=1)
        clock.advance("1s")
    inner = make_app(store, allow_actions=True, token=TOKEN)
    app = mounted("/ops", inner)
    cookie = log_in(inner, script_name="/ops")
    listing = call(app, "/ops/?status=", cookie=cookie)
    assert listing.status == 200
    pages = [listing, call(app, "/ops" + flow_path(s.failed), cookie=cookie)]
    next_link = re.search(r'<a id="next-page" href="([^"]+)"', listing.text)
    assert next_link is not None
    pages.append(call(app, next_link.group(1).replace("&amp;", "&"), cookie=cookie))
    for page in pages:
        assert page.status == 200
        links = page.links()
        assert links and all(link.startswith("/ops/") for link in links), links
    assert '<a id="back" href="/ops/">' in pages[1].text
    assert '<form id="retry-form" method="post" action="/ops/flows/' in pages[1].text
    # Follow a link and a form as a browser would: they reach the app.
    flow_link = re.search(r'<a class="flow-link" href="([^"]+)"', listing.text)
    assert flow_link is not None and call(app, flow_link.group(1)).status == 200
    retried = call(
        app,
        "/ops" + flow_path(s.failed),
        method="POST",
        cookie=cookie,
        form={"csrf": csrf_of(pages[1]), "action": "retry"},
    )
    assert retried.status == 303 and retried.headers["Location"].startswith("/ops/flows/")
    assert call(app, "/elsewhere").status == 404


# -- crux-gen ui -----------------------------------------------------------------------


def start_ui(db: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``crux-gen ui`` on a free port; return it and the first line it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crux_gen", "ui", "--db", str(db), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    return proc, first


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out, err


def filled_db(tmp_path: Path) -> tuple[Path, Scene]:
    db = tmp_path / "crux.db"
    clock = FakeClock(datetime.now(timezone.utc) - timedelta(hours=3))
    store = SQLiteStore(db, synchronous="NORMAL", clock=clock)
    s = scene(store, clock)
    store.close()
    return db, s


def test_crux_gen_ui_serves_the_dashboard_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    db, s = filled_db(tmp_path)
    proc, first = start_ui(db)
    try:
        found = re.fullmatch(r"serving on http://127\.0\.0\.1:(\d+)/", first)
        assert found is not None, first
        port = int(found.group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            listing = response.read().decode()
        assert response.status == 200
        assert f'data-flow-id="{s.failed}"' in listing
        assert '<span class="count" data-status="failed">1</span>' in listing
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/flows/{s.failed}", timeout=10
        ) as response:
            assert "CardDeclined" in response.read().decode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/flows/{s.failed}", data=b"")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "warning" not in err


def test_crux_gen_ui_with_actions_prints_a_token_that_unlocks_them(tmp_path: Path) -> None:
    db, s = filled_db(tmp_path)
    proc, first = start_ui(db, "--allow-actions")
    try:
        assert first.startswith("serving on http://127.0.0.1:")
        url = first.removeprefix("serving on ")
        assert proc.stdout is not None
        second = proc.stdout.readline()
        token = re.search(r"\?token=(\S+)", second)
        assert token is not None, second
        # The token's visit sets the cookie, then the page acts.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{url}?token={token.group(1)}", timeout=10) as response:
            assert response.status == 200
        with opener.open(f"{url}flows/{s.failed}", timeout=10) as response:
            page = response.read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None and 'id="actions-locked"' not in page
        body = urlencode({"csrf": csrf.group(1), "action": "retry"}).encode()
        with opener.open(f"{url}flows/{s.failed}", data=body, timeout=10) as response:
            assert "Flow retried" in response.read().decode()
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        [(status,)] = conn.execute("SELECT status FROM flows WHERE id = ?", (s.failed,))
    assert status == "suspended"


def test_crux_gen_ui_never_prints_or_logs_a_given_token(tmp_path: Path) -> None:
    db, s = filled_db(tmp_path)
    secret = "s3cret-token-value"
    proc, first = start_ui(db, "--allow-actions", "--token", secret)
    url = first.removeprefix("serving on ")
    requests = [
        # (method, path): a POST with the token in its URL, refused (400), and pages
        # that fail (403, 404): the server logs the requests that fail.
        ("POST", f"flows/{s.suspended}?token={secret}"),
        ("POST", f"flows/{s.suspended}?a=1&%74oken={secret}"),
        ("GET", f"?token={secret}x"),
        ("GET", f"nothing/here?token={secret}"),
        ("GET", f"flows/missing?done=1&TOKEN={secret}"),
    ]
    try:
        for method, path in requests:
            request = urllib.request.Request(url + path, data=b"" if method == "POST" else None)
            try:
                with urllib.request.urlopen(request, timeout=10):
                    pass
            except urllib.error.HTTPError as exc:
                assert exc.code in (400, 403, 404), (path, exc.code)
        # A request line the server cannot parse is logged as it came.
        host, port = urlsplit(url).hostname, urlsplit(url).port
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(f"GET /?token={secret} extra HTTP/1.1\r\n\r\n".encode())
            assert b" 400 " in conn.recv(1000)
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "flows/missing" in err and '" 404 ' in err  # the log has the failed requests
    assert "Bad request syntax ('GET /?token=… extra" in err
    assert secret not in first + out + err
    assert get_flow(s.suspended, store=SQLiteStore(db)).status == "suspended"


def test_crux_gen_ui_on_another_host_warns_and_stops_on_sigint(tmp_path: Path) -> None:
    db, _ = filled_db(tmp_path)
    proc, first = start_ui(db, "--host", "0.0.0.0")
    assert first.startswith("serving on http://0.0.0.0:")
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code, _, err = stop(proc)
    assert code == 0
    assert "warning: listening on 0.0.0.0" in err


def test_crux_gen_ui_refuses_a_missing_database_and_a_token_without_actions(
    tmp_path: Path,
) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "crux_gen", "ui", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "no database at" in missing.stderr
    db, _ = filled_db(tmp_path)
    token = subprocess.run(
        [sys.executable, "-m", "crux_gen", "ui", "--db", str(db), "--token", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CRUX_UI_TOKEN": ""},
    )
    assert token.returncode == 1 and "--token is for --allow-actions" in token.stderr
