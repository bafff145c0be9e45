"""Text from untrusted sources made safe to print.

Node and tensor names, config names, descriptions, paths and plugin messages come from
files users share. Printed raw, an escape sequence in one of them could retitle the window,
clear the screen or hide text. :func:`printable` replaces every control character (C0, DEL
and C1, and in one-line mode the newline and tab too) with a visible ``\\xNN`` escape.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["printable", "one_line", "rich_text", "markup_escape"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(text: object) -> str:
    """``text`` with control characters escaped; newlines and tabs kept."""
    return _CONTROL.sub(_escape, str(text))


def one_line(text: object) -> str:
    """``text`` on one line: every control character escaped, newlines and tabs included."""
    return _CONTROL_ALL.sub(_escape, str(text))


def rich_text(text: object, **kwargs: object) -> "Text":
    """A rich ``Text`` of ``text`` with control characters escaped (rich itself lets ESC
    through)."""
    from rich.text import Text

    return Text(printable(text), **kwargs)  # type: ignore[arg-type]


def markup_escape(text: object) -> str:
    """``text`` for a rich markup string: control characters and ``[...]`` escaped."""
    from rich.markup import escape

    return escape(printable(text))
