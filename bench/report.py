"""Run every bench script and write ``RESULTS.md`` with a table and a plot.

Each script runs in its own process (``--json``, and ``--quick`` when given); its
numbers go into ``RESULTS.md`` (targets first, then one section per script), the
raw documents into ``results.json``, and a plot of µs per step and replay µs per
recorded step against history length into ``results.png`` (matplotlib: the
``bench`` extra, ``pip install -e '.[bench]'``). A script that fails, or is
missing, is recorded as such and the others still run.

The three files go into ``--out DIR``; by default a fresh temporary directory
(printed at the end), so a run never dirties the checkout. Regenerating the
committed results is a deliberate choice: ``--out bench/``.

    python bench/report.py [--quick] [--only steps,replay] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import BENCH, machine

SCRIPTS = [
    "steps",
    "replay",
    "due_scan",
    "listing",
    "postgres",
    "peers",
    "peers_resume",
    "memory",
    "concurrency",
    "flow_control",
    "growth",
    "observability",
    "current_step",
    "events",
]
TIMEOUT = 3 * 3600


def run(name: str, quick: bool) -> dict[str, Any]:
    """Run ``bench/<name>.py``; its JSON document, or a note of what went wrong."""
    path = BENCH / f"{name}.py"
    if not path.exists():
        return {"missing": True, "note": f"bench/{name}.py is not there; skipped"}
    cmd = [sys.executable, str(path)]
    help_text = subprocess.run([*cmd, "--help"], capture_output=True, text=True).stdout
    as_json = "--json" in help_text
    if as_json:
        cmd.append("--json")
    if quick and "--quick" in help_text:
        cmd.append("--quick")
    print(f"\n=== {' '.join(['python', f'bench/{name}.py', *cmd[2:]])}", file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []

    def tee() -> None:  # the script's progress lines, live, and kept for the report
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            err.append(line)

    reader = threading.Thread(target=tee, daemon=True)
    reader.start()
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # (not communicate(): that would read stderr too)
        proc.wait()
    finally:
        timer.cancel()
    reader.join(timeout=5)
    elapsed = time.perf_counter() - t0
    base = {"command": " ".join(["python", f"bench/{name}.py", *cmd[2:]]), "seconds": elapsed}
    if proc.returncode != 0:
        tail = "".join(err[-15:]).strip()
        return {**base, "failed": True, "note": f"exited {proc.returncode}", "stderr": tail}
    if not as_json:
        sys.stderr.write(stdout)
        return {**base, "text": stdout.strip(), "note": f"bench/{name}.py has no --json: its text"}
    try:
        doc: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError as exc:
        return {**base, "failed": True, "note": f"no JSON on stdout ({exc})", "text": stdout}
    return {**base, **doc}


# -- formatting ----------------------------------------------------------------------


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**missed**")


def not_run(doc: dict[str, Any]) -> list[str] | None:
    if doc.get("missing") or doc.get("skipped") or doc.get("failed"):
        lines = [f"_Not measured: {doc.get('note', '')}_", ""]
        if doc.get("stderr"):
            lines += ["```", doc["stderr"], "```", ""]
        return lines
    return None


# What each target asks, when the script's document does not say (not run, an older
# script): the issue 19 targets (the core rebuild) and the earlier ones.
DEFAULTS: dict[str, float] = {
    "fast": 5.0,  # concurrency.py: fast steps, steps/s at concurrency 32 over 1
    "sleep": 25.0,  # concurrency.py: 5 ms steps, the same
    "vs_normal": 3.0,  # concurrency.py: concurrency 32 on FULL over concurrency 1 on NORMAL
    "fsync": 20.0,  # concurrency.py: durable steps per fsync at concurrency 32
    "FULL": 1.2,  # steps.py: a step over a raw fsync'd commit of the same row
    "NORMAL": 3.0,  # steps.py: the same on synchronous=NORMAL
    "replay": 3.0,  # replay.py: µs per recorded step at 1k, 10k, 100k
    "pg_step": 1.3,  # postgres.py: a step over a raw psycopg INSERT + commit
    "pg_xact": 10.0,  # postgres.py: durable steps per server transaction at concurrency 32
    "limit": 1.10,  # flow_control.py: a durable step under a limit over one without
    "observed": 1.20,  # observability.py: a step instrumented (spans, metrics) over one not
    "seam": 0.03,  # observability.py: the seam's share of a step while off
}
ISSUE = "#19"


def targets(docs: dict[str, dict[str, Any]]) -> list[str]:
    """The Targets table: issue 19's rows first (measured in the same run, the ratios
    interleaved), then the earlier targets still measured."""
    c = docs.get("concurrency", {})
    rows: list[list[Any]] = [
        *concurrency_targets(c),
        steps_target(docs.get("steps", {}), "FULL", ISSUE),
        replay_target(docs.get("replay", {})),
        langgraph_target(docs.get("peers_resume", {})),
        *postgres_targets(docs.get("postgres", {})),
        steps_target(docs.get("steps", {}), "NORMAL", ""),
        dbos_target(docs.get("peers", {})),
        memory_target(docs.get("memory", {})),
        pg_scale_target(docs.get("postgres", {})),
        limit_target(docs.get("flow_control", {})),
        *observability_targets(docs.get("observability", {})),
    ]
    return [
        "## Targets",
        "",
        "Issue 19's targets (the core rebuild) first, then the earlier ones still measured. "
        "Each ratio is taken within a round of the same run, its two sides interleaved; "
        "medians.",
        "",
        *table(["issue", "target", "measured (median)", "verdict"], rows),
    ]


def unmeasured(doc: dict[str, Any]) -> str:
    """ "not measured", with the script's note when it has one."""
    note = doc.get("note")
    return f"not measured ({note})" if note else "not measured"


