"""Decoder solvers (nengo 4.1, ``nengo/solvers.py``, ``nengo/utils/least_squares_solvers.py``).

:class:`LstsqL2` is nengo's default: regularized least squares, the noise amplitude
``sigma = reg · max(A)`` (``reg = 0.1``: 10 % of the largest rate), solved by Cholesky on
``(AᵀA + m·sigma² I) X = AᵀY`` (``m`` evaluation points) or, for fewer points than neurons,
on the ``m × m`` system ``(AAᵀ + m·sigma² I) X̄ = Y``, ``X = AᵀX̄`` (Eliasmith and Anderson,
*Neural Engineering*, 2003, Section 2.4 and 7.4).

:class:`LstsqL2Fast` solves the same regularized problem on fewer evaluation points: every
``stride``-th row of ``A`` and ``Y`` (``m`` replaced by the rows kept, so the regularization
per point is unchanged); for large ensembles with nengo's ``max(2n, ...)`` evaluation points
it cuts the ``AᵀA`` product (``O(m n²)``) by the stride at the same decoding error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Solver", "LstsqL2", "LstsqL2Fast", "cholesky_solve"]


def cholesky_solve(A: np.ndarray, Y: np.ndarray, sigma: float) -> np.ndarray:
    import scipy.linalg  # type: ignore[import-untyped]

    m, n = A.shape
    transpose = m < n
    if transpose:
        G, b = A @ A.T, Y
    else:
        G, b = A.T @ A, A.T @ Y
    np.fill_diagonal(G, G.diagonal() + m * sigma ** 2)
    factor = scipy.linalg.cho_factor(G, overwrite_a=True)
    X = scipy.linalg.cho_solve(factor, b)
    return A.T @ X if transpose else X


class Solver(ABC):
    weights = False

    @abstractmethod
    def __call__(self, A: np.ndarray, Y: np.ndarray, rng: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Decoders ``X`` with ``A @ X ≈ Y`` (activities ``A``, targets ``Y``) and solver info."""


class LstsqL2(Solver):
    def __init__(self, weights: bool = False, reg: float = 0.1) -> None:
        if weights:
            raise ValueError("LstsqL2(weights=True) is not supported here: decoders only")
        if not reg >= 0:
            raise ValueError(f"LstsqL2: reg = {reg!r} must not be negative")
        self.reg = float(reg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reg={self.reg!r})"

    def __call__(self, A: np.ndarray, Y: np.ndarray, rng: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        X = cholesky_solve(A, Y, self.reg * A.max())
        return X, {"rmses": np.sqrt(np.mean((Y - A @ X) ** 2, axis=0))}


class LstsqL2Fast(LstsqL2):
    def __init__(self, reg: float = 0.1, stride: int = 8) -> None:
        super().__init__(reg=reg)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"LstsqL2Fast: stride = {stride!r} must be a positive integer")
        self.stride = stride

    def __call__(self, A: np.ndarray, Y: np.ndarray, rng: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        sigma = self.reg * A.max()
        X = cholesky_solve(np.ascontiguousarray(A[::self.stride]), Y[::self.stride], sigma)
        return X, {"rmses": np.sqrt(np.mean((Y - A @ X) ** 2, axis=0))}
