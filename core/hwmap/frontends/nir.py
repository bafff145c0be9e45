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
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import HwmapError, ModelError, error_line
from ..graph import Graph, Node, Tensor
from ..hookspecs import hookimpl
from ..limits import check_size
from ..nonfinite import count_nonfinite, describe_nonfinite
from ..ops import get_op
from ..parsing import ParseOptions
from ._nir_read import check_hdf5, import_nir, read_nir

__all__ = ["hwmap_parse", "graph_from_nir", "read_nir", "check_hdf5", "NEURON_PARAMS", "NEURON_OPS", "STATEFUL"]

# NIR neuron class -> the parameter fields that become params (nir/ir/neuron.py).
NEURON_PARAMS: dict[str, tuple[str, ...]] = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "I": ("r",),
}
# hwmap op of each NIR neuron class (:mod:`hwmap.ops.neuron`).
NEURON_OPS: dict[str, str] = {**{k: k for k in NEURON_PARAMS}, "I": "Integrator"}
# NIR classes that evolve in time and so need ``dt``.
STATEFUL = frozenset(NEURON_PARAMS) | {"Delay"}


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
            convert = _CONVERTERS.get(kind)
            if convert is None:
                raise ModelError(f"NIR node {key!r}: type {kind} is not supported (supported: "
                                 f"{', '.join(sorted(_CONVERTERS))}, Input, Output)", where=self.where)
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


# -- per-primitive converters -----------------------------------------------------------------

Converter = Callable[[_Builder, str, Any, tuple[int, ...]], Node]
_CONVERTERS: dict[str, Converter] = {}


def _converter(*kinds: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for k in kinds:
            _CONVERTERS[k] = fn
        return fn
    return deco


def _f32(b: _Builder, key: str, pname: str, a: Any) -> np.ndarray:
    """Parameter ``pname`` of NIR node ``key`` as float32, refused unless it is real and finite."""
    what = f"NIR node {key!r}: parameter {pname!r}"
    if np.iscomplexobj(a):
        raise ModelError(f"{what} holds complex numbers", where=b.where)
    try:
        out = np.array(a, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelError(f"{what} is not numeric", where=b.where) from None
    nans, infs, first = count_nonfinite(out)
    if nans or infs:
        raise ModelError(f"{what} {list(out.shape)} holds {describe_nonfinite(nans, infs)} (the first at flat index "
                         f"{first}); parameters must be finite", where=b.where)
    return out


@_converter("Affine", "Linear")
def _affine(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    w = _f32(b, key, "weight", n.weight)
    if w.ndim != 2:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight of shape {list(w.shape)} is not a matrix",
                         where=b.where)
    if len(x) != 2 or x[1] != w.shape[1]:
        hint = " (insert a Flatten)" if len(x) != 2 else ""
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} takes {w.shape[1]} features "
                         f"but receives shape {list(x[1:])} per sample{hint}", where=b.where)
    params = {"B": w}
    if type(n).__name__ == "Affine":
        params["C"] = _broadcast(b, key, "bias", n.bias, (w.shape[0],))
    return Node(key, "Gemm", [], [], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}, params)


@_converter("Scale")
def _scale(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    return Node(key, "Mul", [], [], {}, {"B": _broadcast(b, key, "scale", n.scale, x[1:])})


@_converter("Conv1d", "Conv2d")
def _conv(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    w = _f32(b, key, "weight", n.weight)
    nd = 1 if type(n).__name__ == "Conv1d" else 2
    if w.ndim != nd + 2 or len(x) != nd + 2:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} and input {list(x[1:])} per "
                         f"sample need {nd} spatial axes", where=b.where)
    groups = int(np.asarray(n.groups).reshape(-1)[0])
    if w.shape[1] * groups != x[1]:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} with groups={groups} takes "
                         f"{w.shape[1] * groups} channels, input has {x[1]}", where=b.where)
    declared = getattr(n, "input_shape", None)
    if declared is not None and _ints(declared, nd, "input_shape", b, key) != list(x[2:]):
        raise ModelError(f"NIR {type(n).__name__} {key!r}: declared input_shape {_ints(declared, nd, '', b, key)} "
                         f"but receives spatial shape {list(x[2:])}", where=b.where)
    kernel = list(w.shape[2:])
    strides = _ints(n.stride, nd, "stride", b, key)
    dilations = _ints(n.dilation, nd, "dilation", b, key)
    pads = _pads(b, key, n.padding, nd, kernel, strides, dilations)
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations, "group": groups}
    bias = _broadcast(b, key, "bias", n.bias, (w.shape[0],))
    return Node(key, "Conv", [], [], attrs, {"W": w, "B": bias})


@_converter("SumPool2d", "AvgPool2d")
def _pool(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    if len(x) != 4:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: needs (C, H, W) per sample, got {list(x[1:])}",
                         where=b.where)
    kernel = _ints(n.kernel_size, 2, "kernel_size", b, key)
    strides = _ints(n.stride, 2, "stride", b, key)
    pads = _pads(b, key, n.padding, 2, kernel, strides, [1, 1])
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": pads}
    if type(n).__name__ == "AvgPool2d":
        # NIR follows torch.nn.AvgPool2d, whose default counts the zero padding.
        attrs.update(count_include_pad=1, ceil_mode=0)
        return Node(key, "AveragePool", [], [], attrs)
    return Node(key, "SumPool2d", [], [], attrs)