def steps_target(doc: dict[str, Any], mode: str, issue: str) -> list[Any]:
    m = doc.get("modes", {}).get(mode)
    goal = m.get("ratio_target", DEFAULTS[mode]) if m else DEFAULTS[mode]
    what = (
        f"one durable step on SQLite WAL+{mode} vs a raw commit of the same row, same "
        f"pragmas: ≤ {goal:g}x"
    )
    if not m:
        return [issue, what, unmeasured(doc), "—"]
    got = (
        f"paired {m['ratio']:.2f}x (ours {m['ours_us_per_step']:.0f} µs, raw "
        f"{m['raw_us_per_commit']:.0f} µs); block {m['block_ratio']:.2f}x (ours "
        f"{m['block_ours_us_per_step']:.0f} µs, raw {m['block_raw_us_per_commit']:.0f} µs)"
    )
    ok = verdict(m["meets_target"])
    if m["block_meets_target"] != m["meets_target"]:
        ok += f" paired, {verdict(m['block_meets_target'])} block"
    return [issue, what, got, ok]


def replay_target(doc: dict[str, Any]) -> list[Any]:
    goal = doc.get("target_us_per_step", DEFAULTS["replay"])
    what = f"replay ≤ {goal:g} µs per recorded step at 1k, 10k, 100k steps (whole resume / N)"
    long = [x for x in doc.get("lengths", []) if "meets_target" in x]
    if not long:
        return [ISSUE, what, unmeasured(doc), "—"]
    got = ", ".join(f"{x['steps']:,}: {x['us_per_step']:.2f} µs" for x in long)
    got += f" (synchronous={doc.get('mode')})"
    return [ISSUE, what, got, verdict(all(x["meets_target"] for x in long))]


def langgraph_target(doc: dict[str, Any]) -> list[Any]:
    n = doc.get("steps", 1000)
    what = (
        f"a {n:,}-step resume faster than LangGraph's resume from its snapshot "
        "(`SqliteSaver`, same run, same `synchronous`)"
    )
    t = doc.get("target")
    if not t or doc.get("skipped") or doc.get("failed"):
        return [ISSUE, what, unmeasured(doc), "—"]
    state = next((r for r in doc.get("rows", []) if r["what"] == "LangGraph get_state"), None)
    got = (
        f"{t['ours']} {t['ours_ms']:.2f} ms vs {t['versus']} {t['langgraph_ms']:.2f} ms: "
        f"LangGraph ÷ ours {t['ratio']:.2f}x"
    )
    if state:
        got += f" (its `get_state` alone: {state['ms']:.2f} ms)"
    return [ISSUE, what, got, verdict(t["meets_target"])]


def postgres_targets(doc: dict[str, Any]) -> list[list[Any]]:
    step = (doc.get("step") or [{}])[0]
    goal = step.get("ratio_target", DEFAULTS["pg_step"])
    what = (
        "PostgreSQL: one durable step vs a raw psycopg INSERT + commit of the same row: "
        f"≤ {goal:g}x"
    )
    rows: list[list[Any]] = []
    if "ratio" in step:
        got = f"{step['ratio']:.2f}x (ours {step['ours_us']:.0f} µs, raw {step['raw_us']:.0f} µs)"
        rows.append([ISSUE, what, got, verdict(step["ratio"] <= goal)])
    else:
        rows.append([ISSUE, what, unmeasured(doc), "—"])
    levels = {x["concurrency"]: x for x in doc.get("xacts", {}).get("levels", [])}
    top = levels.get(max(levels, default=32))
    goal = (top or {}).get("target", DEFAULTS["pg_xact"])
    what = (
        f"PostgreSQL: ≥ {goal:g} durable steps per server transaction at worker concurrency "
        f"{max(levels, default=32)}"
    )
    xnote = doc.get("xacts", {}).get("note")
    if top and "meets_target" in top:
        got = (
            f"{top['steps_per_transaction']:.1f} ({top['durable_steps']:,} steps, "
            f"{top['transactions']:,.0f} transactions: `pg_stat_database` xact_commit + "
            f"xact_rollback, baseline subtracted)"
        )
        if 1 in levels:
            got += f"; concurrency 1: {levels[1]['steps_per_transaction']:.2f}"
        rows.append([ISSUE, what, got, verdict(top["meets_target"])])
    else:
        rows.append([ISSUE, what, f"not measured ({xnote})" if xnote else unmeasured(doc), "—"])
    return rows


def dbos_target(doc: dict[str, Any]) -> list[Any]:
    what = "≥ 10x DBOS's steps per second, same workload"
    if not doc.get("pairs"):
        return ["", what, unmeasured(doc), "—"]
    got = "; ".join(f"{x['pair']}: {x['ratio']:.1f}x" for x in doc["pairs"])
    return ["", what, got, verdict(all(x["meets_target"] for x in doc["pairs"]))]


