"""The neutral graph under construction while the ONNX frontend converts a model.

:class:`GraphBuilder` holds the state of one conversion and the primitives every step uses:
constants known at parse time (:class:`Const`), aliases left by removed pass-through nodes
(with path compression), how many node inputs read each tensor, unique node names, lookups in
hwmap's op registry, declaring tensors, adding nodes, turning a constant into a ``Constant``
node where a tensor is needed, and the output shapes of a node (ONNX shape inference first,
hwmap's own op inference where ONNX left a dimension open). Unsupported ops and shapes that
cannot be found are collected, not raised, so the caller reports them all at once, or (with
``allow_unknown``) keeps the unsupported nodes as unknown nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import HwmapError, ModelError, UnsupportedOpError
from ..graph import Node, QuantAnnotation, Tensor
from ._onnx_read import default_opset, plain


@dataclass
class Const:
    """A constant value known at parse time, with its quantization when it was quantized."""

    value: np.ndarray
    quant: QuantAnnotation | None = None
    origin: str | None = None  # the ONNX Constant node's name, reused if it becomes a node


def copy_quant(q: QuantAnnotation) -> QuantAnnotation:
    """An independent copy (each node or tensor owns its annotation's arrays)."""
    return q.copy()


class GraphBuilder:
    """The state of one conversion and the graph-building primitives its passes share."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int | None, ...] | None],
                 dtypes: dict[str, str], where: str, allow_unknown: bool = False) -> None:
        self.model = model
        self.g = model.graph
        self.opset = default_opset(model)
        self.onnx_shapes = shapes
        self.dtypes = dtypes
        self.where = where
        self.consts: dict[str, Const] = {}
        self.alias: dict[str, str] = {}
        self.readers: dict[str, int] = {}  # tensor -> number of node input slots reading it
        self.consumers: dict[str, list[int]] = {}  # tensor -> ONNX node indices reading it
        self.outputs = [o.name for o in self.g.output]
        self.output_set = set(self.outputs)
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # resolved, concrete
        self.producer: dict[str, Node] = {}
        self.used_names: set[str] = set()
        self.skip: set[int] = set()  # ONNX node indices already handled (folded DQs)
        self.const_nodes: set[str] = set()  # constants already emitted as Constant nodes
        self.claimed: set[str] = set()  # Constant node names already given to a node
        self.unsupported: list[str] = []
        self.allow_unknown = allow_unknown
        self.unknown_ops: dict[str, str] = {}  # node name -> why hwmap cannot count it
        self.shape_errors: list[str] = []
        self._opdefs: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------
    def err(self, message: str) -> ModelError:
        return ModelError(message, where=self.where)

    def resolve(self, t: str) -> str:
        """The tensor ``t`` names after following the aliases left by removed nodes."""
        seen = []
        while t in self.alias:
            seen.append(t)
            t = self.alias[t]
        for s in seen[:-1]:  # path compression keeps later lookups O(1)
            self.alias[s] = t
        return t

    def set_alias(self, name: str, target: str, removed_reader: str | None) -> None:
        """Consumers of ``name`` read ``target`` instead; the removed node read ``removed_reader``."""
        self.alias[name] = target
        self.readers[target] = self.readers.get(target, 0) + self.readers.get(name, 0)
        if removed_reader is not None:
            self.readers[removed_reader] = self.readers.get(removed_reader, 0) - 1

    def unique(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ... if taken; the name is reserved."""
        name, k = base, 1
        while name in self.used_names:
            name = f"{base}_{k}"
            k += 1
        self.used_names.add(name)
        return name

    def opdef(self, op: str) -> Any:
        """hwmap's OpDef for ``op`` or ``None`` if the registry does not know it."""
        if op not in self._opdefs:
            from ..ops import get_op

            try:
                self._opdefs[op] = get_op(op)
            except UnsupportedOpError:
                self._opdefs[op] = None
        return self._opdefs[op]

    def dtype_of(self, t: str, fallback: str = "float32") -> str:
        return self.dtypes.get(t, fallback)

    def const(self, t: str) -> Const | None:
        """The constant value of tensor ``t`` (after aliases), or ``None`` if it is not constant."""
        return self.consts.get(self.resolve(t)) if t else None

    # -- tensors and nodes -----------------------------------------------------------------
    def declare(self, t: str, shape: tuple[int, ...], dtype: str) -> None:
        self.tensors[t] = Tensor(t, shape, dtype)
        self.shapes[t] = shape

    def declare_like(self, t: str, src: str) -> None:
        """Declare ``t`` with the shape and dtype of ``src`` (a placeholder if that is unknown:
        the error that made it unknown is reported before the graph is built)."""
        if src in self.shapes:
            self.declare(t, self.shapes[src], self.tensors[src].dtype)
        else:
            self.tensors[t] = Tensor(t, (), self.tensors[src].dtype if src in self.tensors else "float32")

    def add_node(self, node: Node) -> None:
        self.nodes.append(node)
        for t in node.outputs:
            self.producer[t] = node

    def emit_constant(self, const_name: str, out: str | None = None) -> str:
        """A Constant node producing ``out`` (default: the constant's own name)."""
        out = out or const_name
        if out in self.const_nodes:
            return out
        c = self.consts[const_name]
        if c.origin is not None and c.origin not in self.claimed:
            node_name = c.origin  # reserved for it by node_names()
        else:
            node_name = self.unique(out)
        self.claimed.add(node_name)
        node = Node(node_name, "Constant", [], [out], {}, {"value": plain(c.value).copy()})
        if c.quant is not None:
            node.param_quant["value"] = copy_quant(c.quant)
        self.const_nodes.add(out)
        dtype = str(plain(c.value).dtype)
        self.declare(out, tuple(c.value.shape), dtype)
        self.add_node(node)
        self.check_supported(node, "Constant")
        return out

    def check_supported(self, node: Node, label: str) -> bool:
        """Whether hwmap's op registry knows ``node.op``; if not, the node is recorded as unsupported."""
        if self.opdef(node.op) is None:
            self.record_unsupported(node, label, f"op {node.op!r} is not known to hwmap")
            return False
        return True

    def record_unsupported(self, node: Node, label: str, reason: str) -> None:
        """``node`` cannot be converted: an error at the end, or an unknown node (``allow_unknown``)."""
        self.unsupported.append(f"{node.name} ({label})")
        self.unknown_ops[node.name] = reason

    def resolve_output_shapes(self, node: Node, supported: bool) -> None:
        """Concrete shapes for ``node.outputs``: ONNX inference first, hwmap's op inference
        where ONNX left a dimension open."""
        ours: list[Any] | None = None
        in_shapes = [self.shapes.get(t) for t in node.inputs]
        if supported and all(s is not None for s in in_shapes):
            try:
                ours = self.opdef(node.op).infer(node, in_shapes)
            except HwmapError:
                ours = None
            except Exception:  # the op's inference cannot handle these operands: no fallback
                ours = None
        first_in = node.inputs[0] if node.inputs else None
        for k, t in enumerate(node.outputs):
            onnx_shape = self.onnx_shapes.get(t)
            shape: tuple[int, ...] | None = None
            if onnx_shape is not None and all(d is not None for d in onnx_shape):
                shape = tuple(int(d) for d in onnx_shape if d is not None)
            elif ours is not None and k < len(ours) and ours[k] is not None:
                cand = tuple(int(d) for d in ours[k])
                if onnx_shape is None or (len(onnx_shape) == len(cand)
                                          and all(a is None or a == b for a, b in zip(onnx_shape, cand))):
                    shape = cand
            dtype = self.dtype_of(t, self.dtype_of(first_in) if first_in else "float32")
            if shape is None:
                if supported and all(s is not None for s in in_shapes):
                    known = "unknown rank" if onnx_shape is None else \
                        "[" + ", ".join("?" if d is None else str(d) for d in onnx_shape) + "]"
                    self.shape_errors.append(f"cannot determine the shape of tensor {t!r} (output of node "
                                             f"{node.name!r} ({node.op}), {known})")
                self.tensors[t] = Tensor(t, (), dtype)  # placeholder; an error is raised before use
                continue
            self.declare(t, shape, dtype)

    def rename_output(self, old: str, new: str) -> None:
        """The producer of tensor ``old`` produces ``new`` instead (shape, dtype, quant and
        reader count move with it)."""
        node = self.producer.pop(old)
        node.outputs = [new if t == old else t for t in node.outputs]
        self.producer[new] = node
        tensor = self.tensors.pop(old)
        self.tensors[new] = Tensor(new, tensor.shape, tensor.dtype, tensor.quant)
        if old in self.shapes:
            self.shapes[new] = self.shapes.pop(old)
        self.readers[new] = self.readers.get(new, 0) + self.readers.pop(old, 0)

