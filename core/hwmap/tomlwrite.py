"""A small TOML writer for configs: scalars, arrays, inline and nested tables, and comments.

``tomllib`` reads TOML but does not write it. What hwmap writes back — a config's effective
values (``hwmap check --show``), the conformance suite's broken copies of a preset — is
scalars, arrays and tables, which this covers; the output reads back with ``tomllib`` to
the same values.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps_toml", "toml_key", "toml_value"]


def toml_key(k: str) -> str:
    """A bare key where TOML allows one, else a quoted key."""
    return k if k and k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def toml_value(v: Any) -> str:
    """One TOML value: booleans, integers, floats (``nan``/``inf`` included), strings,
    arrays, inline tables; datetimes as their ISO form."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return v.isoformat()  # tomllib gives datetimes and times; their isoformat is valid TOML


def dumps_toml(d: dict[str, Any], comments: dict[str, str] | None = None, prefix: str = "") -> str:
    """``d`` as TOML text: top-level scalars first, then one ``[table]`` per nested dict.
    ``comments`` maps a dotted key path to a comment written after its value (one line;
    newlines are replaced)."""
    comments = comments or {}
    lines = []
    scalars = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
    width = max((len(toml_key(k)) + 3 + len(toml_value(v)) for k, v in scalars), default=0)
    for k, v in scalars:
        text = f"{toml_key(k)} = {toml_value(v)}"
        note = comments.get(f"{prefix}{k}")
        if note:
            text = f"{text:<{width}}  # {note.replace(chr(10), ' ')}"
        lines.append(text)
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}{toml_key(k)}"
            out += f"\n[{name}]\n" + dumps_toml(v, comments, name + ".")
    return out
