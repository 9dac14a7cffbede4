"""Pausing a flow that another process is running (real subprocesses on one SQLite
file, as ``tests/test_processes.py`` cancels one): it stops after the step in hand,
nothing runs it while it is paused, and once unpaused another process finishes it
without running a recorded step twice."""

from __future__ import annotations

from crux_gen import SQLiteStore, get_flow, pause_flow, unpause_flow

from .test_processes import Procs, procs, wait_for

__all__ = ["procs"]  # the subprocess fixture of tests/test_processes.py


def test_a_flow_paused_from_another_process_stops_after_the_step_in_hand(procs: Procs) -> None:
    flow_id = "paused-1"
    a = procs.spawn(
        "start", "--log", procs.log, "--steps", "3", "--flow-id", flow_id, sleep={"step-2": 0.5}
    )
    wait_for(lambda: procs.step_times(flow_id, "start")["step-2"], "step-2 to start")
    store = SQLiteStore(procs.db)
    assert pause_flow(flow_id, store=store) is True

    [ran] = procs.finish(a)

    assert ran["outcome"] == "paused"
    info = get_flow(flow_id, store=store)
    assert info.status == "paused"
    assert [(h.name, h.state) for h in info.history] == [
        ("step-1", "completed"),
        ("step-2", "completed"),  # the step in hand finished and was recorded
    ]
    assert store.load(flow_id).lease_owner is None  # let go at once: nothing holds it
    [held] = procs.run("resume", flow_id)
    assert held["outcome"] == "paused"  # another process does not run it meanwhile
    assert procs.step_times(flow_id, "start") == {"step-1": 1, "step-2": 1}

    assert unpause_flow(flow_id, store=store) is True
    [done] = procs.run("resume", flow_id)
    assert done["outcome"] == "completed"
    assert procs.step_times(flow_id) == {"step-1": 1, "step-2": 1, "step-3": 1}
