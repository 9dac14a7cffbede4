"""The dashboard (``crux-gen ui``) in a real browser: Debian's Chromium, headless,
driven by Playwright against ``/usr/bin/chromium`` (``.ci/run`` installs it with
apt-get; no browser is ever downloaded at test time).

Each test builds a SQLite file with the public API, starts ``crux-gen ui`` on it in a
subprocess (the URL is its first line on stdout) and checks what the pages show
against what the store holds, through the HTML contract of issue 13 (ids, classes
and ``data-*`` attributes, never the wording). Under ``CI=true`` these tests never
skip: a missing browser or Playwright fails them, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import attrs
import pytest

from crux_gen import (
    FlowContext,
    Registry,
    SQLiteStore,
    Status,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    list_flows,
    pause_flow,
    resume,
    signal_flow,
)

from .pg import short_tempdir

CHROMIUM = "/usr/bin/chromium"
UI_SOURCE = Path(__file__).resolve().parent.parent / "crux_gen" / "ui"
REINSTALL = ".venv/bin/pip install --config-settings editable_mode=strict -e '.[test]'"
#: Seconds between a page's reloads (``--refresh``): for the live test, and for the
#: others (a page that does not move under the test's feet).
REFRESH = 1
STILL = 3600
#: How long the live test waits for a page to show a change (ms).
LIVE = 8000
TOKEN = "t0ken-for-tests"

XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
#: What of XSS_IMG survives any JSON rendering (which escapes its double quotes).
XSS_IMG_TEXT = "<img src=x onerror="


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test saying why; under CI, fail it instead (never skipped there)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


# --- the store: flows in every status, signals in every state -----------------------

REGISTRY = Registry()


@attrs.frozen
class Approval:
    by: str


def charge() -> None:
    raise ConnectionError("payment API unreachable")


@flow("ui-order", registry=REGISTRY)
def order(ctx: FlowContext) -> Generator[Any, Any, Any]:
    yield Step("reserve", lambda: {"sku": ctx.input["sku"]})
    approval = yield Suspend("approve", schema=Approval, timeout=ctx.input.get("timeout"))
    if ctx.input.get("fail"):
        yield Step("charge", charge)
    return (yield Step("ship", lambda: {"approved_by": approval.by}))


@flow("ui-report", registry=REGISTRY)
def report(ctx: FlowContext) -> Generator[Any, Any, Any]:
    rows = yield Step("collect", lambda: list(range(3)))
    yield Suspend("publish")
    return rows


@attrs.define
class Demo:
    """A store holding one flow per status (``ids[status]``)."""

    path: Path
    store: SQLiteStore
    ids: dict[str, str]

    def resume(self, flow_id: str, **kwargs: Any) -> str:
        return str(resume(flow_id, store=self.store, flows=[order, report], **kwargs).status)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((str(s) for s in Status), 0)
        for summary in list_flows(store=self.store, limit=1000):
            counts[str(summary.status)] += 1
        return counts


def build_store(path: Path, *, sku: str = "A1", note: str = "", pending: Any = None) -> Demo:
    """completed (its second signal unused), failed (with a traceback), suspended (a
    rejected signal and a pending one), running with no lease, expired, cancelled,
    pending (started, never run, with a priority), paused (on its wait)."""
    store = SQLiteStore(path)
    demo = Demo(path, store, {})

    def start(**extra: Any) -> str:
        return order.run(input={"sku": sku, "note": note, **extra}, store=store).flow_id

    demo.ids["completed"] = f = start()
    signal_flow(f, "approve", {"by": "ann"}, store=store)
    signal_flow(f, "approve", {"by": "late"}, store=store)  # unused: the flow is done
    assert demo.resume(f) == "completed"

    demo.ids["failed"] = f = start(fail=True)
    signal_flow(f, "approve", {"by": note or "bob"}, store=store)
    assert demo.resume(f) == "failed"

    demo.ids["suspended"] = f = start()
    signal_flow(f, "approve", {"who": "nobody"}, store=store)  # rejected: no "by"
    assert demo.resume(f) == "suspended"
    signal_flow(f, "note", pending or {"text": "for later"}, store=store)  # pending

    demo.ids["running"] = f = start()
    signal_flow(f, "approve", {"by": "cy"}, store=store)
    answers = iter([False, True])  # consume the signal, then stop before "ship"
    assert demo.resume(f, should_stop=lambda: next(answers, True)) == "running"

    demo.ids["expired"] = f = start(timeout="1ms")
    time.sleep(0.01)
    assert demo.resume(f) == "expired"

    demo.ids["cancelled"] = f = report.run(input={"sku": sku}, store=store).flow_id
    assert cancel_flow(f, "no longer needed", store=store)

    demo.ids["pending"] = order.start(
        input={"sku": sku, "note": note}, store=store, priority=3
    ).flow_id

    demo.ids["paused"] = f = start()
    assert pause_flow(f, store=store)

    for status, flow_id in demo.ids.items():
        assert get_flow(flow_id, store=store).status == status
    return demo


# --- the server and the browser -----------------------------------------------------


def ui_command() -> list[str]:
    script = shutil.which("crux-gen", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "crux_gen"]


@contextmanager
def serve(db: Path, *options: str) -> Iterator[str]:
    """``crux-gen ui --db DB --port 0 ...`` in a subprocess; yields its URL, then stops
    it with SIGTERM and checks that it exits 0."""
    command = [*ui_command(), "ui", "--db", str(db), "--port", "0", *options]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=db.parent
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    output: list[str] = []

    def drain(stream: Any) -> None:  # so that a chatty server never blocks on a full pipe
        for line in stream:
            output.append(line)

    drains = [
        threading.Thread(target=drain, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)
    ]
    for t in drains:
        t.start()
    match = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+/)\n", first)
    if match is None:
        proc.kill()
        proc.wait()
        for t in drains:
            t.join(5)
        pytest.fail(
            f"{' '.join(command)}: first stdout line {first!r}, not 'serving on URL'; "
            f"exit {proc.returncode}; output:\n{''.join(output)}"
        )
    try:
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        for t in drains:
            t.join(5)
    assert code == 0, f"crux-gen ui exited {code} on SIGTERM; output:\n{''.join(output)}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        unavailable(f"playwright is not installed ({e}): {REINSTALL}")
    if importlib.util.find_spec("crux_gen.ui") is None:
        if UI_SOURCE.is_dir():  # strict editable mode: a new package needs a reinstall
            unavailable(f"crux_gen/ui/ is there but not installed: {REINSTALL}")
        unavailable("crux_gen/ui/ is not there yet")
    with sync_playwright() as p:
        # Chromium puts its SingletonSocket in TMPDIR: under a long one it aborts
        # ("Socket path too long").
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox"],
            env={**os.environ, "TMPDIR": short_tempdir()},
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    return expect(locator)


def rows(page: Any) -> Any:
    return page.locator("#flows tbody tr[data-status]")


def row_statuses(page: Any) -> list[str]:
    return [r.get_attribute("data-status") for r in rows(page).all()]


def row_ids(page: Any) -> set[str]:
    return {r.get_attribute("data-flow-id") for r in rows(page).all()}


def shown_counts(page: Any) -> dict[str, int]:
    spans = page.locator("#counts .count[data-status]").all()
    return {s.get_attribute("data-status"): int(s.inner_text().strip()) for s in spans}


def apply_filter(page: Any, *, status: str | None = None, name: str | None = None) -> None:
    """Set the filter form's fields and submit it (whether or not the page submits it
    by itself when the select changes: the values are set without a change event).
    A list that refreshes itself may reload between the two, submitting a fresh form
    (on a busy machine): then the page's address lacks the values, and it goes again;
    a reload in the middle of setting them destroys the page's context: again too."""
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(5):
        form = page.locator("#filter")
        try:
            form.evaluate(
                """(f, [status, name]) => {
                    if (status !== null) f.elements.status.value = status;
                    if (name !== null) f.elements.name.value = name;
                }""",
                [status, name],
            )
            if status is not None:
                assert form.locator('select[name="status"]').input_value() == status
            with page.expect_navigation():
                form.evaluate("f => f.requestSubmit()")
        except PlaywrightError as exc:  # the list's own reload destroyed the page meanwhile
            if "context was destroyed" not in str(exc) or attempt == 4:
                raise
        page.wait_for_load_state()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
        wanted = {"status": status, "name": name}
        if all(query.get(k, [""]) == [v] for k, v in wanted.items() if v) or attempt == 4:
            return


