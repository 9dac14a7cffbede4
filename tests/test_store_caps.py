"""What a store declares (``Caps``) and how callers find it out without probing:
``caps_of`` for a store without ``caps``, ``missing_members`` for "is this a store",
and the executor batching a round's lease checks through ``check_leases``.

The per-store side (each store's own ``caps``, ``check_leases`` on memory, SQLite and
PostgreSQL) is in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from crux_gen import FlowContext, Registry, Step, flow
from crux_gen.clock import FakeClock
from crux_gen.errors import CruxError, InvalidTypeError
from crux_gen.migrate import MigrationStore
from crux_gen.records import CommitOutcome, LeaseCheck, StoredFlow
from crux_gen.stores.base import Store, StoreAdmin
from crux_gen.stores.caps import Caps, caps_of, missing_members
from crux_gen.stores.memory import MemoryStore
from crux_gen.worker import Worker, describe_store


class Forwarding:
    """A user's wrapper: every attribute is its store's."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class OwnStore(MemoryStore):
    """A store of a user's own that declares nothing: no ``caps``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caps = None  # type: ignore[assignment]


def test_caps_of_a_store_without_caps_names_its_class_and_declares_nothing() -> None:
    assert caps_of(object()) == Caps(where="object")
    assert caps_of(OwnStore()) == Caps(where="OwnStore", wakeups=False, counts=False)

    class Odd:
        caps = "everything"  # not a Caps: not believed

    assert caps_of(Odd()) == Caps(where="Odd")


def test_caps_of_a_forwarding_wrapper_are_its_stores() -> None:
    inner = MemoryStore()
    assert caps_of(Forwarding(inner)) is inner.caps
    assert inner.caps == Caps(
        where="MemoryStore",
        counts=True,
        browses=True,
        schedules=True,
        limits=True,
        signals=True,
        forks=True,
        streams=True,
    )


def test_missing_members_names_what_an_object_lacks_in_declared_order() -> None:
    lacking = missing_members(object(), Store)
    assert lacking[:2] == ["clock", "lease_ttl"]  # the protocol's data first, then methods
    assert lacking.index("start") < lacking.index("check_leases") < lacking.index("close")
    assert "caps" not in lacking  # caps_of stands in for it
    assert missing_members(MemoryStore(), Store) == []
    assert missing_members(Forwarding(MemoryStore()), Store) == []  # through __getattr__
    assert missing_members(OwnStore(), Store) == []
    # A protocol's own members come before those of the protocols it extends.
    both = missing_members(object(), MigrationStore)
    assert both.index("close") < both.index("list_flows")
    assert set(missing_members(object(), StoreAdmin)) < set(both)


def test_missing_members_wants_methods_callable() -> None:
    class NotCallable(Forwarding):
        load = "a field, not a method"

    assert missing_members(NotCallable(MemoryStore()), Store) == ["load"]


def test_a_worker_takes_a_store_without_caps_and_names_it_by_its_class() -> None:
    store = OwnStore()
    worker = Worker(store, [])
    assert describe_store(worker.store) == "OwnStore, lease_ttl 30s"
    with pytest.raises(InvalidTypeError, match="is not a store"):
        Worker(Forwarding(object()), [])  # type: ignore[arg-type]


def test_a_forwarding_wrapper_is_described_as_its_store(tmp_path: Any) -> None:
    from crux_gen.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "crux.db")
    try:
        expected = f"SQLiteStore({store.path!r}), lease_ttl 30s"
        assert describe_store(store) == expected
        assert describe_store(Forwarding(store)) == expected  # type: ignore[arg-type]
    finally:
        store.close()


def test_the_lease_checks_of_a_round_are_one_check_leases(clock: FakeClock) -> None:
    """Flows a worker claimed, each about to call its first step with nothing to
    write first: their leases are checked in one ``check_leases`` (a store that
    never had ``lease_rows``), each with its own outcome: a cancelled flow stops,
    one whose lease another runner took is left to it, and no step of either runs."""
    called: list[str] = []

    @flow("caps-checked", registry=Registry())
    def checked(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: called.append(ctx.flow_id)))

    class Checked(MemoryStore):
        reads: ClassVar[list[list[str]]] = []

        def claim_due(self, *args: Any, **kwargs: Any) -> list[StoredFlow]:
            claimed = super().claim_due(*args, **kwargs)
            if claimed:  # meanwhile: one is cancelled, another's lease is taken
                self.cancel("cancelled", "stop", clock.time())
                owner = self.load("lost").lease_owner
                assert owner is not None
                self.release("lost", owner)
                self.claim("lost", "thief", clock.time())
            return claimed

        def check_leases(self, batch: Sequence[LeaseCheck]) -> list[CommitOutcome | CruxError]:
            self.reads.append(sorted(check.flow_id for check in batch))
            return super().check_leases(batch)

    store = Checked(clock=clock)
    names = ["cancelled", "lost", "ok1", "ok2"]
    for flow_id in names:
        store.start(flow_id, checked.name, "null", "queue", clock.time())
        store.release(flow_id, "queue")
    assert Worker(store, [checked], concurrency=4).run_once() == 3
    assert store.reads == [names]  # one read for the four
    assert sorted(called) == ["ok1", "ok2"]
    assert [store.load(n).status for n in names] == [
        "cancelled",
        "running",
        "completed",
        "completed",
    ]
    assert store.load("lost").lease_owner == "thief"


def test_the_worker_listens_only_to_a_store_that_declares_wakeups(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store with ``wait_for_wake`` but no ``wakeups`` in its caps is polled; one
    that declares them is listened to."""
    calls: list[float] = []

    class Announcing(MemoryStore):
        def __init__(self, wakeups: bool) -> None:
            super().__init__(clock=clock)
            self.caps = Caps(where="Announcing", wakeups=wakeups)

        def wait_for_wake(self, timeout: float) -> bool:
            calls.append(timeout)
            time.sleep(0.01)
            return False

    for declared in (False, True):
        calls.clear()
        worker = Worker(Announcing(declared), [])
        stop = threading.Timer(0.3, worker.stop)
        stop.start()
        with caplog.at_level(logging.INFO, logger="crux_gen.worker"):
            worker.run_forever(poll="50ms")
        stop.join()
        assert bool(calls) is declared, (declared, calls)
    assert any("worker started on Announcing, lease_ttl 30s" in m for m in caplog.messages)
