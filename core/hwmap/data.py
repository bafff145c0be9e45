"""Input data for ``--data``: a ``zoo:NAME`` data set or an .npz with ``x`` (and ``y``).

An ``.npz`` is read through :func:`hwmap.safeio.load_npz` (numbers only, every declared size
checked before anything is allocated) and then checked as data: ``x`` batch-first, real and
finite once in float32 (no NaN, no infinity, no complex numbers); ``y``, when present, one
integer class index per sample (integers, or floats holding whole numbers; not negative).
Whether the labels are classes of a given model is :func:`check_labels`. The record both
loaders return is :class:`~hwmap.dataset.Dataset` (re-exported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dataset import Dataset
from .errors import DataError
from .nonfinite import count_nonfinite, describe_nonfinite
from .safeio import load_npz

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Dataset", "load_data", "check_labels", "classes_of"]


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
    return Dataset(_inputs(x, ref), None if y is None else _labels(y, ref), str(path))


def _inputs(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as float32, refused unless every value is a real, finite number (in float32:
    a float64 beyond its range would become infinite)."""
    if x.dtype.kind == "c":
        raise DataError(f"'x' holds complex numbers ({x.dtype}); inputs must be real", where=where)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"'x' has non-numeric dtype {x.dtype}", where=where)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as infinity, refused below
        x32 = x.astype(np.float32, copy=False)
    nans, infs, first = count_nonfinite(x32)
    if nans or infs:
        sample = np.unravel_index(first, x32.shape)[0] if first is not None else 0
        raise DataError(f"'x' holds {describe_nonfinite(nans, infs)} (the first in sample {sample}"
                        f"{'; values beyond the float32 range count as infinite' if infs else ''}); inputs must "
                        "be finite", where=where)
    return x32


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    """``y`` as int64 class indices: integers, or floats holding whole numbers; none negative."""
    if y.dtype.kind == "f":
        wrong = ~np.isfinite(y) | (y != np.round(y))
        if wrong.any():
            bad = int(np.argmax(wrong))
            raise DataError(f"'y' must hold integer class indices, but label {float(y[bad])!r} of sample {bad} is "
                            "not a whole number", where=where)
        if y.size and np.abs(y).max() >= 2**53:
            raise DataError(f"'y' holds label {float(np.abs(y).max())!r}, far beyond any class index", where=where)
    elif y.dtype.kind not in "iu":
        raise DataError(f"'y' must hold integer class indices, not {y.dtype} values", where=where)
    if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise DataError(f"'y' holds label {int(y.max())}, far beyond any class index", where=where)
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        bad = int(np.argmax(labels < 0))
        raise DataError(f"'y' must hold class indices (0, 1, ...), but label {int(labels[bad])} of sample {bad} is "
                        "negative", where=where)
    return labels


def classes_of(graph: "Graph") -> int | None:
    """How many classes the model scores: the size ``C`` of its one output when that output
    is classifier-shaped (batch × C, C > 1, what accuracy is computed for); else ``None``."""
    if len(graph.outputs) != 1 or graph.outputs[0] not in graph.tensors:
        return None
    shape = graph.tensors[graph.outputs[0]].shape
    return int(shape[1]) if len(shape) == 2 and shape[1] > 1 else None


def check_labels(data: Dataset, graph: "Graph") -> None:
    """Refuse labels that are not classes of the model (:func:`classes_of`): accuracy
    against them would silently be 0. Nothing to check without labels or without a
    classifier-shaped output."""
    classes = classes_of(graph)
    if data.y is None or classes is None or data.y.size == 0:
        return
    y = np.asarray(data.y)
    if y.max() >= classes or y.min() < 0:
        bad = int(np.argmax((y >= classes) | (y < 0)))
        raise DataError(f"label {int(y[bad])} of sample {bad} is not a class of the model: its output "
                        f"{graph.outputs[0]!r} scores {classes} classes (0 to {classes - 1})", where=data.name)