def open_flow(page: Any, flow_id: str) -> None:
    """Click the flow's link in the list. A list that refreshes itself may reload just
    as the link is followed (on a busy machine the reload wins): then click again."""
    link = page.locator(f'#flows tr[data-flow-id="{flow_id}"] a.flow-link')
    for attempt in range(3):
        link.click()
        try:
            expect(page.locator("#flow-id")).to_contain_text(flow_id)
            return
        except AssertionError:
            if attempt == 2 or page.locator("#flows").count() == 0:
                raise


def check_flow_page(page: Any, demo: Demo, flow_id: str) -> None:
    """The flow page shows the stored status, one timeline bar and one history item
    per recorded command, and every signal in its state."""
    info = get_flow(flow_id, store=demo.store)
    expect(page.locator("#flow-id")).to_contain_text(flow_id)
    assert page.get_attribute("#status", "data-status") == info.status
    bars = page.locator("#timeline svg rect.bar")
    expect(bars).to_have_count(len(info.history))
    assert [b.get_attribute("data-state") for b in bars.all()] == [h.state for h in info.history]
    assert [b.get_attribute("data-name") for b in bars.all()] == [h.name for h in info.history]
    items = page.locator("#history li[data-position]")
    expect(items).to_have_count(len(info.history))
    assert [i.get_attribute("data-state") for i in items.all()] == [h.state for h in info.history]
    signals = page.locator("#signals li[data-signal-id]")
    expect(signals).to_have_count(len(info.signals))
    shown = {
        s.get_attribute("data-signal-id"): s.get_attribute("data-state") for s in signals.all()
    }
    assert shown == {str(s.id): s.state for s in info.signals}


