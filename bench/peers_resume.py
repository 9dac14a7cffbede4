"""Resuming a flow of 1,000 recorded steps: crux_gen beside LangGraph (SqliteSaver).

LangGraph runs as one long-lived child process that answers one request a line
with its timing as JSON: on this interpreter when LangGraph imports here (``pip
install langgraph langgraph-checkpoint-sqlite`` into the bench's venv: it is not a
dependency of crux_gen), else in its own venv, ``<tempdir>/crux-bench-langgraph-venv``
(created with that ``pip install`` when missing, reused when present). Ours runs in
this process. Rounds are interleaved, medians reported.

- LangGraph: a one-node graph that loops 1,000 times (each pass returns the same
  small dict our steps return), ``durability="sync"``, a ``SqliteSaver`` on a file
  as shipped, then a second node that parks at ``interrupt()``. Measured: reading
  the thread's state (``graph.get_state``: the latest checkpoint, the snapshot a
  resume starts from), and resuming it (``invoke(Command(resume=...))`` from the
  parked checkpoint, so each round resumes the same state: one more node, its
  checkpoints written).
- Ours: ``resume()`` of the flow of ``bench/replay.py`` parked at a ``Suspend``
  after 1,000 steps: claim (segment + records after it), replay of the 1,000 steps
  from the record, park again; on ``synchronous=FULL`` and ``NORMAL``.

Target (issue 19): our 1,000-step resume is faster than LangGraph's resume from
its snapshot, at the same ``synchronous`` as LangGraph's connection (measured; FULL
as shipped): the ratio LangGraph resume ÷ ours, taken within each round, median,
must be > 1. LangGraph loads a snapshot of its state and does not replay; we
replay the flow body from the start (that is what keeps a flow plain Python). If
LangGraph cannot be installed or started, the script says why and exits 0 (the
report then shows the row as not measured, with that note).

    python bench/peers_resume.py [--quick] [--json] [--rounds N] [--steps 1000] [--no-install]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from _common import Out, Unavailable, fresh, machine, median, parser, peer_venv, workdir
from replay import build, timed_resume

from crux_gen.stores.sqlite import SQLiteStore

VENV = Path(tempfile.gettempdir()) / "crux-bench-langgraph-venv"
PACKAGES = ["langgraph", "langgraph-checkpoint-sqlite"]
PREFIX = "CRUXJSON "
PROBE = "import langgraph.graph, langgraph.checkpoint.sqlite"
# PRAGMA synchronous as a number, and the store mode ours is compared at.
SYNCHRONOUS = {0: "NORMAL", 1: "NORMAL", 2: "FULL", 3: "FULL"}

# Runs in the LangGraph venv: argv = db path, steps. Reads one request a line.
CHILD = r"""
import json, operator, sqlite3, sys, time
from importlib.metadata import version
from typing import TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

DB, STEPS = sys.argv[1], int(sys.argv[2])


class State(TypedDict):
    i: int
    last: dict
    go: str


def small_result(i):
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


def step(state):
    return {"i": state["i"] + 1, "last": small_result(state["i"])}


def wait(state):
    return {"go": interrupt("go")}


g = StateGraph(State)
g.add_node("step", step)
g.add_node("wait", wait)
g.add_edge(START, "step")
g.add_conditional_edges("step", lambda s: "step" if s["i"] < STEPS else "wait")
g.add_edge("wait", END)
saver = SqliteSaver(sqlite3.connect(DB, check_same_thread=False))
graph = g.compile(checkpointer=saver)
config = {"configurable": {"thread_id": "t1"}, "recursion_limit": STEPS + 10}


def say(doc):
    print("CRUXJSON " + json.dumps(doc), flush=True)


t0 = time.perf_counter()
graph.invoke({"i": 0, "last": {}, "go": ""}, config, durability="sync")
built = time.perf_counter() - t0
parked = graph.get_state(config)
assert parked.values["i"] == STEPS and parked.next == ("wait",), parked
at = {"configurable": {"thread_id": "t1", **parked.config["configurable"]}}
mode = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
sync = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
say({"ready": True, "langgraph": version("langgraph"),
     "checkpoint_sqlite": version("langgraph-checkpoint-sqlite"),
     "build_us_per_step": built / STEPS * 1e6, "journal_mode": mode, "synchronous": sync})
for line in sys.stdin:
    what = line.strip()
    t0 = time.perf_counter()
    if what == "state":
        snap = graph.get_state(config)
        assert snap.values["i"] == STEPS
    else:
        out = graph.invoke(Command(resume="go"), {**at, "recursion_limit": 20}, durability="sync")
        assert out["go"] == "go" and out["i"] == STEPS, out
    say({"seconds": time.perf_counter() - t0})
