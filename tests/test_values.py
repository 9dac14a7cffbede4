"""Values at the edges of JSON, bad flow ids and corrupt stored rows, on every store.

Whatever the codec accepts, both stores keep and give back equal; whatever it
refuses is a ``SerializationError`` before any store sees it. Bad ids are
refused before anything is stored. A row changed outside crux_gen is a
``CorruptRecordError`` naming the flow, the position and the column.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crux_gen import (
    CorruptRecordError,
    CruxError,
    FlowContext,
    InvalidTypeError,
    InvalidValueError,
    MemoryStore,
    SerializationError,
    SQLiteStore,
    Step,
    Suspend,
    cancel_flow,
    codec,
    flow,
    get_flow,
    resume,
    signal_flow,
)
from crux_gen.flow import check_flow_id


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


BAD_VALUES = {
    "lone surrogate": {"name": "caf\udcff.txt"},
    "huge int": 10**5000,
    "deep list": nested(100_000),
    "too deep": nested(codec.MAX_DEPTH + 1),
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_value_json_cannot_keep_is_a_short_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError) as caught:
        codec.encode(value, what="the result of step 'x'")
    assert isinstance(caught.value, CruxError) and isinstance(caught.value, TypeError)
    message = str(caught.value)
    assert message.startswith("the result of step 'x' cannot be stored as JSON")
    assert len(message) < 1000
    message.encode("utf-8")  # the message itself is storable text


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_step_result_is_thrown_into_the_flow_on_every_store(store: Any, value: Any) -> None:
    calls: list[str] = []

    @flow("bad-result")
    def f(ctx: FlowContext) -> Any:
        try:
            yield Step("bad", lambda: calls.append("bad") or value)
        except SerializationError as exc:
            assert "bad" in str(exc)
            caught = "caught"
        yield Suspend("go")
        return caught

    r = f.run(store=store)
    assert r.status == "suspended"
    history = get_flow(r.flow_id, store=store).history
    assert all(h.state != "completed" for h in history if h.name == "bad")
    signal_flow(r.flow_id, "go", None, store=store)
    assert resume(r.flow_id, store=store).value == "caught"
    assert calls == ["bad"]


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_input_payload_or_return_value_stores_nothing_on_every_store(
    store: Any, value: Any
) -> None:
    @flow("bad-edges")
    def f(ctx: FlowContext) -> Any:
        if ctx.input == "return it":
            return value
        yield Suspend("go")

    with pytest.raises(SerializationError, match="input"):
        f.run(input=value, store=store)
    assert store.list_flows() == []

    r = f.run(store=store)
    with pytest.raises(SerializationError, match="payload"):
        signal_flow(r.flow_id, "go", value, store=store)
    assert get_flow(r.flow_id, store=store).signals == ()

    r = f.run(input="return it", store=store)
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "crux_gen.errors.SerializationError"
    info = get_flow(r.flow_id, store=store)
    assert (info.status, info.value) == ("failed", None)


def test_values_nested_up_to_the_limit_round_trip_through_a_flow(store: Any) -> None:
    deepest_list = nested(codec.MAX_DEPTH)
    deepest_dict: Any = "leaf"
    for _ in range(codec.MAX_DEPTH):
        deepest_dict = {"k": deepest_dict}
    seen: list[Any] = []

    @flow("deep")
    def f(ctx: FlowContext) -> Any:
        a = yield Step("list", lambda: deepest_list)
        b = yield Step("dict", lambda: deepest_dict)
        seen.append((a, b))
        payload = yield Suspend("go")
        return [payload == ctx.input, a == deepest_list]

    r = f.run(input=deepest_list, store=store)
    signal_flow(r.flow_id, "go", deepest_list, store=store)
    done = resume(r.flow_id, store=store)  # replays both results and the payload
    assert done.value == [True, True]
    assert seen == [(deepest_list, deepest_dict)] * 2
    info = get_flow(r.flow_id, store=store)
    assert info.input == deepest_list
    assert [h.result for h in info.history] == [deepest_list, deepest_dict, deepest_list]
    assert info.signals[0].payload == deepest_list


def test_the_nesting_limit_counts_containers_not_brackets_in_strings() -> None:
    text = "[" * (codec.MAX_DEPTH * 3)
    assert codec.decode(codec.encode({"s": text}, what="v")) == {"s": text}
    assert codec.decode_many([codec.encode(nested(codec.MAX_DEPTH), what="v")], flow_id="f") == [
        nested(codec.MAX_DEPTH)
    ]
    with pytest.raises(SerializationError, match=str(codec.MAX_DEPTH)):
        codec.encode({"a": nested(codec.MAX_DEPTH)}, what="v")


def past_the_decimal_limit(_: None) -> int:
    return 10**4400  # built when drawn: hypothesis cannot repr it as a constant


# Any JSON-ish value, odd strings (lone surrogates too) and ints past the
# decimal limit included: encode either refuses it, or it comes back equal.
# (st.text() leaves lone surrogates out whatever its alphabet: join characters instead)
odd_text = st.lists(
    st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=8
).map("".join)
odd_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.none().map(past_the_decimal_limit)
    | st.floats()
    | odd_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(odd_text, children, max_size=3)
    ),
    max_leaves=12,
)


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A store shared by the examples of one property test (each runs its own flow)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    s = SQLiteStore(tmp_path / "p.db", synchronous="NORMAL")
    yield s
    s.close()


@flow("keep-value")
def keep_value(ctx: FlowContext) -> Any:
    kept = yield Step("keep", lambda: ctx.input[0])
    again = yield Suspend("go")
    return [kept, again]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=odd_values)
def test_any_value_the_codec_accepts_comes_back_equal_from_either_store(
    any_store: Any, value: Any
) -> None:
    try:
        text = codec.encode(value, what="v")
    except SerializationError:
        text = None
    if text is None:
        with pytest.raises(SerializationError):
            keep_value.run(input=[value], store=any_store)
        return
    assert codec.decode(text) == value
    r = keep_value.run(input=[value], store=any_store)
    signal_flow(r.flow_id, "go", value, store=any_store)
    assert resume(r.flow_id, store=any_store).value == [value, value]
    info = get_flow(r.flow_id, store=any_store)
    assert info.input == [value]
    assert [h.result for h in info.history] == [value, value]


# -- flow ids -------------------------------------------------------------------


@flow("ids")
def ids_flow(ctx: FlowContext) -> Any:
    yield Suspend("go")


BAD_IDS: list[tuple[object, type[CruxError]]] = [
    (123, InvalidTypeError),
    (b"x", InvalidTypeError),
    (None, InvalidTypeError),
    (["a"], InvalidTypeError),
    ("", InvalidValueError),
    ("id-\udcff", InvalidValueError),
]

ID_CALLS: dict[str, Callable[[object, Any], Any]] = {
    "run(flow_id=)": lambda fid, s: ids_flow.run(flow_id=fid, store=s),  # type: ignore[arg-type]
    "run(resume=)": lambda fid, s: ids_flow.run(resume=fid, store=s),  # type: ignore[arg-type]
    "signal_flow": lambda fid, s: signal_flow(fid, "go", None, store=s),  # type: ignore[arg-type]
    "cancel_flow": lambda fid, s: cancel_flow(fid, "why", store=s),  # type: ignore[arg-type]
    "get_flow": lambda fid, s: get_flow(fid, store=s),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("call", ID_CALLS.values(), ids=ID_CALLS.keys())
def test_a_flow_id_that_is_not_a_non_empty_str_is_refused_and_nothing_is_stored(
    store: Any, call: Callable[[object, Any], Any]
) -> None:
    kept = ids_flow.run(store=store)
    for bad, error in BAD_IDS:
        if bad is None and call in (ID_CALLS["run(flow_id=)"], ID_CALLS["run(resume=)"]):
            continue  # None is their default: a new id, or no resume
        with pytest.raises(error) as caught:
            call(bad, store)
        assert isinstance(caught.value, TypeError if error is InvalidTypeError else ValueError)
        assert repr(bad) in str(caught.value)
    assert [f.id for f in store.list_flows()] == [kept.flow_id]
    assert get_flow(kept.flow_id, store=store).signals == ()


def test_check_flow_id_returns_a_good_id() -> None:
    assert check_flow_id("7f3a") == "7f3a"
    with pytest.raises(InvalidTypeError, match="123"):
        check_flow_id(123)


def test_a_bad_signal_name_is_refused_naming_it(store: Any) -> None:
    r = ids_flow.run(store=store)
    with pytest.raises(InvalidValueError, match="''"):
        signal_flow(r.flow_id, "", None, store=store)
    with pytest.raises(InvalidTypeError, match="42"):
        signal_flow(r.flow_id, 42, None, store=store)  # type: ignore[arg-type]
    assert get_flow(r.flow_id, store=store).signals == ()


# -- corrupt rows ---------------------------------------------------------------


def corrupt(store: Any, tmp_path: Path, flow_id: str, table: str, column: str, text: str,
            where: str = "", key: object = None) -> None:  # fmt: skip
    """Overwrite one stored column as something outside crux_gen might."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(tmp_path / "crux.db")
        id_column = "id" if table == "flows" else "flow_id"
        extra = f" AND {where} = ?" if where else ""
        params = (text, flow_id) + ((key,) if where else ())
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {id_column} = ?{extra}", params)
        conn.commit()
        conn.close()
        return
    if not isinstance(store, MemoryStore):  # PostgreSQL: its own connection, as psql would
        import psycopg

        id_column = "id" if table == "flows" else "flow_id"
        extra = f" AND {where} = %s" if where else ""
        params = (text, flow_id) + ((key,) if where else ())
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {store.schema}.{table} SET {column} = %s "  # type: ignore[arg-type]
                f"WHERE {id_column} = %s{extra}",
                params,
            )
        return
    if table == "flows":
        store._flows[flow_id][column] = text
    elif table == "records":
        rows = store._records[flow_id]
        rows[key] = rows[key]._replace(**{column: text})  # type: ignore[index, call-overload]
    else:
        signals = store._signals[flow_id]
        signals[key] = signals[key]._replace(**{column: text})  # type: ignore[index]


