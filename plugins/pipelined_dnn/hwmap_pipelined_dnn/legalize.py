"""Legalization for the pipelined dataflow target: fusion, the design-rule check, fixed point.

1. **Passes** (:mod:`hwmap.passes`): constant folding, BatchNormalization folded into the
   convolution or fc before it, then a ReLU fused into the compute node before it (the
   engines apply it on their output, like FINN's MVAU "activation" or DNeuro's blocks).
2. **Design rules**: every node is a layer some template implements
   (:func:`~.layers.extract_layers`; rule ``no_template`` or a more precise one), the
   weights fit in on-chip plus external memory (``weight_memory``), and the multiply-unit
   budget covers one unit per multiplying layer (``multiplier_budget``); an accumulator
   that could overflow ``hardware.accumulator_bits`` is a warning (``accumulator_range``).
3. **Fixed point** (chapter eqs. 3.9–3.11: I = 1 + floor(log2 max|x|), F = BW − I − 1,
   q(x) = clip(round(x·2^F), −t, t)/2^F): every scale is a power of two, so the engines'
   requantization is a shift. Weights get one F per output channel at
   ``hardware.weight_bits`` (signed, narrow range); biases the accumulator's scale
   2^−(F_in + F_w) at ``hardware.accumulator_bits``; every streamed tensor F at
   ``hardware.activation_bits``, unsigned when it is never negative on the calibration data
   (F = BW − I), signed otherwise. Max-pool outputs take their input's format. A graph
   output produced by a multiplying layer and read by nothing else keeps no annotation: the
   engine emits its accumulator, scaled. Ranges come from ``target.calibration`` (at most
   :data:`MAX_CALIBRATION_SAMPLES`); without data, seeded U(0, 1) inputs stand in and a
   note says so. Quantization the model carried is replaced (noted): the engines need
   power-of-two scales.

The quantized reference (``hwmap.execute.run(legalized, x, quantized=True)``) is what the
integer simulator (:mod:`.simulator`) reproduces bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from hwmap import DataError, Diagnostic, Graph, Legalized, Node, QuantAnnotation, Target
from hwmap.execute import run
from hwmap.passes import FoldBatchNorm, FoldConstants, FuseComputeWithPostOps, run_passes

from .hardware import PipelinedConfig
from .layers import WIRING_OPS, LayerSpec, NoTemplate, compute_op, extract_layers

__all__ = ["legalize", "RULES", "META_KEY", "SYNTHETIC_NOTE", "MAX_CALIBRATION_SAMPLES", "POST_OPS",
           "fixed_point_frac", "frac_bits", "weight_axis", "streamed", "MULTIPLYING"]

POST_OPS = ("Relu",)
META_KEY = "pipelined_dnn"
SYNTHETIC_NOTE = "calibrated on synthetic U(0,1) inputs: pass --data"
MAX_CALIBRATION_SAMPLES = 256
#: Without data, synthetic samples are capped to this many MACs in the reference executor.
SYNTHETIC_MAC_BUDGET = 5.0e8
SYNTHETIC_SAMPLES = 64
_CHUNK_BYTES = 64 * 2**20
MULTIPLYING = ("conv", "pointwise", "depthwise", "fc")
RULES = {
    "no_template": "a node no template of the library implements (op, grouping or attributes)",
    "unsupported_window": "a window (conv, pool) with dilation, ceil_mode or auto_pad the templates do not take",
    "graph_inputs": "not exactly one graph input of shape (N, C, H, W) or (N, F)",
    "unsupported_input": "a node reading a tensor no layer streams (a constant folded away, ...)",
    "unsupported_output": "a graph output no layer produces",
    "weight_memory": "the weights exceed on-chip and external memory together",
    "multiplier_budget": "fewer multiply units than multiplying layers (each engine needs one)",
    "accumulator_range": "(warning) a layer's worst-case sum could overflow hardware.accumulator_bits",
}


def frac_bits(q: QuantAnnotation) -> np.ndarray:
    """The fractional bits F of a power-of-two annotation (scale 2^−F), per channel or scalar."""
    return np.rint(-np.log2(q.scale)).astype(np.int64)


def fixed_point_frac(max_abs: float, bits: int, signed: bool) -> int:
    """F of chapter eq. 3.10 for a value range ``max_abs`` (F = BW − I − 1 signed, BW − I
    unsigned, I = 1 + floor(log2 max)); BW − 1 for an all-zero range."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return bits - 1
    i = 1 + math.floor(math.log2(max_abs))
    return bits - i - (1 if signed else 0)


