"""Workers on PostgreSQL, for real: many worker processes (stand-ins for hosts)
sharing one database, and a signal waking an idle worker through NOTIFY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crux_gen import FlowContext, Registry, Step, Suspend, flow, get_flow, signal_flow
from crux_gen.worker import Worker
from tests import pg

REPO = Path(__file__).resolve().parent.parent


def test_a_signal_wakes_an_idle_worker_at_once(pg_server: pg.Server, pg_schema: str) -> None:
    PostgresStore = pg.store_class()
    registry = Registry()

    @flow("pg-wake", registry=registry)
    def waits(ctx: FlowContext) -> Any:
        return (yield Suspend("go"))

    store = PostgresStore(pg_server.url, schema=pg_schema)
    r = waits.run(store=store)
    worker = Worker(store, [waits])
    runner = threading.Thread(target=worker.run_forever, args=("60s",))  # polls once a minute
    runner.start()
    try:
        time.sleep(0.5)  # its first pass found nothing due; now it sleeps on the poll
        sender = PostgresStore(pg_server.url, schema=pg_schema)  # another pool: "another host"
        sent = time.monotonic()
        signal_flow(r.flow_id, "go", "now", store=sender)
        while get_flow(r.flow_id, store=store).status != "completed":
            assert time.monotonic() - sent < 10, "the worker was not woken by the signal"
            time.sleep(0.02)
        sender.close()
    finally:
        worker.stop()
        runner.join(10)
        store.close()
    assert get_flow(r.flow_id, store=store).value == "now"


def test_eight_worker_processes_complete_2000_flows_each_step_once(
    pg_server: pg.Server, pg_schema: str, tmp_path: Path
) -> None:
    PostgresStore = pg.store_class()
    store = PostgresStore(pg_server.url, schema=pg_schema)
    n = 2000
    now = store.clock.time()
    # 2,000 flows as a crashed web tier leaves them: running, nobody holding them.
    pg_server.execute(
        f"INSERT INTO {pg_schema}.flows (id, name, status, input, created_at, updated_at) "
        "SELECT 'f' || lpad(g::text, 5, '0'), 'pg-two-steps', 'running', 'null', %s, %s "
        "FROM generate_series(1, %s) g",
        (now, now, n),
    )
    log = str(tmp_path / "steps.log")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pg_flows", pg_server.url, pg_schema, log],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        deadline = time.monotonic() + 240
        while True:
            [(left,)] = pg_server.execute(
                f"SELECT count(*) FROM {pg_schema}.flows WHERE status <> 'completed'"
            )
            if left == 0:
                break
            assert time.monotonic() < deadline, f"{left} flows left unfinished"
            for w in workers:
                assert w.poll() is None, w.communicate()[1]
            time.sleep(0.25)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        outs = [w.communicate(timeout=30) for w in workers]
    assert [w.returncode for w in workers] == [0] * 8, [err for _, err in outs]

    ran: Counter[tuple[str, str]] = Counter()
    by_pid: Counter[str] = Counter()
    for path in tmp_path.glob("steps.log.*"):
        for line in path.read_text().splitlines():
            flow_id, step, pid = line.split()
            ran[(flow_id, step)] += 1
            by_pid[pid] += 1
    assert len(ran) == 2 * n  # every step of every flow ran...
    assert max(ran.values()) == 1  # ...exactly once
    assert len(by_pid) >= 2  # and the work was shared
    [(leased,)] = pg_server.execute(
        f"SELECT count(*) FROM {pg_schema}.flows WHERE lease_owner IS NOT NULL"
    )
    assert leased == 0
    [(records,)] = pg_server.execute(f"SELECT count(*) FROM {pg_schema}.records")
    assert records == 2 * n
    store.close()


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="crux_gen")


def test_workers_carry_on_when_the_server_goes_away_and_comes_back(
    pg_server: pg.Server, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    PostgresStore = pg.store_class()
    registry = Registry()
    ran: Counter[tuple[str, str]] = Counter()

    @flow("pg-outage", registry=registry)
    def two(ctx: FlowContext) -> Any:
        def step(name: str) -> str:
            ran[(ctx.flow_id, name)] += 1
            time.sleep(0.002)
            return name

        yield Step("one", lambda: step("one"))
        return (yield Step("two", lambda: step("two")))

    direct = PostgresStore(pg_server.url, schema=pg_schema)
    n = 300
    now = direct.clock.time()
    pg_server.execute(
        f"INSERT INTO {pg_schema}.flows (id, name, status, input, created_at, updated_at) "
        "SELECT 'o' || lpad(g::text, 4, '0'), 'pg-outage', 'running', 'null', %s, %s "
        "FROM generate_series(1, %s) g",
        (now, now, n),
    )
    with pg.Proxy(pg_server.url) as proxy:
        store = PostgresStore(proxy.url, schema=pg_schema, lease_ttl="2s", connect_timeout="300ms")
        worker = Worker(store, [two], batch=20)
        runner = threading.Thread(target=worker.run_forever, args=("100ms",))
        runner.start()
        try:
            while len(ran) < 100:  # some flows done, the rest to come
                time.sleep(0.01)
            proxy.close()  # the server goes away mid-run...
            time.sleep(1.5)
            proxy.open()  # ...and comes back
            deadline = time.monotonic() + 60
            while (left := len(direct.list_flows(status="running", limit=1000))) > 0:
                assert time.monotonic() < deadline, f"{left} flows never completed"
                time.sleep(0.1)
        finally:
            worker.stop()
            runner.join(30)
            store.close()
    completed = direct.list_flows(status="completed", limit=1000)
    assert len(completed) == n  # no flow lost
    assert len(ran) == 2 * n
    # A step whose result was recorded never ran again; only a step cut off by the
    # outage between its call and its commit may have run twice (at least once).
    assert sum(count - 1 for count in ran.values()) <= 2
    assert any("failed" in r.getMessage() for r in caplog.records if r.levelname != "DEBUG")
    direct.close()
