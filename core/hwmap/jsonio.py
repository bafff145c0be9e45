"""Deterministic JSON for everything hwmap writes: sorted keys, numpy values as plain ones."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "dumps", "finite"]


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays, paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (Python or numpy, in arrays too) as ``None``:
    strict JSON has no NaN or Infinity, and a reader of ``kpis.json`` must not need them."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps(obj: Any) -> str:
    """Indented, key-sorted, strict JSON text ending in a newline (byte-identical for equal
    input; NaN and infinities written as ``null``, see :func:`finite`)."""
    return json.dumps(finite(obj), indent=1, sort_keys=True, default=json_default, allow_nan=False) + "\n"
