"""Shared bits of the bench scripts: the import path, options, output, timing helpers.

Each script prints human-readable lines; with ``--json`` those lines go to stderr
and one JSON document goes to stdout (what ``report.py`` collects).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:  # crux_gen is not installed in the venv: run from the checkout
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--quick", action="store_true", help="fewer rounds and sizes: a fast run")
    p.add_argument(
        "--dir",
        default=None,
        help="where to put the database files (default: a fresh directory in the system "
        "temp dir, removed at exit)",
    )
    return p


class Out:
    """Human lines on stdout, or on stderr when the JSON document owns stdout."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        print(text, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def emit(self, doc: dict[str, Any]) -> None:
        if self.as_json:
            json.dump(doc, sys.stdout, indent=1, default=str)
            sys.stdout.write("\n")
            sys.stdout.flush()


@contextlib.contextmanager
def workdir(given: str | None, prefix: str) -> Iterator[Path]:
    """*given* as it is (kept), or a fresh temp directory removed afterwards."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh(path: Path) -> Path:
    """Remove an SQLite file and its WAL side files; return the path."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    return path


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rss() -> dict[str, int]:
    """Current and peak resident set size of this process, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for row in f:
            key, _, value = row.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    if "VmHWM" not in out:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak // 1024 if sys.platform == "darwin" else peak
    out.setdefault("VmRSS", out["VmHWM"])
    return {"rss_kib": out["VmRSS"], "peak_kib": out["VmHWM"]}


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
    }


class Unavailable(Exception):
    """A peer cannot be installed or started here (the reason is the message)."""


def peer_venv(venv: Path, packages: Sequence[str], probe: str, out: Out) -> Path:
    """The python of *venv* (a peer's own venv, kept between runs), creating it and
    installing *packages* when ``python -c probe`` fails there; ``Unavailable`` with
    the reason when that cannot be done (no network, say)."""
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    def imports() -> bool:
        return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0

    if python.exists() and imports():
        return python
    out.line(f"creating {venv} and installing {' '.join(packages)} (once; reused afterwards)…")
    for cmd in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
    ):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise Unavailable(f"`{' '.join(cmd)}` exited {done.returncode}: {' | '.join(tail)}")
    if not imports():
        raise Unavailable(f"{' '.join(packages)} installed, but `{probe}` fails in {venv}")
    return python
