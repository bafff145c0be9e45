"""The crossbar arithmetic of one program layer, as the chip computes it, and its reference kernel.

A crossbar layer (LAYERS, SWITCHES, WEIGHTS, ADC, SCHEDULE, POSTOPS of ``program.bin``, see
:mod:`~hwmap_analog_imc.program`):

1. **DAC.** The input ``x`` is quantized to ``q = clip(round_half_even(x/s_x) + z, q_min,
   q_max)`` and driven as the unsigned code ``u = q − q_min`` (so the integer value is
   ``v = u + c0``, ``c0 = q_min − z``), bit-serially in ``planes`` digits of ``dac_bits``:
   ``u = Σ_p d_p·2^(p·dac_bits)``. Convolutions are unrolled once per layer (im2col, padding
   with the code of 0), in the row order of the ONNX weight layout.
2. **Crossbar.** Each block's column sums ``S_p[n, col] = Σ_r d_p[n, r]·G[r, col]`` for every
   plane, with ``G`` the programmed cell levels (exact integers in float32 while the sums stay
   below 2^24; with noise on, the noisy conductances in level units).
3. **ADC.** Each column sum is converted with the block's per-plane, per-column shift:
   ``code = min(floor(S/2^shift + 1/2), 2^adc_bits − 1)``, read back as ``code·2^shift``.
4. **Shift and add.** ``Σ_p 2^(p·dac_bits) Σ_j coef_j·code_pj·2^shift_pj`` over the filter's
   columns ``j`` (``coef_j = ±2^(slice·bits_per_cell)``: the differential pair subtracts;
   offset encoding adds all slices), then the ACCUM correction ``offset_f + xsum·Σ_r u_r``
   (``offset_f = c0·Σ_r w_rf``; ``xsum = −o`` for offset encoding), accumulated over the row
   tiles (partial sums) into ``Σ_r v_r·w_rf``.
5. **Dequantize and post-ops.** ``y = s_x·s_w[f]·acc + bias[f]``, then the fused post-ops with
   hwmap's reference semantics (``hwmap.ops.get_op(op).evaluate``).

:class:`LayerKernel` computes this straightforwardly, per block, batched per plane and
column as the chip reads; it is the kernel for device noise, for the emitter's ADC
calibration (:meth:`LayerKernel.probe`), and for layers whose integer bounds
:class:`~hwmap_analog_imc.fast_layer.FastLayer` cannot prove. :class:`LayerBase` is the
layer interface the simulator runs, and step 5's dequantization.

Error bound (per layer, noise off, no ADC clipping): against the float layer on the same
input ``x``, output channel ``f`` differs by at most ::

    Σ_r |x̂_r − x_r|·|ŵ_rf| + Σ_r |x_r|·|ŵ_rf − w_rf| + s_x·s_w[f]·E_f,
    E_f = Σ_tiles Σ_p 2^(p·dac_bits) Σ_j |coef_j|·e(shift_pj),   e(0) = 0, e(s) = 2^(s−1),

(``x̂ = s_x·v`` and ``ŵ = s_w·w_int`` the quantized values; ``|x̂ − x| ≤ s_x/2`` inside the
quantization range, ``|ŵ − w| ≤ s_w/2``): input rounding, weight rounding and ADC rounding,
each a half step of its own quantizer. :func:`adc_error_bound` gives ``s_x·s_w[f]·E_f``;
``activity["adc_clipped"]`` counts conversions that clipped (then the bound does not hold).

Device noise (``[noise] enabled`` in the target given to
:func:`~hwmap_analog_imc.simulator.simulate`, off by default):
the cells of every block are replaced by their programmed-and-drifted conductances
(:mod:`~hwmap_analog_imc.noise`, seeded per block), in level units; everything digital
(offset corrections, scales) stays nominal, as on the chip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hwmap import TargetError
from hwmap.ops import Window, sliding

from .hardware import NoiseConfig
from .noise import noisy_levels
from .program import NONE, AccumRec, Config, LayerRec, Program, ReadRec

__all__ = ["input_codes", "LayerKernel", "LayerBase", "ScheduleIndex", "layer_reads", "check_cover", "max_digits",
           "column_dtype", "layer_window", "nonzero_digits", "adc_error_bound", "F32_EXACT", "F64_EXACT"]

#: Integers below these are exact in float32 / float64, and so are sums that stay below.
F32_EXACT = 2**24
F64_EXACT = 2**53


def input_codes(layer: LayerRec, x: np.ndarray) -> np.ndarray:
    """The DAC codes ``u = q − q_min`` of ``x`` for ``layer``, unrolled to ``(groups, N,
    positions, rows)`` int32 (im2col for a convolution, padding with the code of 0)."""
    x = np.asarray(x)
    q = np.clip(np.round(x.astype(np.float64) / layer.in_scale) + layer.in_zero_point, layer.in_qmin, layer.in_qmax)
    u = (q - layer.in_qmin).astype(np.int32)
    n = u.shape[0]
    if not layer.kernel:  # Gemm / MatMul: the last axis is the input vector
        return u.reshape(1, n, layer.positions, layer.rows)
    nsp = len(layer.kernel)
    win = sliding(u, layer_window(layer), fill=layer.in_zero_point - layer.in_qmin)  # (N, C, *out, *k)
    g = layer.groups
    c = win.shape[1]
    win = win.reshape(n, g, c // g, *layer.out_spatial, *layer.kernel)
    order = (1, 0, *range(3, 3 + nsp), 2, *range(3 + nsp, 3 + 2 * nsp))
    return np.ascontiguousarray(win.transpose(order)).reshape(g, n, layer.positions, layer.rows)


def layer_window(layer: LayerRec) -> Window:
    """The convolution window of ``layer`` (its geometry is checked when the program is read)."""
    return Window(tuple(layer.kernel), tuple(layer.strides), tuple(layer.dilations), tuple(layer.pads_begin),
                  tuple(layer.pads_end), tuple(layer.out_spatial), (0,) * len(layer.kernel))


@dataclass
class ScheduleIndex:
    """The schedule sorted out once: each layer's READs (in schedule order) and every
    block's ACCUM."""

    reads: list[list[ReadRec]]
    accum: dict[int, AccumRec]

    @classmethod
    def of(cls, program: Program) -> "ScheduleIndex":
        reads: list[list[ReadRec]] = [[] for _ in program.layers]
        accum: dict[int, AccumRec] = {}
        for ins in program.schedule:
            if isinstance(ins, ReadRec):
                reads[ins.layer].append(ins)
            else:
                accum[ins.block] = ins
        return cls(reads, accum)


