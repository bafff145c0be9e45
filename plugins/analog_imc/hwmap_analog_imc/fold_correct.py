"""The low-bit correction of :mod:`~hwmap_analog_imc.fold_kernel`: per rounding column and
plane, ``rem(S) = ((S + h) mod 2^s) − h`` of the column sum ``S``, from ``S`` modulo ``2^s``
only, in byte counters.

How. The unit's rows are cut in chunks of 8. Per block of 64 columns a table holds, for each
of the 256 patterns of 8 digits, the byte sums of the chunk's cell levels (built per run
from the cells, in vector registers: the patterns of the chunk's first 6 rows in Gray-code
order, each one addition or subtraction from the last, and each stored four times with
rows 6 and 7 added). Per input vector the 8-digit patterns of every plane (one byte per
plane and chunk, made row by row from a per-code table) are listed once per plane, the
zero patterns left out (about half: their table row is 0), and reused for every column
block. Per vector and plane, 64 byte counters sum one table row per nonzero pattern,
wrapping modulo 256 (a multiple of ``2^s`` for ``s ≤ 8``): one loop written as LLVM IR
whose two accumulators stay in vector registers (64 bytes a row, no loads or stores of the
counters). Where every shift is at most 3 (*nibble mode*), the levels are kept modulo 8,
two columns to a byte, and every addition is masked with 0x77: 128 columns per vector
addition. The remainders and the shift-and-add over planes then run on the counters at
once, are stored per vector, and the correction ``Σ_j coef_j Σ_p 2^p·rem_pj`` leaves each
filter's accumulation (exact integers). A unit with at most ``_FEW_POSITIONS`` input
vectors skips the tables and adds the level rows of its nonzero digits directly (the
tables would cost more than they save).
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
    sample and group at a time, so the scratch stays that of one vector set."""
    few = u.pc <= _FEW_POSITIONS
    tab = _aligned((0 if few else u.levels.shape[2] // 8) * 256 * COLUMN_BLOCK).reshape(-1, 256, COLUMN_BLOCK)
    cnt = _aligned(8 * COLUMN_BLOCK)
    _correct(codes, idx, sp, sr, pad, spread, g, u.groups, u.pos0, u.pc, u.row0, u.rc, u.levels, u.half, u.mask, few,
             0x77 if u.nibble else 0xFF, tab, cnt, u.coef, u.const, u.filt, u.r, acc)


# ------------------------------------------------------------------------------ compiled loops
@jit
def _patterns(row, idx, sp, sr, pad, spread, pos0, pc, row0, rc, pat):  # type: ignore[no-untyped-def]
    """``pat[c, t]``: byte ``q`` is the digit pattern of active plane ``q`` over rows
    ``8c .. 8c+7`` of the unit at its position ``t`` (codes of one sample and group). Where
    a row's positions are contiguous (``sp = 1``: a 1×1 convolution's channel) the loop
    runs along them, row by row."""
    pat[:] = 0
    if idx.shape[0] == 0 and sp == 1:
        for k in range(rc):
            base = (row0 + k) * sr + pos0
            src, dst = row[base:base + pc], pat[k >> 3]
            bit = np.uint64(k & 7)
            for t in range(pc):
                dst[t] |= spread[np.uint32(src[t])] << bit
        return
    gather = idx.shape[0] > 0
    for t in range(pc):
        for k in range(rc):
            if gather:
                v = idx[pos0 + t, row0 + k]
                u = pad if v < 0 else row[v]
            else:
                u = row[(pos0 + t) * sp + (row0 + k) * sr]
            pat[k >> 3, t] |= spread[u] << np.uint64(k & 7)


@jit
def _table(lev, tab, keep):  # type: ignore[no-untyped-def]
    """``tab[c, m, :]``: byte sums of the levels ``lev`` (rows8, 64) of rows ``8c + i`` over
    the bits ``i`` of ``m`` (modulo 256, or modulo 8 per nibble with ``keep`` 0x77)."""
    tabf = tab.reshape(-1)
    levf = lev.reshape(-1)
    for c in range(tab.shape[0]):
        _gray_table(tabf, c * 256 * 64, levf, c * 8 * 64, keep)


@jit
def _pattern_list(pats, t, src, bounds):  # type: ignore[no-untyped-def]
    """The nonzero patterns of position ``t`` (``pats[c, 8t + q]``; about half are 0, whose
    table row is 0) as byte offsets into the 8-row tables, ``src[k] = (c·256 + m)·64``,
    plane after plane: plane ``q``'s are ``src[bounds[q]:bounds[q + 1]]`` (without
    branches)."""
    k = 0
    for q in range(8):
        bounds[q] = k
        for c in range(pats.shape[0]):
            m = np.uint32(pats[c, t * 8 + q])
            src[k] = np.uint32(c << 14) | (m << np.uint32(6))
            k += np.intp(m != 0)
    bounds[8] = k


@jit
def _digit_rows(pats, t, rows, bounds):  # type: ignore[no-untyped-def]
    """The rows of position ``t`` whose digit is 1, as byte offsets ``rows[k] = r·64``,
    plane after plane as in :func:`_pattern_list` (without branches)."""
    k = 0
    for q in range(8):
        bounds[q] = k
        for c in range(pats.shape[0]):
            m = np.uint64(pats[c, t * 8 + q])
            for bit in range(8):
                rows[k] = np.uint32((c * 8 + bit) << 6)
                k += np.intp((m >> np.uint64(bit)) & np.uint64(1))
    bounds[8] = k


@jit
def _count(src, bounds, srcf, keep, cnt):  # type: ignore[no-untyped-def]
    """Byte counters ``cnt[q·64 + j]`` of one position: per plane ``q`` the sum of the rows
    of 64 bytes at ``srcf[src[e]:]``, ``e`` in ``bounds[q] .. bounds[q + 1]`` (table rows of
    8-row patterns, or level rows of single digits), summed in registers."""
    for q in range(8):
        _sum_rows(cnt, q * 64, srcf, src, bounds[q], bounds[q + 1], keep)


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
def _gray_table(typingctx, tab, toff, lev, loff, keep):  # type: ignore[no-untyped-def]
    """The 256 rows of 64 bytes at ``tab[toff:]``: row ``m`` the sum of the rows ``i`` of
    ``lev[loff:]`` over the bits ``i`` of ``m``, modulo 256 per byte (``keep`` 0xFF) or 8 per
    nibble (0x77). The eight level rows stay in vector registers; the patterns of rows 0..5
    are visited in Gray-code order, each one row away from the last (one addition or
    subtraction; a subtraction modulo 8 per nibble is ``((a | 0x88) − b) & 0x77``: no
    borrow crosses a nibble), and each gives four rows of the table with rows 6 and 7
    added: no load, and a dependency chain of 63 steps."""
    sig = types.void(tab, types.intp, lev, types.intp, types.uint8)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        vec_t = ir.VectorType(ir.IntType(8), 64)
        tab_a = context.make_array(signature.args[0])(context, builder, args[0])
        lev_a = context.make_array(signature.args[2])(context, builder, args[2])

        def splat(value):  # type: ignore[no-untyped-def]
            v = builder.insert_element(vec_t(ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(v, vec_t(ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))

        def ptr(arr, off):  # type: ignore[no-untyped-def]
            return builder.bitcast(builder.gep(arr.data, [off]), vec_t.as_pointer())

        keep = splat(args[4])
        borrow = splat(builder.not_(args[4]))
        rows = [builder.load(ptr(lev_a, builder.add(args[3], ir.Constant(ir.IntType(64), 64 * i))), align=1)
                for i in range(8)]
        high = [ir.Constant(vec_t, [0] * 64), rows[6], rows[7], builder.and_(builder.add(rows[6], rows[7]), keep)]

        def store(cur, m):  # type: ignore[no-untyped-def]  # patterns m, m + 64, m + 128, m + 192
            for h, extra in enumerate(high):
                v = cur if h == 0 else builder.and_(builder.add(cur, extra), keep)
                builder.store(v, ptr(tab_a, builder.add(args[1], ir.Constant(ir.IntType(64), 64 * (m + 64 * h)))),
                              align=1)

        cur = ir.Constant(vec_t, [0] * 64)
        store(cur, 0)
        for i in range(1, 64):  # rows 0..5 in Gray-code order: a chain of 63 steps, four stores each
            m, bit = i ^ (i >> 1), (i & -i).bit_length() - 1
            if m >> bit & 1:  # the row enters the pattern
                cur = builder.and_(builder.add(cur, rows[bit]), keep)
            else:
                cur = builder.and_(builder.sub(builder.or_(cur, borrow), rows[bit]), keep)
            store(cur, m)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _sum_rows(typingctx, dst, doff, src, offs, start, stop, keep):  # type: ignore[no-untyped-def]
    """``dst[doff:doff+64] = Σ_e src[offs[e]:offs[e]+64]`` over ``e`` in ``start .. stop``,
    bytes wrapping, each addition masked with ``keep`` (0x77: two 3-bit counters a byte):
    one loop whose two accumulators (alternate rows, added at the end) stay in vector
    registers; ``offs`` are uint32 byte offsets (C-contiguous arrays)."""
    sig = types.void(dst, types.intp, src, offs, types.intp, types.intp, types.uint8)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64, vec_t = ir.IntType(64), ir.VectorType(ir.IntType(8), 64)
        dst_a = context.make_array(signature.args[0])(context, builder, args[0])
        src_a = context.make_array(signature.args[2])(context, builder, args[2])
        offs_a = context.make_array(signature.args[3])(context, builder, args[3])
        start, stop = args[4], args[5]
        splat = builder.insert_element(vec_t(ir.Undefined), args[6], ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, vec_t(ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 64),
                                                                              [0] * 64))
        zero = ir.Constant(vec_t, [0] * 64)

        def row(e):  # type: ignore[no-untyped-def]
            off = builder.zext(builder.load(builder.gep(offs_a.data, [e])), i64)
            return builder.load(builder.bitcast(builder.gep(src_a.data, [off]), vec_t.as_pointer()), align=1)

        entry = builder.block
        head = builder.append_basic_block("sum_rows.head")
        body = builder.append_basic_block("sum_rows.body")
        tail = builder.append_basic_block("sum_rows.tail")
        builder.branch(head)
        builder.position_at_end(head)  # pairs of rows, one to each accumulator
        e = builder.phi(i64)
        acc0 = builder.phi(vec_t)
        acc1 = builder.phi(vec_t)
        e.add_incoming(start, entry)
        acc0.add_incoming(zero, entry)
        acc1.add_incoming(zero, entry)
        nxt = builder.add(e, ir.Constant(i64, 2))
        builder.cbranch(builder.icmp_signed("<=", nxt, stop), body, tail)
        builder.position_at_end(body)
        new0 = builder.and_(builder.add(acc0, row(e)), splat)
        new1 = builder.and_(builder.add(acc1, row(builder.add(e, ir.Constant(i64, 1)))), splat)
        e.add_incoming(nxt, body)
        acc0.add_incoming(new0, body)
        acc1.add_incoming(new1, body)
        builder.branch(head)
        builder.position_at_end(tail)  # an odd last row, then the two accumulators together
        total = builder.and_(builder.add(acc0, acc1), splat)
        odd = builder.icmp_signed("<", e, stop)
        with builder.if_else(odd) as (then, otherwise):
            with then:
                last = builder.and_(builder.add(total, row(e)), splat)
                from_then = builder.block
            with otherwise:
                from_else = builder.block
        result = builder.phi(vec_t)
        result.add_incoming(last, from_then)
        result.add_incoming(total, from_else)
        builder.store(result, builder.bitcast(builder.gep(dst_a.data, [args[1]]), vec_t.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@jit
def _correct(codes, idx, sp, sr, pad, spread, g, groups, pos0, pc, row0, rc, levels, half, mask, few, keep,
             tab, cnt, coef, const, filt, r, acc):  # type: ignore[no-untyped-def]
    """``acc[n, g, f, pos0 + t] −= Σ_j coef_j·(Σ_p 2^p·((S_pj mod 256 + h) & (2^s − 1))) − const_j``
    over the ``r`` slices ``j`` of the unit's filter ``f`` (see the module docstring): byte
    counters over 8-row tables, or over the rows themselves when the unit has ``few``
    positions. ``levels`` is ``(gu, column blocks, rows8, 64)``."""
    n = codes.shape[0] // g
    gu, ncb, rows8 = levels.shape[0], levels.shape[1], levels.shape[2]
    c8 = rows8 // 8
    pat = np.empty((c8, pc), dtype=np.uint64)
    patb = pat.view(np.uint8).reshape(c8, pc * 8)
    tabf = tab.reshape(-1)
    src = np.empty((pc, rows8 * 8 if few else c8 * 8), dtype=np.uint32)
    bounds = np.zeros((pc, 9), dtype=np.intp)
    tmp = np.empty(8 * 128, dtype=np.uint8)
    width = 64 if keep == 0xFF else 128
    val = np.empty((pc, ncb * width), dtype=np.uint16)
    term = np.empty(ncb * width, dtype=np.int64)
    nf = filt.shape[0]
    for i in range(n):
        for gk in range(gu):
            _patterns(codes[i * g + groups[gk]], idx, sp, sr, pad, spread, pos0, pc, row0, rc, pat)
            for t in range(pc):
                if few:
                    _digit_rows(patb, t, src[t], bounds[t])
                else:
                    _pattern_list(patb, t, src[t], bounds[t])
            for cb in range(ncb):
                if few:
                    srcf = levels[gk, cb].reshape(-1)
                else:
                    _table(levels[gk, cb], tab, keep)
                    srcf = tabf
                for t in range(pc):
                    _count(src[t], bounds[t], srcf, keep, cnt)
                    out = val[t, cb * width:(cb + 1) * width]
                    if keep == 0xFF:
                        _remainders(cnt, half[gk, cb], mask[gk, cb], tmp, out)
                    else:
                        _remainders_nibble(cnt, half[gk, cb], mask[gk, cb], tmp, out)
            row_acc = acc[i, groups[gk]]
            cg, kg = coef[gk], const[gk]
            for t in range(pc):  # per position: the terms of every column, then each filter's r of them
                vt = val[t]
                for j in range(term.shape[0]):
                    term[j] = cg[j] * np.int64(vt[j]) - kg[j]
                for fi in range(nf):
                    c = term[fi * r]
                    for j in range(fi * r + 1, fi * r + r):
                        c += term[j]
                    row_acc[filt[fi], pos0 + t] -= np.float64(c)