@_converter("Flatten")
def _flatten(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    declared = (n.input_type or {}).get("input")
    declared_rank = None if declared is None else int(np.asarray(declared).size)
    start, end = int(n.start_dim), int(n.end_dim)
    if declared_rank == len(x):  # the exporter's dims count the batch axis
        full = _flattened(b, key, x, start, end)
        if full[0] != x[0]:
            raise ModelError(f"NIR Flatten {key!r}: start_dim={start} would flatten the batch axis", where=b.where)
        out = full
    else:
        if declared is not None and [int(d) for d in np.asarray(declared).reshape(-1)] != list(x[1:]):
            raise ModelError(f"NIR Flatten {key!r}: declared input {list(np.asarray(declared).reshape(-1))} but "
                             f"receives {list(x[1:])} per sample", where=b.where)
        out = (x[0],) + _flattened(b, key, x[1:], start, end)
    return Node(key, "Reshape", [], [], {"allowzero": 0}, {"shape": np.array(out, dtype=np.int64)})


@_converter(*NEURON_PARAMS)
def _neuron(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    kind = type(n).__name__
    params: dict[str, np.ndarray] = {}
    for p in NEURON_PARAMS[kind]:
        v = getattr(n, p, None)
        if v is None and p == "v_reset":
            v = 0.0  # NIR's default reset potential
        if v is None:
            raise ModelError(f"NIR {kind} {key!r} has no parameter {p!r}", where=b.where)
        params[p] = _broadcast(b, key, p, v, x[1:])
    return Node(key, NEURON_OPS[kind], [], [], {}, params)


@_converter("Delay")
def _delay(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    delay = _broadcast(b, key, "delay", n.delay, x[1:])
    if b.dt is not None and delay.size:  # a run keeps the last round(delay / dt) inputs
        longest = float(np.max(delay))
        steps = round(longest / b.dt)
        check_size(steps * math.prod(x) * 4, f"NIR Delay {key!r}: the {steps} time steps of inputs of shape "
                   f"{list(x)} it holds (delay {longest} s at dt {b.dt} s)", where=b.where, error=ModelError)
    return Node(key, "Delay", [], [], {}, {"delay": delay})


@_converter("Threshold")
def _threshold(b: _Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    return Node(key, "Threshold", [], [], {}, {"threshold": _broadcast(b, key, "threshold", n.threshold, x[1:])})


# -- helpers ----------------------------------------------------------------------------------

def _broadcast(b: _Builder, key: str, pname: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as float32 of ``shape``: scalars and broadcastable arrays are expanded;
    leading length-1 axes beyond the shape's rank (a kept batch axis) are dropped."""
    a = _f32(b, key, pname, value)
    while a.ndim > len(shape) and a.shape[0] == 1:
        a = a[0]
    check_size(math.prod(shape) * 4, f"NIR node {key!r}: parameter {pname!r} broadcast to shape {list(shape)}",
               where=b.where, error=ModelError)
    try:
        return np.ascontiguousarray(np.broadcast_to(a, shape)).copy()
    except ValueError:
        raise ModelError(f"NIR node {key!r}: parameter {pname!r} of shape {list(np.shape(value))} does not "
                         f"broadcast to the shape {list(shape)} it acts on", where=b.where) from None


def _ints(value: Any, n: int, what: str, b: _Builder, key: str) -> list[int]:
    """An int or per-axis sequence as ``n`` Python ints."""
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, n)
    if a.size != n:
        raise ModelError(f"NIR node {key!r}: {what} {a.tolist()} does not have {n} entries", where=b.where)
    return [int(v) for v in a]


def _pads(b: _Builder, key: str, padding: Any, nd: int, kernel: list[int], strides: list[int],
          dilations: list[int]) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) from NIR padding: int, per-axis or a string.

    ``"same"`` keeps the size at stride 1 with torch's split (the odd pixel at the end)."""
    if isinstance(padding, np.ndarray) and padding.dtype.kind in "SUO" and padding.size == 1:
        padding = padding.item()  # a string read back from HDF5
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * nd)
        if padding != "same":
            raise ModelError(f"NIR node {key!r}: padding {padding!r} is not 'same', 'valid' or integers",
                             where=b.where)
        if any(s != 1 for s in strides):
            raise ModelError(f"NIR node {key!r}: padding 'same' with strides {strides} is ambiguous; "
                             "give explicit padding", where=b.where)
        total = [d * (k - 1) for k, d in zip(kernel, dilations)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    p = _ints(padding, nd, "padding", b, key)
    if any(v < 0 for v in p):
        raise ModelError(f"NIR node {key!r}: negative padding {p}", where=b.where)
    return p + p


def _flattened(b: _Builder, key: str, shape: tuple[int, ...], start: int, end: int) -> tuple[int, ...]:
    """torch.flatten's (and NIR's) rule: axes start..end (inclusive, negatives from the end)."""
    r = len(shape)
    s, e = start % r if -r <= start < r else None, end % r if -r <= end < r else None
    if s is None or e is None or s > e:
        raise ModelError(f"NIR Flatten {key!r}: start_dim={start}, end_dim={end} do not fit shape {list(shape)}",
                         where=b.where)
    return tuple(shape[:s]) + (math.prod(shape[s:e + 1]),) + tuple(shape[e + 1:])


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