def weight_axis(node: Node) -> tuple[str, int]:
    """The weight's param slot and its output-channel axis."""
    op = compute_op(node)
    if op == "Conv":
        return "W", 0
    if op == "Gemm":
        return "B", 0 if int(node.attrs.get("transB", 0)) else 1
    return "B", 1


def legalize(graph: Graph, target: Target) -> Legalized:
    cfg = target.config_as(PipelinedConfig)
    g = run_passes(graph.copy(), [FoldConstants(), FoldBatchNorm()])
    g = run_passes(g, [FuseComputeWithPostOps(post_ops=POST_OPS, allow_dynamic_operands=False)])
    notes: list[str] = []
    try:
        layers = extract_layers(g)
    except NoTemplate as e:
        return Legalized(g, [Diagnostic(e.rule, str(e), node=e.node)], notes)
    diags = _budget_rules(layers, cfg)
    if any(d.severity == "error" for d in diags):
        return Legalized(g, diags, notes)
    replaced = _strip_model_quant(g)
    if replaced:
        notes.append(f"the model's own quantization of {replaced} tensors/weights replaced by power-of-two fixed "
                     "point")
    calib = _calibrate(g, layers, cfg, target.calibration)
    if calib["source"] == "synthetic":
        notes.append(f"{SYNTHETIC_NOTE} ({calib['samples']} seeded samples)")
    _quantize_weights(g, cfg)
    diags += _accumulator_rule(g, layers, cfg)
    g.meta[META_KEY] = {"calibration": {k: v for k, v in calib.items() if k != "ranges"}}
    return Legalized(g, diags, notes)


