"""Paging through ``list_flows`` on every store: ``before=`` the last ``FlowSummary``
of a page sees each flow exactly once, also when many flows share an update time
and when stored times fall between two microseconds (what a summary shows);
``before=`` a datetime gives exactly the flows updated strictly earlier, and a
loop paging that way ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from crux_gen import FlowSummary, list_flows
from crux_gen.clock import FakeClock

PAGE = 7


def stored_times(t: float) -> list[float]:
    """250 update times: one burst of 60 flows at a single instant, 100 flows a
    third of a microsecond apart (several share each shown microsecond, half of
    them round up to the next), and 90 flows a second apart, between microseconds."""
    burst = [t + 0.0000004] * 60
    close = [t + 5 + n * 0.00000033 for n in range(100)]
    apart = [t + 10 + n + 0.0000006 for n in range(90)]
    return burst + close + apart


@pytest.fixture
def flows(store: Any, clock: FakeClock) -> list[str]:
    ids = []
    for n, at in enumerate(stored_times(clock.time())):
        flow_id = f"f{n:03d}"
        store.start(flow_id, "paged", "null", "me", at)
        ids.append(flow_id)
    return ids


def test_paging_by_the_last_summary_sees_every_flow_exactly_once(
    store: Any, flows: list[str]
) -> None:
    seen: list[str] = []
    page = list_flows(store=store, limit=PAGE)
    for _ in range(len(flows)):  # a loop that never ends fails here instead
        seen += [s.flow_id for s in page]
        if len(page) < PAGE:
            break
        page = list_flows(store=store, limit=PAGE, before=page[-1])
    else:
        pytest.fail(f"paging did not end after {len(flows)} pages")
    assert sorted(seen) == sorted(flows)  # each flow once: none twice, none skipped
    everything = list_flows(store=store, limit=1000)
    assert seen == [s.flow_id for s in everything]  # newest first, ties by id descending
    ordered = [(s.updated_at, s.flow_id) for s in everything]
    assert ordered == sorted(ordered, reverse=True)


def test_paging_with_filters_by_the_last_summary(store: Any, flows: list[str]) -> None:
    seen: list[str] = []
    page = list_flows(store=store, name="paged", status="running", limit=PAGE)
    while page:
        seen += [s.flow_id for s in page]
        page = list_flows(store=store, name="paged", status="running", limit=PAGE, before=page[-1])
        assert len(seen) <= len(flows)
    assert sorted(seen) == sorted(flows)


def test_before_a_datetime_gives_the_flows_shown_strictly_earlier_and_paging_ends(
    store: Any, flows: list[str]
) -> None:
    everything = list_flows(store=store, limit=1000)
    seen: list[str] = []
    boundaries: set[datetime] = set()
    before: datetime | None = None
    for _ in range(len(flows)):
        page = list_flows(store=store, limit=PAGE, before=before)
        if before is not None:
            expected = [s for s in everything if s.updated_at < before][:PAGE]
            assert page == expected
        seen += [s.flow_id for s in page]
        if not page:
            break
        before = page[-1].updated_at
        boundaries.add(before)
    else:
        pytest.fail(f"paging did not end after {len(flows)} pages")
    assert len(seen) == len(set(seen))  # never a flow twice
    # The flows left out are those shown at the same instant as the last flow of
    # a page: "strictly earlier" leaves them out, by design.
    skipped = {s.flow_id for s in everything if s.flow_id not in seen}
    assert skipped == {
        s.flow_id for s in everything if s.updated_at in boundaries and s.flow_id not in seen
    }


def test_the_store_pages_by_the_exact_keyset_too(store: Any, flows: list[str]) -> None:
    seen: list[str] = []
    page = store.list_flows(limit=PAGE)
    while page:
        seen += [f.id for f in page]
        page = store.list_flows(limit=PAGE, before=(page[-1].updated_at, page[-1].id))
        assert len(seen) <= len(flows)
    assert sorted(seen) == sorted(flows)


def test_a_summary_made_by_hand_pages_from_its_shown_time(store: Any, flows: list[str]) -> None:
    [last] = list_flows(store=store, limit=1)
    by_hand = FlowSummary(
        flow_id=last.flow_id,
        name=last.name,
        status=last.status,
        waiting_for=None,
        wake_at=None,
        created_at=last.created_at,
        updated_at=last.updated_at,
    )
    assert by_hand == last
    after = list_flows(store=store, limit=3, before=by_hand)
    assert last.flow_id not in [s.flow_id for s in after]


@pytest.mark.parametrize(
    ("before", "error", "text"),
    [
        ("yesterday", TypeError, "'yesterday'"),
        (("x", 1.0), TypeError, "FlowSummary"),
        (datetime(2026, 1, 1), ValueError, "timezone-aware"),
    ],
)
def test_a_bad_before_is_refused_naming_it(
    store: Any, before: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        list_flows(store=store, before=before)


def test_a_limit_larger_than_any_store_takes_lists_everything(store: Any, flows: list[str]) -> None:
    assert len(list_flows(store=store, limit=10**30)) == len(flows)
    assert len(store.list_flows(limit=10**30)) == len(flows)


def test_the_dashboard_pages_by_the_exact_keyset_inside_a_burst(
    store: Any, clock: FakeClock
) -> None:
    """The dashboard's next-page link carries the last flow's exact keyset: a page
    may end inside a burst of flows updated at one instant, and never shows more
    than its size nor any flow twice."""
    flows = pytest.importorskip("crux_gen.ui.flows")
    at = clock.time() + 0.0000004
    ids = [f"b{n:03d}" for n in range(120)]
    for flow_id in ids:
        store.start(flow_id, "burst", "null", "me", at)
    seen: list[list[str]] = []
    link: Any = None
    while True:
        rows, link = flows.page_of(store, flows.Filters(text={}), link)
        seen.append([s.flow_id for s in rows])
        if link is None:
            break
        assert len(seen) <= 3
    assert [len(p) for p in seen] == [50, 50, 20]
    assert [i for p in seen for i in p] == sorted(ids, reverse=True)
