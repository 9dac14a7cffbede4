"""Pausing the cyclic garbage collector while a long history is read or replayed.

A replay makes a few objects per recorded command (values, records, the body's own
state), all of them acyclic or short-lived; on a history of 100,000 commands the
collector's full passes over that growing heap took over half the resume
(``bench/replay.py``: 5 us per step with it, 2.4 without). The collector runs as
usual once the block ends. Only the thread that paused it resumes it, so two
replays at once never leave it off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Histories shorter than this are replayed with the collector on (it costs them
#: next to nothing).
LONG = 1000


@contextmanager
def paused_gc(size: int = LONG) -> Iterator[None]:
    """Pause the collector for the block when *size* (records) is ``LONG`` or more."""
    if size < LONG or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
