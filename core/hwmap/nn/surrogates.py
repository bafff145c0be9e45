"""The spike nonlinearity and its surrogate gradients (PyTorch).

Forward, every surrogate is the chapter's spike function (Section 3.2.4, eq. 3.1)::

    S(V_mem) = H(V_mem - V_th)        1 where V_mem > V_th (strict, as NIR and hwmap's LIF)

whose derivative is zero almost everywhere. Backward, the derivative of a smooth stand-in
Ŝ replaces it (Neftci, Mostafa & Zenke, "Surrogate gradient learning in spiking neural
networks", IEEE Signal Process. Mag. 36(6), 2019). With ``u = V_mem - V_th``:

``relu``
    The chapter's ReLU-shaped surrogate, eq. 3.2: ``Ŝ(u) = max(u, 0)``; its derivative,
    eq. 3.3, is ``dŜ/du = [u > 0]`` — the spike itself. Only neurons that fire pass a
    gradient.
``fast_sigmoid``
    SuperSpike's (Zenke & Ganguli, "SuperSpike: supervised learning in multilayer spiking
    neural networks", Neural Comput. 30(6), 2018): ``Ŝ(u) = u / (1 + β|u|)`` with
    ``dŜ/du = 1 / (1 + β|u|)²``; every neuron passes a gradient that decays with its
    distance ``|u|`` from the threshold, ``β`` setting the width.

:func:`spike` is the autograd function; :func:`surrogate` and :func:`surrogate_grad` are
Ŝ and its derivative as plain tensor expressions (what the tests check :func:`spike`'s
backward against, numerically and analytically).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SURROGATES", "spike", "surrogate", "surrogate_grad"]

#: The surrogate names :func:`spike` takes.
SURROGATES = ("relu", "fast_sigmoid")


def _check(kind: str, beta: float) -> None:
    if kind not in SURROGATES:
        raise ValueError(f"surrogate {kind!r} is not one of {', '.join(SURROGATES)}")
    if not beta > 0:
        raise ValueError(f"surrogate slope beta must be positive, got {beta!r}")


def surrogate(u: torch.Tensor, kind: str = "relu", beta: float = 10.0) -> torch.Tensor:
    """Ŝ(u): ``max(u, 0)`` (eq. 3.2) or ``u / (1 + β|u|)`` (SuperSpike)."""
    _check(kind, beta)
    if kind == "relu":
        return torch.clamp(u, min=0)
    return u / (1 + beta * u.abs())


def surrogate_grad(u: torch.Tensor, kind: str = "relu", beta: float = 10.0) -> torch.Tensor:
    """dŜ/du: ``[u > 0]`` (eq. 3.3) or ``1 / (1 + β|u|)²`` (SuperSpike)."""
    _check(kind, beta)
    if kind == "relu":
        return (u > 0).to(u.dtype)
    return 1.0 / (1 + beta * u.abs()) ** 2


class _Spike(torch.autograd.Function):
    """H(u) forward (eq. 3.1), dŜ/du backward."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, kind: str, beta: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.kind, ctx.beta = kind, beta
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * surrogate_grad(u, ctx.kind, ctx.beta), None, None


def spike(u: torch.Tensor, kind: str = "relu", beta: float = 10.0) -> torch.Tensor:
    """Spikes ``H(u)`` (1.0 where ``u > 0``, else 0.0) with the surrogate gradient of ``kind``.

    ``u`` is ``V_mem - V_th``; ``beta`` is the fast sigmoid's slope (unused by ``relu``).
    """
    _check(kind, beta)
    return _Spike.apply(u, kind, float(beta))
