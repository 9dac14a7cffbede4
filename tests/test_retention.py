"""Retention: ``@flow(..., retention="1h")`` and the workers that apply it (issue 22).

A worker pass deletes the finished flows of a name with a retention last updated
longer ago than that, by the store's clock (a ``FakeClock`` here: no sleeping),
with their history, signals and earlier runs; never an unfinished flow, another
name's, a young one, or a finished child its live parent still waits on; at most
``retention_batch`` a pass, and a name is looked at again a minute after a batch
that was not full. On every store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    All,
    Child,
    ContinueAsNew,
    FlowContext,
    FlowNotFoundError,
    MemoryStore,
    SQLiteStore,
    Step,
    Suspend,
    cancel_flow,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.cli import main
from crux_gen.clock import FakeClock
from crux_gen.errors import InvalidTypeError, InvalidValueError
from crux_gen.flow import Registry
from crux_gen.retention import BATCH, EVERY, Retention
from crux_gen.worker import Worker

from . import pg

REPO = Path(__file__).resolve().parent.parent
REGISTRY = Registry()


def boom() -> None:
    raise RuntimeError("no")


@flow("rt-kept", registry=REGISTRY, retention="1h")
def kept(ctx: FlowContext) -> Any:
    """Ends as its input says: ``done``, ``fail``, ``wait`` (for signal ``go``),
    ``expire`` (``go`` within 30 minutes), ``again`` (a second run, then done)."""
    mode = ctx.input
    if mode == "fail":
        yield Step("boom", boom)
    if mode in ("wait", "expire"):
        yield Suspend("go", timeout="30m" if mode == "expire" else None)
    if mode == "again":
        yield Step("first-run", lambda: 1)
        yield ContinueAsNew(input="done")
    return (yield Step("done", lambda: mode))


@flow("rt-forever", registry=REGISTRY)
def forever(ctx: FlowContext) -> Any:
    return (yield Step("done", lambda: "kept"))


@flow("rt-child", registry=REGISTRY, retention="1h")
def child(ctx: FlowContext) -> Any:
    yield Suspend("go")
    return ctx.input


@flow("rt-parent", registry=REGISTRY, retention="1h")
def parent(ctx: FlowContext) -> Any:
    return (
        yield All(
            [
                Child(child, input="a", flow_id=f"{ctx.flow_id}-a"),
                Child(child, input="b", flow_id=f"{ctx.flow_id}-b"),
            ]
        )
    )


FLOWS = [kept, forever, child, parent]


def ids(store: Any) -> set[str]:
    return {f.id for f in store.list_flows(limit=1000)}


def rows(store: Any, kind: str, flow_id: str) -> dict[str, int]:
    """How many rows of *flow_id* each table of the store holds (its own tables)."""
    if kind == "memory":
        return {
            "records": len(store._records.get(flow_id, ())),
            "signals": len(store._signals.get(flow_id, {})),
            "past_records": sum(len(r) for r in store._past.get(flow_id, {}).values()),
        }
    query = "SELECT count(*) FROM {} WHERE flow_id = " + ("?" if kind == "sqlite" else "%s")
    found = {}
    for table in ("records", "signals", "past_records"):
        if kind == "sqlite":
            found[table] = store._conn().execute(query.format(table), (flow_id,)).fetchone()[0]
        else:
            found[table] = store._all(query.format(table), (flow_id,))[0][0]
    return found


# -- the option -----------------------------------------------------------------------------


def test_retention_is_a_duration_above_zero_checked_at_decoration() -> None:
    registry = Registry()

    def body(ctx: FlowContext) -> Any:
        yield Step("s", lambda: 1)

    assert flow("rt-none", registry=registry)(body).retention is None
    assert flow("rt-str", registry=registry, retention="30d")(body).retention == timedelta(days=30)
    given = timedelta(hours=6)
    assert flow("rt-td", registry=registry, retention=given)(body).retention == given
    assert flow("rt-secs", registry=registry, retention=90)(body).retention == timedelta(seconds=90)
    for bad in ("30 days", "0s", 0, -1, timedelta(0), True, [30], float("nan")):
        with pytest.raises(InvalidValueError) as caught:
            flow("rt-bad", registry=registry, retention=bad)
        assert "@flow('rt-bad') retention" in str(caught.value) and repr(bad) in str(caught.value)
    assert "rt-bad" not in registry


def test_the_worker_batch_is_checked() -> None:
    for bad, error in ((0, InvalidValueError), (-3, InvalidValueError), ("5", InvalidTypeError)):
        with pytest.raises(error, match="retention_batch"):
            Retention(bad)  # type: ignore[arg-type]
        with pytest.raises(error, match="retention_batch"):
            Worker(store=MemoryStore(), retention_batch=bad)  # type: ignore[arg-type]
    assert Retention().batch == BATCH == 200


# -- what a worker pass deletes -------------------------------------------------------------


def test_a_worker_pass_deletes_old_finished_flows_of_a_name_with_retention_only(
    store: Any, clock: FakeClock, store_kind: str
) -> None:
    old = {mode: kept.run(input=mode, store=store).flow_id for mode in ("done", "fail", "again")}
    old["signalled"] = kept.run(input="wait", store=store).flow_id
    signal_flow(old["signalled"], "go", {"n": 1}, store=store)
    assert resume(old["signalled"], store=store, flows=FLOWS).status == "completed"
    old["cancelled"] = kept.run(input="wait", store=store).flow_id
    assert cancel_flow(old["cancelled"], "no longer needed", store=store)
    old["expired"] = kept.run(input="expire", store=store).flow_id
    waiting = kept.run(input="wait", store=store).flow_id  # unfinished: kept however old
    other = forever.run(store=store).flow_id  # no retention: kept
    clock.advance("31m")
    worker = Worker(store=store, flows=FLOWS)
    assert worker.run_once() == 1  # expires the 30-minute wait
    statuses = {k: get_flow(v, store=store).status for k, v in old.items()}
    assert statuses == {
        "done": "completed",
        "fail": "failed",
        "again": "completed",
        "signalled": "completed",
        "cancelled": "cancelled",
        "expired": "expired",
    }
    assert rows(store, store_kind, old["again"])["past_records"] > 0
    assert rows(store, store_kind, old["signalled"])["signals"] == 1
    assert worker.retention.deleted == 0  # nothing older than an hour yet

    clock.advance("59m")  # 1h30m since the first five finished; the expired one 59m ago
    young = kept.run(input="done", store=store).flow_id
    assert worker.run_once() == 0
    assert worker.retention.deleted == 5
    gone = [old[k] for k in ("done", "fail", "again", "signalled", "cancelled")]
    assert ids(store) == {old["expired"], waiting, other, young}
    for flow_id in gone:
        with pytest.raises(FlowNotFoundError):
            get_flow(flow_id, store=store)
        assert rows(store, store_kind, flow_id) == {"records": 0, "signals": 0, "past_records": 0}

    clock.advance("2m")  # the expired one is over an hour old now; a minute has passed
    assert worker.run_once() == 0
    assert worker.retention.deleted == 6
    assert ids(store) == {waiting, other, young}
    assert get_flow(waiting, store=store).status == "suspended"


def test_a_finished_child_its_live_parent_waits_on_is_kept(store: Any, clock: FakeClock) -> None:
    top = parent.run(store=store, flow_id="rt-top")
    assert top.status == "suspended"
    signal_flow("rt-top-a", "go", None, store=store)
    assert resume("rt-top-a", store=store, flows=FLOWS).status == "completed"
    worker = Worker(store=store, flows=FLOWS)
    worker.run_once()  # the parent takes child a's end and waits on for child b
    assert get_flow("rt-top", store=store).status == "suspended"
    clock.advance("2h")
    assert worker.run_once() == 0  # the parent still waits for child b: not due
    assert worker.retention.deleted == 0
    assert get_flow("rt-top-a", store=store).status == "completed"  # kept: its parent waits
    assert store.prune(clock.time(), dry_run=True) == 0

    signal_flow("rt-top-b", "go", None, store=store)
    assert worker.run_once() == 2  # child b, then the parent, which takes both results
    assert get_flow("rt-top", store=store).status == "completed"
    assert resume("rt-top", store=store, flows=FLOWS).value == ["a", "b"]
    clock.advance("61m")
    assert worker.run_once() == 0
    assert worker.retention.deleted == 3
    assert ids(store) == set()


def test_a_pass_deletes_at_most_its_batch_oldest_first_and_looks_again_after_a_minute(
    store: Any, clock: FakeClock
) -> None:
    first = []
    for _ in range(7):  # one a second: each older than the next
        first.append(kept.run(input="done", store=store).flow_id)
        clock.advance("1s")
    clock.advance("13s")
    later = kept.run(input="done", store=store).flow_id  # 20 s after the first
    clock.advance("1h")
    # Now: 1h20s after the first, 1h after `later`, which is not older than an hour.
    worker = Worker(store=store, flows=FLOWS, retention_batch=3)
    remaining = set(first)
    for expected in (first[:3], first[3:6], first[6:]):
        worker.run_once()  # no clock move: a full batch goes on at the next pass
        remaining -= set(expected)
        assert ids(store) == remaining | {later}
    assert worker.retention.deleted == 7

    clock.advance("30s")  # `later` is old now, but the last batch was not full
    worker.run_once()
    assert ids(store) == {later}
    clock.advance(f"{EVERY - 30}s")  # a minute after that last look
    worker.run_once()
    assert ids(store) == set()
    assert worker.retention.deleted == 8


def test_the_pass_budget_is_shared_across_names_without_starving_one(
    store: Any, clock: FakeClock
) -> None:
    registry = Registry()

    def body(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: 1))

    names = [flow(f"rt-share-{n}", registry=registry, retention="1h")(body) for n in range(3)]
    for f in names:
        for _ in range(4):
            f.run(store=store)
    clock.advance("2h")
    worker = Worker(store=store, flows=names, retention_batch=5)
    left = []
    for _ in range(3):
        worker.run_once()
        left.append({f.name: store.count(name=f.name) for f in names})
    # Five a pass in all; a name cut short goes first at the next pass.
    assert [sum(c.values()) for c in left] == [7, 2, 0]
    assert left[0] == {"rt-share-0": 0, "rt-share-1": 3, "rt-share-2": 4}
    assert worker.retention.deleted == 12


def test_store_prune_limit_and_dry_run(store: Any, clock: FakeClock) -> None:
    made = []
    for _ in range(5):
        made.append(kept.run(input="done", store=store).flow_id)
        clock.advance("1s")
    forever.run(store=store)
    now = clock.time()
    assert store.prune(now, name="rt-kept", dry_run=True) == 5
    assert store.prune(now, name="rt-kept", limit=2, dry_run=True) == 2
    assert len(ids(store)) == 6  # a dry run deletes nothing
    assert store.prune(now, name="rt-kept", limit=2) == 2
    assert ids(store) >= set(made[2:]) and not ids(store) & set(made[:2])  # the oldest went
    for bad, error in ((0, InvalidValueError), (True, InvalidTypeError), (1.5, InvalidTypeError)):
        with pytest.raises(error, match="prune limit"):
            store.prune(now, limit=bad)
    assert store.prune(now, name="rt-kept") == 3
    assert store.prune(now + 1, dry_run=True) == 1  # the other name's


# -- several workers at once ----------------------------------------------------------------


def second_store(store: Any, kind: str, request: pytest.FixtureRequest, clock: FakeClock) -> Any:
    """Another store object on *store*'s data (its own connections); memory: the same."""
    if kind == "memory":
        return store
    if kind == "sqlite":
        return SQLiteStore(Path(store.path), synchronous="NORMAL", clock=clock)
    server = request.getfixturevalue("pg_server")
    schema = request.getfixturevalue("pg_schema")
    return pg.store_class()(server.url, schema=schema, clock=clock)


