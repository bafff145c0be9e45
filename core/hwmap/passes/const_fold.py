"""Evaluate what is already known at compile time and turn it into parameters.

Exporters emit shape arithmetic such as ``Shape → Gather → Unsqueeze → Concat → Reshape``
(torch's ``x.view(x.size(0), -1)``). Every tensor in a hwmap graph has a concrete shape, so
a ``Shape`` is a constant, and so is any node whose inputs are all constants: it is
evaluated with the op's reference semantics (:mod:`hwmap.ops`) and replaced by a
``Constant`` node. Constants that feed a slot of a non-variadic op are then moved into that
op's ``params`` (the graph's convention for constant operands) and ``Constant`` nodes
nobody reads any more are removed. Variadic ops (Concat, Sum) keep their ``Constant``
inputs, as the graph's conventions require.
"""

from __future__ import annotations

import numpy as np

from ..errors import GraphError, HwmapError
from ..graph import Graph, Node
from ..limits import check_size
from ..ops import get_op
from .base import prune_tensors, remove_orphan_constants, slot_of_input, unique_node_name

__all__ = ["FoldConstants"]


class FoldConstants:
    """Fold constant subgraphs (Shape of a known-shape tensor included) into ``Constant``
    nodes and move constant operands into their consumers' ``params``.

    Stateful ops (NIR neurons, Delay: anything with a ``step``) and quantization ops (their
    output must keep its annotation as a node) are never evaluated here.
    """

    name = "fold-constants"

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        changed = self._fold_nodes(g)
        changed |= self._absorb_into_params(g)
        changed |= remove_orphan_constants(g)
        if changed:
            prune_tensors(g)
        return g, changed

    @staticmethod
    def _fold_nodes(g: Graph) -> bool:
        known: dict[str, np.ndarray] = {}
        new_nodes: list[Node] = []
        changed = False
        for n in g.nodes:
            if n.op == "Constant":
                if "value" in n.params and len(n.outputs) == 1:
                    known[n.outputs[0]] = n.params["value"]
                new_nodes.append(n)
                continue
            values = _evaluate_if_constant(g, n, known)
            if values is None:
                new_nodes.append(n)
                continue
            for i, (t, v) in enumerate(zip(n.outputs, values)):
                v = np.asarray(v)
                decl = g.tensor(t)
                if tuple(v.shape) != decl.shape:
                    raise GraphError(f"folding gives output {t!r} shape {list(v.shape)}, declared "
                                     f"{list(decl.shape)}", where=f"node {n.name!r} ({n.op})")
                v = _as_declared(v, decl.dtype)
                decl.dtype = str(v.dtype)
                name = n.name if len(n.outputs) == 1 else unique_node_name(
                    g, f"{n.name}_{i}", [m.name for m in new_nodes])
                new_nodes.append(Node(name, "Constant", [], [t], params={"value": v}))
                known[t] = v
            changed = True
        g.nodes = new_nodes
        return changed

    @staticmethod
    def _absorb_into_params(g: Graph) -> bool:
        producers = g.producers()
        quant = {name: t.quant for name, t in g.tensors.items() if t.quant is not None}
        changed = False
        for n in g.nodes:
            # A fused node deals its inputs out to its sub-nodes (hwmap.ops.fused): leave it.
            if n.op == "Constant" or not n.inputs or n.fused:
                continue
            opdef = get_op(n.op, where=f"node {n.name!r}")
            if opdef.variadic:
                continue
            is_const = [producers.get(t) is not None and producers[t].op == "Constant" for t in n.inputs]
            # A node must keep at least one dynamic input; an all-constant node that could
            # not be evaluated stays as it is.
            if all(is_const) or not any(is_const):
                continue
            found = [slot_of_input(n, i, opdef.slots) for i in range(len(n.inputs))]
            slots = [s for s in found if s is not None]
            if len(slots) != len(found):
                continue  # more inputs than schema slots: leave it for the validator to name
            keep: list[str] = []
            for t, const, slot in zip(n.inputs, is_const, slots):
                if not const:
                    keep.append(t)
                    continue
                n.params[slot] = producers[t].params["value"].copy()
                if t in quant:
                    n.param_quant[slot] = quant[t]
            n.inputs = keep
            changed = True
        return changed


def _evaluate_if_constant(g: Graph, n: Node, known: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    where = f"node {n.name!r} ({n.op})"
    if n.op == "Shape" and len(n.inputs) == 1:
        # ONNX Shape (opset 15): shape[start:end], negative bounds counted from the end.
        shape = g.tensor(n.inputs[0]).shape
        start, end = int(n.attr("start", 0)), n.attr("end")
        return [np.asarray(shape[start:None if end is None else int(end)], dtype=np.int64)]
    # A node with no dynamic input but params (a frontend put every operand into params)
    # is as constant as one fed by Constant nodes.
    if not all(t in known for t in n.inputs) or not (n.inputs or n.params):
        return None
    opdef = get_op(n.op, where=where)
    if opdef.evaluate is None or opdef.step is not None or opdef.category in ("neuron", "quant"):
        return None
    # What the node would allocate, from its declared outputs, before it is evaluated.
    declared = [g.tensor(t) for t in n.outputs]
    check_size(sum(t.nbytes for t in declared),
               f"folding constant node {n.name!r} ({n.op}) into outputs {[list(t.shape) for t in declared]}",
               where=f"graph {g.name!r}", error=GraphError)
    try:
        values = opdef.evaluate(n, [known[t] for t in n.inputs])
    except HwmapError:
        raise
    except Exception as e:  # a malformed node: name it instead of leaking numpy's message alone
        raise GraphError(f"cannot evaluate constant node: {type(e).__name__}: {e}", where=where) from None
    if len(values) != len(n.outputs):
        raise GraphError(f"evaluation gave {len(values)} outputs for {len(n.outputs)} declared", where=where)
    return list(values)


def _as_declared(v: np.ndarray, dtype: str) -> np.ndarray:
    """``v`` in the tensor's declared dtype when both are of one kind (float32 stays float32
    even if numpy computed in float64); otherwise the evaluated dtype wins."""
    try:
        declared = np.dtype(dtype)
    except TypeError:
        return v
    return v.astype(declared) if declared.kind == v.dtype.kind else v
