"""The flow page's "Fork from here" (``--allow-actions``), on every store: offered
per position of the history to a session only, a POST with the CSRF field forks
the flow there (``fork_flow``) and leads to the new flow's page; a flow not
registered in the dashboard's process is refused, escaped, with nothing created."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from crux_gen import FlowContext, Step, Suspend, flow, get_flow
from crux_gen.cli import main
from crux_gen.ui import make_app

from .test_ui import TOKEN, call, csrf_of, flow_path, log_in


@flow("ui-fork-steps")
def steps(ctx: FlowContext) -> Any:
    yield Step("a", lambda: "A")
    yield Step("b", lambda: "B")
    return (yield Suspend("go"))


def count(store: Any) -> int:
    return int(store.count())


def test_fork_from_a_position_leads_to_the_new_flow(store: Any) -> None:
    flow_id = steps.run(store=store).flow_id
    app = make_app(store, allow_actions=True, token=TOKEN)
    assert "Fork from here" not in call(app, flow_path(flow_id)).text  # no session: no form
    cookie = log_in(app)
    page = call(app, flow_path(flow_id), cookie=cookie)
    assert page.text.count('<form class="fork-form"') == 3  # one per position
    assert 'name="at" value="1"' in page.text
    csrf = csrf_of(page)

    def fork(at: str, csrf: str = csrf) -> Any:
        form = {"csrf": csrf, "action": "fork", "at": at}
        return call(app, flow_path(flow_id), method="POST", cookie=cookie, form=form)

    before = count(store)
    assert fork("1", csrf="forged").status == 403
    bad = fork("one")
    assert bad.status == 400 and "fork at &#39;one&#39;: give a position" in bad.text
    assert count(store) == before
    made = fork("1")
    assert made.status == 303
    location = made.headers["Location"]
    assert location.endswith("?done=fork") and flow_path(flow_id) not in location
    new_id = location.rsplit("/", 1)[1].split("?")[0]
    info = get_flow(new_id, store=store)
    assert (info.name, info.status) == ("ui-fork-steps", "pending")
    assert [(h.name, h.result) for h in info.history] == [("a", "A")]
    assert [h.name for h in get_flow(flow_id, store=store).history] == ["a", "b", "go"]
    parts = urlsplit(location)
    shown = call(app, f"{parts.path}?{parts.query}", cookie=cookie)
    assert "Flow forked: this new flow is due" in shown.text
    assert count(store) == before + 1


def test_a_flow_not_registered_here_is_not_forked(store: Any) -> None:
    now = store.clock.time()
    store.start("unregistered", "ui-fork-<gone>&", "null", "w0", now)
    store.release("unregistered", "w0")
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    page = call(app, flow_path("unregistered"), cookie=cookie)
    form = {"csrf": csrf_of(page), "action": "fork", "at": "0"}
    before = count(store)
    refused = call(app, flow_path("unregistered"), method="POST", cookie=cookie, form=form)
    assert refused.status == 409
    assert "no flow named &#39;ui-fork-&lt;gone&gt;&amp;&#39; is registered" in refused.text
    assert "start the dashboard with --module M" in refused.text
    assert "<gone>" not in refused.text
    assert count(store) == before


def test_ui_module_that_cannot_be_imported_is_a_one_line_error(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "crux.db")
    with pytest.raises(SystemExit) as exited:
        main(["ui", "--db", db, "--port", "0", "--module", "no_such_flows_here"])
    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (1, "")
    assert err.startswith("error: cannot import 'no_such_flows_here'") and err.count("\n") == 1
