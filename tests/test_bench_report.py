"""``bench/report.py`` writes where ``--out`` says, by default into a fresh temporary
directory: running the benchmarks never dirties the checkout (regenerating the
committed results is ``--out bench/``, on purpose)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
