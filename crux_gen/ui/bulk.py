"""Bulk retry and cancel of the flows page's filtered set (``POST /bulk``, with
actions allowed): the token and CSRF checks of every action, then a confirmation
page saying how many flows the action will touch, then the action, flow by flow,
with what happened to each."""

from __future__ import annotations

from typing import Any

from ..control import cancel_flow
from ..errors import CruxError, FlowNotFoundError, FlowStateError, StoreError
from . import flows
from .host import Host, action_form, no_token
from .wsgi import Request, Response

#: What each bulk action does, as the confirmation says it (verb, which flows).
ACTIONS = {
    "retry": ("retry", "failed"),
    "cancel": ("cancel", "unfinished"),
}


def bulk(dash: Host, request: Request) -> Response:
    """``POST /bulk``: confirm (no ``confirm`` field, or a count that no longer holds),
    or act on each flow the filters take now."""
    who = dash.sessions.who(request)
    if who is None:
        return no_token(dash, request)
    form = action_form(dash, request, who)
    if isinstance(form, Response):
        return form
    action = form.get("action", "")
    if action not in ACTIONS:
        return dash.error_page(request, 400, "Bad request", f"no bulk action {action!r}")
    now = dash.store.clock.now()
    f, problem = flows.read_filters(form, now)
    if problem is not None:
        return dash.error_page(request, 400, "Bad filter", f"{problem}; nothing was changed")
    try:
        targets = flows.bulk_targets(dash.store, f, action)
    except ValueError as exc:
        return dash.error_page(request, 400, "Not available", f"{exc}; nothing was changed")
    more = len(targets) > flows.BULK_LIMIT
    targets = targets[: flows.BULK_LIMIT]
    confirmed = form.get("confirm", "")
    changed = confirmed != "" and confirmed != str(len(targets))
    reason = form.get("reason", "").strip() or "cancelled from the dashboard"
    outcomes = None
    if confirmed != "" and not changed:
        outcomes = [(flow.id, act(dash.store, action, flow.id, reason)) for flow in targets]
    return dash.render(
        request,
        "bulk.html",
        409 if changed else 200,
        f=f,
        action=action,
        verb=ACTIONS[action][0],
        which=ACTIONS[action][1],
        targets=targets,
        more=more,
        changed=changed,
        confirmed=confirmed,
        csrf=dash.sessions.csrf(who),
        outcomes=outcomes,
        done=sum(1 for _, (ok, _) in outcomes or () if ok),
        reason=reason,
    )


def act(store: Any, action: str, flow_id: str, reason: str) -> tuple[bool, str]:
    """Retry or cancel one flow: ``(True, what was done)`` or ``(False, why not)``.
    A store error stops the whole action (the page says so; the flows done are done)."""
    try:
        if action == "retry":
            store.retry_failed(flow_id, store.clock.now().timestamp())
            return True, "retried"
        if cancel_flow(flow_id, reason, store=store):
            return True, "cancelled"
        return False, f"not cancelled: it is {store.load(flow_id).status} already"
    except StoreError:
        raise
    except FlowNotFoundError:
        return False, "not found: deleted meanwhile"
    except FlowStateError as exc:
        return False, f"not retried: {exc}"
    except CruxError as exc:
        return False, str(exc)
