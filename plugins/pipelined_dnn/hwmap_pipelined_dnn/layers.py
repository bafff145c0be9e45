"""The layers of the pipeline: one engine per compute, pooling, add or activation node.

Chapter Fig. 3.20 (a, b): the legalized graph is converted into its hardware
representation, a chain (or, with residual adds, a DAG) of layers, each of one *kind*
the template library has architectures for:

========== =====================================================================
kind       nodes
========== =====================================================================
source     the graph input, streamed in one pixel (all channels) per transfer
conv       Conv with group 1 and a kernel larger than 1×1 (fused ReLU allowed)
pointwise  Conv with group 1 and a 1×1 kernel
depthwise  Conv with group = C_in = C_out
fc         Gemm (``transA`` 0), or MatMul with a constant 2-D weight
pool       MaxPool, AveragePool (no padding), GlobalAveragePool, GlobalMaxPool
add        Add of two tensors of the same shape (a residual join)
activation Relu
========== =====================================================================

Flatten, Reshape to ``(N, -1)``, Identity and Dropout are *wiring*: no engine; an fc layer
reading a flattened feature map takes its pixels in stream order (its weights are
reordered in post-processing, :mod:`.postprocess`). Tensors are streamed pixel by pixel in
raster order, each pixel carrying all its channels (hls4ml ``io_stream``; FINN's NHWC
streams): a layer's *items* are the pixels it produces, except for the global pools,
whose items are the pixels they accumulate.

:func:`extract_layers` returns the layers in topological order, or raises
:class:`NoTemplate` naming the first node no template implements.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hwmap import Graph, Node

__all__ = ["LayerSpec", "NoTemplate", "extract_layers", "compute_op", "WIRING_OPS", "POOL_OPS", "SOURCE_PREFIX",
           "need_last", "release_last"]

WIRING_OPS = ("Flatten", "Reshape", "Identity", "Dropout")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
SOURCE_PREFIX = "input:"


class NoTemplate(Exception):
    """A node the template library has no architecture for: ``rule``, ``node``, message."""

    def __init__(self, rule: str, node: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.node = rule, node


def compute_op(node: Node) -> str:
    return node.op[len("Fused"):] if node.op.startswith("Fused") else node.op


@dataclass
class LayerSpec:
    """One engine's layer. Shapes are ``(C, H, W)`` per sample; an fc layer's ``in_shape``
    is the feature map it reads (its ``C·H·W`` inputs arrive as ``H·W`` pixels)."""

    name: str
    kind: str
    op: str
    inputs: list[str]  # producer layers
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    tensor: str  # the output tensor of the graph this layer produces
    in_tensors: list[str] = field(default_factory=list)  # the graph tensors it reads (after wiring)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    macs: int = 0
    weights: int = 0
    biases: int = 0
    relu: bool = False
    pool: str = ""  # max, avg, global_avg, global_max

    @property
    def in_items(self) -> int:
        return self.in_shape[1] * self.in_shape[2]

    @property
    def out_items(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    @property
    def per_input(self) -> bool:
        """Global pools work per input pixel (they accumulate); every other layer per output pixel."""
        return self.pool in ("global_avg", "global_max")

    @property
    def items(self) -> int:
        """Work items per frame: the pixels it accumulates (global pools) or produces."""
        return self.in_items if self.per_input else self.out_items

    @property
    def window(self) -> bool:
        return self.kind in ("conv", "pointwise", "depthwise") or self.pool in ("max", "avg")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("in_shape", "out_shape", "kernel", "stride", "pads"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LayerSpec":
        d = dict(d)
        for k in ("in_shape", "out_shape", "kernel", "stride", "pads"):
            d[k] = tuple(int(v) for v in d[k])
        return cls(**d)


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 4:
        return (shape[1], shape[2], shape[3])
    if len(shape) == 2:
        return (shape[1], 1, 1)
    if len(shape) == 3:
        return (shape[1], shape[2], 1)
    raise ValueError(f"shape {list(shape)}")


def _window_attrs(node: Node, kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    auto = str(node.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise NoTemplate("unsupported_window", node.name, f"{node.op} with auto_pad {auto}: the templates take "
                                                          "explicit pads only")
    if any(int(d) != 1 for d in node.attrs.get("dilations") or [1, 1]):
        raise NoTemplate("unsupported_window", node.name, f"{node.op} with dilations {node.attrs['dilations']}: "
                                                          "no template for dilated windows")
    if int(node.attrs.get("ceil_mode", 0)):
        raise NoTemplate("unsupported_window", node.name, f"{node.op} with ceil_mode 1: no template")
    strides = [int(s) for s in node.attrs.get("strides") or [1, 1]]
    pads = [int(p) for p in node.attrs.get("pads") or [0, 0, 0, 0]]
    if len(strides) != 2 or len(pads) != 4 or len(kernel) != 2:
        raise NoTemplate("unsupported_window", node.name, f"{node.op} over other than 2 spatial axes: no template")
    return (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3])


def extract_layers(g: Graph) -> list[LayerSpec]:
    """The pipeline's layers (see the module docstring), sources first, in topological order."""
    if len(g.inputs) != 1:
        raise NoTemplate("graph_inputs", g.name, f"the pipeline streams one input; graph {g.name!r} has "
                                                 f"{len(g.inputs)}")
    x = g.inputs[0]
    xs = g.tensor(x).shape
    if len(xs) not in (2, 4):
        raise NoTemplate("graph_inputs", x, f"input {x!r} of shape {list(xs)}: the pipeline streams (N, C, H, W) "
                                            "images or (N, F) vectors")
    src = LayerSpec(SOURCE_PREFIX + x, "source", "Input", [], _chw(xs), _chw(xs), x)
    layers = [src]
    producer: dict[str, str] = {x: src.name}  # tensor -> layer producing it (through wiring)
    flat: dict[str, bool] = {x: False}  # tensor reached through a flatten
    for node in g.nodes:
        op = compute_op(node)
        ins = [t for t in node.inputs]
        if node.op in WIRING_OPS:
            _check_wiring(g, node)
            producer[node.outputs[0]] = producer[ins[0]]
            flat[node.outputs[0]] = flat.get(ins[0], False) or node.op in ("Flatten", "Reshape")
            continue
        for t in ins:
            if t not in producer:
                raise NoTemplate("unsupported_input", node.name, f"input {t!r} of {node.op} is not streamed by any "
                                                                 "layer")
        out = node.outputs[0]
        if len(node.outputs) != 1:
            raise NoTemplate("no_template", node.name, f"{node.op} with {len(node.outputs)} outputs: no template")
        in_shape = g.tensor(ins[0]).shape if ins else ()
        out_shape = _chw(g.tensor(out).shape)
        spec = LayerSpec(node.name, "", node.op, [producer[t] for t in ins], (0, 0, 0), out_shape, out,
                         in_tensors=list(ins))
        spec.relu = any(f.op == "Relu" for f in node.fused[1:])
        if any(f.op != "Relu" for f in node.fused[1:]):
            bad = next(f.op for f in node.fused[1:] if f.op != "Relu")
            raise NoTemplate("no_template", node.name, f"{node.op} fuses a {bad}: the templates apply ReLU only")
        if op == "Conv":
            _conv(g, node, spec, in_shape)
        elif op in ("Gemm", "MatMul"):
            _fc(g, node, spec, layers, producer, flat)
        elif op in POOL_OPS:
            _pool(node, spec, in_shape)
        elif op == "Add" and len(ins) == 2 and not node.params:
            a, b = (g.tensor(t).shape for t in ins)
            if a != b or len(a) not in (2, 4):
                raise NoTemplate("no_template", node.name, f"Add of shapes {list(a)} and {list(b)}: the add "
                                                           "template joins two streams of the same shape")
            spec.kind, spec.in_shape = "add", _chw(a)
        elif op == "Relu" and len(ins) == 1:
            spec.kind, spec.in_shape = "activation", _chw(in_shape)
        else:
            raise NoTemplate("no_template", node.name, f"no template implements {node.op}"
                             + (" with a constant operand" if op == "Add" else ""))
        if spec.kind not in ("fc",) and any(flat.get(t, False) for t in ins):
            raise NoTemplate("no_template", node.name, f"{node.op} reads a flattened tensor: only fc layers do")
        layers.append(spec)
        producer[out] = spec.name
        flat[out] = False
    for t in g.outputs:
        if t not in producer:
            raise NoTemplate("unsupported_output", t, f"graph output {t!r} is not produced by any layer")
    return layers


