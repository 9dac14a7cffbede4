"""crux_gen's store backends: ``crux_gen.stores.memory``, ``crux_gen.stores.sqlite``
and ``crux_gen.stores.postgres``.

    from crux_gen.stores import MemoryStore, SQLiteStore, PostgresStore

Each class is imported on first use (``PostgresStore`` needs psycopg: ``pip install
'crux-gen[postgres]'``, else ``MissingDependencyError``), so importing a leaf such
as ``crux_gen.stores.caps`` pulls in no backend. The repository folder
``stores/`` is installed as this subpackage, never as a top-level ``stores``
package (that name belongs to users' own code). Every store implements the
protocols in ``crux_gen.stores.base``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .memory import MemoryStore as MemoryStore
    from .postgres import PostgresStore as PostgresStore
    from .sqlite import SQLiteStore as SQLiteStore

#: Each store class and its module. PostgresStore stays out of ``__all__`` (a star
#: import would need psycopg), as in ``crux_gen``.
_CLASSES = {"MemoryStore": "memory", "SQLiteStore": "sqlite", "PostgresStore": "postgres"}

__all__ = ["MemoryStore", "SQLiteStore"]


def __getattr__(name: str) -> Any:
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'crux_gen.stores' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
