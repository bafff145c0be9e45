"""Layer rows of the profiler: which graph nodes form one layer of :mod:`hwmap.profile`.

The graph's nodes are grouped into rows in topological order, the way the chapter counts the
layers of MobileNet V1 (stem conv, 13 × (depthwise, pointwise), pool, fc: 29 rows, layer 1
being the stem):

* a *compute* node (op category ``"compute"``: Conv, ConvTranspose, Gemm, MatMul and the
  ``Fused*`` nodes) starts a row named after the node;
* a node that only transforms its input element by element (BatchNormalization and the other
  normalizations, activations, Add/Mul/..., neurons, quantizers) or only reinterprets its
  shape without moving data (:data:`VIEW_OPS`: Flatten, Reshape, Squeeze, Unsqueeze,
  Identity, Dropout) joins the row whose output it reads, as a post-op, when that output has
  no other reader and is not a graph output. Of two candidate rows it joins the later one:
  a residual ``Add`` joins the row of the branch's last conv (as the analog compiler fuses
  it), or of the projection shortcut's conv when that comes later in the graph;
* every other node (pooling, Concat, Transpose, Pad, Resize, ..., or an element-wise node
  that cannot join a row) starts a row of its own, with 0 weights;
* ``Constant`` nodes, and nodes that compute on constants only, are operands, not layers:
  they form no row;
* an unknown node (:func:`hwmap.source.unknown_nodes`) is always a row of its own and
  nothing joins it: what its output means is unknown.

A row's output is the output of its last member (e.g. the ReLU after conv + BN), its input
the dynamic inputs of its first member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph, Node
from .source import unknown_nodes

__all__ = ["LayerGroup", "group_layers", "VIEW_OPS", "NORM_OPS"]

#: Ops that reinterpret a tensor's shape without moving data: they join the row they follow.
VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})

#: Normalizations: element-wise at inference, never a compute row's MACs under conv_fc.
NORM_OPS = frozenset({"BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization"})

#: Categories (:class:`hwmap.ops.OpDef`) of nodes that can join the row they follow.
_JOINING_CATEGORIES = frozenset({"elementwise", "norm", "neuron", "quant"})


@dataclass
class LayerGroup:
    """The graph nodes of one row: ``members[0]`` is the head; ``outputs`` the row's output
    tensors (its last member's)."""

    members: list[Node] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def group_layers(graph: Graph) -> list[LayerGroup]:
    """Group ``graph``'s nodes into rows, as the module docstring describes."""
    from .ops import get_op

    consumers = graph.consumers()
    graph_outputs = set(graph.outputs)
    groups: list[LayerGroup] = []
    tail_of: dict[str, int] = {}  # tensor -> row whose current (single) output it is
    live = set(graph.inputs)  # tensors that depend on a graph input
    unknown = {u.node for u in unknown_nodes(graph)}
    for node in graph.nodes:
        if node.name in unknown:
            live.update(node.outputs)
            groups.append(LayerGroup([node], list(node.outputs)))
            continue
        if not any(t in live for t in node.inputs):
            continue  # Constant, or a computation on constants only: an operand, not a layer
        live.update(node.outputs)
        if _joins(node, get_op(node.op, where=f"node {node.name!r}").category):
            candidates = [tail_of[t] for t in node.inputs
                          if t in tail_of and len(consumers.get(t, [])) == 1 and t not in graph_outputs]
            if candidates:
                g = groups[max(candidates)]
                for t in g.outputs:
                    tail_of.pop(t, None)
                g.members.append(node)
                g.outputs = list(node.outputs)
                tail_of[node.outputs[0]] = max(candidates)
                continue
        groups.append(LayerGroup([node], list(node.outputs)))
        if len(node.outputs) == 1:
            tail_of[node.outputs[0]] = len(groups) - 1
    return groups


def _joins(node: Node, category: str) -> bool:
    """Whether ``node`` may join the row it reads from as a post-op."""
    if len(node.outputs) != 1 or node.fused:
        return False
    if node.op in NORM_OPS or node.op in VIEW_OPS:
        return True
    return category in _JOINING_CATEGORIES

