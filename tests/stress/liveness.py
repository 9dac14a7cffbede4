"""The liveness stress: every flow ends, under chaos, on SQLite or PostgreSQL.

    python -m tests.stress.liveness --seconds 120 --seed 7 [--db postgresql://…]

Two ``crux-gen worker tests.stress_flows`` processes run parents that fan out
(``All``), race a signal, a child and a timer (``Any``), wait for children and
signals, and continue as new (``tests/stress_flows.py``), while this process
starts flows, sends signals (some with a key, some keys twice), cancels flows,
retries failed ones (``crux-gen retry`` or ``retry_failed``), prunes finished
ones (``crux-gen prune`` or ``prune``) and SIGKILLs the workers at random moments
(restarting them). After each round ``check_store`` must find no stuck flow.
Then the chaos stops, every wait gets its signal, the workers drain, and:

- every flow finished, and ``check_store`` is empty;
- no completed step ran again: a step ran twice only when its first run failed
  on purpose (and the flow was retried), or was cut before its record was
  committed, by a SIGKILL or by its runner losing the flow's lease (a process
  stalled past ``--lease-ttl``: another worker took the flow, the first one's
  write was refused; API.md's failure rules: at-least-once), and that process
  started no later step of the flow;
- no signal lost or used twice: each payload id consumed by at most one step,
  each sent signal stored once and ending consumed (or unused when its flow
  ended first), never still pending.

Without ``--db`` a SQLite file in a temporary folder is used. ``run()`` is what
``tests/test_liveness_stress.py`` calls, bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import attrs

from crux_gen import (
    FlowClosedError,
    FlowNotFoundError,
    FlowStateError,
    Problem,
    cancel_flow,
    check_store,
    codec,
    signal_flow,
)
from crux_gen.cli import open_store
from crux_gen.records import StoredFlow
from crux_gen.runner import new_flow_id

REPO = Path(__file__).resolve().parents[2]
FINISHED = {"completed", "failed", "expired", "cancelled"}
#: A worker's log line for a run whose write was refused: another runner had taken
#: the flow after its lease lapsed (``LeaseLostError``).
LOST_LEASE = re.compile(
    r"flow '([^']+)': runner '[^']+' lost its lease \(it expired and another runner took"
)
LEASE_TTL = "2s"


@attrs.define
class Options:
    """What one stress run does (the test keeps it small)."""

    seconds: float = 8.0
    seed: int = 1
    drain_seconds: float = 60.0
    max_parents: int = 24
    round_seconds: float = 1.5
    #: Two parents share one explicit child id (issue 18, item 2) now and then.
    shared_children: bool = False
    #: Cancel, retry, prune, SIGKILL: each can be switched off to narrow a failure.
    cancels: bool = True
    retries: bool = True
    #: Prune flows finished longer ago than this many seconds (and a little more);
    #: 0 also prunes children whose parent has not taken their end yet (item 5).
    prune_age: float = 0.0
    #: Retry flows that failed on a child branch of an ``All`` too (issue 18, item 6:
    #: the retried branch loses its child id); a failed step branch is retried always.
    retry_all_child: bool = True
    prunes: bool = True
    kills: bool = True
    #: The workers' ``--lease-ttl``: shorter makes a lapsed lease (a runner starved
    #: past it under load) likelier.
    lease_ttl: str = LEASE_TTL


@attrs.define
class Report:
    """What a run saw; ``failures`` empty means every invariant held."""

    failures: list[str] = attrs.Factory(list)
    flows: int = 0
    kills: int = 0
    signals: int = 0
    retries: int = 0
    prunes: int = 0
    cancels: int = 0
    rounds: int = 0
    repeated_steps: int = 0

    def summary(self) -> str:
        return (
            f"{self.flows} flows, {self.rounds} rounds, {self.kills} kills, {self.signals} "
            f"signals, {self.retries} retries, {self.prunes} prunes, {self.cancels} cancels, "
            f"{self.repeated_steps} steps re-run after a kill, a lost lease or a failure; "
            f"{len(self.failures)} failures"
        )


class Workers:
    """The two ``crux-gen worker`` processes, each restarted after a SIGKILL."""

    def __init__(self, db: str, folder: Path, lease_ttl: str = LEASE_TTL) -> None:
        self.db, self.folder, self.lease_ttl = db, folder, lease_ttl
        self.procs: list[subprocess.Popen[bytes] | None] = [None, None]
        self.killed: set[int] = set()
        self.log_of: dict[int, Path] = {}  # pid -> its log
        self.started = 0

    def start(self, slot: int) -> None:
        self.started += 1
        path = self.folder / f"worker-{self.started}.log"
        out = open(path, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CRUX_DB", None)
        proc = self.procs[slot] = subprocess.Popen(
            [sys.executable, "-m", "crux_gen", "worker", "tests.stress_flows", "--db", self.db,
             "--poll", "50ms", "--lease-ttl", self.lease_ttl, "--concurrency", "4"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log_of[proc.pid] = path
        out.close()

    def ensure(self) -> None:
        for slot, proc in enumerate(self.procs):
            if proc is None or proc.poll() is not None:
                self.start(slot)

    def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=30)
        self.killed.add(proc.pid)
        self.start(slot)

    def stop(self) -> list[str]:
        """SIGTERM both; the exit codes that were not 0, as failures."""
        bad: list[str] = []
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is None:
                continue
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0 and proc.pid not in self.killed:
                bad.append(f"worker {proc.pid} exited with code {code}")
        return bad

    def lost_leases(self) -> set[tuple[int, str]]:
        """``(pid, flow id)`` of each run whose write was refused because another
        worker had taken the flow (its lease lapsed: the process stalled)."""
        return {
            (pid, found.group(1))
            for pid, path in self.log_of.items()
            if path.exists()
            for found in LOST_LEASE.finditer(path.read_text(errors="replace"))
        }

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.folder.glob("worker-*.log"))
        )


class Chaos:
    """The test process's side: flows, signals, cancels, retries, prunes, kills."""

    def __init__(self, db: str, folder: Path, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.db = db
        self.folder = folder
        self.log = folder / "effects.log"
        self.marks = folder / "marks"
        self.marks.mkdir(exist_ok=True)
        self.store = open_store(db, create=True)
        self.workers = Workers(db, folder, options.lease_ttl)
        self.report = Report()
        self.parents: list[str] = []
        self.next_sid = 0
        #: sid -> (flow id, signal name, key); only signals the store accepted.
        self.sent: dict[int, tuple[str, str, str | None]] = {}
        #: (flow id, key) -> the sid it was first sent with (a key is per flow).
        self.keys: dict[tuple[str, str], int] = {}
        #: The last state seen of each flow (kept when a prune deletes it).
        self.seen: dict[str, StoredFlow] = {}
        self.cancelled: set[str] = set()
        self.problems: list[tuple[str, Problem]] = []

    # -- actions -------------------------------------------------------------------

    def start_parent(self) -> None:
        rng = self.rng
        plan: dict[str, Any] = {
            "log": str(self.log),
            "marks": str(self.marks),
            "gen": 0,
            "gens": rng.choice([0, 0, 1, 2]),
            "fail_all": rng.random() < 0.2,
            "fail_last": rng.random() < 0.2,
            "child_fails": rng.random() < 0.3,
            "all_child_waits": rng.random() < 0.3,
            "nap_ms": rng.choice([50, 300, 2000]),
        }
        if self.options.shared_children and len(self.parents) % 6 < 2:
            plan["shared_child"] = f"shared-{len(self.parents) // 6}"  # two parents, one id
        flow_id = new_flow_id()
        text = codec.encode(plan, what="input")
        now = self.store.clock.time()
        self.store.start(flow_id, "st-parent", text, "stress", now)
        self.store.release(flow_id, "stress")
        self.parents.append(flow_id)

    def send(self, flow_id: str, name: str) -> None:
        sid = self.next_sid
        self.next_sid += 1
        key: str | None = None
        mine = sorted(k for f, k in self.keys if f == flow_id)
        if mine and self.rng.random() < 0.3:
            key = self.rng.choice(mine)  # a retried delivery: must store nothing
        elif self.rng.random() < 0.4:
            key = f"k{sid}"
        try:
            stored = signal_flow(flow_id, name, {"sid": sid}, store=self.store, key=key)
        except (FlowClosedError, FlowNotFoundError):
            return
        if key is not None and (flow_id, key) in self.keys and stored:
            self.report.failures.append(
                f"signal key {key!r} was stored twice for flow {flow_id} "
                f"(sids {self.keys[flow_id, key]} and {sid})"
            )
        if stored:
            self.sent[sid] = (flow_id, name, key)
            self.report.signals += 1
            if key is not None:
                self.keys.setdefault((flow_id, key), sid)

    def unfinished(self, name: str | None = None) -> list[StoredFlow]:
        return [
            f
            for status in ("suspended", "running")
            for f in self.store.list_flows(status=status, name=name, limit=10_000)
        ]

    def signal_some(self) -> None:
        # A shared child is poked in the drain only, once both parents wait for it.
        flows = [f for f in self.unfinished() if not f.id.startswith("shared-")]
        if not flows:
            return
        target = self.rng.choice(flows)
        self.send(target.id, "go" if target.name == "st-parent" else "poke")

    def cancel_some(self) -> None:
        flows = self.unfinished()
        if flows:
            target = self.rng.choice(flows)
            if cancel_flow(target.id, "stress", store=self.store):
                self.cancelled.add(target.id)
                self.report.cancels += 1

    def retry_some(self) -> None:
        failed = self.store.list_flows(status="failed", limit=10_000)
        if not self.options.retry_all_child:
            failed = [f for f in failed if not failed_on_all_child(self.store, f.id)]
        if not failed:
            return
        target = self.rng.choice(failed)
        if self.rng.random() < 0.3:
            done = subprocess.run(
                [sys.executable, "-m", "crux_gen", "retry", target.id, "--db", self.db],
                cwd=REPO, capture_output=True, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            if done.returncode != 0 and "only a failed flow" not in done.stderr:
                self.report.failures.append(f"crux-gen retry {target.id}: {done.stderr.strip()}")
                return
        else:
            try:
                self.store.retry_failed(target.id, self.store.clock.time())
            except (FlowStateError, FlowNotFoundError):
                return
            except Exception as exc:  # a KeyError escaping retry is a finding too
                self.report.failures.append(
                    f"retry_failed({target.id}) raised {type(exc).__name__}: {exc}"
                )
                return
        self.report.retries += 1

    def prune_some(self) -> None:
        """Prune finished flows older than a moment; remember them first (a finished
        flow changes only by a retry, and only this process retries)."""
        self.remember_finished()
        if self.rng.random() < 0.3:
            done = subprocess.run(
                [sys.executable, "-m", "crux_gen", "prune", "--finished-before",
                 f"{self.options.prune_age + 5:g}s",
                 "--db", self.db],
                cwd=REPO, capture_output=True, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            if done.returncode != 0:
                self.report.failures.append(f"crux-gen prune: {done.stderr.strip()}")
        else:
            age = self.options.prune_age + self.rng.choice([0.0, 0.5, 2.0])
            self.store.prune(self.store.clock.time() - age)
        self.report.prunes += 1

    def remember_finished(self) -> None:
        for status in sorted(FINISHED):
            for row in self.store.list_flows(status=status, limit=100_000):
                with contextlib.suppress(FlowNotFoundError):
                    self.seen[row.id] = self.store.load(row.id)

    # -- the run -------------------------------------------------------------------

    def check(self, when: str) -> None:
        for problem in check_store(self.store):
            self.problems.append((when, problem))

    def chaos(self) -> None:
        options, rng = self.options, self.rng
        self.workers.ensure()
        end = time.monotonic() + options.seconds
        next_round = time.monotonic() + options.round_seconds
        next_kill = 0.0
        while time.monotonic() < end:
            roll = rng.random()
            if roll < 0.25 and len(self.parents) < options.max_parents:
                self.start_parent()
            elif roll < 0.6:
                self.signal_some()
            elif roll < 0.65 and options.cancels:
                self.cancel_some()
            elif roll < 0.75 and options.retries:
                self.retry_some()
            elif roll < 0.78 and options.prunes:
                self.prune_some()
            elif roll < 0.83 and options.kills and time.monotonic() > next_kill:
                self.workers.kill(rng.randrange(2))
                self.report.kills += 1
                next_kill = time.monotonic() + rng.uniform(0.2, 1.0)
            time.sleep(rng.uniform(0.0, 0.08))
            if time.monotonic() >= next_round:
                self.report.rounds += 1
                self.check(f"round {self.report.rounds}")
                next_round = time.monotonic() + options.round_seconds

    def drain(self) -> bool:
        """Stop the chaos, give every wait its signal, let the workers finish every
        flow; ``True`` when they all did within ``drain_seconds``."""
        self.workers.ensure()
        start = time.monotonic()
        end = start + self.options.drain_seconds
        next_check, stuck_rounds = start + 1.0, 0
        while time.monotonic() < end:
            flows = self.unfinished()
            if not flows:
                return True
            if time.monotonic() >= next_check:  # every one left stuck: stop waiting
                stuck = {p.flow_id for p in check_store(self.store)}
                stuck_rounds = stuck_rounds + 1 if {f.id for f in flows} <= stuck else 0
                if stuck_rounds >= 3:
                    return False
                next_check = time.monotonic() + 1.0
            for row in flows:
                if row.status != "suspended":
                    continue
                if row.id.startswith("shared-") and time.monotonic() < start + 3:
                    continue  # let both parents reach it first
                name = self.awaited(row)
                if name is not None and not self.pending(row.id, name):
                    self.send(row.id, name)
            self.workers.ensure()  # a worker that died on its own is a finding below
            time.sleep(0.2)
        return False

    def awaited(self, row: StoredFlow) -> str | None:
        if row.wait_kind == "suspend":
            return row.waiting_for
        if row.wait_kind == "any":
            with contextlib.suppress(ValueError, TypeError):
                names = json.loads(row.waiting_for or "")
                return names[0] if names else None
        return None

    def pending(self, flow_id: str, name: str) -> bool:
        try:
            flow = self.store.load(flow_id)
        except FlowNotFoundError:
            return True
        return any(s.state == "pending" and s.name == name for s in flow.signals)


def failed_on_all_child(store: Any, flow_id: str) -> bool:
    """Whether the last failed record of *flow_id* is a child branch of an ``All``
    (one of the three records after an ``all`` record, in ``st-parent``)."""
    try:
        records = store.load(flow_id).records
    except FlowNotFoundError:
        return False
    failed = [r for r in records if r.state == "failed"]
    fans = [r.position for r in records if r.kind == "all"]
    return (
        bool(failed)
        and failed[-1].kind == "child"
        and any(q < failed[-1].position <= q + 3 for q in fans)
    )


# -- the invariants ------------------------------------------------------------------


def read_log(path: Path) -> list[tuple[int, str, str, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:  # a line cut by a SIGKILL mid-write is skipped
            rows.append((int(parts[0]), parts[1], parts[2], parts[3]))
    return rows


def stage_of(name: str) -> tuple[int, int]:
    gen, stage = name.split("-")[:2]
    return int(gen[1:]), int(stage[1:])


def check_steps(
    rows: list[tuple[int, str, str, str]],
    killed: set[int],
    report: Report,
    lost: Collection[tuple[int, str]] = (),
) -> None:
    """A step ran again only after its run failed on purpose, or was cut before its
    record was committed: by a SIGKILL (*killed*: pids; that process started no
    later stage of the flow), or by a lost lease (*lost*: ``(pid, flow id)``, a
    runner's write refused: that process started no later stage of the flow before
    another process ran the step, or ran it after that one, a call its stall held
    up past the lease)."""
    runs: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
    latest: dict[tuple[int, str], tuple[int, int]] = {}
    starts: dict[tuple[int, str], list[tuple[int, tuple[int, int]]]] = defaultdict(list)
    for line, (pid, flow_id, name, what) in enumerate(rows):
        if what == "start":
            runs[flow_id, name].append((pid, "cut", line))
            latest[pid, flow_id] = max(latest.get((pid, flow_id), (-1, -1)), stage_of(name))
            starts[pid, flow_id].append((line, stage_of(name)))
            continue
        found = runs[flow_id, name]
        mine = [i for i, (p, w, _) in enumerate(found) if p == pid and w == "cut"]
        if mine:
            found[mine[-1]] = (pid, what, found[mine[-1]][2])
    for (flow_id, name), found in runs.items():
        report.repeated_steps += len(found) - 1
        stage = stage_of(name)
        leased = [
            (pid, outcome)
            for pid, outcome, at in found
            if (pid, flow_id.split("<")[0]) not in lost
            or not lease_cut(
                at, [line for p, _, line in found if p != pid], stage, starts[pid, flow_id]
            )
        ]
        for pid, outcome in leased[:-1]:
            if outcome == "fail" or (pid in killed and latest[pid, flow_id] == stage):
                continue
            report.failures.append(
                f"step {name!r} of flow {flow_id} ran again after a run by process {pid} "
                f"that ended {outcome!r}"
                + (" (a killed process that went on to a later stage)" if pid in killed else "")
                + (
                    " (it lost the lease, but went on to a later stage first)"
                    if (pid, flow_id.split("<")[0]) in lost and pid not in killed
                    else ""
                )
            )


def lease_cut(
    at: int, others: list[int], stage: tuple[int, int], starts: list[tuple[int, tuple[int, int]]]
) -> bool:
    """Whether the run of a step starting at log line *at*, by a process that lost the
    flow's lease, was cut by it: it came after another process's run of the step
    (*others*: their lines; a call its stall held up), or that process started no
    later stage (*starts*: its ``(line, stage)`` in the flow) before the next one."""
    if any(line < at for line in others):
        return True
    until = min(others, default=at)
    return not any(at < line < until and started > stage for line, started in starts)


def check_signals(chaos: Chaos) -> None:
    """Each payload id consumed by one step at most; each sent signal stored once,
    consumed or unused, never pending once its flow ended."""
    report = chaos.report
    consumers: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for _, flow_id, name, _ in read_log(chaos.log):
        label = name.split("-", 2)[2]
        if label.startswith("got"):
            consumers[int(label[3:])].add((flow_id.split("<")[0], name))  # a child: id<parent
    for sid, steps in consumers.items():
        if len(steps) > 1:
            report.failures.append(f"signal sid={sid} was used twice: {sorted(steps)}")
    chaos.remember_finished()
    final = dict(chaos.seen)
    for status in ("suspended", "running"):
        for row in chaos.store.list_flows(status=status, limit=100_000):
            with contextlib.suppress(FlowNotFoundError):
                final[row.id] = chaos.store.load(row.id)
    stored: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for flow in final.values():
        for s in flow.signals:
            with contextlib.suppress(Exception):
                stored[int(json.loads(s.payload)["sid"])].append((flow.id, s.state))
            if s.state == "pending" and flow.status in FINISHED:
                report.failures.append(
                    f"signal #{s.id} {s.name!r} of flow {flow.id} ({flow.status}) is still "
                    "pending: lost"
                )
    for sid, (flow_id, name, _) in chaos.sent.items():
        if flow_id not in final:
            continue  # pruned before its state was read
        found = stored.get(sid, [])
        if len(found) != 1:
            report.failures.append(f"signal sid={sid} {name!r} to {flow_id} stored {found}")
            continue
        state = found[0][1]
        if state == "pending" and final[flow_id].status not in FINISHED:
            continue  # its flow never ended: reported as such
        if state not in ("consumed", "unused", "rejected"):
            report.failures.append(f"signal sid={sid} {name!r} to {flow_id} ended {state!r}")
        if any(fid != flow_id for fid, _ in consumers.get(sid, ())):
            report.failures.append(f"signal sid={sid} sent to {flow_id} used by another flow")
        if consumers.get(sid) and state != "consumed":
            report.failures.append(f"signal sid={sid} was used by a step but is {state!r}")


def run(db: str, folder: Path, options: Options) -> Report:
    """One stress run on the store *db* (a SQLite path or a PostgreSQL URL)."""
    chaos = Chaos(db, folder, options)
    report = chaos.report
    try:
        chaos.chaos()
        drained = chaos.drain()
        report.failures.extend(chaos.workers.stop())
        for when, problem in chaos.problems:
            report.failures.append(
                f"{when}: check_store: {problem.flow_id} ({problem.name}, {problem.status}) "
                f"{problem.kind}: {problem.reason}"
            )
        for problem in check_store(chaos.store):
            report.failures.append(
                f"after the drain: check_store: {problem.flow_id} ({problem.name}) "
                f"{problem.kind}: {problem.reason}"
            )
        if not drained:
            for row in chaos.unfinished():
                report.failures.append(
                    f"flow {row.id} ({row.name}) still {row.status} after the drain: "
                    f"wait_kind={row.wait_kind} waiting_for={row.waiting_for} "
                    f"wake_at={row.wake_at} lease={row.lease_owner}"
                )
        lost = chaos.workers.lost_leases()
        check_steps(read_log(chaos.log), chaos.workers.killed, report, lost)
        check_signals(chaos)
        report.flows = len(chaos.parents)
    finally:
        chaos.workers.stop()
        chaos.store.close()
    if report.failures:
        report.failures.append("worker output:\n" + chaos.workers.logs())
    return report


@contextlib.contextmanager
def temporary_db() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="crux-liveness-") as folder:
        yield str(Path(folder) / "crux.db"), Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the chaos lasts")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--db", default=None, help="a postgresql:// URL of an empty database")
    parser.add_argument(
        "--no-shared-children",
        action="store_true",
        help="no two parents naming one child id (the second gets FlowIdTakenError)",
    )
    parser.add_argument("--folder", default=None, help="keep the log, markers and db here")
    parser.add_argument(
        "--avoid-known",
        action="store_true",
        help="retry no flow that failed inside an All (the shape of a defect issue 18 "
        "fixed), to tell it apart from a new failure",
    )
    parser.add_argument(
        "--lease-ttl", default=LEASE_TTL, help=f"the workers' lease TTL (default {LEASE_TTL})"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    options = Options(
        seconds=args.seconds,
        seed=seed,
        max_parents=max(24, int(args.seconds * 3)),
        shared_children=not args.no_shared_children,
        retry_all_child=not args.avoid_known,
        lease_ttl=args.lease_ttl,
    )
    print(f"seed {seed}", flush=True)
    if args.folder is not None:
        folder = Path(args.folder)
        folder.mkdir(parents=True, exist_ok=True)
        report = run(args.db or str(folder / "crux.db"), folder, options)
    elif args.db is None:
        with temporary_db() as (db, tmp):
            report = run(db, tmp, options)
    else:
        with tempfile.TemporaryDirectory(prefix="crux-liveness-") as tmp:
            report = run(args.db, Path(tmp), options)
    for failure in report.failures:
        print(failure)
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
