"""What the flow page's forms do, with actions allowed: signal, cancel, pause,
unpause, retry or fork a flow, as the CLI does, refusing before anything changes
what cannot be done."""

from __future__ import annotations

import json
from typing import Any

from ..control import cancel_flow, pause_flow, signal_flow, unpause_flow
from ..errors import FlowClosedError, FlowNotRegisteredError, InvalidValueError
from ..forking import fork_flow
from ..status import FINISHED, Status
from . import pages

#: What a finished action says on the flow page it leads back to (``?done=…``).
DONE = {
    "signal": "Signal sent: the flow takes it at its next run.",
    "signal-kept": "Not sent: this flow already has a signal with that key.",
    "cancel": "Flow cancelled.",
    "retry": "Flow retried: the next worker pass or resume runs it again.",
    "pause": "Flow paused: no worker runs it until it is unpaused.",
    "unpause": "Flow unpaused: whatever became due runs at the next worker pass.",
    "fork": "Flow forked: this new flow is due; a worker running its module runs it, "
    "replaying the history kept and running the rest again.",
}

#: What the dashboard tells to do when the flow to fork is not registered in its process.
FORK_HINT = (
    'start the dashboard with --module M, M the module that defines @flow("{name}") '
    "(crux-gen ui --module M --allow-actions), as crux-gen fork --module does; nothing was created"
)


class ActionError(Exception):
    """An action refused before it changed anything: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def perform(store: Any, flow_id: str, form: dict[str, str]) -> str:
    """Do the form's ``action`` to the flow *flow_id*; return its key in ``DONE``."""
    action = form.get("action", "")
    if action == "signal":
        return send_signal(store, flow_id, form)
    if action == "cancel":
        return cancel(store, flow_id, form)
    if action == "retry":
        return retry(store, flow_id)
    if action in ("pause", "unpause"):
        return pause(store, flow_id, action)
    raise ActionError(400, f"no action {action!r}")


def send_signal(store: Any, flow_id: str, form: dict[str, str]) -> str:
    """``crux-gen signal``: the name, a JSON payload (empty: null) and an optional key."""
    name = form.get("name", "")
    if not name.strip():
        raise ActionError(400, "give the signal's name")
    key = form.get("key", "").strip() or None
    check_no_nul("signal name", name, "nothing was sent")
    check_no_nul("signal key", key or "", "nothing was sent")
    stored = store.load(flow_id)
    choice = pages.signal_choice(stored.status, stored.wait_kind, stored.waiting_for)
    if name not in choice.names:
        if Status(stored.status) in FINISHED:
            raise ActionError(409, f"signal {name!r}: {choice.why}; nothing was sent")
        waits = (
            "it waits for " + " or ".join(repr(n) for n in choice.names)
            if choice.names
            else f"it takes no signal now: {choice.why}"
        )
        raise ActionError(
            400,
            f"flow {flow_id!r} does not wait for a signal named {name!r} ({waits}); "
            "nothing was sent",
        )
    text = form.get("payload", "").strip()
    try:
        payload = json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise ActionError(400, f'the payload is not JSON ({exc}); e.g. {{"ok": true}}') from None
    sent = signal_flow(flow_id, name, payload, store=store, key=key)
    return "signal" if sent else "signal-kept"


def cancel(store: Any, flow_id: str, form: dict[str, str]) -> str:
    """``crux-gen cancel``: a finished flow is left as it is (409)."""
    reason = form.get("reason", "").strip() or "cancelled from the dashboard"
    check_no_nul("cancel reason", reason, "nothing was changed")
    if not cancel_flow(flow_id, reason, store=store):
        status = store.load(flow_id).status
        raise ActionError(
            409, f"the flow is {status} already; only an unfinished flow can be cancelled"
        )
    return "cancel"


def pause(store: Any, flow_id: str, action: str) -> str:
    """``crux-gen pause`` / ``unpause``: a finished flow, or nothing to do (paused
    already, not paused), is 409 with nothing changed."""
    try:
        changed = (pause_flow if action == "pause" else unpause_flow)(flow_id, store=store)
    except FlowClosedError as exc:
        message = f"the flow is {exc.status}; only an unfinished flow can be paused"
        raise ActionError(409, message) from None
    if not changed:
        status = store.load(flow_id).status
        raise ActionError(409, f"the flow is {status}; nothing to {action}")
    return action


#: The statuses a flow can be retried from (``retry_flow``).
RETRYABLE = (Status.FAILED.value, Status.CANCELLED.value, Status.EXPIRED.value)


def retry(store: Any, flow_id: str) -> str:
    """``crux-gen retry``: only a failed, cancelled or expired flow (else 409)."""
    stored = store.load(flow_id)
    if stored.status not in RETRYABLE:
        raise ActionError(
            409,
            f"the flow is {stored.status}; only a failed, cancelled or expired flow can be retried",
        )
    store.retry_failed(stored.id, store.clock.now().timestamp())
    return "retry"


def fork(store: Any, flow_id: str, form: dict[str, str]) -> str:
    """``crux-gen fork ID --at N``: the new flow's id. ``at`` is a position of the
    history (its record runs again); the flow must be registered in this process
    (``crux-gen ui --module M``), else 409 and nothing is created."""
    text = form.get("at", "").strip()
    if not text.isdigit():
        raise ActionError(400, f"fork at {text!r}: give a position of the history (0, 1, …)")
    try:
        return fork_flow(flow_id, at=int(text), store=store)
    except FlowNotRegisteredError as exc:
        raise ActionError(409, str(exc.with_hint(FORK_HINT))) from None


def nul_error(what: str, value: str, then: str) -> InvalidValueError:
    """The error for *value* holding a NUL character, which no store keeps (a
    PostgreSQL text cannot): every store answers alike, before the store is asked."""
    return InvalidValueError(
        what, value, f"holds a NUL character (\\x00), which no store can keep; {then}"
    )


def check_no_nul(what: str, value: str, then: str) -> None:
    """Raise ``nul_error`` if *value* holds a NUL character."""
    if "\0" in value:
        raise nul_error(what, value, then)
