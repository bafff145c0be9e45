"""Direct integer convolutions for the folded kernel (:mod:`~hwmap_analog_imc.fold_kernel`):
depthwise-like layers (few filters per group) without BLAS.

A 2-D one is shifted multiply-adds over each channel padded with the code of 0 (others run
over the im2col index plan). A depthwise 3×3 is nine shifted views of the padded channel
summed along its flattened rows (the columns past the output's width computed and dropped,
so the loop runs over whole vectors however narrow the rows); a strided one first splits the
channel by row and column phase, so each tap reads a contiguous run. Every sum is of
integers, exact in the type the plan picks.
"""

from __future__ import annotations

import numpy as np

from .fold_correct import jit as _jit

__all__ = ["direct_conv", "direct_conv2d"]


@_jit
def direct_conv(codes, idx, pad, w, off, a, b, acc):  # type: ignore[no-untyped-def]
    """``acc[n, g, f, p] = Σ_r w[g, r, f]·code(p, r) + off[g, f]`` for positions ``a..b``
    (integers, exact in int64)."""
    n, g = codes.shape[0], codes.shape[1]
    rows, nf = w.shape[1], w.shape[2]
    for i in range(n):
        for gi in range(g):
            for f in range(nf):
                for p in range(a, b):
                    s = 0
                    for r in range(rows):
                        v = idx[p, r]
                        s += w[gi, r, f] * (pad if v < 0 else codes[i, gi, v])
                    acc[i, gi, f, p] = np.float64(s) + off[gi, f]


@_jit
def _taps9(src, offs, w, oh, ow, wq, o, tmp, acc):  # type: ignore[no-untyped-def]
    """``acc[y·OW + x] = o + Σ_t w[t]·src[offs[t] + y·wq + x]``: a depthwise 3×3 over rows
    ``wq`` wide, as one multiply-add of nine shifted views along the flattened rows (the
    columns past OW are computed and dropped; views indexed from 0, so no wraparound test
    and the loop vectorizes however narrow the rows). Exact integers in ``src``'s type."""
    n = oh * wq
    q0, q1, q2 = src[offs[0]:offs[0] + n], src[offs[1]:offs[1] + n], src[offs[2]:offs[2] + n]
    q3, q4, q5 = src[offs[3]:offs[3] + n], src[offs[4]:offs[4] + n], src[offs[5]:offs[5] + n]
    q6, q7, q8 = src[offs[6]:offs[6] + n], src[offs[7]:offs[7] + n], src[offs[8]:offs[8] + n]
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    for k in range(n):
        tmp[k] = (w0 * q0[k] + w1 * q1[k] + w2 * q2[k] + w3 * q3[k] + w4 * q4[k] + w5 * q5[k] + w6 * q6[k]
                  + w7 * q7[k] + w8 * q8[k])
    for y in range(oh):
        row, dst = tmp[y * wq:y * wq + ow], acc[y * ow:(y + 1) * ow]
        for x in range(ow):
            dst[x] = np.float64(row[x]) + o


