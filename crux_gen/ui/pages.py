"""What the dashboard's pages show, computed from the store: counts, a page of
flows, a flow's timeline geometry and its values as text. No HTML here: the
templates render these with Jinja2's autoescape, so nothing from the store is
ever marked safe."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

import attrs

from ..cli.format import hide_own_frames
from ..commands import VALUE_KINDS
from ..durations import approximate
from ..results import HistoryEntry
from ..status import FINISHED, Status
from ..stores.caps import caps_of

if TYPE_CHECKING:
    from crux_gen.stores.base_limits import Limits

#: Flows per page of the flows table.
PAGE_SIZE = 50
#: How many characters of a value show before "show all".
SHORT = 200
#: The count of a store that does not declare ``counts``: one indexed page per status.
COUNT_CAP = 1000

STATUSES = tuple(s.value for s in Status)


# -- the flows page --------------------------------------------------------------------


def status_counts(store: Any) -> dict[str, str]:
    """Every status with how many flows have it, as text (``"0"`` included).

    A store whose ``caps`` say it ``counts`` (all of crux_gen's) answers in one
    GROUP BY (``count_flows()``); another store is asked for one page of at most
    ``COUNT_CAP`` flows per status, and a full page shows as ``"1000+"``.
    """
    if caps_of(store).counts:
        found: dict[str, int] = store.count_flows()
        return {s: str(found.get(s, 0)) for s in STATUSES}
    counts = {}
    for s in STATUSES:
        n = len(store.list_flows(status=s, limit=COUNT_CAP + 1))
        counts[s] = f"{COUNT_CAP}+" if n > COUNT_CAP else str(n)
    return counts


def limits_in_use(store: Any) -> list[Any]:
    """The limits in use (``crux-gen limits``): slots held, flows blocked; none for a
    store that keeps no limits."""
    if not caps_of(store).limits:
        return []
    return list(cast("Limits", store).limit_usage(store.clock.time()))


def parse_before(text: str) -> datetime | tuple[float, str]:
    """The ``before`` of a next-page link: ``<updated_at>,<flow id>`` (the exact
    keyset :func:`flows_page` makes), or an ISO datetime (UTC when it names no
    zone). ``ValueError`` for anything else."""
    head, comma, flow_id = text.strip().partition(",")
    if comma and flow_id:
        try:
            moment = float(head)
        except ValueError:
            moment = math.nan
        if math.isfinite(moment):
            return (moment, flow_id)
    moment_at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment_at.tzinfo is None:
        moment_at = moment_at.replace(tzinfo=timezone.utc)
    return moment_at


# -- the signal form -------------------------------------------------------------------

#: What a suspended flow waits on, by ``wait_kind``, when that is no signal.
NOT_A_SIGNAL = {
    "child": "its child flow {waiting_for!r}",
    "all": "its child flows (an All)",
    "sleep": "a timer (Sleep {waiting_for!r})",
    "retry": "the next try of step {waiting_for!r}",
    "wait_until": "a condition it polls (WaitUntil {waiting_for!r})",
}


@attrs.frozen
class SignalChoice:
    """The signal names a flow waits for now (the form offers exactly these), and
    when there are none, *why* (a phrase: "it waits for a timer (…)")."""

    names: tuple[str, ...]
    why: str = ""


def signal_choice(status: str, wait_kind: str | None, waiting_for: str | None) -> SignalChoice:
    """What the signal form may send to a flow with these stored fields: the name
    of the ``Suspend`` it is parked on, the names of the ``Suspend`` branches of
    the ``Any`` it is parked on, and nothing else. A signal of another name would
    be stored and never consumed by this wait, so the dashboard offers none and
    refuses one."""
    if status in {s.value for s in FINISHED}:
        return SignalChoice((), f"it is {status}: a finished flow takes no signal")
    parked = (Status.SUSPENDED.value, Status.PAUSED.value)  # a paused flow keeps its wait
    if status not in parked or waiting_for is None or wait_kind is None:
        return SignalChoice(
            (),
            f"it is {status} and parked on nothing yet (`crux-gen signal` sends a signal "
            "ahead of the Suspend that takes it)",
        )
    if wait_kind == "suspend":
        return SignalChoice((waiting_for,))
    if wait_kind == "any":
        try:
            names = json.loads(waiting_for)
        except ValueError:
            names = None
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            if names:
                return SignalChoice(tuple(dict.fromkeys(names)))
            return SignalChoice((), "it waits in an Any with no Suspend branch")
        return SignalChoice((), "its stored Any wait list is not a JSON list of names")
    what = NOT_A_SIGNAL.get(wait_kind or "", "{waiting_for!r}")
    return SignalChoice((), "it waits for " + what.format(waiting_for=waiting_for))


# -- values as text --------------------------------------------------------------------


@attrs.frozen
class Text:
    """A value as the page shows it: *short* (one line, cut at ``SHORT`` characters)
    and, when that cut something or the value spans lines, *full*."""

    short: str
    full: str | None = None


def json_text(value: Any, *, indent: int | None = None) -> str:
    """*value* as JSON text (what is not JSON, such as a datetime, as its ``str``)."""
    try:
        return json.dumps(
            value,
            indent=indent,
            ensure_ascii=False,
            default=str,
            separators=None if indent else (", ", ": "),
        )
    except (TypeError, ValueError):  # circular or odd keys: still show something
        return repr(value)


def value_text(value: Any) -> Text:
    """How a value shows: its one-line JSON, and when that is longer than ``SHORT``
    characters, cut there, with the whole of it pretty-printed as *full*."""
    line = json_text(value)
    if len(line) <= SHORT:
        return Text(line)
    return Text(line[: SHORT - 1] + "…", json_text(value, indent=2))


def plain_text(text: str) -> Text:
    """A stored string (an error message, a cancel reason) cut the same way."""
    if len(text) <= SHORT and "\n" not in text:
        return Text(text)
    first = text.replace("\n", " ⏎ ")
    return Text(first if len(first) <= SHORT else first[: SHORT - 1] + "…", text)


took = approximate


def ago(moment: datetime | None, now: datetime) -> str:
    """Say when *moment* is from *now*: ``in 23h59m``, ``5m ago`` or ``now``."""
    if moment is None:
        return ""
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {took(delta)}" if delta > 0 else f"{took(delta)} ago"


def at(moment: datetime | None) -> str:
    """A moment as ``2026-01-01 10:00:00Z`` (UTC)."""
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- the history ----------------------------------------------------------------------


def entry_facts(entry: HistoryEntry, consumed_by: dict[int, int], now: datetime) -> list[str]:
    """The facts after a command's name in the history list."""
    facts: list[str] = []
    if entry.kind in VALUE_KINDS:
        return ["recorded"]
    if entry.kind in ("step", "wait_until") and entry.attempts:
        facts.append(f"{entry.attempts} attempt{'s' if entry.attempts != 1 else ''}")
    if entry.started_at is not None and entry.finished_at is not None:
        verb = "waited" if entry.kind in ("suspend", "sleep") else "took"
        facts.append(f"{verb} {took((entry.finished_at - entry.started_at).total_seconds())}")
    elif entry.started_at is not None:
        facts.append(f"since {at(entry.started_at)} ({ago(entry.started_at, now)})")
    if entry.state == "retrying" and entry.wake_at is not None:
        facts.append(f"next try {at(entry.wake_at)} ({ago(entry.wake_at, now)})")
    if entry.state == "waiting" and entry.deadline is not None:
        facts.append(f"deadline {at(entry.deadline)} ({ago(entry.deadline, now)})")
    elif entry.state == "waiting" and entry.wake_at is not None:
        facts.append(f"wakes {at(entry.wake_at)} ({ago(entry.wake_at, now)})")
    if entry.position in consumed_by:
        facts.append(f"took signal #{consumed_by[entry.position]}")
    return facts


@attrs.frozen
class Traceback:
    """A traceback as the page shows it first: *text* without crux_gen's own frames,
    each run of them one line saying how many; *hidden*: how many in all."""

    text: str
    hidden: int


def traceback_view(traceback: str) -> Traceback:
    """*traceback* with each run of crux_gen's own frames (a ``File "…"`` line and
    the source lines under it, :func:`~crux_gen.cli.format.hide_own_frames`) left out."""
    runs: list[int] = []

    def note(run: int) -> str:
        runs.append(run)
        return f"  ({run} crux_gen frame{'' if run == 1 else 's'} hidden)"

    shown = hide_own_frames(traceback.rstrip("\n").split("\n"), note)
    return Traceback("\n".join(shown), sum(runs))


#: What the templates may call.
FILTERS: dict[str, Callable[..., Any]] = {
    "traceback_view": traceback_view,
    "value_text": value_text,
    "tojson_text": lambda value: json_text(value, indent=2),
    "plain_text": plain_text,
    "at": at,
}
