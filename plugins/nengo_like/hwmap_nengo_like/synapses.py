"""Synapses as nengo filters them (nengo 4.1, ``nengo/synapses.py``): a continuous transfer
function ``num(s)/den(s)`` turned into a state space (controller canonical form) and
discretized by zero-order hold (``scipy.signal.cont2discrete``, method ``zoh``: the input
held constant over each step).

* :class:`Lowpass` ``1/(tau·s + 1)``: ``y[k] = a·y[k-1] + (1-a)·u[k]``, ``a = exp(-dt/tau)``;
  ``Lowpass(0)`` passes the input through.
* :class:`Alpha` ``1/(tau·s + 1)^2`` (Mainen and Sejnowski, Science 268:1503, 1995).

The step is nengo's: with no state ``y = D·u``; otherwise, when ``D = 0`` (every proper
filter after ZOH), ``x = A·x + B·u`` then ``y = C·x``, else ``y = C·x + D·u`` then
``x = A·x + B·u``. On a connection the filter runs in nengo's *update* phase: what it outputs
at step ``k`` is read by the post object at step ``k+1`` (nengo's one-step delay), which the
simulator (:mod:`.simulator`) reproduces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Synapse", "LinearFilter", "Lowpass", "Alpha", "discretize", "FilterStep", "synapse_spec"]


class Synapse(ABC):
    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The synapse as JSON (the network description's ``synapse``)."""

    @abstractmethod
    def discretize(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(A, B, C, D)`` of the filter's discrete state space at step ``dt``."""


class LinearFilter(Synapse):
    def __init__(self, num: Any, den: Any, analog: bool = True, method: str = "zoh") -> None:
        if method != "zoh":
            raise ValueError(f"LinearFilter: method {method!r} is not supported here (zoh)")
        self.num = np.array(num, dtype=float)
        self.den = np.array(den, dtype=float)
        self.analog = analog
        self.method = method

    def __repr__(self) -> str:
        return f"LinearFilter({self.num.tolist()}, {self.den.tolist()})"

    def spec(self) -> dict[str, Any]:
        return {"type": "LinearFilter", "num": self.num.tolist(), "den": self.den.tolist(), "analog": self.analog}

    def discretize(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return discretize(self.num, self.den, dt, self.analog)


class Lowpass(LinearFilter):
    def __init__(self, tau: float) -> None:
        if not tau >= 0:
            raise ValueError(f"Lowpass: tau = {tau!r} must not be negative")
        super().__init__([1], [tau, 1])
        self.tau = float(tau)

    def __repr__(self) -> str:
        return f"Lowpass({self.tau!r})"

    def spec(self) -> dict[str, Any]:
        return {"type": "Lowpass", "tau": self.tau}


class Alpha(LinearFilter):
    def __init__(self, tau: float) -> None:
        if not tau >= 0:
            raise ValueError(f"Alpha: tau = {tau!r} must not be negative")
        super().__init__([1], [tau ** 2, 2 * tau, 1])
        self.tau = float(tau)

    def __repr__(self) -> str:
        return f"Alpha({self.tau!r})"

    def spec(self) -> dict[str, Any]:
        return {"type": "Alpha", "tau": self.tau}


def synapse_spec(s: Any) -> dict[str, Any] | None:
    """A synapse as given to a connection (``None``, a number: a Lowpass time constant, or a
    filter) as its JSON spec."""
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return Lowpass(float(s)).spec()
    if isinstance(s, LinearFilter):
        return s.spec()
    raise TypeError(f"synapse must be None, a time constant or a filter, got {s!r}")


def from_spec(spec: dict[str, Any]) -> LinearFilter:
    t = spec.get("type")
    if t == "Lowpass":
        return Lowpass(float(spec["tau"]))
    if t == "Alpha":
        return Alpha(float(spec["tau"]))
    if t == "LinearFilter":
        return LinearFilter(spec["num"], spec["den"], bool(spec.get("analog", True)))
    raise ValueError(f"not a synapse spec: {spec!r:.80}")


def tf2ss(num: Any, den: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Controller canonical state space of ``num/den`` (as ``scipy.signal.tf2ss``)."""
    num = np.atleast_1d(np.asarray(num, float))
    den = np.trim_zeros(np.atleast_1d(np.asarray(den, float)), "f")
    if den.size == 0:
        raise ValueError("synapse: the denominator is zero")
    num = np.trim_zeros(num, "f") if np.any(num) else np.zeros(1)
    if num.size > den.size:
        raise ValueError("synapse: the transfer function is improper (numerator above denominator degree)")
    num, den = num / den[0], den / den[0]
    n = den.size - 1
    num = np.concatenate([np.zeros(den.size - num.size), num])
    D = np.array([[num[0]]])
    if n == 0:
        return np.zeros((0, 0)), np.zeros((0, 1)), np.zeros((1, 0)), D
    A = np.zeros((n, n))
    A[0, :] = -den[1:]
    A[1:, :-1] = np.eye(n - 1)
    B = np.eye(n, 1)
    C = (num[1:] - num[0] * den[1:]).reshape(1, n)
    return A, B, C, D


def discretize(num: Any, den: Any, dt: float, analog: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, C, D)`` of ``num/den`` in controller canonical form, discretized by zero-order
    hold at ``dt``: ``expm([[A, B], [0, 0]]·dt)`` gives ``A_d`` and ``B_d``
    (``scipy.signal.cont2discrete``, method ``zoh``)."""
    A, B, C, D = tf2ss(num, den)
    n = len(A)
    if analog and n > 0:
        from scipy.linalg import expm  # type: ignore[import-untyped]

        M = np.zeros((n + 1, n + 1))
        M[:n, :n], M[:n, n:] = A, B
        E = expm(M * dt)
        A, B = E[:n, :n], E[:n, n:]
    return A, B, C, D


class FilterStep:
    """One filter over signals of shape ``(..., size)``: ``__call__(u)`` advances one step and
    returns ``y`` (nengo's step classes)."""

    def __init__(self, A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray, shape: tuple[int, ...]) -> None:
        self.A, self.B, self.C, self.D = (np.asarray(m, float) for m in (A, B, C, D))
        self.n = self.A.shape[0]
        self.X = np.zeros((self.n,) + tuple(shape))
        self.d = float(self.D.reshape(-1)[0]) if self.D.size else 0.0
        if self.n == 1 and self.d == 0.0:
            self.kind = "onex"
            self.a = float(self.A.item())
            self.b = float(self.C.item() * self.B.item())
        elif self.n == 0:
            self.kind = "nox"
        elif self.d == 0.0:
            self.kind = "nod"
        else:
            self.kind = "general"

    def __call__(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "nox":
            return self.d * u
        if self.kind == "onex":
            self.X *= self.a
            self.X += self.b * u
            return self.X[0]
        Bv = self.B.reshape((self.n,) + (1,) * u.ndim)
        if self.kind == "nod":
            self.X[:] = np.tensordot(self.A, self.X, axes=([1], [0])) + Bv * u
            return np.tensordot(self.C, self.X, axes=([1], [0]))[0]
        y = np.tensordot(self.C, self.X, axes=([1], [0]))[0] + self.d * u
        self.X[:] = np.tensordot(self.A, self.X, axes=([1], [0])) + Bv * u
        return y