@flow("corruptible")
def corruptible(ctx: FlowContext) -> Any:
    yield Step("one", lambda: 1)
    with contextlib.suppress(KeyError):
        yield Step("two", lambda: {}["x"])
    yield Suspend("go")


CORRUPTIONS = [
    ("flows", "input", "", None, "{not json", None),
    ("flows", "result", "", None, "[1,", None),
    ("flows", "error", "", None, "[]", None),
    ("flows", "error", "", None, '"x"', None),
    ("records", "result", "position", 0, "not json", 0),
    ("records", "error", "position", 1, "[]", 1),
    ("records", "error", "position", 1, '"x"', 1),
    ("records", "error", "position", 1, "{", 1),
]


@pytest.mark.parametrize(("table", "column", "where", "key", "text", "position"), CORRUPTIONS)
def test_get_flow_on_a_corrupt_row_names_the_flow_position_and_column(
    store: Any, tmp_path: Path, table: str, column: str, where: str, key: Any, text: str,
    position: int | None,
) -> None:  # fmt: skip
    r = corruptible.run(store=store)
    corrupt(store, tmp_path, r.flow_id, table, column, text, where, key)
    with pytest.raises(CorruptRecordError) as caught:
        get_flow(r.flow_id, store=store)
    found = caught.value
    assert (found.flow_id, found.position, found.column) == (r.flow_id, position, column)
    assert r.flow_id in str(found)


