"""The load-time plan of the fast exact kernel of a crossbar layer (noise off): what
:class:`~hwmap_analog_imc.fast_layer.FastLayer` runs, laid out once when the program is loaded.

:class:`FastPlan` stacks a layer's blocks over groups (block sets), tells its transparent
slices from its rounding ones, folds the transparent slices, ``xsum`` corrections and ACCUM
offsets into one integer matrix per run of positions (segments), prepares one packed-plane
GEMM per run of groups of the rounding slices (units), and makes the input's index plan and
the DAC activity plan; on the way it proves every integer bound that keeps the reordered
sums exact, and raises :class:`NotExact` where one fails. How the kernel then computes, and
why that gives the same bits as :mod:`~hwmap_analog_imc.crossbar`: the docstring of
:mod:`~hwmap_analog_imc.fast_layer`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hwmap import TargetError
from hwmap.ops import sliding

from .crossbar import (F32_EXACT, F64_EXACT, LayerBase, ScheduleIndex, check_cover, column_dtype, layer_reads,
                       layer_window, max_digits, nonzero_digits)
from .program import AccumRec, Program, ReadRec

__all__ = ["FastPlan", "NotExact", "Segment", "Tuning", "Unit"]


@dataclass(frozen=True)
class Tuning:
    """How a :class:`FastLayer` cuts its work (the numbers it computes do not depend on it)."""

    #: Plane-column multiply-adds below which a layer's digit planes are not packed.
    pack_work: int = 2**21
    #: Elements of one chunk of ADC work: elementwise passes run ~2.5× faster in cache than
    #: from memory.
    chunk: int = 2**19
    #: Positions a GEMM chunk keeps at least (fewer make BLAS markedly slower).
    chunk_gemm_rows: int = 256


class NotExact(Exception):
    """A layer whose integer sums could leave the exact range of floats (see FastLayer)."""


@dataclass
class Segment:
    """Positions ``pos`` of a layer and the integer weights of their transparent columns."""

    pos: slice
    weights: np.ndarray  # (G, rows, filters): transparent columns and xsum corrections
    offsets: np.ndarray  # (G, 1, filters): the ACCUM offsets


@dataclass
class Unit:
    """The rounding columns of blocks that share word lines (rows and input vectors), over
    a run of groups with the same blocks: one GEMM on the packed digit planes. Columns are
    slice-major (column ``j·F_u + f`` is slice ``j`` of the unit's filter ``f``)."""

    groups: slice
    pos: slice
    rows: slice
    filters: slice | np.ndarray  # the unit's filters, in column order
    levels: np.ndarray  # (G_u, rows, r·F_u) cell levels of the r rounding slices
    inv: float | np.ndarray  # 2^−shift: one number, or (k, J, 1, G_u, 1, r, F_u) per packing slot
    weight: np.ndarray | None  # None when every column's shift is the same for all planes,
    #                            else (k, J, 1, G_u, 1, r, F_u) = 2^(p·dac + shift)
    plane_w: np.ndarray  # (k·J,): 2^(p·dac) of the plane in each slot, 0 for an empty slot
    fac: np.ndarray  # (G_u, 1, r, F_u) float64: coef, times 2^shift when weight is None
    can_clip: bool
    wide_sum: bool  # the plane sum needs float64 (only with per-plane shifts)


@dataclass
class _Part:
    """One filter range of a block set: its blocks' data stacked over the set's groups."""

    filter_start: int
    filter_count: int
    cells: np.ndarray  # (n_groups, rows, filter_count·cols_per_filter) uint8 levels
    shifts: np.ndarray  # (n_groups, planes, cols_per_filter) ADC shifts
    offsets: np.ndarray  # (n_groups, filter_count) int64 ACCUM offsets
    xsum: np.ndarray  # (n_groups, 1, 1) int64 ACCUM xsum factors
    colmax: np.ndarray  # (n_groups, cols_per_filter): the largest level sum of each slice


@dataclass
class _BlockSet:
    """Blocks of one layer that read the same rows and positions, with the same filter
    ranges, in each of ``groups``."""

    row_start: int
    row_count: int
    pos_start: int
    pos_count: int
    groups: np.ndarray  # sorted group numbers
    parts: list[_Part]
    rounding: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # slices that round


class FastPlan(LayerBase):
    """One crossbar layer laid out for exact, reordered execution (see the module docstring).
    Raises :class:`NotExact` at construction when an integer bound fails."""

    def __init__(self, program: Program, layer_id: int, index: ScheduleIndex | None = None,
                 tuning: Tuning = Tuning()) -> None:
        cfg = program.config
        self.tuning = tuning
        rec = program.layers[layer_id]
        reads, accum = layer_reads(program, layer_id, index)
        self._init_common(program, rec)
        self.dac = cfg.dac_bits
        self.amax = float(2**cfg.adc_bits - 1)
        self.dmax = max_digits(rec, self.dac)
        self.active = np.flatnonzero(self.dmax)
        self.umax = rec.in_qmax - rec.in_qmin
        self.pad_code = rec.in_zero_point - rec.in_qmin  # the code of 0 (padding), and z − q_min
        self.coef = program.const(rec.coef).astype(np.int64)
        # the reference kernel's ADC arithmetic type, kept so the rounding is the same
        self.adc_dtype = column_dtype(rec, cfg)
        sets = self._block_sets(program, reads, accum)
        check_cover(rec, [(bs.groups, bs.row_start, bs.row_count, p.filter_start, p.filter_count, bs.pos_start,
                            bs.pos_count) for bs in sets for p in bs.parts])
        for bs in sets:
            bs.rounding = self._rounding_slices(bs)
        self.segments = self._segments(reads, sets)
        units = [(bs, run) for bs in sets if bs.rounding.size for run in _runs(bs.groups)]
        self._pack(units)
        self._rounding_bound = 0.0
        self.units = [self._unit(bs, run) for bs, run in units]
        if self.exact_bound + self._rounding_bound >= F64_EXACT:  # the accumulations themselves
            raise NotExact(rec.name)
        self._input_plan(program)
        self._activity_plan(program, reads)
        self.sets, self.unit_runs = sets, units

    def _block_sets(self, program: Program, reads: list[ReadRec], accum: dict[int, AccumRec]) -> list[_BlockSet]:
        """The layer's blocks as block sets, their data stacked over groups."""
        rows: dict[tuple[int, int, int, int, int], list[int]] = {}
        for r in reads:
            for b in r.blocks:
                blk = program.blocks[b]
                rows.setdefault((blk.group, blk.row_start, blk.row_count, r.pos_start, r.pos_count), []).append(b)
        keyed: dict[tuple[Any, ...], list[tuple[int, list[int]]]] = {}
        for (g, r0, rc, p0, pc), bl in rows.items():
            bl.sort(key=lambda b: program.blocks[b].filter_start)
            fr = tuple((program.blocks[b].filter_start, program.blocks[b].filter_count) for b in bl)
            keyed.setdefault((r0, rc, p0, pc, fr), []).append((g, bl))
        cpf = self.rec.cols_per_filter
        sets = []
        for (r0, rc, p0, pc, fr), members in keyed.items():
            members.sort()
            parts = []
            for i, (f0, fc) in enumerate(fr):
                ids = [bl[i] for _, bl in members]
                offsets = [program.const(accum[b].offset) for b in ids]
                if any(o.shape != (fc,) for o in offsets):
                    raise TargetError(f"ACCUM offsets of blocks {ids} do not have {fc} filters", where=self.rec.name)
                cells = np.stack([program.weights[b].cells for b in ids])
                colmax = cells.sum(axis=1, dtype=np.int64).reshape(len(ids), fc, cpf).max(axis=1)
                parts.append(_Part(f0, fc, cells, np.stack([program.adc[b].shifts for b in ids]).astype(np.int64),
                                   np.stack(offsets).astype(np.int64),
                                   np.array([accum[b].xsum_factor for b in ids], dtype=np.int64).reshape(-1, 1, 1),
                                   colmax))
            sets.append(_BlockSet(r0, rc, p0, pc, np.array([g for g, _ in members], dtype=np.int64), parts))
        return sets

    def _rounding_slices(self, bs: _BlockSet) -> np.ndarray:
        """The slices (columns of a filter) some block of the set rounds: a slice is
        transparent in a block when every active plane has shift 0 and its largest column
        sum, ``max digit × Σ_r G``, is within the ADC range."""
        rounds = np.zeros(self.rec.cols_per_filter, dtype=bool)
        for p in bs.parts:
            shifts = p.shifts[:, self.active]  # (n_groups, active planes, cpf)
            fits = self.dmax[self.active, None] * p.colmax[:, None, :] <= self.amax
            rounds |= ~((shifts == 0) & fits).all(axis=1).all(axis=0)
        return np.flatnonzero(rounds)

    def _segments(self, reads: list[ReadRec], sets: list[_BlockSet]) -> list[Segment]:
        """Per run of positions read by the same blocks, the transparent slices and xsum
        corrections as one integer matrix, and the summed ACCUM offsets."""
        rec = self.rec
        cuts = sorted({0, rec.positions} | {r.pos_start for r in reads} | {r.pos_start + r.pos_count for r in reads})
        segs = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
        mats = {s: np.zeros((rec.groups, rec.rows, rec.filters), dtype=np.int64) for s in segs}
        offs = {s: np.zeros((rec.groups, 1, rec.filters), dtype=np.int64) for s in segs}
        cpf = rec.cols_per_filter
        for bs in sets:
            keep = np.ones(cpf, dtype=bool)
            keep[bs.rounding] = False
            rows = slice(bs.row_start, bs.row_start + bs.row_count)
            inside = [s for s in segs if bs.pos_start <= s[0] and s[1] <= bs.pos_start + bs.pos_count]
            for p in bs.parts:
                cells = p.cells.reshape(len(bs.groups), bs.row_count, p.filter_count, cpf)[..., keep]
                w = (cells * self.coef[keep]).sum(axis=3) + p.xsum
                fs = slice(p.filter_start, p.filter_start + p.filter_count)
                for s in inside:
                    mats[s][bs.groups, rows, fs] += w
                    offs[s][bs.groups, 0, fs] += p.offsets
        bound = max(int((self.umax * np.abs(mats[s]).sum(axis=1) + np.abs(offs[s][:, 0])).max()) for s in segs)
        if bound >= F64_EXACT:
            raise NotExact(rec.name)
        self.exact_dtype = np.float32 if bound < F32_EXACT else np.float64
        self.exact_bound = float(bound)
        return [Segment(slice(*s), mats[s].astype(self.exact_dtype), offs[s].astype(self.exact_dtype)) for s in segs]

    def _pack(self, units: list[tuple[_BlockSet, slice]]) -> None:
        """How many planes share one float of the rounding GEMM's input: ``k`` planes of
        ``b`` bits (``2^b`` above the largest column sum of a rounding slice, ``b·k ≤ 24``
        in float32, 53 in float64) in each of ``J`` rows; and the table of every code's
        packed digits. Layers with little rounding work do not pack (unpacking costs more
        numpy calls than the smaller GEMM saves)."""
        top = int(self.dmax.max(initial=0))
        smax = max((top * int(p.colmax[run][:, bs.rounding].max(initial=0)) for bs, run in units for p in bs.parts),
                   default=0)
        self.bits = max(1, smax.bit_length())
        if self.bits > 53:
            raise NotExact(self.rec.name)
        self.gemm_dtype: type = np.float32 if self.bits <= 24 else np.float64
        width = 24 if self.gemm_dtype == np.float32 else 53
        work = sum((run.stop - run.start) * bs.pos_count * bs.row_count * sum(p.filter_count for p in bs.parts)
                   * bs.rounding.size for bs, run in units) * len(self.active)
        self.k = max(1, min(len(self.active), width // self.bits)) if work >= self.tuning.pack_work else 1
        self.rows_packed = -(-len(self.active) // self.k) if units else 0
        self.lut = _packed_digits(self.umax, self.dac, tuple(self.active.tolist()) if units else (), self.k,
                                  self.bits, np.dtype(self.gemm_dtype).char)

    def _unit(self, bs: _BlockSet, run: slice) -> Unit:
        """The groups ``run`` (indices into ``bs.groups``) of a block set as a rounding unit:
        its rounding slices' cells, per-slot ADC scales, plane weights and slice factors; and
        the bounds that keep its sums exact."""
        cpf, rounding = self.rec.cols_per_filter, bs.rounding
        r, gu, rc = rounding.size, run.stop - run.start, bs.row_count
        filt = np.concatenate([np.arange(p.filter_start, p.filter_start + p.filter_count) for p in bs.parts])
        nf = filt.size
        levels = np.zeros((gu, rc, r, nf), dtype=self.gemm_dtype)
        shift = np.zeros((gu, self.rec.planes, r, nf), dtype=np.int64)
        can_clip = False
        f = 0
        for p in bs.parts:
            fc = p.filter_count
            levels[..., f:f + fc] = p.cells[run].reshape(gu, rc, fc, cpf)[..., rounding].transpose(0, 1, 3, 2)
            sh = p.shifts[run][:, :, rounding]  # (G_u, planes, r)
            shift[..., f:f + fc] = sh[..., None]
            worst = self.dmax[self.active, None] * p.colmax[run][:, None, rounding]  # (G_u, active, r)
            can_clip |= bool((np.floor(worst / np.ldexp(1.0, sh[:, self.active]) + 0.5) > self.amax).any())
            f += fc
        k, rows = self.k, self.rows_packed
        inv = np.ones((k, rows, 1, gu, 1, r, nf), dtype=np.float64)
        weight = np.zeros_like(inv)
        plane_w = np.zeros((k, rows), dtype=np.float64)
        for q, plane in enumerate(self.active):
            inv[q % k, q // k, 0, :, 0] = np.ldexp(1.0, -shift[:, plane])
            weight[q % k, q // k, 0, :, 0] = np.ldexp(1.0, plane * self.dac + shift[:, plane])
            plane_w[q % k, q // k] = np.ldexp(1.0, plane * self.dac)
        coef = self.coef[rounding].astype(np.float64)
        top = self.amax * weight.sum(axis=(0, 1))  # (1, G_u, 1, r, F_u): per column, over planes
        bound = float((top * np.abs(coef)[:, None]).sum(axis=-2).max(initial=0.0))
        if bound >= F64_EXACT:
            raise NotExact(self.rec.name)
        self._rounding_bound += bound
        limit = F32_EXACT if self.adc_dtype == np.float32 else F64_EXACT
        act = shift[:, self.active]  # (G_u, active planes, r, F_u)
        uniform = bool((act == act[:, :1]).all()) and self.amax * plane_w.sum() < limit
        fac = np.broadcast_to(coef[:, None], (gu, 1, r, nf)).copy()
        if uniform:
            fac *= np.ldexp(1.0, act[:, :1])
        flat_inv = inv.reshape(-1)
        groups = bs.groups[run]
        fsel: slice | np.ndarray = (slice(int(filt[0]), int(filt[-1]) + 1)
                                    if np.array_equal(filt, np.arange(filt[0], filt[-1] + 1)) else filt)
        return Unit(slice(int(groups[0]), int(groups[-1]) + 1), slice(bs.pos_start, bs.pos_start + bs.pos_count),
                     slice(bs.row_start, bs.row_start + rc), fsel, levels.reshape(gu, rc, r * nf),
                     float(flat_inv[0]) if (flat_inv == flat_inv[0]).all() else inv.astype(self.adc_dtype),
                     None if uniform else weight.astype(self.adc_dtype), plane_w.reshape(-1).astype(self.adc_dtype),
                     fac, can_clip, float(top.max(initial=0)) >= limit)

    def _input_plan(self, program: Program) -> None:
        """How the input vectors are formed from one group's input of ``size`` codes
        (``(C/G)·Π spatial``, channel-major; for Gemm / MatMul the positions' rows):
        ``"direct"`` (Gemm / MatMul: the rows are the vectors), ``"transpose"`` (a 1×1
        convolution with stride 1 and no padding: the vectors are the columns of the
        ``(C/G, positions)`` input, a transposed view BLAS takes as it is), or ``"gather"``
        (im2col: ``idx[position, row]`` into the input laid out one channel per row, each
        row ending with a padding slot)."""
        rec = self.rec
        shape = program.tensors[rec.input].shape
        if not rec.kernel:
            self.mode, self.idx, self.channels = "direct", None, 1
            self.group_size = rec.positions * rec.rows
            return
        cg, sp = shape[1] // rec.groups, tuple(shape[2:])
        self.group_size, self.channels = cg * math.prod(sp), cg
        if (all(k == 1 for k in rec.kernel) and all(s == 1 for s in rec.strides)
                and not any(rec.pads_begin) and not any(rec.pads_end)):
            self.mode, self.idx = "transpose", None
            return
        hw = math.prod(sp)  # elements 0 .. hw − 1 of a channel, then its padding slot hw
        win = sliding(np.arange(hw, dtype=np.intp).reshape(sp), layer_window(rec), fill=hw).reshape(rec.positions, -1)
        offsets = np.arange(cg, dtype=np.intp)[None, :, None] * (hw + 1)
        self.mode = "gather"
        self.idx = (offsets + win[:, None, :]).reshape(rec.positions, rec.rows)

    def _multiplicity(self, positions: slice, rows: slice) -> tuple[np.ndarray, float]:
        """How often each input element (``size``, channel-major) and the padding appear in
        the given positions and rows of the input vectors."""
        rec = self.rec
        if self.mode != "gather":
            shape = (rec.rows, rec.positions) if self.mode == "transpose" else (rec.positions, rec.rows)
            mult = np.zeros(shape, dtype=np.float64)
            (mult.T if self.mode == "transpose" else mult)[positions, rows] = 1.0
            return mult.reshape(-1), 0.0
        assert self.idx is not None  # mode "gather" always has its index
        slots = np.bincount(self.idx[positions, rows].ravel(), minlength=self.group_size + self.channels)
        slots = slots.reshape(self.channels, -1).astype(np.float64)
        return slots[:, :-1].reshape(-1), float(slots[:, -1].sum())

    def _activity_plan(self, program: Program, reads: list[ReadRec]) -> None:
        """Per distinct READ geometry (rows, positions), how often each input element (and
        the padding) is driven; per READ its geometry and group. Nonzero digits per code."""
        rec = self.rec
        self.nzlut = _nonzero_digit_counts(self.umax, self.dac, rec.planes)
        geoms: dict[tuple[int, int, int, int], int] = {}
        self.geoms: list[tuple[np.ndarray | None, np.ndarray, float]] = []
        for r in reads:
            key = (r.row_start, r.row_count, r.pos_start, r.pos_count)
            if key in geoms:
                continue
            geoms[key] = len(self.geoms)
            mult, pad = self._multiplicity(slice(r.pos_start, r.pos_start + r.pos_count),
                                           slice(r.row_start, r.row_start + r.row_count))
            elems = np.flatnonzero(mult)
            whole = elems.size == self.group_size
            self.geoms.append((None if whole else elems, mult if whole else mult[elems], pad))
        self.read_geom = np.array([geoms[(r.row_start, r.row_count, r.pos_start, r.pos_count)] for r in reads],
                                  dtype=np.int64)
        self.read_group = np.array([r.group for r in reads], dtype=np.int64)
        item = np.dtype(self.gemm_dtype).itemsize
        vectors = rec.groups * rec.positions
        planes = self.k * self.rows_packed * max((u.levels.shape[2] for u in self.units), default=0)
        self.bytes_per_sample = (vectors * ((1 + self.rows_packed) * rec.rows * item + rec.filters * 16 + planes * 6)
                                 + rec.groups * self.group_size * (8 * 4 + (1 + self.rows_packed) * item))


@functools.lru_cache(maxsize=64)
def _packed_digits(umax: int, dac: int, active: tuple[int, ...], k: int, bits: int, dtype: str) -> np.ndarray:
    """``(J, umax + 1)``: for every code, its active planes' DAC digits packed ``k`` to a
    row, ``2^bits`` apart (cached for every caller, so read-only)."""
    codes = np.arange(umax + 1, dtype=np.int64)
    lut = np.zeros((-(-len(active) // k), codes.size), dtype=np.float64)
    for q, p in enumerate(active):
        lut[q // k] += ((codes >> (p * dac)) & (2**dac - 1)) * float(2 ** (bits * (q % k)))
    lut = lut.astype(dtype)
    lut.flags.writeable = False
    return lut


@functools.lru_cache(maxsize=64)
def _nonzero_digit_counts(umax: int, dac: int, planes: int) -> np.ndarray:
    """For every code ``0..umax``, how many of its ``planes`` DAC digits are nonzero
    (float64; cached for every caller, so read-only)."""
    counts = nonzero_digits(np.arange(umax + 1, dtype=np.int64), planes, dac).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _runs(groups: np.ndarray) -> list[slice]:
    """Maximal runs of consecutive numbers in sorted ``groups``, as index slices."""
    breaks = np.flatnonzero(np.diff(groups) != 1) + 1
    bounds = [0, *breaks.tolist(), len(groups)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]
