"""Events and streams across real processes on one SQLite file: a reader in this
process gets a step's stream values while another process runs the flow; a body's
stream writes and events survive a killed process and its replay elsewhere, each
stored once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from crux_gen import get_event, read_stream
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]

FLOWS = textwrap.dedent(
    """
    import os, sys, time
    from crux_gen import Step, flow, write_stream
    from crux_gen.stores.sqlite import SQLiteStore

    def slow_tokens(n):
        for i in range(n):
            write_stream("tok", i)
            time.sleep(0.1)
        return n

    @flow("pr-live")
    def live(ctx):
        n = yield Step("gen", lambda: slow_tokens(ctx.input))
        ctx.close_stream("tok")
        return n

    def maybe_die():
        if os.environ.get("DIE") == "1":
            os._exit(3)  # killed mid-step: nothing after the last write is stored
        return "ok"

    @flow("pr-crash")
    def crash(ctx):
        ctx.write_stream("log", "before")
        ctx.set_event("phase", "one")
        yield Step("first", lambda: 1)
        ctx.write_stream("log", "between")
        ctx.set_event("phase", "two")
        yield Step("second", lambda: 2)
        ctx.write_stream("log", "after")
        yield Step("third", maybe_die)
        ctx.write_stream("log", "end")
        ctx.set_event("phase", "done")
        return "finished"

    if __name__ == "__main__":
        store = SQLiteStore(sys.argv[1], lease_ttl=os.environ.get("LEASE", "30s"))
        which = {"live": live, "crash": crash}[sys.argv[2]]
        if sys.argv[3] == "run":
            r = which.run(input=int(sys.argv[4]) if len(sys.argv) > 4 else None,
                          store=store, flow_id=sys.argv[2] + "-1")
        else:
            from crux_gen import resume
            r = resume(sys.argv[2] + "-1", store=store, flows=[which])
        print(r.status)
    """
)


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    (tmp_path / "prflows.py").write_text(FLOWS)
    environ = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "prflows.py"), str(tmp_path / "c.db"), *args],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_reader_here_gets_values_another_process_writes_as_they_land(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "c.db").close()  # created before either process opens it
    proc = run(tmp_path, "live", "run", "5")
    store = SQLiteStore(tmp_path / "c.db")
    try:
        for _ in range(500):
            try:
                reading = read_stream("live-1", "tok", store=store, timeout=20)
                first = next(reading)
                break
            except Exception:  # not created yet
                time.sleep(0.01)
        assert first == 0
        assert proc.poll() is None  # the writer is still at work
        assert [first, *reading] == [0, 1, 2, 3, 4]
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == "completed", err
    finally:
        if proc.poll() is None:
            proc.kill()
        store.close()


def test_a_killed_process_and_the_replay_elsewhere_store_each_body_write_once(
    tmp_path: Path,
) -> None:
    dead = run(tmp_path, "crash", "run", env={"DIE": "1", "LEASE": "1s"})
    dead.communicate(timeout=60)
    assert dead.returncode == 3
    store = SQLiteStore(tmp_path / "c.db")
    try:
        # Stored with the steps' writes: "after" went with the second step's result.
        assert list(read_stream("crash-1", "log", store=store, timeout=0)) == [
            "before",
            "between",
            "after",
        ]
        assert get_event("crash-1", "phase", store=store) == "two"
        time.sleep(1.2)  # the dead runner's lease lapses
        again = run(tmp_path, "crash", "resume")
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0 and out.strip() == "completed", err
        assert list(read_stream("crash-1", "log", store=store)) == [
            "before",
            "between",
            "after",
            "end",
        ]
        assert get_event("crash-1", "phase", store=store) == "done"
        assert [r.seq for r in store.flow_streams("crash-1")] == [1, 2, 3, 4]
    finally:
        store.close()
