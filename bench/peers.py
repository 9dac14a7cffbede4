"""The 300-step workload on crux_gen beside DBOS Transact (SQLite system database).

DBOS runs in its own venv, ``<tempdir>/crux-bench-dbos-venv`` (created with
``pip install dbos`` when missing, reused when present), as long-lived child
processes that each run one workflow per request and print its timing as JSON;
ours runs in this process. The rounds are interleaved (ours, DBOS, ours, …) and
the medians and the per-round ratios reported.

The DBOS workload: a ``@DBOS.workflow()`` calling a ``@DBOS.step()`` function 300
times, each returning the same small dict our steps return. DBOS is measured
three ways on its SQLite system database (``system_database_url="sqlite:///…"``):

- ``default``: DBOS as shipped (SQLite's rollback journal, ``synchronous=FULL``);
- ``WAL+FULL`` and ``WAL+NORMAL``: the same pragmas as our two modes, set on each
  connection DBOS's engine opens (a SQLAlchemy ``connect`` listener).

If DBOS cannot be installed or started here, the script says so and exits 0.

    python bench/peers.py [--quick] [--json] [--rounds N] [--steps 300]
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from _common import Out, Unavailable, fresh, machine, median, parser, peer_venv, workdir
from steps import ours

from crux_gen.stores.sqlite import SQLiteStore

TARGET = 10.0
VENV = Path(tempfile.gettempdir()) / "crux-bench-dbos-venv"
PREFIX = "CRUXJSON "

# Runs in the DBOS venv: argv = db path, variant. Reads one JSON request a line.
CHILD = r"""
import json, sqlite3, sys, time
from importlib.metadata import version

import sqlalchemy
from sqlalchemy import event

DB, VARIANT = sys.argv[1], sys.argv[2]
SEEN = {}
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@event.listens_for(sqlalchemy.engine.Engine, "connect")
def _pragmas(dbapi_conn, _record):
    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    if VARIANT != "default":
        sync = VARIANT.split("+")[1]
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        dbapi_conn.execute(f"PRAGMA synchronous = {sync}")
    SEEN["journal_mode"] = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
    SEEN["synchronous"] = SYNC_NAMES.get(dbapi_conn.execute("PRAGMA synchronous").fetchone()[0])


from dbos import DBOS  # noqa: E402

DBOS(config={
    "name": "crux-bench",
    "system_database_url": f"sqlite:///{DB}",
    "run_admin_server": False,
    "log_level": "WARNING",
})


def small_result(i):
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


@DBOS.step()
def small_step(i):
    return small_result(i)


@DBOS.workflow()
def bench_workflow(n):
    out = None
    for i in range(n):
        out = small_step(i)
    return out


def say(doc):
    print("CRUXJSON " + json.dumps(doc), flush=True)


DBOS.launch()
assert bench_workflow(20) == small_result(19)  # warm-up
say({"ready": True, "dbos": version("dbos"), "sqlalchemy": version("sqlalchemy"),
     "sqlite": sqlite3.sqlite_version, "python": sys.version.split()[0], **SEEN})
for line in sys.stdin:
    req = json.loads(line)
    if req.get("quit"):
        break
    n = req["steps"]
    t0 = time.perf_counter()
    result = bench_workflow(n)
    elapsed = time.perf_counter() - t0
    assert result == small_result(n - 1), result
    say({"seconds": elapsed, "steps": n, **SEEN})
DBOS.destroy()
"""


def venv_python(out: Out) -> Path:
    """The DBOS venv's python, creating the venv and installing dbos when needed."""
    return peer_venv(VENV, ["dbos"], "import dbos", out)


class DBOSChild:
    """One long-lived DBOS process: one variant, one system database."""

    def __init__(self, python: Path, script: Path, db: Path, variant: str, log: Path) -> None:
        self.variant = variant
        self.log = log
        self._log: IO[str] = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(python), str(script), str(fresh(db)), variant],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                doc: dict[str, Any] = json.loads(line[len(PREFIX) :])
                return doc
        self.proc.wait()
        self._log.flush()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-8:]
        raise Unavailable(
            f"the DBOS child ({self.variant}) exited {self.proc.returncode}: " + " | ".join(tail)
        )

    def run(self, steps: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"steps": steps}) + "\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# (label, our mode, DBOS variant); the ratio is our steps/s over DBOS's.
