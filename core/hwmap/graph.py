"""The neutral model graph every frontend produces and every target consumes.

A :class:`Graph` has named inputs and outputs, :class:`Node` s in topological order and
:class:`Tensor` s with concrete shapes and dtypes. Ops are named as in ONNX where ONNX has
them and as in NIR for neuromorphic ones (see :mod:`hwmap.ops`).

Conventions
-----------
* ``Node.inputs`` are the *dynamic* inputs (tensors produced by another node or fed as a
  graph input). Constant operands live in ``Node.params`` keyed by the name of the input slot
  in the op's ONNX schema (Conv: ``W``, ``B``; Gemm: ``B``, ``C``; Add: ``B``; ...). The
  dynamic inputs fill the slots not present in ``params``, in schema order.
* Shapes are concrete tuples of ints; a symbolic batch dimension is fixed at parse time.
* Quantization is an annotation: on a tensor (``Tensor.quant``) for activations and on a
  node's parameter (``Node.param_quant[slot]``) for weights. ``params`` always hold the
  real-valued (dequantized) numbers, so every consumer can ignore the annotation safely.
  The annotation, :class:`QuantAnnotation`, is :mod:`hwmap.graph_quant`'s.
* A fused node (``op`` starting with ``Fused``) keeps the nodes it replaced in ``fused``.

Serialization: :meth:`Graph.save` writes ``graph.json`` and ``params.npz``;
:meth:`Graph.load` reads them back exactly (arrays bit for bit, attributes as written).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import GraphError, HwmapError
from .graph_json import FORMAT_VERSION, check_graph_json
from .graph_quant import QuantAnnotation
from .nonfinite import count_nonfinite, describe_nonfinite
from .limits import check_size

__all__ = ["QuantAnnotation", "Tensor", "Node", "Graph", "FORMAT_VERSION", "save_npz", "load_npz"]


@dataclass
class Tensor:
    """A value flowing between nodes: its concrete shape, element type, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    quant: QuantAnnotation | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The bytes its values take (a dtype numpy does not know, e.g. bfloat16, counts 4)."""
        return self.size * _itemsize(self.dtype)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quant is not None:
            d["quant"] = self.quant.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Tensor":
        q = d.get("quant")
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"),
                   QuantAnnotation.from_json(q) if q else None)


@dataclass
class Node:
    """One operation: ``op`` applied to ``inputs`` (tensor names) giving ``outputs``.

    ``attrs`` hold JSON-representable attributes (ints, floats, strings, bools and lists of
    them); ``params`` hold constant operands as numpy arrays keyed by schema slot name.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    param_quant: dict[str, QuantAnnotation] = field(default_factory=dict)
    fused: list["Node"] = field(default_factory=list)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def copy(self) -> "Node":
        """A deep copy: a pass that changes a node changes its copy, never the original."""
        return Node(
            self.name, self.op, list(self.inputs), list(self.outputs),
            json.loads(json.dumps(self.attrs)),
            {k: v.copy() for k, v in self.params.items()},
            {k: v.copy() for k, v in self.param_quant.items()},
            [f.copy() for f in self.fused],
        )

    def walk(self) -> Iterator["Node"]:
        """This node, then every node it fused (recursively)."""
        yield self
        for f in self.fused:
            yield from f.walk()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
            "params": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.params.items()},
        }
        if self.param_quant:
            d["param_quant"] = {k: q.to_json() for k, q in self.param_quant.items()}
        if self.fused:
            d["fused"] = [f.to_json() for f in self.fused]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], arrays: Any) -> "Node":
        params = {}
        for k in d.get("params", {}):
            key = f"{d['name']}/{k}"
            if key not in arrays:
                raise GraphError(f"parameter array {key!r} missing from params.npz")
            params[k] = arrays[key]
        return cls(
            d["name"], d["op"], list(d["inputs"]), list(d["outputs"]), d.get("attrs", {}), params,
            {k: QuantAnnotation.from_json(q) for k, q in d.get("param_quant", {}).items()},
            [cls.from_json(f, arrays) for f in d.get("fused", [])],
        )