"""


def venv_python(out: Out, install: bool = True) -> Path:
    """This python when LangGraph imports here; else the LangGraph venv's python,
    creating the venv and installing it when needed (``Unavailable`` instead when
    *install* is false and it is not there yet)."""
    for python in (Path(sys.executable), VENV / "bin" / "python"):
        if (
            python.exists()
            and subprocess.run([python, "-c", PROBE], capture_output=True).returncode == 0
        ):
            return python
    if not install:
        raise Unavailable(
            f"LangGraph is not installed (`pip install {' '.join(PACKAGES)}` into the bench's "
            "venv; it is not a dependency of crux_gen), and --no-install was given"
        )
    return peer_venv(VENV, PACKAGES, PROBE, out)


def verdict(samples: dict[str, list[float]], synchronous: Any) -> dict[str, Any]:
    """The target: LangGraph's resume ÷ ours at LangGraph's ``synchronous`` (FULL when
    it is not a number we know), round by round; met when the median is > 1."""
    mode = SYNCHRONOUS.get(synchronous, "FULL") if isinstance(synchronous, int) else "FULL"
    ours, theirs = samples[f"ours {mode}"], samples["LangGraph resume"]
    ratios = [t / o for t, o in zip(theirs, ours, strict=True)]
    ratio = median(ratios)
    return {
        "ours": f"ours {mode}",
        "versus": "LangGraph resume",
        "ours_ms": median(ours) * 1e3,
        "langgraph_ms": median(theirs) * 1e3,
        "ratio": ratio,
        "samples": ratios,
        "meets_target": ratio > 1.0,
    }


class Child:
    """The LangGraph process: builds its thread, then answers one request a line."""

    def __init__(self, python: Path, script: Path, db: Path, steps: int, log: Path) -> None:
        self.log = log
        self._err: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(script), str(db), str(steps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                doc: dict[str, Any] = json.loads(line[len(PREFIX) :])
                return doc
        self._err.flush()
        tail = self.log.read_text().strip().splitlines()[-3:]
        raise Unavailable(f"the LangGraph child exited: {' / '.join(tail) or 'no output'}")

    def ask(self, what: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._err.close()


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, 5)")
    p.add_argument("--steps", type=int, default=1000, help="recorded steps (default 1000)")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="skip (with a note) when LangGraph is not installed, instead of installing it",
    )
    args = p.parse_args()
    out = Out(args.json)
    rounds = args.rounds or (5 if args.quick else 15)
    n = args.steps
    doc: dict[str, Any] = {"bench": "peers_resume", "machine": machine(), "steps": n}
    with workdir(args.dir, "crux-bench-peers-resume-") as d:
        try:
            python = venv_python(out, install=not args.no_install)
            script = d / "langgraph_child.py"
            script.write_text(CHILD)
            child = Child(python, script, fresh(d / "langgraph.db"), n, d / "langgraph.log")
        except (Unavailable, OSError) as exc:
            out.line(f"LangGraph not measured: {exc}")
            doc.update(skipped=True, note=f"LangGraph could not be installed or started: {exc}")
            out.emit(doc)
            return
        info = child.info
        out.line(
            f"LangGraph {info['langgraph']} (langgraph-checkpoint-sqlite "
            f"{info['checkpoint_sqlite']}), journal_mode={info['journal_mode']}, "
            f"synchronous={info['synchronous']}: built {n} steps at "
            f"{info['build_us_per_step']:.0f} µs/step"
        )
        path = fresh(d / "ours.db")
        flow_id = build(SQLiteStore(path, synchronous="NORMAL"), n)
        stores = {m: SQLiteStore(path, synchronous=m) for m in ("FULL", "NORMAL")}
        for store in stores.values():
            timed_resume(store, flow_id)  # warm-up
        child.ask("state")
        child.ask("resume")
        samples: dict[str, list[float]] = {
            "ours FULL": [], "ours NORMAL": [], "LangGraph get_state": [], "LangGraph resume": [],
        }  # fmt: skip
        for r in range(rounds):
            order = ["FULL", "NORMAL", "state", "resume"]
            for what in order if r % 2 == 0 else reversed(order):
                if what in stores:
                    samples[f"ours {what}"].append(timed_resume(stores[what], flow_id))
                else:
                    label = "LangGraph get_state" if what == "state" else "LangGraph resume"
                    samples[label].append(child.ask(what))
        child.close()
        doc["langgraph"] = info
        doc["rounds"] = rounds
        doc["rows"] = []
        out.line()
        out.line(f"resume of a {n}-step history, {rounds} rounds interleaved, median:")
        out.line(f"{'':24}{'ms':>9}{'µs/step':>10}")
        for label, xs in samples.items():
            ms = median(xs) * 1e3
            doc["rows"].append(
                {"what": label, "ms": ms, "us_per_step": ms * 1e3 / n, "samples_ms": xs}
            )
            out.line(f"{label:24}{ms:>9.2f}{ms * 1e3 / n:>10.2f}")
        ours = median(samples["ours NORMAL"])
        out.line()
        for label in ("LangGraph get_state", "LangGraph resume"):
            ratio = median(samples[label]) / ours
            doc[f"{label.split()[1]}_vs_ours_normal"] = ratio
            out.line(f"{label} takes {ratio:.2f}x our resume (NORMAL)")
        doc["target"] = verdict(samples, info.get("synchronous"))
        t = doc["target"]
        out.line(
            f"target: {t['ours']} faster than {t['versus']} (synchronous as LangGraph's): "
            f"{t['ours_ms']:.2f} vs {t['langgraph_ms']:.2f} ms, LangGraph ÷ ours "
            f"{t['ratio']:.2f}x → {'ok' if t['meets_target'] else 'MISSED'}"
        )
        doc["machine_after"] = machine()
    out.emit(doc)


if __name__ == "__main__":
    main()
