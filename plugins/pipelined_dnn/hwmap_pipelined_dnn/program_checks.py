"""Checks on a pipeline read back from a compile directory, which is untrusted input.

:func:`check_program` refuses, before anything runs, a ``pipeline.json`` whose layers do
not chain into a well-formed dataflow graph: a window's geometry must give the output shape
it declares (``(H + p_t + p_b − K_h) // S_h + 1``, ONNX's rule for explicit pads without
dilation or ceil mode, which is all the templates take), each layer must read the shape its
producer writes, every size, stride, cycle count and FIFO depth must be positive, and the
cycle simulation's tables must fit the memory limit. :func:`batch_for` sizes the slices of
the integer simulation so that the largest layer's window matrix fits it too. Every
refusal is a :class:`~hwmap.TargetError` naming the file and the layer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hwmap import TargetError
from hwmap.limits import check_size, max_memory

if TYPE_CHECKING:
    from .layers import LayerSpec
    from .postprocess import Program

__all__ = ["check_program", "batch_for", "sample_bytes", "MAX_SIM_FRAMES", "MAX_PIXELS_PER_CYCLE"]

#: The bounds the config schema puts on ``tuner.sim_frames`` and
#: ``hardware.input_pixels_per_cycle`` (hardware.py); a program outside them was not written
#: by this plugin.
MIN_SIM_FRAMES, MAX_SIM_FRAMES = 3, 64
MAX_PIXELS_PER_CYCLE = 4096
_KINDS = ("source", "conv", "pointwise", "depthwise", "fc", "pool", "add", "activation")
_POOLS = ("", "max", "avg", "global_avg", "global_max")
#: Arrays of one frame's items the cycle simulation keeps per layer (start, finish, write
#: times, and per edge the index tables and their temporaries), 8 bytes each.
_SIM_ARRAYS = 8


def _window_out(spec: LayerSpec) -> tuple[int, int]:
    (_, h, w), (kh, kw), (sh, sw), (pt, pl, pb, pr) = spec.in_shape, spec.kernel, spec.stride, spec.pads
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def _check_layer(spec: LayerSpec, produced: dict[str, tuple[int, int, int]], first: bool, where: str) -> None:
    if spec.kind not in _KINDS or spec.pool not in _POOLS:
        raise TargetError(f"unknown layer kind {spec.kind!r} (pool {spec.pool!r})", where=where)
    if (spec.kind == "source") != first:
        raise TargetError("the source must be the first layer and the only one", where=where)
    if min(*spec.in_shape, *spec.out_shape, *spec.kernel, *spec.stride) < 1 or min(spec.pads) < 0:
        raise TargetError(f"shapes {list(spec.in_shape)} → {list(spec.out_shape)}, kernel {list(spec.kernel)} and "
                          f"stride {list(spec.stride)} must be positive, pads {list(spec.pads)} not negative",
                          where=where)
    if first:
        return
    if not spec.inputs or len(spec.inputs) != (2 if spec.kind == "add" else 1):
        raise TargetError(f"a {spec.kind} layer with {len(spec.inputs)} inputs", where=where)
    for p in spec.inputs:
        if produced[p] != spec.in_shape:
            raise TargetError(f"reads {list(spec.in_shape)} but its input {p!r} writes {list(produced[p])}",
                              where=where)
    c_in, h, w = spec.in_shape
    if spec.kind == "fc" or spec.per_input:
        expected: tuple[int, ...] = (spec.out_shape[0], 1, 1)
    elif spec.window:
        if spec.kernel[0] > h + spec.pads[0] + spec.pads[2] or spec.kernel[1] > w + spec.pads[1] + spec.pads[3]:
            raise TargetError(f"kernel {list(spec.kernel)} larger than its padded input", where=where)
        expected = (spec.out_shape[0], *_window_out(spec))
    else:
        expected = spec.in_shape
    if spec.kind in ("pool", "depthwise", "add", "activation"):
        expected = (c_in, *expected[1:])
    if tuple(spec.out_shape) != expected:
        raise TargetError(f"declares output {list(spec.out_shape)}, its input {list(spec.in_shape)}, kernel "
                          f"{list(spec.kernel)}, stride {list(spec.stride)} and pads {list(spec.pads)} give "
                          f"{list(expected)}", where=where)


def check_program(prog: Program, where: str) -> None:
    """Refuse a program whose layers, formats or simulation settings this plugin never writes
    (module docstring)."""
    if not MIN_SIM_FRAMES <= prog.sim_frames <= MAX_SIM_FRAMES:
        raise TargetError(f"sim_frames {prog.sim_frames} outside {MIN_SIM_FRAMES}..{MAX_SIM_FRAMES}", where=where)
    if not 1 <= prog.pixels_per_cycle <= MAX_PIXELS_PER_CYCLE:
        raise TargetError(f"input_pixels_per_cycle {prog.pixels_per_cycle} outside 1..{MAX_PIXELS_PER_CYCLE}",
                          where=where)
    if not prog.layers:
        raise TargetError("a pipeline without layers", where=where)
    produced: dict[str, tuple[int, int, int]] = {}
    table = 0
    for pl in prog.layers:
        spec = pl.spec
        at = f"{where}: layer {pl.index} ({spec.name!r})"
        _check_layer(spec, produced, pl.index == 0, at)
        if pl.cycles < 1 or len(pl.fifo_depths) != len(spec.inputs) or any(d < 1 for d in pl.fifo_depths):
            raise TargetError(f"cycles {pl.cycles} and FIFO depths {pl.fifo_depths[:4]} must be positive, one "
                              "depth per input", where=at)
        if spec.kind != "source" and len(pl.in_formats) != len(spec.inputs):
            raise TargetError(f"{len(pl.in_formats)} input formats for {len(spec.inputs)} inputs", where=at)
        if spec.kind in ("source", "pool", "add", "activation") and pl.out_format is None:
            raise TargetError(f"a {spec.kind} layer without an output format", where=at)
        produced[spec.name] = spec.out_shape
        table += (spec.in_items + spec.out_items + spec.items) * _SIM_ARRAYS * 8 * prog.sim_frames
        check_size(table, f"the cycle simulation of {len(produced)} layers ({prog.sim_frames} frames)", where=at,
                   error=TargetError)
    source = prog.layers[0].spec.out_shape
    if math.prod(source) != math.prod(prog.input_shape):
        raise TargetError(f"the source writes {list(source)}, the input is {prog.input_shape}", where=where)
    for o in prog.outputs:
        shape = o.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape) \
                or math.prod(shape) != math.prod(prog.layers[o["layer"]].spec.out_shape):
            raise TargetError(f"output {str(o.get('tensor'))[:80]!r}: shape {str(shape)[:80]} is not what layer "
                              f"{o['layer']} writes", where=where)


def sample_bytes(spec: LayerSpec) -> int:
    """The most bytes the integer simulation of ``spec`` holds per sample: its padded input
    and its window matrix (int64), or its input and output."""
    c, h, w = spec.in_shape
    if spec.window:
        (kh, kw), (pt, pl, pb, pr) = spec.kernel, spec.pads
        oh, ow = spec.out_shape[1:]
        return 8 * (c * (h + pt + pb) * (w + pl + pr) + c * oh * ow * kh * kw + math.prod(spec.out_shape))
    return 8 * (c * h * w + math.prod(spec.out_shape))


def batch_for(prog: Program, limit: int, where: str) -> int:
    """How many samples one slice of the integer simulation may take (at most ``limit``)
    so that its largest layer fits the memory limit; refused if not even one sample does."""
    per_sample = max(sample_bytes(pl.spec) for pl in prog.layers)
    check_size(per_sample, "one sample's largest layer in the integer simulation", where=where, error=TargetError)
    return max(1, min(limit, max_memory() // max(per_sample, 1)))
