"""The ONNX frontend's node pass: ONNX nodes, in topological order, into neutral graph nodes.

One pass with producer/consumer maps built once, so the cost is linear in the number of
nodes. Constant operands go into ``params`` under their ONNX schema slot name (for variadic
ops they become ``Constant`` nodes, so every operand is a tensor); ONNX attribute defaults are
written out, ``auto_pad`` becomes explicit ``pads``; Identity and inference Dropout disappear;
quantizers are handed to :mod:`hwmap.frontends._onnx_quant`; node names are the ONNX names made
unique. Ops hwmap's registry does not know, and output shapes that cannot be found, are
reported all at once at the end; with ``allow_unknown`` nodes of unknown ops are kept instead
(:meth:`Converter.unknown_nodes`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx

from ..errors import UnsupportedOpError
from ..graph import Graph, Node
from ._onnx_builder import Const, GraphBuilder, copy_quant
from ._onnx_quant import (QONNX_DOMAINS, dequantize_const, qonnx_bipolar_quant, qonnx_quant, qonnx_trunc,
                          quantize_linear)
from ._onnx_read import DEFAULT_DOMAINS, attr_value, constant_value, plain, sparse_to_array, to_array

# Ops taking any number of operands: a constant operand stays a tensor (a Constant node).
_VARIADIC = {"Concat", "Sum", "Max", "Min", "Mean"}
_CONV_POOL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}


class Converter(GraphBuilder):
    """One pass over the ONNX nodes in topological order, building the neutral graph."""

    # -- driver ----------------------------------------------------------------------------
    def run(self, graph_name: str) -> Graph:
        """Convert the whole model into a Graph named ``graph_name`` (not yet validated)."""
        g = self.g
        for t in g.initializer:
            self.consts[t.name] = Const(to_array(t, f"initializer {t.name!r}", self.where))
        for sp in g.sparse_initializer:
            self.consts[sp.values.name] = Const(sparse_to_array(sp, f"initializer {sp.values.name!r}", self.where))
        onnx_nodes = list(g.node)
        names = self.node_names(onnx_nodes)
        # Constant nodes have no inputs, so their values are known before the pass (a DQ
        # scale may come from a Constant placed after the QuantizeLinear that needs it).
        for i, n in enumerate(onnx_nodes):
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and len(n.output) == 1:
                what = f"node {names[i]!r} (Constant)"
                self.consts[n.output[0]] = Const(constant_value(n, what, self.where), origin=names[i])
            for t in n.input:
                if t:
                    self.readers[t] = self.readers.get(t, 0) + 1
                    self.consumers.setdefault(t, []).append(i)

        self.inputs = [vi.name for vi in g.input if vi.name not in self.consts]
        for t in self.inputs:
            shp = self.onnx_shapes.get(t)
            if shp is None or any(d is None for d in shp):
                raise self.err(f"graph input {t!r} has no concrete shape")
            self.declare(t, tuple(int(d) for d in shp if d is not None), self.dtype_of(t))

        for i, n in enumerate(onnx_nodes):
            if i in self.skip:
                continue
            self.convert(n, names[i])

        for t in self.outputs:
            r = self.resolve(t)
            if r in self.consts and t not in self.producer and t not in self.tensors:
                self.emit_constant(r, out=t)
        if self.unsupported and not self.allow_unknown:
            raise UnsupportedOpError(
                f"{len(self.unsupported)} node(s) use ops hwmap does not support: " + ", ".join(self.unsupported),
                where=self.where)
        if self.shape_errors:
            more = f" (and {len(self.shape_errors) - 1} more)" if len(self.shape_errors) > 1 else ""
            raise self.err(self.shape_errors[0] + more)
        for t in self.outputs:
            if t not in self.tensors:
                raise self.err(f"graph output {t!r} is not produced by any node")
        return Graph(graph_name, list(self.inputs), list(self.outputs), self.nodes, self.tensors)

    def unknown_nodes(self) -> list[dict[str, Any]]:
        """The unknown nodes of the converted graph, in graph order, as ``Graph.meta`` lists them
        (:data:`hwmap.parsing.UNKNOWN_NODES_KEY`): the nodes of ops hwmap does not know, and
        every node reading a tensor whose shape is unknown because such a node produced it.
        ``unshaped`` names the outputs whose shape ONNX shape inference did not find (they are
        declared with the placeholder shape ``()``)."""
        out = []
        for node in self.nodes:
            if node.name in self.unknown_ops:
                cause, reason = "unknown_op", self.unknown_ops[node.name]
            else:
                unshaped_in = [t for t in node.inputs if t not in self.shapes]
                if not unshaped_in:
                    continue
                cause = "unknown_shape"
                reason = f"the shape of its input {unshaped_in[0]!r} is unknown (it follows an unknown op)"
            out.append({"node": node.name, "op": node.op, "cause": cause, "reason": reason,
                        "unshaped": [t for t in node.outputs if t not in self.shapes]})
        return out

    def node_names(self, onnx_nodes: Sequence[onnx.NodeProto]) -> list[str]:
        """Unique node names: the ONNX name when it has one (first holder keeps it), else
        ``<op_type>_<index in the ONNX graph>``; clashes get ``_1``, ``_2``, ... appended."""
        names: list[str | None] = []
        for n in onnx_nodes:
            if n.name and n.name not in self.used_names:
                self.used_names.add(n.name)
                names.append(n.name)
            else:
                names.append(None)
        for i, n in enumerate(onnx_nodes):
            if names[i] is None:
                names[i] = self.unique(n.name or f"{n.op_type or 'node'}_{i}")
        return [str(x) for x in names]

    def convert(self, n: onnx.NodeProto, name: str) -> None:
        """Convert one ONNX node: elided, folded into a quantization annotation, or emitted."""
        domain, op = n.domain, n.op_type
        if domain in DEFAULT_DOMAINS:
            if op == "Constant":
                return  # value already known; emitted only where a tensor is needed
            if op in ("Identity", "Dropout") and self.elide(n, name):
                return
            if op == "QuantizeLinear" and quantize_linear(self, n, name):
                return
            if op == "DequantizeLinear" and dequantize_const(self, n, name):
                return
            self.emit(n, name, op)
        elif domain in QONNX_DOMAINS and op in ("Quant", "IntQuant"):
            qonnx_quant(self, n, name)
        elif domain in QONNX_DOMAINS and op == "BipolarQuant":
            qonnx_bipolar_quant(self, n, name)
        elif domain in QONNX_DOMAINS and op == "Trunc":
            qonnx_trunc(self, n, name)
        else:
            self.emit(n, name, f"{domain}:{op}", foreign=True)

    # -- generic conversion ----------------------------------------------------------------
    def emit(self, n: onnx.NodeProto, name: str, op: str, foreign: bool = False) -> Node:
        """``n`` as a neutral node of op ``op`` (``foreign``: a non-default domain, no ONNX schema)."""
        what = f"node {name!r} ({op})"
        schema = None
        if not foreign:
            try:
                schema = onnx.defs.get_schema(n.op_type, self.opset, "")
            except Exception:
                schema = None
        slots = [p.name for p in schema.inputs] if schema is not None else []
        variadic = op in _VARIADIC or schema is None or any(
            p.option == onnx.defs.OpSchema.FormalParameterOption.Variadic for p in schema.inputs)
        node = Node(name, op, [], [])
        provided: set[str] = set()
        dynamic_slots: list[str] = []
        for j, raw in enumerate(n.input):
            if not raw:
                continue
            if not variadic and j >= len(slots):
                raise self.err(f"{what}: has {len(n.input)} inputs, its schema has {len(slots)}")
            t = self.resolve(raw)
            c = self.consts.get(t)
            if not variadic:
                provided.add(slots[j])
            if c is not None and not variadic:
                node.params[slots[j]] = plain(c.value).copy()
                if c.quant is not None:
                    node.param_quant[slots[j]] = copy_quant(c.quant)
                continue
            if c is not None:
                t = self.emit_constant(t)
            if not variadic:
                dynamic_slots.append(slots[j])
            node.inputs.append(t)
        has_subgraph = False
        for a in n.attribute:
            kind, value = attr_value(a, what, self.where)
            if kind == "attr":
                node.attrs[a.name] = value
            elif kind == "param":
                node.params[a.name] = plain(value)
            elif kind == "params":
                for k, v in enumerate(value):
                    node.params[f"{a.name}_{k}"] = plain(v)
            else:
                has_subgraph = True
        if schema is not None:
            self.fill_defaults(node, schema, provided, what)
        if not variadic:
            # Dynamic inputs fill the slots not in params, in schema order (graph.py).
            free = [s for s in slots if s not in node.params]
            if free[:len(dynamic_slots)] != dynamic_slots:
                raise self.err(f"{what}: tensor inputs {dynamic_slots} follow an empty optional input; "
                               "hwmap cannot represent this")
        outs = list(n.output)
        while outs and not outs[-1]:
            outs.pop()
        node.outputs = [o or f"{name}:unused_{k}" for k, o in enumerate(outs)]
        if has_subgraph:
            self.record_unsupported(node, f"{op}: subgraph attributes",
                                    f"op {op!r} has subgraph attributes, which hwmap does not read")
            supported = False
        else:
            supported = self.check_supported(node, op)
        self.resolve_output_shapes(node, supported)
        self.add_node(node)
        return node

    def fill_defaults(self, node: Node, schema: Any, provided: set[str], what: str) -> None:
        """Write out every ONNX attribute default, then the rank-dependent conv/pool ones."""
        for key, a in schema.attributes.items():
            if key in node.attrs or not a.default_value.name:
                continue
            kind, value = attr_value(a.default_value, what, self.where)
            if kind == "attr":
                node.attrs[key] = value
        if node.op in _CONV_POOL:
            self.conv_pool_defaults(node, what)
        elif node.op == "Clip":
            # ONNX: min/max default to the lowest/highest value of the element type.
            if node.inputs and "input" in provided:
                dt = np.dtype(self.dtype_of(node.inputs[0]))
                if dt.kind in "fiu":
                    info = np.finfo(dt) if dt.kind == "f" else np.iinfo(dt)
                    for slot, v in (("min", info.min), ("max", info.max)):
                        if slot not in provided:
                            node.params[slot] = np.array(v, dtype=dt)

    def conv_pool_defaults(self, node: Node, what: str) -> None:
        """Explicit kernel_shape, strides, pads, dilations (and auto_pad resolved into pads).

        SAME padding follows the ONNX Conv/Pool spec: output = ceil(in / stride), total
        padding = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - in), the odd unit at
        the end for SAME_UPPER and at the beginning for SAME_LOWER. ConvTranspose follows its
        own spec formula (total = stride * (in - 1) + output_padding + (k - 1) * d + 1 - out).
        """
        a = node.attrs
        x_shape = self.shapes.get(node.inputs[0]) if node.inputs else None
        if "kernel_shape" not in a and node.op in ("Conv", "ConvTranspose"):
            w = node.params.get("W")
            w_shape = tuple(w.shape) if w is not None else (
                self.shapes.get(node.inputs[1]) if len(node.inputs) > 1 else None)
            if w_shape is None or len(w_shape) < 3:
                raise self.err(f"{what}: cannot determine kernel_shape (weight shape unknown)")
            a["kernel_shape"] = [int(d) for d in w_shape[2:]]
        if "kernel_shape" in a:
            k = len(a["kernel_shape"])
        elif x_shape is not None and len(x_shape) > 2:
            k = len(x_shape) - 2
        else:
            raise self.err(f"{what}: cannot determine the number of spatial dimensions")
        a.setdefault("strides", [1] * k)
        a.setdefault("dilations", [1] * k)
        a.setdefault("pads", [0] * (2 * k))
        if node.op == "ConvTranspose":
            a.setdefault("output_padding", [0] * k)
        for key, n_expected in (("strides", k), ("dilations", k), ("pads", 2 * k)):
            if len(a[key]) != n_expected:
                raise self.err(f"{what}: attribute {key} has {len(a[key])} values, expected {n_expected}")
        auto_pad = a.pop("auto_pad", "NOTSET")
        output_shape = a.pop("output_shape", None) if node.op == "ConvTranspose" else None
        if auto_pad in ("NOTSET", "") and output_shape is None:
            return
        if auto_pad == "VALID":
            a["pads"] = [0] * (2 * k)
            return
        if auto_pad not in ("SAME_UPPER", "SAME_LOWER", "NOTSET", ""):
            raise self.err(f"{what}: unknown auto_pad {auto_pad!r}")
        if x_shape is None and self.allow_unknown and node.inputs and node.inputs[0] in self.tensors:
            a["auto_pad"] = auto_pad  # after an unknown op: kept as written, the node is not counted
            if output_shape is not None:
                a["output_shape"] = output_shape
            return
        if x_shape is None or len(x_shape) != k + 2 or "kernel_shape" not in a:
            raise self.err(f"{what}: auto_pad {auto_pad} needs the input shape, which is unknown")
        begins, ends = [], []
        for i in range(k):
            n_in, s, d, kk = x_shape[2 + i], a["strides"][i], a["dilations"][i], a["kernel_shape"][i]
            if node.op == "ConvTranspose":
                out = int(output_shape[-k + i]) if output_shape else n_in * s
                total = s * (n_in - 1) + a["output_padding"][i] + (kk - 1) * d + 1 - out
                if total < 0:
                    raise self.err(f"{what}: output_shape {output_shape} needs negative padding")
                upper_first = auto_pad == "SAME_UPPER"
                begin = total // 2 if upper_first else total - total // 2
            else:
                if s <= 0:
                    raise self.err(f"{what}: strides must be positive")
                out = -(-n_in // s)
                total = max(0, (out - 1) * s + (kk - 1) * d + 1 - n_in)
                begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            begins.append(int(begin))
            ends.append(int(total - begin))
        a["pads"] = begins + ends

    # -- Identity / Dropout ----------------------------------------------------------------
    def elide(self, n: onnx.NodeProto, name: str) -> bool:
        """Remove Identity and inference Dropout by rewiring consumers to the input.

        A node whose output is a graph output is kept (as Identity) so output names stay.
        """
        if not n.input or not n.input[0] or not n.output:
            return False
        if n.op_type == "Dropout":
            mask = n.output[1] if len(n.output) > 1 else ""
            if mask and (self.readers.get(mask, 0) or mask in self.output_set):
                return False  # the mask is used: not a plain pass-through
        src = self.resolve(n.input[0])
        out = n.output[0]
        if out in self.output_set:
            if src in self.consts:
                self.emit_constant(src, out=out)
                return True
            node = Node(name, "Identity", [src], [out])
            supported = self.check_supported(node, "Identity")
            self.resolve_output_shapes(node, supported)
            self.add_node(node)
            return True
        self.set_alias(out, src, src)
        return True
