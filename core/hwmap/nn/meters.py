"""Activation sparsity meters: spatial and temporal sparsity per layer, measured on data.

What a zero-skipping target can skip (the chapter's Section 3.3, Fig. 3.4: a multiplication
whose activation operand is zero need not be done):

* ``spatial``: the fraction of exact zeros in a layer's output, over all frames (a ReLU's
  zeros; for a :class:`~hwmap.nn.delta.TemporalDelta`, the zeros of the quantized
  activation it receives);
* ``temporal``: the fraction of output elements exactly equal to the same element in the
  previous frame of the same sequence (frames 2..T): what a delta layer would not transmit.
  The definition of :func:`hwmap.sparsity.measure` with ``act_bits=None`` (exact equality;
  :func:`hwmap.profile.profile` compares ``act_bits``-bit codes instead, so it finds at least
  as many unchanged elements), except that frames of different sequences are never compared;
* ``transmitted``: the fraction of zeros in what the layer sends to the next: the delta map
  ``ΔZ`` for a temporal delta layer (its first frame, ``ΔZ_1 = Z_1``, included), the output
  itself (= ``spatial``) for any other layer.

:class:`SparsityMeter` hooks the layers of any ``nn.Module`` that takes frames batch first
(frames of a sequence consecutive, ``timesteps`` per sequence) and counts over every forward
call while it is active; :func:`measure_sparsity` runs data through a model under one. For a
:class:`~hwmap.nn.delta.DeltaNet` the time steps are read from its ``(N, T, ...)`` input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import DataError
from .delta import ACTIVATIONS, DeltaNet, TemporalDelta

__all__ = ["LayerSparsity", "SparsityMeter", "measure_sparsity", "default_layers", "weighted"]


@dataclass
class LayerSparsity:
    """One layer's sparsities (fractions 0..1) over ``frames`` frames of ``elements`` each;
    ``temporal`` is ``None`` with one frame per sequence."""

    name: str
    elements: int
    frames: int
    spatial: float
    temporal: float | None
    transmitted: float


def weighted(rows: list[LayerSparsity], key: str) -> float | None:
    """The element-weighted mean of ``key`` over ``rows`` (``None`` if any is ``None``)."""
    vals = [getattr(r, key) for r in rows]
    if not rows or any(v is None for v in vals):
        return None
    total = sum(r.elements for r in rows)
    return sum(v * r.elements for v, r in zip(vals, rows)) / total


def default_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The temporal delta layers of ``model`` if it has any, else its activation modules."""
    deltas: dict[str, nn.Module] = {getattr(m, "name", "") or n: m for n, m in model.named_modules() if isinstance(m, TemporalDelta)}
    if deltas:
        return deltas
    return {n: m for n, m in model.named_modules() if isinstance(m, ACTIVATIONS)}


class _Count:
    def __init__(self) -> None:
        self.elements = 0
        self.frames = 0
        self.zeros = 0
        self.same = 0
        self.pairs = 0
        self.sent_zeros = 0


class SparsityMeter:
    """Count zeros and unchanged elements in the outputs of ``layers`` (name -> module;
    default :func:`default_layers`) during forward calls inside ``with``.

    ``timesteps``: frames per sequence in the hooked modules' batch (``None``: 1, or a
    :class:`DeltaNet`'s ``T``)."""

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module] | None = None,
                 timesteps: int | None = None) -> None:
        self.model = model
        self.layers = dict(layers) if layers is not None else default_layers(model)
        if not self.layers:
            raise DataError("no layers to meter: the model has no activation or temporal delta layer",
                            where=f"model {type(model).__name__}")
        if timesteps is not None and (isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1):
            raise DataError(f"timesteps {timesteps!r}: must be a positive integer")
        self.timesteps = timesteps or 1
        self._counts = {name: _Count() for name in self.layers}
        self._handles: list[Any] = []

    def __enter__(self) -> "SparsityMeter":
        if isinstance(self.model, DeltaNet):
            self._handles.append(self.model.register_forward_pre_hook(self._read_steps))
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _read_steps(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.timesteps = int(args[0].shape[1])

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            c = self._counts[name]
            t = self.timesteps
            y = out.detach()
            if y.shape[0] % t:
                raise DataError(f"{y.shape[0]} frames are not whole sequences of {t} steps", where=f"layer {name!r}")
            seq = y.reshape(y.shape[0] // t, t, -1)
            c.elements = seq.shape[2]
            c.frames += seq.shape[0] * t
            c.zeros += int((seq == 0).sum())
            c.same += int((seq[:, 1:] == seq[:, :-1]).sum())
            c.pairs += seq.shape[0] * (t - 1)
            sent = module.delta if isinstance(module, TemporalDelta) and module.delta is not None else seq
            c.sent_zeros += int((sent.detach() == 0).sum())
        return hook

    def report(self) -> list[LayerSparsity]:
        """One row per metered layer, in the order given; layers that never ran are left out."""
        rows = []
        for name, c in self._counts.items():
            if c.frames == 0:
                continue
            n = c.elements * c.frames
            rows.append(LayerSparsity(name, c.elements, c.frames, c.zeros / n,
                                      c.same / (c.elements * c.pairs) if c.pairs else None, c.sent_zeros / n))
        return rows


def measure_sparsity(model: nn.Module, x: torch.Tensor, *, layers: Mapping[str, nn.Module] | None = None,
                     timesteps: int | None = None, batch: int = 64) -> list[LayerSparsity]:
    """Run ``x`` through ``model`` in evaluation mode, ``batch`` samples at a time, and return
    each metered layer's sparsities (:class:`SparsityMeter`); the model's mode is restored."""
    if batch < 1:
        raise DataError(f"batch {batch}: must be at least 1")
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), SparsityMeter(model, layers, timesteps) as meter:
            for start in range(0, x.shape[0], batch):
                model(x[start:start + batch])
    finally:
        model.train(training)
    return meter.report()