def test_two_workers_at_once_delete_each_old_flow_once(
    store: Any, clock: FakeClock, store_kind: str, request: pytest.FixtureRequest
) -> None:
    made = {kept.run(input="done", store=store).flow_id for _ in range(60)}
    waiting = kept.run(input="wait", store=store).flow_id
    clock.advance("2h")
    other = second_store(store, store_kind, request, clock)
    workers = [
        Worker(store=store, flows=FLOWS, retention_batch=4),
        Worker(store=other, flows=FLOWS, retention_batch=4),
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(worker: Worker) -> None:
        try:
            start.wait()
            for _ in range(40):  # every batch is full until the end: no clock move needed
                worker.run_once()
        except BaseException as exc:  # pragma: no cover - the assertion shows it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if other is not store:
        other.close()
    assert errors == []
    assert sum(w.retention.deleted for w in workers) == len(made) == 60
    assert ids(store) == {waiting}


def test_two_worker_processes_on_one_sqlite_file_delete_each_old_flow_once(
    tmp_path: Path,
) -> None:
    from . import retention_procs

    db, go = tmp_path / "crux.db", tmp_path / "go"
    a_day_ago = FakeClock(datetime.now(timezone.utc) - timedelta(days=1))
    store = SQLiteStore(db, synchronous="NORMAL", clock=a_day_ago)
    made = [retention_procs.done.run(input=n, store=store).flow_id for n in range(240)]
    young = SQLiteStore(db)  # the real clock: a flow finished now is kept
    fresh = retention_procs.done.run(input="fresh", store=young).flow_id
    young.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.retention_procs", str(db), str(go), "7"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err == "", err  # no error, no warning (a store error would be logged)
        reports.append(json.loads(out))
    assert sum(r["deleted"] for r in reports) == len(made) == 240
    assert ids(store) == {fresh}
    store.close()


# -- crux-gen prune -------------------------------------------------------------------------


def crux(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``crux-gen ARGS`` in process: exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_crux_gen_prune_filters_combine_and_its_dry_run_counts_what_it_deletes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "crux.db")
    store = SQLiteStore(db)
    parent.run(store=store, flow_id="cli-top")  # waits for children a and b
    signal_flow("cli-top-a", "go", None, store=store)
    assert resume("cli-top-a", store=store, flows=FLOWS).status == "completed"
    others = {forever.run(store=store).flow_id for _ in range(2)}
    failed = kept.run(input="fail", store=store).flow_id
    waiting = kept.run(input="wait", store=store).flow_id
    before = ids(store)

    code, out, err = crux(capsys, "prune", "--dry-run", "--db", db)
    assert (code, out) == (1, "") and "at least one of --finished-before" in err
    code, out, err = crux(capsys, "prune", "--status", "suspended", "--db", db)
    assert code != 0 and "suspended" in err
    # The finished child its parent waits on is neither counted nor deleted.
    code, out, _ = crux(capsys, "prune", "--flow", "rt-child", "--dry-run", "--json", "--db", db)
    assert code == 0
    assert json.loads(out) == {
        "would_delete": 0,
        "by_status": {"cancelled": 0, "completed": 0, "expired": 0, "failed": 0},
        "dry_run": True,
    }
    code, out, _ = crux(capsys, "prune", "--status", "completed", "--dry-run", "--db", db)
    assert out.startswith("would delete 2 completed flows\n")
    assert ids(store) == before
    code, out, _ = crux(
        capsys, "prune", "--status", "completed", "--flow", "rt-kept", "--json", "--db", db
    )
    assert json.loads(out) == {"deleted": 0}  # rt-kept has a failed one, no completed one
    code, out, _ = crux(
        capsys, "prune", "--finished-before", "0", "--flow", "rt-forever", "--db", db
    )
    assert out.startswith("deleted 2 finished flows of 'rt-forever' last updated before ")
    assert ids(store) == before - others
    code, out, _ = crux(capsys, "prune", "--finished-before", "0s", "--json", "--db", db)
    assert json.loads(out) == {"deleted": 1}
    assert ids(store) == {"cli-top", "cli-top-a", "cli-top-b", waiting}
    assert failed not in ids(store)
    store.close()
