"""Reading an ONNX model for the ONNX frontend: the protobuf, its checks, its shapes, its values.

The model side of the conversion (:mod:`hwmap.frontends.onnx` runs these steps in order):
decoding the protobuf, refusing external data outside the model's own folder and loading the
rest, running ``onnx.checker`` and the version converter (models older than :data:`MIN_OPSET`),
fixing a symbolic batch dimension of the graph inputs, ONNX shape inference, and collecting the
inferred shapes and element types. It also decodes the values a model holds (tensors, sparse
tensors, attributes, ``Constant`` nodes) into numpy arrays and JSON values.

Every failure is a :class:`~hwmap.errors.ModelError` naming ``where``; :func:`onnx_call` turns
any exception of the onnx library into one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..errors import HwmapError, ModelError
from ..limits import check_size
from ..parsing import ParseOptions, check_input_shape

#: Oldest default-domain opset read directly; older models go through the version converter.
MIN_OPSET = 13
#: Memory one node takes once checked, shape-inferred and converted (measured with ``hwmap
#: profile`` on a chain of 100,000 Relu nodes: 436 MB peak, 3.5 KiB a node, from 30 bytes of
#: protobuf each): a model's node count is checked against the memory limit at this rate.
NODE_BYTES = 4096
DEFAULT_DOMAINS = ("", "ai.onnx")


# ---------------------------------------------------------------------------------------
# reading and checking
# ---------------------------------------------------------------------------------------
def read_model(model: onnx.ModelProto | bytes, where: str) -> onnx.ModelProto:
    """A fresh ModelProto: a copy of ``model``, or ``model``'s bytes decoded (refused if they are not
    an ONNX model)."""
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


def onnx_call(fn: Any, what: str, where: str) -> Any:
    """Run an onnx library call; any exception it raises becomes one ModelError line."""
    try:
        return fn()
    except HwmapError:
        raise
    except Exception as e:  # onnx raises ValidationError, SchemaError, RuntimeError, ValueError...
        raise ModelError(f"{what}: {one_line(e)}", where=where) from None


def one_line(e: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
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


def check_node_count(model: onnx.ModelProto, where: str) -> None:
    """Refuse a model whose nodes, those of its subgraphs included, would take more than the
    memory limit once converted (:data:`NODE_BYTES` each), before anything is done with them."""
    count, todo = 0, [model.graph]
    while todo:
        graph = todo.pop()
        count += len(graph.node)
        check_size(count * NODE_BYTES, f"the model's {count:,} nodes (about {NODE_BYTES // 1024} KiB each once "
                                        "converted)", where=where, error=ModelError)
        for node in graph.node:
            for a in node.attribute:
                if a.type == AttributeProto.GRAPH:
                    todo.append(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    todo.extend(a.graphs)


def has_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of the model keeps its data in an external file."""
    return any(t.data_location == TensorProto.EXTERNAL for t in _all_tensors(model.graph))


def check_external_data(model: onnx.ModelProto, base_dir: Path | None, where: str) -> None:
    """Accept external data only when every file resolves inside the model's own folder, is
    a regular file, and what would be read of it fits the memory limit.

    Absolute locations, ``..`` escapes and symlinks pointing elsewhere are refused before
    any file is opened, so a model cannot make hwmap read arbitrary files; devices and FIFOs
    are refused; each tensor's declared size and the bytes read (its ``length``, or the rest
    of the file from its ``offset``) are checked, all tensors together, before any is read.
    """
    root: Path | None = None
    total = 0
    for t in _all_tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
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
        if not target.exists():
            raise ModelError(f"tensor {t.name!r}: external data file {location!r} not found in {str(root)!r}",
                             where=where)
        if not target.is_file():
            raise ModelError(f"tensor {t.name!r}: external data file {location!r} is not a regular file "
                             "(a directory, device or FIFO); refused", where=where)
        total += _external_bytes(t, info, target.stat().st_size, where)
        check_size(total, f"tensor {t.name!r}: the external data of the model's tensors (together {total:,} "
                          "bytes)", where=where, error=ModelError)


def _external_bytes(t: TensorProto, info: dict[str, str], file_size: int, where: str) -> int:
    """The bytes onnx would read for tensor ``t`` from its external file, after checking its
    offset, length and declared size."""
    what = f"tensor {t.name!r}: external data"
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise ModelError(f"{what}: offset and length must be integers", where=where) from None
    if offset < 0 or (length is not None and length < 0):
        raise ModelError(f"{what}: negative offset or length", where=where)
    if offset + (length or 0) > file_size:
        raise ModelError(f"{what}: offset {offset} and length {length or 0} go past the end of its "
                         f"{file_size:,}-byte file", where=where)
    check_tensor_size(t, what, where)
    return length if length is not None else file_size - offset


def tensor_nbytes(dims: Any, data_type: int) -> int:
    """The bytes a tensor of ``dims`` and ONNX element type ``data_type`` declares (negative
    sizes count as their magnitude: they are refused when decoded)."""
    dt = _np_dtype_name(data_type)
    itemsize = np.dtype(dt).itemsize if dt else 8
    n = 1
    for d in dims:
        n *= abs(int(d))
    return n * itemsize


def check_tensor_size(t: TensorProto, what: str, where: str) -> None:
    """Refuse a tensor whose declared shape would take more than the memory limit."""
    check_size(tensor_nbytes(t.dims, t.data_type), f"{what} of shape {[int(d) for d in t.dims]}", where=where,
               error=ModelError)


