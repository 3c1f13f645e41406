"""Text that is safe to store as a name and to print in a terminal.

Names (tasks, devices, labels, tokens) must not carry control characters (a terminal
runs ``ESC [ 31m``; a newline splits a log line) nor Unicode bidi controls (U+202E
turns ``txt.exe`` into what reads as ``exe.txt``): :func:`unsafe_char` finds them, and
the models refuse them. Text that may hold anything (task data, error messages,
results) is made printable with :func:`printable` before it reaches a terminal.
"""

from __future__ import annotations

import unicodedata

#: Bidi controls: embeddings, overrides, isolates and marks (Unicode's Bidi_Control).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(c: str) -> bool:
    return c in BIDI_CONTROLS or unicodedata.category(c) in ("Cc", "Zl", "Zp")


def unsafe_char(text: str, allow: str = "") -> str | None:
    """A description of the first control or bidi character in ``text`` (``"U+001B"``), or None."""
    for c in text:
        if c not in allow and _unsafe(c):
            return f"U+{ord(c):04X}"
    return None


def refuse_unsafe(text: str, allow: str = "") -> str:
    """``text`` unchanged, or a ValueError naming the character (for pydantic validators)."""
    if (found := unsafe_char(text, allow)) is not None:
        raise ValueError(f"must not contain control or bidi-override characters (found {found})")
    return text


def printable(text: str, allow: str = "\n\t") -> str:
    """``text`` with control and bidi characters shown as escapes (``\\x1b``, ``\\u202e``)."""
    if unsafe_char(text, allow) is None:
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if c not in allow and _unsafe(c) else c
                   for c in text)


__all__ = ["BIDI_CONTROLS", "unsafe_char", "refuse_unsafe", "printable"]
