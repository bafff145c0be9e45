"""The ONNX frontend: an ``.onnx`` file (opset 13+) into a neutral :class:`~hwmap.graph.Graph`.

Registered as a built-in ``hwmap_parse`` plugin. The conversion, in order:

1. read and check: the protobuf is parsed, external data is accepted only inside the model's
   own folder, ``onnx.checker`` runs, models older than opset 13 go through the ONNX version
   converter;
2. shapes: a symbolic batch dimension of a graph input is fixed to ``ParseOptions.batch``,
   ONNX shape inference (with data propagation) runs, and hwmap's own op shape inference
   fills what ONNX leaves open;
3. nodes, in the model's (topological) order, in one pass with producer/consumer maps built
   once so the cost is linear in the number of nodes: constant operands go into ``params``
   under their ONNX schema slot name, ONNX attribute defaults are written out, ``auto_pad``
   becomes explicit ``pads``, Identity and inference Dropout disappear, and quantization
   (ONNX ``QuantizeLinear``/``DequantizeLinear``, QONNX ``Quant``/``IntQuant``) becomes
   :class:`~hwmap.graph.QuantAnnotation` s on tensors and parameters;
4. every op is checked against hwmap's op registry; all offenders are reported at once.

Every failure on bad input is a :class:`~hwmap.errors.ModelError` (or its subclass
:class:`~hwmap.errors.UnsupportedOpError`) whose one-line message names the file and the
tensor or node; no onnx or protobuf exception escapes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..errors import GraphError, HwmapError, ModelError, UnsupportedOpError
from ..graph import Graph, Node, QuantAnnotation, Tensor
from ..hookspecs import hookimpl
from ..source import ParseOptions

__all__ = ["hwmap_parse", "graph_from_onnx", "MIN_OPSET", "QONNX_DOMAINS"]

#: Oldest default-domain opset read directly; older models go through the version converter.
MIN_OPSET = 13
#: Domains of the QONNX custom ops (FINN used the second one before QONNX split off).
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
_DEFAULT_DOMAINS = ("", "ai.onnx")
# Ops taking any number of operands: a constant operand stays a tensor (a Constant node).
_VARIADIC = {"Concat", "Sum", "Max", "Min", "Mean"}
# A sparse tensor is densified into a parameter; refuse shapes no edge model has (2^28 values).
_MAX_DENSE_ELEMENTS = 2**28
_CONV_POOL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
# Quantized element types: (bits, signed). Codes of these types dequantize to real values.
_QTYPES = {
    "int8": (8, True), "uint8": (8, False), "int16": (16, True), "uint16": (16, False),
    "int4": (4, True), "uint4": (4, False), "int32": (32, True),
}


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Parse ``source`` if it is a path ending in ``.onnx``; ``None`` otherwise."""
    if not isinstance(source, str) or not source.lower().endswith(".onnx"):
        return None
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError("no such file", where=source) from None
    except OSError as e:
        raise ModelError(f"cannot read file: {e.strerror or e}", where=source) from None
    return graph_from_onnx(data, name=path.stem, options=options, base_dir=path.parent, where=source)


