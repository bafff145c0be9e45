"""The pass protocol, the fixed-point driver, and the small rewiring helpers passes share.

A pass is a small named object with ``apply(graph) -> (new_graph, changed)`` in the style
of QONNX's ``Transformation`` (fastmachinelearning/qonnx, ``transformation/base.py``): it
never mutates the graph it is given (it works on ``graph.copy()``), and :func:`run_passes`
applies a list of them until none reports a change. A legalization pipeline then reads as
a list of named passes.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import GraphError
from ..graph import Graph, Node

__all__ = [
    "Pass",
    "run_passes",
    "unique_node_name",
    "single_consumer",
    "constant_value",
    "slot_of_input",
    "prune_tensors",
    "remove_orphan_constants",
]


@runtime_checkable
class Pass(Protocol):
    """A graph rewrite: ``apply`` returns a new graph and whether anything changed."""

    name: str

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        ...


def run_passes(graph: Graph, passes: Sequence[Pass], max_iter: int = 32) -> Graph:
    """Apply ``passes`` in order, repeatedly, until a full round changes nothing.

    Returns the new graph (validated); ``graph`` itself is left untouched. Raises
    :class:`GraphError` naming the passes still changing the graph after ``max_iter``
    rounds, which means two passes undo each other.
    """
    current = graph
    for _ in range(max_iter):
        changed_by: list[str] = []
        for p in passes:
            current, changed = p.apply(current)
            if changed:
                changed_by.append(p.name)
        if not changed_by:
            return current.validate()
    raise GraphError(f"passes did not reach a fixed point after {max_iter} rounds "
                     f"(still changing: {', '.join(changed_by)})", where=f"graph {graph.name!r}")


def unique_node_name(graph: Graph, base: str, taken: Iterable[str] = ()) -> str:
    """``base``, or ``base_1``, ``base_2``... : the first name no node (fused ones included) uses."""
    used = {sub.name for n in graph.nodes for sub in n.walk()} | set(taken)
    if base not in used:
        return base
    i = 1
    while f"{base}_{i}" in used:
        i += 1
    return f"{base}_{i}"


def single_consumer(graph: Graph, tensor: str, consumers: dict[str, list[Node]] | None = None) -> Node | None:
    """The one node reading ``tensor``, or ``None`` if it has no or several readers (one
    node reading it twice counts twice) or it is a graph output (which must stay visible)."""
    if tensor in graph.outputs:
        return None
    readers = (consumers if consumers is not None else graph.consumers()).get(tensor, [])
    return readers[0] if len(readers) == 1 else None


def constant_value(graph: Graph, tensor: str, producers: dict[str, Node] | None = None) -> np.ndarray | None:
    """The value of ``tensor`` if a ``Constant`` node produces it, else ``None``."""
    p = (producers if producers is not None else graph.producers()).get(tensor)
    if p is not None and p.op == "Constant" and "value" in p.params:
        return p.params["value"]
    return None


def slot_of_input(node: Node, index: int, slots: Sequence[str]) -> str | None:
    """The schema slot dynamic input ``index`` of ``node`` fills: dynamic inputs fill the
    slots not present in ``params``, in schema order (see :mod:`hwmap.graph`)."""
    free = [s for s in slots if s not in node.params]
    return free[index] if index < len(free) else None


def prune_tensors(graph: Graph) -> None:
    """Drop tensor declarations nothing refers to any more (in place, on a pass's own copy).

    Tensors named by fused sub-nodes are kept: they record the intermediate shapes a
    target may need when it lowers the fused node."""
    used = set(graph.inputs) | set(graph.outputs)
    for n in graph.nodes:
        for sub in n.walk():
            used.update(sub.inputs)
            used.update(sub.outputs)
    for name in [t for t in graph.tensors if t not in used]:
        del graph.tensors[name]


def remove_orphan_constants(graph: Graph) -> bool:
    """Remove ``Constant`` nodes whose output nobody reads and that are not graph outputs
    (in place, on a pass's own copy). Returns whether any was removed."""
    read = {t for n in graph.nodes for t in n.inputs} | set(graph.outputs)
    keep = [n for n in graph.nodes if not (n.op == "Constant" and not any(t in read for t in n.outputs))]
    removed = len(keep) != len(graph.nodes)
    graph.nodes = keep
    return removed
