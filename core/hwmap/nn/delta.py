"""The temporal delta layer and the network that runs it (the chapter's Section 3.3, eq. 3.6–3.8, 3.15).

A :class:`TemporalDelta` sits after an activation. It quantizes the activation ``Z_t``
(fixed point or LSQ, :mod:`hwmap.nn.quant`: FP32 activations of consecutive frames are
similar but seldom equal, Section 3.3.3.2) and passes on only the change from the previous
frame, ``ΔZ_t = Z_t - Z_{t-1}`` with ``Z_0 = 0`` (eq. 3.8). The layer after it accumulates:
``Y_t = Y_{t-1} + W·ΔZ_t`` with ``Y_0 = B`` (eq. 3.6, 3.7), which equals the dense
``W·Z_t + B`` at every step, so a zero-skipping target does only the work of the non-zero
deltas for the same result.

:class:`DeltaNet` holds the layers (like ``nn.Sequential``) and runs sequences ``(N, T,
*frame)`` two ways:

* ``forward``: dense and time-distributed (every frame through every layer, as the chapter
  trains). Each delta layer passes the quantized ``Z_t`` on and keeps the delta map
  ``ΔZ`` of the sequence for the sparsity penalty (eq. 3.15, :meth:`DeltaNet.sparsity_penalty`)
  and the meters (:mod:`hwmap.nn.meters`). Gradients flow through the quantizers' straight-
  through estimators and through ``ΔZ`` into the penalty.
* :meth:`DeltaNet.stream`: delta inference, frame by frame, each delta layer transmitting
  ``ΔZ_t`` and each layer after it accumulating ``Y_t`` as eq. 3.7 does. It equals
  ``forward`` to float rounding (the tests check it).

In delta inference the run of linear layers after a delta layer (``Conv1d/2d``, ``Linear``,
``Flatten``, average pooling, ``Identity``, ``Dropout``: :data:`LINEAR_LAYERS`) takes the
deltas through its bias-free part and accumulates; the first other layer (the activation,
max pooling, ...) and everything after it up to the next delta layer run on the accumulated
``Y_t``, densely. Checked when the net is built (a :class:`~hwmap.errors.ModelError` names
the layer and the value): a delta layer follows an activation (pooling may stand between
them); the penalty coefficient ``λ`` is not negative.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError

__all__ = ["TemporalDelta", "DeltaNet", "ACTIVATIONS", "LINEAR_LAYERS", "POOLS", "check_penalty"]

#: Modules that count as activations: a delta layer must come after one.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Mish)
#: Pooling allowed between an activation and its delta layer.
POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
#: Layers whose bias-free part is linear: they may take deltas (eq. 3.6).
LINEAR_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Flatten, nn.AvgPool1d,
                                              nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Dropout)


def check_penalty(value: object, layer: str) -> float:
    """``value`` as a float if it is a finite number ≥ 0, else a ModelError naming ``layer``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"sparsity penalty λ = {value!r}: must be a finite number", where=f"layer {layer!r}")
    if value < 0:
        raise ModelError(f"sparsity penalty λ = {value}: must not be negative", where=f"layer {layer!r}")
    return float(value)


