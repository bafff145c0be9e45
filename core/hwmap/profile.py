"""The profiler: per-layer parameters, MACs, data volume, bandwidth and measured sparsity.

This is the chapter's simulator/profiler (Section 3.5, Figures 3.16-3.18): for a topology
and, optionally, representative data, it extracts what a hardware choice rests on: the
parameters per layer (memory footprint, Fig. 3.16), the operations per layer (processing
elements), the data volume per layer normalized to the input's (Fig. 3.17) and the data
bandwidth per layer at a frame rate and activation bit width (Fig. 3.18). With data it also
measures activation sparsity and temporal sparsity (the temporal delta layer's view,
Section 3.3).

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

import csv
import io
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, GraphError
from .graph import Graph, Node
from .profile_rows import _JOINING_CATEGORIES, NORM_OPS, VIEW_OPS, LayerGroup, group_layers
from .source import UnknownNode, require_known, unknown_nodes
from .profile_table import summary as _summary
from .profile_table import table as _table

__all__ = [
    "profile", "Profile", "LayerProfile", "InputProfile", "ProfileTotals", "ProfileSettings",
    "MAC_CONVENTIONS", "VIEW_OPS",
]

MAC_CONVENTIONS = ("conv_fc", "fvcore", "all")

#: Bias slot of each compute op: counted in params, not in weights.
_BIAS_SLOT = {"Conv": "B", "ConvTranspose": "B", "Gemm": "C"}

#: BatchNormalization's running statistics: buffers, not parameters.
_BN_BUFFERS = ("input_mean", "input_var")

_WINDOW_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})


# -- records -----------------------------------------------------------------------------
@dataclass
class LayerProfile:
    """One row: a layer as the chapter counts them (see the module docstring).

    ``index`` is 1-based (the chapter's layer numbers); ``kind`` is ``conv``, ``depthwise``,
    ``pointwise``, ``fc``, ``matmul``, ``unknown`` or the head op's name in lower case;
    ``nodes`` the graph nodes of the row, head first; ``post_ops`` the ops of the nodes that
    joined it. ``unknown`` rows (a node hwmap cannot count, ``note`` says why) hold ``None``
    for what was not counted (see the module docstring).
    """

    index: int
    name: str
    op: str
    kind: str
    nodes: list[str]
    post_ops: list[str]
    output: str
    output_shape: list[int] | None
    stride: list[int] | None
    weights: int | None
    params: int | None
    macs: int | None
    input_elements: int | None
    output_elements: int | None
    data_volume: int | None
    data_volume_rel: float | None
    act_bits: int
    bandwidth_bps: float | None
    weight_bits: int
    weight_bytes: int | None
    activation_sparsity: float | None = None
    temporal_sparsity: float | None = None
    unknown: bool = False
    note: str | None = None
    #: How many times per inference the row runs: an encoded graph's time steps for a row
    #: computed per step (its macs, data volume and bandwidth count them all), else 1.
    steps: int = 1
    #: The row's input tensor (the head's first dynamic input) and, with data, its spatial
    #: and temporal sparsity.
    input: str = ""
    input_sparsity: float | None = None
    input_temporal_sparsity: float | None = None
    #: With data, the compute node's MACs (per inference) whose activation operand is zero
    #: (what a zero-skipping implementation would not do) or unchanged from the previous
    #: frame (what a change-driven, delta implementation would not do); ``None`` for rows
    #: without a Conv/Gemm/MatMul compute node.
    zero_operand_macs: int | None = None
    unchanged_operand_macs: int | None = None


@dataclass
class InputProfile:
    """The network input stream: ``elements`` per sample over all graph inputs, at ``bits``."""

    names: list[str]
    shapes: list[list[int]]
    elements: int
    bits: int
    bandwidth_bps: float


@dataclass
class ProfileTotals:
    """Whole-network figures; ``peak_*`` name the row where the maximum occurs (first on ties).

    Sums and peaks are over the rows that are counted; ``uncounted_nodes`` is how many are
    not (unknown rows) and ``unknown_ops`` the ops hwmap does not know among them."""

    layers: int
    params: int
    weights: int
    weight_bytes: int
    macs: int
    macs_per_s: float
    peak_bandwidth_layer: str
    peak_bandwidth_bps: float
    peak_data_volume_layer: str
    peak_data_volume: int
    peak_params_layer: str
    peak_params: int
    activation_sparsity: float | None = None
    temporal_sparsity: float | None = None
    uncounted_nodes: int = 0
    unknown_ops: list[str] = field(default_factory=list)
    zero_operand_macs: int | None = None
    unchanged_operand_macs: int | None = None


@dataclass
class ProfileSettings:
    """What the profile was computed with; ``samples`` is how many data samples ran."""

    model: str
    fps: float
    act_bits: int
    input_bits: int
    weight_bits: int
    macs: str
    samples: int | None = None


@dataclass
class Profile:
    """A network profile: per-layer ``rows``, the ``input`` stream, ``totals``, ``settings``,
    and ``warnings``: one line each about what could not be counted (empty when all was)."""

    rows: list[LayerProfile]
    input: InputProfile
    totals: ProfileTotals
    settings: ProfileSettings
    warnings: list[str] = field(default_factory=list)

    def row(self, name: str) -> LayerProfile:
        """The row named ``name`` (a compute node's name, or the head node of its row)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise GraphError(f"profile of {self.settings.model!r} has no layer {name!r}")

    def to_json(self) -> dict[str, Any]:
        """Everything, as plain JSON types in a fixed key order (same profile, same dict)."""
        return {
            "format": "hwmap.profile",
            "settings": asdict(self.settings),
            "input": asdict(self.input),
            "totals": asdict(self.totals),
            "layers": [asdict(r) for r in self.rows],
            "warnings": list(self.warnings),
        }

    def to_csv(self) -> str:
        """One line per row, the fields of :class:`LayerProfile` as columns (lists joined by ``;``)."""
        names = [f.name for f in fields(LayerProfile)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in self.rows:
            w.writerow([_csv_cell(getattr(r, n)) for n in names])
        return buf.getvalue()

    def table(self) -> Any:
        """A ``rich.table.Table`` of the rows, in human-readable units, totals as caption
        (:func:`hwmap.profile_table.table`)."""
        return _table(self)

    def summary(self) -> str:
        """The totals in one line of human-readable units."""
        return _summary(self)

    def render(self, console: Any) -> None:
        """Print :meth:`table` on a ``rich.console.Console``."""
        console.print(self.table())

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of parameters, normalized data volume and bandwidth per layer
        (Figs. 3.16-3.18); see :func:`hwmap.profile_plot.plot_profile`."""
        from .profile_plot import plot_profile

        return plot_profile(self, Path(path))


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
    in_elems = sum(_per_sample(graph.tensor(t).shape, batch) for t in graph.inputs)
    in_bits = _tensor_bits(graph, graph.inputs[0], input_bits) if graph.inputs else input_bits
    inp = InputProfile(
        names=list(graph.inputs), shapes=[list(graph.tensor(t).shape) for t in graph.inputs], elements=in_elems,
        bits=in_bits, bandwidth_bps=float(in_elems * in_bits * fps))
    unshaped = {t for u in unknown.values() for t in u.unshaped}
    rows = [_unknown_row(graph, i + 1, g.members[0], unknown[g.members[0].name], unshaped, batch, in_elems, fps,
                         act_bits, weight_bits)
            if g.members[0].name in unknown else
            _row(graph, i + 1, g, batch, in_elems, fps, act_bits, weight_bits, macs) for i, g in enumerate(groups)]
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


# -- one row -----------------------------------------------------------------------------
def _row(graph: Graph, index: int, g: LayerGroup, batch: int, in_elems: int, fps: float, act_bits: int,
         weight_bits: int, convention: str) -> LayerProfile:
    from .ops import get_op

    head = g.members[0]
    compute = _compute_part(head)
    is_compute = compute is not None
    weights = bias = extra = 0
    w_bits = weight_bits
    if compute is not None:
        weights, bias = _weights_and_bias(compute)
        bias_slot = _BIAS_SLOT.get(compute.op)
        quants = [q for k, q in sorted(compute.param_quant.items()) if k != bias_slot]
        if quants:  # an annotated weight: its own bit width (mixed precision)
            w_bits = int(quants[0].bits)
    # post-ops: the members after the head, and the sub-nodes a fused head carries
    post: list[Node] = list(head.fused[1:]) if head.fused else []
    post += g.members[1:]
    if not is_compute:
        post = [head] + post
    for p in post:
        extra += sum(int(v.size) for k, v in p.params.items()
                     if not (p.op == "BatchNormalization" and k in _BN_BUFFERS))
    out_elems = sum(_per_sample(graph.tensor(t).shape, batch) for t in g.outputs)
    head_inputs = head.inputs[:len(head.fused[0].inputs)] if head.fused else head.inputs
    row_in = sum(_per_sample(graph.tensor(t).shape, batch) for t in head_inputs)
    bits = _tensor_bits(graph, g.outputs[0], act_bits) if len(g.outputs) == 1 else act_bits
    macs = 0
    if compute is not None:
        macs += _op_macs(graph, head, compute, batch)
    for p in post:
        macs += _extra_macs(graph, p, head, batch, convention, get_op(p.op).category)
    strides = (compute or head).attr("strides")
    return LayerProfile(
        index=index, name=head.name, op=head.op, kind=_kind(graph, head, compute),
        nodes=[m.name for m in g.members], post_ops=[p.op for p in post if p is not head],
        output=g.outputs[0] if g.outputs else "", output_shape=list(graph.tensor(g.outputs[0]).shape),
        stride=[int(s) for s in strides] if strides else None,
        weights=weights, params=weights + bias + extra, macs=int(macs), input_elements=row_in,
        output_elements=out_elems, data_volume=out_elems, data_volume_rel=out_elems / in_elems if in_elems else 0.0,
        act_bits=bits, bandwidth_bps=float(out_elems * bits * fps), weight_bits=w_bits,
        weight_bytes=math.ceil(weights * w_bits / 8), input=head_inputs[0] if head_inputs else "")


def _unknown_row(graph: Graph, index: int, node: Node, u: UnknownNode, unshaped: set[str], batch: int,
                 in_elems: int, fps: float, act_bits: int, weight_bits: int) -> LayerProfile:
    """The row of a node hwmap cannot count: nothing about its work, what its shapes say."""

    def elements(names: list[str]) -> int | None:
        if any(t in unshaped for t in names):
            return None
        return sum(_per_sample(graph.tensor(t).shape, batch) for t in names)

    out = node.outputs[0] if node.outputs else ""
    out_elems = elements(node.outputs)
    bits = _tensor_bits(graph, out, act_bits) if len(node.outputs) == 1 else act_bits
    strides = node.attr("strides") if u.cause == "unknown_shape" else None  # a known op's own attribute
    return LayerProfile(
        index=index, name=node.name, op=node.op, kind="unknown", nodes=[node.name], post_ops=[], output=out,
        output_shape=None if not out or out in unshaped else list(graph.tensor(out).shape),
        stride=[int(s) for s in strides] if strides else None, weights=None, params=None, macs=None,
        input_elements=elements(node.inputs), output_elements=out_elems, data_volume=out_elems,
        data_volume_rel=out_elems / in_elems if out_elems is not None and in_elems else None, act_bits=bits,
        bandwidth_bps=float(out_elems * bits * fps) if out_elems is not None else None, weight_bits=weight_bits,
        weight_bytes=None, unknown=True, note=u.reason)


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


def _compute_part(node: Node) -> Node | None:
    """The node that carries the weights and MACs of a compute row, or ``None``."""
    from .ops import get_op

    if node.fused:
        return node.fused[0]
    if node.op in NORM_OPS:
        return None
    return node if get_op(node.op).category == "compute" else None


def _weights_and_bias(node: Node) -> tuple[int, int]:
    bias_slot = _BIAS_SLOT.get(node.op)
    weights = sum(int(v.size) for k, v in node.params.items() if k != bias_slot)
    bias = int(node.params[bias_slot].size) if bias_slot in node.params else 0
    return weights, bias


def _op_macs(graph: Graph, head: Node, compute: Node, batch: int) -> int:
    """The compute node's MACs per sample, by its op's own definition.

    Shapes are handed over with the batch dimension set to 1, so the count is per sample
    whatever the graph's batch."""
    from .ops import get_op

    n_in = len(compute.inputs)
    in_shapes = [_one(graph.tensor(t).shape, batch) for t in head.inputs[:n_in]]
    out_shapes = [_one(graph.tensor(head.outputs[0]).shape, batch)] if head is not compute else \
        [_one(graph.tensor(t).shape, batch) for t in compute.outputs]
    opdef = get_op(compute.op, where=f"node {head.name!r}")
    if opdef.macs is None:
        return 0
    return int(opdef.macs(compute, in_shapes, out_shapes))


def _extra_macs(graph: Graph, node: Node, head: Node, batch: int, convention: str, category: str) -> int:
    """MACs a non-compute node adds under ``convention`` (see the module docstring)."""
    if convention == "conv_fc":
        return 0
    # a fused sub-node's own tensors may be gone from the graph: it keeps the fused node's shape
    def shape(t: str) -> tuple[int, ...]:
        return graph.tensors[t].shape if t in graph.tensors else graph.tensor(head.outputs[0]).shape

    in_elems = _per_sample(shape(node.inputs[0]), batch) if node.inputs else 0
    out_elems = _per_sample(shape(node.outputs[0]), batch) if node.outputs else 0
    op = node.op
    if convention == "fvcore":
        if op == "BatchNormalization":
            return 2 * in_elems
        if op in NORM_OPS:
            return 5 * in_elems
        if op == "GlobalAveragePool":
            return in_elems
        if op == "Resize":
            mode = node.attr("mode", "nearest")
            return out_elems * (4 if mode == "linear" else 1 if mode == "nearest" else 0)
        return 0
    # "all"
    if op in _WINDOW_POOLS:
        return out_elems * math.prod(node.attr("kernel_shape", [1]))
    if op in _GLOBAL_POOLS or op.startswith("Reduce"):
        return in_elems
    if op in NORM_OPS or category in _JOINING_CATEGORIES:
        return out_elems
    return 0


def _kind(graph: Graph, head: Node, compute: Node | None) -> str:
    if compute is None:
        return head.op.lower()
    if compute.op == "Conv":
        group = int(compute.attr("group", 1))
        w = compute.params.get("W")
        cin = graph.tensor(head.inputs[0]).shape[1] if head.inputs else 0
        if group > 1 and group == cin:
            return "depthwise"
        kernel = compute.attr("kernel_shape") or (list(w.shape[2:]) if w is not None else [])
        return "pointwise" if kernel and all(int(k) == 1 for k in kernel) else "conv"
    if compute.op == "Gemm" or compute.op == "MatMul" and compute.params:
        return "fc"
    return compute.op.lower()


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
        compute = _compute_part(head) if head is not None else None
        if node is not None and head is not None and compute is not None:
            macs = _op_macs(graph, head, compute, batch) * r.steps
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


def _per_sample(shape: tuple[int, ...], batch: int) -> int:
    """Elements of a tensor per sample: its size without a leading batch dimension."""
    if shape and shape[0] == batch:
        return math.prod(shape[1:])
    return math.prod(shape)


def _one(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """``shape`` with its batch dimension set to 1."""
    return (1,) + tuple(shape[1:]) if shape and shape[0] == batch else tuple(shape)


def _tensor_bits(graph: Graph, name: str, default: int) -> int:
    q = graph.tensor(name).quant
    return int(q.bits) if q is not None else default


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(str(x) for x in v)
    return v
