"""What can name a flow, a command, a signal or a signal key: a non-empty string
that every store can keep as text."""

from __future__ import annotations

from .errors import InvalidTypeError, InvalidValueError


def unstorable(text: str) -> str | None:
    """Why some store cannot keep *text* as text, else ``None``.

    >>> unstorable("send-welcome") is None
    True

    A NUL character (PostgreSQL refuses it in text) and a lone surrogate (not
    UTF-8: no store can encode it); every other character is kept by every store.
    """
    if "\x00" in text:
        return "holds a NUL character (\\x00), which PostgreSQL cannot keep in text"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate, which no store can keep as text"
    return None


def check_name(value: object, *, what: str) -> str:
    """Return *value* if it can name a command, a flow or a signal, else raise.

    >>> check_name("send-welcome", what="Step name")
    'send-welcome'

    ``InvalidTypeError`` for anything but a ``str``; ``InvalidValueError`` for a
    blank string, or one holding a character some store cannot keep (a NUL, a lone
    surrogate: see :func:`unstorable`).
    """
    if not isinstance(value, str):
        raise InvalidTypeError(what, value, "is not a str; give a non-empty string")
    if not value.strip():
        raise InvalidValueError(what, value, "is blank; give a non-empty string")
    problem = unstorable(value)
    if problem is not None:
        raise InvalidValueError(what, value, problem)
    return value
