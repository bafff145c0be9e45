"""A layer of leaky integrate-and-fire neurons trained with surrogate gradients (PyTorch).

Discrete time is hwmap's LIF op (:mod:`hwmap.ops.neuron`): NIR's LIF, ``tau dv/dt =
(v_leak - v) + r I``, integrated by forward Euler at step ``dt`` with ``r = 1`` and
``v_leak = 0``; every state starts at 0. One step, for an input current ``I[t]``::

    I[t]  += W_rec · s[t-1]                      (recurrent layers only; s[-1] = 0)
    v'     = v + dt/tau · ((v_leak - v) + r·I[t])
    s[t]   = H(v' - v_th)                        spike, eq. 3.1 (strict v' > v_th)
    v      = v'·(1 - s[t])                       reset="zero"     (NIR: v_reset = 0)
    v      = v' - v_th·s[t]                      reset="subtract" (no NIR form)

The backward pass replaces dH/du by a surrogate (:mod:`hwmap.nn.surrogates`): the chapter's
ReLU-shaped one (eqs. 3.2-3.3) or SuperSpike's fast sigmoid. The reset's own gradient path
is cut by default (``detach_reset``), as Zenke & Vogels found best ("The remarkable
robustness of surrogate gradient learning for instilling complex function in spiking neural
networks", Neural Comput. 33(4), 2021).

Trainable constants stay positive by construction:

* ``tau = dt / sigmoid(ρ)``: the Euler factor ``dt/tau = sigmoid(ρ)`` lies in (0, 1), so
  ``tau > dt > 0`` and the discrete update never overshoots (Perez-Nieves et al., "Neural
  heterogeneity promotes robust learning", Nat. Commun. 12, 5791, 2021, train per-neuron
  time constants the same way);
* ``v_th = softplus(ψ) > 0``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nirbuild import RESETS
from .surrogates import SURROGATES, spike

__all__ = ["LIF"]


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """ψ with ``softplus(ψ) = y`` for ``y > 0``: ``y + log(1 - exp(-y))``, stable for any y."""
    return y + torch.log(-torch.expm1(-y))


class LIF(nn.Module):
    """LIF neurons of feature shape ``shape``; input current ``(N, T, *shape)``, spikes out.

    ``dt`` and ``tau`` are in seconds (``tau > dt``), ``threshold`` > 0. ``per_neuron``
    gives each neuron its own ``tau`` and ``threshold`` (else one each for the layer);
    ``learn_tau``/``learn_threshold`` make them trainable. ``reset`` is ``"zero"`` or
    ``"subtract"``; ``surrogate`` is ``"relu"`` (eq. 3.2-3.3) or ``"fast_sigmoid"`` with
    slope ``beta``. ``recurrent`` adds all-to-all weights ``W_rec`` (1-D ``shape`` only)
    from the layer's spikes of the previous step.
    """

    def __init__(self, shape: int | Sequence[int], *, dt: float = 1e-3, tau: float = 2e-3, threshold: float = 1.0,
                 reset: str = "zero", surrogate: str = "relu", beta: float = 10.0, learn_tau: bool = True,
                 learn_threshold: bool = True, per_neuron: bool = True, recurrent: bool = False,
                 detach_reset: bool = True, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"shape {list(self.shape)} must be positive sizes")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        if not (math.isfinite(tau) and tau > dt):
            raise ValueError(f"tau must exceed dt = {dt} s (forward Euler needs dt/tau in (0, 1)), got {tau!r}")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        if reset not in RESETS:
            raise ValueError(f"reset {reset!r} is not one of {', '.join(RESETS)}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate {surrogate!r} is not one of {', '.join(SURROGATES)}")
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        if recurrent and len(self.shape) != 1:
            raise ValueError(f"recurrent weights need a 1-D layer, got shape {list(self.shape)}")
        self.dt, self.reset, self.surrogate, self.beta = float(dt), reset, surrogate, float(beta)
        self.detach_reset = detach_reset
        dtype = dtype or torch.get_default_dtype()
        pshape = self.shape if per_neuron else ()
        self.rho = nn.Parameter(_logit(torch.full(pshape, dt / tau, dtype=dtype)), requires_grad=learn_tau)
        self.psi = nn.Parameter(_softplus_inverse(torch.full(pshape, float(threshold), dtype=dtype)),
                                requires_grad=learn_threshold)
        self.w_rec: nn.Parameter | None = None
        if recurrent:
            n = self.shape[0]
            bound = 1.0 / math.sqrt(n)  # torch.nn.Linear's default range
            self.w_rec = nn.Parameter(torch.empty(n, n, dtype=dtype).uniform_(-bound, bound))

    # -- the constants, positive by construction ------------------------------------------
    @property
    def decay(self) -> torch.Tensor:
        """``dt / tau`` = sigmoid(ρ), in (0, 1)."""
        return torch.sigmoid(self.rho)

    @property
    def tau(self) -> torch.Tensor:
        """Membrane time constant in seconds, ``dt / sigmoid(ρ) > dt``."""
        return self.dt / self.decay

    @property
    def threshold(self) -> torch.Tensor:
        """Firing threshold ``softplus(ψ) > 0``."""
        return F.softplus(self.psi)

    @torch.no_grad()
    def set_constants(self, tau: torch.Tensor, threshold: torch.Tensor) -> None:
        """Set ``tau`` (seconds, > dt) and ``threshold`` (> 0), e.g. from exported arrays."""
        tau = torch.as_tensor(tau, dtype=self.rho.dtype).expand_as(self.rho)
        threshold = torch.as_tensor(threshold, dtype=self.psi.dtype).expand_as(self.psi)
        if not bool((tau > self.dt).all()) or not bool((threshold > 0).all()):
            raise ValueError(f"need tau > dt = {self.dt} s and threshold > 0")
        self.rho.copy_(_logit(self.dt / tau))
        self.psi.copy_(_softplus_inverse(threshold))

    def forward(self, current: torch.Tensor, membrane: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Spikes ``(N, T, *shape)`` for input currents ``(N, T, *shape)``; with ``membrane``
        also the membrane potential ``v'`` of every step before its reset."""
        if current.dim() != len(self.shape) + 2 or tuple(current.shape[2:]) != self.shape:
            raise ValueError(f"input of shape {list(current.shape)}: expected (N, T, {', '.join(map(str, self.shape))})")
        decay, theta = self.decay, self.threshold
        v = current.new_zeros((current.shape[0], *self.shape))
        s = v
        spikes, potentials = [], []
        for t in range(current.shape[1]):
            i = current[:, t]
            if self.w_rec is not None:
                i = i + F.linear(s, self.w_rec)
            v = v + decay * ((0.0 - v) + i)  # v_leak = 0, r = 1: the core's expression term by term
            s = spike(v - theta, self.surrogate, self.beta)
            if membrane:
                potentials.append(v)
            r = s.detach() if self.detach_reset else s
            v = v * (1 - r) if self.reset == "zero" else v - theta * r
            spikes.append(s)
        out = torch.stack(spikes, dim=1)
        return (out, torch.stack(potentials, dim=1)) if membrane else out

    def extra_repr(self) -> str:
        rec = ", recurrent" if self.w_rec is not None else ""
        return f"shape={list(self.shape)}, dt={self.dt}, reset={self.reset}, surrogate={self.surrogate}{rec}"
