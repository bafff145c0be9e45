"""Distributions with nengo's sampling (nengo 4.1, ``nengo/dists.py``): the same draws from
the same ``numpy.random.RandomState`` in the same order, so an ensemble built from a seed gets
nengo's encoders, rates, intercepts and evaluation points.

* :class:`Uniform` (``rng.uniform``, or ``rng.randint`` for integers), :class:`Choice`
  (``searchsorted`` of the cumulative weights on ``rng.rand``);
* :class:`UniformHypersphere`: Gaussian directions normalized, radii ``U^(1/d)`` for the ball;
* :class:`QuasirandomSequence`: the R_d sequence (Roberts, "The unreasonable effectiveness
  of quasirandom sequences", 2018) offset by a random start and shuffled;
* :class:`ScatteredHypersphere` (nengo's default for encoders and evaluation points): the
  quasirandom points mapped onto the sphere by the spherical coordinate transform (Fang and
  Wang, *Number-Theoretic Methods in Statistics*, 1994, Section 1.5.3), then a random
  rotation. Its default ``"sct-approx"`` interpolates the inverse regularized incomplete beta
  function ``betaincinv(d/2, 1/2, ·)`` in a table built as nengo builds its table (same grid,
  same seeded extra points), so the samples agree with nengo's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Distribution", "Uniform", "Choice", "UniformHypersphere", "QuasirandomSequence", "ScatteredHypersphere",
           "get_samples"]


class Distribution(ABC):
    @abstractmethod
    def sample(self, n: int, d: int | None = None, rng: Any = np.random) -> np.ndarray:
        """``n`` samples (of ``d`` dimensions, or scalars for ``d = None``) drawn from ``rng``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    @staticmethod
    def _shape(n: int, d: int | None) -> tuple[int, ...]:
        return (n,) if d is None else (n, d)


class Uniform(Distribution):
    def __init__(self, low: float, high: float, integer: bool = False) -> None:
        self.low, self.high, self.integer = low, high, integer

    def sample(self, n: int, d: int | None = None, rng: Any = np.random) -> np.ndarray:
        shape = self._shape(n, d)
        if self.integer:
            return rng.randint(low=self.low, high=self.high, size=shape)
        return rng.uniform(low=self.low, high=self.high, size=shape)


class Choice(Distribution):
    def __init__(self, options: Any, weights: Any = None) -> None:
        self.options = np.asarray(options)
        w = np.ones(len(self.options)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(self.options),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"Choice: weights {weights!r} must be one non-negative weight per option")
        self.p = w / w.sum()

    @property
    def dimensions(self) -> int:
        return 0 if self.options.ndim == 1 else int(self.options.shape[1])

    def sample(self, n: int, d: int | None = None, rng: Any = np.random) -> np.ndarray:
        if d is not None and self.dimensions != d:
            raise ValueError(f"Choice: options must be of dimensionality {d} (got {self.dimensions})")
        i = np.searchsorted(np.cumsum(self.p), rng.rand(n))
        return self.options[i]


class UniformHypersphere(Distribution):
    def __init__(self, surface: bool = False, min_magnitude: float = 0) -> None:
        self.surface, self.min_magnitude = surface, min_magnitude

    def sample(self, n: int, d: int | None = None, rng: Any = np.random) -> np.ndarray:
        if d is None or d < 1:
            raise ValueError("UniformHypersphere: dimensions must be a positive integer")
        samples = rng.randn(n, d)
        samples /= np.linalg.norm(samples, axis=1, keepdims=True)
        if self.surface:
            return samples
        samples *= rng.uniform(low=self.min_magnitude ** d, high=1, size=(n, 1)) ** (1.0 / d)
        return samples


class QuasirandomSequence(Distribution):
    @staticmethod
    def _phi(d: int, tol: float = 1e-10) -> float:
        """The generalized golden ratio: the root of ``x^(d+1) = x + 1`` (Newton-Raphson)."""
        x = 1.0
        for _ in range(100):
            dx = (x ** (d + 1) - x - 1) / ((d + 1) * x ** d - 1)
            x -= dx
            if abs(dx) < tol:
                break
        return x

    def sample(self, n: int, d: int | None = 1, rng: Any = np.random) -> np.ndarray:
        if d is None or d < 1:
            raise ValueError("QuasirandomSequence: dimensions must be a positive integer")
        seed = rng.uniform(0, 1, size=d)
        if d == 1:
            z = ((seed + (1 / n) * np.arange(n, dtype=np.float64)) % 1)[:, np.newaxis]
        else:
            alpha = (1.0 / self._phi(d)) ** np.arange(1, d + 1)
            z = (seed + np.outer(np.arange(1, n + 1), alpha)) % 1
        rng.shuffle(z)
        return z


