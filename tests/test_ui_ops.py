"""The dashboard for operating many flows (issue 20), at the WSGI level: the flows
page's id search, time filters, parent column and top-level filter, error and
custom status columns; the errors page; bulk retry and cancel of a filtered set
behind ``--allow-actions`` with a confirmation saying how many. The same pages in
Chromium: ``tests/test_ui_browser.py``."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from crux_gen import Any as AnyOf
from crux_gen import Child, FakeClock, FlowContext, Sleep, Step, Suspend, flow, get_flow, list_flows
from crux_gen.stores.memory import MemoryStore
from crux_gen.stores.sqlite import SQLiteStore
from crux_gen.ui import make_app

from .test_ui import TOKEN, XSS, Page, call, csrf_of, log_in, row_ids


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    opened: Any = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "crux.db", clock=clock)
    )
    yield opened
    opened.close()


class CardDeclined(Exception):
    pass


def declined(card: str) -> None:
    raise CardDeclined(f"card {card} was declined")


@flow("ops-pay")
def pay(ctx: FlowContext) -> Any:
    ctx.set_custom_status({"stage": "charging", "note": ctx.input.get("note", "")})
    yield Step("charge", lambda: declined(ctx.input["card"]))


@flow("ops-order")
def order(ctx: FlowContext) -> Any:
    yield Step("reserve", lambda: "ok")
    return (yield Child(pay, input=ctx.input, flow_id=f"{ctx.flow_id}-pay"))


@flow("ops-wait")
def wait(ctx: FlowContext) -> Any:
    return (yield Suspend("go"))


def cell(page: Page, flow_id: str, cls: str) -> str:
    """The text of the cell of class *cls* in the row of *flow_id* (tags stripped)."""
    row = re.search(rf'<tr data-flow-id="{re.escape(flow_id)}"[^>]*>(.*?)</tr>', page.text, re.S)
    assert row is not None, f"no row for {flow_id!r}"
    found = re.search(rf'<td class="{cls}">(.*?)</td>', row.group(1), re.S)
    assert found is not None, f"no {cls!r} cell in the row of {flow_id!r}"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_search_by_a_whole_id_or_an_id_prefix(store: Any) -> None:
    for flow_id in ("order-1", "order-2", "other-1", "ord"):
        wait.run(store=store, flow_id=flow_id)
    app = make_app(store)
    assert sorted(row_ids(call(app, "/?q=order-"))) == ["order-1", "order-2"]
    assert row_ids(call(app, "/?q=order-2")) == ["order-2"]
    assert sorted(row_ids(call(app, "/?q=orde"))) == ["order-1", "order-2"]
    assert row_ids(call(app, "/?q=ord")) == ["ord"]  # under 4 characters: the whole id only
    assert row_ids(call(app, "/?q=or")) == []
    page = call(app, "/?q=nothing-like-it")
    assert page.status == 200 and "no flows match this filter" in page.text
    assert 'name="q" value="nothing-like-it"' in page.text


def test_time_filters_take_an_age_or_an_iso_time_and_refuse_anything_else(
    store: Any, clock: FakeClock
) -> None:
    old = wait.run(store=store, flow_id="old").flow_id  # 2026-01-01 00:00:00Z
    clock.advance("2h")
    new = wait.run(store=store, flow_id="new").flow_id
    clock.advance("10m")
    app = make_app(store)
    assert row_ids(call(app, "/?since=1h")) == [new]
    assert row_ids(call(app, "/?until=1h")) == [old]
    assert row_ids(call(app, "/?since=2026-01-01T01:00:00Z")) == [new]
    assert row_ids(call(app, "/?since=2026-01-01T00:00:00&until=2026-01-01T00:00:01")) == [old]
    assert row_ids(call(app, "/?since=5m")) == []
    bad = call(app, "/?since=yesterday")
    assert bad.status == 400 and "&#39;yesterday&#39; is neither an age" in bad.text
    assert row_ids(bad) == []


def test_a_child_shows_its_parent_and_top_level_only_hides_it(store: Any) -> None:
    order.run(store=store, flow_id="o-1", input={"card": "4242"})
    app = make_app(store)
    page = call(app, "/")
    assert sorted(row_ids(page)) == ["o-1", "o-1-pay"]
    assert cell(page, "o-1-pay", "parent") == "o-1"
    assert '<a class="parent-link" href="/flows/o-1">o-1</a>' in page.text
    assert '<tr data-flow-id="o-1-pay" data-status="failed" data-parent-id="o-1">' in page.text
    assert cell(page, "o-1", "parent") == ""
    top = call(app, "/?top=1")
    assert row_ids(top) == ["o-1"]
    assert 'name="top" value="1" checked' in top.text


def test_error_and_custom_status_columns_show_stored_text_escaped(store: Any) -> None:
    pay.run(store=store, flow_id="p-1", input={"card": XSS[0], "note": XSS[1]})
    page = call(make_app(store), "/")
    assert cell(page, "p-1", "error-cell") == f"CardDeclined: card {XSS[0]} was declined"
    assert json_like(cell(page, "p-1", "custom")) == {"stage": "charging", "note": XSS[1]}
    for text in XSS:
        assert text not in page.text


def json_like(text: str) -> Any:
    import json

    return json.loads(text)


def fail_some(store: Any, clock: FakeClock) -> dict[str, list[str]]:
    """Three flows declined on card 1, two on card 2, one waiting."""
    made: dict[str, list[str]] = {"one": [], "two": [], "waiting": []}
    for n in range(3):
        made["one"].append(pay.run(store=store, flow_id=f"a{n}", input={"card": "1"}).flow_id)
        clock.advance("1s")
    for n in range(2):
        made["two"].append(pay.run(store=store, flow_id=f"b{n}", input={"card": "2"}).flow_id)
        clock.advance("1s")
    made["waiting"].append(wait.run(store=store, flow_id="w0").flow_id)
    return made


def test_the_errors_page_groups_failed_flows_with_counts_linking_to_their_list(
    store: Any, clock: FakeClock
) -> None:
    made = fail_some(store, clock)
    app = make_app(store)
    page = call(app, "/errors")
    assert page.status == 200
    groups = re.findall(
        r'<tr class="error-group" data-count="(\d+)" data-type="([^"]*)">.*?'
        r'<a class="group-link" href="([^"]*)">',
        page.text,
        re.S,
    )
    kind = f"{__name__}.CardDeclined"
    assert [(int(n), t) for n, t, _ in groups] == [(3, kind), (2, kind)]
    first = call(app, html.unescape(groups[0][2]))
    assert sorted(row_ids(first)) == made["one"]
    assert f"<code>{kind}: card 1 was declined</code>" in first.text
    second = call(app, html.unescape(groups[1][2]))
    assert sorted(row_ids(second)) == made["two"]
    assert '<a id="errors-link" href="/errors">' in call(app, "/").text


def bulk_form(page: Page) -> dict[str, str]:
    """The fields of the confirmation form."""
    form = re.search(r'<form id="bulk-confirm".*?</form>', page.text, re.S)
    assert form is not None, "no confirmation form"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(0))
    return {name: html.unescape(value) for name, value in fields}


def test_bulk_retry_confirms_how_many_then_retries_exactly_the_filtered_failed_flows(
    store: Any, clock: FakeClock
) -> None:
    made = fail_some(store, clock)
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    group = f"error_type={__name__}.CardDeclined&" + urlencode(
        {"error_message": "card 1 was declined"}
    )
    listed = call(app, "/?" + group, cookie=cookie)
    assert '<form class="bulk-form" id="bulk-retry"' in listed.text
    csrf = csrf_of(listed)
    filters = {"error_type": f"{__name__}.CardDeclined", "error_message": "card 1 was declined"}

    ask = call(
        app,
        "/bulk",
        method="POST",
        cookie=cookie,
        form={"csrf": csrf, "action": "retry", **filters},
    )
    assert ask.status == 200
    assert '<button type="submit" id="bulk-go" data-count="3">retry 3 flows</button>' in ask.text
    assert {s for s in made["one"] if f'data-flow-id="{s}"' in ask.text} == set(made["one"])
    fields = bulk_form(ask)
    assert fields["confirm"] == "3" and fields["error_message"] == "card 1 was declined"
    assert all(get_flow(f, store=store).status == "failed" for f in made["one"])  # not yet

    stale = call(app, "/bulk", method="POST", cookie=cookie, form={**fields, "confirm": "2"})
    assert stale.status == 409 and "not 2" in stale.text
    assert all(get_flow(f, store=store).status == "failed" for f in made["one"])

    done = call(app, "/bulk", method="POST", cookie=cookie, form=fields)
    assert done.status == 200 and "3 of 3 flows retried" in done.text
    assert len(re.findall(r'data-ok="yes"', done.text)) == 3
    for flow_id in made["one"]:
        assert get_flow(flow_id, store=store).status != "failed"
    for flow_id in made["two"]:
        assert get_flow(flow_id, store=store).status == "failed"
    again = call(app, "/bulk", method="POST", cookie=cookie, form={**fields, "confirm": ""})
    assert "No failed flow matches this filter" in again.text


def test_bulk_cancel_takes_the_unfinished_flows_of_the_filter_with_a_reason(
    store: Any, clock: FakeClock
) -> None:
    made = fail_some(store, clock)
    more = [wait.run(store=store, flow_id=f"w{n}").flow_id for n in range(1, 4)]
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    csrf = csrf_of(call(app, "/", cookie=cookie))
    form = {"csrf": csrf, "action": "cancel", "q": "w0"}
    ask = call(app, "/bulk", method="POST", cookie=cookie, form={**form, "q": ""})
    assert 'data-count="4">cancel 4 flows' in ask.text  # the failed ones are finished
    fields = bulk_form(ask)
    done = call(
        app, "/bulk", method="POST", cookie=cookie, form={**fields, "reason": "<b>drain</b>"}
    )
    assert "4 of 4 flows cancelled" in done.text and "<b>drain</b>" not in done.text
    for flow_id in [*made["waiting"], *more]:
        info = get_flow(flow_id, store=store)
        assert (info.status, info.cancel_reason) == ("cancelled", "<b>drain</b>")
    assert all(get_flow(f, store=store).status == "failed" for f in made["one"] + made["two"])


def test_bulk_actions_need_actions_allowed_the_session_and_the_csrf_field(
    store: Any, clock: FakeClock
) -> None:
    made = fail_some(store, clock)
    read_only = make_app(store)
    assert 'id="bulk' not in call(read_only, "/").text
    refused = call(read_only, "/bulk", method="POST", form={"action": "retry"})
    assert refused.status == 405
    app = make_app(store, allow_actions=True, token=TOKEN)
    assert call(app, "/bulk", method="POST", form={"action": "retry", "confirm": "3"}).status == 403
    cookie = log_in(app)
    no_csrf = call(
        app, "/bulk", method="POST", cookie=cookie, form={"action": "retry", "confirm": "5"}
    )
    assert no_csrf.status == 403
    csrf = csrf_of(call(app, "/", cookie=cookie))
    odd = call(app, "/bulk", method="POST", cookie=cookie, form={"csrf": csrf, "action": "delete"})
    assert odd.status == 400 and "no bulk action" in odd.text
    bad = call(
        app,
        "/bulk",
        method="POST",
        cookie=cookie,
        form={"csrf": csrf, "action": "retry", "since": "x"},
    )
    assert bad.status == 400 and "nothing was changed" in bad.text
    assert all(get_flow(f, store=store).status == "failed" for f in made["one"] + made["two"])


def test_a_store_without_browse_flows_filters_by_status_and_name_and_says_so_for_the_rest(
    store: Any, clock: FakeClock
) -> None:
    class Plain:
        """A store of a user's own: ``list_flows`` and ``load``, no ``caps``."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.clock = inner.clock

        def list_flows(self, **kwargs: Any) -> Any:
            return self.inner.list_flows(**kwargs)

    made = fail_some(store, clock)
    app = make_app(Plain(store))
    assert sorted(row_ids(call(app, "/?status=failed"))) == made["one"] + made["two"]
    refused = call(app, "/?q=a0-x")
    assert refused.status == 400 and "Plain filters by status and name only" in refused.text
    errors = call(app, "/errors")
    assert errors.status == 400 and "Plain cannot group failed flows by error" in errors.text


