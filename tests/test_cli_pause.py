"""``crux-gen pause``, ``unpause`` and ``retry`` of cancelled and expired flows, with
and without ``--json``, on a SQLite file; ``list --status paused``, ``show`` and
``doctor`` with a paused flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    FlowContext,
    SQLiteStore,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    pause_flow,
    resume,
    signal_flow,
)
from crux_gen.cli import main


@flow("cli-pause-approval")
def approval(ctx: FlowContext) -> Any:
    yield Step("draft", lambda: "draft")
    return (yield Suspend("approve", timeout="1h"))


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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "crux.db"


def test_pause_and_unpause_a_flow_by_its_short_id(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = SQLiteStore(db)
    r = approval.run(store=store)
    short = r.flow_id[:8]
    out = ok(capsys, "pause", short, "--db", str(db))
    assert out.splitlines()[0] == f"paused flow {r.flow_id} (cli-pause-approval, was suspended)"
    assert get_flow(r.flow_id, store=store).status == "paused"
    listed = ok(capsys, "list", "--status", "paused", "--json", "--db", str(db))
    assert [f["id"] for f in json.loads(listed)] == [r.flow_id]
    shown = ok(capsys, "show", short, "--db", str(db)).splitlines()
    assert shown[2] == "status   paused, waiting for 'approve'"
    assert shown[3].startswith("deadline ")  # still counting
    again = json.loads(ok(capsys, "pause", short, "--json", "--db", str(db)))
    assert (again["outcome"], again["status"], again["was"]) == (
        "already paused",
        "paused",
        "paused",
    )
    back = json.loads(ok(capsys, "unpause", short, "--json", "--db", str(db)))
    assert (back["id"], back["outcome"], back["status"], back["waiting_for"]) == (
        r.flow_id, "unpaused", "suspended", "approve"
    )  # fmt: skip
    assert back["wake_at"] is not None  # its deadline, as before
    twice = json.loads(ok(capsys, "unpause", short, "--json", "--db", str(db)))
    assert (twice["outcome"], twice["status"]) == ("not paused", "suspended")
    out = ok(capsys, "unpause", short, "--db", str(db))
    assert (
        out == f"flow {r.flow_id} (cli-pause-approval) is suspended, not paused; nothing changed\n"
    )
    store.close()


def test_pausing_a_finished_or_unknown_flow_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = SQLiteStore(db)
    r = approval.run(store=store)
    signal_flow(r.flow_id, "approve", "ok", store=store)
    assert resume(r.flow_id, store=store, flows=[approval]).status == "completed"
    err = refused(capsys, "pause", r.flow_id, "--db", str(db))
    assert "is completed; only an unfinished flow can be paused" in err
    assert get_flow(r.flow_id, store=store).status == "completed"
    assert "no-such" in refused(capsys, "pause", "no-such", "--db", str(db))
    assert "no-such" in refused(capsys, "unpause", "no-such", "--db", str(db))
    store.close()


def test_doctor_checks_a_paused_flow_as_what_it_goes_back_to(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = SQLiteStore(db)
    r = approval.run(store=store)
    pause_flow(r.flow_id, store=store)
    out = ok(capsys, "doctor", "--json", "--db", str(db))
    assert json.loads(out) == []  # its wait can still be signalled
    store.close()


def test_retry_takes_a_cancelled_flow_and_refuses_a_suspended_one(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = SQLiteStore(db)
    r = approval.run(store=store)
    err = refused(capsys, "retry", r.flow_id, "--db", str(db))
    assert "is suspended; only a failed, cancelled or expired flow can be retried" in err
    cancel_flow(r.flow_id, "by mistake", store=store)
    out = ok(capsys, "retry", r.flow_id, "--json", "--db", str(db))
    found = json.loads(out)
    assert (found["outcome"], found["status"], found["kept"]) == ("retried", "suspended", 1)
    assert [d["position"] for d in found["dropped"]] == [1]  # its wait, waited for again
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.cancel_reason) == ("suspended", None)
    assert resume(r.flow_id, store=store, flows=[approval]).waiting_for == "approve"
    store.close()


def test_retry_all_takes_cancelled_flows_only_when_asked(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = SQLiteStore(db)
    ids = [approval.run(store=store).flow_id for _ in range(2)]
    for flow_id in ids:
        cancel_flow(flow_id, "stop", store=store)
    out = ok(capsys, "retry", "--all", "--flow", "cli-pause-approval", "--db", str(db))
    assert out.splitlines()[-1] == "no flow to retry"  # no failed one: the cancelled are left
    out = ok(capsys, "retry", "--all", "--status", "cancelled", "--db", str(db))
    assert out.splitlines()[-1] == "2 retried"
    assert {get_flow(f, store=store).status for f in ids} == {"suspended"}
    store.close()
