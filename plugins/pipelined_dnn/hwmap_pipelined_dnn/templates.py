"""The template library: pre-templated architectures per layer kind, with their models.

Chapter Section 3.5, Fig. 3.20 (a, b): "Each layer of the network is associated with a
hardware architecture corresponding to the type of operation carried out in the layer.
Several architectural models can be considered for a given layer type; in which case the
best suited architecture is selected for that layer." Each :class:`Template` here gives,
for a layer, every legal parallelism (:class:`Option`) with its cycle count per frame, the
multiply units it instantiates, the memory blocks its weight memory takes and its weight
memory layout. Selection (:func:`options`) lists the options of every template that
implements the layer's kind; the parallelism tuner (:mod:`.tuner`) then picks, per layer,
the option — template and parallelism together — best suited to the throughput asked.

================ ============ =========================================================
template         kinds        model (per frame; C_in, C_out channels, K×K kernel, OH×OW
                              output pixels, N_in/N_out fc sizes)
================ ============ =========================================================
``mvau``         conv,        FINN's matrix–vector–activation unit behind a sliding
                 pointwise,   window generator: PE | C_out output channels, SIMD | C_in
                 fc           input channels (SIMD | N_in for fc), MMV | OW output pixels
                              of a row in parallel; cycles = OH·(OW/MMV)·K²·(C_in/SIMD)·
                              (C_out/PE), multipliers = PE·SIMD·MMV (FINN folding
                              constraints MH % PE = 0, MW % SIMD = 0; MMV: FINN PR #789)
``window_unroll`` conv (K>1)  the whole K×K window in parallel (DNeuro's convolution
                              block; hls4ml's io_stream conv with reuse 1 over the
                              kernel): PE | C_out, SIMD | C_in; cycles = OH·OW·(C_in/SIMD)·
                              (C_out/PE), multipliers = K²·SIMD·PE
``dense_reuse``  fc,          hls4ml's dense layer with reuse factor R: multipliers =
                 pointwise    N_in·N_out/R, cycles = R per output pixel; R legal as in
                              hls4ml (R | N_in, or R a multiple of N_in dividing N_in·N_out)
``vvau``         depthwise    FINN's vector–vector–activation unit: PE | C channels,
                              SIMD | K², MMV | OW; cycles = OH·(OW/MMV)·(C/PE)·(K²/SIMD),
                              multipliers = PE·SIMD·MMV (FINN: k_h·k_w % SIMD = 0,
                              channels % PE = 0)
``pool``         pool         FINN's Pool / Globalaccpool: PE | C comparators or adders;
                              cycles = max(OH·OW·K², H·W)·C/PE (window pools) or H·W·C/PE
                              (global pools); no multipliers (the average's divide is
                              the pool engine's own)
``eltwise_add``  add          FINN's AddStreams / ElementwiseBinary: PE | C adders;
                              cycles = H·W·C/PE; no multipliers
``activation``   activation   FINN's Thresholding / hls4ml's ReLU: PE | C lanes;
                              cycles = H·W·C/PE; no multipliers
``stream_in``    source       the input interface: hardware.input_pixels_per_cycle pixels
                              per cycle (hls4ml io_stream: one pixel, all channels)
================ ============ =========================================================

Weight memory blocks (the optional second resource): a template reading L weights per
cycle keeps its weights in a memory L·b bits wide and W/L words deep (b the weight bits,
W the weights), built from blocks of ``hardware.memory_block_bits`` in the aspect ratios of
a Xilinx RAMB18 (UG573: 16K×1, 8K×2, 4K×4, 2K×9, 1K×18, 512×36): the fewest blocks over
the aspect ratios (the same reasoning as FINN's BRAM estimate of an MVAU).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from .layers import LayerSpec

__all__ = ["Option", "Template", "Context", "TEMPLATES", "options", "templates_for", "divisors", "memory_blocks",
           "hls4ml_reuse_factors", "lane_counts", "KINDS"]

KINDS = ("source", "conv", "pointwise", "depthwise", "fc", "pool", "add", "activation")

#: RAMB18 widths (UG573), the depth of each being the block's bits over the width rounded
#: down to a power of two (16K×1 ... 512×36 for 18 Kb).
BLOCK_WIDTHS = (1, 2, 4, 9, 18, 36)


@lru_cache(maxsize=4096)
def divisors(n: int) -> tuple[int, ...]:
    """The positive divisors of ``n``, ascending."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


