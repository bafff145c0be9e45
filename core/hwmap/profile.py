"""The profiler: per-layer parameters, MACs, data volume, bandwidth and measured sparsity.

This is the chapter's simulator/profiler (Section 3.5, Figures 3.16-3.18): for a topology
and, optionally, representative data, it extracts what a hardware choice rests on: the
parameters per layer (memory footprint, Fig. 3.16), the operations per layer (processing
elements), the data volume per layer normalized to the input's (Fig. 3.17) and the data
bandwidth per layer at a frame rate and activation bit width (Fig. 3.18). With data it also
measures activation sparsity and temporal sparsity (the temporal delta layer's view,
Section 3.3).

The records are :mod:`hwmap.profile_records`'s; what one row counts, :mod:`hwmap.profile_counts`.

Layers (rows)
-------------
The graph's nodes are grouped into rows in topological order, the way the chapter counts the
layers of MobileNet V1 (stem conv, 13 × (depthwise, pointwise), pool, fc: 29 rows, layer 1
being the stem): a compute node starts a row, the element-wise and view nodes that follow it
join it as post-ops, every other node is a row of its own, constants form none. The rules
are :mod:`hwmap.profile_rows`'s (:func:`group_layers`).

A row's output is the output of its last member (e.g. the ReLU after conv + BN), its input
the dynamic inputs of its first member.

Counts (per sample: the batch dimension is excluded everywhere)
---------------------------------------------------------------
* ``weights``: elements of the compute node's constant operands except its bias (Conv ``W``,
  Gemm ``B``, a MatMul's constant operand).
* ``params``: weights + bias (Conv ``B``, Gemm ``C``) + the constant operands of the row's
  post-ops, except BatchNormalization's running statistics (``input_mean``, ``input_var``
  are buffers, not parameters, as in PyTorch's ``parameters()``): so a conv + BN row counts
  the BN affine γ and β. MobileNet V1 gives 4,209,088 weights and 4,231,976 parameters
  (Howard et al., "MobileNets", 2017, Table 1: 4.2 million parameters).
* ``macs``, by the convention ``macs=``:

  - ``"conv_fc"`` (default): multiply-accumulates of the compute nodes only, as each op
    defines them (:func:`hwmap.ops.get_op` ``.macs``; Conv = C_out·H_out·W_out·(C_in/group)·
    K_h·K_w, Gemm = in·out). This is the convention of the published MobileNet V1 figure,
    568,740,352 MACs at 224×224 (Howard et al. 2017, Table 1: 569 million mult-adds), and of
    fvcore for conv and linear layers.
  - ``"fvcore"``: what fvcore 0.1.5's ``FlopCountAnalysis`` counts (one "flop" per MAC),
    reproduced from its ``jit_handles``: conv_fc, plus BatchNormalization in inference at 2
    per input element, LayerNormalization, GroupNormalization and InstanceNormalization at
    5 per input element, GlobalAveragePool at 1 per input element
    (``aten::adaptive_avg_pool2d``), Resize at 1 per output element (nearest) or 4
    (linear). Activations, additions, max/average pooling and data movement count 0, as
    fvcore ignores them. MobileNet V1: 578,875,904 (fvcore 0.1.5 on the same network, BN
    as separate modules; ``tests/core/test_profile_fvcore.py``). One known difference:
    fvcore counts a PyTorch norm built with ``affine=False`` at 1 (BN) or 4 per element, but
    its ONNX export carries γ = 1 and β = 0 like any other, which cannot be told apart from
    a freshly initialized affine norm: hwmap counts every norm as affine.
  - ``"all"``: conv_fc, plus 1 per output element of every element-wise node (activations,
    Add/Mul/..., normalizations as one multiply-add, neurons, quantizers), the window size
    per output element of MaxPool/AveragePool/LpPool (K_h·K_w), 1 per input element of the
    global pools and reductions (ReduceMean, ...); data movement counts 0.

* ``input_elements``/``output_elements``: elements of the row's input and output tensors.
* ``data_volume`` = ``output_elements`` (the row's output activation volume) and
  ``data_volume_rel`` = ``data_volume`` / the network input's elements (Fig. 3.17).
* ``bandwidth_bps`` = ``output_elements``·``act_bits``·``fps`` (Fig. 3.18): the output stream
  of the row. ``act_bits`` is the profile's setting unless the output tensor carries a
  quantization annotation, whose bit width wins (mixed precision); likewise ``weight_bits``
  for a compute node whose weight is annotated and ``input_bits`` for an annotated graph
  input. ``weight_bytes`` = ceil(weights·bits/8).
* In an encoded graph (an ``Encoder`` node: the graph runs ``T`` time steps per inference,
  :mod:`hwmap.ops.time`) a row computed once per step has ``steps`` = ``T``, and its
  ``macs``, ``data_volume`` (and ``_rel``) and ``bandwidth_bps`` are per inference, ``T``
  times the per-step figures; ``output_elements`` stays per step. Other rows have
  ``steps`` = 1.
* The network input stream is :attr:`Profile.input`: input elements·``input_bits``·``fps``;
  at 1280×720, 30 FPS, 8-bit RGB that is 1280·720·3·8·30 = 663.6 Mbit/s.

Sparsity (with ``data``)
------------------------
The graph runs (:func:`hwmap.sparsity.measure`, through the reference executor; quantized
when the graph carries quantization annotations) on the first ``max_samples`` samples, in
order. Per row:

* ``activation_sparsity`` / ``input_sparsity``: the fraction of exact zeros in the row's
  output / input (spatial sparsity);
* ``temporal_sparsity`` / ``input_temporal_sparsity``: the fraction of the output's / input's
  quantized elements equal to the previous frame's (what a temporal delta layer would not
  transmit; needs two frames). An annotated tensor is compared on its annotation's codes,
  any other on ``act_bits``-bit codes scaled to its largest magnitude over the data;
* ``zero_operand_macs`` / ``unchanged_operand_macs``: the compute node's MACs whose
  activation operand is zero (padding included) / unchanged, counted exactly per output
  (what zero-skipping / change-driven hardware would not compute).

Frames: samples shaped like the input ``(N, ...)`` are consecutive frames (a video fed frame
by frame); data ``(N, T, ...)`` for a graph without state is ``N`` sequences of ``T`` frames,
compared within each sequence. A stateful graph (NIR neurons) takes ``(N, T, *features)`` and
each time step counts as a frame; an encoded graph (with an ``Encoder`` node) takes static
data, and each step of its tensors computed per step counts as a frame. Without data all
are ``None``.

Unknown nodes
-------------
A graph parsed with ``ParseOptions(allow_unknown=True)`` may hold nodes hwmap cannot count
(:func:`hwmap.source.unknown_nodes`: ops it does not know, and nodes reading tensors whose
shape is unknown because of them). Each is a row of its own, nothing joins it, with
``unknown`` true, ``kind`` ``"unknown"`` and ``note`` saying why: its ``macs``, ``weights``,
``params`` and ``weight_bytes`` are ``None`` (not counted), its element counts and bandwidth
``None`` where a shape is unknown (ONNX shape inference gives most). Totals sum the rows
that are counted and say how many nodes are not (``uncounted_nodes``, ``unknown_ops``);
:attr:`Profile.warnings` says it in lines for the user. Sparsity cannot be measured on such
a graph (the reference executor cannot run it): ``data`` raises
:class:`~hwmap.errors.UnsupportedOpError`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import ConfigError, GraphError
from .graph import Graph
from .profile_counts import compute_part, layer_row, op_macs, per_sample, tensor_bits, unknown_row
from .profile_records import InputProfile, LayerProfile, Profile, ProfileSettings, ProfileTotals
from .profile_rows import VIEW_OPS, group_layers
from .source import UnknownNode, require_known, unknown_nodes

__all__ = [
    "profile", "Profile", "LayerProfile", "InputProfile", "ProfileTotals", "ProfileSettings",
    "MAC_CONVENTIONS", "VIEW_OPS", "group_layers",
]

MAC_CONVENTIONS = ("conv_fc", "fvcore", "all")


# -- the profiler ------------------------------------------------------------------------
def profile(graph: Graph, *, fps: float = 30.0, act_bits: int = 8, input_bits: int = 8, weight_bits: int = 8,
            macs: str = "conv_fc", data: np.ndarray | None = None, max_samples: int = 256) -> Profile:
    """Profile ``graph`` per layer (see the module docstring for rows and conventions).

    ``fps`` frames (samples) per second for bandwidths; ``act_bits``/``input_bits``/
    ``weight_bits`` the default bit widths of activations, the network input and weights;
    ``macs`` the MAC convention (``conv_fc``, ``fvcore``, ``all``); ``data`` batch-first samples
    for the single graph input, of which the first ``max_samples`` are run to measure
    sparsity. Raises :class:`ConfigError` for bad settings, :class:`DataError` for data that
    does not fit the graph's input, :class:`~hwmap.errors.UnsupportedOpError` for ``data``
    with a graph holding unknown nodes.
    """
    _check_settings(fps, act_bits, input_bits, weight_bits, macs, max_samples)
    unknown = {u.node: u for u in unknown_nodes(graph)}
    if data is not None:
        require_known(graph, "measuring sparsity with data (--data)")
    batch = _batch(graph)
    groups = group_layers(graph)
    in_elems = sum(per_sample(graph.tensor(t).shape, batch) for t in graph.inputs)
    in_bits = tensor_bits(graph, graph.inputs[0], input_bits) if graph.inputs else input_bits
    inp = InputProfile(
        names=list(graph.inputs), shapes=[list(graph.tensor(t).shape) for t in graph.inputs], elements=in_elems,
        bits=in_bits, bandwidth_bps=float(in_elems * in_bits * fps))
    unshaped = {t for u in unknown.values() for t in u.unshaped}
    rows = [unknown_row(graph, i + 1, g.members[0], unknown[g.members[0].name], unshaped, batch, in_elems, fps,
                        act_bits, weight_bits)
            if g.members[0].name in unknown else
            layer_row(graph, i + 1, g, batch, in_elems, fps, act_bits, weight_bits, macs) for i, g in enumerate(groups)]
    _repeat_per_step_rows(graph, rows)
    samples = None
    if data is not None:
        samples = _measure_sparsity(graph, rows, data, max_samples, act_bits, batch)
    settings = ProfileSettings(graph.name, float(fps), act_bits, input_bits, weight_bits, macs, samples)
    totals = _totals(rows, fps, samples is not None)
    totals.unknown_ops = sorted({u.op for u in unknown.values() if u.cause == "unknown_op"})
    return Profile(rows, inp, totals, settings, _warnings(list(unknown.values())))


def _repeat_per_step_rows(graph: Graph, rows: list[LayerProfile]) -> None:
    """In an encoded graph, a row computed once per time step does its work ``T`` times per
    inference: its ``steps``, MACs, data volume and bandwidth say so."""
    from .execute import encoded_steps, per_step_tensors

    per_step = per_step_tensors(graph)
    steps = encoded_steps(graph)
    for r in rows:
        if r.output in per_step:
            r.steps = steps
            r.macs = None if r.macs is None else r.macs * steps
            r.data_volume = None if r.data_volume is None else r.data_volume * steps
            r.data_volume_rel = None if r.data_volume_rel is None else r.data_volume_rel * steps
            r.bandwidth_bps = None if r.bandwidth_bps is None else r.bandwidth_bps * steps


def _warnings(unknown: list[UnknownNode]) -> list[str]:
    """One line per node whose op hwmap does not know, one for the nodes after them."""
    lines = [f"{u.describe()}: not counted (no MACs, no parameters)" for u in unknown if u.cause == "unknown_op"]
    after = [u for u in unknown if u.cause != "unknown_op"]
    if after:
        names = ", ".join(f"{u.node} ({u.op})" for u in after[:5])
        more = f" and {len(after) - 5} more" if len(after) > 5 else ""
        lines.append(f"{len(after)} node(s) after them read tensors of unknown shape and are not counted either: "
                     f"{names}{more}")
    return lines


# -- sparsity ----------------------------------------------------------------------------
def _measure_sparsity(graph: Graph, rows: list[LayerProfile], data: np.ndarray, max_samples: int, act_bits: int,
                      batch: int) -> int:
    """Measure (:func:`hwmap.sparsity.measure`) and fill each row's sparsities and operand
    MACs; return the samples used. A graph with quantization annotations runs quantized."""
    from .sparsity import measure

    quantized = any(t.quant is not None for t in graph.tensors.values()) or \
        any(n.param_quant for n in graph.nodes)
    names = [t for r in rows for t in (r.output, r.input) if t]
    m = measure(graph, data, max_samples=max_samples, quantized=quantized, act_bits=act_bits, tensors=names,
                where="profile data")
    for r in rows:
        out, inp = m.tensors.get(r.output), m.tensors.get(r.input)
        if out is not None:
            r.activation_sparsity, r.temporal_sparsity = out.zeros, out.unchanged
        if inp is not None:
            r.input_sparsity, r.input_temporal_sparsity = inp.zeros, inp.unchanged
        node = m.nodes.get(r.name)
        head = graph.node(r.name) if node is not None else None
        compute = compute_part(head) if head is not None else None
        if node is not None and head is not None and compute is not None:
            macs = op_macs(graph, head, compute, batch) * r.steps
            r.zero_operand_macs = round(macs * node.zero_operand_macs)
            r.unchanged_operand_macs = None if node.unchanged_operand_macs is None else \
                round(macs * node.unchanged_operand_macs)
    return m.samples


# -- totals and helpers ------------------------------------------------------------------
def _totals(rows: list[LayerProfile], fps: float, measured: bool) -> ProfileTotals:
    if not rows:
        raise GraphError("the graph has no layers to profile")
    bw_name, bw = _peak(rows, "bandwidth_bps")
    dv_name, dv = _peak(rows, "data_volume")
    pp_name, pp = _peak(rows, "params")
    total_macs = _sum(rows, "macs")
    act = temp = None
    if measured:
        act = _weighted([(r.activation_sparsity, r.output_elements or 0) for r in rows])
        temp = _weighted([(r.temporal_sparsity, r.output_elements or 0) for r in rows])
    zero_ops = unchanged_ops = None
    if measured and any(r.zero_operand_macs is not None for r in rows):
        zero_ops = _sum(rows, "zero_operand_macs")
        unchanged_ops = _sum(rows, "unchanged_operand_macs")
    return ProfileTotals(
        layers=len(rows), params=_sum(rows, "params"), weights=_sum(rows, "weights"),
        weight_bytes=_sum(rows, "weight_bytes"), macs=total_macs, macs_per_s=float(total_macs * fps),
        peak_bandwidth_layer=bw_name, peak_bandwidth_bps=float(bw), peak_data_volume_layer=dv_name,
        peak_data_volume=int(dv), peak_params_layer=pp_name, peak_params=int(pp),
        activation_sparsity=act, temporal_sparsity=temp, uncounted_nodes=sum(r.unknown for r in rows),
        zero_operand_macs=zero_ops, unchanged_operand_macs=unchanged_ops)


def _sum(rows: list[LayerProfile], key: str) -> int:
    """The sum of a count over the rows that have it (unknown rows may not)."""
    return sum(int(v) for v in (getattr(r, key) for r in rows) if v is not None)


def _peak(rows: list[LayerProfile], key: str) -> tuple[str, float]:
    """The first row with the largest known ``key`` and that value (``("", 0)`` if none is known)."""
    known = [r for r in rows if getattr(r, key) is not None]
    if not known:
        return "", 0
    top = max(known, key=lambda r: getattr(r, key))  # max() keeps the first on ties
    return top.name, getattr(top, key)


def _weighted(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    """Element-weighted mean of the known values (the network-wide fraction)."""
    known = [(v, w) for v, w in pairs if v is not None]
    total = sum(w for _, w in known)
    return sum(v * w for v, w in known) / total if total else None


def _check_settings(fps: float, act_bits: int, input_bits: int, weight_bits: int, macs: str,
                    max_samples: int) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number, got {fps!r}", where="profile")
    for key, v in (("act_bits", act_bits), ("input_bits", input_bits), ("weight_bits", weight_bits)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 64:
            raise ConfigError(f"{key} must be an integer from 1 to 64, got {v!r}", where="profile")
    if macs not in MAC_CONVENTIONS:
        raise ConfigError(f"unknown MAC convention {macs!r} (known: {', '.join(MAC_CONVENTIONS)})", where="profile")
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
        raise ConfigError(f"max_samples must be a positive integer, got {max_samples!r}", where="profile")


def _batch(graph: Graph) -> int:
    """The graph's batch size: the first dimension of its (first) input."""
    if not graph.inputs:
        raise GraphError(f"graph {graph.name!r} has no input to profile")
    shape = graph.tensor(graph.inputs[0]).shape
    return int(shape[0]) if shape else 1
