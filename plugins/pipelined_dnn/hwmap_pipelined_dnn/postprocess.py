"""Step (e) of chapter Fig. 3.20: post-process the parameters, emit the configuration, read it back.

Each layer's weights and biases are quantized to its template's format (the legalized
graph's power-of-two annotations: weights at ``hardware.weight_bits``, biases at the
accumulator's scale and width) and reordered into the template's weight memory layout,
padding the last fold of a parallelism that does not divide its dimension with zeros:

================= =================================== ==========================================
template          canonical weights                   memory image layout (outermost first)
================= =================================== ==========================================
mvau (conv)       (C_out, K_h, K_w, C_in)             (PE, ⌈C_out/PE⌉, K_h·K_w, ⌈C_in/SIMD⌉, SIMD):
                                                      one memory per PE lane, one SIMD-wide word per
                                                      cycle, in the order the engine reads them
mvau (fc)         (N_out, N_in in stream order)       (PE, ⌈N_out/PE⌉, ⌈N_in/SIMD⌉, SIMD)
window_unroll     (C_out, K_h, K_w, C_in)             (PE, ⌈C_out/PE⌉, ⌈C_in/SIMD⌉, K_h·K_w, SIMD):
                                                      a word holds every tap of SIMD channels
dense_reuse       (N_out, N_in)                       (R, N_in·N_out/R): row r holds the weights
                                                      the multipliers use in cycle r (hls4ml's
                                                      resource strategy: weight ir + R·im)
vvau              (C, K_h, K_w)                       (PE, ⌈C/PE⌉, ⌈K²/SIMD⌉, SIMD)
================= =================================== ==========================================

An fc layer reading a flattened feature map receives its inputs in stream order (pixel by
pixel, channels innermost), so its weight columns are permuted from the graph's C·H·W order
to H·W·C. Files written (:func:`write_program`): ``pipeline.json`` (per layer: kind,
template, parallelism, cycles, buffer depths, number formats, where its memory images are)
and, per layer with weights, ``mem/LNN_weights.bin`` (little-endian int8, or int16 above 8
bits, one value per byte pair) and ``mem/LNN_bias.bin`` (little-endian int32, int64 above
32 bits). :func:`read_program` reads them back, checking every size, and returns each
layer's weights in canonical order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwmap import Artifacts, Graph, Node, Target, TargetError
from hwmap.jsonio import dumps

from .buffers import line_buffer_pixels
from .layers import LayerSpec
from .legalize import frac_bits, streamed, weight_axis
from .program_checks import check_program
from .templates import Option

__all__ = ["PROGRAM_FORMAT", "write_program", "read_program", "Program", "ProgramLayer", "canonical_weights",
           "to_layout", "from_layout"]

PROGRAM_FORMAT = "hwmap.pipelined_dnn.pipeline"
VERSION = 1


def _fmt(g: Graph, t: str) -> dict[str, Any]:
    q = g.tensor(t).quant
    if q is None:
        raise TargetError(f"tensor {t!r} has no fixed-point format", where=f"graph {g.name!r}")
    return {"frac": int(frac_bits(q)), "bits": int(q.bits), "signed": bool(q.signed)}


def canonical_weights(spec: LayerSpec, node: Node) -> np.ndarray:
    """Integer weight codes in the canonical order of the module docstring's table."""
    slot, _ = weight_axis(node)
    q = node.param_quant[slot]
    w = q.quantize(node.params[slot]).astype(np.int64)
    if spec.kind in ("conv", "pointwise"):
        return w.transpose(0, 2, 3, 1)
    if spec.kind == "depthwise":
        return w[:, 0]
    op = node.op[len("Fused"):] if node.op.startswith("Fused") else node.op
    m = w if (op == "Gemm" and int(node.attrs.get("transB", 0))) else w.T  # (N_out, N_in), C·H·W order
    c, h, wd = spec.in_shape
    if h * wd > 1:  # columns to stream order: (h, w, c)
        m = m.reshape(m.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(m.shape[0], -1)
    return m


def bias_codes(spec: LayerSpec, node: Node) -> np.ndarray | None:
    slot = "B" if spec.kind in ("conv", "pointwise", "depthwise") else "C"
    if slot not in node.params or slot not in node.param_quant:
        return None
    return node.param_quant[slot].quantize(node.params[slot]).astype(np.int64).reshape(-1)


def _pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def to_layout(canon: np.ndarray, spec: LayerSpec, opt: Option) -> np.ndarray:
    p = opt.parallelism
    if opt.template == "dense_reuse":
        m2 = canon.reshape(canon.shape[0], -1)  # (N_out, N_in)
        r = p["R"]
        flat = m2.T.reshape(-1)  # index i·N_out + o
        return flat.reshape(-1, r).T.copy()  # [r, m] = flat[r + R·m]
    pe, simd = p["PE"], p["SIMD"]
    if spec.kind == "depthwise":
        c = canon.shape[0]
        m2 = canon.reshape(c, -1)
        fo, fi = -(-c // pe), -(-m2.shape[1] // simd)
        return _pad(m2, (fo * pe, fi * simd)).reshape(fo, pe, fi, simd).transpose(1, 0, 2, 3).copy()
    if spec.kind == "fc":
        no, ni = canon.shape
        fo, fi = -(-no // pe), -(-ni // simd)
        return _pad(canon, (fo * pe, fi * simd)).reshape(fo, pe, fi, simd).transpose(1, 0, 2, 3).copy()
    co, kh, kw, ci = canon.shape
    fo, fi, k2 = -(-co // pe), -(-ci // simd), kh * kw
    padded = _pad(canon.reshape(co, k2, ci), (fo * pe, k2, fi * simd)).reshape(fo, pe, k2, fi, simd)
    if opt.template == "window_unroll":
        return padded.transpose(1, 0, 3, 2, 4).copy()  # (PE, fo, fi, K², SIMD)
    return padded.transpose(1, 0, 2, 3, 4).copy()  # (PE, fo, K², fi, SIMD)


def layout_shape(spec: LayerSpec, opt: Option) -> tuple[int, ...]:
    p = opt.parallelism
    if opt.template == "dense_reuse":
        return (p["R"], spec.weights // p["R"])
    pe, simd = p["PE"], p["SIMD"]
    if spec.kind == "depthwise":
        c, k2 = spec.out_shape[0], spec.kernel[0] * spec.kernel[1]
        return (pe, -(-c // pe), -(-k2 // simd), simd)
    if spec.kind == "fc":
        no, ni = spec.out_shape[0], math.prod(spec.in_shape)
        return (pe, -(-no // pe), -(-ni // simd), simd)
    co, ci, k2 = spec.out_shape[0], spec.in_shape[0], spec.kernel[0] * spec.kernel[1]
    if opt.template == "window_unroll":
        return (pe, -(-co // pe), -(-ci // simd), k2, simd)
    return (pe, -(-co // pe), k2, -(-ci // simd), simd)


def from_layout(mem: np.ndarray, spec: LayerSpec, opt: Option) -> np.ndarray:
    """The canonical weights a memory image holds (the inverse of :func:`to_layout`)."""
    if opt.template == "dense_reuse":
        flat = mem.T.reshape(-1)
        if spec.kind == "fc":
            no, ni = spec.out_shape[0], math.prod(spec.in_shape)
            return flat.reshape(ni, no).T
        co, ci = spec.out_shape[0], spec.in_shape[0]
        return flat.reshape(ci, co).T.reshape(co, 1, 1, ci)
    if spec.kind == "depthwise":
        pe, fo, fi, simd = mem.shape
        c, (kh, kw) = spec.out_shape[0], spec.kernel
        return mem.transpose(1, 0, 2, 3).reshape(fo * pe, fi * simd)[:c, :kh * kw].reshape(c, kh, kw)
    if spec.kind == "fc":
        pe, fo, fi, simd = mem.shape
        no, ni = spec.out_shape[0], math.prod(spec.in_shape)
        return mem.transpose(1, 0, 2, 3).reshape(fo * pe, fi * simd)[:no, :ni]
    co, ci, (kh, kw) = spec.out_shape[0], spec.in_shape[0], spec.kernel
    if opt.template == "window_unroll":
        pe, fo, fi, k2, simd = mem.shape
        m = mem.transpose(1, 0, 3, 2, 4)
    else:
        pe, fo, k2, fi, simd = mem.shape
        m = mem.transpose(1, 0, 2, 3, 4)
    return m.reshape(fo * pe, k2, fi * simd)[:co, :, :ci].reshape(co, kh, kw, ci)


def _wdtype(bits: int) -> str:
    return "<i1" if bits <= 8 else "<i2"


def _bdtype(bits: int) -> str:
    return "<i4" if bits <= 32 else "<i8"


def write_program(mapping: Any, target: Target, outdir: Path) -> Artifacts:
    """Write the pipeline configuration and the memory images (module docstring)."""
    g: Graph = mapping.graph
    cfg = mapping.cfg
    hw = cfg.hardware
    nodes = {n.name: n for n in g.nodes}
    files: list[str] = []
    layers_json = []
    (outdir / "mem").mkdir()
    for i, (spec, opt, cycles, buf) in enumerate(zip(mapping.specs, mapping.choice, mapping.cycles,
                                                     mapping.plan.layers)):
        entry: dict[str, Any] = {"index": i, "layer": spec.to_json(), "template": opt.template,
                                 "parallelism": dict(opt.par), "cycles": int(cycles),
                                 "multipliers": opt.multipliers, "line_buffer_pixels": line_buffer_pixels(spec)
                                 if spec.kind != "source" else 0, "fifo_depths": list(buf.fifo_depths),
                                 "weights_streamed": buf.streamed}
        if spec.kind == "source":
            entry["out_format"] = _fmt(g, spec.tensor)
        else:
            entry["in_formats"] = [_fmt(g, streamed(g, t)) for t in spec.in_tensors]
            q = g.tensor(spec.tensor).quant
            entry["out_format"] = _fmt(g, spec.tensor) if q is not None else None
        node = nodes.get(spec.name)
        if node is not None and spec.weights:
            canon = canonical_weights(spec, node)
            mem = to_layout(canon, spec, opt)
            wq = node.param_quant[weight_axis(node)[0]]
            entry["weight_frac"] = [int(v) for v in np.atleast_1d(frac_bits(wq))]
            wd = _wdtype(hw.weight_bits)
            name = f"mem/L{i:02d}_weights.bin"
            (outdir / name).write_bytes(mem.astype(wd).tobytes())
            files.append(name)
            entry["weights"] = {"file": name, "dtype": wd, "shape": list(mem.shape)}
            b = bias_codes(spec, node)
            if b is not None:
                bd = _bdtype(hw.accumulator_bits)
                bname = f"mem/L{i:02d}_bias.bin"
                (outdir / bname).write_bytes(b.astype(bd).tobytes())
                files.append(bname)
                entry["bias"] = {"file": bname, "dtype": bd, "count": int(b.size)}
        layers_json.append(entry)
    outputs = []
    for t in g.outputs:
        src = streamed(g, t)
        layer = next(i for i, s in enumerate(mapping.specs) if s.tensor == src)
        outputs.append({"tensor": t, "layer": layer, "shape": list(g.tensor(t).shape[1:])})
    program = {"format": PROGRAM_FORMAT, "version": VERSION, "graph": g.name, "clock_hz": hw.clock_hz,
               "input": {"tensor": g.inputs[0], "shape": list(g.tensor(g.inputs[0]).shape[1:])},
               "outputs": outputs, "sim_frames": cfg.tuner.sim_frames,
               "input_pixels_per_cycle": hw.input_pixels_per_cycle, "layers": layers_json}
    (outdir / "pipeline.json").write_text(dumps(program))
    return Artifacts(outdir, ["pipeline.json"] + files, {"format": PROGRAM_FORMAT, "version": VERSION})


@dataclass
class ProgramLayer:
    index: int
    spec: LayerSpec
    option: Option
    cycles: int
    fifo_depths: list[int]
    in_formats: list[dict[str, Any]]
    out_format: dict[str, Any] | None
    weights: np.ndarray | None = None  # canonical integer codes
    bias: np.ndarray | None = None
    weight_frac: np.ndarray | None = None
    inputs: list[int] = field(default_factory=list)


@dataclass
class Program:
    graph: str
    input_tensor: str
    input_shape: list[int]
    outputs: list[dict[str, Any]]
    layers: list[ProgramLayer]
    sim_frames: int
    pixels_per_cycle: int


def _need(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d or not isinstance(d[key], kind) or isinstance(d[key], bool) \
            and kind is not bool:
        raise TargetError(f"{key!r} missing or not a {getattr(kind, '__name__', kind)}", where=where)
    return d[key]


def _format(d: Any, where: str) -> dict[str, Any]:
    frac, bits, signed = _need(d, "frac", int, where), _need(d, "bits", int, where), d.get("signed")
    if not isinstance(signed, bool) or not 1 <= bits <= 32 or abs(frac) > 64:
        raise TargetError(f"number format {d!r} out of range", where=where)
    return {"frac": frac, "bits": bits, "signed": signed}


def read_program(artifacts: Artifacts) -> Program:
    """The pipeline ``write_program`` wrote, read only through ``artifacts``, every memory
    image's size checked against its declared shape; weights returned in canonical order."""
    where = str(artifacts.path("pipeline.json"))
    doc = artifacts.read_json("pipeline.json")
    if not isinstance(doc, dict) or doc.get("format") != PROGRAM_FORMAT or doc.get("version") != VERSION:
        raise TargetError(f"not a {PROGRAM_FORMAT} version {VERSION} file", where=where)
    try:
        layers = []
        names: dict[str, int] = {}
        for i, e in enumerate(_need(doc, "layers", list, where)):
            w = f"{where}: layer {i}"
            spec = LayerSpec.from_json(_need(e, "layer", dict, w))
            opt = Option(_need(e, "template", str, w), tuple(sorted(_need(e, "parallelism", dict, w).items())),
                         _need(e, "cycles", int, w), _need(e, "multipliers", int, w), 0)
            pl = ProgramLayer(i, spec, opt, opt.cycles, [int(x) for x in _need(e, "fifo_depths", list, w)],
                              [_format(f, w) for f in e.get("in_formats", [])],
                              _format(e["out_format"], w) if e.get("out_format") is not None else None)
            pl.inputs = [names[p] for p in spec.inputs]
            if "weights" in e:
                info = _need(e, "weights", dict, w)
                mem = _array(artifacts, info, w)
                if mem.shape != layout_shape(spec, opt):
                    raise TargetError(f"weight memory of shape {list(mem.shape)}, the template needs "
                                      f"{list(layout_shape(spec, opt))}", where=w)
                pl.weights = from_layout(mem.astype(np.int64), spec, opt)
                pl.weight_frac = np.asarray(_need(e, "weight_frac", list, w), dtype=np.int64)
                if pl.weight_frac.size != spec.out_shape[0]:
                    raise TargetError("weight_frac does not give one format per output channel", where=w)
            if "bias" in e:
                info = _need(e, "bias", dict, w)
                pl.bias = _array(artifacts, {**info, "shape": [_need(info, "count", int, w)]}, w).astype(np.int64)
                if pl.bias.size != spec.out_shape[0]:
                    raise TargetError("bias does not hold one value per output channel", where=w)
            if spec.kind in ("conv", "pointwise", "depthwise", "fc") and pl.weights is None:
                raise TargetError(f"{spec.kind} layer without a weight memory image", where=w)
            names[spec.name] = i
            layers.append(pl)
        inp = _need(doc, "input", dict, where)
        outs = _need(doc, "outputs", list, where)
        for o in outs:
            if not isinstance(o, dict) or not isinstance(o.get("layer"), int) or not 0 <= o["layer"] < len(layers):
                raise TargetError(f"output {o!r} names no layer", where=where)
        prog = Program(str(doc.get("graph", "")), _need(inp, "tensor", str, where), [int(s) for s in _need(
            inp, "shape", list, where)], outs, layers, int(doc.get("sim_frames", 4)),
            int(doc.get("input_pixels_per_cycle", 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise TargetError(f"malformed pipeline description: {type(e).__name__}: {e}", where=where) from None
    check_program(prog, where)
    return prog


def _array(artifacts: Artifacts, info: dict[str, Any], where: str) -> np.ndarray:
    name = _need(info, "file", str, where)
    dtype = _need(info, "dtype", str, where)
    if dtype not in ("<i1", "<i2", "<i4", "<i8"):
        raise TargetError(f"memory image {name!r}: dtype {dtype!r} is not a little-endian integer", where=where)
    shape = [int(x) for x in _need(info, "shape", list, where)]
    if any(x < 0 for x in shape):
        raise TargetError(f"memory image {name!r}: negative shape {shape}", where=where)
    size = math.prod(shape) * np.dtype(dtype).itemsize
    data = artifacts.read_bytes(name, max_bytes=size)
    if len(data) != size:
        raise TargetError(f"memory image {name!r} holds {len(data)} bytes, {size} expected for {shape} {dtype}",
                          where=where)
    return np.frombuffer(data, dtype=dtype).reshape(shape)
