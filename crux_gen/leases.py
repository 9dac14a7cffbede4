"""The lease keeper: one thread per process renewing the leases of runs in progress."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores.base import Store

log = logging.getLogger("crux_gen")


class LeaseKeeper:
    """One daemon thread per process renewing the leases of the runs in progress,
    every third of their store's ``lease_ttl``, so a step longer than the lease keeps it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # (owner, flow id) -> (store, next renewal); a worker's batch claim gives its
        # flows one owner token, each flow its own lease.
        self._leases: dict[tuple[str, str], tuple[Store, float]] = {}
        self._pid = -1
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # A child inherits no threads: forget the parent's leases and lock.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._leases = {}
        self._pid = -1

    def hold(self, store: Store, flow_id: str, owner: str) -> None:
        """Keep renewing *owner*'s lease of *flow_id* until :meth:`drop`."""
        period = max(store.lease_ttl.total_seconds() / 3, 0.05)
        with self._lock:
            self._leases[owner, flow_id] = (store, time.monotonic() + period)
            if self._pid != os.getpid():  # first use, or a forked child: no thread yet
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="crux-lease-keeper", daemon=True).start()
        self._wake.set()

    def drop(self, flow_id: str, owner: str) -> None:
        """Stop renewing *owner*'s lease of *flow_id*."""
        with self._lock:
            self._leases.pop((owner, flow_id), None)

    def _loop(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            with self._lock:
                items = list(self._leases.items())
            now = time.monotonic()
            next_due = now + 1.0
            for (owner, flow_id), (store, due) in items:
                period = max(store.lease_ttl.total_seconds() / 3, 0.05)
                if due <= now:
                    try:
                        kept = store.renew(flow_id, owner, store.clock.time())
                    except Exception:  # a busy or closed store: try again next period
                        log.exception("renewing the lease of flow %s failed", flow_id)
                        kept = True
                    if not kept:
                        log.warning("flow %s: runner %s lost its lease", flow_id, owner)
                    due = now + period
                    with self._lock:
                        if (owner, flow_id) in self._leases:
                            self._leases[owner, flow_id] = (store, due)
                next_due = min(next_due, due)
            self._wake.clear()
            self._wake.wait(max(next_due - time.monotonic(), 0.01))


LEASES = LeaseKeeper()