def graph_from_onnx(
    model: onnx.ModelProto | bytes,
    *,
    name: str,
    options: ParseOptions,
    base_dir: Path | None = None,
    where: str | None = None,
) -> Graph:
    """Convert an ONNX model (a ``ModelProto`` or its serialized bytes) into a validated Graph.

    ``name`` names the graph unless ``options.name`` is set; ``base_dir`` is the folder
    external data files must live in (a model with external data and no ``base_dir`` is
    refused); ``where`` is what error messages name (default: the model's name). The
    caller's ``ModelProto`` is not modified.
    """
    where = where or f"ONNX model {name!r}"
    proto = _read(model, where)
    _check_external_data(proto, base_dir, where)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if base_dir is not None and _has_external_data(proto):
            _onnx_call(lambda: onnx.load_external_data_for_model(proto, str(base_dir)),
                       "cannot load external data", where)
        # After loading: the checker would otherwise look for external files relative to
        # the working directory.
        _onnx_call(lambda: onnx.checker.check_model(proto, full_check=False), "ONNX checker rejected the model", where)
        proto, original_opset = _upgrade_opset(proto, where)
        _fix_input_shapes(proto, options, where)
        inferred = _infer_shapes(proto)
    shapes, dtypes = _collect_types(inferred)
    try:
        graph = _Converter(proto, shapes, dtypes, where).run(options.name or name)
    except HwmapError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, MemoryError) as e:
        # A malformed model that got past the checker (inconsistent tensor data, ...).
        raise ModelError(f"cannot convert: {type(e).__name__}: {_one_line(e)}", where=where) from None
    graph.meta = {
        "source_format": "onnx",
        "opset": _default_opset(proto),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
    }
    if original_opset != graph.meta["opset"]:
        graph.meta["converted_from_opset"] = original_opset
    try:
        return graph.validate()
    except GraphError as e:
        raise ModelError(f"converted graph is inconsistent: {e}", where=where) from None
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as e:
        # an op's shape inference choking on a malformed (but ONNX-checked) model
        raise ModelError(f"converted graph is inconsistent: {type(e).__name__}: {_one_line(e)}",
                         where=where) from None


# ---------------------------------------------------------------------------------------
# reading and checking
# ---------------------------------------------------------------------------------------
def _read(model: onnx.ModelProto | bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    if isinstance(model, onnx.ModelProto):
        proto.CopyFrom(model)
        return proto
    if not isinstance(model, (bytes, bytearray, memoryview)):
        raise ModelError(f"expected an ONNX ModelProto or bytes, got {type(model).__name__}", where=where)
    if len(model) == 0:
        raise ModelError("empty file, not an ONNX model", where=where)
    try:
        proto.ParseFromString(bytes(model))
    except Exception:  # google.protobuf DecodeError and friends: not a protobuf at all
        raise ModelError("not an ONNX model (cannot be decoded as an ONNX protobuf; truncated or corrupt?)",
                         where=where) from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelError("not an ONNX model (no graph, IR version or opset in the protobuf)", where=where)
    return proto


def _onnx_call(fn: Any, what: str, where: str) -> Any:
    """Run an onnx library call; any exception it raises becomes one ModelError line."""
    try:
        return fn()
    except HwmapError:
        raise
    except Exception as e:  # onnx raises ValidationError, SchemaError, RuntimeError, ValueError...
        raise ModelError(f"{what}: {_one_line(e)}", where=where) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _all_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every TensorProto of a graph: initializers, sparse ones, attribute tensors, subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR:
                yield a.t
            elif a.type == AttributeProto.TENSORS:
                yield from a.tensors
            elif a.type == AttributeProto.SPARSE_TENSOR:
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            elif a.type == AttributeProto.GRAPH:
                yield from _all_tensors(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for sub in a.graphs:
                    yield from _all_tensors(sub)


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in _all_tensors(model.graph))


def _check_external_data(model: onnx.ModelProto, base_dir: Path | None, where: str) -> None:
    """Accept external data only when every file resolves inside the model's own folder.

    Absolute locations, ``..`` escapes and symlinks pointing elsewhere are refused before
    any file is opened, so a model cannot make hwmap read arbitrary files.
    """
    root: Path | None = None
    for t in _all_tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if base_dir is None:
            raise ModelError(f"tensor {t.name!r} keeps its data in external file {location!r}, but the model "
                             "was given without its folder", where=where)
        if root is None:
            root = Path(base_dir).resolve()
        bad = (not location or "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\"))
               or (len(location) > 1 and location[1] == ":"))
        target = None if bad else (root / location).resolve()
        if target is None or not target.is_relative_to(root):
            raise ModelError(f"tensor {t.name!r}: external data location {location!r} is outside the model's "
                             f"folder {str(root)!r}; refused", where=where)
        if not target.is_file():
            raise ModelError(f"tensor {t.name!r}: external data file {location!r} not found in {str(root)!r}",
                             where=where)


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    return 0


def _upgrade_opset(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, int]:
    opset = _default_opset(model)
    if opset == 0:
        raise ModelError("the model imports no default-domain (ai.onnx) opset", where=where)
    if opset >= MIN_OPSET:
        return model, opset
    from onnx import version_converter

    converted = _onnx_call(lambda: version_converter.convert_version(model, MIN_OPSET),
                           f"opset {opset} is older than {MIN_OPSET} and the ONNX version converter failed", where)
    if _default_opset(converted) < MIN_OPSET:
        raise ModelError(f"opset {opset} could not be converted to opset {MIN_OPSET}", where=where)
    return converted, opset


def _fix_input_shapes(model: onnx.ModelProto, options: ParseOptions, where: str) -> None:
    """Make graph-input shapes concrete before shape inference so they propagate.

    A symbolic or missing first dimension is the batch: it becomes ``options.batch``. With
    ``options.input_shape`` and a single graph input, that shape fills the symbolic dims
    (concrete dims must agree). Any other symbolic dimension is an error naming the input.
    """
    init = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in init]
    wanted = tuple(options.input_shape) if options.input_shape is not None and len(inputs) == 1 else None
    for vi in inputs:
        if vi.type.WhichOneof("value") != "tensor_type":
            raise ModelError(f"graph input {vi.name!r} is not a tensor", where=where)
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise ModelError(f"graph input {vi.name!r} has no shape; hwmap needs concrete input shapes", where=where)
        dims = tt.shape.dim
        if wanted is not None and len(wanted) != len(dims):
            raise ModelError(f"input shape {list(wanted)} does not match the rank {len(dims)} of graph input "
                             f"{vi.name!r}", where=where)
        for i, d in enumerate(dims):
            known = d.HasField("dim_value") and d.dim_value > 0
            if wanted is not None:
                if known and d.dim_value != wanted[i]:
                    raise ModelError(f"input shape {list(wanted)} does not match graph input {vi.name!r} of shape "
                                     f"{_dims_text(dims)}", where=where)
                d.dim_value = int(wanted[i])
            elif not known:
                if i == 0:
                    if int(options.batch) < 1:
                        raise ModelError(f"batch must be at least 1, got {options.batch}", where=where)
                    d.dim_value = int(options.batch)
                else:
                    raise ModelError(f"graph input {vi.name!r} has symbolic dimension {i} "
                                     f"({d.dim_param or '?'}) in shape {_dims_text(dims)}; give a concrete "
                                     "input shape", where=where)


