"""A corrupt result row is a ``CorruptRecordError`` naming the flow, the position and
the column; never another value.

A resume decodes the recorded results of a whole history at once. Rows changed
outside crux_gen (two texts that are not JSON, but whose pieces would make JSON
together: ``[1`` then ``2],3``) must not replay as values nobody recorded, whether
the history is read from its rows or from the segment that packs its completed
prefix into one row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crux_gen import (
    CorruptRecordError,
    FlowContext,
    Step,
    Suspend,
    codec,
    flow,
    resume,
    signal_flow,
)
from crux_gen.replay import replay_check
from crux_gen.stores import segments

from .test_store_contract import set_segment
from .test_values import corrupt

#: Pairs of texts, neither one JSON, that read as JSON when joined by a comma in a list.
JOINABLE = [("[1", "2],3"), ('"a', 'b",7'), ('{"k":1', '"j":2},5')]

CALLS: list[str] = []


@flow("corrupt-join")
def four_steps(ctx: FlowContext) -> Any:
    seen = []
    for n in range(4):
        seen.append((yield Step(f"s{n}", lambda n=n: CALLS.append(f"s{n}") or n)))
    yield Suspend("go")
    return seen


@pytest.mark.parametrize(("first", "second"), JOINABLE)
def test_two_corrupt_results_never_replay_as_other_values(
    store: Any, tmp_path: Path, first: str, second: str
) -> None:
    r = four_steps.run(store=store)
    assert r.status == "suspended"
    corrupt(store, tmp_path, r.flow_id, "records", "result", first, "position", 1)
    corrupt(store, tmp_path, r.flow_id, "records", "result", second, "position", 2)
    signal_flow(r.flow_id, "go", None, store=store)
    CALLS.clear()
    with pytest.raises(CorruptRecordError) as caught:
        resume(r.flow_id, store=store)
    found = caught.value
    assert (found.flow_id, found.position, found.column) == (r.flow_id, 1, "result")
    assert CALLS == []  # no step ran again
    problem = replay_check(store.load(r.flow_id), four_steps.fn)  # crux-gen replay's check
    assert problem is not None and problem.kind == "corrupt" and problem.position == 1


@pytest.mark.parametrize(("first", "second"), JOINABLE)
def test_decode_many_never_joins_texts_into_other_values(first: str, second: str) -> None:
    with pytest.raises(CorruptRecordError) as caught:
        codec.decode_many(["0", first, second, "3"], flow_id="f-1")
    assert (caught.value.flow_id, caught.value.position, caught.value.column) == (
        "f-1",
        1,
        "result",
    )


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[1,NaN]"])
def test_a_constant_crux_gen_never_writes_is_corrupt(text: str) -> None:
    with pytest.raises(CorruptRecordError):
        codec.decode_stored(text, flow_id="f-1", position=0, column="result")
    with pytest.raises(CorruptRecordError):
        codec.decode_many(["1", text], flow_id="f-1")


def test_decode_many_still_reads_what_encode_wrote_and_padded_texts() -> None:
    texts = [codec.encode(v, what="v") for v in (1, "a,b", [1, [2]], {"k": "]"}, None)]
    assert codec.decode_many([*texts, None, " 2 "], flow_id="f") == [
        1, "a,b", [1, [2]], {"k": "]"}, None, None, 2,
    ]  # fmt: skip


@flow("corrupt-join-long")
def long_flow(ctx: FlowContext) -> Any:
    seen = []
    for n in range(segments.SEGMENT_MIN + 8):
        seen.append((yield Step(f"s{n}", lambda n=n: CALLS.append(f"s{n}") or n)))
    yield Suspend("go")
    return seen[:4]


@pytest.mark.parametrize(("first", "second"), JOINABLE[:2])
def test_a_segment_holding_two_corrupt_results_never_replays_other_values(
    store: Any, store_kind: str, first: str, second: str
) -> None:
    if store_kind == "memory":
        pytest.skip("MemoryStore keeps no segment")
    r = long_flow.run(store=store)
    assert r.status == "suspended"
    # The segment rewritten with a checksum that matches, as a bug in its writer might.
    texts = [str(n) for n in range(segments.SEGMENT_MIN + 8)]
    texts[1], texts[2] = first, second
    set_segment(store, store_kind, r.flow_id, checksum=True, results=segments.SEPARATOR.join(texts))
    signal_flow(r.flow_id, "go", None, store=store)
    CALLS.clear()
    with pytest.raises(CorruptRecordError) as caught:
        resume(r.flow_id, store=store)
    assert (caught.value.flow_id, caught.value.position, caught.value.column) == (
        r.flow_id,
        1,
        "result",
    )
    assert CALLS == []