PAIRS = [
    ("FULL vs DBOS default", "FULL", "default"),
    ("FULL vs DBOS WAL+FULL", "FULL", "WAL+FULL"),
    ("NORMAL vs DBOS WAL+NORMAL", "NORMAL", "WAL+NORMAL"),
]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, 2)")
    p.add_argument("--steps", type=int, default=300, help="steps per workflow (default 300)")
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (2 if args.quick else 5)
    steps = args.steps
    doc: dict[str, Any] = {
        "bench": "peers",
        "machine": machine(),
        "steps": steps,
        "rounds": rounds,
        "target_ratio": TARGET,
    }

    with workdir(args.dir, "crux-bench-peers-") as d:
        children: dict[str, DBOSChild] = {}
        try:
            python = venv_python(out)
            script = d / "dbos_child.py"
            script.write_text(CHILD)
            for variant in dict.fromkeys(v for _, _, v in PAIRS):
                children[variant] = DBOSChild(
                    python, script, d / f"dbos-{variant}.sqlite", variant, d / f"{variant}.log"
                )
        except Unavailable as exc:
            for child in children.values():
                child.close()
            note = f"DBOS not measured: {exc}"
            out.line(note)
            doc.update(skipped=True, note=note)
            out.emit(doc)
            return
        try:
            doc["dbos"] = {v: c.info for v, c in children.items()}
            first = next(iter(children.values())).info
            out.line(
                f"DBOS {first.get('dbos')} (SQLAlchemy {first.get('sqlalchemy')}, "
                f"SQLite {first.get('sqlite')}) in {VENV}; ours in-process; "
                f"{steps} steps per workflow, {rounds} rounds interleaved, median"
            )
            for v, c in children.items():
                out.line(
                    f"  DBOS {v}: journal_mode={c.info.get('journal_mode')}, "
                    f"synchronous={c.info.get('synchronous')}"
                )
            stores = {
                m: SQLiteStore(fresh(d / f"ours-{m}.db"), synchronous=m) for m in ("FULL", "NORMAL")
            }
            for store in stores.values():
                ours(store, 20)  # warm-up
            jobs: list[tuple[str, Any]] = [
                *((f"ours {m}", lambda s=s: ours(s, steps)) for m, s in stores.items()),
                *((f"DBOS {v}", lambda c=c: c.run(steps)) for v, c in children.items()),
            ]
            us: dict[str, list[float]] = {name: [] for name, _ in jobs}
            for r in range(rounds):
                for name, fn in jobs if r % 2 == 0 else reversed(jobs):
                    us[name].append(fn() / steps * 1e6)
                out.line(
                    f"  round {r + 1}/{rounds}: "
                    + ", ".join(f"{k} {v[-1]:.0f} µs" for k, v in us.items())
                )
        finally:
            for child in children.values():
                child.close()

    out.line()
    out.line(
        f"{'':<28}{'ours µs/step':>13}{'DBOS µs/step':>14}{'ours steps/s':>14}"
        f"{'DBOS steps/s':>14}{'ratio':>8}"
    )
    doc["samples_us"] = us
    doc["pairs"] = []
    for label, mode, variant in PAIRS:
        o, b = us[f"ours {mode}"], us[f"DBOS {variant}"]
        ratio = median([y / x for x, y in zip(o, b, strict=True)])
        row = {
            "pair": label,
            "ours_mode": mode,
            "dbos_variant": variant,
            "ours_us_per_step": median(o),
            "dbos_us_per_step": median(b),
            "ours_steps_per_second": 1e6 / median(o),
            "dbos_steps_per_second": 1e6 / median(b),
            "ratio": ratio,
            "meets_target": ratio >= TARGET,
        }
        doc["pairs"].append(row)
        out.line(
            f"{label:<28}{median(o):>13.0f}{median(b):>14.0f}{1e6 / median(o):>14.0f}"
            f"{1e6 / median(b):>14.0f}{ratio:>7.1f}x  "
            f"{'ok' if ratio >= TARGET else 'below'} (target ≥ {TARGET:.0f}x)"
        )
    doc["machine_after"] = machine()
    out.emit(doc)


if __name__ == "__main__":
    main()