def layer_reads(program: Program, layer_id: int, index: ScheduleIndex | None = None
                 ) -> tuple[list[ReadRec], dict[int, AccumRec]]:
    """The layer's READs in schedule order and every block's ACCUM; a block read twice, by
    another layer's READ, or never accumulated is a :class:`hwmap.TargetError`."""
    index = index or ScheduleIndex.of(program)
    rec = program.layers[layer_id]
    reads, accum = index.reads[layer_id], index.accum
    seen: set[int] = set()
    for r in reads:
        for b in r.blocks:
            if b in seen or program.blocks[b].layer != layer_id:
                raise TargetError(f"block {b} is read twice or by another layer's READ", where=rec.name)
            if b not in accum:
                raise TargetError(f"block {b} is read but never accumulated (no ACCUM)", where=rec.name)
            seen.add(b)
    return reads, accum


def check_cover(rec: LayerRec, pieces: list[tuple[np.ndarray, int, int, int, int, int, int]]) -> None:
    """Every (group, row, filter) of every position computed exactly once by the pieces
    ``(groups, row_start, row_count, filter_start, filter_count, pos_start, pos_count)``."""
    cover = np.zeros((rec.groups, rec.rows, rec.filters), dtype=np.int64)
    pos = np.zeros(rec.positions, dtype=np.int64)
    for groups, r0, rc, f0, fc, p0, pc in pieces:
        cover[groups, r0:r0 + rc, f0:f0 + fc] += pc
        pos[p0:p0 + pc] += len(groups) * rc * fc
    if (cover != rec.positions).any() or (pos != rec.groups * rec.rows * rec.filters).any():
        raise TargetError("the READ instructions do not cover every weight for every input vector exactly once",
                          where=rec.name)


