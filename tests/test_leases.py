"""What a user relies on from lease renewal: a renewal the store fails (busy, a lost
connection) is logged and tried again, so a step longer than the lease keeps it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from crux_gen import (
    FakeClock,
    FlowBusyError,
    FlowContext,
    MemoryStore,
    Registry,
    Step,
    StoreBusyError,
    flow,
    resume,
)


class FlakyRenewStore(MemoryStore):
    """A store whose first lease renewal fails."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.renewals: list[str] = []
        self.changed = threading.Condition()

    def renew(self, *args: Any, **kwargs: Any) -> bool:
        with self.changed:
            try:
                if not self.renewals:
                    self.renewals.append("failed")
                    raise StoreBusyError("crux.db stayed locked past the busy timeout")
                kept = super().renew(*args, **kwargs)
                self.renewals.append("kept" if kept else "lost")
                return kept
            finally:
                self.changed.notify_all()

    def wait_for(self, renewals: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.renewals) >= renewals, timeout=60)


def test_a_failed_renewal_is_logged_and_retried_so_a_long_step_keeps_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # lease_ttl 1.5s: renewals every 0.5s of real time. The store's clock is a
    # FakeClock the test moves on between renewals, so no load can make a renewal late:
    # the one at 1s (fake) fails, the one at 1.2s keeps it; at 1.9s, past the first
    # lease's end, only that renewal holds it.
    clock = FakeClock()
    store = FlakyRenewStore(lease_ttl="1.5s", clock=clock)
    calls: list[str] = []
    started, release = threading.Event(), threading.Event()

    @flow("long-step", registry=Registry())
    def long_step(ctx: FlowContext) -> Any:
        def slow() -> str:
            calls.append("slow")
            started.set()
            assert release.wait(timeout=60)
            return "done"

        return (yield Step("slow", slow))

    results: list[Any] = []
    runner = threading.Thread(
        target=lambda: results.append(long_step.run(store=store, flow_id="f-1"))
    )
    with caplog.at_level(logging.WARNING, logger="crux_gen"):
        runner.start()
        assert started.wait(timeout=60)  # the lease was taken at 0s
        clock.advance(1.0)
        store.wait_for(renewals=1)  # failed
        clock.advance(0.2)
        store.wait_for(renewals=2)  # kept: until 2.7s
        clock.advance(0.7)  # past the first lease's end: only the renewal keeps it now
        with pytest.raises(FlowBusyError):
            resume("f-1", store=store, flows=[long_step])
        release.set()
        runner.join(timeout=30)

    assert [r.status for r in results] == ["completed"] and results[0].value == "done"
    assert calls == ["slow"]
    assert store.renewals[0] == "failed" and "kept" in store.renewals[1:]
    assert "lost" not in store.renewals
    [failed] = [r for r in caplog.records if "renewing the lease" in r.getMessage()]
    assert "f-1" in failed.getMessage() and failed.exc_info is not None
    assert not [r for r in caplog.records if "lost its lease" in r.getMessage()]
