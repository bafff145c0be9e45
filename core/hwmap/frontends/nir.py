"""NIR frontend: Neuromorphic Intermediate Representation graphs (``.nir`` files, ``nir`` package).

NIR (Pedersen et al., Nat. Commun. 15, 8122, 2024) describes a network as continuous-time
primitives (``nir/ir/*.py``) joined by identity edges; several edges into one node are
summed. Each primitive becomes one hwmap node:

=================  ==========================================================================
NIR                hwmap
=================  ==========================================================================
Input / Output     graph inputs / outputs (tensors named after the NIR node)
Affine / Linear    ``Gemm`` with ``B`` = weight, ``transB=1`` (``C`` = bias for Affine)
Scale              ``Mul`` with ``B`` = scale
Conv1d / Conv2d    ``Conv`` (``W``, ``B``; strides, pads, dilations, group, kernel_shape)
Flatten            ``Reshape`` with a constant ``shape``
SumPool2d          ``SumPool2d``;  AvgPool2d: ``AveragePool`` (``count_include_pad=1``)
LIF, CubaLIF, IF,  the same op names (NIR's integrator ``I``: ``Integrator``) with the NIR
LI, CubaLI, I      parameters as float32 params broadcast to the neuron shape
Threshold          ``Threshold`` (param ``threshold``)
Delay              ``Delay`` with param ``delay`` (seconds)
several in-edges   a ``Sum`` node in front of the receiving node
=================  ==========================================================================

Conventions
-----------
* **Batch.** NIR shapes exclude the batch. Every hwmap tensor gets ``options.batch``
  prepended. A NIR ``Input`` shape with one more axis than its first consumer expects
  (Affine: 1, Conv1d: 2, Conv2d and pooling: 3, neurons: their non-scalar parameters' rank) is taken
  to carry a batch axis already; that axis is replaced by ``options.batch``. Flatten's
  ``start_dim``/``end_dim`` are read the same way: relative to the per-sample shape, unless
  the node's own ``input_type`` has the extra batch axis.
* **Time.** Every node gets ``attrs["dt"] = options.dt`` and ``graph.meta["dt"]`` records
  it; a graph with neurons or delays needs it (``--dt``). The discretisation of the NIR
  equations and the firing rule (``v > v_threshold``, as the NIR docstrings state) are the
  ops' (:mod:`hwmap.ops`).
* **Names and order.** Tensors are named after the NIR node producing them; a node feeding
  an ``Output`` names its tensor after that ``Output`` instead, so graph outputs carry the
  NIR output names. Graph inputs and outputs are sorted by name (``.nir`` files store nodes
  alphabetically, in-memory graphs in insertion order: sorting makes both agree). A node
  without outgoing edge that is not an ``Output`` becomes a graph output too, after the
  ``Output`` ones (NIR's own type inference appends ``Output`` nodes the same way).
* **Recurrence** (a cycle of edges) is refused; NIR ``Output`` types are not checked
  (exporters often leave them empty); shapes come from hwmap's own shape inference.

The converter of each primitive is :mod:`hwmap.frontends._nir_prims`'s; this module reads the
file, orders the nodes and builds the graph.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HwmapError, ModelError, error_line
from ..graph import Graph, Node, Tensor
from ..hookspecs import hookimpl
from ..limits import check_size
from ..ops import get_op
from ..parsing import ParseOptions
from ._nir_prims import CONVERTERS, NEURON_OPS, NEURON_PARAMS, STATEFUL
from ._nir_read import check_hdf5, import_nir, read_nir

__all__ = ["hwmap_parse", "graph_from_nir", "read_nir", "check_hdf5", "NEURON_PARAMS", "NEURON_OPS", "STATEFUL"]



@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Parse ``.nir`` files; ``None`` for anything else."""
    if Path(source).suffix.lower() != ".nir":
        return None
    graph = read_nir(source)
    return graph_from_nir(graph, name=options.name or Path(source).stem, options=options, where=source)


def graph_from_nir(nirgraph: Any, *, name: str, options: ParseOptions, where: str | None = None) -> Graph:
    """Convert an in-memory ``nir.NIRGraph`` into a validated hwmap Graph (see module doc)."""
    nir = import_nir()
    where = where or name
    if not isinstance(nirgraph, nir.NIRGraph):
        raise ModelError(f"expected a nir.NIRGraph, got {type(nirgraph).__name__}", where=where)
    try:
        return _Builder(nirgraph, name, options, where).build()
    except ModelError:
        raise
    except HwmapError as e:  # shape or op errors found while building: still a bad model
        raise ModelError(str(e), where=where) from None


# -- building -------------------------------------------------------------------------------

