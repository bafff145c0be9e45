"""The map stage: chapter Fig. 3.20 steps (a, b) selection, (c) parallelism and (d) buffers.

:func:`map_graph` converts the legalized graph into its layers (:mod:`.layers`), lists every
template's options per layer (:mod:`.templates`), tunes the parallelism (:mod:`.tuner`),
sizes the buffers and places the weights (:mod:`.buffers`), re-tunes once at the external
memory's initiation interval when streamed weights bound it (no multiplier bought beyond
what that rate needs), and simulates the configured pipeline cycle by cycle
(:mod:`.cyclesim`): the :class:`PipelineMapping` holds all of it.
"""

from __future__ import annotations

import time
from typing import Any

from hwmap import DoesNotFitError, Graph, Mapping, Target, TargetError

from .buffers import BufferPlan, NotFit, output_layers, plan_buffers, sim_layers
from .cyclesim import SimResult, latency, simulate
from .hardware import PipelinedConfig
from .layers import LayerSpec, NoTemplate, extract_layers
from .templates import Context, Option, options
from .tuner import Infeasible, TuneResult, balanced_bound_fps, tune

__all__ = ["PipelineMapping", "map_graph", "MAPPING_FORMAT"]

MAPPING_FORMAT = "hwmap.pipelined_dnn.mapping"


class PipelineMapping(Mapping):
    """The configured pipeline: layers, chosen options, buffers, the cycle simulation."""

    def __init__(self, graph: Graph, cfg: PipelinedConfig, specs: list[LayerSpec], choice: list[Option],
                 tuned: TuneResult, plan: BufferPlan, cycles: list[int], sim: SimResult, outputs: list[int],
                 notes: list[str], candidates: list[int], tuning_seconds: float) -> None:
        super().__init__(graph)
        self.cfg, self.specs, self.choice, self.tuned, self.plan = cfg, specs, choice, tuned, plan
        self.cycles, self.sim, self.outputs, self.notes, self.candidates = cycles, sim, outputs, notes, candidates
        self.tuning_seconds = tuning_seconds  # wall time, not part of the record (not deterministic)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.specs)

    @property
    def analytic_ii(self) -> int:
        return max(self.cycles)

    @property
    def bottleneck(self) -> int:
        ii = self.analytic_ii
        return next(i for i, c in enumerate(self.cycles) if c == ii)

    @property
    def balanced_bound_fps(self) -> float:
        return balanced_bound_fps(self.cfg.hardware.clock_hz, self.cfg.hardware.multipliers, self.macs)

    def to_json(self) -> dict[str, Any]:
        hw = self.cfg.hardware
        return {
            "format": MAPPING_FORMAT, "graph": self.graph.name,
            "clock_hz": hw.clock_hz, "multipliers_budget": hw.multipliers,
            "tuner": self.tuned.to_json(),
            "buffers": self.plan.to_json(),
            "initiation_interval_cycles": self.analytic_ii,
            "balanced_bound_fps": self.balanced_bound_fps,
            "bottleneck_layer": self.specs[self.bottleneck].name,
            "layers": [{"layer": s.to_json(), "options_considered": n, "choice": o.to_json(), "cycles": c,
                        "buffers": b.to_json()}
                       for s, o, c, b, n in zip(self.specs, self.choice, self.cycles, self.plan.layers,
                                                self.candidates)],
            "cycle_simulation": {k: v for k, v in self.sim.to_json().items() if k != "timeline"},
            "notes": self.notes,
        }


def _fail(rule: str, message: str) -> DoesNotFitError:
    return DoesNotFitError(f"{rule}: {message}", [f"{rule}: {message}"])


def map_graph(graph: Graph, target: Target) -> PipelineMapping:
    cfg = target.config_as(PipelinedConfig)
    hw, tc = cfg.hardware, cfg.tuner
    try:
        specs = extract_layers(graph)
    except NoTemplate as e:
        raise TargetError(f"{e.rule}: {e}", where=f"node {e.node!r}") from None
    t0 = time.perf_counter()
    ctx = Context(hw.weight_bits, hw.memory_block_bits, hw.input_pixels_per_cycle)
    opts = [options(s, ctx) for s in specs]
    budgets = {"multipliers": hw.multipliers, "memory_blocks": hw.memory_blocks}
    outputs = output_layers(specs, graph.outputs)
    notes: list[str] = []
    try:
        tuned = tune(specs, opts, budgets, clock_hz=hw.clock_hz, target_fps=tc.target_fps)
        seconds = time.perf_counter() - t0
        plan = _plan(specs, tuned, cfg, outputs)
        if plan.bandwidth_ii > tuned.ii:
            notes.append(f"streamed weights need {plan.bandwidth_ii} cycles per frame of external bandwidth, more "
                         f"than the {tuned.ii} the engines need: re-tuned at that rate")
            tuned = tune(specs, opts, budgets, clock_hz=hw.clock_hz, target_fps=tc.target_fps,
                         min_ii=plan.bandwidth_ii)
            plan = _plan(specs, tuned, cfg, outputs)
    except Infeasible as e:
        raise _fail(e.rule, str(e).split(": ", 1)[1]) from None
    except NotFit as e:
        raise _fail(e.rule, str(e).split(": ", 1)[1]) from None
    cycles = [max(o.cycles, plan.bandwidth_ii if b.streamed else 0) for o, b in zip(tuned.choice, plan.layers)]
    fifo = [b.fifo_depths for b in plan.layers]
    engines = sim_layers(specs, cycles, fifo, hw.input_pixels_per_cycle)
    sim = simulate(engines, outputs, tc.sim_frames, pace=float(max(cycles)), spread=True, timeline=True)
    sim.latency = latency(engines, outputs)
    if sim.deadlock:
        raise _fail("deadlock", f"the configured pipeline does not settle (engines still waiting: "
                                f"{', '.join(sim.moving[:5])})")
    notes += tuned.notes + plan.notes
    return PipelineMapping(graph, cfg, specs, list(tuned.choice), tuned, plan, cycles, sim, outputs, notes,
                           [len(o) for o in opts], seconds)


def _plan(specs: list[LayerSpec], tuned: TuneResult, cfg: PipelinedConfig, outputs: list[int]) -> BufferPlan:
    hw = cfg.hardware
    return plan_buffers(specs, tuned.choice, ii=tuned.ii, act_bits=hw.activation_bits, weight_bits=hw.weight_bits,
                        acc_bits=hw.accumulator_bits, onchip_budget=hw.onchip_memory_bytes,
                        external_bytes=hw.external_memory_bytes, bandwidth=hw.external_bandwidth_bytes_per_s,
                        clock_hz=hw.clock_hz, min_depth=cfg.tuner.min_fifo_depth,
                        pixels_per_cycle=hw.input_pixels_per_cycle, outputs=outputs, frames=cfg.tuner.sim_frames)
