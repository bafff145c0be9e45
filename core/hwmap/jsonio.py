"""Deterministic JSON for everything hwmap writes: sorted keys, numpy values as plain ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "dumps"]


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays, paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    """Indented, key-sorted JSON text ending in a newline (byte-identical for equal input)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=json_default) + "\n"
