"""The folded kernel of a crossbar layer: every bit-plane's ADC rounding folded into one
integer GEMM at the model's MACs, plus a low-bit correction (noise off, 1-bit DACs, no
clipping possible). Compiled with numba; the same bits as
:class:`~hwmap_analog_imc.fast_layer.FastLayer`'s numpy path, which stays the reference and
the kernel for every layer this one does not take.

Why it is exact. A column ``j`` converts the sum ``S_p = Σ_r d_p[r]·G[r, j]`` of plane ``p``
with shift ``s`` and reads back ``2^s·floor(S_p/2^s + 1/2)``. When that code cannot exceed
``2^adc_bits − 1`` (the layer's worst case, checked at load), it is ``S_p − rem(S_p)`` with
``rem(S) = ((S + h) mod 2^s) − h``, ``h = 2^(s−1)`` (``rem = 0`` for ``s = 0``): the
remainder depends only on ``S_p mod 2^s``. Summed over planes and slices,

    Σ_p 2^p Σ_j coef_j·(S_pj − rem_pj) = Σ_r u_r·W_r − Σ_j coef_j Σ_p 2^p·rem_pj,

with ``W_r = Σ_j coef_j·G[r, j]`` the layer's integer weight (plus the ACCUM ``xsum``
correction): one GEMM on the DAC codes ``u`` with all columns folded in (the model's MACs,
float32 while every partial sum stays below 2^24, else float64), minus a correction that
needs each ``S_pj`` only modulo ``2^s`` (``s ≤ 8``).

The correction (:mod:`~hwmap_analog_imc.fold_correct`) counts each ``S_pj`` modulo 256 (or 8)
in byte counters, 64 or 128 columns per vector addition, through tables of 8-row digit
patterns.

Depthwise-like layers (few filters per group) run as a direct integer convolution without
BLAS (:mod:`~hwmap_analog_imc.fold_direct`). The codes, im2col, ACCUM offsets, DAC
activity and dequantization are compiled loops, one pass each; where the layer before
handed over its output's codes (:mod:`~hwmap_analog_imc.epilogue`) the codes pass is
skipped. Compiled loops index row views from 0: numba then emits no test for negative
indices, which would keep LLVM from vectorizing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .crossbar import F32_EXACT, F64_EXACT
from .fold_correct import FoldUnit, correct, fold_unit, jit as _jit
from .fold_direct import direct_conv, direct_conv2d

if TYPE_CHECKING:
    from .fast_layer import FastLayer

__all__ = ["FoldPlan", "fold_plan", "dac_counts", "dequantize_f_major"]

#: Filters per group at or below which the GEMM runs as a direct convolution (no BLAS).
_DIRECT_FILTERS = 4


@dataclass
class FoldPlan:
    """What the folded kernel of one layer needs, prepared at load."""

    mode: str  # "transpose" (1×1 convolution), "direct" (Gemm / MatMul), "gather" (im2col)
    gemm_dtype: type  # float32 or float64: the folded GEMM is exact in it
    weights: list[np.ndarray]  # per segment: (G, F, rows) for transpose/gather, (G, rows, F) for direct
    offsets: np.ndarray  # (segments, G, F) float64: the ACCUM offsets
    seg_pos: list[tuple[int, int]]
    direct_w: np.ndarray | None  # (segments, G, rows, F) int64 for the direct convolution
    geom2d: np.ndarray | None  # (cg, H, W, kh, kw, sh, sw, dh, dw, ph, pw, OH, OW) of a 2-D direct convolution
    idx: np.ndarray  # (P, rows) int64: flat code index of each im2col entry, −1 for padding
    spread: np.ndarray  # (umax+1,) uint64: bit 8p set when digit p of the code is 1
    units: list[FoldUnit]
    direct_wf: np.ndarray | None  # direct_w[0] in the GEMM's type (the 2-D direct convolution's)
    geom_mults: list[np.ndarray]  # per READ geometry of the layer, its multiplicities as int64

    def work(self, layer: "FastLayer") -> tuple[int, int]:
        """GEMM multiply-adds per sample: all of it is the one folded GEMM (the model's MACs)."""
        rec = layer.rec
        return sum(rec.groups * (b - a) * rec.rows * rec.filters for a, b in self.seg_pos), 0

    def corrections(self) -> int:
        """Table rows per sample the correction looks up (at most: zero patterns are skipped),
        each one vector addition of 64 or 128 columns."""
        return sum(len(u.groups) * u.pc * 8 * (u.levels.shape[2] // 8) * u.levels.shape[1]
                   for u in self.units)

    def codes_of(self, layer: "FastLayer", values: np.ndarray) -> np.ndarray:
        """The DAC codes (int32) the layer gives float32 ``values`` (any shape, no NaN)."""
        rec = layer.rec
        xf = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1)
        codes = np.empty(xf.shape, dtype=np.int32)
        _codes(xf, float(rec.in_scale), float(rec.in_qmin - rec.in_zero_point),
               float(rec.in_qmax - rec.in_zero_point), layer.pad_code, codes, codes[:0])
        return codes.reshape(values.shape)

    def run(self, layer: "FastLayer", x: np.ndarray, codes: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(acc, counts)``: the integer accumulations ``(N, G, F, positions)`` (float64)
        and the nonzero digits each READ drove; None when an input has no code (NaN), for
        the numpy path to treat as it does. ``codes``: the DAC codes of ``x`` when the layer
        that made ``x`` handed them over (:meth:`codes_of` of every value its grid holds),
        ``(N, G·size)`` int32."""
        rec = layer.rec
        n = x.shape[0]
        g, size = rec.groups, layer.group_size
        operand: np.ndarray | None = None
        if codes is not None:
            codes = codes.reshape(n * g, size)
            if self.mode != "gather" and self.direct_w is None:
                operand = codes.astype(self.gemm_dtype)
        else:
            codes, operand = self._codes(layer, x)
            if codes is None:
                return None
        return self._run(layer, n, codes, operand)

    def _codes(self, layer: "FastLayer", x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The DAC codes of ``x`` ``(N·G, size)`` and, for a GEMM on them, the same in its
        type; None for codes when ``x`` holds a NaN."""
        rec = layer.rec
        n = x.shape[0]
        g, size = rec.groups, layer.group_size
        xf = np.ascontiguousarray(x, dtype=np.float32).reshape(n * g, size)
        codes = np.empty((n * g, size), dtype=np.int32)
        lo, hi = rec.in_qmin - rec.in_zero_point, rec.in_qmax - rec.in_zero_point
        operand = None
        if self.mode == "gather" or self.direct_w is not None:
            nan = _codes(xf, float(rec.in_scale), float(lo), float(hi), layer.pad_code, codes, codes[:0])
        else:
            operand = np.empty((n * g, size), dtype=self.gemm_dtype)
            nan = _codes(xf, float(rec.in_scale), float(lo), float(hi), layer.pad_code, codes, operand)
        if nan:  # no DAC code: the numpy path treats it as it does
            return None, None
        return codes, operand

    def _run(self, layer: "FastLayer", n: int, codes: np.ndarray, operand: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
        rec = layer.rec
        g, size = rec.groups, layer.group_size
        p, f = rec.positions, rec.filters
        acc = np.empty((n, g, f, p), dtype=np.float64)
        if self.geom2d is not None:
            assert self.direct_wf is not None
            geo = self.geom2d
            plane = np.empty(geo[0] * (max(geo[1] + geo[9], (geo[11] - 1) * geo[5] + (geo[3] - 1) * geo[7] + 1) + 1)
                             * max(geo[2] + geo[10], (geo[12] - 1) * geo[6] + (geo[4] - 1) * geo[8] + 1),
                             dtype=self.gemm_dtype)
            direct_conv2d(codes.reshape(n, g, size), geo, layer.pad_code, self.direct_wf, self.offsets[0], acc, plane)
        elif self.direct_w is not None:
            for s, (a, b) in enumerate(self.seg_pos):
                direct_conv(codes.reshape(n, g, size), self.idx, layer.pad_code, self.direct_w[s], self.offsets[s],
                             a, b, acc)
        else:
            if self.mode == "gather":
                operand = np.empty((n * g, p, rec.rows), dtype=self.gemm_dtype)
                _im2col(codes, self.idx, layer.pad_code, operand)
            assert operand is not None
            for s, (a, b) in enumerate(self.seg_pos):
                _add_offsets(self._gemm(operand.reshape(n, g, -1), s, a, b), self.offsets[s], a, self.mode == "direct", acc)
        sp, sr = (rec.rows, 1) if self.mode == "direct" else (1, p)
        for u in self.units:
            correct(u, codes, self.idx, sp, sr, layer.pad_code, self.spread, g, acc)
        return acc, dac_counts(layer, codes.reshape(n, g, size), self.geom_mults)

    def _gemm(self, operand: np.ndarray, s: int, a: int, b: int) -> np.ndarray:
        """``(N, G, F, b − a)`` (or ``(N, G, b − a, F)`` for ``direct``) GEMM of segment ``s``."""
        w = self.weights[s]
        n, g, _ = operand.shape
        if self.mode == "direct":  # (N, G, P, rows) @ (G, rows, F)
            rows = w.shape[1]
            return np.matmul(operand.reshape(n, g, -1, rows)[:, :, a:b], w)
        rows = w.shape[2]
        if self.mode == "transpose":  # (G, F, rows) @ (N, G, rows, P)
            return np.matmul(w, operand.reshape(n, g, rows, -1)[..., a:b])
        u = operand.reshape(n, g, -1, rows)[:, :, a:b]  # im2col (N, G, P, rows)
        return np.matmul(w, u.swapaxes(2, 3))


def fold_plan(layer: "FastLayer") -> FoldPlan | None:
    """The folded kernel of ``layer``, or None where it does not apply: DAC digits of more
    than one bit, more than 16 planes, a shift above 8, a unit whose ADC can clip, or
    integer sums the GEMM could not hold exactly."""
    rec = layer.rec
    if layer.dac != 1 or rec.planes > 8 or any(u.can_clip for u in layer.units):
        return None
    if any(int(p.shifts.max(initial=0)) > 8 for bs in layer.sets for p in bs.parts):
        return None
    cpf = rec.cols_per_filter
    coef = layer.coef
    mats = [s.weights.astype(np.int64) for s in layer.segments]
    seg_pos = [(s.pos.start, s.pos.stop) for s in layer.segments]
    units: list[FoldUnit] = []
    for bs, run in layer.unit_runs:
        groups = bs.groups[run]
        rows = slice(bs.row_start, bs.row_start + bs.row_count)
        rounding = bs.rounding
        for p in bs.parts:  # fold the rounding slices into the weights
            cells = p.cells[run].reshape(len(groups), bs.row_count, p.filter_count, cpf)[..., rounding]
            w = (cells.astype(np.int64) * coef[rounding]).sum(axis=3)
            for m, (a, b) in zip(mats, seg_pos):
                if bs.pos_start <= a and b <= bs.pos_start + bs.pos_count:
                    m[groups, rows, p.filter_start:p.filter_start + p.filter_count] += w
        units.append(fold_unit(layer, bs, run))
    bound = max(int((layer.umax * np.abs(m).sum(axis=1)).max(initial=0)) for m in mats)
    if bound >= F64_EXACT:
        return None
    dtype = np.float32 if bound < F32_EXACT else np.float64
    offsets = np.stack([s.offsets[:, 0].astype(np.float64) for s in layer.segments])
    idx = _flat_index(layer)
    direct = layer.mode == "gather" and rec.filters <= _DIRECT_FILTERS
    if layer.mode == "direct":
        weights = [m.astype(dtype) for m in mats]
    else:
        weights = [np.ascontiguousarray(m.transpose(0, 2, 1)).astype(dtype) for m in mats]
    spread = np.zeros(layer.umax + 1, dtype=np.uint64)
    codes = np.arange(layer.umax + 1, dtype=np.int64)
    for plane in range(rec.planes):
        spread |= (((codes >> plane) & 1) << (8 * plane)).astype(np.uint64)
    geom2d = None
    if direct and len(rec.kernel) == 2 and seg_pos == [(0, rec.positions)]:
        shape = layer.group_size // layer.channels
        h, w = _input_hw(layer)
        assert h * w == shape
        geom2d = np.array([layer.channels, h, w, *rec.kernel, *rec.strides, *rec.dilations, *rec.pads_begin,
                           *rec.out_spatial], dtype=np.int64)
    return FoldPlan(layer.mode, dtype, weights, offsets, seg_pos, np.stack(mats) if direct else None, geom2d, idx,
                    spread, units, mats[0].astype(dtype) if geom2d is not None else None,
                    [mult.astype(np.int64) for _, mult, _ in layer.geoms])


def _input_hw(layer: "FastLayer") -> tuple[int, int]:
    """Height and width of a 2-D convolution's input, from its im2col plan's geometry."""
    rec = layer.rec
    hw = layer.group_size // layer.channels
    kh, kw = rec.kernel
    sh, sw = rec.strides
    dh, dw = rec.dilations
    oh, ow = rec.out_spatial
    for w in range(1, hw + 1):  # the width is what makes the last window end where the ONNX shape says
        if hw % w == 0 and (w + rec.pads_begin[1] + rec.pads_end[1] - dw * (kw - 1) - 1) // sw + 1 == ow:
            h = hw // w
            if (h + rec.pads_begin[0] + rec.pads_end[0] - dh * (kh - 1) - 1) // sh + 1 == oh:
                return h, w
    raise AssertionError(rec.name)


def _flat_index(layer: "FastLayer") -> np.ndarray:
    """``(P, rows)``: the code each im2col entry takes, as an index into one group's codes
    (channel-major), −1 for padding; empty unless the layer gathers."""
    if layer.mode != "gather":
        return np.zeros((0, 0), dtype=np.int64)
    assert layer.idx is not None
    hw1 = layer.group_size // layer.channels + 1
    ch, e = np.divmod(layer.idx.astype(np.int64), hw1)
    return np.where(e == hw1 - 1, -1, ch * (hw1 - 1) + e)


def dac_counts(layer: "FastLayer", codes: np.ndarray, mults: list[np.ndarray]) -> np.ndarray:
    """As :meth:`FastLayer._digit_counts <hwmap_analog_imc.fast_layer.FastLayer>`: the
    nonzero digits each READ drives, from the codes ``(N, G, size)`` in one compiled pass
    per READ geometry (exact integers in float64, so the order of the sums does not matter)."""
    n = codes.shape[0]
    pad = n * float(layer.nzlut[layer.pad_code])
    per_geom = np.empty((len(layer.geoms), layer.rec.groups), dtype=np.float64)
    none = np.zeros(0, dtype=np.intp)
    for i, (elems, _, pad_mult) in enumerate(layer.geoms):
        if elems is not None and elems.size and int(elems[-1]) - int(elems[0]) == elems.size - 1:
            # a run of elements (a READ of some channels of a 1×1 convolution): along it
            _weighted_digits(codes[:, :, int(elems[0]):int(elems[-1]) + 1], none, mults[i], per_geom[i])
        else:
            _weighted_digits(codes, none if elems is None else elems, mults[i], per_geom[i])
        per_geom[i] += pad * pad_mult
    return per_geom[layer.read_geom, layer.read_group].astype(np.int64)


def dequantize_f_major(acc: np.ndarray, scale: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``s·acc + bias`` as float32 ``(N, G·F, P)`` of accumulations laid out ``(N, G, F, P)``
    (the same roundings as :meth:`~hwmap_analog_imc.crossbar.LayerBase.dequantize`)."""
    n, g, f, p = acc.shape
    out = np.empty((n, g * f, p), dtype=np.float32)
    _dequantize(acc, scale.reshape(g, f), np.zeros((g, f)) if bias is None else bias.reshape(g, f), bias is not None,
                out)
    return out


# ------------------------------------------------------------------------------ compiled loops
@_jit
def _codes(x, scale, lo, hi, pad, codes, operand):  # type: ignore[no-untyped-def]
    """``codes = clip(rint(x/scale), lo, hi) + pad`` (int32) and the same in ``operand``'s
    type (none when ``operand`` has no rows); returns whether ``x`` holds a NaN (which has no code: the codes are then
    meaningless). No branch, so the loop vectorizes."""
    nan = 0
    for i in range(x.shape[0]):
        src, dst = x[i], codes[i]
        if operand.shape[0] == 0:  # codes only
            for j in range(x.shape[1]):
                v = np.float64(src[j])
                nan |= np.int32(v != v)
                dst[j] = np.int32(min(max(np.rint(v / scale), lo), hi) + pad)
            continue
        op = operand[i]
        for j in range(x.shape[1]):
            v = np.float64(src[j])
            nan |= np.int32(v != v)
            t = min(max(np.rint(v / scale), lo), hi) + pad
            dst[j] = np.int32(t)
            op[j] = t
    return nan != 0


@_jit
def _weighted_digits(codes, elems, mult, out):  # type: ignore[no-untyped-def]
    """``out[g] = Σ_n Σ_k ones(codes[n, g, e_k])·mult[k]`` over the elements ``elems`` (all
    when empty): with 1-bit digits a code's nonzero digits are its one bits (a popcount of
    the byte, no table look-up, so the loop vectorizes)."""
    for gi in range(codes.shape[1]):
        s = 0  # integers: the sum may be reordered (vectorized), unlike a float one
        for i in range(codes.shape[0]):
            row = codes[i, gi]
            if elems.shape[0] == 0:
                for e in range(row.shape[0]):
                    s += _ones(row[e]) * mult[e]
            else:
                for k in range(elems.shape[0]):
                    s += _ones(row[elems[k]]) * mult[k]
        out[gi] = np.float64(s)


@_jit
def _ones(code):  # type: ignore[no-untyped-def]
    """The one bits of a code below 2^8."""
    v = np.uint32(code)
    v = v - ((v >> np.uint32(1)) & np.uint32(0x55))
    v = (v & np.uint32(0x33)) + ((v >> np.uint32(2)) & np.uint32(0x33))
    return np.int64((v + (v >> np.uint32(4))) & np.uint32(0x0F))


@_jit
def _im2col(codes, idx, pad, out):  # type: ignore[no-untyped-def]
    """``out[ng, p, r] = codes[ng, idx[p, r]]``, ``pad`` where ``idx`` is −1."""
    for ng in range(codes.shape[0]):
        for p in range(idx.shape[0]):
            for r in range(idx.shape[1]):
                v = idx[p, r]
                out[ng, p, r] = pad if v < 0 else codes[ng, v]


@_jit
def _add_offsets(y, off, a, p_major, acc):  # type: ignore[no-untyped-def]
    """``acc[..., a:a+P] = y + off`` in float64; ``y`` is ``(N, G, F, P)``, or ``(N, G, P,
    F)`` when ``p_major`` (Gemm / MatMul)."""
    n, g, f = acc.shape[0], acc.shape[1], acc.shape[2]
    for i in range(n):
        for gi in range(g):
            if p_major:
                for p in range(y.shape[2]):
                    for fi in range(f):
                        acc[i, gi, fi, a + p] = np.float64(y[i, gi, p, fi]) + off[gi, fi]
            else:
                for fi in range(f):
                    o = off[gi, fi]
                    for p in range(y.shape[3]):
                        acc[i, gi, fi, a + p] = np.float64(y[i, gi, fi, p]) + o


@_jit
def _dequantize(acc, scale, bias, has_bias, out):  # type: ignore[no-untyped-def]
    n, g, f, p = acc.shape
    for i in range(n):
        for gi in range(g):
            for fi in range(f):
                s = scale[gi, fi]
                b = bias[gi, fi]
                for k in range(p):
                    y = acc[i, gi, fi, k] * s
                    if has_bias:
                        y = y + b
                    out[i, gi * f + fi, k] = np.float32(y)


