"""Template models on hand-worked cases: cycles, multipliers, legal parallelism, memory
blocks, line buffers, and the memory layouts' round trip."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap_pipelined_dnn.buffers import line_buffer_pixels
from hwmap_pipelined_dnn.layers import LayerSpec, need_last, release_last
from hwmap_pipelined_dnn.postprocess import from_layout, layout_shape, to_layout
from hwmap_pipelined_dnn.templates import (Context, Option, divisors, hls4ml_reuse_factors, lane_counts, memory_blocks,
                                           options, templates_for)

CTX = Context(weight_bits=8, block_bits=18432)


def conv(cin: int, cout: int, h: int, w: int, k: int = 3, s: int = 1, p: int = 1, kind: str = "conv") -> LayerSpec:
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    spec = LayerSpec("c", kind, "Conv", ["src"], (cin, h, w), (cout, oh, ow), "t", kernel=(k, k), stride=(s, s),
                     pads=(p, p, p, p))
    spec.weights = cout * (1 if kind == "depthwise" else cin) * k * k
    spec.macs = spec.weights * oh * ow
    return spec


def every(spec: LayerSpec) -> list[Option]:
    """Every option of every template for ``spec``, before the Pareto pruning."""
    return [o for t in templates_for(spec.kind) for o in t.enum_options(spec, CTX)]


def find(spec: LayerSpec, template: str, **par: int) -> Option:
    return next(o for o in every(spec) if o.template == template and o.parallelism == par)


def test_lane_counts_and_divisors() -> None:
    assert divisors(12) == (1, 2, 3, 4, 6, 12)
    # 10 channels: folds 10, 5, 4, 3, 2, 1 reached with 1, 2, 3, 4, 5, 10 lanes
    assert lane_counts(10) == ((1, 10), (2, 5), (3, 4), (4, 3), (5, 2), (10, 1))
    assert hls4ml_reuse_factors(4, 3) == (1, 2, 4, 12)


def test_mvau_conv_cycles_hand_worked() -> None:
    # 3×3 conv, 8 → 16 channels on 8×8 (pad 1): 64 output pixels, K² = 9
    spec = conv(8, 16, 8, 8)
    o = find(spec, "mvau", PE=4, SIMD=2, MMV=1)
    assert o.cycles == 64 * 9 * (8 // 2) * (16 // 4) == 9216
    assert o.multipliers == 8
    # PE = 3 does not divide 16: ceil(16/3) = 6 folds, the last one padded
    assert find(spec, "mvau", PE=3, SIMD=8, MMV=1).cycles == 64 * 9 * 1 * 6
    # pixel parallelism once PE and SIMD are full: MMV = 4 of the 8 output columns
    o = find(spec, "mvau", PE=16, SIMD=8, MMV=4)
    assert (o.cycles, o.multipliers) == (8 * 2 * 9, 16 * 8 * 4)
    assert find(spec, "mvau", PE=16, SIMD=8, MMV=1).cycles == 64 * 9


def test_window_unroll_and_vvau_hand_worked() -> None:
    o = find(conv(8, 16, 8, 8), "window_unroll", PE=2, SIMD=4)
    assert (o.cycles, o.multipliers) == (64 * 2 * 8, 9 * 4 * 2)
    o = find(conv(32, 32, 16, 16, kind="depthwise"), "vvau", PE=8, SIMD=3, MMV=1)
    assert (o.cycles, o.multipliers) == (256 * 4 * 3, 24)
    assert {t.name for t in templates_for("depthwise")} == {"vvau"}
    assert {t.name for t in templates_for("conv")} == {"mvau", "window_unroll"}
    assert {t.name for t in templates_for("fc")} == {"mvau", "dense_reuse"}


def test_dense_reuse_hand_worked() -> None:
    fc = LayerSpec("f", "fc", "Gemm", ["src"], (64, 1, 1), (10, 1, 1), "t", weights=640, macs=640)
    o = find(fc, "dense_reuse", R=64)
    assert (o.cycles, o.multipliers) == (64, 10)
    o = find(fc, "mvau", PE=5, SIMD=16, MMV=1)
    assert (o.cycles, o.multipliers) == (2 * 4, 80)


def test_options_pareto_and_sorted() -> None:
    opts = options(conv(32, 64, 16, 16), CTX)
    assert [o.cycles for o in opts] == sorted(o.cycles for o in opts)
    for i, a in enumerate(opts):  # nothing kept is beaten on every count by a faster or equal option
        for b in opts[:i]:
            assert not (b.multipliers <= a.multipliers and b.blocks <= a.blocks), (a, b)


def test_memory_blocks_ramb18() -> None:
    # 4,608 8-bit weights read 16 per cycle: a 128-bit wide, 288-deep memory = 4 blocks of 512×36
    assert memory_blocks(4608, 16, 8, 18432) == 4
    # one weight per cycle: 8 bits × 4,608 deep = 3 blocks of 2K×9
    assert memory_blocks(4608, 1, 8, 18432) == 3
    assert memory_blocks(0, 4, 8, 18432) == 0


@pytest.mark.parametrize(("k", "w", "want"), [(3, 8, 2 * 8 + 3), (3, 224, 2 * 224 + 3), (5, 10, 4 * 10 + 5)])
def test_line_buffer_formula(k: int, w: int, want: int) -> None:
    # ((K−1)·W + K)·C values: the engine counts pixels of C channels
    spec = conv(4, 4, 16, w, k=k, p=k // 2)
    assert line_buffer_pixels(spec) == want


def test_need_and_release_of_a_window() -> None:
    spec = conv(1, 1, 4, 4)  # 3×3, pad 1, stride 1: output (0,0) needs input (1,1) = index 5
    need = need_last(spec)
    assert need[0] == 5 and need[-1] == 15 and need[5] == 2 * 4 + 2
    rel = release_last(spec)
    assert rel[0] == 1 * 4 + 1  # input (0,0) is read last by output (1,1)
    assert rel[15] == 15
    s2 = conv(1, 1, 4, 4, k=1, s=2, p=0, kind="pointwise")  # a strided 1×1 skips odd rows and columns
    assert list(release_last(s2)[:4]) == [0, -1, 1, -1]


@pytest.mark.parametrize("template,kind", [("mvau", "conv"), ("window_unroll", "conv"), ("vvau", "depthwise"),
                                           ("mvau", "fc"), ("dense_reuse", "fc"), ("dense_reuse", "pointwise")])
def test_layout_round_trip(template: str, kind: str) -> None:
    rng = np.random.default_rng(1)
    if kind == "fc":
        spec = LayerSpec("f", "fc", "Gemm", ["s"], (3, 2, 2), (10, 1, 1), "t", weights=120, macs=120)
        canon = rng.integers(-127, 128, (10, 12))
    elif kind == "pointwise":
        spec = conv(6, 10, 4, 4, k=1, p=0, kind="pointwise")
        canon = rng.integers(-127, 128, (10, 1, 1, 6))
    elif kind == "depthwise":
        spec = conv(7, 7, 6, 6, kind="depthwise")
        canon = rng.integers(-127, 128, (7, 3, 3))
    else:
        spec = conv(5, 7, 6, 6)
        canon = rng.integers(-127, 128, (7, 3, 3, 5))
    for o in (x for x in options(spec, CTX) if x.template == template):
        mem = to_layout(canon, spec, o)
        assert mem.shape == layout_shape(spec, o)
        assert np.array_equal(from_layout(mem, spec, o), canon), o
        assert int(np.abs(mem).sum()) == int(np.abs(canon).sum())  # padding holds zeros only
