"""Quantizers for training: fixed point (eq. 3.9–3.11) and learned step size (eq. 3.12–3.14).

* :class:`FixedPointQuantizer` — the chapter's fixed-point format (Section 3.3.3.3,
  :mod:`hwmap.passes.fixed_point` for the formulas): scale ``2^-F`` with ``F = BW - I - 1``
  and ``I = 1 + floor(log2 max|x|)``. ``range="tensor"`` takes ``max|x|`` from the tensor
  itself at every call (weights); ``range="running"`` (activations) keeps the largest
  magnitude seen in training mode in a buffer and uses it, so that the format of a layer is
  fixed once trained, in evaluation and in export. The gradient is the straight-through
  estimator: 1 where the value is inside the representable range, 0 where it was clipped.
* :class:`LSQQuantizer` — Esser, McKinstry, Bablani, Appuswamy and Modha, "Learned step size
  quantization", ICLR 2020 (*Esser 2020*): ``v̂ = round(clip(v/s, -Q_N, Q_P))·s`` with the
  step ``s`` a parameter (per tensor or per channel) whose gradient is
  ``round(v/s) - v/s`` inside the range and ``-Q_N`` or ``Q_P`` outside (Esser 2020 eq. 3;
  the chapter's eq. 3.12), scaled by ``g = 1/sqrt(N·Q_P)`` (``N``: the elements one step
  quantizes per sample, Esser 2020 Section 2.2), and initialized to ``2·mean(|v|)/sqrt(Q_P)``
  on the first batch (the step used is its magnitude, so an update past zero cannot make it
  negative). ``Q_N = 0, Q_P = 2^b - 1`` unsigned and ``Q_N = 2^(b-1), Q_P =
  2^(b-1) - 1`` signed (Esser 2020; the chapter writes ``2^(b-1)`` for the unsigned ``Q_P``).
  With ``clip=False`` it is the chapter's variant inside the temporal delta layer (eq. 3.13,
  3.14): ``q = round(v/s)·s`` with no clip, so the bit width is not fixed in advance; each
  step's largest code in training gives the bits that channel ends up needing
  (:meth:`LSQQuantizer.required_bits`): mixed precision. Its step starts at the ``init_bits``
  initialization and its gradient is not rescaled unless ``grad_scale`` says so.

Export. In evaluation mode every quantizer computes through
``torch.fake_quantize_per_tensor_affine`` (or ``..._per_channel_affine`` for per-channel
steps) with its scale as a constant, a zero point of 0 and its exact code range: a whole
signed ``[-2^(b-1), 2^(b-1)-1]`` or unsigned ``[0, 2^b-1]`` range of ``b`` bits (an unclipped
LSQ step: the bits its widest channel reached in training, the widest channel's range for
all channels of the tensor). ``torch.onnx.export(..., dynamo=False)`` writes an 8-bit one
(int8 ``[-128, 127]``, uint8 ``[0, 255]``) as ``QuantizeLinear``/``DequantizeLinear``; other
widths have no QDQ form in PyTorch's exporter and go out as QONNX ``Quant``
(:mod:`hwmap.nn.onnx_export`, where installed). :meth:`annotation` gives the quantizer as
hwmap's :class:`~hwmap.graph.QuantAnnotation` (scale, zero point 0, bits, signedness, axis).

Bad settings (a bit width below 2, a non-positive gradient scale) raise :class:`~hwmap.errors.ModelError`
naming the layer and the value.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..graph import QuantAnnotation
from ..passes.fixed_point import MAX_BITS, MIN_BITS, fixed_point_format

__all__ = ["FixedPointQuantizer", "LSQQuantizer", "fake_quantize", "lsq_levels", "QuantConv2d", "QuantLinear",
           "check_layer_bits"]


def check_layer_bits(bits: object, layer: str, what: str = "bit width") -> int:
    """``bits`` if it is an integer from 2 to 32, else a :class:`ModelError` naming ``layer``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ModelError(f"{what} {bits!r}: must be an integer", where=f"layer {layer!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ModelError(f"{what} {bits} is out of range: must be from {MIN_BITS} (a sign bit and one more) "
                         f"to {MAX_BITS}", where=f"layer {layer!r}")
    return bits


