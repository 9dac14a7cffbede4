"""``bench/report.py`` writes where ``--out`` says, by default into a fresh temporary
directory: running the benchmarks never dirties the checkout (regenerating the
committed results is ``--out bench/``, on purpose)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file directly in *folders*, by path, with its content; coverage's data
    files aside (under CI every test process writes its own into the checkout)."""
    return {
        str(p): p.read_bytes()
        for f in folders
        for p in sorted(f.iterdir())
        if p.is_file() and not p.name.startswith(".coverage")
    }


def test_a_report_run_writes_into_a_temporary_directory_not_the_checkout() -> None:
    before = snapshot(BENCH, BENCH.parent)
    done = subprocess.run(
        [sys.executable, str(BENCH / "report.py"), "--quick", "--only", "due_scan,listing"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert snapshot(BENCH, BENCH.parent) == before  # nothing written into the repository
    written = Path(done.stderr.rsplit("wrote ", 1)[1].split(",")[0])
    assert written.name == "RESULTS.md" and written.is_file()
    assert written.parent.parent == Path(tempfile.gettempdir())
    assert (written.parent / "results.json").is_file()
    text = written.read_text()
    assert "## `bench/due_scan.py`" in text and "## `bench/listing.py`" in text
    shutil.rmtree(written.parent)


def test_a_report_goes_where_out_says_and_refuses_a_file(tmp_path: Path) -> None:
    out = tmp_path / "results"
    report = [sys.executable, str(BENCH / "report.py"), "--quick", "--only", "due_scan"]
    done = subprocess.run([*report, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) >= ["RESULTS.md", "results.json"]
    for bad in (["--out", str(tmp_path / "RESULTS.md")], ["--only", "stepz"]):
        refused = subprocess.run([*report, *bad], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "error:" in refused.stderr
    assert not (tmp_path / "RESULTS.md").exists()


# -- the Targets table: issue 19's rows, their numbers and verdicts ----------------------


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``bench/report.py`` as a module (it imports no flows: nothing is registered)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("report")


def bench_module(monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def met_docs() -> dict[str, dict[str, Any]]:
    """Documents as the scripts write them, every issue 19 target met."""

    def case(kind: str, c: int, sps: float, mode: str = "FULL", **more: Any) -> dict[str, Any]:
        return {
            "case": kind,
            "concurrency": c,
            "synchronous": mode,
            "flows": 100,
            "steps_per_second": sps,
            **more,
        }

    return {
        "concurrency": {
            "flows": {"fast": 100, "sleep": 100},
            "steps": 20,
            "cases": [
                case("sleep", 1, 150.0),
                case("sleep", 32, 4000.0, ratio=26.0, ratio_target=25.0, meets_target=True),
                case("fast", 1, 1000.0),
                case("fast", 32, 6000.0, ratio=6.0, ratio_target=5.0, meets_target=True),
                case("fast", 1, 1500.0, "NORMAL"),  # not the baseline of the c=1 ratio
            ],
            "vs_normal": {
                "concurrency": 32,
                "ratio": 4.0,
                "full_steps_per_second": 6000.0,
                "normal_steps_per_second": 1500.0,
                "samples": [4.0],
                "target": 3.0,
                "meets_target": True,
            },
            "fsync": {"runs": [{}], "steps_per_fsync": 25.0, "target": 20.0, "meets_target": True},
        },
        "steps": {
            "modes": {
                "FULL": {
                    "ratio": 1.1,
                    "ours_us_per_step": 220.0,
                    "raw_us_per_commit": 200.0,
                    "block_ratio": 1.1,
                    "block_ours_us_per_step": 220.0,
                    "block_raw_us_per_commit": 200.0,
                    "ratio_target": 1.2,
                    "meets_target": True,
                    "block_meets_target": True,
                }
            }
        },
        "replay": {
            "mode": "NORMAL",
            "target_us_per_step": 3.0,
            "lengths": [
                {"steps": n, "us_per_step": 2.5, "meets_target": True}
                for n in (1000, 10000, 100000)
            ],
        },
        "peers_resume": {
            "steps": 1000,
            "rows": [{"what": "LangGraph get_state", "ms": 0.3}],
            "target": {
                "ours": "ours FULL",
                "versus": "LangGraph resume",
                "ours_ms": 4.0,
                "langgraph_ms": 6.0,
                "ratio": 1.5,
                "samples": [1.5],
                "meets_target": True,
            },
        },
        "postgres": {
            "step": [{"ours_us": 500.0, "raw_us": 400.0, "ratio": 1.25, "ratio_target": 1.3}],
            "xacts": {
                "levels": [
                    {
                        "concurrency": 1,
                        "durable_steps": 2000,
                        "transactions": 4000,
                        "steps_per_transaction": 0.5,
                    },
                    {
                        "concurrency": 32,
                        "durable_steps": 2000,
                        "transactions": 100,
                        "steps_per_transaction": 20.0,
                        "target": 10.0,
                        "meets_target": True,
                    },
                ]
            },
        },
    }


def issue_rows(report: Any, docs: dict[str, dict[str, Any]]) -> list[str]:
    return [row for row in report.targets(docs) if row.startswith("| #19 |")]


def test_the_targets_table_has_every_issue_19_target_with_its_number_and_verdict(
    report: Any,
) -> None:
    rows = issue_rows(report, met_docs())
    assert len(rows) == 9 and all(row.endswith("| **met** |") for row in rows), rows
    text = "\n".join(rows)
    for expected in (
        "≥ 5x concurrency 1 | 6.0x (1,000 → 6,000 steps/s",  # c=1 on FULL is the base
        "≥ 3x one flow at a time (concurrency 1) on synchronous=NORMAL | 4.0x",
        "≥ 20 durable steps per fsync | 25.0",
        "≥ 25x concurrency 1 | 26.0x",
        "same pragmas: ≤ 1.2x | paired 1.10x",
        "1,000: 2.50 µs, 10,000: 2.50 µs, 100,000: 2.50 µs",
        "LangGraph ÷ ours 1.50x",
        "≤ 1.3x | 1.25x",
        "≥ 10 durable steps per server transaction at worker concurrency 32 | 20.0",
    ):
        assert expected in text, expected


@pytest.mark.parametrize(
    ("script", "path", "value", "row"),
    [
        ("concurrency", ["vs_normal", "meets_target"], False, "synchronous=NORMAL"),
        ("concurrency", ["fsync", "meets_target"], False, "per fsync"),
        ("steps", ["modes", "FULL", "meets_target"], False, "WAL+FULL"),
        ("peers_resume", ["target", "meets_target"], False, "LangGraph"),
        ("postgres", ["step", 0, "ratio"], 1.31, "psycopg"),
        ("postgres", ["xacts", "levels", 1, "meets_target"], False, "server transaction"),
    ],
)
def test_a_missed_issue_19_target_says_missed(
    report: Any, script: str, path: list[Any], value: Any, row: str
) -> None:
    docs = met_docs()
    at: Any = docs[script]
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    rows = issue_rows(report, docs)
    missed = [r for r in rows if "| **missed**" in r]
    assert len(missed) == 1 and row in missed[0], rows


def test_a_target_not_measured_says_so_and_why(report: Any) -> None:
    rows = issue_rows(report, {})
    assert len(rows) == 9 and all("| not measured | — |" in r for r in rows), rows
    skipped = {"skipped": True, "steps": 1000, "note": "LangGraph could not be installed"}
    (row,) = [r for r in issue_rows(report, {"peers_resume": skipped}) if "LangGraph" in r]
    assert "not measured (LangGraph could not be installed) | — |" in row
    uncounted = {"xacts": {"note": "not counted: TimeoutError: still connected", "levels": []}}
    (row,) = [r for r in issue_rows(report, {"postgres": uncounted}) if "transaction" in r]
    assert "not measured (not counted: TimeoutError: still connected) | — |" in row
    assert "_Server transactions not counted: TimeoutError" in "\n".join(
        report.postgres_section(uncounted)
    )


def test_the_postgres_transaction_count_is_per_durable_step_less_the_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg = bench_module(monkeypatch, "postgres")
    got = pg.xact_result(
        32,
        2000,
        {"commits": 205, "rollbacks": 2, "wal_syncs": 60},
        {"commits": 7, "rollbacks": 0, "wal_syncs": 10},
    )
    assert got["transactions"] == 200 and got["transactions_raw"] == 207
    assert got["steps_per_transaction"] == 10.0 and got["steps_per_wal_sync"] == 40.0
    url = "postgresql://u:p@/postgres?host=/tmp/x"
    assert pg.with_database(url, "bench") == "postgresql://u:p@/bench?host=/tmp/x"


# -- tiny runs of the scripts, through the report's sections ---------------------------


def run_json(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args, "--json"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_a_tiny_concurrency_run_gives_every_concurrency_row_a_verdict(report: Any) -> None:
    doc = run_json(
        [
            str(BENCH / "concurrency.py"),
            "--flows",
            "3",
            "--sleep-flows",
            "2",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--sleep-rounds",
            "1",
        ]
    )
    by = {(c["case"], c["concurrency"], c["synchronous"]): c for c in doc["cases"]}
    assert set(by) == {
        *(("sleep", c, "FULL") for c in (1, 8, 32)),
        *(("fast", c, "FULL") for c in (1, 8, 32)),
        ("fast", 1, "NORMAL"),
    }
    top, normal, v = by[("fast", 32, "FULL")], by[("fast", 1, "NORMAL")], doc["vs_normal"]
    per_round = [
        a / b
        for a, b in zip(
            top["samples"]["steps_per_second"], normal["samples"]["steps_per_second"], strict=True
        )
    ]
    assert v["samples"] == pytest.approx(per_round) and len(per_round) == 2
    assert v["meets_target"] == (v["ratio"] >= v["target"] == 3.0)
    assert (top["ratio_target"], by[("sleep", 32, "FULL")]["ratio_target"]) == (5.0, 25.0)
    rows = [r for r in report.targets({"concurrency": doc}) if "concurrent worker" in r]
    assert len(rows) == 4
    fsync = doc["fsync"]
    for row in rows:
        if "per fsync" in row and "runs" not in fsync:  # no strace here: no verdict
            assert "not counted" in row and row.endswith("| — |")
        else:
            assert row.endswith(("| **met** |", "| **missed** |")), row
    section = "\n".join(report.concurrency_section(doc))
    assert "| fast steps | 1 | NORMAL |" in section and "over one flow at a time" in section


def test_a_tiny_resume_beside_langgraph_gives_a_verdict_or_says_why_not(report: Any) -> None:
    doc = run_json(
        [str(BENCH / "peers_resume.py"), "--no-install", "--rounds", "2", "--steps", "20"]
    )
    (row,) = [r for r in issue_rows(report, {"peers_resume": doc}) if "LangGraph" in r]
    if doc.get("skipped"):
        assert "not installed" in doc["note"] and "not measured (" in row, row
        return
    t = doc["target"]
    ours = next(r for r in doc["rows"] if r["what"] == t["ours"])["samples_ms"]
    theirs = next(r for r in doc["rows"] if r["what"] == "LangGraph resume")["samples_ms"]
    assert t["samples"] == pytest.approx([b / a for a, b in zip(ours, theirs, strict=True)])
    assert t["meets_target"] == (t["ratio"] > 1)
    assert row.endswith(("| **met** |", "| **missed** |")), row


def test_a_tiny_postgres_count_sees_a_transaction_per_sequential_step(
    report: Any, pg_server: Any
) -> None:
    env = {**os.environ, "CRUX_BENCH_PG_URL": pg_server.url}
    doc = run_json(
        [
            str(BENCH / "postgres.py"),
            "--parts",
            "xacts",
            "--xact-flows",
            "4",
            "--xact-steps",
            "3",
            "--xact-rounds",
            "1",
        ],
        env,
    )
    one, top = doc["xacts"]["levels"]
    assert (one["concurrency"], top["concurrency"]) == (1, 32)
    # One flow at a time, each step is durable before the next runs: its own commit.
    assert one["durable_steps"] == 12 and one["transactions"] >= 12
    assert one["baseline_transactions"] > 0
    assert top["steps_per_transaction"] == top["durable_steps"] / top["transactions"]
    left = pg_server.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'crux_bench')"
    )
    assert left == []  # the bench's database is dropped
    (row,) = [r for r in issue_rows(report, {"postgres": doc}) if "server transaction" in r]
    assert row.endswith(("| **met** |", "| **missed** |")), row
    assert "| 1 | 4, 3 |" in "\n".join(report.postgres_section(doc))