def memory_target(doc: dict[str, Any]) -> list[Any]:
    what = f"RSS flat while {doc.get('count', 100000):,} flows run through a worker"
    if "growth_kib" not in doc:
        return ["", what, unmeasured(doc), "—"]
    got = (
        f"{doc['first_checkpoint_kib'] / 1024:.1f} → {doc['final_kib'] / 1024:.1f} MiB "
        f"({doc['growth_kib'] / 1024:+.1f} MiB; second half "
        f"{doc['second_half_growth_kib'] / 1024:+.1f} MiB)"
    )
    return ["", what, got, verdict(doc["flat"])]


def pg_scale_target(doc: dict[str, Any]) -> list[Any]:
    rates = {w["processes"]: w["flows_per_second"] for w in doc.get("workers", [])}
    what = "PostgreSQL flows/s scale ≥ 3x from 1 to 4 worker processes"
    if 1 not in rates or 4 not in rates:
        return ["", what, unmeasured(doc), "—"]
    scale = rates[4] / rates[1]
    got = f"{scale:.2f}x ({rates[1]:,.0f} → {rates[4]:,.0f} flows/s)"
    return ["", what, got, verdict(scale >= 3)]


def concurrency_targets(doc: dict[str, Any]) -> list[list[Any]]:
    """The concurrent worker's rows (SQLite FULL, fast steps and steps sleeping 5 ms):
    steps/s at concurrency 32 over 1; concurrency 32 over one flow at a time on
    NORMAL; durable steps per fsync."""
    rows: list[list[Any]] = []
    cases = {
        (c["case"], c["concurrency"]): c
        for c in doc.get("cases", [])
        if c.get("synchronous", "FULL") == "FULL"
    }
    top = max((c["concurrency"] for c in doc.get("cases", [])), default=32)
    flows = f"{doc['flows']['fast']} flows of {doc['steps']} steps" if "flows" in doc else ""
    for case, label in (("fast", "fast steps"), ("sleep", "steps sleeping 5 ms")):
        c, one = cases.get((case, top)), cases.get((case, 1))
        goal = (c or {}).get("ratio_target", DEFAULTS[case])
        what = (
            f"concurrent worker, {label}, SQLite FULL: steps/s at concurrency {top} ≥ "
            f"{goal:g}x concurrency 1"
        )
        if c and one and "ratio_target" in c:
            got = (
                f"{c['ratio']:.1f}x ({one['steps_per_second']:,.0f} → "
                f"{c['steps_per_second']:,.0f} steps/s; {c['flows']} flows of {doc['steps']} steps)"
            )
            rows.append([ISSUE, what, got, verdict(c["meets_target"])])
        else:
            rows.append([ISSUE, what, unmeasured(doc), "—"])
        if case == "fast":
            rows.append(normal_target(doc, top, flows))
            rows.append(fsync_target(doc, top))
    return rows


def normal_target(doc: dict[str, Any], top: int, flows: str) -> list[Any]:
    v = doc.get("vs_normal")
    goal = (v or {}).get("target", DEFAULTS["vs_normal"])
    what = (
        f"concurrent worker, fast steps: steps/s at concurrency {top} on SQLite FULL ≥ {goal:g}x "
        "one flow at a time (concurrency 1) on synchronous=NORMAL"
    )
    if not v:
        return [ISSUE, what, unmeasured(doc), "—"]
    got = (
        f"{v['ratio']:.1f}x ({v['normal_steps_per_second']:,.0f} steps/s NORMAL c=1 → "
        f"{v['full_steps_per_second']:,.0f} FULL c={v['concurrency']}; {flows})"
    )
    return [ISSUE, what, got, verdict(v["meets_target"])]


def fsync_target(doc: dict[str, Any], top: int) -> list[Any]:
    f = doc.get("fsync", {})
    goal = f.get("target", DEFAULTS["fsync"])
    what = f"concurrent worker, fast steps, concurrency {top}: ≥ {goal:g} durable steps per fsync"
    if f.get("steps_per_fsync") is not None and "runs" in f:
        got = f"{f['steps_per_fsync']:.1f} (strace: fsync + fdatasync of the worker's run)"
        return [ISSUE, what, got, verdict(f["meets_target"])]
    if f.get("writes_per_batch") is not None:
        got = f"not counted ({f.get('note')}); GroupCommit writes/batch {f['writes_per_batch']:.1f}"
        return [ISSUE, what, got, "—"]
    return [ISSUE, what, f"not counted ({f['note']})" if f.get("note") else unmeasured(doc), "—"]