def lsq_levels(bits: int, signed: bool) -> tuple[int, int]:
    """``(Q_N, Q_P)`` of Esser 2020: the negative and positive code counts on ``bits``."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def fake_quantize(x: torch.Tensor, scale: float | torch.Tensor, qmin: int, qmax: int,
                  axis: int | None = None) -> torch.Tensor:
    """``clip(round(x/scale), qmin, qmax)·scale`` (zero point 0, rounding half to even)
    through torch's fake-quantize ops: per tensor for a float ``scale``, per channel along
    ``axis`` for a 1-D tensor. The gradient is 1 where the code is inside the range, else 0."""
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, qmin, qmax)
    st = torch.as_tensor(scale, dtype=torch.float32).detach()
    zp = torch.zeros(st.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(x, st, zp, axis, qmin, qmax)


class FixedPointQuantizer(nn.Module):
    """Fixed-point quantization, eq. 3.9–3.11, with a straight-through gradient.

    ``bits``: the word width BW (2 to 32). ``range``: ``"tensor"`` (``max|x|`` of each input:
    weights) or ``"running"`` (the largest magnitude seen in training mode: activations; in
    evaluation mode the stored one, or the input's own if none was seen yet). ``name``
    labels the layer in errors.
    """

    max_abs: torch.Tensor
    seen: torch.Tensor

    def __init__(self, bits: int = 8, *, range: Literal["tensor", "running"] = "running", name: str = "") -> None:
        super().__init__()
        self.name = name or "fixed_point"
        self.bits = check_layer_bits(bits, self.name)
        if range not in ("tensor", "running"):
            raise ModelError(f"range {range!r}: must be 'tensor' or 'running'", where=f"layer {self.name!r}")
        self.range = range
        self.register_buffer("max_abs", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def current_max(self, x: torch.Tensor | None = None) -> float:
        """The ``max|x|`` the format is chosen for: ``x``'s own (``range="tensor"``, or nothing
        seen yet), else the largest magnitude seen in training. No side effect."""
        if self.range == "tensor" or not bool(self.seen):
            return float(x.detach().abs().max()) if x is not None and x.numel() else 0.0
        return float(self.max_abs)

    def format(self, x: torch.Tensor | None = None) -> tuple[int, int]:
        """``(I, F)``: the integer (eq. 3.9) and fraction (eq. 3.10) bits used for ``x``."""
        f = fixed_point_format(self.current_max(x), self.bits)
        return f.integer_bits, f.fraction_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.range == "running" and self.training and x.numel():
            with torch.no_grad():
                self.max_abs.fill_(max(float(self.max_abs), float(x.detach().abs().max())))
                self.seen.fill_(True)
        f = fixed_point_format(self.current_max(x), self.bits)
        return fake_quantize(x, f.scale, f.qmin, f.qmax)

    def annotation(self, x: torch.Tensor | None = None) -> QuantAnnotation:
        """This quantizer as hwmap's annotation (``x``: the weight, for ``range="tensor"``)."""
        f = fixed_point_format(self.current_max(x), self.bits)
        return QuantAnnotation(scale=np.asarray(f.scale), zero_point=np.asarray(0.0), bits=self.bits, signed=True)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range={self.range!r}"


