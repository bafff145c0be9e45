"""A crossbar node as the layer record of an analog IMC program (the emitter's lowering step).

:class:`LayerLowering` turns one Conv/Gemm/MatMul node (fused or not) into its
:class:`~hwmap_analog_imc.program.LayerRec`: the weight matrix ``(G, M, N)`` in ONNX W order
(C_in major), per output channel symmetric integers ``w = round(W/s_w)`` (the node's
``param_quant`` annotation, else max-abs scaling on ``weight_bits``), their cell levels
(:func:`encode_weights`: differential or offset slices of ``bits_per_cell`` bits), the DAC
quantization of its input, its bias and dequantization scales, and the fused post-ops with
their constants. Where the layer's blocks sit and when they run is :mod:`.emit`'s job.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

import hwmap
from hwmap import Graph, HwmapError, Node, TargetError
from hwmap.jsonio import json_default

from .blocks import ceil_div
from .hardware import HardwareConfig
from .layers import CrossbarLayer
from .program import NONE, LayerRec, PostOpRec, Program

__all__ = ["LayerLowering", "attrs_json", "encode_weights"]


def attrs_json(attrs: dict[str, Any]) -> str:
    """A node's attributes as the program stores them: canonical JSON (sorted keys, ASCII)."""
    return json.dumps(attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=json_default)