# --- the tests ------------------------------------------------------------------------


def test_dashboard_shows_what_the_store_holds(page: Any, tmp_path: Path) -> None:
    demo = build_store(tmp_path / "crux.db")
    with serve(demo.path, "--refresh", str(STILL)) as url:
        page.goto(url)
        # Counts: one per status, zeros included, as the store has them.
        assert shown_counts(page) == demo.counts() == dict.fromkeys(demo.counts(), 1)
        assert page.get_attribute('meta[name="crux-refresh"]', "content") == str(STILL)
        assert row_ids(page) == set(demo.ids.values())
        for flow_id in demo.ids.values():
            status = page.get_attribute(f'#flows tr[data-flow-id="{flow_id}"]', "data-status")
            assert status == get_flow(flow_id, store=demo.store).status

        # Filters: by name, then by status.
        apply_filter(page, name="ui-report")
        assert row_ids(page) == {demo.ids["cancelled"]}
        apply_filter(page, name="", status="failed")
        assert row_statuses(page) == ["failed"]
        assert row_ids(page) == {demo.ids["failed"]}

        # The failed flow's page: timeline, history with its traceback, signals.
        open_flow(page, demo.ids["failed"])
        check_flow_page(page, demo, demo.ids["failed"])
        error = page.locator('#history li[data-state="failed"] pre.error')
        expect(error).to_contain_text("ConnectionError")
        expect(error).to_contain_text("payment API unreachable")
        expect(page.locator("#history")).to_contain_text("Traceback")
        assert '"sku"' in page.inner_text("#input")
        assert page.locator("#signal-form").count() == 0  # read-only without --allow-actions
        page.screenshot(path=str(tmp_path / "flow-page.png"), full_page=True)
        assert (tmp_path / "flow-page.png").stat().st_size > 1000

        # Back to the list (the link says "all flows": it keeps no filter).
        page.locator("#back").click()
        expect(page.locator("#flows")).to_be_visible()
        assert demo.ids["failed"] in row_ids(page)

        # Every other flow's page.
        apply_filter(page, status="")
        for status in ("completed", "suspended", "running", "expired", "cancelled", "paused"):
            open_flow(page, demo.ids[status])
            check_flow_page(page, demo, demo.ids[status])
            page.locator("#back").click()
            expect(page.locator("#flows")).to_be_visible()
        states = {s.state for f in demo.ids.values() for s in get_flow(f, store=demo.store).signals}
        assert states == {"pending", "consumed", "rejected", "unused"}
        page.screenshot(path=str(tmp_path / "flows-page.png"), full_page=True)


