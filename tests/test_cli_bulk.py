"""Operating many flows from a shell, in process (``crux_gen.cli.main``) on a real
SQLite file: ``list`` and ``count`` with time, cursor, wait and error filters,
``retry|cancel|delete --all`` with ``--dry-run``, ``prune --status/--flow``,
``start`` and ``worker --once``, short ids, and ``--json`` on every subcommand.

The flows are defined here; ``start`` and ``worker`` import this module by name.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import click
import pytest

from crux_gen import Step, Suspend, flow, get_flow, list_flows
from crux_gen.cli import bulk, cli, filters, main
from crux_gen.cli.commands import COMMANDS
from crux_gen.stores.sqlite import SQLiteStore

MODULE = __name__
#: What ``charge`` raises, by the input's ``"fails"``; emptied to let retries pass.
FAILURES: dict[str, Exception] = {}


def charge(kind: str | None) -> str:
    if kind is not None and kind in FAILURES:
        raise FAILURES[kind]
    return "charged"


@flow("bulk-pay")
def pay(ctx: Any) -> Any:
    return (yield Step("charge", lambda: charge(ctx.input.get("fails"))))


@flow("bulk-wait")
def wait(ctx: Any) -> Any:
    return (yield Suspend(ctx.input.get("signal", "approved")))


@pytest.fixture(autouse=True)
def failures() -> Any:
    FAILURES.update(timeout=TimeoutError("gateway timed out"), card=ValueError("card declined"))
    yield
    FAILURES.clear()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "crux.db"


def crux(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``crux-gen ARGS`` in process: exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = crux(capsys, *args)
    assert code == 0, err
    return out


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """A one-line error on stderr, exit code 1, nothing on stdout."""
    code, out, err = crux(capsys, *args)
    assert (code, out) == (1, ""), (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def set_updated(db: Path, stamps: dict[str, float]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for flow_id, stamp in stamps.items():
            conn.execute("UPDATE flows SET updated_at = ? WHERE id = ?", (stamp, flow_id))
    conn.close()


def everything(store: SQLiteStore) -> dict[str, Any]:
    """Every stored flow with its history, to compare before and after."""
    return {s.flow_id: store.load(s.flow_id) for s in list_flows(store=store, limit=10_000)}


@attrs.frozen
class Fleet:
    store: SQLiteStore
    timeouts: list[str]
    declined: list[str]
    done: list[str]
    waiting: list[str]


@pytest.fixture
def fleet(db: Path) -> Fleet:
    """4 flows failed with a timeout, 2 declined, 2 completed, 3 waiting (2 on "approved")."""
    store = SQLiteStore(db)
    timeouts = [pay.run(store=store, input={"fails": "timeout"}).flow_id for _ in range(4)]
    declined = [pay.run(store=store, input={"fails": "card"}).flow_id for _ in range(2)]
    done = [pay.run(store=store, input={}).flow_id for _ in range(2)]
    waiting = [wait.run(store=store, input={}).flow_id for _ in range(2)]
    waiting.append(wait.run(store=store, input={"signal": "shipped"}).flow_id)
    return Fleet(store, timeouts, declined, done, waiting)


# -- list and count --------------------------------------------------------------------


def test_list_filters_by_error_and_wait_and_count_agrees(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "list", "--db", str(db), "--error", "TIMED OUT", "--json")
    assert sorted(o["id"] for o in json.loads(out)) == sorted(fleet.timeouts)
    out = ok(capsys, "list", "--db", str(db), "--waiting-for", "approved", "--json")
    found = json.loads(out)
    assert sorted(o["id"] for o in found) == sorted(fleet.waiting[:2])
    assert found[0]["waiting_for"] == "approved"
    [w] = found[0]["waits"]  # the structure, not a JSON string in a string
    assert (w["kind"], w["name"], w["deadline"], w["child_id"]) == (
        "signal",
        "approved",
        None,
        None,
    )
    table = ok(capsys, "list", "--db", str(db), "--waiting-for", "shipped")
    assert fleet.waiting[2] in table and fleet.waiting[0] not in table
    assert ok(capsys, "list", "--db", str(db), "--error", "no such error") == "no flows match\n"
    for args, expected in (
        ((), 11),
        (("--status", "failed"), 6),
        (("--error", "card declined"), 2),
        (("--waiting-for", "approved"), 2),
        (("--flow", "bulk-pay", "--status", "completed"), 2),
    ):
        assert json.loads(ok(capsys, "count", "--db", str(db), *args, "--json")) == {
            "count": expected
        }
        assert ok(capsys, "count", "--db", str(db), *args) == f"{expected}\n"


def test_list_since_and_until_take_ages_and_iso_times(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = fleet.store.clock.time()
    set_updated(db, {fleet.done[0]: now - 7200, fleet.done[1]: now - 3 * 86400})
    assert fleet.store.count() == 11

    def ids(*args: str) -> set[str]:
        return {o["id"] for o in json.loads(ok(capsys, "list", "--db", str(db), *args, "--json"))}

    recent = set(fleet.timeouts + fleet.declined + fleet.waiting)
    assert ids("--since", "1h") == recent
    assert ids("--until", "1h") == set(fleet.done)
    assert ids("--since", "1d", "--until", "1h") == {fleet.done[0]}
    assert ids("--until", "2d") == {fleet.done[1]}
    iso = fleet.store.clock.now().replace(microsecond=0).isoformat()
    naive = iso.removesuffix("+00:00")  # no zone: UTC
    assert ids("--until", naive) == ids("--until", iso) != set()
    assert ok(capsys, "count", "--db", str(db), "--since", "90m") == "9\n"
    err = refused(capsys, "list", "--db", str(db), "--since", "yesterday")
    assert "--since 'yesterday' is neither an age" in err


def test_list_pages_by_the_cursor_it_prints_each_flow_once(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    flows = [wait.run(store=store, input={}).flow_id for _ in range(17)]
    set_updated(db, {f: 1000.0 + n // 5 for n, f in enumerate(flows)})  # 5 share each instant
    reads: list[int] = []
    real = SQLiteStore.list_flows

    def counted(self: SQLiteStore, **kwargs: Any) -> Any:
        reads.append(kwargs["limit"])
        return real(self, **kwargs)

    monkeypatch.setattr(SQLiteStore, "list_flows", counted)
    monkeypatch.setattr(filters, "PAGE", 3)
    seen: list[str] = []
    args = ["list", "--db", str(db), "--limit", "4", "--json"]
    for _ in range(10):
        code, out, err = crux(capsys, *args)
        assert code == 0
        seen += [o["id"] for o in json.loads(out)]
        if not err:
            break
        assert err.startswith("next page: --before ") and err.count("\n") == 1
        args = ["list", "--db", str(db), "--limit", "4", "--json", *err.split()[2:4]]
    assert sorted(seen) == sorted(flows)  # each once, across pages of 4 read 3 rows at a time
    assert len(seen) == 17 and max(reads) == 3
    assert seen == [s.flow_id for s in list_flows(store=store, limit=100)]


# -- retry, cancel and delete on many flows --------------------------------------------


def test_retry_all_with_filters_dry_run_then_for_real(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(fleet.store)
    out = ok(capsys, "retry", "--all", "--error", "gateway", "--db", str(db), "--dry-run")
    lines = out.splitlines()
    assert sorted(line.split()[2] for line in lines[:-1]) == sorted(fleet.timeouts)
    assert all(line.startswith("would retry") and "TimeoutError" in line for line in lines[:-1])
    assert lines[-1] == "would retry 4 flows (--dry-run: nothing changed)"
    assert everything(fleet.store) == before  # nothing changed

    FAILURES.clear()  # the gateway is back
    out = ok(capsys, "retry", "--all", "--error", "gateway", "--db", str(db), "--json")
    report = json.loads(out)
    assert sorted(o["id"] for o in report) == sorted(fleet.timeouts)
    assert {o["outcome"] for o in report} == {"retried"}
    for flow_id in fleet.declined:  # not selected: untouched
        assert fleet.store.load(flow_id) == before[flow_id]
    assert ok(capsys, "worker", MODULE, "--once", "--db", str(db)) == "advanced 4 flows\n"
    for flow_id in fleet.timeouts:
        assert get_flow(flow_id, store=fleet.store).status == "completed"
    out = ok(capsys, "retry", "--all", "--flow", "bulk-pay", "--db", str(db))
    assert out.splitlines()[-1] == "2 retried"  # the declined ones, the only failed left


def test_cancel_and_delete_all_touch_only_what_the_filters_select(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, "cancel", "--all", "--db", str(db))
    assert "at least one filter" in err
    err = refused(capsys, "cancel", "--all", "--status", "failed", "--db", str(db))
    assert "cancel takes paused, pending, running, suspended flows only" in err
    out = ok(capsys, "cancel", "--all", "--waiting-for", "approved", "--db", str(db))
    assert sorted(line.split()[1] for line in out.splitlines()[:-1]) == sorted(fleet.waiting[:2])
    assert out.splitlines()[-1] == "2 cancelled"
    statuses = {s.flow_id: s.status for s in list_flows(store=fleet.store, limit=100)}
    assert [statuses[f] for f in fleet.waiting] == ["cancelled", "cancelled", "suspended"]

    before = everything(fleet.store)
    out = ok(capsys, "delete", "--all", "--flow", "bulk-wait", "--dry-run", "--db", str(db))
    assert out.splitlines()[-1] == "would delete 2 flows (--dry-run: nothing changed)"
    assert everything(fleet.store) == before
    report = json.loads(
        ok(capsys, "delete", "--all", "--flow", "bulk-wait", "--json", "--db", str(db))
    )
    assert sorted(o["id"] for o in report) == sorted(fleet.waiting[:2])
    left = {s.flow_id for s in list_flows(store=fleet.store, limit=100)}
    assert left == set(before) - set(fleet.waiting[:2])  # the suspended one is kept


def test_one_id_or_all_never_both_nor_filters_without_all(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(fleet.store)
    one = fleet.timeouts[0]
    assert "not both" in refused(capsys, "retry", one, "--all", "--db", str(db))
    assert "give the ID of a flow" in refused(capsys, "delete", "--db", str(db))
    assert "--all only" in refused(capsys, "cancel", one, "--flow", "x", "--db", str(db))
    out = ok(capsys, "retry", one, "--dry-run", "--db", str(db))
    assert out == f"would retry flow {one} (bulk-pay, failed)\nnothing changed (--dry-run)\n"
    err = refused(capsys, "cancel", one, "--dry-run", "--db", str(db))
    assert "only an unfinished flow can be cancelled" in err
    assert everything(fleet.store) == before
    found = json.loads(ok(capsys, "retry", one, "--json", "--db", str(db)))
    assert (found["id"], found["outcome"], found["dropped"]) == (
        one,
        "retried",
        [{"position": 0, "kind": "step", "name": "charge"}],
    )


def test_a_bulk_action_shows_progress_on_a_terminal_only(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(bulk, "REDRAW", 0.0)
    monkeypatch.setattr(bulk, "stderr", lambda: terminal)
    out = ok(capsys, "retry", "--all", "--db", str(db))
    assert out.splitlines()[-1] == "6 retried"  # stdout: the report only
    shown = terminal.getvalue()
    assert "\r\x1b[Kretried 1 of 6" in shown and "retried 6 of 6" in shown
    assert shown.endswith("\r\x1b[K")  # cleared at the end
    piped = bulk.Progress("retried", 3, io.StringIO())
    piped.step()
    piped.clear()
    assert piped.stream.getvalue() == ""  # type: ignore[attr-defined]


# -- prune, short ids, start, worker --once --------------------------------------------


def test_prune_by_status_and_flow_combine(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "at least one of" in refused(capsys, "prune", "--db", str(db))
    out = ok(capsys, "prune", "--status", "failed", "--dry-run", "--db", str(db))
    assert out.startswith("would delete 6 failed flows")
    assert fleet.store.count(status="failed") == 6
    found = json.loads(
        ok(
            capsys,
            "prune",
            "--status",
            "completed",
            "--flow",
            "bulk-pay",
            "--json",
            "--db",
            str(db),
        )
    )
    assert found == {"deleted": 2}
    out = ok(capsys, "prune", "--flow", "bulk-pay", "--finished-before", "1h", "--db", str(db))
    assert out.startswith("deleted 0 finished flows of 'bulk-pay' last updated before ")
    assert ok(capsys, "prune", "--flow", "bulk-pay", "--db", str(db)).startswith(
        "deleted 6 finished flows of 'bulk-pay'"
    )
    assert {s.name for s in list_flows(store=fleet.store)} == {"bulk-wait"}


def test_an_id_prefix_shorter_than_four_characters_is_refused(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = fleet.waiting[2]
    err = refused(capsys, "show", target[:3], "--db", str(db))
    assert f"no flow with id {target[:3]!r}" in err and "at least 4 characters" in err
    unique = next(
        n
        for n in range(4, 33)
        if sum(f.startswith(target[:n]) for f in everything(fleet.store)) == 1
    )
    found = json.loads(ok(capsys, "show", target[:unique], "--json", "--db", str(db)))
    assert found["id"] == target


def test_start_creates_a_due_flow_that_a_worker_pass_runs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "start", "bulk-pay", "--module", MODULE, "--input", "{}", "--db", str(db))
    flow_id = out.split()[2]
    assert out == f"started flow {flow_id} (bulk-pay): the next worker pass runs it\n"
    store = SQLiteStore(db)
    assert store.load(flow_id).records == ()  # nothing ran yet
    made = json.loads(
        ok(capsys, "start", "bulk-wait", "--module", MODULE, "--id", "order-7", "--json",
           "--input", "{}", "--db", str(db))
    )  # fmt: skip
    assert made == {"id": "order-7", "name": "bulk-wait", "status": "pending", "started": True,
                    "priority": 0}  # fmt: skip
    assert json.loads(ok(capsys, "worker", MODULE, "--once", "--json", "--db", str(db))) == {
        "advanced": 2
    }
    assert get_flow(flow_id, store=store).value == "charged"
    assert get_flow("order-7", store=store).waiting_for == "approved"
    again = ok(capsys, "start", "bulk-wait", "--module", MODULE, "--id", "order-7", "--db", str(db))
    assert again == "flow order-7 (bulk-wait) exists already, suspended: nothing started\n"
    err = refused(
        capsys, "start", "bulk-pay", "--module", MODULE, "--id", "order-7", "--db", str(db)
    )
    assert "order-7" in err and "bulk-wait" in err
    assert "registers no flow 'nope'" in refused(
        capsys, "start", "nope", "--module", MODULE, "--db", str(db)
    )
    assert "is not JSON" in refused(
        capsys, "start", "bulk-pay", "--module", MODULE, "--input", "{oops", "--db", str(db)
    )
    err = refused(
        capsys, "start", "bulk-pay", "--module", MODULE, "--priority", "1e3", "--db", str(db)
    )
    assert "1e3" in err
    assert store.count() == 2  # nothing else was created
    made = json.loads(
        ok(capsys, "start", "bulk-pay", "--module", MODULE, "--priority", "5", "--json",
           "--input", "{}", "--db", str(db))
    )  # fmt: skip
    assert (made["status"], made["priority"]) == ("pending", 5)
    assert store.load(made["id"]).priority == 5


def test_every_subcommand_takes_json() -> None:
    for command in COMMANDS:
        # A group (``schedule``) takes it on each of its subcommands.
        leaves = command.commands.values() if isinstance(command, click.Group) else [command]
        for leaf in leaves:
            flags = {opt for p in leaf.params for opt in getattr(p, "opts", [])}
            assert "--json" in flags, f"{command.name} {leaf.name}"
    assert {c.name for c in COMMANDS} == set(cli.commands)


def test_json_of_signal_cancel_delete_and_replay(
    fleet: Fleet, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = fleet.waiting[0]
    sent = json.loads(ok(capsys, "signal", target, "approved", "true", "--json", "--db", str(db)))
    assert sent == {"id": target, "name": "bulk-wait", "signal": "approved", "key": None,
                    "sent": True, "waited_for": True}  # fmt: skip
    other = fleet.waiting[2]
    cancelled = json.loads(
        ok(capsys, "cancel", other, "--reason", "gone", "--json", "--db", str(db))
    )
    assert (cancelled["outcome"], cancelled["reason"]) == ("cancelled", "gone")
    deleted = json.loads(ok(capsys, "delete", other, "--json", "--db", str(db)))
    assert (deleted["id"], deleted["outcome"], deleted["records"]) == (other, "deleted", 1)
    replayed = json.loads(ok(capsys, "replay", MODULE, "--json", "--db", str(db)))
    assert replayed == {"checked": 2, "ok": 2, "diverge": 0, "skipped": 0, "flows": []}