def _scale_grad(s: torch.Tensor, g: float) -> torch.Tensor:
    """``s`` in the forward pass, its gradient times ``g`` in the backward (Esser 2020, Fig. 2)."""
    return (s - s * g).detach() + s * g


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient (straight through)."""
    return (torch.round(v) - v).detach() + v


class LSQQuantizer(nn.Module):
    """Learned step size quantization (Esser 2020; the chapter's eq. 3.12–3.14).

    ``bits``: the bit width (clipped form) or, with ``clip=False``, only the width the step is
    initialized for (``init_bits`` overrides it). ``signed``: codes below zero (weights) or
    not (activations after a ReLU). ``channels``: one step per channel along ``axis`` (the
    feature axis, 1 for ``(N, C, ...)``), or ``None`` for one step per tensor. ``weight``:
    the quantized tensor is a weight (``N`` in ``g`` counts all its elements) rather than an
    activation (``N`` counts the elements of one sample). ``grad_scale``: overrides ``g``
    (the unclipped form uses 1 by default: eq. 3.14 as written).
    """

    initialized: torch.Tensor
    max_code: torch.Tensor

    def __init__(self, bits: int = 8, *, signed: bool = False, channels: int | None = None, axis: int = 1,
                 clip: bool = True, init_bits: int | None = None, weight: bool = False,
                 grad_scale: float | None = None, name: str = "") -> None:
        super().__init__()
        self.name = name or "lsq"
        self.bits = check_layer_bits(bits, self.name)
        self.init_bits = check_layer_bits(init_bits if init_bits is not None else bits, self.name, "init_bits")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ModelError(f"channels {channels!r}: must be a positive integer or None", where=f"layer {self.name!r}")
        if grad_scale is not None and not (math.isfinite(grad_scale) and grad_scale > 0):
            raise ModelError(f"grad_scale {grad_scale!r}: must be a positive number", where=f"layer {self.name!r}")
        self.signed, self.channels, self.axis, self.clip, self.weight = signed, channels, axis, clip, weight
        self.grad_scale = grad_scale
        self.step = nn.Parameter(torch.ones(channels if channels is not None else ()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # The largest |code| each step produced in training: the bits it needs (clip=False).
        self.register_buffer("max_code", torch.zeros(channels if channels is not None else ()))

    @property
    def levels(self) -> tuple[int, int]:
        """``(Q_N, Q_P)`` of the clipped form (of ``init_bits`` for the unclipped one)."""
        return lsq_levels(self.bits if self.clip else self.init_bits, self.signed)

    def _reduce_dims(self, x: torch.Tensor) -> list[int]:
        return [d for d in range(x.dim()) if self.channels is None or d != self.axis % x.dim()]

    def _broadcast(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return s
        if x.shape[self.axis] != self.channels:
            raise ModelError(f"input has {x.shape[self.axis]} channels along axis {self.axis}, the quantizer "
                             f"{self.channels}", where=f"layer {self.name!r}")
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return s.reshape(shape)

    def elements_per_step(self, x: torch.Tensor) -> int:
        """``N`` of ``g = 1/sqrt(N·Q_P)``: the elements one step quantizes (per sample for activations)."""
        n = x.numel() if self.weight else x[0].numel() if x.dim() > 0 else 1
        return max(1, n // (self.channels or 1))

    def gradient_scale(self, x: torch.Tensor) -> float:
        """``g``: ``grad_scale`` if set, 1 unclipped, else ``1/sqrt(N·Q_P)`` (Esser 2020)."""
        if self.grad_scale is not None:
            return self.grad_scale
        return 1.0 / math.sqrt(self.elements_per_step(x) * self.levels[1]) if self.clip else 1.0

    def initialize(self, x: torch.Tensor) -> None:
        """``s = 2·mean(|v|)/sqrt(Q_P)`` per step (Esser 2020, Section 2.1); a channel that is
        all zero on this batch starts at the step of the whole tensor instead."""
        with torch.no_grad():
            whole = 2.0 * x.detach().abs().mean() / math.sqrt(self.levels[1])
            m = x.detach().abs().mean(dim=self._reduce_dims(x)) if x.dim() else x.detach().abs()
            s = torch.where(m > 0, 2.0 * m / math.sqrt(self.levels[1]), whole)
            tiny = torch.finfo(self.step.dtype).tiny
            self.step.copy_(torch.clamp(s.to(self.step.dtype), min=tiny))
            self.initialized.fill_(True)

    def effective_step(self) -> torch.Tensor:
        """The step used: ``|s|`` (at least the smallest normal float), so that an optimizer
        update past zero cannot make a step negative."""
        return torch.clamp(self.step.abs(), min=torch.finfo(self.step.dtype).tiny)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.initialize(x)
        qn, qp = self.levels
        if not self.training:
            return self._evaluate(x, qn, qp)
        s = self._broadcast(_scale_grad(self.effective_step(), self.gradient_scale(x)), x).to(x.dtype)
        v = x / s
        if self.clip:
            v = torch.clamp(v, -qn, qp)
        codes = _round_ste(v)
        with torch.no_grad():
            reach = codes.detach().abs().amax(dim=self._reduce_dims(x)) if x.dim() else codes.detach().abs()
            self.max_code.copy_(torch.maximum(self.max_code, reach.to(self.max_code.dtype)))
        return codes * s

    def export_bits(self) -> int:
        """The bits of the range evaluation and export use: the clipped width; unclipped, the
        widest channel's :meth:`required_bits` (``init_bits`` before any code was seen)."""
        if self.clip:
            return self.bits
        return max(self.required_bits()) if float(self.max_code.max()) > 0 else self.init_bits

    def _evaluate(self, x: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
        if not self.clip:
            qn, qp = lsq_levels(self.export_bits(), self.signed)
        axis = None if self.channels is None else self.axis % x.dim()
        # the step as a constant (not the ops computing it from the parameter): an export
        # then holds just the scale initializer of QuantizeLinear/DequantizeLinear
        step = torch.tensor(self.effective_step().detach().tolist(), dtype=torch.float32)
        return fake_quantize(x, step if axis is not None else float(step), -qn, qp, axis)

    def reset_bits(self) -> None:
        """Forget the largest codes seen: to measure the bits the trained steps need on some
        data, call this, then run the data in training mode under ``torch.no_grad()``."""
        with torch.no_grad():
            self.max_code.zero_()

    def required_bits(self) -> list[int]:
        """The bits each step's codes need: the clipped width, or (unclipped) from the largest
        code seen in training, ``ceil(log2(max+1))`` plus a sign bit if signed, at least 1."""
        if self.clip:
            return [self.bits] * (self.channels or 1)
        codes = self.max_code.reshape(-1).tolist()
        return [max(1, math.ceil(math.log2(c + 1))) + (1 if self.signed else 0) for c in codes]

    def annotation(self) -> QuantAnnotation:
        """This quantizer as hwmap's annotation: scale = step, zero point 0, the bits of
        :meth:`export_bits`, per channel along ``axis`` if per channel."""
        scale = self.effective_step().detach().double().numpy()
        return QuantAnnotation(scale=scale, zero_point=scale * 0.0, bits=self.export_bits(),
                               signed=self.signed, axis=self.axis if self.channels is not None else None)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, signed={self.signed}, channels={self.channels}, clip={self.clip}"
                + ("" if self.clip else f", init_bits={self.init_bits}"))


class _QuantWeight:
    """Shared by :class:`QuantConv2d` and :class:`QuantLinear`: the weight as quantized."""

    weight_quant: nn.Module | None

    def effective_weight(self) -> torch.Tensor:
        w: torch.Tensor = getattr(self, "weight")
        return w if self.weight_quant is None else self.weight_quant(w)


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """``nn.Conv2d`` whose weight goes through ``weight_quant`` (a quantizer module) first."""

    def __init__(self, *args: object, weight_quant: nn.Module | None = None, **kwargs: object) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self.weight_quant = weight_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class QuantLinear(_QuantWeight, nn.Linear):
    """``nn.Linear`` whose weight goes through ``weight_quant`` (a quantizer module) first."""

    def __init__(self, *args: object, weight_quant: nn.Module | None = None, **kwargs: object) -> None:
        nn.Linear.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self.weight_quant = weight_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)