def steps_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Live steps — `bench/steps.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    out += [
        f"Flows of {doc['steps']} steps returning small dicts, start to finish, vs raw "
        "autocommit INSERTs (INSERT + COMMIT) of the same rows into a table made with our "
        "`records` table's CREATE statement, same pragmas (WAL + the same `synchronous`). "
        "*Paired*: each step of the flow also does one raw commit, timed on its own; ours = "
        "flow time - raw time, so both alternate commit by commit and see the same disk. "
        "*Block*: a whole flow, then as many raw commits (order alternating by round). "
        f"{doc['rounds']} rounds; medians of the values and of the per-round ratios. "
        "The verdict is on the paired ratio.",
        "",
    ]
    rows = [
        [
            m,
            v["ours_us_per_step"],
            v["raw_us_per_commit"],
            f"{v['ratio']:.2f}x",
            v["block_ours_us_per_step"],
            v["block_raw_us_per_commit"],
            f"{v['block_ratio']:.2f}x",
            f"≤ {v['ratio_target']}x",
            verdict(v["meets_target"]),
            v["steps_per_second"],
            v["flows_per_second_1_step"],
        ]
        for m, v in doc["modes"].items()
    ]
    out += table(
        [
            "synchronous",
            "paired: ours µs/step",
            "raw µs/commit",
            "ratio",
            "block: ours µs/step",
            "raw µs/commit",
            "ratio",
            "target",
            "verdict",
            "steps/s (block)",
            "1-step flows/s",
        ],
        rows,
    )
    if "memory_store_us_per_step" in doc:
        out += [
            f"The same flow on `MemoryStore` (the Python side alone): "
            f"{doc['memory_store_us_per_step']:.1f} µs/step.",
            "",
        ]
    if doc.get("sweep"):
        out += ["µs per live step by flow length (whole flow / steps):", ""]
        lengths = sorted({r["steps"] for r in doc["sweep"]})
        by = {(r["mode"], r["steps"]): r["us_per_step"] for r in doc["sweep"]}
        modes = list(dict.fromkeys(r["mode"] for r in doc["sweep"]))
        out += table(["steps", *modes], [[n, *(by.get((m, n)) for m in modes)] for n in lengths])
    return out


def replay_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Replay — `bench/replay.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    out += [
        f"Resume of a flow of N completed steps parked at a `Suspend` (claim + replay + park "
        f"again), store `synchronous={doc['mode']}`, {doc['rounds']} rounds, medians. "
        "*marginal* = (resume(N) - resume(0)) / N; *load* = `store.load` alone; *interpret* "
        "= the sans-IO interpreter alone feeding the recorded results to the generator.",
        "",
    ]
    rows = [
        [
            f"{x['steps']:,}",
            x["resume_ms"],
            fmt(x["us_per_step"], ".2f"),
            fmt(x["marginal_us_per_step"], ".2f"),
            fmt(x["load_us_per_step"], ".2f"),
            fmt(x["interpret_us_per_step"], ".2f"),
            x["queries_per_resume"],
            x["history_queries_per_resume"],
        ]
        for x in doc["lengths"]
    ]
    out += table(
        [
            "N",
            "resume ms",
            "µs/step",
            "marginal",
            "load µs/step",
            "interpret µs/step",
            "statements/resume",
            "history queries",
        ],
        rows,
    )
    longest = max(doc["queries"], key=int)
    out += [
        f"The statements of one resume ({int(longest):,} steps), from "
        "`set_trace_callback` on `store._conn()`:",
        "",
        "```",
    ]
    out += doc["queries"][longest]["sql"] + ["```", ""]
    return out


def peers_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Peers — `bench/peers.py` (DBOS Transact, SQLite system database)", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    info = next(iter(doc["dbos"].values()))
    out += [
        f"DBOS {info.get('dbos')} (SQLAlchemy {info.get('sqlalchemy')}) in its own venv: a "
        f"`@DBOS.workflow()` calling a `@DBOS.step()` {doc['steps']} times, each returning the "
        f"same small dict; ours in-process. {doc['rounds']} rounds interleaved, medians; the "
        "ratio (our steps/s ÷ DBOS's) is taken within each round. DBOS pragmas as measured: "
        + "; ".join(
            f"{v}: journal_mode={d.get('journal_mode')}, synchronous={d.get('synchronous')}"
            for v, d in doc["dbos"].items()
        )
        + ".",
        "",
    ]
    rows = [
        [
            x["pair"],
            x["ours_us_per_step"],
            x["dbos_us_per_step"],
            x["ours_steps_per_second"],
            x["dbos_steps_per_second"],
            f"{x['ratio']:.1f}x",
            verdict(x["meets_target"]),
        ]
        for x in doc["pairs"]
    ]
    out += table(
        [
            "ours vs DBOS",
            "ours µs/step",
            "DBOS µs/step",
            "ours steps/s",
            "DBOS steps/s",
            "ratio",
            "≥ 10x",
        ],
        rows,
    )
    return out