def max_digits(rec: LayerRec, dac: int) -> np.ndarray:
    """The largest DAC digit each plane can carry (0 for a plane no code reaches)."""
    umax = rec.in_qmax - rec.in_qmin
    return np.array([min(2**dac - 1, umax >> (p * dac)) for p in range(rec.planes)], dtype=np.int64)


def column_dtype(rec: LayerRec, cfg: Config) -> type:
    """The float type of a layer's column sums: float32, where they are exact integers, while
    the largest possible sum (rows × max digit × max level) stays below 2^24, else float64."""
    top = rec.rows * int(max_digits(rec, cfg.dac_bits).max(initial=0)) * (2**cfg.bits_per_cell - 1)
    return np.float32 if top < F32_EXACT else np.float64


# ------------------------------------------------------------------------------ layer kernels
class LayerBase:
    """What the session runs of a layer (:class:`~hwmap_analog_imc.fast_layer.FastLayer`,
    or a :class:`LayerKernel` behind it): ``rec``, ``run(x)`` (the integer
    accumulations ``(N, G, positions, filters)``, the ADC conversions that clipped, the
    nonzero digits each READ drove), ``work()``, ``bytes_per_sample``; and what both share:
    the output scales and the dequantization."""

    rec: LayerRec

    def _init_common(self, program: Program, rec: LayerRec) -> None:
        self.rec = rec
        g, f = rec.groups, rec.filters
        self.scale = (rec.in_scale * program.const(rec.w_scale).astype(np.float64)).reshape(g, 1, f)
        self.bias = None if rec.bias == NONE else program.const(rec.bias).astype(np.float64).reshape(g, 1, f)
        x = program.tensors[rec.input].shape
        self.out_shape = tuple(rec.out_spatial) if rec.kernel else tuple(x[1:-1])

    def dequantize(self, acc: np.ndarray) -> np.ndarray:
        """``s_x·s_w[c]·acc + bias[c]`` (float64, then float32) of accumulations ``(N, G, P,
        F)``, laid out as the compute op's output (C-contiguous)."""
        n, g, p, f = acc.shape
        y = np.multiply(acc, self.scale)
        if self.bias is not None:
            y += self.bias
        if not self.rec.kernel:  # Gemm / MatMul: (N, *leading axes, F), one group
            return y.reshape(n, *self.out_shape, g * f).astype(np.float32)
        out = np.empty((n, g, f, p), dtype=np.float32)
        np.copyto(out, y.transpose(0, 1, 3, 2))
        return out.reshape(n, g * f, *self.out_shape)


@dataclass
class _Stack:
    """Blocks of one layer with the same rows, filters and positions (different groups):
    computed together as one batched matmul (a depthwise layer is one stack)."""

    blocks: np.ndarray  # block ids
    groups: np.ndarray
    row_start: int
    row_count: int
    filter_start: int
    filter_count: int
    pos_start: int
    pos_count: int
    levels: np.ndarray  # (nb, rows, filter_count·cpf) float32 (float64 for very long columns)
    inv: np.ndarray  # (nb, planes, 1, 1, cpf) float32: 2^-shift
    fac: np.ndarray  # (planes, nb, cpf, 1) float64: 2^shift·coef·2^(p·dac)
    offset: np.ndarray  # (nb, 1, filter_count) float64
    xsum: np.ndarray  # (nb, 1) float64
    exact: np.ndarray | None  # (nb, rows, filter_count) float64 weights when the ADC is transparent


