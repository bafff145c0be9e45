"""What the frontends share with the rest of hwmap: how a model is parsed.

:class:`ParseOptions` are what every frontend (``hwmap_parse``) is handed. A graph parsed
with ``allow_unknown`` may hold *unknown nodes* (ops hwmap does not know, kept for
profiling; see :mod:`hwmap.source`): they are listed in ``graph.meta[UNKNOWN_NODES_KEY]``,
read back by :func:`unknown_nodes`, refused by :func:`require_known`, and
:func:`validate_known` checks the rest of such a graph. :func:`check_input_shape` bounds an
input shape before a frontend allocates anything.

This module sits below the frontends and :mod:`hwmap.source` (which resolves a model
reference through them), so a frontend never imports the resolver.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import GraphError, ModelError, UnsupportedOpError
from .graph import Graph
from .limits import check_size

__all__ = ["ParseOptions", "UnknownNode", "unknown_nodes", "require_known", "validate_known", "check_input_shape",
           "UNKNOWN_NODES_KEY", "MAX_DIM"]

#: ``Graph.meta`` key listing the unknown nodes of a graph parsed with ``allow_unknown``.
UNKNOWN_NODES_KEY = "unknown_nodes"
#: The largest size one axis of an input shape may have (more is a typo or an attack).
MAX_DIM = 2**31 - 1


@dataclass
class ParseOptions:
    """Options for frontends. ``input_shape`` is needed by the PyTorch frontend (batch
    first, e.g. ``(1, 3, 224, 224)``); ``batch`` fixes a symbolic batch dimension; ``dt``
    is the time step for NIR graphs (seconds). ``allow_unknown`` keeps nodes of ops hwmap
    does not know as unknown nodes instead of refusing the model (for profiling only, see
    the module docstring). ``extra`` holds frontend-specific options."""

    input_shape: tuple[int, ...] | None = None
    batch: int = 1
    dt: float | None = None
    name: str | None = None
    allow_unknown: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnknownNode:
    """A node hwmap cannot count: ``node`` (its name), ``op``, ``reason`` (why, one line).

    ``cause`` is ``"unknown_op"`` for an op hwmap does not know (or cannot read) and
    ``"unknown_shape"`` for a known op reading a tensor whose shape is unknown because an
    unknown op produced it. ``unshaped`` names the node's outputs whose shape is unknown
    (declared with the placeholder shape ``()``).
    """

    node: str
    op: str
    reason: str
    cause: str = "unknown_op"
    unshaped: tuple[str, ...] = ()

    def describe(self) -> str:
        """``node 'hm' (Hardmax): op 'Hardmax' is not known to hwmap``."""
        return f"node {self.node!r} ({self.op}): {self.reason}"


def unknown_nodes(graph: Graph) -> list[UnknownNode]:
    """The unknown nodes of ``graph``, in graph order (empty for a normal graph)."""
    return [UnknownNode(str(d["node"]), str(d["op"]), str(d["reason"]), str(d.get("cause", "unknown_op")),
                        tuple(str(t) for t in d.get("unshaped", ())))
            for d in graph.meta.get(UNKNOWN_NODES_KEY) or []]


def require_known(graph: Graph, what: str = "this step") -> Graph:
    """``graph`` if it has no unknown node; otherwise :class:`UnsupportedOpError` naming the
    nodes whose ops hwmap does not know (and how many follow them)."""
    unknown = unknown_nodes(graph)
    if not unknown:
        return graph
    ops = [u for u in unknown if u.cause == "unknown_op"]
    after = len(unknown) - len(ops)
    listed = ", ".join(f"{u.node} ({u.op})" for u in ops) or "none"
    more = f" (and {after} node(s) after them with inputs of unknown shape)" if after else ""
    raise UnsupportedOpError(f"{what} needs every op known to hwmap; {len(ops)} node(s) use ops hwmap does not "
                             f"support: {listed}{more}", where=f"graph {graph.name!r}")


def validate_known(graph: Graph) -> Graph:
    """:meth:`Graph.validate`, for a graph that may hold unknown nodes.

    Without unknown nodes this is ``graph.validate()``. With them, every node must read
    tensors that are graph inputs or produced earlier, and the known part passes
    ``Graph.validate`` with the outputs of unknown nodes standing in for graph inputs (so
    every known op is checked, shapes included). Raises :class:`GraphError`.
    """
    unknown = {u.node for u in unknown_nodes(graph)}
    if not unknown:
        return graph.validate()
    available = set(graph.inputs)
    for n in graph.nodes:
        missing = [t for t in n.inputs if t not in available]
        if missing:
            raise GraphError(f"input {missing[0]!r} is dangling or produced later", where=f"node {n.name!r} ({n.op})")
        undeclared = [t for t in n.outputs if t not in graph.tensors]
        if undeclared:
            raise GraphError(f"output {undeclared[0]!r} has no tensor declaration", where=f"node {n.name!r} ({n.op})")
        available.update(n.outputs)
    absent = unknown - {n.name for n in graph.nodes}
    if absent:
        raise GraphError(f"meta lists unknown nodes the graph does not have: {sorted(absent)}",
                         where=f"graph {graph.name!r}")
    stand_ins = [t for n in graph.nodes if n.name in unknown for t in n.outputs]
    known = Graph(graph.name, [*graph.inputs, *stand_ins], list(graph.outputs),
                  [n for n in graph.nodes if n.name not in unknown], graph.tensors)
    known.validate()
    return graph


def check_input_shape(shape: Sequence[Any], where: str | None = None, *, what: str = "input shape") -> tuple[int, ...]:
    """``shape`` (``--input-shape``, or the batch) as a tuple of ints, checked: every size a
    positive integer of at most :data:`MAX_DIM`, and one float32 tensor of that shape within
    the memory limit. Raises :class:`ModelError` naming ``where``."""
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ModelError(f"{what} {shape!r}: sizes must be integers", where=where) from None
    if not dims or any(d <= 0 for d in dims):
        raise ModelError(f"{what} {list(dims)}: sizes must be positive integers", where=where)
    big = [d for d in dims if d > MAX_DIM]
    if big:
        raise ModelError(f"{what} {list(dims)}: size {big[0]} is larger than any tensor can be "
                         f"(at most {MAX_DIM})", where=where)
    check_size(math.prod(dims) * 4, f"{what} {list(dims)}: a float32 tensor of that shape", where=where,
               error=ModelError)
    return dims
