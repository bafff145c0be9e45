"""Fused nodes: FusedConv, FusedGemm, FusedMatMul.

A fused node replaces a compute node followed by post-ops (Add/Sub/Mul/Div/activations, the
pattern the analog compiler maps onto one crossbar pass). ``node.fused`` holds the originals:
the compute node first, then the post-ops in order. The fused node's own ``attrs``/``params``
are those of the compute node and are the ones used (a pass that rewrites the fused node's
weights rewrites what runs); post-op constants stay in the sub-nodes' params.

``node.inputs`` = the compute node's dynamic inputs, then each post-op's dynamic operands
other than the chained value, in order. Each post-op takes the previous result at the
position its own ``inputs`` list names it (by tensor name; first dynamic operand otherwise),
so a Div whose ``A`` is a constant computes ``A / previous``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, get_op, register_op
from ._operands import fail

__all__ = ["FusedPlan", "plan"]


@dataclass(frozen=True)
class _Post:
    node: Any
    position: int  # where the chained value goes among the post-op's dynamic operands
    extra: int  # how many of the fused node's inputs this post-op consumes


@dataclass(frozen=True)
class FusedPlan:
    """How a fused node's inputs are dealt to its compute node and post-ops."""

    compute: Any  # the compute node as it runs: the fused node's attrs and params
    n_compute_inputs: int
    posts: tuple[_Post, ...]

    @property
    def n_inputs(self) -> int:
        return self.n_compute_inputs + sum(p.extra for p in self.posts)


def plan(node: Any) -> FusedPlan:
    """Check a fused node's structure and say how its inputs are dealt out."""
    if not node.fused:
        raise fail(node, "a fused node needs its original nodes in 'fused' (compute node first)")
    head = node.fused[0]
    expected = node.op[len("Fused"):]
    if head.op != expected:
        raise fail(node, f"first fused node {head.name!r} is a {head.op}, expected {expected}")
    # a node of the graph's own class (type(head)): the ops never import hwmap.graph, which imports them
    compute = type(head)(head.name, head.op, list(head.inputs), list(head.outputs), node.attrs, node.params,
                         node.param_quant)
    posts = []
    prev = head.outputs[0] if head.outputs else None
    for sub in node.fused[1:]:
        if prev is not None and prev in sub.inputs:
            posts.append(_Post(sub, sub.inputs.index(prev), len(sub.inputs) - 1))
        else:
            posts.append(_Post(sub, 0, max(0, len(sub.inputs) - 1)))
        prev = sub.outputs[0] if sub.outputs else None
    p = FusedPlan(compute, len(head.inputs), tuple(posts))
    if len(node.inputs) != p.n_inputs:
        raise fail(node, f"has {len(node.inputs)} inputs, its fused nodes take {p.n_inputs} "
                         f"({p.n_compute_inputs} for {head.op}, then the post-ops' other operands)")
    return p


def _run(node: Any, values: Sequence[Any], infer: bool) -> tuple[list[Any], Any]:
    """Chain the sub-nodes over arrays (``infer`` False) or shapes; also return the compute result."""
    p = plan(node)
    k = p.n_compute_inputs
    head_def = get_op(p.compute.op, where=f"node {node.name!r} ({node.op})")
    out: list[Any] | None
    if infer:
        out = head_def.infer(p.compute, values[:k])
    else:
        if head_def.evaluate is None:
            raise fail(node, f"compute node {p.compute.name!r} ({p.compute.op}) cannot be evaluated statelessly")
        out = head_def.evaluate(p.compute, values[:k])
    if out is None:
        return [None], None
    compute_out = out[0]
    rest = list(values[k:])
    y = compute_out
    for post in p.posts:
        opdef = get_op(post.node.op, where=f"node {post.node.name!r} ({post.node.op}) in {node.name!r}")
        extra, rest = rest[:post.extra], rest[post.extra:]
        operands = extra[:post.position] + [y] + extra[post.position:]
        res: list[Any] | None
        if infer:
            res = opdef.infer(post.node, operands)
            if res is None:
                return [None], compute_out
        else:
            if opdef.evaluate is None:
                raise fail(node, f"post-op {post.node.name!r} ({post.node.op}) cannot be evaluated statelessly")
            res = opdef.evaluate(post.node, operands)
        y = res[0]
    return [y], compute_out


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    out, _ = _run(node, [tuple(s) for s in shapes], infer=True)
    return None if out[0] is None else [tuple(out[0])]


def _evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return _run(node, list(inputs), infer=False)[0]


def _macs(node: Any, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
    """The compute node's MACs; the post-ops are elementwise and count none."""
    p = plan(node)
    k = p.n_compute_inputs
    head_def = get_op(p.compute.op)
    compute_out = head_def.infer(p.compute, in_shapes[:k])
    if compute_out is None or head_def.macs is None:
        return 0
    return int(head_def.macs(p.compute, in_shapes[:k], compute_out))


for _compute, _slots in (("Conv", ("X", "W", "B")), ("Gemm", ("A", "B", "C")), ("MatMul", ("A", "B"))):
    register_op(OpDef(f"Fused{_compute}", _slots, _infer, _evaluate, macs=_macs, category="compute",
                      doc=f"{_compute} followed by fused elementwise post-ops (see hwmap.ops.fused)."))