class LayerKernel:
    """One crossbar layer decoded from a program: its blocks stacked for batched execution,
    per plane and column as the chip reads (the kernel for device noise, for the ADC
    calibration of the emitter, and for layers :class:`~hwmap_analog_imc.fast_layer.FastLayer` cannot prove exact).

    A stack whose ADCs provably neither round nor clip (every shift 0, and the largest column
    sum the cells allow, ``max digit × Σ_r G``, within ``2^adc_bits − 1``; noise off) is
    computed as one integer matmul with the shift-and-added weights: the same numbers as the
    per-plane, per-column path, without its cost."""

    def __init__(self, program: Program, layer_id: int, noise: NoiseConfig | None = None,
                 index: ScheduleIndex | None = None) -> None:
        cfg = program.config
        self.rec = rec = program.layers[layer_id]
        self.dac = cfg.dac_bits
        self.amax = float(2**cfg.adc_bits - 1)
        self.reads, accum = layer_reads(program, layer_id, index)
        coef = program.const(rec.coef).astype(np.float64)
        cpf = rec.cols_per_filter
        max_level = 2**cfg.bits_per_cell - 1
        dmax = int(max_digits(rec, self.dac).max(initial=0))
        self.dtype = column_dtype(rec, cfg)
        keyed: dict[tuple[int, ...], list[int]] = {}
        for r in self.reads:
            for b in r.blocks:
                blk = program.blocks[b]
                key = (blk.row_start, blk.row_count, blk.filter_start, blk.filter_count, r.pos_start, r.pos_count)
                keyed.setdefault(key, []).append(b)
        self.stacks: list[_Stack] = []
        plane_w = 2.0 ** (self.dac * np.arange(rec.planes, dtype=np.float64))
        for (r0, rc, f0, fc, p0, pc), items in keyed.items():
            ids = np.array(items, dtype=np.int64)
            cells = np.stack([program.weights[b].cells for b in ids])  # (nb, rc, fc·cpf) uint8
            levels: np.ndarray = (np.stack([noisy_levels(program.weights[b].cells, max_level, noise, int(b)) for b in ids])
                      if noise is not None else cells).astype(self.dtype)
            shifts = np.stack([program.adc[b].shifts for b in ids]).astype(np.int64)  # (nb, planes, cpf)
            fac = np.ldexp(1.0, shifts.transpose(1, 0, 2)) * coef[None, None, :] * plane_w[:, None, None]
            offset = np.stack([program.const(accum[b].offset).astype(np.float64) for b in ids])
            if offset.shape != (len(ids), fc):
                raise TargetError(f"ACCUM offsets of blocks {ids.tolist()} do not have {fc} filters", where=rec.name)
            exact = None
            worst = dmax * cells.astype(np.int64).sum(axis=1).max(initial=0)
            if noise is None and not shifts.any() and worst <= self.amax:
                exact = (cells.reshape(len(ids), rc, fc, cpf).astype(np.float64) * coef).sum(axis=3)
            self.stacks.append(_Stack(
                ids, np.array([program.blocks[b].group for b in ids], dtype=np.int64), r0, rc, f0, fc, p0, pc,
                levels, np.ldexp(np.float32(1.0), -shifts).astype(np.float32)[:, :, None, None, :],
                fac[..., None], offset[:, None, :],
                np.array([[accum[b].xsum_factor] for b in ids], dtype=np.float64), exact))
        check_cover(rec, [(s.groups, s.row_start, s.row_count, s.filter_start, s.filter_count, s.pos_start,
                            s.pos_count) for s in self.stacks])

    def _slice(self, u: np.ndarray, s: _Stack) -> np.ndarray:
        """``(nb, N·pos_count, row_count)`` codes of the stack's groups, positions and rows."""
        n = u.shape[1]
        sub = u[s.groups, :, s.pos_start:s.pos_start + s.pos_count, s.row_start:s.row_start + s.row_count]
        return sub.reshape(len(s.blocks), n * s.pos_count, s.row_count)

    def _digits(self, sub: np.ndarray) -> np.ndarray:
        """All bit-planes of ``sub``, stacked along the vectors: ``(nb, planes·m, rows)`` float32."""
        nb, m, rc = sub.shape
        planes = self.rec.planes
        if planes == 1:
            return sub.astype(self.dtype)
        sh = (self.dac * np.arange(planes, dtype=np.int32)).reshape(1, planes, 1, 1)
        d = (sub[:, None] >> sh) & (2**self.dac - 1)
        return d.astype(self.dtype).reshape(nb, planes * m, rc)

    def run(self, u: np.ndarray) -> tuple[np.ndarray, int]:
        """Integer accumulations ``(groups, N, positions, filters)`` of codes ``u`` (from
        :func:`input_codes`) and the number of ADC conversions that clipped."""
        rec = self.rec
        g, n = u.shape[0], u.shape[1]
        planes, cpf = rec.planes, rec.cols_per_filter
        acc = np.zeros((g, n, rec.positions, rec.filters), dtype=np.float64)
        clipped = 0
        for s in self.stacks:
            sub = self._slice(u, s)
            nb, m = sub.shape[0], sub.shape[1]
            if s.exact is not None:  # transparent ADC: Σ_p 2^(p·dac) d_p = u
                y = np.matmul(sub.astype(np.float64), s.exact)
            else:
                cols = np.matmul(self._digits(sub), s.levels).reshape(nb, planes, m, s.filter_count, cpf)
                cols *= s.inv
                cols += 0.5
                np.floor(cols, out=cols)
                if cols.max(initial=0.0) > self.amax:
                    clipped += int(np.count_nonzero(cols > self.amax))
                    np.minimum(cols, self.amax, out=cols)
                y = np.zeros((nb, m * s.filter_count, 1), dtype=np.float64)
                for p in range(planes):
                    y += np.matmul(cols[:, p].reshape(nb, m * s.filter_count, cpf).astype(np.float64), s.fac[p])
                y = y.reshape(nb, m, s.filter_count)
            y += s.offset
            if s.xsum.any():  # offset encoding: the digital logic removes o·Σ u
                y += (s.xsum * sub.sum(axis=2, dtype=np.float64))[:, :, None]
            y = y.reshape(nb, n, s.pos_count, s.filter_count)
            acc[s.groups, :, s.pos_start:s.pos_start + s.pos_count, s.filter_start:s.filter_start + s.filter_count] += y
        return acc, clipped

    def probe(self, u: np.ndarray) -> dict[int, np.ndarray]:
        """Per block, the largest column sum ``(planes, cols_per_filter)`` the codes ``u`` make
        (for ADC full-scale calibration); vectors are all positions of ``u``."""
        rec = self.rec
        out: dict[int, np.ndarray] = {}
        for s in self.stacks:
            sub = u[s.groups][:, :, :, s.row_start:s.row_start + s.row_count].reshape(len(s.blocks), -1, s.row_count)
            m = sub.shape[1]
            cols = np.matmul(self._digits(sub), s.levels).reshape(len(s.blocks), rec.planes, m, -1,
                                                                   rec.cols_per_filter)
            best = cols.max(axis=(2, 3)) if m else np.zeros((len(s.blocks), rec.planes, rec.cols_per_filter))
            for b, v in zip(s.blocks, best):
                out[int(b)] = v.astype(np.float64)
        return out


