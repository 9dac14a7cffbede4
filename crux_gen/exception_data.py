"""An exception as data and back, for ``ErrorInfo`` (in ``errors``): what is read off
an exception when it is recorded, and its class found again and an instance made on
replay, without importing a module or calling the class.

A leaf, like ``jsontext``: it imports nothing of crux_gen, and ``errors`` builds on it.
"""

from __future__ import annotations

import sys
import traceback as tb
import types
from collections.abc import Callable
from typing import Any


def slot_names(kind: type) -> list[str]:
    """Data an exception keeps outside its ``__dict__``: slots, and the fields of
    builtin bases (``OSError.filename``, ``StopIteration.value``…)."""
    names: list[str] = []
    for klass in kind.__mro__[:-1]:  # not object
        for name, attr in vars(klass).items():
            slot = isinstance(attr, types.MemberDescriptorType | types.GetSetDescriptorType)
            if slot and name != "args" and not name.startswith("__") and name not in names:
                names.append(name)
    return names


def exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__qualname__}: str() raised>"


def traceback_text(exc: BaseException) -> str:
    try:
        return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        return ""


#: The namespaces of the modules that define registered flows, by module name: a
#: flow module run from a file (not in ``sys.modules``) still has its classes rebuilt.
_flow_modules: dict[str, dict[str, Any]] = {}


def remember_flow_module(fn: Callable[..., Any]) -> None:
    """Let replay rebuild the exception classes of the module that defines the flow
    body *fn* (``@flow`` calls it), also when that module is not in ``sys.modules``.

    >>> remember_flow_module(onboarding_body)
    """
    module, namespace = getattr(fn, "__module__", None), getattr(fn, "__globals__", None)
    if isinstance(module, str) and isinstance(namespace, dict):
        _flow_modules[module] = namespace


def exception_class(name: str) -> tuple[type[Exception] | None, str]:
    """The ``Exception`` subclass that *name* (``module.qualname``) names, else
    ``None`` and why (found as :func:`named_object` finds it: nothing imported)."""
    obj, why = named_object(name)
    if obj is None:
        return None, why
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj, ""
    return None, "is not an Exception subclass"


def named_object(name: str) -> tuple[Any, str]:
    """What *name* (``module.qualname``) names, else ``None`` and why.

    Nothing is imported and no code runs: the module must already be in
    ``sys.modules`` (``builtins`` always is; so is every module a registered
    flow's module imports, and that module itself) or be the module of a
    registered flow (:func:`remember_flow_module`), and each name is read from a
    ``__dict__``, so neither a module's ``__getattr__`` (a lazy import) nor a
    metaclass is called.
    """
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return None, "is not a module.qualname"
    for cut in range(len(parts) - 1, 0, -1):  # the longest module name first
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        namespace: Any = (
            vars(module) if isinstance(module, types.ModuleType) else _flow_modules.get(module_name)
        )
        obj: Any = namespace.get(parts[cut]) if isinstance(namespace, dict) else None
        for attr in parts[cut + 1 :]:
            obj = vars(obj).get(attr) if isinstance(obj, type) else None
        if obj is not None:
            return obj, ""
    return None, "is in no module imported here (a record never imports one)"


_MISSING = object()


def instance(
    kind: type[Exception], args: tuple[Any, ...], attributes: dict[str, Any] | None
) -> BaseException | None:
    """An instance of *kind* with *args* and *attributes*, made without ``__init__``;
    ``None`` when the class refuses to be made so, or the result cannot even be shown."""
    try:
        try:
            exc = kind.__new__(kind, *args)
        except Exception:
            exc = kind.__new__(kind)
        exc.args = args
        for name, value in (attributes or {}).items():
            try:
                if getattr(exc, name, _MISSING) != value:  # OSError.filename2: None stays unset
                    object.__setattr__(exc, name, value)  # past a frozen class's __setattr__
            except Exception:  # a read-only property: what it shows comes from the rest
                continue
        str(exc)
    except Exception:
        return None
    return exc