_BETA_TABLE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _beta_table() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Interpolation table of ``betaincinv(d/2, 1/2, x)``: per dimension 200 points, 40 evenly
    in the domain and 160 the images of points evenly spread in the range, topped up with
    seeded uniform points (``RandomState(0)``), as ``nengo.dists._betaincinv22.make_table``."""
    if _BETA_TABLE:
        return _BETA_TABLE
    import scipy.special  # type: ignore[import-untyped]

    rng = np.random.RandomState(0)
    n_interp, n_dims = 200, 50
    n_log = int(0.5 * n_dims)
    lin = np.arange(1, n_dims - n_log + 1)
    logd = np.round(np.logspace(np.log10(lin[-1] + 1), 3, n_log)).astype(lin.dtype)
    for dim in np.unique(np.concatenate([lin, logd])):
        n_range = int(0.8 * n_interp)
        x0 = np.linspace(0, 1, n_interp - n_range)
        y0 = np.linspace(1e-16, 1 - 1e-7, n_range)
        xs = np.unique(np.concatenate([x0, scipy.special.betainc(dim / 2.0, 0.5, y0)]))
        while len(xs) < n_interp:
            xs = np.unique(np.concatenate([xs, rng.uniform(size=n_interp - len(xs))]))
        xs.sort()
        _BETA_TABLE[int(dim)] = (xs, scipy.special.betaincinv(dim / 2.0, 0.5, xs))
    return _BETA_TABLE


def _betaincinv_lookup(dims: int, x: np.ndarray) -> np.ndarray:
    table = _beta_table()
    if dims in table:
        xp, yp = table[dims]
    else:
        known = np.array(sorted(table))
        i = int(np.searchsorted(known, dims))
        if i >= len(known):
            xp, yp = table[int(known[-1])]
        else:
            d0, d1 = int(known[i - 1]), int(known[i])
            (xp0, yp0), (xp1, yp1) = table[d0], table[d1]
            r0 = (d1 - dims) / (d1 - d0)
            xp = r0 * xp0 + (1 - r0) * xp1
            yp = r0 * np.interp(xp, xp0, yp0) + (1 - r0) * np.interp(xp, xp1, yp1)
    return np.interp(x, xp, yp)


class ScatteredHypersphere(Distribution):
    def __init__(self, surface: bool = False, min_magnitude: float = 0, base: Distribution | None = None,
                 method: str = "sct-approx") -> None:
        if method not in ("sct-approx", "sct"):
            raise ValueError(f"ScatteredHypersphere: method {method!r} is not supported here (sct-approx, sct)")
        self.surface, self.min_magnitude, self.method = surface, min_magnitude, method
        self.base = base if base is not None else QuasirandomSequence()

    @staticmethod
    def _ppf(dims: int, y: np.ndarray, approx: bool) -> np.ndarray:
        y_reflect = np.where(y < 0.5, y, 1 - y)
        if approx:
            z_sq = _betaincinv_lookup(dims, 2 * y_reflect)
        else:
            import scipy.special  # type: ignore[import-untyped]

            z_sq = scipy.special.betaincinv(dims / 2.0, 0.5, 2 * y_reflect)
        x = np.arcsin(np.sqrt(z_sq)) / np.pi
        return np.where(y < 0.5, x, 1 - x)

    @classmethod
    def _sct(cls, samples: np.ndarray, approx: bool) -> np.ndarray:
        n, d = samples.shape
        coords = np.empty_like(samples)
        for j in range(d):
            coords[:, j] = cls._ppf(d - j, samples[:, j], approx)
        mapped = np.ones((n, d + 1))
        i = np.ones(d)
        i[-1] = 2.0
        s = np.sin(i[np.newaxis, :] * np.pi * coords)
        c = np.cos(i[np.newaxis, :] * np.pi * coords)
        mapped[:, 1:] = np.cumprod(s, axis=1)
        mapped[:, :-1] *= c
        return mapped

    def sample(self, n: int, d: int | None = 1, rng: Any = np.random) -> np.ndarray:
        if d is None or d < 1:
            raise ValueError("ScatteredHypersphere: dimensions must be a positive integer")
        if d == 1 and self.surface:
            return np.sign(self.base.sample(n, d, rng) - 0.5)
        if d == 1:
            pos = self.base.sample(int(n / 2), d, rng)
            neg = self.base.sample(n - pos.size, d, rng)
            if self.min_magnitude > 0:
                for s in (pos, neg):
                    s *= 1.0 - self.min_magnitude
                    s += self.min_magnitude
            out = np.vstack([pos, -1 * neg])
            rng.shuffle(out)
            return out
        radius = None
        if self.surface:
            samples = self.base.sample(n, d - 1, rng)
        else:
            samples = self.base.sample(n, d, rng)
            samples, radius = samples[:, :-1], samples[:, -1:]
            if self.min_magnitude != 0:
                min_d = self.min_magnitude ** d
                radius = radius * (1 - min_d) + min_d
            radius = radius ** (1.0 / d)
        mapped = self._sct(samples, self.method == "sct-approx")
        if radius is not None:
            mapped *= radius
        m = rng.standard_normal((d, d))
        u, _, v = np.linalg.svd(m)
        return np.dot(mapped, np.dot(u, v))


def get_samples(dist_or_samples: Any, n: int, d: int | None = None, rng: Any = np.random) -> np.ndarray:
    """``dist.sample(n, d, rng)`` for a distribution, the array itself otherwise."""
    if isinstance(dist_or_samples, Distribution):
        return dist_or_samples.sample(n, d=d, rng=rng)
    return np.array(dist_or_samples)
