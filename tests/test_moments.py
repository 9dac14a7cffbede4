"""``durations.moment_of``: the one reading of "an age or an ISO time" that the CLI's
``--since``/``--until``/``--before`` and the dashboard's time filters share."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crux_gen.durations import moment_of
from crux_gen.errors import InvalidValueError

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - timedelta(hours=1)),
        (" 2d ", NOW - timedelta(days=2)),
        ("90", NOW - timedelta(seconds=90)),  # plain digits are seconds
        ("2026-11-24T08:30:00Z", datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)),
        ("2026-11-24T08:30:00z", datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)),
        ("2026-11-24T08:30:00", datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)),  # naive: UTC
        ("2026-11-24T09:30:00+01:00", datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)),
    ],
)
def test_an_age_or_an_iso_time_is_a_moment(text: str, expected: datetime) -> None:
    assert moment_of(text, NOW, what="--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "", "Z", "99999999999999d"])
def test_anything_else_is_refused_naming_the_option_and_the_value(text: str) -> None:
    with pytest.raises(InvalidValueError) as refused:
        moment_of(text, NOW, what="--until")
    assert str(refused.value).startswith(f"--until {text!r} is")