def encode_weights(w_int: np.ndarray, hw: HardwareConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Cell levels ``(..., M, N·cols_per_filter)`` of integer weights ``(..., M, N)``, the
    per-column coefficients of the shift-and-add and the encoding offset ``o``."""
    bpc, wb = hw.bits_per_cell, hw.weight_bits
    mask = 2**bpc - 1
    w = w_int.astype(np.int64)
    if hw.weight_encoding == "differential":
        slices = ceil_div(wb - 1, bpc)
        mag = np.abs(w)
        cols = []
        coef = []
        for s in range(slices):
            digit = (mag >> (s * bpc)) & mask
            cols += [np.where(w > 0, digit, 0), np.where(w < 0, digit, 0)]
            coef += [2 ** (s * bpc), -(2 ** (s * bpc))]
        offset = 0
    else:
        slices = ceil_div(wb, bpc)
        offset = 2 ** (wb - 1)
        u = w + offset
        cols = [(u >> (s * bpc)) & mask for s in range(slices)]
        coef = [2 ** (s * bpc) for s in range(slices)]
    levels = np.stack(cols, axis=-1)  # (..., M, N, cpf): a filter's columns side by side
    levels = levels.reshape(*w.shape[:-1], w.shape[-1] * len(cols)).astype(np.uint8)
    return levels, np.asarray(coef, dtype=np.int64), offset


class LayerLowering:
    """Lowers the crossbar nodes of graph ``g`` into program ``p`` (whose tensors ``tensor_id``
    numbers); decisions worth reporting go to ``notes``."""

    def __init__(self, p: Program, g: Graph, hw: HardwareConfig, tensor_id: dict[str, int],
                 notes: list[str]) -> None:
        self.p = p
        self.g = g
        self.hw = hw
        self.tensor_id = tensor_id
        self.notes = notes

    def layer(self, order: int, node: Node, cl: CrossbarLayer) -> tuple[int, np.ndarray, np.ndarray]:
        """Append the program layer of crossbar ``node`` (mapped as ``cl``, ``order`` in the graph) and
        its post-ops; its id, integer weights ``(G, M, N)`` and cell levels ``(G, M, N·cpf)``."""
        hw = self.hw
        where = f"node {node.name!r}"
        comp = node.fused[0] if node.op.startswith("Fused") and node.fused else node
        op = comp.op
        if not node.inputs:
            raise TargetError("a crossbar layer needs a dynamic input", where=where)
        x_name = node.inputs[0]
        x = self.g.tensor(x_name)
        kernel: tuple[int, ...] = ()
        geo: Any = None
        if op == "Conv":
            from hwmap.ops.conv import conv_geometry

            if "W" not in node.params:
                raise TargetError("Conv needs constant weights W to sit on a crossbar", where=where)
            w = np.asarray(node.params["W"], dtype=np.float64)
            b = node.params.get("B")
            geo, groups = conv_geometry(node, x.shape, w.shape, None if b is None else np.shape(b))
            c_out = w.shape[0]
            wmat = w.reshape(groups, c_out // groups, -1).transpose(0, 2, 1)  # (G, M, N)
            slot, out_axis, alpha = "W", 0, 1.0
            bias = None if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
            kernel = geo.kernel
            positions = math.prod(geo.out)
        elif op in ("Gemm", "MatMul"):
            if "B" not in node.params:
                raise TargetError(f"{op} needs a constant right operand B to sit on a crossbar", where=where)
            bm = np.asarray(node.params["B"], dtype=np.float64)
            if bm.ndim != 2:
                raise TargetError(f"{op} weight B of shape {list(bm.shape)} is not a matrix", where=where)
            groups = 1
            if op == "Gemm":
                if node.attrs.get("transA", 0):
                    raise TargetError("Gemm with transA = 1 cannot stream its input rows into a crossbar",
                                      where=where)
                trans_b = bool(node.attrs.get("transB", 0))
                wmat = (bm.T if trans_b else bm)[None]
                out_axis = 0 if trans_b else 1
                alpha = float(node.attrs.get("alpha", 1.0))
                c = node.params.get("C")
                bias = None
                if c is not None:
                    c = np.asarray(c, dtype=np.float64) * float(node.attrs.get("beta", 1.0))
                    n_out = wmat.shape[2]
                    if c.size == n_out:
                        bias = c.reshape(-1)
                    elif c.size == 1:
                        bias = np.full(n_out, float(c.reshape(-1)[0]))
                    else:
                        raise TargetError(f"Gemm bias C of shape {list(c.shape)} is not per output channel",
                                          where=where)
            else:
                wmat, out_axis, alpha, bias = bm[None], 1, 1.0, None
            slot = "B"
            positions = math.prod(x.shape[1:-1]) if len(x.shape) > 2 else 1
        else:
            raise TargetError(f"op {op} is not a crossbar op", where=where)
        if wmat.shape[1:] != (cl.rows, cl.filters) or groups != cl.groups or max(positions, 1) != cl.positions:
            raise TargetError(f"weights {list(wmat.shape)} × {positions} positions disagree with the mapped layer "
                              f"({cl.groups} groups of {cl.rows}×{cl.filters}, {cl.positions} positions)", where=where)
        c_out = groups * cl.filters
        s_w, w_int = self._quantize_weights(node, slot, out_axis, wmat, c_out, where)
        levels, coef, offset = encode_weights(w_int, hw)
        in_scale, zp, qmin, qmax, planes = self._input_quant(x, where)
        pid = len(self.p.layers)
        nsp = len(kernel)
        self.p.layers.append(LayerRec(
            order=order, name=node.name, op=op, input=self.tensor_id[x_name],
            output=self.tensor_id[node.outputs[0]], home_core=0, groups=groups, rows=cl.rows, filters=cl.filters,
            cols_per_filter=cl.cols_per_filter, positions=cl.positions, replicas=1, planes=planes,
            kernel=tuple(kernel), strides=tuple(geo.strides) if nsp else (),
            pads_begin=tuple(geo.pads_begin) if nsp else (), pads_end=tuple(geo.pads_end) if nsp else (),
            dilations=tuple(geo.dilations) if nsp else (), out_spatial=tuple(geo.out) if nsp else (),
            in_scale=in_scale, in_zero_point=zp, in_qmin=qmin, in_qmax=qmax, weight_offset=offset,
            w_scale=self.p.add_const(s_w * alpha),
            bias=NONE if bias is None else self.p.add_const(bias), coef=self.p.add_const(coef)))
        if cl.cols_per_filter != coef.size:
            raise TargetError(f"the mapped layer takes {cl.cols_per_filter} columns per filter, the encoding "
                              f"{coef.size}", where=where)
        if node.op.startswith("Fused"):
            self._postops(pid, node)
        return pid, w_int, levels

    def _quantize_weights(self, node: Node, slot: str, out_axis: int, wmat: np.ndarray, c_out: int,
                          where: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-output-channel scales ``(C_out,)`` and integer weights ``(G, M, N)``."""
        wb = self.hw.weight_bits
        top = 2 ** (wb - 1) - 1
        q = node.param_quant.get(slot)
        g, m, n = wmat.shape
        per_channel = wmat.transpose(0, 2, 1).reshape(c_out, m)  # (C_out, M), channel = g·N + f
        if q is None:
            amax = np.abs(per_channel).max(axis=1) if m else np.zeros(c_out)
            s_w = np.where(amax > 0, amax / top, 1.0)
            if "unannotated" not in " ".join(self.notes):
                self.notes.append(f"unannotated weights (first: {node.name}) quantized per output channel, "
                                  f"max-abs, {wb} bits")
        else:
            if q.bits > wb:
                raise TargetError(f"weights quantized to {q.bits} bits, the crossbar stores {wb}", where=where)
            if np.any(q.zero_point != 0):
                raise TargetError("weights with a nonzero zero point cannot be stored as signed cells", where=where)
            scale = np.asarray(q.scale, dtype=np.float64).reshape(-1)
            if scale.size == 1:
                s_w = np.full(c_out, float(scale[0]))
            elif scale.size == c_out and q.axis is not None and q.axis % np.ndim(node.params[slot]) == out_axis:
                s_w = scale.copy()
            else:
                raise TargetError(f"weight scale of {scale.size} values along axis {q.axis} is not per output "
                                  f"channel ({c_out} channels on axis {out_axis})", where=where)
            if np.any(s_w <= 0) or not np.all(np.isfinite(s_w)):
                raise TargetError("weight scales must be positive and finite", where=where)
            top = min(top, q.qmax)
        w_int = np.clip(np.round(per_channel / s_w[:, None]), -top, top)
        return s_w, w_int.reshape(g, n, m).transpose(0, 2, 1).astype(np.int64)

    def _input_quant(self, x: hwmap.Tensor, where: str) -> tuple[float, int, int, int, int]:
        q = x.quant
        if q is None:
            raise TargetError(f"input tensor {x.name!r} has no quantization annotation: legalization must set the "
                              "DAC scale (calibrate with --data)", where=where)
        if q.scale.size != 1 or q.zero_point.size != 1:
            raise TargetError(f"input tensor {x.name!r} is quantized per axis; the DACs take one scale per tensor",
                              where=where)
        span = q.qmax - q.qmin
        bits = max(1, int(span).bit_length())
        if bits > self.hw.input_bits:
            raise TargetError(f"input tensor {x.name!r} is quantized to {bits} bits, the DAC path takes "
                              f"input_bits = {self.hw.input_bits}", where=where)
        scale = float(q.scale.reshape(-1)[0])
        if not (scale > 0 and math.isfinite(scale)):
            raise TargetError(f"input tensor {x.name!r} has scale {scale}, must be positive", where=where)
        return scale, int(round(float(q.zero_point.reshape(-1)[0]))), int(q.qmin), int(q.qmax), \
            ceil_div(bits, self.hw.dac_bits)

    def params(self, node: Node) -> tuple[tuple[str, int], ...]:
        return tuple((slot, self.p.add_const(np.asarray(v))) for slot, v in node.params.items())

    def _postops(self, pid: int, node: Node) -> None:
        from hwmap.ops.fused import plan

        try:
            fp = plan(node)
        except HwmapError as e:
            raise TargetError(f"fused node cannot be lowered: {e}", where=f"node {node.name!r}") from None
        rest = list(node.inputs[fp.n_compute_inputs:])
        for post in fp.posts:
            extra, rest = rest[:post.extra], rest[post.extra:]
            sub = post.node
            self.p.postops.append(PostOpRec(pid, sub.name, sub.op, attrs_json(sub.attrs), post.position,
                                            tuple(self.tensor_id[t] for t in extra), self.params(sub)))
