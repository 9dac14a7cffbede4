"""The markers ``tests/markers.py`` gives (``-m "not slow"`` is the inner loop)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from . import markers


def test_a_postgres_run_of_a_test_is_marked_postgres_and_slow_and_the_others_are_not(
    store_kind: str, request: pytest.FixtureRequest
) -> None:
    marks = {m.name for m in request.node.iter_markers()}
    on_postgres = store_kind == "postgres"
    assert ("postgres" in marks, "slow" in marks) == (on_postgres, on_postgres)
    assert "processes" not in marks and "browser" not in marks


def test_a_test_starting_a_process_through_helpers_and_imports_is_found(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text(
        textwrap.dedent(
            """\
            import subprocess

            def start():
                return subprocess.run(["true"])

            def quiet():
                return subprocess.CalledProcessError  # named, not started
            """
        )
    )
    module = tmp_path / "test_it.py"
    module.write_text(
        textwrap.dedent(
            """\
            import os
            from .helpers import quiet, start

            class Scene:
                def go(self):
                    return start()

            def test_through_a_class():
                Scene().go()

            def test_forks():
                os.fork()

            def test_names_only():
                quiet()
                thing.run()  # an attribute named like a spawning helper
            """
        )
    )
    assert markers._spawning(module) == {"start", "Scene", "test_through_a_class", "test_forks"}
