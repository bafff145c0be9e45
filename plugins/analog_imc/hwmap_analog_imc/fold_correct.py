"""The low-bit correction of :mod:`~hwmap_analog_imc.fold_kernel`: per rounding column and
plane, ``rem(S) = ((S + h) mod 2^s) − h`` of the column sum ``S``, from ``S`` modulo ``2^s``
only, in byte counters.

How. The unit's rows are cut in chunks of 8. Per block of 64 columns a table holds, for each
of the 256 patterns of 8 digits, the byte sums of the chunk's cell levels (built per run
from the cells: 255 vector additions per chunk). Per input vector the 8-digit patterns of
every plane (one 64-bit word per chunk, from a per-code table) are listed once, the zero
patterns left out (about half: their table row is 0), and reused for every column block.
Per vector and plane, 64 byte counters add one table row per nonzero pattern, wrapping
modulo 256 (a multiple of ``2^s`` for ``s ≤ 8``); each addition is one 64-byte vector
operation (an LLVM intrinsic: no loop, so no per-call alias or trip-count checks). Where
every shift is at most 3 (*nibble mode*), the levels are kept modulo 8, two columns to a
byte, and every addition is masked with 0x77: 128 columns per vector addition. The
remainders and the shift-and-add over planes then run on the counters at once, and the
correction ``Σ_j coef_j Σ_p 2^p·rem_pj`` leaves the accumulations. A unit with at most
``_FEW_POSITIONS`` input vectors skips the tables and adds the level rows of its nonzero
digits directly (the tables would cost more than they save).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.extending import intrinsic

if TYPE_CHECKING:
    from .fast_layer import FastLayer

__all__ = ["COLUMN_BLOCK", "FoldUnit", "fold_unit", "correct", "jit"]

#: Columns one set of byte counters holds (64 bytes: one AVX-512 register, two AVX2 ones).
COLUMN_BLOCK = 64
#: Positions at or below which a unit's byte counters add its rows directly (no tables).
_FEW_POSITIONS = 2
#: Compiled once and cached; no fast-math: every float operation rounds as numpy's does.
jit = njit(cache=True, nogil=True, error_model="numpy")


@dataclass
class FoldUnit:
    """The rounding columns of blocks that share rows and positions, over groups ``groups``.
    Columns are filter-major (``fi·r + j``: slice ``j`` of the unit's filter ``filt[fi]``),
    padded to whole column blocks; rows padded to whole chunks of 4."""

    groups: np.ndarray  # (gu,) int64
    pos0: int
    pc: int
    row0: int
    rc: int
    filt: np.ndarray  # (nf,) int64 filters of the layer
    r: int  # rounding slices per filter
    levels: np.ndarray  # (gu, column blocks, rows8, 64) uint8 (two columns a byte in nibble mode)
    half: np.ndarray  # (gu, column blocks, 8·width) uint8: 2^(s−1) of plane p, 0 for s = 0
    mask: np.ndarray  # (gu, column blocks, 8·width) uint8: 2^s − 1 (0 past the layer's planes)
    coef: np.ndarray  # (gu, ncols) int64: coef_j, 0 for padding
    const: np.ndarray  # (gu, ncols) int64: Σ_p coef_j·2^p·h
    nibble: bool  # every shift at most 3: counters of 4 bits (modulo 8), width 128 columns


def fold_unit(layer: "FastLayer", bs, run: slice) -> FoldUnit:  # type: ignore[no-untyped-def]
    """A block set's rounding slices over groups ``run`` as the byte counters' inputs: in
    nibble mode (every shift at most 3) the levels modulo 8, two columns to a byte."""
    rec = layer.rec
    cpf, rounding, r = rec.cols_per_filter, bs.rounding, bs.rounding.size
    groups = bs.groups[run]
    gu, rc = len(groups), bs.row_count
    filt = np.concatenate([np.arange(p.filter_start, p.filter_start + p.filter_count) for p in bs.parts])
    ncols = filt.size * r
    nibble = max(int(p.shifts[run][:, :, rounding].max(initial=0)) for p in bs.parts) <= 3
    width = 2 * COLUMN_BLOCK if nibble else COLUMN_BLOCK
    ncolsw = -(-ncols // width) * width
    rows8 = -(-rc // 8) * 8
    nq = 8  # planes (at most 8: the digit patterns of a chunk are one 64-bit word)
    levels = np.zeros((gu, rows8, ncolsw), dtype=np.uint8)
    shift = np.zeros((gu, nq, ncolsw), dtype=np.int64)
    coef = np.zeros((gu, ncolsw), dtype=np.int64)
    f = 0
    for p in bs.parts:
        fc = p.filter_count
        cells = p.cells[run].reshape(gu, rc, fc, cpf)[..., rounding]  # (gu, rc, fc, r)
        levels[:, :rc, f * r:(f + fc) * r] = cells.reshape(gu, rc, fc * r)
        sh = p.shifts[run][:, :, rounding]  # (gu, planes, r)
        np_ = sh.shape[1]
        shift[:, :np_, f * r:(f + fc) * r] = np.broadcast_to(sh[:, :, None, :], (gu, np_, fc, r)).reshape(gu, np_, fc * r)
        coef[:, f * r:(f + fc) * r] = np.tile(layer.coef[rounding], fc)
        f += fc
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    mask = np.left_shift(1, shift) - 1
    pw = np.left_shift(1, np.arange(nq, dtype=np.int64))
    const = (coef[:, None, :] * pw[None, :, None] * half).sum(axis=1)
    ncb = ncolsw // width
    blocks = levels.reshape(gu, rows8, ncb, width).transpose(0, 2, 1, 3)
    if nibble:  # byte j of a block: column j modulo 8, and column 64 + j modulo 8 in the high nibble
        blocks = (blocks[..., :COLUMN_BLOCK] & 7) | ((blocks[..., COLUMN_BLOCK:] & 7) << 4)
    return FoldUnit(groups.astype(np.int64), bs.pos_start, bs.pos_count, bs.row_start, rc, filt.astype(np.int64), r,
                     np.ascontiguousarray(blocks), _per_block(half, width), _per_block(mask, width), coef, const,
                     nibble)


def _per_block(a: np.ndarray, width: int) -> np.ndarray:
    """``(gu, nq, ncols)`` as uint8 ``(gu, column blocks, nq·width)``."""
    gu, nq, ncols = a.shape
    return np.ascontiguousarray(a.astype(np.uint8).reshape(gu, nq, ncols // width, width).transpose(0, 2, 1, 3)
                                ).reshape(gu, ncols // width, nq * width)


def _aligned(size: int) -> np.ndarray:
    """``size`` bytes starting on a 64-byte boundary (a row of byte counters or of a table
    then sits in one cache line)."""
    raw = np.empty(size + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size]


def correct(u: FoldUnit, codes: np.ndarray, idx: np.ndarray, sp: int, sr: int, pad: int, spread: np.ndarray, g: int,
            acc: np.ndarray) -> None:
    """Subtract unit ``u``'s rounding remainders from ``acc`` ``(N, G, F, P)``; ``codes`` are
    ``(N·G, size)``, a vector's row ``i`` at ``idx[t, i]`` (gather) or ``t·sp + i·sr``. One
    sample at a time, so the scratch stays that of one sample."""
    width = COLUMN_BLOCK * (2 if u.nibble else 1)
    val = np.empty((1, len(u.groups), u.levels.shape[1] * width, u.pc), dtype=np.uint16)
    few = u.pc <= _FEW_POSITIONS
    tab = _aligned((0 if few else u.levels.shape[2] // 8) * 256 * COLUMN_BLOCK).reshape(-1, 256, COLUMN_BLOCK)
    cnt = _aligned(8 * COLUMN_BLOCK)
    for i in range(codes.shape[0] // g):
        _correct(codes[i * g:(i + 1) * g], idx, sp, sr, pad, spread, g, u.groups, u.pos0, u.pc, u.row0, u.rc, u.levels,
                 u.half, u.mask, few, 0x77 if u.nibble else 0xFF, tab, cnt, val)
        _subtract(val, u.coef, u.const, u.groups, u.filt, u.r, u.pos0, acc[i:i + 1])


# ------------------------------------------------------------------------------ compiled loops
@jit
def _patterns(row, idx, sp, sr, pad, spread, pos0, pc, row0, rc, pat):  # type: ignore[no-untyped-def]
    """``pat[t, c]``: byte ``q`` is the digit pattern of active plane ``q`` over rows
    ``8c .. 8c+7`` of the unit at its position ``t`` (codes of one sample and group)."""
    pat[:] = 0
    gather = idx.shape[0] > 0
    for t in range(pc):
        for k in range(rc):
            if gather:
                v = idx[pos0 + t, row0 + k]
                u = pad if v < 0 else row[v]
            else:
                u = row[(pos0 + t) * sp + (row0 + k) * sr]
            pat[t, k >> 3] |= spread[u] << np.uint64(k & 7)


@jit
def _table(lev, tab, keep):  # type: ignore[no-untyped-def]
    """``tab[c, m, :]``: byte sums of the levels ``lev`` (rows8, 64) of rows ``8c + i`` over
    the bits ``i`` of ``m`` (each add masked with ``keep``)."""
    tabf = tab.reshape(-1)
    levf = lev.reshape(-1)
    for c in range(tab.shape[0]):
        tab[c, 0, :] = 0
        for m in range(1, 256):
            low = m & -m
            bit = 0
            while (1 << bit) != low:
                bit += 1
            _add64(tabf, (c * 256 + m) * 64, tabf, (c * 256 + (m ^ low)) * 64, levf, (8 * c + bit) * 64, keep)


@jit
def _pattern_list(pats, t, src, planes):  # type: ignore[no-untyped-def]
    """The nonzero patterns of position ``t`` (half of them are 0, whose table row is 0) as
    byte offsets into the 8-row tables, ``src[k] = (c·256 + m)·64``, and ``planes[k] =
    q·64`` (without branches); returns how many."""
    k = 0
    c8 = pats.shape[1] // 8
    for c in range(c8):
        for q in range(8):
            m = np.uint32(pats[t, c * 8 + q])
            src[k] = np.uint32(c << 14) | (m << np.uint32(6))
            planes[k] = np.uint32(q << 6)
            k += np.intp(m != 0)
    return k


@jit
def _digit_rows(pats, t, rows, planes):  # type: ignore[no-untyped-def]
    """The (row, plane) pairs of position ``t`` whose digit is 1, as byte offsets
    ``rows[k] = r·64``, ``planes[k] = q·64`` (without branches); returns how many."""
    k = 0
    c8 = pats.shape[1] // 8
    for c in range(c8):
        for q in range(8):
            m = np.uint64(pats[t, c * 8 + q])
            for bit in range(8):
                rows[k] = np.uint32((c * 8 + bit) << 6)
                planes[k] = np.uint32(q << 6)
                k += np.intp((m >> np.uint64(bit)) & np.uint64(1))
    return k


@jit
def _count(src, planes, k, srcf, keep, cnt):  # type: ignore[no-untyped-def]
    """Byte counters ``cnt[q·64 + j]`` of one position: the sum of the ``k`` rows of 64
    bytes at ``srcf[src[e]:]`` into counter ``planes[e]`` (table rows of 8-row patterns, or
    level rows of single digits). Offsets are uint32, so LLVM sees them non-negative and
    vectorizes the row addition."""
    cnt[:] = 0
    for e in range(k):
        o = np.intp(planes[e])
        _add64(cnt, o, cnt, o, srcf, np.intp(src[e]), keep)


@jit
def _remainders(cnt, half, mask, tmp, val):  # type: ignore[no-untyped-def]
    """``val[j] = Σ_p 2^p·((S_pj + h) & (2^s − 1))`` for the 64 columns of byte counters
    ``cnt[p·64 + j]`` (bytes wrap modulo 256, a multiple of 2^s; the sum is below 2^16).
    Fixed trip counts, so LLVM vectorizes."""
    for j in range(512):
        tmp[j] = np.uint8(np.uint8(cnt[j] + half[j]) & mask[j])
    for j in range(64):
        s = np.uint16(0)
        for p in range(8):
            s = np.uint16(s + np.uint16(np.uint16(tmp[p * 64 + j]) << np.uint16(p)))
        val[j] = s


@jit
def _remainders_nibble(cnt, half, mask, tmp, val):  # type: ignore[no-untyped-def]
    """As :func:`_remainders` for 128 columns of 3-bit counters (``S mod 8``): column ``j``
    in the low nibble of byte ``j``, column ``64 + j`` in its high nibble."""
    for p in range(8):
        for j in range(64):
            c = cnt[p * 64 + j]
            tmp[p * 128 + j] = np.uint8(np.uint8((c & 15) + half[p * 128 + j]) & mask[p * 128 + j])
            tmp[p * 128 + 64 + j] = np.uint8(np.uint8((c >> 4) + half[p * 128 + 64 + j]) & mask[p * 128 + 64 + j])
    for j in range(128):
        s = np.uint16(0)
        for p in range(8):
            s = np.uint16(s + np.uint16(np.uint16(tmp[p * 128 + j]) << np.uint16(p)))
        val[j] = s


@intrinsic
def _add64(typingctx, dst, doff, a, aoff, b, boff, keep):  # type: ignore[no-untyped-def]
    """``dst[doff:doff+64] = (a[aoff:aoff+64] + b[boff:boff+64]) & keep`` (bytes, wrapping;
    ``keep`` 0x77 adds two 3-bit counters a byte), as one 64-byte vector operation: no
    loop, so no per-call alias or trip-count checks."""
    sig = types.void(dst, types.intp, a, types.intp, b, types.intp, types.uint8)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        vec = ir.VectorType(ir.IntType(8), 64).as_pointer()
        ptrs = []
        for k in (0, 2, 4):
            arr = context.make_array(signature.args[k])(context, builder, args[k])
            ptrs.append(builder.bitcast(builder.gep(arr.data, [args[k + 1]]), vec))
        total = builder.add(builder.load(ptrs[1], align=1), builder.load(ptrs[2], align=1))
        splat = builder.insert_element(ir.VectorType(ir.IntType(8), 64)(ir.Undefined), args[6],
                                       ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.VectorType(ir.IntType(8), 64)(ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
        builder.store(builder.and_(total, splat), ptrs[0], align=1)
        return context.get_dummy_value()

    return sig, codegen


@jit
def _correct(codes, idx, sp, sr, pad, spread, g, groups, pos0, pc, row0, rc, levels, half, mask, few, keep,
             tab, cnt, out):  # type: ignore[no-untyped-def]
    """``out[n, gk, col, t] = Σ_p 2^p·((S_p mod 256 + h) & (2^s − 1))`` of one unit (see
    the module docstring): byte counters over 8-row tables, or over the rows themselves
    when the unit has ``few`` positions. ``levels`` is ``(gu, column blocks, rows8, 64)``."""
    n = codes.shape[0] // g
    gu, ncb, rows8 = levels.shape[0], levels.shape[1], levels.shape[2]
    c8 = rows8 // 8
    pat = np.empty((pc, c8), dtype=np.uint64)
    patb = pat.view(np.uint8).reshape(pc, c8 * 8)
    tabf = tab.reshape(-1)
    src = np.empty((pc, rows8 * 8 if few else c8 * 8), dtype=np.uint32)
    planes = np.empty(src.shape, dtype=np.uint32)
    ones = np.zeros(pc, dtype=np.intp)
    tmp = np.empty(8 * 128, dtype=np.uint8)
    width = 64 if keep == 0xFF else 128
    vals = np.empty(width, dtype=np.uint16)
    for i in range(n):
        for gk in range(gu):
            _patterns(codes[i * g + groups[gk]], idx, sp, sr, pad, spread, pos0, pc, row0, rc, pat)
            for t in range(pc):
                ones[t] = (_digit_rows(patb, t, src[t], planes[t]) if few
                           else _pattern_list(patb, t, src[t], planes[t]))
            for cb in range(ncb):
                if few:
                    srcf = levels[gk, cb].reshape(-1)
                else:
                    _table(levels[gk, cb], tab, keep)
                    srcf = tabf
                for t in range(pc):
                    _count(src[t], planes[t], ones[t], srcf, keep, cnt)
                    if keep == 0xFF:
                        _remainders(cnt, half[gk, cb], mask[gk, cb], tmp, vals)
                    else:
                        _remainders_nibble(cnt, half[gk, cb], mask[gk, cb], tmp, vals)
                    for j in range(width):  # column-major, so the subtraction runs along positions
                        out[i, gk, cb * width + j, t] = vals[j]


@jit
def _subtract(val, coef, const, groups, filt, r, pos0, acc):  # type: ignore[no-untyped-def]
    """``acc[n, g, f, pos0 + t] −= Σ_j coef_j·val_j − const_j`` over the ``r`` slices ``j`` of
    the unit's filter ``f`` (exact integers; ``val`` is ``(n, gu, columns, positions)``)."""
    n, gu, pc = val.shape[0], val.shape[1], val.shape[3]
    for i in range(n):
        for gk in range(gu):
            row_acc = acc[i, groups[gk]]
            for fi in range(filt.shape[0]):
                dst = row_acc[filt[fi]]
                for j in range(fi * r, fi * r + r):
                    c = coef[gk, j]
                    k = const[gk, j]
                    col = val[i, gk, j]
                    for t in range(pc):
                        dst[pos0 + t] -= np.float64(c * np.int64(col[t]) - k)
