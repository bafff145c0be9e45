"""The schema of a saved graph (``graph.json`` and its ``params.npz``), checked before
anything is built from them: a compile directory is input a user may have downloaded."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GraphError
from .limits import check_size
from .safeio import schema_problem

__all__ = ["check_graph_json", "FORMAT_VERSION"]

#: The version of the ``graph.json`` format :meth:`hwmap.graph.Graph.to_json` writes.
FORMAT_VERSION = 1


# -- the schema of graph.json -----------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Dim = Annotated[int, Field(ge=0)]


class _ArrayJson(_Strict):
    shape: list[Dim] = Field(max_length=8)
    data: list[float]


class _QuantJson(_Strict):
    scale: _ArrayJson | float | list[float]
    zero_point: _ArrayJson | float | list[float]
    bits: int = Field(ge=1, le=64)
    signed: bool
    axis: int | None = None
    narrow: bool = False
    bipolar: bool = False
    input_scale: _ArrayJson | float | list[float] | None = None


class _TensorJson(_Strict):
    name: str
    shape: list[Dim] = Field(max_length=32)
    dtype: str = "float32"
    quant: _QuantJson | None = None


class _ParamJson(_Strict):
    shape: list[Dim] = Field(max_length=32)
    dtype: str


class _NodeJson(_Strict):
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, _ParamJson] = Field(default_factory=dict)
    param_quant: dict[str, _QuantJson] = Field(default_factory=dict)
    fused: list["_NodeJson"] = Field(default_factory=list)


class _GraphJson(_Strict):
    format: Literal["hwmap.graph"]
    version: int
    name: str
    inputs: list[str]
    outputs: list[str]
    tensors: list[_TensorJson]
    nodes: list[_NodeJson]
    meta: dict[str, Any] = Field(default_factory=dict)


def check_graph_json(d: Any, arrays: Any, where: str | None = None) -> None:
    """Check a graph's JSON (:meth:`Graph.to_json`) and its parameter arrays before
    anything is built from them; a :class:`GraphError` naming ``where`` for the first
    problem. Checks: the schema (types, keys, the format marker and version); ``meta.dt``
    (the neurons' time step) a positive finite number or null; tensor names
    unique, dtypes numeric, quantization scales of their declared shape with an axis inside
    the tensor; every parameter of every node (fused ones included) in ``arrays`` with its
    declared shape and dtype, and no array no node declares; the declared tensors together
    within the memory bound (:func:`hwmap.limits.check_size`)."""
    if not isinstance(d, dict) or d.get("format") != "hwmap.graph":
        raise GraphError("not an hwmap graph (missing format marker)", where=where)
    if d.get("version") != FORMAT_VERSION:
        shown = d.get("version") if isinstance(d.get("version"), int) else "?"
        raise GraphError(f"graph format version {shown!r} is not {FORMAT_VERSION}", where=where)
    try:
        doc = _GraphJson.model_validate(d)
    except ValidationError as e:
        raise GraphError(f"does not match the graph schema: {schema_problem(e)}", where=where) from None
    dt = doc.meta.get("dt")
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt)
                           or dt <= 0):
        raise GraphError(f"meta.dt must be a positive number of seconds or null, not {str(dt)[:40]}", where=where)
    names: set[str] = set()
    total = 0
    for t in doc.tensors:
        if t.name in names:
            raise GraphError(f"tensor {t.name[:80]!r} is declared twice", where=where)
        names.add(t.name)
        itemsize = _numeric_dtype(t.dtype, f"tensor {t.name[:80]!r}", where).itemsize
        total += math.prod(t.shape) * itemsize
        if t.quant is not None:
            _check_quant(t.quant, len(t.shape), f"tensor {t.name[:80]!r}", where)
    check_size(total, f"the graph's tensors (declared {total:,} bytes)", where=where, error=GraphError)
    used: set[str] = set()
    todo = list(doc.nodes)
    while todo:
        n = todo.pop()
        todo.extend(n.fused)
        for slot, p in n.params.items():
            key = f"{n.name}/{slot}"
            what = f"parameter {key[:120]!r}"
            if key not in arrays:
                raise GraphError(f"{what} is missing from params.npz", where=where)
            a = arrays[key]
            if not isinstance(a, np.ndarray) or list(a.shape) != p.shape or str(a.dtype) != p.dtype:
                raise GraphError(f"{what} in params.npz is not the {p.dtype[:20]} array of shape {p.shape[:8]} "
                                 "the graph declares", where=where)
            used.add(key)
            if slot in n.param_quant:
                _check_quant(n.param_quant[slot], a.ndim, what, where)
    extra = sorted(set(arrays) - used)
    if extra:
        raise GraphError(f"params.npz holds {len(extra)} array(s) no node declares, e.g. {extra[0][:120]!r}",
                         where=where)


def _numeric_dtype(name: str, what: str, where: str | None) -> np.dtype[Any]:
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError):
        raise GraphError(f"{what} has dtype {name[:20]!r}, which is not a numpy dtype", where=where) from None
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise GraphError(f"{what} has dtype {name[:20]!r}: only numbers and booleans", where=where)
    return dtype


def _check_quant(q: _QuantJson, ndim: int, what: str, where: str | None) -> None:
    """A quantization annotation on a tensor or parameter of rank ``ndim``: its scale and
    zero point hold as many numbers as their shape says, per tensor or 1-D along an axis
    inside the tensor."""
    sizes = []
    for part in (q.scale, q.zero_point):
        if isinstance(part, _ArrayJson):
            if len(part.data) != math.prod(part.shape):
                raise GraphError(f"{what}: a quantization array holds {len(part.data)} numbers for shape "
                                 f"{part.shape}", where=where)
            sizes.append(len(part.data))
        else:
            sizes.append(len(part) if isinstance(part, list) else 1)
    if q.axis is not None and not -max(ndim, 1) <= q.axis < max(ndim, 1):
        raise GraphError(f"{what}: quantization axis {q.axis} outside a tensor of rank {ndim}", where=where)
    if q.axis is None and max(sizes) > 1:
        raise GraphError(f"{what}: per-axis quantization scales without an axis", where=where)