def _check_wiring(g: Graph, node: Node) -> None:
    if node.op == "Flatten" and int(node.attrs.get("axis", 1)) != 1:
        raise NoTemplate("no_template", node.name, "Flatten with an axis other than 1: no template")
    if node.op == "Reshape":
        out = g.tensor(node.outputs[0]).shape
        inp = g.tensor(node.inputs[0]).shape
        if len(out) != 2 or out[0] != inp[0]:
            raise NoTemplate("no_template", node.name, f"Reshape to {list(out)}: only a flatten to (N, -1) is "
                                                       "wiring")
    if len(node.inputs) != 1:
        raise NoTemplate("no_template", node.name, f"{node.op} with {len(node.inputs)} dynamic inputs")


def _conv(g: Graph, node: Node, spec: LayerSpec, in_shape: tuple[int, ...]) -> None:
    w = node.params.get("W")
    if w is None or w.ndim != 4 or len(in_shape) != 4:
        raise NoTemplate("no_template", node.name, "a Conv without a constant 2-D kernel: no template")
    group = int(node.attrs.get("group", 1))
    cin, cout = in_shape[1], w.shape[0]
    kernel = (int(w.shape[2]), int(w.shape[3]))
    spec.stride, spec.pads = _window_attrs(node, kernel)
    spec.kernel, spec.in_shape = kernel, _chw(in_shape)
    if group == 1:
        spec.kind = "pointwise" if kernel == (1, 1) and spec.pads == (0, 0, 0, 0) else "conv"
    elif group == cin == cout:
        spec.kind = "depthwise"
    else:
        raise NoTemplate("no_template", node.name, f"grouped convolution (group {group}, {cin} → {cout} channels): "
                                                   "templates exist for group 1 and depthwise only")
    spec.weights = int(w.size)
    spec.biases = int(cout) if "B" in node.params else 0
    spec.macs = int(w.size // cout) * cout * spec.out_items  # C_out·OH·OW·(C_in/group)·K²


def _fc(g: Graph, node: Node, spec: LayerSpec, layers: list[LayerSpec], producer: dict[str, str],
        flat: dict[str, bool]) -> None:
    op = compute_op(node)
    slot = "B"
    w = node.params.get(slot)
    if w is None or w.ndim != 2 or len(node.inputs) != 1:
        raise NoTemplate("no_template", node.name, f"{op} without a constant 2-D weight: no template")
    if op == "Gemm" and (int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0
                         or float(node.attrs.get("beta", 1.0)) != 1.0):
        raise NoTemplate("no_template", node.name, "Gemm with transA, alpha or beta other than the defaults")
    if op == "Gemm" and "C" in node.params and np.asarray(node.params["C"]).size not in (
            w.shape[0] if int(node.attrs.get("transB", 0)) else w.shape[1],):
        raise NoTemplate("no_template", node.name, "Gemm whose bias C is not one value per output")
    src = producer[node.inputs[0]]
    src_layer = next(x for x in layers if x.name == src)
    spec.kind = "fc"
    spec.in_shape = src_layer.out_shape
    n_in = math.prod(spec.in_shape)
    n_out = spec.out_shape[0]
    if n_in * n_out != w.size:
        raise NoTemplate("no_template", node.name, f"{op} weight {list(w.shape)} does not match {n_in} inputs "
                                                   f"and {n_out} outputs")
    spec.weights = int(w.size)
    spec.biases = n_out if "C" in node.params else 0
    spec.macs = n_in * n_out


def _pool(node: Node, spec: LayerSpec, in_shape: tuple[int, ...]) -> None:
    op = compute_op(node)
    if len(in_shape) != 4:
        raise NoTemplate("no_template", node.name, f"{op} of a {len(in_shape)}-D tensor: no template")
    spec.in_shape = _chw(in_shape)
    spec.kind = "pool"
    if op.startswith("Global"):
        spec.pool = "global_avg" if op == "GlobalAveragePool" else "global_max"
        spec.kernel = (spec.in_shape[1], spec.in_shape[2])
        return
    kernel = tuple(int(k) for k in node.attrs.get("kernel_shape") or ())
    if len(kernel) != 2:
        raise NoTemplate("no_template", node.name, f"{op} with kernel {list(kernel)}: no template")
    spec.kernel = (kernel[0], kernel[1])
    spec.stride, spec.pads = _window_attrs(node, spec.kernel)
    spec.pool = "max" if op == "MaxPool" else "avg"
    if op == "AveragePool" and any(spec.pads):
        raise NoTemplate("no_template", node.name, "AveragePool with padding: the average template divides by "
                                                   "the window size")


# -- data dependencies, shared by the buffer tuner and the cycle simulation ------------------------------
def need_last(spec: LayerSpec) -> np.ndarray:
    """For each work item of one frame, the index (within the frame) of the last input pixel it
    needs: the bottom-right pixel of its window (window layers), everything (fc), itself
    (elementwise layers and global pools)."""
    if spec.kind == "fc":
        return np.full(spec.items, spec.in_items - 1, dtype=np.int64)
    if spec.per_input or not spec.window:
        return np.arange(spec.items, dtype=np.int64)
    _, h, w = spec.in_shape
    _, oh, ow = spec.out_shape
    (kh, kw), (sh, sw), (pt, pl, _, _) = spec.kernel, spec.stride, spec.pads
    rows = np.clip(np.arange(oh) * sh - pt + kh - 1, 0, h - 1)
    cols = np.clip(np.arange(ow) * sw - pl + kw - 1, 0, w - 1)
    return (rows[:, None] * w + cols[None, :]).reshape(-1).astype(np.int64)


def release_last(spec: LayerSpec) -> np.ndarray:
    """For each input pixel of one frame, the last work item that reads it (−1 for a pixel no
    item reads): once that item is done, the pixel's buffer slot is free."""
    if spec.kind == "fc":
        return np.full(spec.in_items, spec.items - 1, dtype=np.int64)
    if spec.per_input or not spec.window:
        return np.arange(spec.in_items, dtype=np.int64)
    _, h, w = spec.in_shape
    _, oh, ow = spec.out_shape
    (kh, kw), (sh, sw), (pt, pl, _, _) = spec.kernel, spec.stride, spec.pads

    def axis(n: int, k: int, s: int, p: int, o: int) -> np.ndarray:
        y = np.arange(n)
        hi = np.minimum((y + p) // s, o - 1)
        lo = np.maximum(-((-(y + p - k + 1)) // s), 0)
        return np.where(hi >= lo, hi, -1)

    r, c = axis(h, kh, sh, pt, oh), axis(w, kw, sw, pl, ow)
    last = np.where((r[:, None] >= 0) & (c[None, :] >= 0), r[:, None] * ow + c[None, :], -1)
    return last.reshape(-1).astype(np.int64)