def test_a_corrupt_signal_payload_is_named_by_get_flow(store: Any, tmp_path: Path) -> None:
    r = ids_flow.run(store=store)
    signal_flow(r.flow_id, "other", 1, store=store)
    signal_id = get_flow(r.flow_id, store=store).signals[0].id
    corrupt(store, tmp_path, r.flow_id, "signals", "payload", "{x", "id", signal_id)
    with pytest.raises(CorruptRecordError, match=f"signal #{signal_id}") as caught:
        get_flow(r.flow_id, store=store)
    assert caught.value.flow_id == r.flow_id


def test_resuming_on_a_corrupt_result_names_the_first_bad_position(
    store: Any, tmp_path: Path
) -> None:
    @flow("corrupt-resume")
    def f(ctx: FlowContext) -> Any:
        for n in range(4):
            yield Step(f"s{n}", lambda n=n: n)
        yield Suspend("go")

    r = f.run(store=store)
    corrupt(store, tmp_path, r.flow_id, "records", "result", "1,2", "position", 2)
    corrupt(store, tmp_path, r.flow_id, "records", "result", "oops", "position", 3)
    signal_flow(r.flow_id, "go", None, store=store)
    with pytest.raises(CorruptRecordError) as caught:
        resume(r.flow_id, store=store)
    assert (caught.value.flow_id, caught.value.position, caught.value.column) == (
        r.flow_id,
        2,
        "result",
    )


@pytest.mark.parametrize("text", ["{not json", "1 2", "[1,", "", "nan", '"\\ud800', "[" * 100_000])
def test_decode_stored_names_what_is_corrupt(text: str) -> None:
    with pytest.raises(CorruptRecordError) as caught:
        codec.decode_stored(text, flow_id="f-1", position=3, column="result")
    assert (caught.value.flow_id, caught.value.position, caught.value.column) == (
        "f-1",
        3,
        "result",
    )


def test_decode_stored_reads_what_encode_wrote() -> None:
    assert codec.decode_stored(None, flow_id="f", position=None, column="input") is None
    text = codec.encode({"a": [1, "é"]}, what="v")
    assert codec.decode_stored(text, flow_id="f", position=None, column="input") == {"a": [1, "é"]}
    assert codec.decode_stored(" 1 ", flow_id="f", position=0, column="result") == 1


def test_the_recursion_limit_is_far_above_the_nesting_limit() -> None:
    assert sys.getrecursionlimit() > codec.MAX_DEPTH * 3


def test_a_cancel_reason_no_store_can_keep_is_refused_and_the_flow_runs_on(store: Any) -> None:
    r = ids_flow.run(store=store)
    with pytest.raises(InvalidValueError, match="cancel reason"):
        cancel_flow(r.flow_id, "gone \udcff", store=store)
    assert get_flow(r.flow_id, store=store).status == "suspended"
    assert cancel_flow(r.flow_id, "gone", store=store)
