"""Everything stored is JSON; encoding round-trips."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import attrs
from hypothesis import given
from hypothesis import strategies as st

from crux_gen import SerializationError
from crux_gen.codec import decode, encode, structure

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