def check_opset(model: onnx.ModelProto, where: str) -> None:
    """Refuse a default-domain opset (or IR version) newer than the installed onnx knows: its
    ops' meaning and shape inference are unknown to it, so nothing it says could be trusted."""
    known = onnx.defs.onnx_opset_version()
    opset = default_opset(model)
    if opset > known:
        raise ModelError(f"opset {opset} is newer than the installed onnx {onnx.__version__} knows (up to "
                         f"opset {known}); upgrade onnx or export the model at opset {known} or older", where=where)
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"IR version {model.ir_version} is newer than the installed onnx {onnx.__version__} "
                         f"knows (up to {onnx.IR_VERSION}); upgrade onnx or export with an older IR version",
                         where=where)


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version; 0 when it imports none."""
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return 0


def upgrade_opset(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, int]:
    """The model at opset :data:`MIN_OPSET` or newer (converted if older), and its original opset."""
    opset = default_opset(model)
    if opset == 0:
        raise ModelError("the model imports no default-domain (ai.onnx) opset", where=where)
    if opset >= MIN_OPSET:
        return model, opset
    from onnx import version_converter

    converted = onnx_call(lambda: version_converter.convert_version(model, MIN_OPSET),
                           f"opset {opset} is older than {MIN_OPSET} and the ONNX version converter failed", where)
    if default_opset(converted) < MIN_OPSET:
        raise ModelError(f"opset {opset} could not be converted to opset {MIN_OPSET}", where=where)
    return converted, opset


def fix_input_shapes(model: onnx.ModelProto, options: ParseOptions, where: str) -> None:
    """Make graph-input shapes concrete before shape inference so they propagate.

    A symbolic or missing first dimension is the batch: it becomes ``options.batch``. With
    ``options.input_shape`` and a single graph input, that shape fills the symbolic dims
    (concrete dims must agree). Any other symbolic dimension is an error naming the input.
    """
    init = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in init]
    wanted = None
    if options.input_shape is not None and len(inputs) == 1:
        wanted = check_input_shape(options.input_shape, where)
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
                if i == 0:  # the batch: symbolic, missing, or 0/-1 as some exporters write it
                    d.dim_value = check_input_shape((options.batch,), where, what="batch")[0]
                elif d.HasField("dim_value"):
                    raise ModelError(f"graph input {vi.name!r} has size {d.dim_value} in dimension {i} of shape "
                                     f"{_dims_text(dims)}: sizes must be positive (or give --input-shape)",
                                     where=where)
                else:
                    raise ModelError(f"graph input {vi.name!r} has symbolic dimension {i} "
                                     f"({d.dim_param or '?'}) in shape {_dims_text(dims)}; give a concrete "
                                     "input shape", where=where)


def _dims_text(dims: Any) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with ONNX's inferred shapes (non-strict, with data propagation)."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        # Non-strict inference rarely raises; if it does, hwmap's own op inference still
        # fills the shapes below, and a shape it cannot find is reported by tensor name.
        return model


def collect_types(model: onnx.ModelProto) -> tuple[dict[str, tuple[int | None, ...] | None], dict[str, str]]:
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
# values: tensors, attributes, Constant nodes
# ---------------------------------------------------------------------------------------
def to_array(t: TensorProto, what: str, where: str) -> np.ndarray:
    """A TensorProto's value as an owned numpy array; string tensors, and tensors declaring
    more than the memory limit, are refused (before decoding)."""
    check_tensor_size(t, what, where)
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelError(f"{what}: cannot decode tensor data: {one_line(e)}", where=where) from None
    if a.dtype.kind in "OSU":
        raise ModelError(f"{what}: string tensors are not supported", where=where)
    return np.array(a)  # an owned, writable copy


def sparse_to_array(sp: onnx.SparseTensorProto, what: str, where: str) -> np.ndarray:
    """A SparseTensorProto as a dense numpy array."""
    values = to_array(sp.values, what, where)
    idx = to_array(sp.indices, what, where).astype(np.int64)
    dims = tuple(int(d) for d in sp.dims)
    if any(d < 0 for d in dims):
        raise ModelError(f"{what}: sparse tensor of shape {list(dims)} has a negative size", where=where)
    check_size(tensor_nbytes(dims, sp.values.data_type), f"{what}: sparse tensor of shape {list(dims)} densified",
               where=where, error=ModelError)
    dense = np.zeros(dims, dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values  # linearized indices
    else:
        dense[tuple(idx.T)] = values
    return dense


def plain(a: np.ndarray) -> np.ndarray:
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


def attr_value(a: AttributeProto, what: str, where: str) -> tuple[str, Any]:
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
        return "param", to_array(a.t, f"{what} attribute {a.name!r}", where)
    if t == AttributeProto.SPARSE_TENSOR:
        return "param", sparse_to_array(a.sparse_tensor, f"{what} attribute {a.name!r}", where)
    if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return "graph", None
    if t == AttributeProto.TENSORS:
        return "params", [to_array(x, f"{what} attribute {a.name!r}", where) for x in a.tensors]
    return "attr", str(helper.get_attribute_value(a))


def constant_value(node: onnx.NodeProto, what: str, where: str) -> np.ndarray:
    """The value of an ONNX ``Constant`` node (any of its value_* attributes)."""
    for a in node.attribute:
        if a.name == "value":
            return to_array(a.t, what, where)
        if a.name == "sparse_value":
            return sparse_to_array(a.sparse_tensor, what, where)
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