def memory_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Memory — `bench/memory.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    out += [
        f"{doc['count']:,} flows (step, suspend, signal, step) started in batches of 1,000, "
        f"completed by {'`Worker.run_once()`' if doc['driver'] == 'worker' else '`resume()`'}, "
        f"store `synchronous={doc['mode']}`; database {doc['db_bytes'] / 2**20:.0f} MiB at "
        f"the end. Peak RSS {doc['peak_kib'] / 1024:.1f} MiB; growth after the first "
        f"checkpoint {doc['growth_kib'] / 1024:+.1f} MiB, over the second half "
        f"{doc['second_half_growth_kib'] / 1024:+.1f} MiB: "
        f"{'flat' if doc['flat'] else '**growing**'}.",
        "",
    ]
    rows = [
        [
            f"{c['flows']:,}",
            c["rss_kib"] / 1024,
            c["peak_kib"] / 1024,
            c["gc_objects"],
            fmt(c["flows_per_s"], ".0f"),
        ]
        for c in doc["checkpoints"]
    ]
    return out + table(["flows done", "RSS MiB", "peak MiB", "gc objects", "flows/s"], rows)


def concurrency_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Concurrent worker — `bench/concurrency.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    flows, rounds = doc["flows"], doc["rounds"]
    out += [
        f"Flows of {doc['steps']} steps, stored unheld, then one "
        "`Worker(store, [flow], concurrency=N).run_once()` runs them all (timed; every flow "
        f"must complete), on `{doc['store']}`, a fresh database file per run. *5 ms steps*: "
        f"each step sleeps {doc['sleep_ms']:g} ms (a network call's stand-in), "
        f"{flows['sleep']} flows, {rounds['sleep']} rounds; *fast steps*: each returns a small "
        f"dict at once, {flows['fast']} flows, {rounds['fast']} rounds. The concurrency "
        "settings alternate within each round (fast steps: with concurrency 1 on "
        "`synchronous=NORMAL` too); medians, the ratio (over concurrency 1 on FULL) taken "
        "within each round. "
        "CPU is `time.process_time` (every thread of the process, user + system) over the "
        "steps; writes/txn is GroupCommit's writes / batches. "
        f"Commit measured: `{doc.get('commit')}`.",
        "",
    ]
    rows = [
        [
            "5 ms steps" if c["case"] == "sleep" else "fast steps",
            c["concurrency"],
            c.get("synchronous", "FULL"),
            fmt(c["steps_per_second"], ",.0f"),
            f"{c['ratio']:.1f}x",
            f"{min(c['samples']['ratio']):.1f} to {max(c['samples']['ratio']):.1f}x",
            f"≥ {c['ratio_target']:g}x" if "ratio_target" in c else "",
            verdict(c["meets_target"]) if "meets_target" in c else "",
            fmt(c["cpu_us_per_step"], ".0f"),
            f"{c['user_us_per_step']:.0f} + {c['sys_us_per_step']:.0f}",
            fmt(c["writes_per_batch"]),
        ]
        for c in doc["cases"]
    ]
    out += table(
        [
            "workload",
            "concurrency",
            "synchronous",
            "steps/s",
            "ratio vs 1",
            "ratio range",
            "target",
            "verdict",
            "CPU µs/step",
            "user + sys",
            "writes/txn",
        ],
        rows,
    )
    if v := doc.get("vs_normal"):
        out += [
            f"Fast steps, concurrency {v['concurrency']} on FULL over one flow at a time on "
            f"NORMAL: {v['ratio']:.1f}x (per round: "
            + ", ".join(f"{x:.1f}x" for x in v["samples"])
            + f"); target ≥ {v['target']:g}x: {verdict(v['meets_target'])}.",
            "",
        ]
    f = doc.get("fsync", {})
    if "runs" in f:
        out += [
            "fsyncs, counted with `strace -c -f -e trace=fsync,fdatasync` around a child "
            "process that runs only the worker on a database prepared beforehand (a separate, "
            "slower run: its batches can differ from the timed ones); the calls of a child "
            f"that only opens and closes the store ({f['baseline_calls']}) are subtracted:",
            "",
            *table(
                ["workload", "concurrency", "fsync + fdatasync", "steps per fsync", "writes/txn"],
                [
                    [
                        "5 ms steps" if r["case"] == "sleep" else "fast steps",
                        r["concurrency"],
                        r["fsync_calls_run"],
                        fmt(r["steps_per_fsync"]),
                        fmt(r["writes_per_batch"]),
                    ]
                    for r in f["runs"]
                ],
            ),
        ]
    elif f:
        out += [f"_fsyncs not counted: {f.get('how', f.get('note', ''))}._", ""]
    return out


