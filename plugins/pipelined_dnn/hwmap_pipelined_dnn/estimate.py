"""The KPI record of a configured pipeline.

Throughput and latency come from the cycle simulation of the configured pipeline
(:mod:`.cyclesim`, run by the map stage): ``f / II_simulated`` and the first frame's
latency. The analytic estimate, ``II = max over layers of cycles``, the balanced bound
``f·R/ΣW`` and their ratios sit beside it in ``resources``. Energy per inference, by kind:

* ``compute``: MACs × ``energy.mac_pj``;
* ``memory``: on-chip accesses × bits × ``energy.onchip_pj_per_bit`` — every weight read
  each time it is used (``weights × reads per frame``, a weight shared by MMV pixels once),
  the input written into the engine's buffer once and read once per window that covers it,
  each bias once per output pixel — plus streamed weights × bits ×
  ``energy.external_pj_per_bit``;
* ``static``: ``energy.static_w`` over the frame period.

Per layer: template, parallelism, cycles, multipliers, memory blocks, buffer bytes,
energy, its busy fraction, and from the core's profiler (:func:`hwmap.profile.profile` on
the legalized graph at the simulated frame rate) its output data volume and bandwidth.
"""

from __future__ import annotations

import math
from typing import Any

from hwmap import Assumption, Bottleneck, KPIs, LayerCost, Provenance, Target, TargetError
from hwmap.profile import profile

from .layers import LayerSpec
from .legalize import META_KEY, SYNTHETIC_NOTE
from .mapping import PipelineMapping
from .templates import TEMPLATES, Option

__all__ = ["estimate", "layer_traffic"]


def layer_traffic(spec: LayerSpec, opt: Option, streamed: bool, wbits: int, abits: int,
                  acc_bits: int) -> tuple[int, int]:
    """(on-chip bits, external bits) one frame moves for this layer (module docstring)."""
    if spec.kind == "source":
        return 0, 0
    cin = spec.in_shape[0]
    writes = spec.in_items * cin * len(spec.inputs)
    k2 = spec.kernel[0] * spec.kernel[1]
    if spec.kind in ("conv", "pointwise"):
        reads = spec.out_items * k2 * cin
    elif spec.kind == "depthwise" or spec.pool in ("max", "avg"):
        reads = spec.out_items * k2 * cin
    elif spec.kind == "fc":
        reads = math.prod(spec.in_shape)
    else:
        reads = spec.in_items * cin * len(spec.inputs)
    weight_reads = spec.weights * opt.reuse * wbits
    bias = spec.biases * spec.out_items * acc_bits
    onchip = (writes + reads) * abits + bias + (0 if streamed else weight_reads)
    return onchip, (weight_reads if streamed else 0)


