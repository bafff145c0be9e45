"""Fuse a Conv/Gemm/MatMul with the chain of element-wise post-ops that follows it.

The analog in-memory-computing compiler's parser fuses "Conv layer followed by one or more
of Add, Mul, Div or Act layers" into one node whose computation a single processing core
carries out in one computing cycle (chapter, Fig. 3.11). The fused node keeps the nodes it
replaced in ``fused`` (compute node first, then the post-ops in order); its semantics are
those of :mod:`hwmap.ops.fused`: each post-op takes the previous result as its chain
operand (the input whose name is the previous sub-node's output) and its other operands
from its own params or, when dynamic, from the fused node's extra inputs, in order.
"""

from __future__ import annotations

from typing import Iterable

from ..graph import Graph, Node
from .base import prune_tensors, single_consumer, unique_node_name

__all__ = ["FuseComputeWithPostOps", "COMPUTE_OPS", "DEFAULT_POST_OPS"]

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
DEFAULT_POST_OPS = ("Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid")


class FuseComputeWithPostOps:
    """Replace ``compute → post-op → ... → post-op`` by one ``Fused<compute>`` node.

    ``post_ops``: the post-op types allowed (a target may restrict them, e.g. to what its
    periphery implements); ``max_post_ops``: the longest chain fused (``None``: no limit);
    ``allow_dynamic_operands``: also fuse post-ops whose other operand is a tensor, such
    as a residual Add (otherwise only constant operands in params are accepted).
    Every intermediate tensor must have exactly one reader and not be a graph output.
    """

    name = "fuse-compute-post-ops"

    def __init__(self, post_ops: Iterable[str] = DEFAULT_POST_OPS, *, max_post_ops: int | None = None,
                 allow_dynamic_operands: bool = False, compute_ops: Iterable[str] = COMPUTE_OPS) -> None:
        self.post_ops = frozenset(post_ops)
        self.compute_ops = frozenset(compute_ops)
        if max_post_ops is not None and max_post_ops < 1:
            raise ValueError(f"max_post_ops must be at least 1, got {max_post_ops}")
        self.max_post_ops = max_post_ops
        self.allow_dynamic_operands = allow_dynamic_operands

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        consumers = g.consumers()
        replaced: dict[str, Node] = {}  # name of a chain's last post-op -> the fused node
        absorbed: set[str] = set()
        for node in g.nodes:
            if node.op not in self.compute_ops or node.name in absorbed or len(node.outputs) != 1:
                continue
            chain = self._chain(g, node, consumers, absorbed)
            if not chain:
                continue
            fused = self._fuse(g, node, chain, taken=[f.name for f in replaced.values()])
            replaced[chain[-1].name] = fused
            absorbed.update([node.name] + [p.name for p in chain])
        if not replaced:
            return g, False
        # The fused node sits where the chain's last post-op was: every operand it reads
        # (the compute node's inputs, the post-ops' dynamic operands) is produced before it.
        g.nodes = [replaced.get(n.name, n) for n in g.nodes
                   if n.name in replaced or n.name not in absorbed]
        prune_tensors(g)
        return g, True

    def _chain(self, g: Graph, compute: Node, consumers: dict[str, list[Node]], absorbed: set[str]) -> list[Node]:
        chain: list[Node] = []
        current = compute.outputs[0]
        while self.max_post_ops is None or len(chain) < self.max_post_ops:
            nxt = single_consumer(g, current, consumers)
            if nxt is None or nxt.op not in self.post_ops or len(nxt.outputs) != 1 or nxt.name in absorbed:
                break
            others = [t for t in nxt.inputs if t != current]
            if others and not self.allow_dynamic_operands:
                break
            chain.append(nxt)
            current = nxt.outputs[0]
        return chain

    @staticmethod
    def _fuse(g: Graph, compute: Node, chain: list[Node], taken: list[str]) -> Node:
        extra: list[str] = []
        prev = compute.outputs[0]
        for p in chain:
            extra.extend(t for t in p.inputs if t != prev)
            prev = p.outputs[0]
        c = compute.copy()
        return Node(
            name=unique_node_name(g, f"{compute.name}_fused", taken),
            op="Fused" + compute.op,
            inputs=list(compute.inputs) + extra,
            outputs=list(chain[-1].outputs),
            attrs=c.attrs,
            params=c.params,
            param_quant=c.param_quant,
            fused=[compute.copy()] + [p.copy() for p in chain],
        )
