"""Peak RSS while 100k flows start, suspend and complete through a worker.

Flows of ``Step`` → ``Suspend("go")`` → ``Step`` are started in batches of 1,000
(``Flow.run``: each parks at its ``Suspend``), signalled (``signal_flow``), then
driven to completion by ``Worker(store, flows).run_once()`` (``crux_gen.worker``;
or, when that module is missing or with ``--driver resume``, by ``crux_gen.resume``
on each id). At ten checkpoints (every tenth of ``--count``) it records the
resident set size (``VmRSS``), its peak (``VmHWM``) and the number of objects the
garbage collector tracks. Memory must stay flat: no growth with the count of flows run.

The store is ``synchronous=NORMAL`` by default: in ``FULL`` every one of a flow's
six commits is fsync'd and 100k flows would take most of an hour; memory does not
depend on it.

    python bench/memory.py [--count 100000] [--quick] [--json] [--driver auto|worker|resume]
"""

from __future__ import annotations

import functools
import gc
import time
from typing import Any

from _common import Out, fresh, machine, parser, rss, workdir

from crux_gen import Step, Suspend, flow, resume, signal_flow
from crux_gen.stores.sqlite import SQLiteStore

BATCH = 1000
# Flat: at most this much growth from the first checkpoint to the last, and at
# most half of it over the second half of the run.
FLAT_KIB = 4096


def small_result(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True, "label": f"item-{i:05d}", "score": i * 0.5}


@flow("bench-memory")
def memory_flow(ctx):
    first = yield Step("prepare", functools.partial(small_result, ctx.input["n"]))
    got = yield Suspend("go")
    return (yield Step("finish", lambda: {"first": first["i"], "got": got}))


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=None, help="flows to run (default 100000)")
    p.add_argument("--mode", default="NORMAL", choices=["NORMAL", "FULL"])
    p.add_argument("--driver", default="auto", choices=["auto", "worker", "resume"])
    args = p.parse_args()
    out = Out(args.json)
    count = args.count or (10_000 if args.quick else 100_000)
    count = max(BATCH, count - count % BATCH)
    every = max(BATCH, (count // 10) // BATCH * BATCH)
    drive = args.driver
    doc: dict[str, Any] = {
        "bench": "memory",
        "machine": machine(),
        "count": count,
        "mode": args.mode,
        "driver": drive,
        "checkpoints": [],
    }

    with workdir(args.dir, "crux-bench-memory-") as d:
        store = SQLiteStore(fresh(d / "memory.db"), synchronous=args.mode)
        worker = None
        if drive in ("auto", "worker"):
            try:
                from crux_gen.worker import Worker
            except ImportError:
                if drive == "worker":
                    raise
                out.line("crux_gen.worker is not there: driving with resume() instead")
            else:
                worker = Worker(store, flows=[memory_flow])
        doc["driver"] = "worker" if worker else "resume"
        out.line(
            f"{count} flows (step, suspend, signal, step) in batches of {BATCH}, "
            f"driven by {'Worker.run_once()' if worker else 'resume()'}, "
            f"synchronous={args.mode}; RSS every {every} flows"
        )
        out.line(f"{'flows':>8}{'RSS MiB':>9}{'peak MiB':>10}{'gc objects':>12}{'flows/s':>9}")

        def checkpoint(done: int, rate: float | None) -> None:
            gc.collect()
            mem = rss()
            row = {"flows": done, **mem, "gc_objects": len(gc.get_objects()), "flows_per_s": rate}
            doc["checkpoints"].append(row)
            shown = "" if rate is None else f"{rate:.0f}"
            out.line(
                f"{done:>8}{mem['rss_kib'] / 1024:>9.1f}{mem['peak_kib'] / 1024:>10.1f}"
                f"{row['gc_objects']:>12}{shown:>9}"
            )

        checkpoint(0, None)
        done, t_mark, done_mark = 0, time.perf_counter(), 0
        while done < count:
            ids = []
            for i in range(BATCH):
                r = memory_flow.run(input={"n": done + i}, store=store)
                assert r.status == "suspended", r
                ids.append(r.flow_id)
            for fid in ids:
                signal_flow(fid, "go", {"ok": 1}, store=store)
            if worker is not None:
                ran = 0
                while True:
                    n = worker.run_once()
                    ran += n
                    if n == 0:
                        break
                assert ran == BATCH, f"the worker advanced {ran} flows of {BATCH}"
            else:
                for fid in ids:
                    assert resume(fid, store=store).status == "completed"
            done += BATCH
            if done % every == 0 or done == count:
                now = time.perf_counter()
                checkpoint(done, (done - done_mark) / (now - t_mark))
                t_mark, done_mark = now, done

        finished = (
            store._conn()
            .execute("SELECT count(*) FROM flows WHERE status = 'completed'")
            .fetchone()[0]
        )
        assert finished == count, f"{finished} of {count} flows completed"
        doc["db_bytes"] = sum(f.stat().st_size for f in d.glob("memory.db*"))

    cps = doc["checkpoints"]
    # From the first checkpoint (SQLite's page cache and the allocator warmed up) to
    # the end; and over the second half alone, where a leak shows as a steady slope.
    first, mid, last = cps[1], cps[len(cps) // 2], cps[-1]
    growth = last["rss_kib"] - first["rss_kib"]
    late = last["rss_kib"] - mid["rss_kib"]
    per_10k = late / max(1, (last["flows"] - mid["flows"])) * 10_000
    doc.update(
        baseline_kib=cps[0]["rss_kib"],
        first_checkpoint_kib=first["rss_kib"],
        final_kib=last["rss_kib"],
        peak_kib=max(c["peak_kib"] for c in cps),
        growth_kib=growth,
        second_half_growth_kib=late,
        growth_kib_per_10k_flows=per_10k,
        gc_objects_growth=last["gc_objects"] - first["gc_objects"],
        flat=growth <= FLAT_KIB and late <= FLAT_KIB // 2,
        flat_threshold_kib=FLAT_KIB,
        machine_after=machine(),
    )
    out.line()
    out.line(
        f"RSS {first['rss_kib'] / 1024:.1f} MiB after {first['flows']} flows → "
        f"{last['rss_kib'] / 1024:.1f} MiB after {last['flows']}: growth "
        f"{growth / 1024:+.1f} MiB ({per_10k:+.0f} KiB per 10k flows), peak "
        f"{doc['peak_kib'] / 1024:.1f} MiB, gc objects {doc['gc_objects_growth']:+d}: "
        f"{'flat' if doc['flat'] else 'GROWING'} (threshold {FLAT_KIB // 1024} MiB)"
    )
    out.emit(doc)


if __name__ == "__main__":
    main()