@lru_cache(maxsize=4096)
def lane_counts(n: int) -> tuple[tuple[int, int], ...]:
    """The useful parallelisms over a dimension of ``n``: for each distinct fold count
    f = ceil(n/p), the fewest lanes p = ceil(n/f) reaching it, as (p, f) pairs, p ascending.
    A parallelism that does not divide ``n`` pads its last fold (the weight memory holds
    zeros there, :mod:`.postprocess`)."""
    pairs: dict[int, int] = {}
    for f in range(1, n + 1):
        p = -(-n // f)
        pairs.setdefault(p, -(-n // p))
        if p == 1:
            break
    return tuple(sorted(pairs.items()))


def hls4ml_reuse_factors(n_in: int, n_out: int) -> tuple[int, ...]:
    """Reuse factors hls4ml accepts for a dense layer: R divides N_in·N_out and either
    R < N_in with R | N_in, or R ≥ N_in with R a multiple of N_in."""
    return tuple(sorted({r for r in divisors(n_in)} | {n_in * d for d in divisors(n_out)}))


@lru_cache(maxsize=64)
def _aspects(block_bits: int) -> tuple[tuple[int, int], ...]:
    """(width, depth) of each aspect ratio of a block: the depth is the block's bits over the
    width, rounded down to a power of two."""
    return tuple((w, 1 << max(0, (block_bits // w).bit_length() - 1)) for w in BLOCK_WIDTHS)


def memory_blocks(weights: int, lanes: int, bits: int, block_bits: int) -> int:
    """Blocks of ``block_bits`` holding ``weights`` values of ``bits`` read ``lanes`` per cycle."""
    if weights <= 0:
        return 0
    width = lanes * bits
    depth = -(-weights // lanes)
    return min(-(-depth // d) * -(-width // w) for w, d in _aspects(block_bits))


@dataclass(frozen=True)
class Option:
    """One template at one legal parallelism: cycles per frame and what it costs."""

    template: str
    par: tuple[tuple[str, int], ...]
    cycles: int
    multipliers: int
    lanes: int  # datapath lanes: weights read per cycle for weighted layers (the cost tie-break)
    blocks: int = 0  # memory blocks of its weight memory, if on chip
    reuse: int = 1  # times each weight is read per frame (external traffic if streamed)

    @property
    def parallelism(self) -> dict[str, int]:
        return dict(self.par)

    def to_json(self) -> dict[str, Any]:
        return {"template": self.template, "parallelism": dict(self.par), "cycles": self.cycles,
                "multipliers": self.multipliers, "weight_lanes": self.lanes, "memory_blocks": self.blocks,
                "weight_reads_per_frame": self.reuse}


@dataclass(frozen=True)
class Template:
    name: str
    kinds: tuple[str, ...]
    source: str
    enum_options: Callable[[LayerSpec, "Context"], list[Option]] = field(repr=False)


@dataclass(frozen=True)
class Context:
    weight_bits: int
    block_bits: int
    input_pixels_per_cycle: int = 1


def _opt(name: str, spec: LayerSpec, ctx: Context, par: dict[str, int], cycles: int, mults: int, lanes: int,
         reuse: int) -> Option:
    blocks = memory_blocks(spec.weights, lanes, ctx.weight_bits, ctx.block_bits) if spec.weights else 0
    return Option(name, tuple(par.items()), cycles, mults, lanes, blocks, reuse)


def _mvau(spec: LayerSpec, ctx: Context) -> list[Option]:
    out: list[Option] = []
    if spec.kind == "fc":
        n_in, n_out = math.prod(spec.in_shape), spec.out_shape[0]
        for pe, fo in lane_counts(n_out):
            for simd, fi in lane_counts(n_in):
                out.append(_opt("mvau", spec, ctx, {"PE": pe, "SIMD": simd, "MMV": 1}, fi * fo, pe * simd,
                                pe * simd, 1))
        return out
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    _, oh, ow = spec.out_shape
    k2 = spec.kernel[0] * spec.kernel[1]
    for pe, fo in lane_counts(cout):
        for simd, fi in lane_counts(cin):
            out.append(_opt("mvau", spec, ctx, {"PE": pe, "SIMD": simd, "MMV": 1}, oh * ow * k2 * fi * fo,
                            pe * simd, pe * simd, oh * ow))
    for mmv in divisors(ow)[1:]:  # pixel parallelism once PE and SIMD are at their maximum (FINN PR #789)
        out.append(_opt("mvau", spec, ctx, {"PE": cout, "SIMD": cin, "MMV": mmv}, oh * (ow // mmv) * k2,
                        cout * cin * mmv, cout * cin, oh * ow // mmv))
    return out


def _window_unroll(spec: LayerSpec, ctx: Context) -> list[Option]:
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    k2 = spec.kernel[0] * spec.kernel[1]
    if k2 == 1:
        return []
    pixels = spec.out_items
    return [_opt("window_unroll", spec, ctx, {"PE": pe, "SIMD": simd}, pixels * fi * fo, k2 * simd * pe,
                 k2 * simd * pe, pixels)
            for pe, fo in lane_counts(cout) for simd, fi in lane_counts(cin)]


def _dense_reuse(spec: LayerSpec, ctx: Context) -> list[Option]:
    if spec.kind == "fc":
        n_in, n_out, pixels = math.prod(spec.in_shape), spec.out_shape[0], 1
    else:
        n_in, n_out, pixels = spec.in_shape[0], spec.out_shape[0], spec.out_items
    out = []
    for r in hls4ml_reuse_factors(n_in, n_out):
        m = n_in * n_out // r
        out.append(_opt("dense_reuse", spec, ctx, {"R": r}, r * pixels, m, m, pixels))
    return out


def _vvau(spec: LayerSpec, ctx: Context) -> list[Option]:
    c = spec.out_shape[0]
    _, oh, ow = spec.out_shape
    k2 = spec.kernel[0] * spec.kernel[1]
    out = [_opt("vvau", spec, ctx, {"PE": pe, "SIMD": simd, "MMV": 1}, oh * ow * fo * fi, pe * simd, pe * simd,
                oh * ow)
           for pe, fo in lane_counts(c) for simd, fi in lane_counts(k2)]
    for mmv in divisors(ow)[1:]:
        out.append(_opt("vvau", spec, ctx, {"PE": c, "SIMD": k2, "MMV": mmv}, oh * (ow // mmv), c * k2 * mmv,
                        c * k2, oh * ow // mmv))
    return out


def _pool(spec: LayerSpec, ctx: Context) -> list[Option]:
    c = spec.in_shape[0]
    if spec.per_input:
        work = spec.in_items
    else:
        work = max(spec.out_items * spec.kernel[0] * spec.kernel[1], spec.in_items)
    return [_opt("pool", spec, ctx, {"PE": pe}, work * f, 0, pe, 0) for pe, f in lane_counts(c)]


def _lanes(name: str) -> Callable[[LayerSpec, Context], list[Option]]:
    def enum(spec: LayerSpec, ctx: Context) -> list[Option]:
        c = spec.out_shape[0]
        return [_opt(name, spec, ctx, {"PE": pe}, spec.out_items * f, 0, pe, 0) for pe, f in lane_counts(c)]
    return enum


def _stream_in(spec: LayerSpec, ctx: Context) -> list[Option]:
    p = ctx.input_pixels_per_cycle
    return [_opt("stream_in", spec, ctx, {"pixels_per_cycle": p}, -(-spec.out_items // p), 0, 0, 0)]


TEMPLATES = (
    Template("mvau", ("conv", "pointwise", "fc"), "FINN MVAU (Umuroglu et al., FPGA 2017; Blott et al., TRETS 2018)",
             _mvau),
    Template("window_unroll", ("conv",), "DNeuro convolution block (N2D2); hls4ml io_stream conv (Duarte et al., "
             "JINST 2018)", _window_unroll),
    Template("dense_reuse", ("fc", "pointwise"), "hls4ml dense with reuse factor (Duarte et al., JINST 2018)",
             _dense_reuse),
    Template("vvau", ("depthwise",), "FINN VVAU (Blott et al., TRETS 2018; FINN folding constraints)", _vvau),
    Template("pool", ("pool",), "FINN Pool / Globalaccpool", _pool),
    Template("eltwise_add", ("add",), "FINN AddStreams / ElementwiseBinary", _lanes("eltwise_add")),
    Template("activation", ("activation",), "FINN Thresholding; hls4ml ReLU", _lanes("activation")),
    Template("stream_in", ("source",), "hls4ml io_stream input (one pixel per transfer)", _stream_in),
)


def templates_for(kind: str) -> list[Template]:
    return [t for t in TEMPLATES if kind in t.kinds]


def options(spec: LayerSpec, ctx: Context) -> list[Option]:
    """Every option of every template implementing ``spec``'s kind, sorted by cycles, then
    multipliers, blocks, lanes and the template's rank in :data:`TEMPLATES` (the preferred
    architecture on a tie), without those another option beats: no more cycles, no more
    multipliers and no more memory blocks."""
    rank = {t.name: i for i, t in enumerate(TEMPLATES)}
    opts = [o for t in templates_for(spec.kind) for o in t.enum_options(spec, ctx)]
    opts.sort(key=lambda o: (o.cycles, o.multipliers, o.blocks, o.lanes, rank[o.template], o.par))
    kept: list[Option] = []
    stair_m: list[int] = []  # kept (multipliers, blocks) Pareto points: multipliers ascending, blocks descending
    stair_b: list[int] = []
    for o in opts:  # keep an option unless one with no more cycles has no more multipliers and blocks
        i = bisect.bisect_right(stair_m, o.multipliers) - 1
        if i >= 0 and stair_b[i] <= o.blocks:
            continue
        kept.append(o)
        j = bisect.bisect_left(stair_m, o.multipliers)
        k = j
        while k < len(stair_m) and stair_b[k] >= o.blocks:
            k += 1
        stair_m[j:k] = [o.multipliers]
        stair_b[j:k] = [o.blocks]
    return kept
