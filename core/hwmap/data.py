"""Input data for ``--data``: a ``zoo:NAME`` data set or an .npz with ``x`` (and ``y``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .safeio import load_npz

__all__ = ["Dataset", "load_data"]


@dataclass
class Dataset:
    """``x``: inputs, batch first, shaped like the model's input; ``y``: integer labels or
    ``None``. ``name`` says where it came from."""

    x: np.ndarray
    y: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int) -> "Dataset":
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.name)


def load_data(ref: str) -> Dataset:
    """Load ``zoo:NAME`` or an .npz holding ``x`` (batch-first) and optionally ``y``."""
    if ref.startswith("zoo:"):
        from . import zoo

        return zoo.load_data(ref[4:])
    path = Path(ref)
    if not path.exists():
        raise DataError("no such file", where=ref)
    if path.suffix != ".npz":
        raise DataError(f"data must be an .npz with an array 'x' (and 'y') or zoo:NAME, not {path.suffix or 'a file without extension'!r}", where=ref)
    arrays = load_npz(path, where=ref)
    if "x" not in arrays:
        raise DataError(f"no array 'x' in the .npz (arrays: {', '.join(arrays) or 'none'})", where=ref)
    x = arrays["x"]
    y = arrays.get("y")
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"'x' must be batch-first with at least one sample, got shape {list(x.shape)}", where=ref)
    if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0]):
        raise DataError(f"'y' must hold one label per sample: shape {list(y.shape)} for {x.shape[0]} samples", where=ref)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"'x' has non-numeric dtype {x.dtype}", where=ref)
    return Dataset(x.astype(np.float32, copy=False), y, str(path))
