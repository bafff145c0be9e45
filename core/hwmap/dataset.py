"""The :class:`Dataset` record: inputs and labels, whoever loaded them.

:func:`hwmap.data.load_data` loads one from ``--data`` (an ``.npz`` or ``zoo:NAME``) and the
zoo builds its own data sets as one (:func:`hwmap.zoo.load_data`); the record lives here, below
both, so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset"]


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
