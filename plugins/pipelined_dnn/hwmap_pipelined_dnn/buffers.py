"""Step (d) of chapter Fig. 3.20: tune the buffers, and place the weights.

* **Line buffers**: a K_h×K_w window engine over an input W pixels wide keeps
  ``(K_h − 1)·W + K_w`` pixels of its input, ``((K−1)·W + K)·C`` values: the least that
  lets it slide the window in raster order (the line buffer of FINN's sliding window
  generator and of hls4ml's io_stream convolution). An fc engine keeps its whole
  input vector (FINN's MVAU input buffer: it re-reads it for every fold of its outputs); an
  elementwise engine or a global pool holds one pixel. An MVAU convolution folded over its
  outputs also keeps the current window (K²·C_in values), and a global pool its C
  accumulators.
* **Residual bypass FIFOs**: at an add joining a branch with its bypass, the bypass must
  hold what the fork produces before the branch delivers the matching pixel, or the fork
  blocks on the full bypass while the branch starves: a deadlock. With G_slow(k) the fork
  pixel the branch needs for the add's pixel k and K_fast(n) the last add pixel the bypass
  can deliver from fork pixel n, the bypass FIFO needs ``max_k K_fast(G_slow(k)) − k``
  entries (:func:`bypass_depths`; for an identity bypass: ``max_k G_slow(k) − k``).
* **FIFO depths**: the pipeline is simulated once with unbounded FIFOs, frames arriving
  every II cycles (:mod:`.cyclesim`), and each FIFO gets the peak it held beyond the
  consumer's line buffer — at least ``tuner.min_fifo_depth`` and the bypass bound (FINN
  sizes its FIFOs the same way, from a simulation: ``InsertAndSetFIFODepths``). With those
  depths the paced schedule is feasible, so the pipeline sustains one frame per II and
  cannot deadlock.
* **Weights** stay on chip while weights and buffers fit ``hardware.onchip_memory_bytes``;
  otherwise layers move to external memory, those that read each weight fewest times per
  frame first (an fc layer once, a convolution once per output pixel group: FINN's
  ``mem_mode = external`` streams the weights every time they are used). Streamed weights
  cost external bandwidth: II ≥ f·(streamed bytes per frame)/bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .cyclesim import Edge, SimLayer, simulate
from .layers import LayerSpec, need_last, release_last
from .templates import Option

__all__ = ["LayerBuffers", "BufferPlan", "line_buffer_pixels", "bypass_depths", "sim_layers", "plan_buffers",
           "NotFit", "weight_bytes"]


class NotFit(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


def line_buffer_pixels(spec: LayerSpec) -> int:
    """Pixels of its input an engine holds (see the module docstring)."""
    if spec.kind == "fc":
        return spec.in_items
    if spec.window:
        kh, kw = spec.kernel
        return (kh - 1) * spec.in_shape[2] + kw
    return 1


def weight_bytes(spec: LayerSpec, bits: int) -> int:
    return -(-spec.weights * bits // 8)


@dataclass
class LayerBuffers:
    line_buffer_pixels: int
    line_buffer_bytes: int
    window_bytes: int
    accumulator_bytes: int
    fifo_depths: list[int]  # per input edge, pixels
    fifo_bytes: list[int]
    bypass_min_depths: list[int]
    weight_bytes: int
    bias_bytes: int
    streamed: bool = False
    external_bytes_per_frame: int = 0

    @property
    def onchip_bytes(self) -> int:
        return (self.line_buffer_bytes + self.window_bytes + self.accumulator_bytes + sum(self.fifo_bytes)
                + (0 if self.streamed else self.weight_bytes) + self.bias_bytes)

    @property
    def buffer_bytes(self) -> int:
        return self.line_buffer_bytes + self.window_bytes + self.accumulator_bytes + sum(self.fifo_bytes)

    def to_json(self) -> dict[str, Any]:
        return {"line_buffer_pixels": self.line_buffer_pixels, "line_buffer_bytes": self.line_buffer_bytes,
                "window_bytes": self.window_bytes, "accumulator_bytes": self.accumulator_bytes,
                "fifo_depths": self.fifo_depths, "fifo_bytes": self.fifo_bytes,
                "bypass_min_depths": self.bypass_min_depths, "weight_bytes": self.weight_bytes,
                "bias_bytes": self.bias_bytes, "weights_streamed": self.streamed,
                "external_bytes_per_frame": self.external_bytes_per_frame, "onchip_bytes": self.onchip_bytes}


@dataclass
class BufferPlan:
    layers: list[LayerBuffers]
    onchip_bytes: int
    external_bytes_per_frame: int
    bandwidth_ii: int  # cycles per frame the external memory needs (0: nothing streamed)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"onchip_bytes": self.onchip_bytes, "external_bytes_per_frame": self.external_bytes_per_frame,
                "bandwidth_initiation_interval_cycles": self.bandwidth_ii, "notes": self.notes}


def _chain_map(specs: Sequence[LayerSpec], index: dict[str, int], path: list[int], start: np.ndarray) -> np.ndarray:
    """Follow output-pixel indices of ``path[0]`` back through ``path`` (each layer's first
    input) to the pixel indices of the producer of ``path[-1]``."""
    cur = start
    for li in path:
        spec = specs[li]
        work = np.full_like(cur, spec.items - 1) if spec.per_input else cur
        cur = need_last(spec)[work]
    return cur


def _ancestors(specs: Sequence[LayerSpec], index: dict[str, int], li: int) -> list[int]:
    out = [li]
    while specs[out[-1]].inputs:
        out.append(index[specs[out[-1]].inputs[0]])
    return out


def bypass_depths(specs: Sequence[LayerSpec]) -> dict[tuple[int, int], int]:
    """(add layer, input edge) → the least FIFO depth on that edge that cannot deadlock."""
    index = {s.name: i for i, s in enumerate(specs)}
    out: dict[tuple[int, int], int] = {}
    for j, spec in enumerate(specs):
        if spec.kind != "add" or len(spec.inputs) != 2:
            continue
        heads = [index[p] for p in spec.inputs]
        anc = [_ancestors(specs, index, h) for h in heads]
        fork = next((a for a in anc[0] if a in anc[1]), None)
        if fork is None:
            continue
        k = np.arange(spec.items, dtype=np.int64)
        g = []
        for a in anc:
            path = a[:a.index(fork)]
            g.append(_chain_map(specs, index, path, k))  # fork pixel needed for add pixel k
        for fast in (0, 1):
            slow = 1 - fast
            kf = np.searchsorted(g[fast], g[slow], side="right") - 1
            out[(j, fast)] = int(max(0, int(np.max(kf - k))))
    return out


def sim_layers(specs: Sequence[LayerSpec], cycles: Sequence[float], fifo: Sequence[Sequence[int | None]],
               pixels_per_cycle: int) -> list[SimLayer]:
    index = {s.name: i for i, s in enumerate(specs)}
    out = []
    for li, spec in enumerate(specs):
        if spec.kind == "source":
            out.append(SimLayer(spec.name, spec.out_items, spec.out_items, 1.0 / pixels_per_cycle))
            continue
        need, last, lb = need_last(spec), release_last(spec), line_buffer_pixels(spec)
        edges = [Edge(index[p], need, last, fifo[li][ei], lb) for ei, p in enumerate(spec.inputs)]
        out.append(SimLayer(spec.name, spec.items, 1 if spec.per_input else spec.out_items,
                            float(cycles[li]) / spec.items, spec.per_input, edges))
    return out


def output_layers(specs: Sequence[LayerSpec], outputs: Sequence[str]) -> list[int]:
    """Engines producing the graph outputs (through wiring: the layer whose tensor feeds it)."""
    return sorted({i for i, s in enumerate(specs) if s.tensor in outputs} | {len(specs) - 1})


def plan_buffers(specs: Sequence[LayerSpec], choice: Sequence[Option], *, ii: int, act_bits: int, weight_bits: int,
                 acc_bits: int, onchip_budget: int, external_bytes: int, bandwidth: float, clock_hz: float,
                 min_depth: int, pixels_per_cycle: int, outputs: Sequence[int], frames: int) -> BufferPlan:
    """Line buffers, FIFO depths and weight placement (module docstring). Raises
    :class:`NotFit` when the buffers alone exceed the on-chip memory, or weights that do not
    fit on chip have no external memory to go to."""
    cycles = [o.cycles for o in choice]
    bypass = bypass_depths(specs)
    unbounded: list[list[int | None]] = [[None] * len(s.inputs) for s in specs]
    run = simulate(sim_layers(specs, cycles, unbounded, pixels_per_cycle), outputs, frames, pace=float(ii),
                   spread=True, bounded=False)
    occ = {(o["consumer"], o["producer"]): o["peak_pixels"] for o in run.occupancy}
    index = {s.name: i for i, s in enumerate(specs)}
    plans: list[LayerBuffers] = []
    for li, (spec, opt) in enumerate(zip(specs, choice)):
        lb = line_buffer_pixels(spec) if spec.kind != "source" else 0
        cin = spec.in_shape[0]
        depths, fbytes, mins = [], [], []
        for ei, p in enumerate(spec.inputs):
            need = bypass.get((li, ei), 0)
            held = occ.get((spec.name, p), 0)
            d = max(min_depth, need, held - lb)
            depths.append(d)
            mins.append(max(min_depth, need))
            fbytes.append(-(-d * specs[index[p]].out_shape[0] * act_bits // 8))
        folds_out = math.ceil(spec.out_shape[0] / opt.parallelism.get("PE", spec.out_shape[0])) \
            if "PE" in opt.parallelism else 1
        window = 0
        if opt.template == "mvau" and spec.kind in ("conv", "pointwise") and folds_out > 1:
            window = -(-spec.kernel[0] * spec.kernel[1] * cin * act_bits // 8)
        lbb = -(-lb * cin * act_bits // 8) if spec.kind != "fc" else -(-math.prod(spec.in_shape) * act_bits // 8)
        acc = -(-spec.out_shape[0] * acc_bits // 8) if spec.pool == "global_avg" else 0
        plans.append(LayerBuffers(lb, lbb if spec.kind != "source" else 0, window, acc, depths, fbytes, mins,
                                  weight_bytes(spec, weight_bits), -(-spec.biases * acc_bits // 8)))
    notes: list[str] = []
    total = sum(p.onchip_bytes for p in plans)
    if total > onchip_budget:  # stream weights, those read fewest times per frame first
        order = sorted((i for i, p in enumerate(plans) if p.weight_bytes),
                       key=lambda i: (choice[i].reuse, -plans[i].weight_bytes, i))
        for i in order:
            if total <= onchip_budget:
                break
            plans[i].streamed = True
            plans[i].external_bytes_per_frame = plans[i].weight_bytes * choice[i].reuse
            total -= plans[i].weight_bytes
        streamed = [specs[i].name for i, p in enumerate(plans) if p.streamed]
        if streamed:
            notes.append(f"weights of {len(streamed)} layer(s) streamed from external memory: {', '.join(streamed)}")
    if total > onchip_budget:  # then cut the FIFOs to their deadlock-free minimum
        for lbuf, spec in zip(plans, specs):
            lbuf.fifo_depths = list(lbuf.bypass_min_depths)
            lbuf.fifo_bytes = [-(-d * specs[index[q]].out_shape[0] * act_bits // 8)
                               for d, q in zip(lbuf.fifo_depths, spec.inputs)]
        notes.append("FIFOs cut to their deadlock-free minimum to fit hardware.onchip_memory_bytes: the pipeline "
                     "may stall")
        total = sum(p.onchip_bytes for p in plans)
    if total > onchip_budget:
        raise NotFit("onchip_memory", f"line buffers, FIFOs and biases need {total:,} bytes, more than "
                                      f"hardware.onchip_memory_bytes = {onchip_budget:,}, even with every weight "
                                      "streamed and the FIFOs at their minimum")
    ext_store = sum(p.weight_bytes for p in plans if p.streamed)
    ext = sum(p.external_bytes_per_frame for p in plans)
    if ext_store and (bandwidth <= 0 or ext_store > external_bytes):
        raise NotFit("weight_memory", f"{ext_store:,} bytes of weights do not fit on chip and the external memory "
                                      f"holds {external_bytes:,} bytes (bandwidth {bandwidth:g} B/s)")
    bw_ii = int(math.ceil(ext * clock_hz / bandwidth)) if ext else 0
    return BufferPlan(plans, total, ext, bw_ii, notes)
