"""What a user relies on from lease renewal: a renewal the store fails (busy, a lost
connection) is logged and tried again, so a step longer than the lease keeps it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from crux_gen import (
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
    """A store (on the system clock) whose first lease renewal fails."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.renewals: list[str] = []

    def renew(self, *args: Any, **kwargs: Any) -> bool:
        if not self.renewals:
            self.renewals.append("failed")
            raise StoreBusyError("crux.db stayed locked past the busy timeout")
        kept = super().renew(*args, **kwargs)
        self.renewals.append("kept" if kept else "lost")
        return kept


def test_a_failed_renewal_is_logged_and_retried_so_a_long_step_keeps_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # lease_ttl 1.5s: renewals every 0.5s; the one at 0.5s fails, the one at 1s keeps it.
    store = FlakyRenewStore(lease_ttl="1.5s")
    calls: list[str] = []

    @flow("long-step", registry=Registry())
    def long_step(ctx: FlowContext) -> Any:
        def slow() -> str:
            calls.append("slow")
            time.sleep(2.4)
            return "done"

        return (yield Step("slow", slow))

    results: list[Any] = []
    runner = threading.Thread(
        target=lambda: results.append(long_step.run(store=store, flow_id="f-1"))
    )
    with caplog.at_level(logging.WARNING, logger="crux_gen"):
        runner.start()
        time.sleep(1.9)  # past the first lease's end: only a renewal keeps it now
        with pytest.raises(FlowBusyError):
            resume("f-1", store=store, flows=[long_step])
        runner.join(timeout=30)

    assert [r.status for r in results] == ["completed"] and results[0].value == "done"
    assert calls == ["slow"]
    assert store.renewals[0] == "failed" and "kept" in store.renewals[1:]
    assert "lost" not in store.renewals
    [failed] = [r for r in caplog.records if "renewing the lease" in r.getMessage()]
    assert "f-1" in failed.getMessage() and failed.exc_info is not None
    assert not [r for r in caplog.records if "lost its lease" in r.getMessage()]
