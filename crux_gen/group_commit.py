"""Group commit: the writes of flows run at the same time share one transaction.

A concurrent worker gives every flow it runs the same :class:`GroupCommit` in
place of its store. A runner's ``commit`` still returns only once its write is
durable (so a step's record is committed before that flow's next command runs),
but the writes queued by other runners meanwhile go into the same transaction:
one fsync for many steps.

The first runner to commit while no batch is being written leads: it writes the
queue (its own write among it) with ``Store.commit_many`` and hands each runner its
outcome. Runners that commit meanwhile queue up; when the batch is durable the
first of them leads the next one with all that queued. A runner alone pays no
wait: its write goes out at once, as a batch of one.

A write the store refuses (a lost lease, a conflict) fails only its own runner;
a failure of the store itself (``StoreError``: a full disk, a lost server) fails
every runner of that batch, and nothing of it was applied.

The check each runner makes before calling a step function (``check_lease``) is
batched the same way, through ``Store.check_leases``: one read answers every
runner ready at that moment, each with its own outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from .errors import CruxError, StoreError
from .records import Commit, CommitOutcome, LeaseCheck, StoredFlow, StoredSignal, Write
from .stores.caps import Caps, caps_of
from .stores.rules import ITEM_ERRORS

if TYPE_CHECKING:
    from crux_gen.clock import Clock
    from crux_gen.stores.base import Store

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Queued:
    """One runner's item waiting in a group's queue."""

    __slots__ = ("done", "item", "lead", "outcome", "shared")

    def __init__(self, item: object) -> None:
        self.item = item
        self.outcome: object = None
        self.shared = False  # the outcome is the whole batch's failure
        self.lead = False  # woken to lead the next batch rather than with an outcome
        # Held until the runner may go on: a bare lock is several times cheaper to
        # wait on and release than an Event (a Condition and a lock).
        self.done = threading.Lock()
        self.done.acquire()


class _Group(Generic[T, R]):
    """Leader/follower batching: the first caller while no batch is in progress
    runs the queue (its own item among it) with *run*; callers meanwhile queue up,
    and when the batch is done the first of them leads the next one."""

    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._busy = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> R:
        mine = _Queued(item)
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.acquire()
            if not mine.lead:
                return cast(R, _outcome(mine, led=False))
        self._lead(mine)
        return cast(R, _outcome(mine, led=True))

    def _lead(self, mine: _Queued) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            outcomes: Sequence[object] = self._run([cast(T, queued.item) for queued in batch])
        except BaseException as exc:  # nothing of the batch was applied
            outcomes = [exc] * len(batch)
            for queued in batch:
                queued.shared = True
        for queued, outcome in zip(batch, outcomes, strict=True):
            queued.outcome = outcome
        with self._lock:
            self.batches += 1
            self.items += len(batch)
            if self._queue:  # queued while this batch ran: the first leads next
                following = self._queue[0]
                following.lead = True
                following.done.release()
            else:
                self._busy = False
        for queued in batch:
            if queued is not mine:
                queued.done.release()


class GroupCommit:
    """*store* as the runners of one concurrent worker see it: ``commit`` calls
    made at the same time from different threads share one transaction, and their
    ``check_lease`` calls one read (``Store.check_leases``); every other call goes
    straight to *store*.

    >>> shared = GroupCommit(store)
    >>> shared.commit(flow_id, owner, now, write)   # from many threads at once

    ``batches`` and ``writes`` count what was committed (``writes / batches`` is
    how many writes shared a transaction, on average).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock: Clock = store.clock
        self.lease_ttl: timedelta = store.lease_ttl
        self.caps: Caps = caps_of(store)
        self._commits: _Group[Commit, CommitOutcome] = _Group(self._write_batch)
        self._checks: _Group[LeaseCheck, CommitOutcome] = _Group(self.check_leases)

    @property
    def batches(self) -> int:
        return self._commits.batches

    @property
    def writes(self) -> int:
        return self._commits.items

    # -- group commit -------------------------------------------------------------

    def commit(self, flow_id: str, owner: str, now: float, write: Write) -> CommitOutcome:
        """``Store.commit``, in the next batch: returns once the write is durable."""
        return self._commits.submit(Commit(flow_id, owner, now, write))

    def _write_batch(self, batch: list[Commit]) -> Sequence[CommitOutcome | BaseException]:
        if len(batch) == 1:  # alone: the store's own commit (its one-statement hot path)
            try:
                return [self.store.commit(*batch[0])]
            except ITEM_ERRORS as exc:
                return [exc]
        return self.store.commit_many(batch)

    def check_lease(self, flow_id: str, owner: str, now: float) -> CommitOutcome:
        """``Store.check_lease``, in the next batch of checks: checks made at the
        same time share one read (``Store.check_leases``)."""
        return self._checks.submit(LeaseCheck(flow_id, owner, now))

    def check_leases(self, batch: Sequence[LeaseCheck]) -> list[CommitOutcome | CruxError]:
        return self.store.check_leases(batch)

    # -- the rest of the store, unchanged ------------------------------------------

    def commit_many(self, batch: Sequence[Commit]) -> list[CommitOutcome | CruxError]:
        return self.store.commit_many(batch)

    def start(self, flow_id: str, name: str, input: str, owner: str, now: float) -> StoredFlow:
        return self.store.start(flow_id, name, input, owner, now)

    def claim(
        self, flow_id: str, owner: str, now: float, *, only_if_due: bool = False
    ) -> StoredFlow:
        return self.store.claim(flow_id, owner, now, only_if_due=only_if_due)

    def claim_due(
        self, now: float, limit: int, owner: str, *, exclude: Collection[str] = ()
    ) -> list[StoredFlow]:
        return self.store.claim_due(now, limit, owner, exclude=exclude)

    def renew(self, flow_id: str, owner: str, now: float) -> bool:
        return self.store.renew(flow_id, owner, now)

    def release(self, flow_id: str, owner: str) -> None:
        self.store.release(flow_id, owner)

    def load(self, flow_id: str) -> StoredFlow:
        return self.store.load(flow_id)

    def add_signal(
        self, flow_id: str, name: str, payload: str, now: float, *, key: str | None = None
    ) -> StoredSignal | None:
        return self.store.add_signal(flow_id, name, payload, now, key=key)

    def cancel(self, flow_id: str, reason: str, now: float) -> bool:
        return self.store.cancel(flow_id, reason, now)

    def due(self, now: float, limit: int) -> list[str]:
        return self.store.due(now, limit)

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"GroupCommit({self.store!r})"


def _outcome(queued: _Queued, *, led: bool) -> object:
    """The outcome of *queued*, or its error raised (*led*: this thread ran the batch)."""
    outcome = queued.outcome
    if not isinstance(outcome, BaseException):
        return outcome
    if not queued.shared or led:
        raise outcome  # the item's own refusal, or the leader's own error
    # One failure for the whole batch: every other runner raises its own copy.
    if isinstance(outcome, Exception):
        try:
            copy = type(outcome)(*outcome.args)
        except Exception:
            copy = StoreError(str(outcome))
        raise copy from outcome
    raise StoreError(
        f"the group commit of this write was interrupted ({type(outcome).__name__}); "
        "nothing of its batch was applied"
    ) from outcome
