"""``@flow`` refuses, at once, a function the runner could not drive (it failed
deep in the driver, at the first run): a ``TypeError`` that is a ``CruxError``
naming the flow and the function, and saying what to give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crux_gen import CruxError, FlowContext, MemoryStore, Registry, Step, flow


def two_args(ctx: Any, x: Any) -> Any:
    yield Step("s", lambda: x)


def no_args() -> Any:
    yield Step("s", lambda: 1)


def plain(ctx: Any) -> Any:
    return 1


async def coroutine(ctx: Any) -> Any:
    return 1


async def async_gen(ctx: Any) -> Any:
    yield Step("s", lambda: 1)


def keyword_only(*, ctx: Any) -> Any:
    yield Step("s", lambda: 1)


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (two_args, "takes (ctx: 'Any', x: 'Any')"),
        (no_args, "takes ()"),
        (plain, "without yield, not a generator function"),
        (coroutine, "is an async def"),
        (async_gen, "is an async def"),
        (keyword_only, "takes (*, ctx: 'Any')"),
        (lambda: (yield), "takes ()"),
        ("not a function", "of type str"),
    ],
)
def test_a_function_the_runner_cannot_drive_is_refused_at_flow(
    fn: Callable[..., Any], says: str
) -> None:
    registry = Registry()
    with pytest.raises(TypeError) as caught:
        flow("bad-shape", registry=registry)(fn)
    assert isinstance(caught.value, CruxError)
    text = str(caught.value)
    assert "@flow('bad-shape') function" in text
    assert getattr(fn, "__qualname__", "not a function") in text
    assert says in text
    assert "a generator function taking one argument, ctx" in text
    assert "bad-shape" not in registry  # nothing registered


def test_every_shape_the_runner_can_call_with_ctx_alone_still_works() -> None:
    registry = Registry()

    def annotated(ctx: FlowContext) -> Any:
        return (yield Step("s", lambda: ctx.input))

    def with_defaults(ctx: Any, extra: int = 2, *rest: Any, **options: Any) -> Any:
        return (yield Step("s", lambda: ctx.input * extra))

    def star_args(*args: Any) -> Any:
        return (yield Step("s", lambda: args[0].input))

    shapes = {
        "annotated": (annotated, 3),
        "defaults": (with_defaults, 6),
        "star": (star_args, 3),
        "lambda": (lambda ctx: (yield Step("s", lambda: ctx.input)), 3),
    }
    store = MemoryStore()
    for name, (fn, value) in shapes.items():
        made = flow(name, registry=registry)(fn)
        result = made.run(input=3, store=store)
        assert (result.status, result.value) == ("completed", value)
