"""legalize: the conversion of an ANN (:func:`hwmap.convert_to_snn`, with the ``[conversion]``
table and ``target.calibration``), linear layers unrolled into weight matrices
(:mod:`.unroll`), graph extraction (:mod:`.network`), the optional magnitude pruning to the
device's fan-in, the design-rule check (:mod:`.drc`) and the quantization's annotations.

The legalized graph is the parsed graph with each weight's quantization written into
``param_quant`` (per output neuron: the weight the device's integer stands for), and pruned
weights zeroed when pruning was asked for. Violations come back as diagnostics, all at once.
"""

from __future__ import annotations

import numpy as np

from hwmap import DataError, Diagnostic, Graph, GraphError, Legalized, QuantAnnotation, Target, convert_to_snn

from .drc import check
from .hardware import DigitalSNNConfig
from .mapper import map_network
from .network import INPUT, NEURON_OPS, Network, Projection, extract
from .program import Program
from .unroll import unroll

__all__ = ["legalize", "prune_to_fan_in", "is_ann", "convert"]


def prune_to_fan_in(graph: Graph, net: Network, fan_in: int) -> int:
    """Zero, per hidden neuron, all but its ``fan_in`` largest recurrent weights (over every
    weight from neurons into it), in ``graph``'s Gemm nodes and in ``net``; returns how many
    weights were zeroed."""
    nodes = {n.name: n for n in graph.nodes}
    zeroed = 0
    for pop in net.hidden:
        if pop.native is not None:  # a layer in the device's integers is taken as it is
            continue
        projs = [p for p in net.projections if p.dst == pop.name and p.src != INPUT]
        if not projs:
            continue
        mags = np.concatenate([np.abs(p.weight) for p in projs], axis=1)
        if mags.shape[1] <= fan_in:
            continue
        keep = np.zeros_like(mags, dtype=bool)
        order = np.argsort(-mags, axis=1, kind="stable")[:, :fan_in]
        np.put_along_axis(keep, order, True, axis=1)
        keep &= mags > 0
        col = 0
        for p in projs:
            k = keep[:, col:col + p.weight.shape[1]]
            col += p.weight.shape[1]
            zeroed += int(np.count_nonzero(p.weight[~k]))
            p.weight = np.where(k, p.weight, 0.0)
            node = nodes[p.name]
            b = np.asarray(node.params["B"])
            mask = k if (node.op == "Gemm" and int(node.attrs.get("transB", 0))) else k.T
            node.params["B"] = np.where(mask, b, 0).astype(b.dtype)
    return zeroed


def _prune_cost(before: Graph, after: Graph, calibration: np.ndarray | None) -> str:
    """How much pruning changes the float network's outputs on the calibration samples."""
    if calibration is None or not len(calibration):
        return "no calibration data to measure what it costs"
    from hwmap.execute import run

    x = {before.inputs[0]: calibration[:64]}
    a = np.asarray(run(before, x)[before.outputs[0]], np.float64)
    b = np.asarray(run(after, x)[after.outputs[0]], np.float64)
    if a.ndim == 2 and a.shape[1] > 1:
        agree = float(np.mean(a.argmax(1) == b.argmax(1)))
        return f"top-1 agreement with the unpruned network {agree:.3f} on {len(a)} calibration samples"
    rel = float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(a)), 1e-300)
    return f"relative RMS change of the output {rel:.3g} on {len(a)} calibration samples"


def is_ann(graph: Graph) -> bool:
    """Whether ``graph`` is an ANN to convert: no neuron layer and no encoder (a network
    converted already, ``hwmap convert -o``, is taken as it is)."""
    return not any(n.op in NEURON_OPS or n.op == "Encoder" for n in graph.nodes)


def convert(graph: Graph, target: Target, cfg: DigitalSNNConfig) -> tuple[Graph | None, list[Diagnostic], list[str]]:
    """The ANN ``graph`` converted with the ``[conversion]`` table and ``target.calibration``
    (:func:`hwmap.convert_to_snn`), or ``None`` and the one violation saying why not."""
    if target.calibration is None or not len(target.calibration):
        return None, [Diagnostic("conversion", "converting an ANN needs --data for calibration")], []
    try:
        conv = convert_to_snn(graph, target.calibration, cfg.conversion)
    except (GraphError, DataError) as e:
        return None, [Diagnostic("conversion", f"the ANN cannot be converted: {e}")], []
    c = cfg.conversion
    notes = [f"ANN converted to IF neurons (hwmap.convert_to_snn): {c.encoding} encoding, {c.timesteps} time steps, "
             f"{conv.percentile:g}th-percentile {c.normalization} scales from {conv.calibration_samples} "
             f"calibration samples, {c.readout} readout"] + conv.notes
    return conv.graph, [], notes


def legalize(graph: Graph, target: Target) -> Legalized:
    cfg = target.config_as(DigitalSNNConfig)
    g = graph.copy()
    notes: list[str] = []
    if is_ann(g):
        converted, diags, notes = convert(g, target, cfg)
        if converted is None:
            return Legalized(g, diags, notes)
        g = converted
    g, unrolled = unroll(g)
    notes += unrolled
    net, diags = extract(g)
    if net is None:
        return Legalized(g, diags, notes)
    if cfg.mapping.prune_to_fan_in:
        before = g.copy()
        zeroed = prune_to_fan_in(g, net, cfg.hardware.fan_in)
        if zeroed:
            notes.append(f"pruned {zeroed} recurrent weights to a fan-in of {cfg.hardware.fan_in}: "
                         f"{_prune_cost(before, g, target.calibration)}")
    diags += check(net, cfg.hardware)
    if any(d.severity == "error" for d in diags):
        return Legalized(g, diags, notes)
    m = map_network(g, net, cfg.hardware, per_neuron=cfg.mapping.quantization == "per_neuron",
                    calibration=target.calibration, flush_steps=cfg.mapping.flush_steps)
    _annotate(g, net, m.program, cfg)
    notes += m.notes
    notes += [f"{d}" for d in diags if d.severity == "warning"]
    return Legalized(g, diags, notes)


def _annotate(g: Graph, net: Network, program: Program, cfg: DigitalSNNConfig) -> None:
    """``param_quant`` of each weight: per output neuron, the real weight one integer step
    stands for (``real = scale * q``)."""
    nodes = {n.name: n for n in g.nodes}
    for proj in net.projections:
        node = nodes.get(proj.name)
        if node is None or "B" not in node.params:
            continue
        w = proj.weight
        q = _stored(program, proj).astype(np.float64)
        nz = q != 0
        ratio = np.abs(np.where(nz, w, 0.0)) / np.where(nz, np.abs(q), 1.0)
        scale = ratio.max(axis=1, initial=0.0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        axis = 0 if (node.op == "Gemm" and int(node.attrs.get("transB", 0))) else 1
        node.param_quant["B"] = QuantAnnotation(scale.astype(np.float64), np.zeros(w.shape[0]),
                                                cfg.hardware.weight_bits, True, axis, narrow=True)


def _stored(prog: Program, proj: Projection) -> np.ndarray:
    """The integer block of ``proj`` in the program (dst × src)."""
    lay = {x.name: x for x in prog.layers}
    dst = lay[proj.dst]
    if proj.src == INPUT:
        return np.asarray(prog.w_in[:, dst.start:dst.stop, proj.synapse]).T
    src = lay[proj.src]
    if dst.output:
        return np.asarray(prog.w_out[src.start:src.stop, dst.start:dst.stop]).T
    return np.asarray(prog.w_rec[src.start:src.stop, dst.start:dst.stop, proj.synapse]).T
