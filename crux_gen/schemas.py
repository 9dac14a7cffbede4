"""A ``Suspend``'s schema by name, for ``signal_flow(..., validate=True)``.

When a flow first parks on a ``Suspend`` with a schema, the waiting record keeps
the schema's ``module.qualname`` in its result column, as ``{"schema": NAME}``
(the column holds the payload once a signal is taken; an expired wait clears
it). A sender reads it back and finds the class under the import rule of
replayed errors (``exception_data.named_object``): a builtin, a class of a
module already imported, or one defined in the module of a registered flow;
reading a record never imports a module. Pure: no store.
"""

from __future__ import annotations

import json
import types
import typing

from .exception_data import named_object

__all__ = ["noted_schema", "schema_class", "schema_note"]


def schema_note(schema: typing.Any) -> str | None:
    """The waiting record's result for a ``Suspend`` with *schema*: JSON naming the
    class, or ``None`` when there is no schema, or no class a name can find again
    (``list[int]``, a class defined inside a function)."""
    if schema is None or schema is typing.Any:
        return None
    if not isinstance(schema, type) or isinstance(schema, types.GenericAlias):
        return None
    module, qualname = getattr(schema, "__module__", None), getattr(schema, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    name = f"{module}.{qualname}"
    if not all(part.isidentifier() for part in name.split(".")):
        return None
    return json.dumps({"schema": name})


def noted_schema(result: str | None) -> str | None:
    """The schema name a waiting ``Suspend`` record's *result* keeps, else ``None``."""
    try:
        found = json.loads(result) if result else None
    except ValueError:
        return None
    name = found.get("schema") if isinstance(found, dict) else None
    return name if isinstance(name, str) else None


def schema_class(name: str) -> tuple[type | None, str]:
    """The class *name* names (nothing imported), else ``None`` and why."""
    found, why = named_object(name)
    if found is None:
        return None, why
    if not isinstance(found, type):
        return None, "is not a class"
    return found, ""