def _budget_rules(layers: list[LayerSpec], cfg: PipelinedConfig) -> list[Diagnostic]:
    hw = cfg.hardware
    out = []
    mult_layers = [x for x in layers if x.kind in MULTIPLYING]
    if len(mult_layers) > hw.multipliers:
        out.append(Diagnostic("multiplier_budget", f"{len(mult_layers)} multiplying layers need at least one "
                                                   f"multiply unit each, hardware.multipliers = {hw.multipliers}"))
    need = sum(-(-x.weights * hw.weight_bits // 8) for x in layers)
    have = hw.onchip_memory_bytes + hw.external_memory_bytes
    if need > have:
        big = max(layers, key=lambda x: x.weights)
        out.append(Diagnostic("weight_memory", f"the weights need {need:,} bytes at {hw.weight_bits} bits; on-chip "
                                               f"({hw.onchip_memory_bytes:,} B) and external memory "
                                               f"({hw.external_memory_bytes:,} B) hold {have:,} (largest: layer "
                                               f"{big.name!r}, {big.weights:,} weights)", node=big.name))
    return out


def _strip_model_quant(g: Graph) -> int:
    n = 0
    for t in g.tensors.values():
        if t.quant is not None:
            t.quant, n = None, n + 1
    for node in g.nodes:
        for sub in node.walk():
            n += len(sub.param_quant)
            sub.param_quant = {}
    return n


def _synthetic_count(g: Graph, layers: list[LayerSpec]) -> int:
    macs = max(1, sum(x.macs for x in layers))
    return int(max(1, min(SYNTHETIC_SAMPLES, SYNTHETIC_MAC_BUDGET // macs)))


def _calibrate(g: Graph, layers: list[LayerSpec], cfg: PipelinedConfig,
               calibration: np.ndarray | None) -> dict[str, Any]:
    """Annotate every streamed tensor (module docstring); returns what was measured."""
    x = g.inputs[0]
    if calibration is not None and len(calibration):
        data = np.asarray(calibration[:MAX_CALIBRATION_SAMPLES], dtype=np.float32)
        source = "data"
    else:
        n = _synthetic_count(g, layers)
        rng = np.random.default_rng(0)
        data = rng.random((n, *g.tensor(x).shape[1:]), dtype=np.float32)
        source = "synthetic"
    if data.shape[1:] != g.tensor(x).shape[1:]:
        raise DataError(f"calibration samples of shape {list(data.shape[1:])} do not fit input {x!r} "
                        f"{list(g.tensor(x).shape[1:])}")
    wanted = [x] + [s.tensor for s in layers[1:]]
    ranges: dict[str, tuple[float, float]] = {}
    per_sample = sum(g.tensor(t).size for t in g.tensors) * 8 // max(1, g.tensor(x).shape[0])
    chunk = int(max(1, min(len(data), _CHUNK_BYTES // max(1, per_sample))))
    for start in range(0, len(data), chunk):
        env = run(g, {x: data[start:start + chunk]}, collect=True)
        for t in wanted:
            v = np.asarray(env[t], dtype=np.float64)
            lo, hi = float(v.min()), float(v.max())
            old = ranges.get(t)
            ranges[t] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    bits = cfg.hardware.activation_bits
    consumers = g.consumers()
    producer_kind = {s.tensor: s for s in layers}
    for t in wanted:
        spec = producer_kind.get(t)
        if spec is not None and spec.kind in MULTIPLYING and not spec.relu and t in g.outputs and not consumers.get(t):
            continue  # the engine's scaled accumulator is the output
        if spec is not None and spec.pool in ("max", "global_max"):
            continue  # same format as its input, set below
        lo, hi = ranges[t]
        signed = lo < 0
        f = fixed_point_frac(max(abs(lo), abs(hi)), bits, signed)
        g.tensor(t).quant = QuantAnnotation(np.asarray(2.0 ** -f), np.asarray(0.0), bits, signed, narrow=signed)
    for spec in layers[1:]:
        if spec.pool in ("max", "global_max"):
            src = g.tensor(streamed(g, spec.in_tensors[0])).quant
            if src is not None:
                g.tensor(spec.tensor).quant = dataclasses.replace(  # every field, new ones included
                    src, scale=src.scale.copy(), zero_point=src.zero_point.copy(),
                    input_scale=None if src.input_scale is None else src.input_scale.copy())
    return {"source": source, "samples": int(len(data)), "ranges": ranges}


def streamed(g: Graph, t: str) -> str:
    """The tensor a layer actually streams for ``t``: ``t`` followed back through wiring
    (Flatten, Reshape, Identity, Dropout), which moves no data."""
    producers = g.producers()
    while t in producers and producers[t].op in WIRING_OPS:
        t = producers[t].inputs[0]
    return t


def _input_frac(g: Graph, node: Node) -> int:
    q = g.tensor(streamed(g, node.inputs[0])).quant
    if q is None:
        raise DataError(f"node {node.name!r}: its input {node.inputs[0]!r} has no fixed-point format")
    return int(frac_bits(q))


def _quantize_weights(g: Graph, cfg: PipelinedConfig) -> None:
    hw = cfg.hardware
    for node in g.nodes:
        op = compute_op(node)
        if op not in ("Conv", "Gemm", "MatMul"):
            continue
        slot, axis = weight_axis(node)
        w = np.asarray(node.params[slot], dtype=np.float64)
        other = tuple(a for a in range(w.ndim) if a != axis)
        mx = np.max(np.abs(w), axis=other)
        f_w = np.array([fixed_point_frac(float(m), hw.weight_bits, True) for m in mx], dtype=np.int64)
        node.param_quant[slot] = QuantAnnotation(2.0 ** -f_w.astype(np.float64), np.zeros(len(f_w)),
                                                 hw.weight_bits, True, axis=axis, narrow=True)
        bslot = "B" if op == "Conv" else "C"
        if bslot in node.params and op != "MatMul":
            b = np.asarray(node.params[bslot])
            f_b = (f_w + _input_frac(g, node)).astype(np.float64)
            baxis = 0 if b.ndim <= 1 else b.ndim - 1
            if b.size != len(f_b):
                raise DataError(f"node {node.name!r}: bias of {b.size} values for {len(f_b)} output channels")
            node.param_quant[bslot] = QuantAnnotation(2.0 ** -f_b, np.zeros(len(f_b)), hw.accumulator_bits, True,
                                                      axis=baxis, narrow=True)


def _accumulator_rule(g: Graph, layers: list[LayerSpec], cfg: PipelinedConfig) -> list[Diagnostic]:
    """Worst-case |Σ q_x·q_w| per output channel against the accumulator's range."""
    out = []
    limit = 2 ** (cfg.hardware.accumulator_bits - 1) - 1
    nodes = {n.name: n for n in g.nodes}
    for spec in layers:
        node = nodes.get(spec.name)
        if node is None or spec.kind not in MULTIPLYING:
            continue
        slot, axis = weight_axis(node)
        q = node.param_quant[slot]
        qw = np.abs(q.quantize(node.params[slot]))
        xq = g.tensor(streamed(g, node.inputs[0])).quant
        xmax = max(abs(xq.qmin), abs(xq.qmax)) if xq is not None else 0
        other = tuple(a for a in range(qw.ndim) if a != axis)
        worst = float(np.max(np.sum(qw, axis=other))) * xmax
        if worst > limit:
            out.append(Diagnostic("accumulator_range", f"worst-case sum {worst:.3g} exceeds the "
                                                       f"{cfg.hardware.accumulator_bits}-bit accumulator "
                                                       f"(±{limit:,}); real inputs rarely reach it", node=spec.name,
                                  severity="warning"))
    return out