@dataclass
class _Builder:
    nir: Any
    name: str
    options: ParseOptions
    where: str
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    value: dict[str, str] = field(default_factory=dict)  # NIR node -> tensor holding its output
    used_names: set[str] = field(default_factory=set)
    dt: float | None = None

    def build(self) -> Graph:
        nodes: dict[str, Any] = dict(self.nir.nodes)
        self.used_names = set(nodes)
        preds, succs = self._topology(nodes)
        order = _toposort(nodes, preds, succs, self.where)
        self.dt = dt = self._dt(nodes)
        out_alias = self._output_aliases(nodes, preds)
        inputs: list[str] = []
        outputs: list[str] = []  # NIR Output nodes, by name
        leaves: list[str] = []  # nodes without outgoing edge, by name
        for key in order:
            n = nodes[key]
            kind = type(n).__name__
            if kind == "Input":
                self._declare(key, self._input_shape(key, n, [nodes[s] for s in succs[key]]))
                self.value[key] = key
                inputs.append(key)
                continue
            if kind == "Output":
                outputs.append(self._output(key, preds[key], out_alias))
                continue
            if not preds[key]:
                raise ModelError(f"NIR node {key!r} ({kind}) has no incoming edge and is not an Input",
                                 where=self.where)
            x = self._gather(key, preds[key])
            convert = CONVERTERS.get(kind)
            if convert is None:
                raise ModelError(f"NIR node {key!r}: type {kind} is not supported (supported: "
                                 f"{', '.join(sorted(CONVERTERS))}, Input, Output)", where=self.where)
            try:
                node = convert(self, key, n, self.tensors[x].shape)
            except (TypeError, ValueError, AttributeError, IndexError) as e:  # a malformed primitive
                raise ModelError(f"NIR {kind} {key!r} is malformed: {error_line(e)}", where=self.where) from None
            node.inputs = [x]
            node.outputs = [out_alias.get(key, key)]
            self._emit(node)
            self.value[key] = node.outputs[0]
            if not succs[key]:
                leaves.append(node.outputs[0])  # NIR's type inference would append an Output here
        if not inputs:
            raise ModelError("NIR graph has no Input node", where=self.where)
        graph = Graph(self.name, inputs, sorted(outputs) + sorted(leaves), self.nodes, self.tensors,
                      meta={"dt": dt})
        graph.check_memory(error=ModelError, where=self.where)
        return graph.validate()

    # -- topology ----------------------------------------------------------------------------
    def _topology(self, nodes: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        preds: dict[str, list[str]] = {k: [] for k in nodes}
        succs: dict[str, list[str]] = {k: [] for k in nodes}
        for edge in self.nir.edges:
            try:
                src, dst = (str(e) for e in edge)
            except (TypeError, ValueError):
                raise ModelError(f"malformed NIR edge {edge!r}", where=self.where) from None
            for end in (src, dst):
                if end not in nodes:
                    raise ModelError(f"NIR edge ({src!r}, {dst!r}) names unknown node {end!r}", where=self.where)
            if type(nodes[src]).__name__ == "Output" or type(nodes[dst]).__name__ == "Input":
                raise ModelError(f"NIR edge ({src!r}, {dst!r}) leaves an Output or enters an Input", where=self.where)
            if src not in preds[dst]:
                preds[dst].append(src)
                succs[src].append(dst)
        subgraph = import_nir().NIRGraph
        for k, n in nodes.items():
            if isinstance(n, subgraph):
                raise ModelError(f"NIR node {k!r} is a nested NIRGraph; flatten subgraphs before parsing",
                                 where=self.where)
        return {k: sorted(v) for k, v in preds.items()}, {k: sorted(v) for k, v in succs.items()}

    def _dt(self, nodes: dict[str, Any]) -> float | None:
        dt = self.options.dt
        stateful = sorted(k for k, n in nodes.items() if type(n).__name__ in STATEFUL)
        if dt is None:
            if stateful:
                first = stateful[0]
                raise ModelError(f"NIR graph has neurons or delays that evolve in time ({type(nodes[first]).__name__} "
                                 f"{first!r}): pass --dt, the time step in seconds", where=self.where)
            return None
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise ModelError(f"--dt must be a number of seconds, got {dt!r}", where=self.where) from None
        if not (math.isfinite(dt) and dt > 0):
            raise ModelError(f"--dt must be a positive number of seconds, got {dt!r}", where=self.where)
        return dt

    @staticmethod
    def _output_aliases(nodes: dict[str, Any], preds: dict[str, list[str]]) -> dict[str, str]:
        """Name a node's output tensor after the NIR Output it feeds, so graph outputs carry
        the Output names (one Output per producer; further ones get an Identity node)."""
        alias: dict[str, str] = {}
        for key in sorted(nodes):
            if type(nodes[key]).__name__ != "Output" or len(preds[key]) != 1:
                continue
            src = preds[key][0]
            if type(nodes[src]).__name__ not in ("Input", "Output") and src not in alias:
                alias[src] = key
        return alias

    # -- tensors and nodes -------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used_names:
            name, i = f"{base}_{i}", i + 1
        self.used_names.add(name)
        return name

    def _declare(self, tensor: str, shape: tuple[int, ...]) -> None:
        check_size(math.prod(shape) * 4, f"tensor {tensor!r} of shape {list(shape)} (float32)", where=self.where,
                   error=ModelError)
        self.tensors[tensor] = Tensor(tensor, shape, "float32")

    def _emit(self, node: Node) -> None:
        if self.dt is not None:
            node.attrs["dt"] = self.dt
        in_shapes = [self.tensors[t].shape for t in node.inputs]
        shapes = get_op(node.op, where=f"node {node.name!r}").infer(node, in_shapes)
        if shapes is None or len(shapes) != len(node.outputs):
            raise ModelError(f"cannot infer the output shape of node {node.name!r} ({node.op})", where=self.where)
        for t, s in zip(node.outputs, shapes):
            self._declare(t, tuple(s))
        self.nodes.append(node)

    def _gather(self, key: str, srcs: list[str]) -> str:
        """The tensor a node reads: its one source, or the ``Sum`` of several (NIR sums
        every edge arriving at a node)."""
        if len(srcs) == 1:
            return self.value[srcs[0]]
        name = self._fresh(f"{key}_sum")
        shapes = {self.tensors[self.value[s]].shape for s in srcs}
        if len(shapes) != 1:
            raise ModelError(f"NIR node {key!r} sums inputs of different shapes "
                             f"{[list(self.tensors[self.value[s]].shape) for s in srcs]} from {srcs}", where=self.where)
        self._emit(Node(name, "Sum", [self.value[s] for s in srcs], [name]))
        return name

    def _output(self, key: str, srcs: list[str], alias: dict[str, str]) -> str:
        if not srcs:
            raise ModelError(f"NIR Output {key!r} has no incoming edge", where=self.where)
        if len(srcs) == 1 and alias.get(srcs[0]) == key:
            return key
        if len(srcs) > 1:
            shapes = {self.tensors[self.value[s]].shape for s in srcs}
            if len(shapes) != 1:
                raise ModelError(f"NIR Output {key!r} sums inputs of different shapes from {srcs}", where=self.where)
            self._emit(Node(self._fresh(f"{key}_sum"), "Sum", [self.value[s] for s in srcs], [key]))
        else:
            self._emit(Node(self._fresh(f"{key}_identity"), "Identity", [self.value[srcs[0]]], [key]))
        return key

    def _input_shape(self, key: str, n: Any, consumers: list[Any]) -> tuple[int, ...]:
        raw = (n.input_type or {}).get("input")
        if raw is None:
            raise ModelError(f"NIR Input {key!r} has no shape", where=self.where)
        shape = tuple(int(d) for d in np.asarray(raw).reshape(-1))
        if not shape or any(d <= 0 for d in shape):
            raise ModelError(f"NIR Input {key!r} has shape {list(shape)}: need positive sizes", where=self.where)
        ranks = {r for r in (_sample_rank(c) for c in consumers) if r is not None}
        if len(ranks) == 1:
            r = ranks.pop()
            if len(shape) == r + 1:
                shape = shape[1:]  # a batch axis the exporter kept: replaced by options.batch
            elif len(shape) != r:
                raise ModelError(f"NIR Input {key!r} has shape {list(shape)} but its consumer expects {r} "
                                 "axes per sample (plus an optional batch axis)", where=self.where)
        return (int(self.options.batch),) + shape




_PARAM_OF = {"Delay": ("delay",), "Scale": ("scale",), "Threshold": ("threshold",)}


def _sample_rank(n: Any) -> int | None:
    """How many per-sample axes a NIR primitive expects at its input, if it says. (Flatten
    does not: its declared input may or may not count the batch, which it settles itself.)"""
    kind = type(n).__name__
    if kind in ("Affine", "Linear"):
        return int(np.ndim(n.weight)) - 1
    if kind == "Conv1d":
        return 2
    if kind in ("Conv2d", "SumPool2d", "AvgPool2d"):
        return 3
    fields = NEURON_PARAMS.get(kind) or _PARAM_OF.get(kind)
    if fields:
        rank = int(np.ndim(getattr(n, fields[0])))
        return rank or None  # scalar parameters say nothing about the shape
    return None


def _toposort(nodes: dict[str, Any], preds: dict[str, list[str]], succs: dict[str, list[str]],
              where: str) -> list[str]:
    """Kahn's algorithm, ties broken by node name: the same graph always gives the same order."""
    indeg = {k: len(v) for k, v in preds.items()}
    ready = [k for k, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for s in succs[k]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(ready, s)
    if len(order) != len(nodes):
        left = {k for k in nodes if k not in set(order)}
        cyc = sorted(k for k in left if _reaches(k, k, succs, left))
        raise ModelError(f"recurrent NIR graphs are not supported by this frontend (cycle through "
                         f"{', '.join(repr(c) for c in cyc)})", where=where)
    return order


def _reaches(src: str, dst: str, succs: dict[str, list[str]], within: set[str]) -> bool:
    stack, seen = list(succs[src]), set()
    while stack:
        k = stack.pop()
        if k == dst:
            return True
        if k in seen or k not in within:
            continue
        seen.add(k)
        stack.extend(succs[k])
    return False