@_jit
def _phases(plane, hp, wp, sh, sw, hq, wq, out):  # type: ignore[no-untyped-def]
    """The padded plane ``(hp, wp)`` split by row and column phase for strides ``sh, sw``:
    ``out[(a·sw + b)·hq·wq + r·wq + c] = plane[(r·sh + a)·wp + c·sw + b]`` (0 past the
    plane), so a strided tap reads a contiguous run of one phase."""
    out[:] = 0
    for a in range(sh):
        for b in range(sw):
            base = (a * sw + b) * hq * wq
            for r in range(hq):
                y = r * sh + a
                if y >= hp:
                    break
                srow, drow = plane[y * wp:(y + 1) * wp], out[base + r * wq:base + (r + 1) * wq]
                for c in range(min(wq, (wp - b + sw - 1) // sw)):
                    drow[c] = srow[c * sw + b]


@_jit
def _dw_layout(hp, wp, sh, sw, dh, dw, oh):  # type: ignore[no-untyped-def]
    """``(hq, wq, offs)`` of a depthwise 3×3 on a plane ``(hp, wp)``: rows and width of one
    phase (the plane itself for unit strides) and each tap's start in the phases; a phase
    keeps ``oh + ⌊2·dh/sh⌋ + 1`` rows at least, so the junk columns' reads stay inside."""
    if sh == 1 and sw == 1:
        hq, wq = hp, wp
    else:
        hq, wq = max(-(-hp // sh), oh + (2 * dh) // sh + 1), -(-wp // sw)
    offs = np.empty(9, dtype=np.int64)
    for a in range(3):
        for b in range(3):
            phase = ((a * dh) % sh) * sw + (b * dw) % sw
            offs[a * 3 + b] = phase * hq * wq + ((a * dh) // sh) * wq + (b * dw) // sw
    return hq, wq, offs


@_jit
def direct_conv2d(codes, geom, pad, w, off, acc, plane):  # type: ignore[no-untyped-def]
    """A 2-D convolution of few filters per group as shifted multiply-adds over each
    channel padded with the code of 0: ``acc[n, g, f, oh·OW + ow] = off[g, f] + Σ_(c, i, j)
    w[g, (c·kh + i)·kw + j, f]·code[c, oh·sh + i·dh − ph, ow·sw + j·dw − pw]`` in the type
    of ``w`` and ``plane`` (scratch; the plan picks float32 where every sum stays below 2^24, so the
    integers are exact in any order). With unit strides every tap is one long multiply-add
    over a tile of padded rows that stays in cache (the columns past OW are dropped)."""
    cg, h, wd, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = (geom[0], geom[1], geom[2], geom[3], geom[4], geom[5],
                                                          geom[6], geom[7], geom[8], geom[9], geom[10], geom[11],
                                                          geom[12])
    n, g = codes.shape[0], codes.shape[1]
    nf = w.shape[2]
    hp = max(h + ph, (oh - 1) * sh + (kh - 1) * dh + 1) + 1  # one spare row for the long taps
    wp = max(wd + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    unit = sh == 1 and sw == 1
    out = np.empty(oh * (wp if unit else ow), dtype=plane.dtype)
    depthwise = cg == 1 and kh == 3 and kw == 3
    hq, wq, offs = _dw_layout(hp, wp, sh, sw, dh, dw, oh)
    phases = np.empty(sh * sw * hq * wq if depthwise and not unit else 0, dtype=plane.dtype)
    tmp = np.empty(oh * wq if depthwise else 0, dtype=plane.dtype)
    tile = 8
    for i in range(n):
        for gi in range(g):
            plane[:] = pad
            src = codes[i, gi]
            for c in range(cg):
                for y in range(h):
                    s0 = (c * h + y) * wd
                    d0 = (c * hp + y + ph) * wp + pw
                    srow, drow = src[s0:s0 + wd], plane[d0:d0 + wd]  # views from 0: the copy vectorizes
                    for x in range(wd):
                        drow[x] = srow[x]
            if depthwise and not unit:
                _phases(plane, hp, wp, sh, sw, hq, wq, phases)
            for f in range(nf):
                if depthwise:  # the nine taps summed in registers, along the flattened rows
                    _taps9(plane if unit else phases, offs, w[gi, :, f], oh, ow, wq, off[gi, f], tmp, acc[i, gi, f])
                    continue
                out[:] = 0
                if unit:
                    for y0 in range(0, oh, tile):
                        k0, k1 = y0 * wp, min(oh, y0 + tile) * wp
                        for c in range(cg):
                            for a in range(kh):
                                for b in range(kw):
                                    wv = w[gi, (c * kh + a) * kw + b, f]
                                    base = (c * hp + a * dh) * wp + b * dw
                                    for k in range(k0, k1):
                                        out[k] += wv * plane[base + k]
                for c in range(cg if not unit else 0):
                    for a in range(kh):
                        for b in range(kw):
                            wv = w[gi, (c * kh + a) * kw + b, f]
                            for y in range(oh):
                                base = (c * hp + y * sh + a * dh) * wp + b * dw
                                for x in range(ow):
                                    out[y * ow + x] += wv * plane[base + x * sw]
                o = off[gi, f]
                width = wp if unit else ow
                for y in range(oh):
                    for x in range(ow):
                        acc[i, gi, f, y * ow + x] = np.float64(out[y * width + x]) + o
