"""Commands and durations are checked where they are written."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crux_gen import Retry, Sleep, Step, Suspend, WaitUntil, to_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("10s", timedelta(seconds=10)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
        ("1.5h", timedelta(minutes=90)),
        (timedelta(minutes=3), timedelta(minutes=3)),
        (90, timedelta(seconds=90)),
        (0.25, timedelta(milliseconds=250)),
    ],
)
def test_durations_are_parsed(text: object, expected: timedelta) -> None:
    assert to_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon-ish", "10 years", "", "-5s", -1, float("nan"), True, None])
def test_a_bad_duration_is_a_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        to_duration(bad)


def test_a_bad_timeout_fails_where_the_command_is_written() -> None:
    with pytest.raises(ValueError, match=r"Suspend timeout 'soon-ish' is not a duration"):
        Suspend("x", timeout="soon-ish")
    with pytest.raises(ValueError, match="Sleep duration"):
        Sleep("x", "forever")
    with pytest.raises(ValueError, match="WaitUntil every"):
        WaitUntil("x", lambda: True, every="often")


def test_commands_check_names_and_callables() -> None:
    with pytest.raises(ValueError, match="name ''"):
        Step("", lambda: 1)
    with pytest.raises(TypeError, match="callable"):
        Step("x", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Retry"):
        Step("x", lambda: 1, retry=3)  # type: ignore[arg-type]


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts 0"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="backoff 'random'"):
        Retry(backoff="random")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an exception class"):
        Retry(retry_on=(int,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backoff", "waits"),
    [
        ("fixed", [2, 2, 2, 2]),
        ("linear", [2, 4, 6, 8]),
        ("exponential", [2, 4, 8, 10]),
    ],
)
def test_retry_delays_follow_the_backoff_and_the_cap(backoff: str, waits: list[int]) -> None:
    retry = Retry(attempts=9, backoff=backoff, delay="2s", max_delay="10s")  # type: ignore[arg-type]
    assert [retry.delay_after(n).total_seconds() for n in range(1, 5)] == waits


def test_attempts_count_the_first_try() -> None:
    retry = Retry(attempts=3)
    assert retry.should_retry(ValueError(), 1)
    assert retry.should_retry(ValueError(), 2)
    assert not retry.should_retry(ValueError(), 3)
