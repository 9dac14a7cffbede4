"""Commands and durations are checked where they are written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crux_gen import (
    CruxError,
    FlowContext,
    InvalidTypeError,
    InvalidValueError,
    Retry,
    Sleep,
    Step,
    Suspend,
    WaitUntil,
    flow,
    get_flow,
    to_duration,
)
from crux_gen.durations import MAX_DURATION, format_duration


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
        ("1h30m", timedelta(minutes=90)),
        ("2d12h", timedelta(days=2, hours=12)),
        ("1m30s", timedelta(seconds=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1m500ms", timedelta(seconds=60.5)),
        ("1.5h30m", timedelta(hours=2)),
        ("36524d23h59m59.999999s", MAX_DURATION - timedelta(microseconds=1)),
    ],
)
def test_durations_are_parsed(text: object, expected: timedelta) -> None:
    assert to_duration(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "soon-ish",
        "10 years",
        "",
        "-5s",
        -1,
        float("nan"),
        True,
        None,
        "30m1h",  # largest unit first
        "1h1h",  # each unit once
        "1h30",  # every number has its unit
        "h",
        "1h-30m",
        "1:30:00",
    ],
)
def test_a_bad_duration_is_a_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        to_duration(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(milliseconds=500), "500ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (timedelta(seconds=1), "1s"),
        (300, "5m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2, hours=3), "2d3h"),
        (90.0, "1m30s"),
        (1.5, "1.5s"),
        (60.5, "1m500ms"),
        (3661.25, "1h1m1.25s"),
        (0.0005, "0.5ms"),
        (0, "0s"),
        (timedelta(0), "0s"),
        (0.1 + 0.2, "300ms"),
        (MAX_DURATION, "36525d"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_durations_are_written_compactly(value: timedelta | float, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=MAX_DURATION))
def test_a_written_duration_reads_back_as_the_same_duration(value: timedelta) -> None:
    text = format_duration(value)
    assert ":" not in text and "timedelta" not in text
    assert to_duration(text) == value


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


# -- huge durations --------------------------------------------------------------

HUGE_DURATIONS: list[object] = [
    "99999999999d",
    "9" * 400 + "s",
    10**20,
    10**5000,
    1e300,
    timedelta.max,
    timedelta(days=36525, seconds=1),
    float("inf"),
    float("-inf"),
    float("nan"),
    -1,
    timedelta(seconds=-1),
]

WHERE_DURATIONS_ARE_WRITTEN: dict[str, Callable[[object], object]] = {
    "to_duration": to_duration,
    "Sleep": lambda d: Sleep("x", d),  # type: ignore[arg-type]
    "Retry delay": lambda d: Retry(delay=d),  # type: ignore[arg-type]
    "Retry max_delay": lambda d: Retry(max_delay=d),  # type: ignore[arg-type]
    "Suspend timeout": lambda d: Suspend("x", timeout=d),  # type: ignore[arg-type]
    "WaitUntil every": lambda d: WaitUntil("x", lambda: True, every=d),  # type: ignore[arg-type]
    "WaitUntil timeout": lambda d: WaitUntil("x", lambda: True, timeout=d),  # type: ignore[arg-type]
}


@pytest.mark.parametrize(
    "where", WHERE_DURATIONS_ARE_WRITTEN.values(), ids=WHERE_DURATIONS_ARE_WRITTEN
)
@pytest.mark.parametrize("bad", HUGE_DURATIONS, ids=lambda v: type(v).__name__)
def test_a_huge_or_negative_duration_is_an_invalid_value_error_where_it_is_written(
    where: Callable[[object], object], bad: object
) -> None:
    with pytest.raises(InvalidValueError) as caught:
        where(bad)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, CruxError)
    message = str(caught.value)
    assert len(message) < 400
    if bad != 10**5000:
        assert repr(bad)[:20] in message


def test_the_longest_duration_is_100_years_and_says_so() -> None:
    assert to_duration("36525d") == MAX_DURATION == timedelta(days=36525)
    assert to_duration(MAX_DURATION.total_seconds()) == MAX_DURATION
    with pytest.raises(InvalidValueError, match="100 years"):
        to_duration("36526d")
    assert "100 years" in (to_duration.__doc__ or "")


def test_the_longest_backoff_never_overflows() -> None:
    for backoff in ("fixed", "linear", "exponential"):
        retry = Retry(attempts=10**6, backoff=backoff, delay=MAX_DURATION)  # type: ignore[arg-type]
        assert retry.delay_after(10**5) == MAX_DURATION
        assert retry.delay_after(1) == MAX_DURATION


def test_a_flow_sleeping_the_longest_duration_stays_readable(store: Any) -> None:
    @flow("long-sleep")
    def f(ctx: FlowContext) -> Any:
        yield Sleep("nap", MAX_DURATION)

    r = f.run(store=store)
    assert r.status == "suspended"
    assert r.wake_at is not None
    info = get_flow(r.flow_id, store=store)
    assert info.wake_at == r.wake_at
    assert [f.id for f in store.list_flows()] == [r.flow_id]


# -- bad arguments are CruxError and the builtin callers expect ------------------


def _bad_calls() -> dict[str, tuple[Callable[[], object], type[Exception]]]:
    ok = lambda: 1  # noqa: E731
    return {
        "Step name ''": (lambda: Step("", ok), ValueError),
        "Step name 3": (lambda: Step(3, ok), TypeError),  # type: ignore[arg-type]
        "Step name surrogate": (lambda: Step("a\udcff", ok), ValueError),
        "Step fn": (lambda: Step("x", 42), TypeError),  # type: ignore[arg-type]
        "Step retry": (lambda: Step("x", ok, retry=3), TypeError),  # type: ignore[arg-type]
        "Suspend name": (lambda: Suspend(""), ValueError),
        "WaitUntil condition": (lambda: WaitUntil("x", None), TypeError),  # type: ignore[arg-type]
        "Sleep name": (lambda: Sleep(None, "1s"), TypeError),  # type: ignore[arg-type]
        "Retry attempts 0": (lambda: Retry(attempts=0), ValueError),
        "Retry attempts '3'": (lambda: Retry(attempts="3"), TypeError),  # type: ignore[arg-type]
        "Retry backoff": (lambda: Retry(backoff="random"), ValueError),  # type: ignore[arg-type]
        "Retry retry_on": (lambda: Retry(retry_on=(int,)), TypeError),  # type: ignore[arg-type]
        "duration": (lambda: to_duration("soon-ish"), ValueError),
        "duration None": (lambda: to_duration(None), ValueError),
        "flow name ''": (lambda: flow("")(lambda ctx: (yield)), ValueError),
        "flow name 3": (lambda: flow(3)(lambda ctx: (yield)), TypeError),  # type: ignore[arg-type]
        "flow not a generator": (lambda: flow("x")(lambda ctx: 1), TypeError),  # type: ignore[arg-type]
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize(("call", "builtin"), BAD_CALLS.values(), ids=BAD_CALLS)
def test_a_bad_argument_is_both_a_crux_error_and_the_builtin_callers_expect(
    call: Callable[[], object], builtin: type[Exception]
) -> None:
    expected = InvalidTypeError if builtin is TypeError else InvalidValueError
    with pytest.raises(expected) as caught:
        call()
    assert isinstance(caught.value, CruxError)
    assert isinstance(caught.value, builtin)