def test_pages_follow_the_store_live(page: Any, tmp_path: Path) -> None:
    """While flows move, both pages show it without the test navigating; the list
    keeps its filter. (Assertions retry: the page may reload at any moment.)"""
    demo = build_store(tmp_path / "crux.db")
    suspended, running = demo.ids["suspended"], demo.ids["running"]
    with serve(demo.path, "--refresh", str(REFRESH)) as url:
        page.goto(url)
        expect(page.locator(f'#flows tr[data-flow-id="{suspended}"] a.flow-link')).to_be_visible()
        open_flow(page, suspended)
        expect(page.locator("#timeline svg rect.bar")).to_have_count(2)
        signal_flow(suspended, "approve", {"by": "dee"}, store=demo.store)
        assert demo.resume(suspended) == "completed"
        expect(page.locator('#status[data-status="completed"]')).to_have_count(1, timeout=LIVE)
        expect(page.locator("#timeline svg rect.bar")).to_have_count(3, timeout=LIVE)
        expect(page.locator('#history li[data-state="completed"]')).to_have_count(3)
        expect(page.locator('#signals li[data-state="consumed"]')).to_have_count(1)

        page.goto(url)
        apply_filter(page, status="completed")
        expect(rows(page)).to_have_count(2)
        assert demo.resume(running) == "completed"
        expect(rows(page)).to_have_count(3, timeout=LIVE)
        expect(page.locator(f'#flows tr[data-flow-id="{running}"]')).to_have_count(1)
        expect(page.locator('#flows tbody tr:not([data-status="completed"])')).to_have_count(0)
        expect(page.locator('#filter select[name="status"]')).to_have_value("completed")
        expect(page.locator('#counts .count[data-status="completed"]')).to_have_text("3")
        expect(page.locator('#counts .count[data-status="running"]')).to_have_text("0")
        expect(page.locator('#counts .count[data-status="suspended"]')).to_have_text("0")


def test_stored_text_shows_as_text_and_never_runs(page: Any, tmp_path: Path) -> None:
    demo = build_store(
        tmp_path / "crux.db", sku=XSS_SCRIPT, note=XSS_IMG, pending={"text": XSS_SCRIPT}
    )
    with serve(demo.path, "--refresh", str(STILL)) as url:
        page.goto(url)
        assert page.evaluate("window.__xss") is None
        # The failed flow: its input, step result and consumed signal hold both payloads.
        open_flow(page, demo.ids["failed"])
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None
        assert page.locator('img[src="x"]').count() == 0
        assert page.locator("script", has_text="__xss").count() == 0
        shown = page.inner_text("#input")
        assert XSS_SCRIPT in shown and XSS_IMG_TEXT in shown
        history = page.inner_text("#history")
        assert XSS_SCRIPT in history and XSS_IMG_TEXT in history
        # The suspended flow: a pending signal's payload.
        page.locator("#back").click()
        open_flow(page, demo.ids["suspended"])
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None
        assert XSS_SCRIPT in page.inner_text("#signals")
        assert page.locator("script", has_text="__xss").count() == 0