def _dims_text(dims: Any) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        # Non-strict inference rarely raises; if it does, hwmap's own op inference still
        # fills the shapes below, and a shape it cannot find is reported by tensor name.
        return model


def _collect_types(model: onnx.ModelProto) -> tuple[dict[str, tuple[int | None, ...] | None], dict[str, str]]:
    """Tensor name -> shape (``None`` for unknown dims, or ``None`` for unknown rank), dtype."""
    shapes: dict[str, tuple[int | None, ...] | None] = {}
    dtypes: dict[str, str] = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.WhichOneof("value") != "tensor_type":
            continue
        tt = vi.type.tensor_type
        if tt.elem_type:
            dt = _np_dtype_name(tt.elem_type)
            if dt:
                dtypes[vi.name] = dt
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
                                    for d in tt.shape.dim)
    return shapes, dtypes


def _np_dtype_name(elem_type: int) -> str | None:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:  # an element type number onnx does not know
        return None


# ---------------------------------------------------------------------------------------
# values: tensors, attributes, quantization
# ---------------------------------------------------------------------------------------
def _to_array(t: TensorProto, what: str, where: str) -> np.ndarray:
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelError(f"{what}: cannot decode tensor data: {_one_line(e)}", where=where) from None
    if a.dtype.kind in "OSU":
        raise ModelError(f"{what}: string tensors are not supported", where=where)
    return np.array(a)  # an owned, writable copy