def nonzero_digits(u: np.ndarray, planes: int, dac: int) -> np.ndarray:
    """How many of each code's ``planes`` DAC digits are nonzero (uint8, shaped like ``u``)."""
    if planes == 1:
        return (u != 0).astype(np.uint8)
    if dac == 1 and hasattr(np, "bitwise_count"):  # numpy >= 2.0: a popcount per code
        return np.bitwise_count(u).astype(np.uint8)
    mask = 2**dac - 1
    out = np.zeros(u.shape, dtype=np.uint8)
    for p in range(planes):
        out += ((u >> (p * dac)) & mask) != 0
    return out


def adc_error_bound(program: Program, layer_id: int) -> np.ndarray:
    """Largest error the ADC rounding adds to each output channel of a layer (float units):
    ``s_x·s_w[f]·E_f`` of the module docstring (the worst replica's row tiles)."""
    rec = program.layers[layer_id]
    coef = np.abs(program.const(rec.coef).astype(np.float64))
    plane_w = 2.0 ** (program.config.dac_bits * np.arange(rec.planes))
    per: dict[int, np.ndarray] = {}
    for b, blk in enumerate(program.blocks):
        if blk.layer != layer_id:
            continue
        sh = program.adc[b].shifts.astype(np.float64)
        half = np.where(sh > 0, np.ldexp(1.0, (sh - 1).astype(np.int64)), 0.0)
        e = float((plane_w[:, None] * coef[None, :] * half).sum())
        arr = per.setdefault(blk.replica, np.zeros(rec.groups * rec.filters))
        f = blk.group * rec.filters + blk.filter_start
        arr[f:f + blk.filter_count] += e
    worst = np.max(np.stack(list(per.values())), axis=0) if per else np.zeros(rec.groups * rec.filters)
    return worst * rec.in_scale * program.const(rec.w_scale).astype(np.float64)


