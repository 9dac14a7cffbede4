"""Everything stored is JSON; encoding round-trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crux_gen import ErrorInfo, SerializationError
from crux_gen.codec import MAX_DEPTH, decode, decode_many, encode, structure

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_equal(value: object) -> None:
    assert decode(encode(value, what="v")) == value


@attrs.frozen
class Plan:
    title: str
    due: datetime


@given(st.text(), st.datetimes(timezones=st.just(timezone.utc)))
def test_attrs_values_round_trip_through_a_schema(title: str, due: datetime) -> None:
    plan = Plan(title, due)
    assert structure(decode(encode(plan, what="plan")), Plan) == plan


def test_what_cannot_be_json_is_a_serialization_error_naming_the_value() -> None:
    for bad in (object(), {"x": float("nan")}, float("inf"), {1j: 2}, b"bytes"):
        try:
            encode(bad, what="step 'x'")
        except SerializationError as exc:
            assert "step 'x'" in str(exc)
            assert isinstance(exc, TypeError)
        else:
            raise AssertionError(f"{bad!r} was encoded")


def test_encoded_text_is_plain_json() -> None:
    text = encode({"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "n": {3, 1}}, what="v")
    assert json.loads(text) == {"when": "2026-01-01T00:00:00+00:00", "n": [1, 3]}


# -- the nesting limit, lone surrogates, odd exceptions ------------------------

bracket_text = st.lists(st.sampled_from(list('[]{}"\\a,:é')), max_size=6).map("".join)
shallow = st.recursive(
    st.none() | st.integers() | bracket_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(bracket_text, children, max_size=3)
    ),
    max_leaves=8,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(shallow, st.integers(MAX_DEPTH - 8, MAX_DEPTH + 3), shallow, st.booleans())
def test_encode_accepts_exactly_the_values_nested_up_to_the_limit(
    leaf: object, spine: int, sibling: object, as_dicts: bool
) -> None:
    # Strings full of brackets, quotes and backslashes must not fool the depth check.
    value: object = leaf
    for level in range(spine):
        value = {"k[": value, 's\\"': sibling} if as_dicts and level % 2 else [sibling, value]
    deep = depth_of(value)
    try:
        text = encode(value, what="v")
    except SerializationError as exc:
        assert deep > MAX_DEPTH
        assert f"deeper than {MAX_DEPTH}" in str(exc)
        return
    assert deep <= MAX_DEPTH
    assert decode(text) == value
    assert decode_many([text, text], flow_id="f") == [value, value]


def test_a_lone_surrogate_is_refused_wherever_it_hides() -> None:
    for bad in ("\udcff", {"k\ud800": 1}, ["ok", {"a": ["\udfff"]}]):
        with pytest.raises(SerializationError, match="lone surrogate"):
            encode(bad, what="v")
    assert decode(encode("é ✓ 𝄞", what="v")) == "é ✓ 𝄞"


def test_decode_reads_one_json_value_and_nothing_after_it() -> None:
    assert decode("[1, 2] ") == [1, 2]
    for bad in ("1 2", "[1]x", '{"a":1}}'):
        with pytest.raises(ValueError):
            decode(bad)


SELF_NESTED: list[object] = []
SELF_NESTED.append(SELF_NESTED)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize(
    "make",
    [
        lambda: ValueError("name caf\udcff.txt"),
        lambda: SerializationError("v", 10**5000, "too long"),
        lambda: SerializationError("v", SELF_NESTED, "it contains itself"),
        lambda: Unprintable("x"),
        lambda: KeyError(b"raw bytes"),
    ],
    ids=["surrogate", "huge int", "self-nested", "unprintable", "bytes arg"],
)
def test_any_exception_can_be_recorded(make: Callable[[], BaseException]) -> None:
    exc = make()
    info = ErrorInfo.from_exception(exc)
    text = info.encode()
    text.encode("utf-8")  # storable text, for every store
    back = ErrorInfo.decode(text)
    assert back is not None and back.type == info.type