def _sparse_to_array(sp: onnx.SparseTensorProto, what: str, where: str) -> np.ndarray:
    values = _to_array(sp.values, what, where)
    idx = _to_array(sp.indices, what, where).astype(np.int64)
    dims = tuple(int(d) for d in sp.dims)
    if any(d < 0 for d in dims) or np.prod(dims, dtype=np.float64) > _MAX_DENSE_ELEMENTS:
        raise ModelError(f"{what}: sparse tensor of shape {list(dims)} is too large to densify", where=where)
    dense = np.zeros(dims, dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values  # linearized indices
    else:
        dense[tuple(idx.T)] = values
    return dense


def _plain(a: np.ndarray) -> np.ndarray:
    """Parameters are stored with numpy's own dtypes: int4 codes as int8, bfloat16/float8 as float32."""
    name = a.dtype.name
    if name == "int4":
        return a.astype(np.int8)
    if name == "uint4":
        return a.astype(np.uint8)
    if a.dtype.kind not in "biuf" or name not in np.sctypeDict:
        return a.astype(np.float32)
    return a


def _float32_value(v: float) -> float:
    # ONNX stores float attributes as float32: keep the shortest decimal that round-trips
    # (1e-05, not 9.999999747378752e-06) so JSON shows what the model's author wrote.
    return float(str(np.float32(v)))


def _attr_value(a: AttributeProto, what: str, where: str) -> tuple[str, Any]:
    """("attr", json value) or ("param", array) or ("graph", None) for one attribute."""
    t = a.type
    if t == AttributeProto.FLOAT:
        return "attr", _float32_value(a.f)
    if t == AttributeProto.INT:
        return "attr", int(a.i)
    if t == AttributeProto.STRING:
        return "attr", a.s.decode("utf-8", errors="replace")
    if t == AttributeProto.FLOATS:
        return "attr", [_float32_value(v) for v in a.floats]
    if t == AttributeProto.INTS:
        return "attr", [int(v) for v in a.ints]
    if t == AttributeProto.STRINGS:
        return "attr", [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == AttributeProto.TENSOR:
        return "param", _to_array(a.t, f"{what} attribute {a.name!r}", where)
    if t == AttributeProto.SPARSE_TENSOR:
        return "param", _sparse_to_array(a.sparse_tensor, f"{what} attribute {a.name!r}", where)
    if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return "graph", None
    if t == AttributeProto.TENSORS:
        return "params", [_to_array(x, f"{what} attribute {a.name!r}", where) for x in a.tensors]
    return "attr", str(helper.get_attribute_value(a))


def _constant_value(node: onnx.NodeProto, what: str, where: str) -> np.ndarray:
    """The value of an ONNX ``Constant`` node (any of its value_* attributes)."""
    for a in node.attribute:
        if a.name == "value":
            return _to_array(a.t, what, where)
        if a.name == "sparse_value":
            return _sparse_to_array(a.sparse_tensor, what, where)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name in ("value_string", "value_strings"):
            raise ModelError(f"{what}: string constants are not supported", where=where)
    raise ModelError(f"{what}: Constant node has no value", where=where)


def _per_axis(scale: np.ndarray, zero_point: np.ndarray, ndim: int | None, what: str,
              where: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale and zero point as scalars (per tensor) or 1-D along one axis of the data.

    QONNX allows any broadcastable shape (e.g. ``(C, 1, 1, 1)`` for conv weights); the
    annotation keeps the one axis along which they vary.
    """
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point, dtype=np.float64)
    if s.size == 1 and z.size == 1:
        return s.reshape(()), z.reshape(()), None
    try:
        b = np.broadcast_shapes(s.shape, z.shape)
    except ValueError:
        raise ModelError(f"{what}: scale {list(s.shape)} and zero point {list(z.shape)} do not broadcast",
                         where=where) from None
    varying = [i for i, d in enumerate(b) if d != 1]
    rank = ndim if ndim is not None else len(b)
    if len(varying) != 1 or len(b) > rank:
        raise ModelError(f"{what}: scale of shape {list(s.shape)} is neither per tensor nor per axis", where=where)
    axis = rank - len(b) + varying[0]
    return np.broadcast_to(s, b).reshape(-1).copy(), np.broadcast_to(z, b).reshape(-1).copy(), axis


def _round(x: np.ndarray, mode: str, what: str, where: str) -> np.ndarray:
    """QONNX rounding modes (qonnx docs/qonnx-custom-ops/intquant_v1.md, "Rounding modes")."""
    m = mode.upper()
    if m == "ROUND":  # half to even
        return np.round(x)
    if m == "CEIL":
        return np.ceil(x)
    if m == "FLOOR":
        return np.floor(x)
    if m == "UP":  # away from zero
        return np.sign(x) * np.ceil(np.abs(x))
    if m in ("DOWN", "ROUND_TO_ZERO"):
        return np.trunc(x)
    if m == "HALF_UP":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if m == "HALF_DOWN":
        return np.sign(x) * np.ceil(np.abs(x) - 0.5)
    raise ModelError(f"{what}: unknown rounding_mode {mode!r} (ROUND, CEIL, FLOOR, UP, DOWN, HALF_UP, HALF_DOWN)",
                     where=where)


def _qonnx_fake_quant(x: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, q: QuantAnnotation, mode: str,
                      what: str, where: str) -> np.ndarray:
    """QONNX ``IntQuant``: ``y = (round(clip(x / scale + zeropt, qmin, qmax)) - zeropt) * scale``.

    Clipping comes before rounding, as in the QONNX reference implementation
    (qonnx ``custom_op/general/intquant.py``, ``int_quant``); the bounds are integers, so
    the order does not change the result for the round-to-nearest modes.
    """
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zeropt, dtype=np.float64)
    y = np.asarray(x, dtype=np.float64) / s + z
    y = _round(np.clip(y, q.qmin, q.qmax), mode, what, where)
    return ((y - z) * s).astype(x.dtype if x.dtype.kind == "f" else np.float32)


# ---------------------------------------------------------------------------------------
# the node pass
# ---------------------------------------------------------------------------------------
@dataclass
class _Const:
    """A constant value known at parse time, with its quantization when it was quantized."""

    value: np.ndarray
    quant: QuantAnnotation | None = None
    origin: str | None = None  # the ONNX Constant node's name, reused if it becomes a node


def _copy_quant(q: QuantAnnotation) -> QuantAnnotation:
    return QuantAnnotation(q.scale.copy(), q.zero_point.copy(), q.bits, q.signed, q.axis, q.narrow)


class _Converter:
    """One pass over the ONNX nodes in topological order, building the neutral graph."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int | None, ...] | None],
                 dtypes: dict[str, str], where: str) -> None:
        self.model = model
        self.g = model.graph
        self.opset = _default_opset(model)
        self.onnx_shapes = shapes
        self.dtypes = dtypes
        self.where = where
        self.consts: dict[str, _Const] = {}
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
        self.shape_errors: list[str] = []
        self._opdefs: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------
    def err(self, message: str) -> ModelError:
        return ModelError(message, where=self.where)

    def resolve(self, t: str) -> str:
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

    def const(self, t: str) -> _Const | None:
        return self.consts.get(self.resolve(t)) if t else None

    # -- driver ----------------------------------------------------------------------------
    def run(self, graph_name: str) -> Graph:
        g = self.g
        for t in g.initializer:
            self.consts[t.name] = _Const(_to_array(t, f"initializer {t.name!r}", self.where))
        for sp in g.sparse_initializer:
            self.consts[sp.values.name] = _Const(_sparse_to_array(sp, f"initializer {sp.values.name!r}", self.where))
        onnx_nodes = list(g.node)
        names = self.node_names(onnx_nodes)
        # Constant nodes have no inputs, so their values are known before the pass (a DQ
        # scale may come from a Constant placed after the QuantizeLinear that needs it).
        for i, n in enumerate(onnx_nodes):
            if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS and len(n.output) == 1:
                what = f"node {names[i]!r} (Constant)"
                self.consts[n.output[0]] = _Const(_constant_value(n, what, self.where), origin=names[i])
            for t in n.input:
                if t:
                    self.readers[t] = self.readers.get(t, 0) + 1
                    self.consumers.setdefault(t, []).append(i)

        self.inputs = [vi.name for vi in g.input if vi.name not in self.consts]
        for t in self.inputs:
            shp = self.onnx_shapes.get(t)
            if shp is None or any(d is None for d in shp):
                raise self.err(f"graph input {t!r} has no concrete shape")
            self.declare(t, tuple(int(d) for d in shp), self.dtype_of(t))

        for i, n in enumerate(onnx_nodes):
            if i in self.skip:
                continue
            self.convert(i, n, names[i])

        for t in self.outputs:
            r = self.resolve(t)
            if r in self.consts and t not in self.producer and t not in self.tensors:
                self.emit_constant(r, out=t)
        if self.unsupported:
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

    def convert(self, i: int, n: onnx.NodeProto, name: str) -> None:
        domain, op = n.domain, n.op_type
        if domain in _DEFAULT_DOMAINS:
            if op == "Constant":
                return  # value already known; emitted only where a tensor is needed
            if op in ("Identity", "Dropout") and self.elide(n, name):
                return
            if op == "QuantizeLinear" and self.quantize_linear(i, n, name):
                return
            if op == "DequantizeLinear" and self.dequantize_const(n, name):
                return
            self.emit(n, name, op)
        elif domain in QONNX_DOMAINS and op in ("Quant", "IntQuant"):
            self.qonnx_quant(n, name)
        else:
            self.emit(n, name, f"{domain}:{op}", foreign=True)

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
        node = Node(node_name, "Constant", [], [out], {}, {"value": _plain(c.value).copy()})
        if c.quant is not None:
            node.param_quant["value"] = _copy_quant(c.quant)
        self.const_nodes.add(out)
        dtype = str(_plain(c.value).dtype)
        self.declare(out, tuple(c.value.shape), dtype)
        self.add_node(node)
        self.check_supported(node, "Constant")
        return out

    def check_supported(self, node: Node, label: str) -> bool:
        if self.opdef(node.op) is None:
            self.unsupported.append(f"{node.name} ({label})")
            return False
        return True

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
                shape = tuple(int(d) for d in onnx_shape)
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

    # -- generic conversion ----------------------------------------------------------------
    def emit(self, n: onnx.NodeProto, name: str, op: str, foreign: bool = False) -> Node:
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
                node.params[slots[j]] = _plain(c.value).copy()
                if c.quant is not None:
                    node.param_quant[slots[j]] = _copy_quant(c.quant)
                continue
            if c is not None:
                t = self.emit_constant(t)
            if not variadic:
                dynamic_slots.append(slots[j])
            node.inputs.append(t)
        has_subgraph = False
        for a in n.attribute:
            kind, value = _attr_value(a, what, self.where)
            if kind == "attr":
                node.attrs[a.name] = value
            elif kind == "param":
                node.params[a.name] = _plain(value)
            elif kind == "params":
                for k, v in enumerate(value):
                    node.params[f"{a.name}_{k}"] = _plain(v)
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
            self.unsupported.append(f"{name} ({op}: subgraph attributes)")
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
            kind, value = _attr_value(a.default_value, what, self.where)
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

    # -- ONNX QDQ --------------------------------------------------------------------------
    def qparams(self, n: onnx.NodeProto, quantized_dtype: str | None, ndim: int | None,
                what: str) -> QuantAnnotation | None:
        """The annotation of a QuantizeLinear/DequantizeLinear node with constant scale and
        zero point, or ``None`` when it cannot be folded (then the node stays a node)."""
        scale = self.const(n.input[1]) if len(n.input) > 1 else None
        zp = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None or (len(n.input) > 2 and n.input[2] and zp is None):
            return None
        attrs = {a.name: a for a in n.attribute}
        if "block_size" in attrs and attrs["block_size"].i != 0:
            return None  # blocked quantization (opset 21) has no per-tensor/per-axis form
        qdtype = str(zp.value.dtype) if zp is not None else quantized_dtype
        if qdtype not in _QTYPES:
            return None
        bits, signed = _QTYPES[qdtype]
        s = np.asarray(scale.value, dtype=np.float64)
        z = np.asarray(zp.value, dtype=np.float64) if zp is not None else np.zeros_like(s)
        if s.ndim > 1 or z.shape != s.shape:
            return None
        axis = None
        if s.ndim == 1:
            axis = int(attrs["axis"].i) if "axis" in attrs else 1
            if ndim is not None:
                if not -ndim <= axis < ndim:
                    raise self.err(f"{what}: axis {axis} out of range for a rank-{ndim} tensor")
                axis %= ndim
        return QuantAnnotation(s, z, bits, signed, axis, narrow=False)

    def quantize_linear(self, i: int, n: onnx.NodeProto, name: str) -> bool:
        what = f"node {name!r} (QuantizeLinear)"
        if not n.input or not n.input[0] or not n.output:
            return False
        x = self.resolve(n.input[0])
        out = n.output[0]
        attrs = {a.name: a for a in n.attribute}
        q_np: Any = np.dtype(np.uint8)  # ONNX default when there is no zero point
        if "output_dtype" in attrs and attrs["output_dtype"].i:
            try:
                q_np = np.dtype(helper.tensor_dtype_to_np_dtype(attrs["output_dtype"].i))
            except Exception:
                return False
        qdtype = str(q_np)
        xc = self.consts.get(x)
        ndim = xc.value.ndim if xc is not None else (len(self.shapes[x]) if x in self.shapes else None)
        q = self.qparams(n, qdtype, ndim, what)
        if q is None:
            return False
        if xc is not None:  # a float weight quantized at parse time: keep its integer codes
            zp = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            dt = zp.value.dtype if zp is not None else q_np
            codes = q.quantize(xc.value)
            self.consts[out] = _Const(codes.astype(dt))
            return True
        # An activation: fold when every reader of the codes is a matching DequantizeLinear.
        if out in self.output_set:
            return False
        dqs = self.consumers.get(out, [])
        nodes = self.g.node
        for j in dqs:
            d = nodes[j]
            if d.op_type != "DequantizeLinear" or d.domain not in _DEFAULT_DOMAINS or d.input[0] != out \
                    or not d.output:
                return False
            dq = self.qparams(d, qdtype, ndim, what)
            if dq is None or dq != q:
                return False
        if not dqs:
            return False
        self.skip.update(dqs)
        self.fold_activation_quant(x, [nodes[j].output[0] for j in dqs], q, name, keep_out_name=False)
        return True

    def dequantize_const(self, n: onnx.NodeProto, name: str) -> bool:
        """DequantizeLinear of a constant (weights, biases): a dequantized float constant
        that remembers its quantization."""
        what = f"node {name!r} (DequantizeLinear)"
        if not n.input or not n.input[0] or not n.output:
            return False
        xc = self.const(n.input[0])
        if xc is None:
            return False
        q = self.qparams(n, str(xc.value.dtype), xc.value.ndim, what)
        if q is None:
            return False
        zp = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and zp.value.dtype != xc.value.dtype:
            raise self.err(f"{what}: zero point type {zp.value.dtype} differs from data type {xc.value.dtype}")
        scale = self.const(n.input[1])
        # ONNX: the output has the scale's type; numpy lacks bfloat16, so that becomes float32.
        out_dt = scale.value.dtype if scale.value.dtype.name in ("float16", "float32", "float64") \
            else np.dtype(np.float32)
        try:
            value = q.dequantize(xc.value.astype(np.int64)).astype(out_dt)
        except ValueError as e:
            raise self.err(f"{what}: scale does not match the data: {_one_line(e)}") from None
        self.consts[n.output[0]] = _Const(value, q)
        return True

    # -- QONNX -------------------------------------------------------------------------------
    def qonnx_quant(self, n: onnx.NodeProto, name: str) -> None:
        """QONNX ``Quant``/``IntQuant`` (inputs x, scale, zeropt, bitwidth; attributes signed,
        narrow, rounding_mode; qonnx docs/qonnx-custom-ops/intquant_v1.md)."""
        op = f"{n.domain}:{n.op_type}"
        what = f"node {name!r} ({op})"
        if len(n.input) != 4 or not all(n.input) or len(n.output) != 1:
            raise self.err(f"{what}: expects inputs (x, scale, zeropt, bitwidth) and one output")
        scale, zeropt, bitwidth = (self.const(t) for t in n.input[1:])
        if scale is None or zeropt is None or bitwidth is None:
            raise self.err(f"{what}: scale, zeropt and bitwidth must be constants")
        attrs: dict[str, Any] = {}
        for a in n.attribute:
            kind, value = _attr_value(a, what, self.where)
            attrs[a.name] = value
        signed = bool(attrs.get("signed", 1))
        narrow = bool(attrs.get("narrow", 0))
        mode = str(attrs.get("rounding_mode", "ROUND"))
        bw = np.asarray(bitwidth.value, dtype=np.float64)
        if bw.size != 1 or not np.isfinite(bw).all() or float(bw.reshape(())) != int(bw.reshape(())) \
                or int(bw.reshape(())) < 1:
            raise self.err(f"{what}: bitwidth must be one positive integer, got {bw.ravel()[:4].tolist()}")
        bits = int(bw.reshape(()))
        if bits == 1 and signed:
            raise self.err(f"{what}: a signed 1-bit Quant is bipolar; hwmap does not support BipolarQuant")
        if bits > 32:
            raise self.err(f"{what}: bitwidth {bits} is above 32")
        x = self.resolve(n.input[0])
        out = n.output[0]
        xc = self.consts.get(x)
        ndim = xc.value.ndim if xc is not None else (len(self.shapes[x]) if x in self.shapes else None)
        s, z, axis = _per_axis(scale.value, zeropt.value, ndim, what, self.where)
        if np.any(s == 0) or not np.all(np.isfinite(s)):
            raise self.err(f"{what}: scale must be finite and non-zero")
        q = QuantAnnotation(s, z, bits, signed, axis, narrow)
        _round(np.zeros(1), mode, what, self.where)  # reject an unknown rounding mode early
        if xc is not None:
            try:
                value = _qonnx_fake_quant(xc.value, scale.value, zeropt.value, q, mode, what, self.where)
            except ValueError as e:
                raise self.err(f"{what}: scale/zeropt do not broadcast to the data: {_one_line(e)}") from None
            self.consts[out] = _Const(value, q)
            return
        if x not in self.tensors:
            raise self.err(f"{what}: input {x!r} is not produced by any node")
        self.fold_activation_quant(x, [out], q, name, keep_out_name=True)

    # -- activation quantization ---------------------------------------------------------------
    def fold_activation_quant(self, x: str, outs: Sequence[str], q: QuantAnnotation, name: str,
                              keep_out_name: bool) -> None:
        """Remove a quantizer on activation ``x`` whose (fake-quantized) results are ``outs``
        and put its annotation on the tensor consumers now read.

        When nothing else reads ``x`` and it is not a graph output, the annotation goes on
        ``x`` itself (QDQ) or on the quantizer's output name, which the producer of ``x``
        then produces (QONNX, ``keep_out_name``). When ``x`` is also read unquantized
        elsewhere, an Identity node carries the annotation so the two stay distinct.
        """
        self.readers[x] = self.readers.get(x, 0) - 1  # the quantizer no longer reads x
        exclusive = self.readers[x] == 0 and x not in self.output_set
        out_is_output = [o for o in outs if o in self.output_set]
        if exclusive and (keep_out_name or out_is_output) and x in self.producer:
            canon = out_is_output[0] if out_is_output else outs[0]
            self.rename_output(x, canon)
        elif exclusive and not out_is_output:
            canon = x
        else:
            canon = out_is_output[0] if out_is_output else outs[0]
            node = Node(name, "Identity", [x], [canon])  # takes the quantizer's (reserved) name
            self.check_supported(node, "Identity")
            self.declare_like(canon, x)
            self.add_node(node)
            self.readers[x] = self.readers.get(x, 0) + 1
        self.tensors[canon].quant = q
        for o in outs:
            if o == canon:
                continue
            if o in self.output_set:
                node = Node(self.unique(f"{name}_{o}"), "Identity", [canon], [o])
                self.check_supported(node, "Identity")
                self.declare_like(o, canon)
                self.tensors[o].quant = _copy_quant(q)
                self.add_node(node)
                self.readers[canon] = self.readers.get(canon, 0) + 1
            else:
                self.set_alias(o, canon, None)

    def rename_output(self, old: str, new: str) -> None:
        node = self.producer.pop(old)
        node.outputs = [new if t == old else t for t in node.outputs]
        self.producer[new] = node
        tensor = self.tensors.pop(old)
        self.tensors[new] = Tensor(new, tensor.shape, tensor.dtype, tensor.quant)
        if old in self.shapes:
            self.shapes[new] = self.shapes.pop(old)
        self.readers[new] = self.readers.get(new, 0) + self.readers.pop(old, 0)

