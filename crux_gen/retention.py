"""Retention: ``@flow(..., retention="30d")`` keeps a store from growing forever.

>>> @flow("onboarding", retention="30d")
... def onboarding(ctx): ...
>>> Worker(store=store).run_once()   # also deletes onboarding flows finished > 30 days ago

Each worker pass (``worker.py``, after firing schedules and before claiming)
deletes the finished flows (completed, failed, cancelled, expired) of every flow
name it registers with a retention, whose ``updated_at`` is older than the
store's clock minus that retention, with their history (every run) and signals:
``StoreAdmin.prune(before, name=..., limit=...)``, so what ``prune`` never
deletes, retention never deletes either: an unfinished flow, or a finished child
whose parent is unfinished (it may still wait for the child's end). Such a child
goes at a later pass, once its parent has finished.

The work is small and bounded so that a pass never holds up the flows it runs:

- A pass deletes at most ``batch`` flows (``Worker(retention_batch=...)``,
  default :data:`BATCH`), in one short transaction per name (one per batch: a
  SQL store selects the oldest ones through the ``flows_by_name`` index, and
  deletes them with their rows).
- A name is looked at again :data:`EVERY` seconds (by the store's clock) after a
  batch that was not full: with nothing old, a pass costs one dict lookup per
  name, and the store is asked once a minute. A full batch means more may be
  old: the next pass goes on at once, so a backlog drains a batch per pass.
- Names are taken oldest-look first, so one name with a large backlog does not
  starve the others of the pass's budget.

Workers may do this at once: every prune is its own transaction (SQLite holds
the file; PostgreSQL locks the rows it takes and skips rows another worker
holds), so each flow is deleted and counted once. A store error is logged and
that name is tried again after :data:`EVERY`; the pass goes on.

The flows a worker applies retention to are those it can run: its ``flows=[...]``,
then every name of the ``@flow`` registry that those do not name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from .durations import format_duration
from .errors import InvalidTypeError, InvalidValueError, StoreError
from .flow import Flow, default_registry
from .stores.base import Store, StoreAdmin

log = logging.getLogger("crux_gen.worker")

#: How many finished flows one worker pass deletes at most (``Worker(retention_batch=)``).
BATCH = 200
#: Seconds (store clock) before a name whose last batch was not full is looked at again.
EVERY = 60.0


class Retention:
    """A worker's retention: which names to look at in this pass, and the batch.

    >>> r = Retention(batch=200)
    >>> r.run(store, flows, store.clock.time())   # how many flows it deleted
    0
    """

    def __init__(self, batch: int = BATCH, every: float = EVERY) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise InvalidTypeError(
                "Worker retention_batch", batch, "is not an int; give an int of 1 or more"
            )
        if batch < 1:
            raise InvalidValueError("Worker retention_batch", batch, "must be an int of 1 or more")
        self.batch = batch
        self.every = every
        #: How many flows this worker's retention deleted, in every pass so far.
        self.deleted = 0
        #: flow name -> store-clock time to look for its old flows again.
        self._next: dict[str, float] = {}

    def run(self, store: Store, flows: Iterable[Flow[Any]], now: float) -> int:
        """Delete, for each flow of *flows* with a retention whose turn has come, its
        finished flows last updated before *now* minus that retention, at most
        ``batch`` in all; return how many were deleted."""
        kept = {f.name: f for f in flows if f.retention is not None}
        if not kept or not isinstance(store, StoreAdmin):
            return 0  # (a store without the operator's side: nothing to delete with)
        prune = store.prune
        turns = sorted((self._next.get(name, -math.inf), name) for name in kept)
        left, deleted = self.batch, 0
        for when, name in turns:
            if when > now or left <= 0:
                continue
            keep = kept[name].retention
            assert keep is not None
            before = now - keep.total_seconds()
            try:
                gone = int(prune(before, name=name, limit=left))
            except StoreError as exc:
                log.warning(
                    "retention of %r: %s; trying again in %s",
                    name, exc, format_duration(self.every),
                )  # fmt: skip
                self._next[name] = now + self.every
                continue
            # A full batch: more may be old, go on at the next pass.
            self._next[name] = now if gone >= left else now + self.every
            left -= gone
            deleted += gone
            self.deleted += gone
            if gone:
                log.info(
                    "retention: deleted %d finished %s of %r last updated over %s ago",
                    gone, "flow" if gone == 1 else "flows", name, format_duration(keep),
                    extra={"flow_name": name, "deleted": gone},
                )  # fmt: skip
        return deleted


def retained_flows(flows: Iterable[Flow[Any]]) -> list[Flow[Any]]:
    """The flows a worker given *flows* runs: those, then every registered flow
    whose name they do not take (as ``runner.find_flow`` finds a flow's code)."""
    given = list(flows)
    names = {f.name for f in given}
    return given + [default_registry.get(n) for n in default_registry.names() if n not in names]
