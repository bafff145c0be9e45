"""Counting NaN and infinite values in arrays of any size with bounded temporaries."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["count_nonfinite", "describe_nonfinite"]


def count_nonfinite(a: Any, chunk: int = 1 << 20) -> tuple[int, int, int | None]:
    """``(NaNs, infinities, flat index of the first)`` in ``a``, counted in chunks so the
    temporary masks stay small whatever the array's size. Integers and booleans have none."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc" or a.size == 0:
        return 0, 0, None
    flat = a.reshape(-1)
    nans = infs = 0
    first: int | None = None
    for start in range(0, flat.size, chunk):
        part = flat[start:start + chunk]
        bad = ~np.isfinite(part)
        if bad.any():
            n = int(np.count_nonzero(np.isnan(part)))
            nans += n
            infs += int(np.count_nonzero(bad)) - n
            if first is None:
                first = start + int(np.argmax(bad))
    return nans, infs, first


def describe_nonfinite(nans: int, infs: int) -> str:
    """``"2 NaN and 1 infinite values"``."""
    parts = [f"{nans} NaN" if nans else "", f"{infs} infinite" if infs else ""]
    return " and ".join(p for p in parts if p) + (" value" if nans + infs == 1 else " values")
