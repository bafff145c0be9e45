"""What one row of :mod:`hwmap.profile` counts: its weights and parameters, its MACs under a
MAC convention, its element counts, bit widths and bandwidth, and its kind (conv, depthwise,
pointwise, fc, ...); and the row of a node hwmap cannot count. The conventions are
:mod:`hwmap.profile`'s module docstring ("Counts").
"""

from __future__ import annotations

import math

from .graph import Graph, Node
from .profile_records import LayerProfile
from .profile_rows import _JOINING_CATEGORIES, NORM_OPS, LayerGroup
from .source import UnknownNode

__all__ = ["layer_row", "unknown_row", "compute_part", "op_macs", "per_sample", "tensor_bits"]

#: Bias slot of each compute op: counted in params, not in weights.
_BIAS_SLOT = {"Conv": "B", "ConvTranspose": "B", "Gemm": "C"}

#: BatchNormalization's running statistics: buffers, not parameters.
_BN_BUFFERS = ("input_mean", "input_var")

_WINDOW_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})


def layer_row(graph: Graph, index: int, g: LayerGroup, batch: int, in_elems: int, fps: float, act_bits: int,
              weight_bits: int, convention: str) -> LayerProfile:
    """Row ``index`` (1-based) of the layer group ``g``, counted under ``convention``."""
    from .ops import get_op

    head = g.members[0]
    compute = compute_part(head)
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
    out_elems = sum(per_sample(graph.tensor(t).shape, batch) for t in g.outputs)
    head_inputs = head.inputs[:len(head.fused[0].inputs)] if head.fused else head.inputs
    row_in = sum(per_sample(graph.tensor(t).shape, batch) for t in head_inputs)
    bits = tensor_bits(graph, g.outputs[0], act_bits) if len(g.outputs) == 1 else act_bits
    macs = 0
    if compute is not None:
        macs += op_macs(graph, head, compute, batch)
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


def unknown_row(graph: Graph, index: int, node: Node, u: UnknownNode, unshaped: set[str], batch: int,
                in_elems: int, fps: float, act_bits: int, weight_bits: int) -> LayerProfile:
    """The row of a node hwmap cannot count: nothing about its work, what its shapes say."""

    def elements(names: list[str]) -> int | None:
        if any(t in unshaped for t in names):
            return None
        return sum(per_sample(graph.tensor(t).shape, batch) for t in names)

    out = node.outputs[0] if node.outputs else ""
    out_elems = elements(node.outputs)
    bits = tensor_bits(graph, out, act_bits) if len(node.outputs) == 1 else act_bits
    strides = node.attr("strides") if u.cause == "unknown_shape" else None  # a known op's own attribute
    return LayerProfile(
        index=index, name=node.name, op=node.op, kind="unknown", nodes=[node.name], post_ops=[], output=out,
        output_shape=None if not out or out in unshaped else list(graph.tensor(out).shape),
        stride=[int(s) for s in strides] if strides else None, weights=None, params=None, macs=None,
        input_elements=elements(node.inputs), output_elements=out_elems, data_volume=out_elems,
        data_volume_rel=out_elems / in_elems if out_elems is not None and in_elems else None, act_bits=bits,
        bandwidth_bps=float(out_elems * bits * fps) if out_elems is not None else None, weight_bits=weight_bits,
        weight_bytes=None, unknown=True, note=u.reason)




def compute_part(node: Node) -> Node | None:
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


def op_macs(graph: Graph, head: Node, compute: Node, batch: int) -> int:
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

    in_elems = per_sample(shape(node.inputs[0]), batch) if node.inputs else 0
    out_elems = per_sample(shape(node.outputs[0]), batch) if node.outputs else 0
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



def per_sample(shape: tuple[int, ...], batch: int) -> int:
    """Elements of a tensor per sample: its size without a leading batch dimension."""
    if shape and shape[0] == batch:
        return math.prod(shape[1:])
    return math.prod(shape)


def _one(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """``shape`` with its batch dimension set to 1."""
    return (1,) + tuple(shape[1:]) if shape and shape[0] == batch else tuple(shape)


def tensor_bits(graph: Graph, name: str, default: int) -> int:
    """The bit width of tensor ``name``: its quantization annotation's, else ``default``."""
    q = graph.tensor(name).quant
    return int(q.bits) if q is not None else default
