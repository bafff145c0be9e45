"""The fused epilogue of a crossbar layer: dequantization, clamping post-ops and the
re-quantization of the output to its declared grid in one compiled pass.

Unfused, the simulator turns a layer's integer accumulations into its output tensor in
three numpy stages, each a few passes over the data: :meth:`LayerBase.dequantize
<hwmap_analog_imc.crossbar.LayerBase.dequantize>` (``y = float32(s_x·s_w[c]·acc + bias[c])``,
float64 arithmetic), the fused post-ops through hwmap's reference semantics, and the hold of
the tensor on its grid (``float32(s·(clip(rint(y/s) + z, q_min, q_max) − z))``, float64). An
:class:`Epilogue` does the same IEEE operations in the same order on every element in one
compiled loop, so it gives the same bits:

* the post-ops it takes are the clamps, ``Relu`` and ``Clip`` with constant scalar bounds,
  each ``v ≥ lo ? v : lo`` then ``v ≤ hi ? v : hi`` in float32 (numpy's ``maximum`` and
  ``minimum`` on non-NaN operands; ``Relu`` is ``lo = 0``);
* the output must be declared quantized per tensor, so the sign of a zero a clamp keeps
  does not show (the hold maps ±0 to the same code);
* ``s_x·s_w``, the bias and the output's scale and zero point must be finite with
  ``|s_x·s_w|·2^53 + |bias|`` below float32's largest value: every exact accumulation then
  dequantizes to a finite float, so no NaN reaches a clamp.

A layer for which any of these fails, or whose accumulations are not laid out filter-major
(the folded kernel's convolutions are), keeps the three stages.

The pass also hands over codes: the folded layer reading the output would turn the held
tensor into its DAC codes (a division and a rounding per element); :func:`plan_handoffs`
tabulates, at load, that layer's own conversion of every value the output grid holds, and
the epilogue writes each element's code through the table (a shift where the table is one),
so the next layer skips its conversion and gets the same codes by construction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from hwmap import Node, QuantAnnotation

from .crossbar import F64_EXACT, LayerBase
from .fast_layer import FastLayer
from .fold_correct import jit

__all__ = ["Epilogue", "plan_handoffs"]

#: float32's largest finite value.
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Epilogue:
    """One layer's dequantization, clamps and hold, prepared at load."""

    scale: np.ndarray  # (G, F) float64: s_x·s_w
    bias: np.ndarray  # (G, F) float64 (zeros without a bias)
    has_bias: bool
    lo: np.ndarray  # (clamps,) float32
    hi: np.ndarray  # (clamps,) float32
    quant: np.ndarray  # (4,) float64: output scale, zero point, q_min, q_max
    out_shape: tuple[int, ...]

    @classmethod
    def of(cls, layer: LayerBase, postops: Sequence[tuple[Node, int]], quant: QuantAnnotation | None
           ) -> "Epilogue | None":
        """The epilogue of ``layer`` followed by ``postops`` (each its node and how many
        tensor operands it takes beside the layer's result), its output held on ``quant``;
        None where the fused pass would not give the unfused bits (see the module)."""
        rec = layer.rec
        if not rec.kernel or quant is None or quant.axis is not None:
            return None
        g, f = rec.groups, rec.filters
        scale = layer.scale.reshape(g, f)
        bias = np.zeros((g, f)) if layer.bias is None else layer.bias.reshape(g, f)
        qs, qz = float(quant.scale), float(quant.zero_point)
        if not (np.isfinite(scale).all() and np.isfinite(bias).all() and np.isfinite([qs, qz]).all() and qs != 0):
            return None
        if float(np.abs(scale).max(initial=0.0)) * F64_EXACT + float(np.abs(bias).max(initial=0.0)) >= _F32_MAX:
            return None
        bounds = [_clamp(node) if extra == 0 else None for node, extra in postops]
        if any(b is None for b in bounds):
            return None
        lo = np.array([b[0] for b in bounds if b is not None], dtype=np.float32)
        hi = np.array([b[1] for b in bounds if b is not None], dtype=np.float32)
        return cls(np.ascontiguousarray(scale), np.ascontiguousarray(bias), layer.bias is not None, lo, hi,
                   np.array([qs, qz, quant.qmin, quant.qmax], dtype=np.float64), tuple(layer.out_shape))

    def run(self, acc: np.ndarray, lut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The held output ``(N, G·F, *spatial)`` float32 of accumulations ``(N, G, P, F)``
        (a view of filter-major ones), and with ``lut`` (int32, the next layer's DAC code of
        every output code ``q_min .. q_max``, :meth:`handoff`) the next layer's codes
        ``(N, G·F·P)``; None when the accumulations are not filter-major."""
        f_major = acc.transpose(0, 1, 3, 2)
        if not f_major.flags.c_contiguous or f_major.dtype != np.float64:
            return None
        n, g, f, p = f_major.shape
        out = np.empty((n, g * f, p), dtype=np.float32)
        codes = np.empty((n, g * f * p) if lut is not None else (0, 0), dtype=np.int32)
        _finish(f_major, self.scale, self.bias, self.has_bias, self.lo, self.hi, self.quant, out,
                np.zeros(0, dtype=np.int32) if lut is None else lut, codes)
        return out.reshape(n, g * f, *self.out_shape), codes if lut is not None else None

    def handoff(self, codes_of: Callable[[np.ndarray], np.ndarray | None]) -> np.ndarray | None:
        """The table of the next layer's DAC codes of every output code: ``codes_of`` (the
        next layer's own conversion of float32 values to codes) applied to the values the
        hold gives each code ``q_min .. q_max``, so a code handed over is the one that layer
        would compute from the held tensor, by construction. None for grids over 2^16 codes
        or where ``codes_of`` gives none."""
        qs, qz, qmin, qmax = self.quant.tolist()
        if qmax - qmin >= 2**16:
            return None
        held = ((np.arange(qmin, qmax + 1, dtype=np.float64) - qz) * qs).astype(np.float32)
        lut = codes_of(held)
        return None if lut is None else np.ascontiguousarray(lut, dtype=np.int32)


def plan_handoffs(layers: Sequence[Any], epilogues: Sequence[Epilogue | None]
                  ) -> tuple[list[np.ndarray | None], list[bool]]:
    """Per layer, the table that turns its output codes into the DAC codes of the folded
    layer reading its output (:meth:`Epilogue.handoff`: that layer's own conversion of
    every value the grid holds), and per layer whether it takes the codes so handed over
    (a tensor read by several such layers: those whose tables agree)."""
    handoff: list[np.ndarray | None] = [None] * len(layers)
    takes = [False] * len(layers)
    readers: dict[int, list[FastLayer]] = {}
    index: dict[int, int] = {}
    for j, lay in enumerate(layers):
        if isinstance(lay, FastLayer) and lay.fold is not None:
            readers.setdefault(lay.rec.input, []).append(lay)
            index[id(lay)] = j
    for i, (lay, epi) in enumerate(zip(layers, epilogues)):
        if epi is None or lay.rec.output not in readers:
            continue
        tables = [(index[id(r)], epi.handoff(functools.partial(_codes_of, r))) for r in readers[lay.rec.output]]
        first = tables[0][1]
        if first is None:
            continue
        handoff[i] = first
        for j, t in tables:
            takes[j] = t is not None and np.array_equal(t, first)
    return handoff, takes


def _codes_of(layer: FastLayer, values: np.ndarray) -> np.ndarray:
    """The DAC codes the folded ``layer`` gives float32 ``values``."""
    assert layer.fold is not None
    return layer.fold.codes_of(layer, values)


def _clamp(node: Node) -> tuple[float, float] | None:
    """``(lo, hi)`` of a Relu or of a Clip with constant scalar bounds (±inf where a bound is
    absent), as float32 values; None for any other op."""
    if node.op == "Relu":
        return 0.0, float("inf")
    if node.op != "Clip":
        return None
    out = []
    for slot, default in (("min", -np.inf), ("max", np.inf)):
        v = node.params[slot] if slot in node.params else node.attrs.get(slot)
        if v is None:
            out.append(default)
            continue
        a = np.asarray(v)
        if a.size != 1 or a.ndim > 1 or not np.issubdtype(a.dtype, np.number):
            return None
        b = float(a.astype(np.float32).reshape(()))
        if np.isnan(b):
            return None
        out.append(b)
    return out[0], out[1]


@jit
def _finish(acc, scale, bias, has_bias, lo, hi, quant, out, lut, codes):  # type: ignore[no-untyped-def]
    """``out[n, g·F + f, k]``: the dequantized ``acc[n, g, f, k]``, clamped, held on the grid
    (each step the unfused path's operations, in its order; one row at a time so every
    loop vectorizes); with a table ``lut``, ``codes[n, (g·F + f)·P + k]`` = ``lut[q − q_min]``
    of each output code ``q``."""
    n, g, f, p = acc.shape
    qs, qz, qmin, qmax = quant[0], quant[1], quant[2], quant[3]
    handoff = lut.shape[0] > 0
    shifted = True  # lut[k] = k + lut[0]: the next layer's codes are the output codes shifted
    for k in range(lut.shape[0]):
        shifted &= lut[k] == k + lut[0]
    for i in range(n):
        for gi in range(g):
            for fi in range(f):
                row = out[i, gi * f + fi]
                src = acc[i, gi, fi]
                s = scale[gi, fi]
                b = bias[gi, fi]
                if has_bias:
                    for k in range(p):
                        row[k] = np.float32(src[k] * s + b)
                else:
                    for k in range(p):
                        row[k] = np.float32(src[k] * s)
                for o in range(lo.shape[0]):
                    a, c = lo[o], hi[o]
                    for k in range(p):
                        v = row[k]
                        v = v if v >= a else a
                        row[k] = v if v <= c else c
                if handoff:
                    dst = codes[i, (gi * f + fi) * p:(gi * f + fi + 1) * p]
                    for k in range(p):
                        t = min(max(np.rint(np.float64(row[k]) / qs) + qz, qmin), qmax)
                        dst[k] = np.int32(t - qmin)
                        row[k] = np.float32((t - qz) * qs)
                    if not shifted:  # a table look-up per code (no vector gather: a loop of its own)
                        for k in range(p):
                            dst[k] = lut[np.uint32(dst[k])]
                    elif lut[0] != 0:
                        for k in range(p):
                            dst[k] += lut[0]
                else:
                    for k in range(p):
                        t = min(max(np.rint(np.float64(row[k]) / qs) + qz, qmin), qmax)
                        row[k] = np.float32((t - qz) * qs)
