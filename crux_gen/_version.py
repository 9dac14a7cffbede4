"""``crux_gen.__version__``: the installed distribution's version.

Read from the distribution's metadata (``importlib.metadata``); only when crux-gen
is not installed (a source checkout on ``PYTHONPATH``) from the ``[project]``
table of the checkout's ``pyproject.toml``, else ``"0+unknown"``.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "crux-gen"
_PROJECT_VERSION = re.compile(r'^\[project\]$.*?^version\s*=\s*"([^"]+)"', re.M | re.S)


def installed_version() -> str:
    """Return the version of the installed crux-gen, or of the checkout it runs from."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return checkout_version(Path(__file__).resolve().parent.parent / "pyproject.toml")


def checkout_version(pyproject: Path) -> str:
    """Return the ``[project]`` version written in *pyproject*, or ``"0+unknown"``."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    found = _PROJECT_VERSION.search(text)
    return found.group(1) if found else "0+unknown"


__version__ = installed_version()