class TemporalDelta(nn.Module):
    """Quantize an activation and pass on its change from the previous frame (eq. 3.8).

    ``quantizer``: a module applied to the activation first (``None``: FP32, which makes few
    exact zeros). ``penalty``: ``λ`` of eq. 3.15 for this layer's delta map. ``name`` labels
    the layer in errors and meters.
    """

    def __init__(self, quantizer: nn.Module | None = None, penalty: float = 0.0, name: str = "") -> None:
        super().__init__()
        self.name = name or "delta"
        self.quantizer = quantizer
        self.penalty = check_penalty(penalty, self.name)
        self.timesteps = 1
        self.streaming = False
        self.delta: torch.Tensor | None = None  # the last delta map: (N, T, ...) or one frame's
        self._previous: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the previous frame (a new sequence starts: ``Z_0 = 0``)."""
        self._previous = None
        self.delta = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.quantizer(z) if self.quantizer is not None else z
        if self.streaming:
            d = q if self._previous is None else q - self._previous
            self._previous = q
            self.delta = d
            return d
        t = self.timesteps
        if q.shape[0] % t:
            raise ModelError(f"{q.shape[0]} frames are not whole sequences of {t} steps", where=f"layer {self.name!r}")
        seq = q.reshape(q.shape[0] // t, t, *q.shape[1:])
        self.delta = torch.cat([seq[:, :1], seq[:, 1:] - seq[:, :-1]], dim=1)
        return q

    def penalty_term(self) -> torch.Tensor:
        """``λ · ||ΔZ||_1 / size(ΔZ)`` of the last sequence (eq. 3.15); 0 before any."""
        if self.delta is None or self.penalty == 0.0:
            return torch.zeros(())
        return self.penalty * self.delta.abs().sum() / self.delta.numel()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, penalty={self.penalty}"


def _layer_name(i: int, m: nn.Module) -> str:
    return getattr(m, "name", "") or f"{i}:{type(m).__name__}"


def _bias_free(m: nn.Module, d: torch.Tensor) -> torch.Tensor:
    """The linear part of a layer applied to a delta (its bias removed, eq. 3.6)."""
    w = getattr(m, "effective_weight")() if hasattr(m, "effective_weight") else getattr(m, "weight", None)
    if isinstance(m, nn.Conv2d):
        return F.conv2d(d, w, None, m.stride, m.padding, m.dilation, m.groups)  # type: ignore[arg-type]
    if isinstance(m, nn.Conv1d):
        return F.conv1d(d, w, None, m.stride, m.padding, m.dilation, m.groups)  # type: ignore[arg-type]
    if isinstance(m, nn.Linear):
        return F.linear(d, w)  # type: ignore[arg-type]
    return m(d)  # Flatten, average pooling, Identity, Dropout (in eval): linear without a bias


class DeltaNet(nn.Module):
    """A feed-forward net over sequences with temporal delta layers (see the module docstring).

    ``layers`` run in order on frames; ``forward`` takes ``(N, T, *frame)`` and returns
    ``(N, T, *out)``.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._check()

    def _check(self) -> None:
        layers = list(self.layers)
        for i, m in enumerate(layers):
            if not isinstance(m, TemporalDelta):
                continue
            j = i - 1
            while j >= 0 and isinstance(layers[j], POOLS):
                j -= 1
            if j < 0 or not isinstance(layers[j], ACTIVATIONS):
                before = "nothing" if j < 0 else f"{_layer_name(j, layers[j])!r} ({type(layers[j]).__name__})"
                raise ModelError(f"a temporal delta layer must follow an activation, it follows {before}",
                                 where=f"layer {_layer_name(i, m)!r}")

    def deltas(self) -> Iterator[TemporalDelta]:
        """The temporal delta layers, in order."""
        return (m for m in self.layers if isinstance(m, TemporalDelta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        for d in self.deltas():
            d.timesteps, d.streaming = t, False
        h = x.reshape(n * t, *x.shape[2:])
        for m in self.layers:
            h = m(h)
        return h.reshape(n, t, *h.shape[1:])

    def frame_model(self) -> nn.Sequential:
        """The per-frame dense model delta inference computes (eq. 3.7): the same layers, each
        delta layer replaced by its quantizer (or nothing). What to export or profile per frame;
        it shares this net's modules."""
        return nn.Sequential(*[(m.quantizer or nn.Identity()) if isinstance(m, TemporalDelta) else m
                               for m in self.layers])

    def sparsity_penalty(self) -> torch.Tensor:
        """Σ over delta layers of ``λ·||ΔZ||_1/size`` for the last ``forward`` (eq. 3.15)."""
        total = torch.zeros(())
        for d in self.deltas():
            total = total + d.penalty_term()
        return total

    @torch.no_grad()
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Delta inference on ``(N, T, *frame)``: per frame, delta layers transmit ``ΔZ_t`` and
        the linear layers after each accumulate ``Y_t = Y_{t-1} + W·ΔZ_t``, ``Y_0 = B``
        (eq. 3.6–3.8). Returns ``(N, T, *out)``; the layers' state is reset first. Runs in
        evaluation mode (quantizer ranges fixed), restoring the mode afterwards."""
        layers = list(self.layers)
        training = self.training
        self.eval()
        starts = [i for i, m in enumerate(layers) if isinstance(m, TemporalDelta)]
        # The linear run after each delta layer: layers[i+1 : end] accumulate.
        ends = {}
        for i in starts:
            k = i + 1
            while k < len(layers) and isinstance(layers[k], LINEAR_LAYERS) and not isinstance(layers[k], TemporalDelta):
                k += 1
            ends[i] = k
        for d in self.deltas():
            d.reset()
            d.streaming = True
        acc: dict[int, torch.Tensor] = {}
        outs = []
        try:
            for step in range(x.shape[1]):
                h = x[:, step]
                i = 0
                while i < len(layers):
                    m = layers[i]
                    if i not in ends:
                        h = m(h)
                        i += 1
                        continue
                    change = m(h)
                    if i not in acc:  # Y_0: the affine run applied to zero, i.e. its bias (eq. 3.7)
                        y0 = torch.zeros_like(change)
                        for lin in layers[i + 1:ends[i]]:
                            y0 = lin(y0)
                        acc[i] = y0
                    for lin in layers[i + 1:ends[i]]:
                        change = _bias_free(lin, change)
                    acc[i] = acc[i] + change
                    h = acc[i]
                    i = ends[i]
                outs.append(h)
        finally:
            for d in self.deltas():
                d.streaming = False
            self.train(training)
        return torch.stack(outs, dim=1)