def estimate(m: PipelineMapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    if not isinstance(m, PipelineMapping):
        raise TargetError(f"expected a pipelined_dnn mapping, got {type(m).__name__}")
    cfg = m.cfg
    hw, en = cfg.hardware, cfg.energy
    f = hw.clock_hz
    sim = m.sim
    ii_sim = sim.ii
    ii = m.analytic_ii
    fps = f / ii_sim
    rows = {}
    try:
        prof = profile(m.graph, fps=fps, act_bits=hw.activation_bits, input_bits=hw.activation_bits,
                       weight_bits=hw.weight_bits)
        for r in prof.rows:
            for name in r.nodes:
                rows[name] = r
    except Exception as e:  # the profile is an addition; never the reason the estimate fails
        raise TargetError(f"profiling the legalized graph failed: {e}") from None
    layers: list[LayerCost] = []
    e_compute = e_onchip = e_ext = 0.0
    used_mult = sum(o.multipliers for o in m.choice)
    for spec, opt, cyc, buf in zip(m.specs, m.choice, m.cycles, m.plan.layers):
        onchip, ext = layer_traffic(spec, opt, buf.streamed, hw.weight_bits, hw.activation_bits,
                                    hw.accumulator_bits)
        ec = spec.macs * en.mac_pj * 1e-12
        em = onchip * en.onchip_pj_per_bit * 1e-12 + ext * en.external_pj_per_bit * 1e-12
        e_compute += ec
        e_onchip += onchip * en.onchip_pj_per_bit * 1e-12
        e_ext += ext * en.external_pj_per_bit * 1e-12
        row = rows.get(spec.name)
        res: dict[str, Any] = {
            "kind": spec.kind, "template": opt.template, "parallelism": dict(opt.par), "multipliers": opt.multipliers,
            "memory_blocks": 0 if buf.streamed else opt.blocks, "buffer_bytes": buf.buffer_bytes,
            "line_buffer_pixels": buf.line_buffer_pixels, "fifo_depths": buf.fifo_depths,
            "weight_bytes": buf.weight_bytes, "weights_streamed": buf.streamed,
            "external_bytes_per_frame": buf.external_bytes_per_frame,
            "busy_fraction": cyc / ii_sim if ii_sim else 0.0,
            "multiplier_utilization": (spec.macs / (opt.multipliers * ii_sim)) if opt.multipliers else None,
            "stalled_cycles": sim.blocked.get(spec.name, 0.0), "starved_cycles": sim.starved.get(spec.name, 0.0),
            "onchip_bits_per_frame": onchip, "external_bits_per_frame": ext,
        }
        if row is not None:
            res.update({"data_volume": row.data_volume, "data_volume_rel": row.data_volume_rel,
                        "bandwidth_bps": row.bandwidth_bps, "profile_row": row.index})
        layers.append(LayerCost(spec.name, spec.op, latency_s=cyc / f, cycles=int(cyc),
                                energy_j={"compute": ec, "memory": em}, ops=float(spec.macs), resources=res))
    e_static = en.static_w / fps
    breakdown = {"compute": e_compute, "memory": e_onchip + e_ext, "static": e_static}
    energy = sum(breakdown.values())
    b = m.bottleneck
    bspec = m.specs[b]
    bound = m.balanced_bound_fps
    streamed_bound = m.plan.bandwidth_ii and m.plan.bandwidth_ii >= max(o.cycles for o in m.choice)
    if streamed_bound:
        bottleneck = Bottleneck(f"external memory bandwidth: streamed weights need {m.plan.bandwidth_ii:,} cycles "
                                f"per frame; raise hardware.external_bandwidth_bytes_per_s or "
                                f"hardware.onchip_memory_bytes", "external memory bandwidth", bspec.name)
    elif bspec.kind == "source":
        bottleneck = Bottleneck(f"the input interface: {hw.input_pixels_per_cycle} pixel(s) per cycle take {ii:,} "
                                f"cycles per frame, more than any engine; raise hardware.input_pixels_per_cycle "
                                f"({used_mult:,} of {hw.multipliers:,} multiply units in use)", "input bandwidth",
                                bspec.name)
    else:
        bottleneck = Bottleneck(f"layer {bspec.name!r} ({bspec.kind}, {m.choice[b].template} "
                                f"{_par(m.choice[b])}) takes {ii:,} cycles per frame, the longest of the pipeline; "
                                f"{used_mult:,} of {hw.multipliers:,} multiply units in use, "
                                f"{fps / bound:.1%} of the balanced bound", "multipliers", bspec.name)
    resources: dict[str, Any] = {
        "multipliers_budget": hw.multipliers, "multipliers_used": used_mult,
        "memory_blocks_budget": hw.memory_blocks,
        "memory_blocks_used": sum(0 if bb.streamed else o.blocks for o, bb in zip(m.choice, m.plan.layers)),
        "onchip_memory_bytes_budget": hw.onchip_memory_bytes, "onchip_memory_bytes_used": m.plan.onchip_bytes,
        "initiation_interval_cycles": ii, "simulated_initiation_interval_cycles": ii_sim,
        "estimate_over_simulation": ii / ii_sim if ii_sim else None,
        "latency_cycles": sim.latency, "balanced_bound_fps": bound, "fps": fps,
        "fps_over_balanced_bound": fps / bound if bound else None,
        "bottleneck_layer": bspec.name, "tuner": m.tuned.method,
        "external_bytes_per_frame": m.plan.external_bytes_per_frame,
        "external_bandwidth_used_bytes_per_s": m.plan.external_bytes_per_frame * fps,
        "bandwidth_initiation_interval_cycles": m.plan.bandwidth_ii,
        "deadlock": sim.deadlock, "simulation_sweeps": sim.sweeps, "simulated_frames": sim.frames,
        "energy_onchip_j": e_onchip, "energy_external_j": e_ext,
        "input_bandwidth_bps": prof.input.bandwidth_bps,
    }
    if activity and "simulated_initiation_interval_cycles" in activity:
        resources["artifact_simulated_initiation_interval_cycles"] = activity["simulated_initiation_interval_cycles"]
    assumptions = dict(target.constants())
    assumptions.update(_models(m))
    calib = m.graph.meta.get(META_KEY, {}).get("calibration", {})
    if isinstance(calib, dict) and calib.get("source"):
        text = (f"{SYNTHETIC_NOTE} ({calib.get('samples')} seeded samples)" if calib["source"] == "synthetic"
                else f"activation ranges from {calib.get('samples')} calibration samples")
        assumptions["calibration"] = Assumption(text, "", "the chapter, eqs. 3.9-3.11 (fixed point from the range)")
    kpis = {"latency_s": "simulated", "throughput_inf_per_s": "simulated", "utilization": "simulated",
            "energy_per_inference_j": "modelled", "power_w": "modelled", "weight_memory_bytes": "counted",
            "activation_memory_bytes": "counted", "ops_per_inference": "counted"}
    return KPIs(
        latency_s=sim.latency / f, throughput_inf_per_s=fps, energy_per_inference_j=energy, power_w=energy * fps,
        weight_memory_bytes=sum(bb.weight_bytes + bb.bias_bytes for bb in m.plan.layers),
        activation_memory_bytes=sum(bb.buffer_bytes for bb in m.plan.layers),
        ops_per_inference=m.macs, ops_kind="MAC",
        utilization=min(1.0, m.macs / (used_mult * ii_sim)) if used_mult and ii_sim else 0.0,
        resources=resources, layers=layers, bottleneck=bottleneck, energy_breakdown=breakdown,
        provenance=Provenance(kpis=kpis), assumptions=assumptions)


def _par(o: Option) -> str:
    return "×".join(f"{k}={v}" for k, v in o.par)


def _models(m: PipelineMapping) -> dict[str, Assumption]:
    src = "the chapter, Section 3.5, Fig. 3.20"
    out = {
        "model.pipeline": Assumption(
            "one engine per layer, chained by FIFOs; a frame every II = max over layers of cycles; throughput "
            "measured by the cycle simulation of the configured pipeline (data, FIFO space and output blocking per "
            "pixel)", "", f"{src}; FINN (Umuroglu et al., FPGA 2017; Blott et al., TRETS 2018)"),
        "model.balanced_bound": Assumption("f·R/ΣW: R multiply units busy every cycle on W MACs per frame", "",
                                           "DNeuro MobileNet demo: 162.76 FPS against a bound of 185.7 FPS (N2D2)"),
        "model.templates": Assumption("; ".join(f"{t.name}: {t.source}" for t in TEMPLATES), "",
                                      "templates.py: cycle, multiplier and memory model of each"),
        "model.tuner": Assumption(
            "bisection on the initiation interval, each layer at its cheapest option meeting it (exact for one "
            "resource); greedy throughput-per-resource steps with memory blocks budgeted; cheapest configuration "
            "meeting tuner.target_fps when set", "", f"{src} (ROI algorithm)"),
        "model.buffers": Assumption(
            "line buffer (K-1)·W+K pixels per window engine; residual bypass FIFO max_k K_fast(G_slow(k)) - k; "
            "FIFO depths from a simulation with frames every II; weights streamed from external memory, fewest "
            "reads per frame first, when they do not fit on chip", "",
            f"{src}; FINN InsertAndSetFIFODepths; FINN mem_mode external"),
        "model.energy": Assumption(
            "MACs × mac_pj; on-chip bits (weights per use, input written once and read per window, bias per output "
            "pixel) × onchip_pj_per_bit; streamed weight bits × external_pj_per_bit; static_w / fps", "",
            "Horowitz, ISSCC 2014 (energy per operation and access)"),
        "model.quantization": Assumption(
            "power-of-two fixed point: weights per output channel, activations per tensor; biases at the "
            "accumulator scale; requantization by rounding shifts", "", "the chapter, eqs. 3.9-3.11"),
    }
    return out