def postgres_section(doc: dict[str, Any]) -> list[str]:
    out = ["## PostgreSQL — `bench/postgres.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    step = (doc.get("step") or [None])[0]
    if step:
        samples = step.get("samples", {})
        ours, raw = samples.get("ours_us", []), samples.get("raw_us", [])
        ratios = [o / r for o, r in zip(ours, raw, strict=True)]
        out += [
            f"One durable step: flows of {step.get('steps', 300)} steps returning small dicts on "
            "`PostgresStore`, beside as many raw autocommit INSERTs of the same rows (a table "
            "made `LIKE` our `records`) through one psycopg connection, round by round (who "
            f"goes first alternates), {step.get('rounds', '?')} rounds; the ratio is taken "
            "within each round"
            + (f" ({', '.join(f'{x:.2f}x' for x in ratios)})" if ratios else "")
            + ", median.",
            "",
            *table(
                ["ours µs/step", "raw µs/commit", "ratio", "target", "verdict"],
                [
                    [
                        step["ours_us"],
                        step["raw_us"],
                        f"{step['ratio']:.2f}x",
                        step.get("target", f"≤ {DEFAULTS['pg_step']:g}x"),
                        verdict(step["ratio"] <= step.get("ratio_target", DEFAULTS["pg_step"])),
                    ]
                ],
            ),
        ]
    if (x := doc.get("xacts")) and x.get("note"):
        out += [f"_Server transactions {x['note']}._", ""]
    elif x:
        out += [
            "Server transactions per durable step: flows stored unheld, then one "
            "`Worker(store, [flow], concurrency=N).run_once()`, in a database of the bench's "
            f"own. Counted: {x['how']}. {x['rounds']} round(s), medians. WAL syncs are "
            "`pg_stat_wal.wal_sync` over the same window (cluster-wide), shown for context.",
            "",
            *table(
                [
                    "concurrency",
                    "flows, steps each",
                    "server transactions",
                    "baseline (subtracted)",
                    "durable steps per transaction",
                    "WAL syncs",
                    "steps/s",
                    "target",
                    "verdict",
                ],
                [
                    [
                        r["concurrency"],
                        f"{r['flows']}, {r['steps']}",
                        fmt(r["transactions"], ".0f"),
                        fmt(r["baseline_transactions"], ".0f"),
                        fmt(r["steps_per_transaction"], ".2f"),
                        fmt(r["wal_syncs"], ".0f"),
                        fmt(r["steps_per_second"], ",.0f"),
                        f"≥ {r['target']:g}" if "target" in r else "",
                        verdict(r["meets_target"]) if "meets_target" in r else "",
                    ]
                    for r in x["levels"]
                ],
            ),
        ]
    if doc.get("workers"):
        out += [
            "Worker processes (`Worker.run_forever`) over flows of two steps stored as due; "
            "flows per second from the first claim to the last completion:",
            "",
            *table(
                ["processes", "flows/s"],
                [[w["processes"], w["flows_per_second"]] for w in doc["workers"]],
            ),
        ]
    return out


def peers_resume_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Resume beside LangGraph — `bench/peers_resume.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    info = doc.get("langgraph", {})
    out += [
        f"A {doc['steps']:,}-step history. LangGraph {info.get('langgraph')} "
        f"(langgraph-checkpoint-sqlite {info.get('checkpoint_sqlite')}, `SqliteSaver` as "
        f"shipped: journal_mode={info.get('journal_mode')}, synchronous="
        f"{info.get('synchronous')}), a one-node graph looped {doc['steps']:,} times then "
        "parked at `interrupt()`: `get_state` reads its snapshot; *resume* is "
        "`invoke(Command(resume=...))` from that snapshot. Ours: `resume()` of a flow parked "
        "at a `Suspend` after as many steps (claim, replay, park again). "
        f"{doc.get('rounds')} rounds interleaved, medians.",
        "",
        *table(
            ["what", "ms", "µs per step"],
            [[r["what"], fmt(r["ms"], ".2f"), fmt(r["us_per_step"], ".2f")] for r in doc["rows"]],
        ),
    ]
    if t := doc.get("target"):
        out += [
            f"Target: {t['ours']} faster than {t['versus']} (ours at LangGraph's "
            f"`synchronous`): LangGraph ÷ ours {t['ratio']:.2f}x, per round "
            + ", ".join(f"{x:.2f}x" for x in t["samples"])
            + f": {verdict(t['meets_target'])}.",
            "",
        ]
    return out


def limit_target(doc: dict[str, Any]) -> list[Any]:
    goal = doc.get("target_ratio", DEFAULTS["limit"])
    what = (
        f"a step limit on SQLite FULL: a durable step under `Step(..., limits=[...])` ≤ "
        f"{goal:g}x one without"
    )
    m = doc.get("step_limit")
    if not m:
        return ["#21", what, unmeasured(doc), "—"]
    got = (
        f"{m['ratio']:.3f}x (+{m['added_us_per_step']:.0f} µs a step: "
        f"{m['limited_us_per_step']:.0f} vs {m['free_us_per_step']:.0f} µs)"
    )
    return ["#21", what, got, verdict(m["meets_target"])]


def flow_control_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Global limits — `bench/flow_control.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    out += [
        "Flows of 20 steps started pending, then one `Worker(store, concurrency=1)"
        ".run_once()` runs them all on SQLite FULL: with no limit, with "
        "`Limit(concurrency=1000)` on every step, and on the flow (never full: the "
        f"bookkeeping only); {doc['rounds']} rounds interleaved, medians. Then 4 worker "
        "processes (each `Worker(concurrency=4)`) on one-step 5 ms flows, with no limit "
        "and under `Limit(concurrency=8)`.",
        "",
        *table(
            ["limit on", "no limit µs/step", "limit µs/step", "added µs", "ratio"],
            [
                [
                    k,
                    doc[f"{k}_limit"]["free_us_per_step"],
                    doc[f"{k}_limit"]["limited_us_per_step"],
                    doc[f"{k}_limit"]["added_us_per_step"],
                    fmt(doc[f"{k}_limit"]["ratio"], ".3f"),
                ]
                for k in ("step", "flow")
                if f"{k}_limit" in doc
            ],
        ),
    ]
    if pr := doc.get("processes"):
        out += table(
            ["flows", "no limit flows/s", "concurrency=8 flows/s"],
            [[pr["flows"], pr["free_flows_per_second"], pr["limit8_flows_per_second"]]],
        )
    return out


def growth_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Store growth and retention — `bench/growth.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    mib = 2**20
    out += [
        f"{doc['count']:,} flows of three steps run to the end on SQLite, one every "
        f'{doc["every"]} of a fake clock; with `retention="{doc["retention"]}"`, a worker '
        f"pass every {doc['pass_every']} flows (about {doc['steady_flows']:,} flows kept). "
        "SQLite reuses freed pages and never shrinks a file without VACUUM: with retention "
        "the file stops growing at its peak.",
        "",
        *table(
            ["retention", "flows kept", "file MiB", "used MiB", "worker ms/pass"],
            [
                [
                    k,
                    doc[k]["kept"],
                    doc[k]["file_bytes"] / mib,
                    doc[k]["used_bytes"] / mib,
                    doc[k]["ms_per_pass"],
                ]
                for k in ("without", "with")
            ],
        ),
    ]
    if c := doc.get("batch_cost"):
        out += [
            f"One retention batch (`prune(..., limit={c['batch']})`, one transaction, "
            f"synchronous={c['synchronous']}) in a store of {c['flows_in_store']:,} flows: "
            f"{c['ms_per_batch']:.1f} ms ({c['us_per_flow']:.0f} µs a flow; median of "
            f"{c['rounds']}); a look with nothing old: {c['ms_nothing_old']:.2f} ms.",
            "",
        ]
    return out


def observability_targets(doc: dict[str, Any]) -> list[list[Any]]:
    """Issue 22's two rows: instrumentation on over off, and the seam's share while off."""
    on, off = doc.get("on"), doc.get("off")
    on_goal = on["target"] if on else DEFAULTS["observed"]
    off_goal = off["target"] if off else DEFAULTS["seam"]
    mode = doc.get("mode", "NORMAL")
    on_what = (
        f"a durable step on SQLite {mode} with `instrument()` (SDK spans to a dropping "
        f"exporter, SDK metrics) ≤ {on_goal:g}x one without"
    )
    off_what = f"instrumentation off: the seam's share of a durable step ≤ {off_goal:.0%}"
    if not on or not off:
        return [["#22", on_what, unmeasured(doc), "—"], ["#22", off_what, unmeasured(doc), "—"]]
    on_got = (
        f"{on['ratio']:.3f}x (+{on['added_us_per_step']:.1f} µs a step: "
        f"{on['on_us_per_step']:.0f} vs {on['off_us_per_step']:.0f} µs)"
    )
    off_got = (
        f"{off['share']:.3%} ({off['per_attempt_ns']:.0f} ns an attempt, "
        f"{off['per_slice_ns']:.0f} ns a slice, counted)"
    )
    return [
        ["#22", on_what, on_got, verdict(on["meets_target"])],
        ["#22", off_what, off_got, verdict(off["meets_target"])],
    ]


def observability_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Observability — `bench/observability.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    off = doc["off"]
    out += [
        f"{doc['flows']} flows of {doc['steps']} steps started pending, then one "
        f"`Worker(store).run_once()` pass runs them on SQLite ({doc['mode']} the target's): "
        "instrumentation "
        "off (the default) and on (`instrument()` with the SDK's `TracerProvider`, every span "
        "through a `SimpleSpanProcessor` to an exporter that drops it, and a `MeterProvider` "
        f"with an `InMemoryMetricReader`), interleaved, {doc['rounds']} rounds, medians. "
        "The off path's own cost is counted, not timed as a difference: the seam's checks "
        "(a lambda and an `is None` an attempt; four seam calls and two "
        "`Logger.isEnabledFor` a slice), each timed alone, over the fastest off pass's time.",
        "",
        *table(
            ["SQLite", "off µs/step", "on µs/step", "added µs", "on / off", "spans a pass"],
            [
                [
                    mode,
                    m["off_us_per_step"],
                    m["on_us_per_step"],
                    m["added_us_per_step"],
                    fmt(m["ratio"], ".3f"),
                    doc.get("spans_per_pass"),
                ]
                for mode in doc.get("modes", [doc["mode"]])
                if (m := doc.get("on" if mode == doc["mode"] else f"on_{mode.lower()}"))
            ],
        ),
        *table(
            ["off: ns an attempt", "ns a slice", "µs a step", "share of a step"],
            [
                [
                    off["per_attempt_ns"],
                    off["per_slice_ns"],
                    fmt(off["seam_us_per_step"], ".3f"),
                    fmt(off["share"], ".3%"),
                ]
            ],
        ),
    ]
    return out


def generic_section(name: str, doc: dict[str, Any]) -> list[str]:
    out = [f"## `bench/{name}.py`", ""]
    if (skip := not_run(doc)) is not None:
        return out + skip
    if "text" in doc:
        return [*out, f"_{doc.get('note', '')}_", "", "```", doc["text"], "```", ""]
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols = [k for k in value[0] if not isinstance(value[0][k], list | dict)]
            out += [f"`{key}`:", "", *table(cols, [[v.get(c) for c in cols] for v in value])]
    scalars = {k: v for k, v in doc.items() if isinstance(v, str | int | float | bool)}
    if scalars:
        out += table(["key", "value"], [[k, v] for k, v in scalars.items()])
    return out


def plot(docs: dict[str, dict[str, Any]], path: Path) -> str | None:
    """µs/step (live, by mode) and replay µs/step against history length; None if no data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install -e '.[bench]'`): no plot"
    series: list[tuple[str, list[int], list[float], str]] = []
    for mode in ("FULL", "NORMAL"):
        pts = sorted(
            (r["steps"], r["us_per_step"])
            for r in docs.get("steps", {}).get("sweep", [])
            if r["mode"] == mode
        )
        if pts:
            xs, ys = [n for n, _ in pts], [v for _, v in pts]
            series.append((f"live step, synchronous={mode}", xs, ys, "o-"))
    rep = docs.get("replay", {})
    rows = [x for x in rep.get("lengths", []) if x["steps"]]
    if rows:
        xs = [x["steps"] for x in rows]
        series.append(
            (
                f"replay: whole resume / N ({rep['mode']})",
                xs,
                [x["us_per_step"] for x in rows],
                "s-",
            )
        )
        series.append(
            (
                "replay: load + interpret / N",
                xs,
                [x["load_us_per_step"] + x["interpret_us_per_step"] for x in rows],
                "^--",
            )
        )
    if not series:
        return "no data to plot"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, xs, ys, style in series:
        ax.plot(xs, ys, style, label=label)
    ax.axhline(3.0, color="grey", linestyle=":", label="replay target, 3 µs/step")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("history length (steps in the flow)")
    ax.set_ylabel("µs per step")
    ax.set_title("crux_gen on SQLite: live steps and replay vs history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def output_dir(given: str | None, parser: argparse.ArgumentParser) -> Path:
    """The directory to write into: *given* (created if need be), else a fresh temporary one."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="crux-bench-"))
    out = Path(given)
    if out.suffix.lower() == ".md" or out.is_file():
        parser.error(f"--out {given!r} is a file; give a directory (--out bench/ to commit)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The committed results are regenerated on purpose: --out bench/",
    )
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SCRIPTS)}")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="the directory for RESULTS.md, results.json and results.png (default: a fresh "
        "temporary directory, printed at the end; bench/ to regenerate the committed ones)",
    )
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else SCRIPTS
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        p.error(f"--only: no bench script named {', '.join(unknown)} (known: {','.join(SCRIPTS)})")
    out_md = output_dir(args.out, p) / "RESULTS.md"
    before = machine()
    started = datetime.datetime.now(datetime.timezone.utc)
    docs = {name: run(name, args.quick) for name in names}
    after = machine()

    png = out_md.with_name("results.png")
    plot_note = plot(docs, png)
    out_md.with_name("results.json").write_text(json.dumps(docs, indent=1, default=str) + "\n")

    lines = [
        "# crux_gen benchmarks",
        "",
        f"Written by `python bench/report.py{' --quick' if args.quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC. Python {before['python']}, SQLite {before['sqlite']}, "
        f"{before['cpus']} CPUs, {before['platform']}; load average "
        f"{before['loadavg']} before, {after['loadavg']} after.",
        "",
        "> Numbers from one run on a shared machine: other work ran beside it, so absolute "
        "times are noisy (an fsync here took anywhere from ~0.3 ms to ~5 ms across runs). "
        "Every comparison is measured side by side in the same run, interleaved, and the "
        "medians are reported; trust the ratios more than the absolute numbers. "
        "Run it again with `python bench/report.py` (`--quick` for a fast pass; "
        "`--out bench/` to replace the committed results).",
        "",
        *targets(docs),
        *(
            ["![µs per step vs history length](results.png)", ""]
            if plot_note is None
            else [f"_Plot: {plot_note}._", ""]
        ),
        *steps_section(docs.get("steps", {"missing": True, "note": "not run (--only)"})),
        *replay_section(docs.get("replay", {"missing": True, "note": "not run (--only)"})),
        *peers_section(docs.get("peers", {"missing": True, "note": "not run (--only)"})),
        *memory_section(docs.get("memory", {"missing": True, "note": "not run (--only)"})),
        *concurrency_section(
            docs.get("concurrency", {"missing": True, "note": "not run (--only)"})
        ),
    ]
    if "postgres" in docs:
        lines += postgres_section(docs["postgres"])
    if "peers_resume" in docs:
        lines += peers_resume_section(docs["peers_resume"])
    if "flow_control" in docs:
        lines += flow_control_section(docs["flow_control"])
    if "growth" in docs:
        lines += growth_section(docs["growth"])
    if "observability" in docs:
        lines += observability_section(docs["observability"])
    for name in ("due_scan", "listing", "current_step", "events"):
        if name in docs:
            lines += generic_section(name, docs[name])
    analysis = BENCH / "ANALYSIS.md"  # hand-written: what bounds a missed target
    if analysis.exists():
        lines += [analysis.read_text().rstrip(), ""]
    lines += ["## Run times", ""]
    lines += table(
        ["script", "command", "seconds"],
        [[n, f"`{d.get('command', '—')}`", d.get("seconds")] for n, d in docs.items()],
    )
    out_md.write_text("\n".join(lines).rstrip() + "\n")
    print(
        f"\nwrote {out_md}, {out_md.with_name('results.json')}" + ("" if plot_note else f", {png}"),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
