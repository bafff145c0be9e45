"""Put a per-step graph between an ``Encoder`` and a ``Readout`` (:mod:`hwmap.ops.time`), so
that it takes static data and gives a static result like the ANN it stands for.

:func:`encode_graph` inserts an Encoder after each graph input and a Readout before each graph
output; the graph's input and output names stay, so data and labels made for the ANN serve
the encoded graph unchanged. A graph that already holds an Encoder or a Readout is refused.
"""

from __future__ import annotations

from ..errors import GraphError
from ..graph import Graph, Node, Tensor
from .base import unique_node_name

__all__ = ["encode_graph"]


def _unique_tensor(graph: Graph, base: str) -> str:
    name, k = base, 1
    while name in graph.tensors:
        k += 1
        name = f"{base}_{k}"
    return name


def encode_graph(graph: Graph, *, timesteps: int, encoding: str = "direct", seed: int = 0,
                 readout: str = "membrane") -> Graph:
    """``graph`` (which runs one frame per step) with an ``Encoder`` (``encoding``,
    ``timesteps``, ``seed``) on each input and a ``Readout`` (``readout`` mode) on each
    output; validated (a bad setting is a :class:`GraphError` naming the new node)."""
    present = [n.name for n in graph.nodes if n.op in ("Encoder", "Readout")]
    if present:
        raise GraphError(f"already holds time nodes ({', '.join(present)})", where=f"graph {graph.name!r}")
    g = graph.copy()
    head: list[Node] = []
    for name in g.inputs:
        frames = _unique_tensor(g, f"{name}.frames")
        g.tensors[frames] = Tensor(frames, g.tensors[name].shape, g.tensors[name].dtype)
        for node in g.nodes:
            node.inputs = [frames if t == name else t for t in node.inputs]
        attrs = {"encoding": encoding, "timesteps": timesteps, **({"seed": seed} if encoding == "poisson" else {})}
        head.append(Node(unique_node_name(g, f"encode_{name}"), "Encoder", [name], [frames], attrs, {}))
        g.nodes.insert(0, head[-1])
    for name in g.outputs:
        steps = _unique_tensor(g, f"{name}.steps")
        g.tensors[steps] = Tensor(steps, g.tensors[name].shape, g.tensors[name].dtype)
        for node in g.nodes:
            node.outputs = [steps if t == name else t for t in node.outputs]
            node.inputs = [steps if t == name else t for t in node.inputs]
        g.nodes.append(Node(unique_node_name(g, f"readout_{name}"), "Readout", [steps], [name], {"mode": readout}, {}))
    return g.validate()