def test_actions_take_the_token(page: Any, tmp_path: Path) -> None:
    demo = build_store(tmp_path / "crux.db")
    suspended = demo.ids["suspended"]
    before = len(get_flow(suspended, store=demo.store).signals)
    with serve(demo.path, "--refresh", str(STILL), "--allow-actions", "--token", TOKEN) as url:
        page.goto(urllib.parse.urljoin(url, f"?token={TOKEN}"))
        open_flow(page, suspended)
        form = page.locator("#signal-form")
        assert form.locator('select[name="name"] option').all_inner_texts() == ["approve"]
        form.locator('[name="name"]').select_option("approve")
        form.locator('[name="payload"]').fill(json.dumps({"by": "eve"}))
        action = urllib.parse.urljoin(page.url, form.get_attribute("action") or "")
        fields = form.evaluate("f => Object.fromEntries(new FormData(f))")  # CSRF field too
        with page.expect_navigation():
            form.evaluate("f => f.requestSubmit()")
        page.wait_for_load_state()
        signals = get_flow(suspended, store=demo.store).signals
        assert len(signals) == before + 1
        assert (signals[-1].name, signals[-1].payload) == ("approve", {"by": "eve"})
        expect(page.locator(f'#signals li[data-signal-id="{signals[-1].id}"]')).to_have_count(1)

        # The same POST, its CSRF field included, without the token (no cookie) is refused.
        data = urllib.parse.urlencode({**fields, "payload": '{"by": "mallory"}'})
        request = urllib.request.Request(action, data=data.encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        assert len(get_flow(suspended, store=demo.store).signals) == before + 1


def test_sessions_have_their_own_csrf_and_the_token_visit_stays_here(
    browser: Any, tmp_path: Path
) -> None:
    """Issue 18, item 17, as a browser sees it: the token's visit on a path that looks
    like another host ends on this dashboard without the token in the address; the
    session cookie is HttpOnly and SameSite=Strict; each session has its own CSRF
    value, a viewer without one sees none, and one session's value does not act for
    another."""
    demo = build_store(tmp_path / "crux.db")
    suspended = demo.ids["suspended"]
    contexts = [browser.new_context() for _ in range(3)]
    try:
        ann, bob, nobody = (c.new_page() for c in contexts)
        with serve(demo.path, "--refresh", str(STILL), "--allow-actions", "--token", TOKEN) as url:
            origin = url.rstrip("/")
            for look_alike in ("//evil.example/", "/\\evil.example/x", "/https://evil.example"):
                ann.goto(f"{origin}{look_alike}?token={TOKEN}")
                assert ann.url.startswith(url), ann.url
                assert TOKEN not in ann.url
                expect(ann.locator("#error-title")).to_have_count(1)  # this app's 404 page
            [cookie] = contexts[0].cookies()
            assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
            assert TOKEN not in cookie["value"]
            assert ann.evaluate("document.cookie") == ""  # no script of the page reads it
            bob.goto(f"{url}?token={TOKEN}")
            assert bob.url == url
            csrf = {}
            for who, page in (("ann", ann), ("bob", bob), ("nobody", nobody)):
                page.goto(f"{url}flows/{suspended}")
                fields = page.locator('#signal-form input[name="csrf"]')
                csrf[who] = fields.first.get_attribute("value") if fields.count() else None
            assert csrf["ann"] and csrf["bob"] and csrf["ann"] != csrf["bob"]
            assert csrf["nobody"] is None
            expect(nobody.locator("#actions-locked")).to_have_count(1)
            # Bob's CSRF value in Ann's form: refused, nothing stored.
            before = len(get_flow(suspended, store=demo.store).signals)
            form = ann.locator("#signal-form")
            form.locator('[name="payload"]').fill(json.dumps({"by": "eve"}))
            form.locator('input[name="csrf"]').evaluate("(e, v) => { e.value = v; }", csrf["bob"])
            with ann.expect_navigation() as refused:
                form.evaluate("f => f.requestSubmit()")
            assert refused.value.status == 403
            assert len(get_flow(suspended, store=demo.store).signals) == before
            # Her own value acts.
            ann.goto(f"{url}flows/{suspended}")
            form.locator('[name="payload"]').fill(json.dumps({"by": "ann"}))
            with ann.expect_navigation() as sent:
                form.evaluate("f => f.requestSubmit()")
            assert sent.value.status == 200
            assert sent.value.url.endswith(f"flows/{suspended}?done=signal")
            assert get_flow(suspended, store=demo.store).signals[-1].payload == {"by": "ann"}
    finally:
        for c in contexts:
            c.close()
