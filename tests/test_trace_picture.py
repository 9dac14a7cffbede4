"""The README's picture of a trace (docs/trace.png) is drawn from spans a flow
recorded: docs/trace.py records them and draws them, here into a temporary folder,
with the headless Chromium of the browser tests."""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path
from types import ModuleType

from crux_gen import observe

from .pg import short_tempdir
from .test_ui_browser import unavailable

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "trace.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crux_docs_trace", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk (refusing what is not a PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_trace_picture_is_drawn_from_recorded_spans(tmp_path: Path) -> None:
    script = load_script()
    spans = script.record()
    assert observe.OBSERVER is None  # record() uninstruments when done
    names = [s.name for s in spans]
    # What the picture shows is what was recorded: two slices, the steps that ran
    # (none replayed), a failed attempt and its retry, the link to the webhook.
    assert sorted(names) == sorted([
        "POST /orders", "flow order", "step reserve-stock", "step request-payment",
        "POST /webhooks/payments", "flow order", "step ship", "POST carrier /shipments",
        "step ship", "POST carrier /shipments",
    ])  # fmt: skip
    rows = script.rows(spans)
    assert [(depth, span.name) for depth, span in rows][:5] == [
        (0, "POST /orders"), (1, "flow order"), (2, "step reserve-stock"),
        (2, "step request-payment"), (1, "flow order"),
    ]  # fmt: skip
    picture = script.svg(spans)
    assert picture.count("<rect x=") - picture.count('fill="#f1f1f1"') == len(spans)  # a bar each
    assert picture.count("marker-end=") == 1  # the worker's slice -> the webhook's span
    assert picture.count("ERROR") >= 2  # the failed attempt and its client span

    if not os.access(script.CHROMIUM, os.X_OK):
        unavailable(f"{script.CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    out = tmp_path / "trace.png"
    script.png(picture, out, tmpdir=short_tempdir())
    width, height = png_size(out)
    assert 800 <= width <= 1400 and 300 <= height <= 900, (width, height)
    assert out.stat().st_size > 10_000


def test_the_committed_picture_is_a_png_the_readme_shows() -> None:
    committed = REPO / "docs" / "trace.png"
    width, height = png_size(committed)
    assert width >= 800 and height >= 300
    assert "(docs/trace.png)" in (REPO / "README.md").read_text()
    assert "docs/trace.py" in (REPO / "README.md").read_text()  # how to redraw it
