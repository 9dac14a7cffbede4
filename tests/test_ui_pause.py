"""The flow page's pause, unpause and retry of a cancelled flow (``--allow-actions``),
on every store: what is offered, what each POST changes, and a 409 changing
nothing when there is nothing to do."""

from __future__ import annotations

from typing import Any

from crux_gen import FlowContext, Step, Suspend, cancel_flow, flow, get_flow
from crux_gen.ui import make_app

from .test_ui import TOKEN, call, csrf_of, flow_path, log_in


@flow("ui-pause-waits")
def waits(ctx: FlowContext) -> Any:
    yield Step("one", lambda: 1)
    return (yield Suspend("go"))


def test_pause_unpause_and_retry_from_the_flow_page(store: Any) -> None:
    flow_id = waits.run(store=store).flow_id
    app = make_app(store, allow_actions=True, token=TOKEN)
    cookie = log_in(app)
    page = call(app, flow_path(flow_id), cookie=cookie)
    assert '<form id="pause-form"' in page.text and 'value="pause"' in page.text
    assert '<form id="retry-form"' not in page.text
    csrf = csrf_of(page)

    def post(**form: str) -> Any:
        return call(
            app, flow_path(flow_id), method="POST", cookie=cookie, form={"csrf": csrf, **form}
        )

    paused = post(action="pause")
    assert paused.status == 303 and paused.headers["Location"].endswith("?done=pause")
    assert get_flow(flow_id, store=store).status == "paused"
    shown = call(app, flow_path(flow_id), cookie=cookie)
    assert 'data-status="paused"' in shown.text and 'value="unpause"' in shown.text
    again = post(action="pause")
    assert again.status == 409 and "nothing to pause" in again.text
    assert post(action="unpause").headers["Location"].endswith("?done=unpause")
    assert get_flow(flow_id, store=store).status == "suspended"
    assert post(action="unpause").status == 409

    cancel_flow(flow_id, "stop", store=store)
    closed = post(action="pause")
    assert closed.status == 409 and "only an unfinished flow can be paused" in closed.text
    assert get_flow(flow_id, store=store).status == "cancelled"
    page = call(app, flow_path(flow_id), cookie=cookie)
    assert '<form id="pause-form"' not in page.text and '<form id="retry-form"' in page.text
    assert post(action="retry").status == 303
    assert get_flow(flow_id, store=store).status == "suspended"
    assert post(action="retry").status == 409