def test_hostile_ids_and_errors_stay_text_on_the_errors_and_bulk_pages(store: Any) -> None:
    hostile = f"{XSS[0]}-id"
    pay.run(store=store, flow_id=hostile, input={"card": XSS[1]})
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    errors = call(app, "/errors", cookie=cookie)
    assert XSS[1] not in errors.text and html.escape(XSS[1], quote=True) in errors.text
    [link] = re.findall(r'<a class="group-link" href="([^"]*)">1</a>', errors.text)
    listed = call(app, html.unescape(link), cookie=cookie)
    assert row_ids(listed) == [html.escape(hostile, quote=True)]
    form = {
        "csrf": csrf_of(listed),
        "action": "retry",
        "error_type": f"{__name__}.CardDeclined",
        "error_message": f"card {XSS[1]} was declined",
    }
    ask = call(app, "/bulk", method="POST", cookie=cookie, form=form)
    assert 'data-count="1">retry 1 flow</button>' in ask.text
    for page in (errors, listed, ask):
        for text in (*XSS, hostile):
            assert text not in page.text
    assert bulk_form(ask)["error_message"] == f"card {XSS[1]} was declined"


@flow("ops-any")
def any_wait(ctx: FlowContext) -> Any:
    return (yield AnyOf([Suspend("yes"), Suspend("no"), Sleep("give-up", "3d")]))


def test_the_waiting_column_says_what_an_any_waits_for_as_list_flows_does(store: Any) -> None:
    flow_id = any_wait.run(store=store, flow_id="asks").flow_id
    page = call(make_app(store), "/")
    [summary] = list_flows(store=store)
    assert summary.waiting_for is not None and "[" not in summary.waiting_for
    assert cell(page, flow_id, "waiting") == summary.waiting_for
