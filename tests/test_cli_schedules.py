"""``crux-gen schedules`` and ``crux-gen schedule pause|resume|trigger|backfill``,
each with ``--json``, in process (``main``), on a SQLite file a worker registered
the schedule in; one real ``crux-gen worker --once`` shows a worker started from a
shell stores and fires a schedule of its module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crux_gen import Schedule, SQLiteStore, Step, flow
from crux_gen.cli import main
from crux_gen.flow import Registry
from crux_gen.schedules import tick_id
from crux_gen.worker import Worker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "crux.db")

    @flow("nightly", schedule=Schedule("0 2 * * *", tz="Europe/Paris"), registry=Registry())
    def nightly(ctx: Any) -> Any:
        return (yield Step("note", lambda: ctx.input["scheduled_for"]))

    store = SQLiteStore(path)
    Worker(store, [nightly]).run_once()  # stores the schedule, fires nothing yet
    store.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_schedules_lists_the_next_tick_in_the_zone_and_in_utc(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "schedules", "--db", db, "--json")
    assert code == 0
    [row] = json.loads(out)
    assert row["name"] == "nightly" and row["cron"] == "0 2 * * *"
    assert (row["tz"], row["paused"], row["last_tick"]) == ("Europe/Paris", False, None)
    local = row["next_tick_local"]  # 02:00 in Paris, +01:00 or +02:00
    assert local[11:19] == "02:00:00" and local[19:] in ("+01:00", "+02:00")
    assert row["next_tick"][11:] in ("01:00:00Z", "00:00:00Z")
    code, out, _ = run(capsys, "schedules", "--db", db)
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["NAME", "CRON", "TZ", "PAUSED"]
    assert row["next_tick"] in out and local in out


def test_pause_and_resume_are_stored_for_every_worker(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "schedule", "pause", "nightly", "--db", db, "--json")
    assert (code, json.loads(out)["paused"]) == (0, True)
    store = SQLiteStore(db)
    assert store.get_schedule("nightly").paused is True
    code, out, _ = run(capsys, "schedule", "resume", "nightly", "--db", db)
    assert code == 0 and out.startswith("resumed schedule nightly: next tick ")
    assert store.get_schedule("nightly").paused is False
    code, out, _ = run(capsys, "schedule", "resume", "nightly", "--db", db, "--json")
    assert json.loads(out)["paused"] is False
    code, out, _ = run(capsys, "schedule", "pause", "nightly", "--db", db)
    assert out == "paused schedule nightly: no worker fires its ticks until resume\n"
    store.close()


def test_trigger_starts_one_flow_for_a_worker(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedule", "trigger", "nightly", "--db", db, "--json")
    found = json.loads(out)
    assert (code, found["name"], found["started"]) == (0, "nightly", True)
    assert found["id"].startswith("sched:nightly:") and found["id"].endswith("Z")
    store = SQLiteStore(db)
    assert store.load(found["id"]).input == json.dumps(
        {"scheduled_for": found["id"].removeprefix("sched:nightly:")}, separators=(",", ":")
    )
    assert store.due(store.clock.time(), 10) == [found["id"]]
    store.close()


def test_backfill_starts_every_tick_in_the_range_once(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["schedule", "backfill", "nightly", "--from", "2026-03-28", "--to", "2026-03-30T00:00Z"]
    code, out, _ = run(capsys, *args, "--db", db, "--json")
    found = json.loads(out)
    ids = ["sched:nightly:2026-03-28T01:00:00Z", "sched:nightly:2026-03-29T01:00:00Z"]
    assert (code, found["ticks"], found["started"]) == (0, 2, 2)
    assert [f["id"] for f in found["flows"]] == ids
    assert found["from"] == "2026-03-28T00:00:00+00:00"  # a naive time is UTC
    code, out, _ = run(capsys, *args, "--db", db)
    assert out.splitlines() == [
        f"{ids[0]}  exists already",
        f"{ids[1]}  exists already",
        "2 tick(s): 0 started, 2 there already",
    ]
    store = SQLiteStore(db)
    assert store.count(name="nightly") == 2
    store.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["schedule", "pause", "nope"], "schedule 'nope' is not stored"),
        (["schedule", "trigger", "nope", "--json"], "schedule 'nope' is not stored"),
        (
            ["schedule", "backfill", "nightly", "--from", "March", "--to", "2026-03-30"],
            "--from 'March' is neither an age",
        ),
        (
            ["schedule", "backfill", "nightly", "--from", "2026-03-30", "--to", "2026-03-01"],
            "is not after --from",
        ),
    ],
)
def test_a_bad_name_or_time_is_one_line_and_exit_1_and_changes_nothing(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, out, err = run(capsys, *args, "--db", db)
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and says in err and err.count("\n") == 1
    store = SQLiteStore(db)
    assert store.count() == 0 and store.get_schedule("nightly").paused is False
    store.close()


def test_a_worker_started_from_a_shell_stores_and_fires_its_modules_schedule(
    tmp_path: Path,
) -> None:
    (tmp_path / "tickapp.py").write_text(
        "from crux_gen import Schedule, Step, flow\n"
        "@flow('every-minute', schedule=Schedule('* * * * *', catchup='1h'))\n"
        "def every_minute(ctx):\n"
        "    return (yield Step('x', lambda: ctx.input['scheduled_for']))\n"
    )
    db = str(tmp_path / "crux.db")
    env = {**{k: v for k, v in os.environ.items() if k != "CRUX_DB"}, "PYTHONPATH": str(REPO)}

    def crux(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "crux_gen", *args, "--db", db]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    assert crux("worker", "tickapp", "--once").returncode == 0
    [row] = json.loads(crux("schedules", "--json").stdout)
    assert (row["name"], row["cron"], row["last_tick"]) == ("every-minute", "* * * * *", None)
    store = SQLiteStore(db)
    store.pause_schedule("every-minute", False, store.get_schedule("every-minute").next_tick - 60)
    store.close()  # one tick is due now: the next pass fires and runs it
    assert crux("worker", "tickapp", "--once").returncode == 0
    [row] = json.loads(crux("schedules", "--json").stdout)
    assert row["last_tick"] is not None
    [listed] = json.loads(crux("list", "--json").stdout)
    fired = f"sched:every-minute:{row['last_tick']}"
    assert (listed["id"], listed["status"]) == (fired, "completed")
    assert tick_id(SQLiteStore(db).get_schedule("every-minute").last_tick) == row["last_tick"]