@dataclass
class Graph:
    """A neutral model graph. Stages take one and return a new one; none mutates its input."""

    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no tensor {name!r}") from None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"graph {self.name!r} has no node {name!r}")

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that produces it."""
        return {t: n for n in self.nodes for t in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> the nodes that read it, in graph order."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in n.inputs:
                out.setdefault(t, []).append(n)
        return out

    def copy(self) -> "Graph":
        return Graph(
            self.name, list(self.inputs), list(self.outputs), [n.copy() for n in self.nodes],
            {k: Tensor.from_json(v.to_json()) for k, v in self.tensors.items()},
            json.loads(json.dumps(self.meta)),
        )

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> "Graph":
        """Check the graph is well formed; raise :class:`GraphError` naming node and problem.

        Checks: shapes without negative sizes (:meth:`check_shapes`); what running the graph
        needs within the memory limit (:meth:`check_memory`); finite parameters
        (:meth:`check_params`); unique node names (fused ones included); every tensor
        declared; every input produced earlier or a graph input (a dangling tensor, or a cycle
        when the producer comes later); one producer per tensor; outputs produced; known ops;
        shapes agree with each op's shape inference where the op defines one.
        """
        from .ops import get_op  # local: ops imports graph

        self.check_shapes()
        self.check_memory()
        self.check_params()
        seen_nodes: set[str] = set()
        for n in self.nodes:
            for sub in n.walk():
                if sub.name in seen_nodes:
                    raise GraphError(f"node name {sub.name!r} used twice", where=f"graph {self.name!r}")
                seen_nodes.add(sub.name)
        for t in self.inputs:
            if t not in self.tensors:
                raise GraphError(f"graph input {t!r} has no tensor declaration", where=f"graph {self.name!r}")
        producers = self.producers()
        available = set(self.inputs)
        order = {n.name: i for i, n in enumerate(self.nodes)}
        produced_by: dict[str, str] = {}
        for n in self.nodes:
            where = f"node {n.name!r} ({n.op})"
            for t in n.inputs:
                if t not in available:
                    if t in producers:
                        p = producers[t]
                        if order[p.name] >= order[n.name]:
                            raise GraphError(
                                f"input {t!r} is produced by node {p.name!r} which comes later: a cycle "
                                "or nodes out of topological order", where=where)
                    raise GraphError(f"input {t!r} is dangling: no node produces it and it is not a graph input",
                                     where=where)
            for t in n.outputs:
                if t in produced_by or t in self.inputs:
                    raise GraphError(f"output {t!r} is already produced by {produced_by.get(t, 'the graph input')!r}",
                                     where=where)
                if t not in self.tensors:
                    raise GraphError(f"output {t!r} has no tensor declaration", where=where)
                produced_by[t] = n.name
                available.add(t)
            opdef = get_op(n.op, where=where)
            in_shapes = [self.tensors[t].shape for t in n.inputs]
            expected = opdef.infer(n, in_shapes)
            if expected is not None:
                for t, shp in zip(n.outputs, expected):
                    if tuple(shp) != self.tensors[t].shape:
                        raise GraphError(
                            f"shape mismatch on output {t!r}: declared {list(self.tensors[t].shape)}, "
                            f"{n.op} of inputs {[list(s) for s in in_shapes]} gives {list(shp)}", where=where)
        for t in self.outputs:
            if t not in available:
                raise GraphError(f"graph output {t!r} is not produced by any node", where=f"graph {self.name!r}")
        return self

    def check_shapes(self, *, error: Callable[..., HwmapError] = GraphError, where: str | None = None) -> "Graph":
        """Refuse a tensor with a negative size, and a graph input with a size that is not
        positive (zero-sized intermediate tensors, e.g. the shape of a scalar, are allowed)."""
        where = where or f"graph {self.name!r}"
        inputs = set(self.inputs)
        for t in self.tensors.values():
            if any(d < 0 for d in t.shape) or (t.name in inputs and any(d <= 0 for d in t.shape)):
                kind = "graph input" if t.name in inputs else "tensor"
                raise error(f"{kind} {t.name!r} has shape {list(t.shape)}: sizes must be positive", where=where)
        return self

    def memory_footprint(self, batch: int | None = None) -> tuple[int, str]:
        """The bytes a run of the graph needs at least, and what they are, from declared
        shapes alone (nothing is evaluated).

        That is every parameter (all are held in memory while the graph runs) plus the input
        and output tensors of the node that needs the most (they coexist while it evaluates),
        each tensor at its declared shape and dtype. It is a lower bound: an executor keeping
        more tensors alive needs more, never less, so a graph refused on it could not have run
        within the limit. ``batch``: the size at a batch other than the declared one (tensors
        whose first size is the declared batch scale with it).
        """
        declared = self.tensors[self.inputs[0]].shape[:1] if self.inputs and self.inputs[0] in self.tensors else ()
        scale = batch / declared[0] if batch is not None and declared and declared[0] > 0 else 1.0

        def nbytes(name: str) -> float:
            t = self.tensors.get(name)
            if t is None:
                return 0.0
            return float(t.nbytes) * (scale if t.shape[:1] == declared else 1.0)

        def shape(name: str) -> list[int]:
            s = list(self.tensors[name].shape)
            return [batch, *s[1:]] if batch is not None and s[:1] == list(declared) else s

        params = float(sum(a.nbytes for n in self.nodes for sub in n.walk() for a in sub.params.values()))
        worst, what = 0.0, "no node"
        for n in self.nodes:
            names = list(dict.fromkeys([*n.inputs, *n.outputs]))
            need = sum(nbytes(t) for t in names)
            if need > worst:
                worst = need
                shapes = ", ".join(f"{t} {shape(t)}" for t in names if t in self.tensors)
                what = f"node {n.name!r} ({n.op}) with its tensors {shapes}"
        for t in self.inputs:  # a graph without nodes still holds its inputs
            if nbytes(t) > worst:
                worst, what = nbytes(t), f"graph input {t!r} {shape(t)}"
        total = params + worst
        return int(min(total, 2.0**63)), f"{what} and {int(params):,} bytes of parameters"

    def check_memory(self, batch: int | None = None, *, error: Callable[..., HwmapError] = GraphError,
                     where: str | None = None) -> "Graph":
        """Refuse the graph if running it needs more than the memory limit
        (:func:`hwmap.limits.max_memory`; what is counted: :meth:`memory_footprint`)."""
        need, what = self.memory_footprint(batch)
        at = f" at batch {batch}" if batch is not None else ""
        check_size(need, f"running the graph{at}: {what}", where=where or f"graph {self.name!r}", error=error)
        return self

    def check_params(self, *, error: Callable[..., HwmapError] = GraphError, where: str | None = None) -> "Graph":
        """Refuse NaN or infinite parameters and quantization scales or zero points (fused
        nodes' included), naming the node and the parameter."""
        where = where or f"graph {self.name!r}"
        for n in self.nodes:
            for sub in n.walk():
                node = f"node {sub.name!r} ({sub.op})"
                for slot, a in sub.params.items():
                    _refuse_nonfinite(a, f"{node}: parameter {slot!r} {list(np.shape(a))}", error, where)
                for slot, q in sub.param_quant.items():
                    _refuse_nonfinite(q.scale, f"{node}: the quantization scale of parameter {slot!r}", error, where)
                    _refuse_nonfinite(q.zero_point, f"{node}: the quantization zero point of parameter {slot!r}",
                                      error, where)
        for t in self.tensors.values():
            if t.quant is not None:
                _refuse_nonfinite(t.quant.scale, f"the quantization scale of tensor {t.name!r}", error, where)
                _refuse_nonfinite(t.quant.zero_point, f"the quantization zero point of tensor {t.name!r}", error,
                                  where)
        return self

    # -- serialization -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": "hwmap.graph",
            "version": FORMAT_VERSION,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "tensors": [t.to_json() for t in self.tensors.values()],
            "nodes": [n.to_json() for n in self.nodes],
            "meta": self.meta,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every parameter array keyed ``node/slot`` (fused nodes included)."""
        return {f"{sub.name}/{k}": v for n in self.nodes for sub in n.walk() for k, v in sub.params.items()}

    def digest(self) -> str:
        """SHA-256 of the graph as saved (structure, attributes, annotations and every
        parameter's dtype, shape and bytes): equal graphs give equal digests."""
        h = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode())
        for key, a in sorted(self.arrays().items()):
            a = np.ascontiguousarray(a)
            h.update(f"\0{key}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, directory: str | Path) -> None:
        """Write ``graph.json`` and ``params.npz`` into ``directory`` (byte-deterministic)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "graph.json").write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        save_npz(directory / "params.npz", self.arrays())

    @classmethod
    def from_json(cls, d: Any, arrays: Any, *, where: str | None = None) -> "Graph":
        """The graph ``d`` (as :meth:`to_json` writes it) describes, its parameters from
        ``arrays`` (``node/slot`` keys, as :meth:`arrays`). Everything is checked before it
        is used (:func:`hwmap.graph_json.check_graph_json`): the schema, every parameter array present with
        the declared shape and dtype (and none left over), tensor sizes within the memory
        bound, and the graph well formed (:meth:`validate`). A :class:`GraphError` naming
        ``where`` for the first problem."""
        check_graph_json(d, arrays, where)
        tensors = {t["name"]: Tensor.from_json(t) for t in d["tensors"]}
        graph = cls(d["name"], list(d["inputs"]), list(d["outputs"]),
                    [Node.from_json(n, arrays) for n in d["nodes"]], tensors, d.get("meta", {}))
        try:
            return graph.validate()
        except HwmapError as e:  # a GraphError, or an op no one knows
            raise GraphError(str(e), where=where) from None
        except _ATTRIBUTE_ERRORS as e:  # an op's shape inference choking on attributes of the wrong type
            raise GraphError(f"a node's attributes do not fit its op: {type(e).__name__}: {e}", where=where) from None

    @classmethod
    def load(cls, directory: str | Path) -> "Graph":
        """The graph :meth:`save` wrote into ``directory``: ``graph.json`` (a regular file,
        not a symbolic link, its size and nesting bounded: :func:`hwmap.safeio.read_json`)
        and ``params.npz`` (:func:`hwmap.safeio.load_npz`), checked as :meth:`from_json`
        says."""
        from .safeio import load_npz as safe_load
        from .safeio import open_member, read_json

        directory = Path(directory)
        where = str(directory / "graph.json")
        d = read_json(directory / "graph.json", what="graph file", error=GraphError)
        with open_member(directory, "params.npz", what="graph parameters file", error=GraphError) as f:
            arrays = safe_load(f, where=str(directory / "params.npz"), error=GraphError)
        return cls.from_json(d, arrays, where=where)


#: What an op's shape inference raises on attributes of the wrong type or value.
_ATTRIBUTE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
                     RecursionError)


def _itemsize(dtype: str) -> int:
    try:
        return int(np.dtype(dtype).itemsize) or 1
    except TypeError:  # a dtype numpy does not know (bfloat16): as float32
        return 4


def _refuse_nonfinite(a: Any, what: str, error: Callable[..., HwmapError], where: str | None) -> None:
    nans, infs, _ = count_nonfinite(a)
    if nans or infs:
        raise error(f"{what} holds {describe_nonfinite(nans, infs)}; parameters must be finite", where=where)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` whose bytes depend on the arrays only:
    members sorted by key, no pickles, a fixed zip date (``np.savez`` stores the time)."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it 1-d)
            np.lib.format.write_array(buf, np.require(arrays[key], requirements="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())



def load_npz(source: Any, where: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (a path, bytes or a binary file object), by key: numbers
    and booleans only, every declared size checked against the memory limit before
    anything is allocated (:func:`hwmap.safeio.load_npz`). Raises
    :class:`~hwmap.errors.DataError` naming ``where``."""
    from .safeio import load_npz as safe_load

    return safe_load(source, where=where)
