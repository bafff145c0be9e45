"""The ``toy_cpu`` hook implementations: legalize, map, emit, simulate, estimate.

Cost model (a single-issue CPU with a ``macs_per_cycle``-lane 8-bit MAC unit, no overlap
between layers): a layer with MACs takes ``ceil(MACs / macs_per_cycle)`` cycles; a layer
without (pooling, activations, reshapes) uses the lanes as ALUs, ``ceil(outputs /
macs_per_cycle)`` cycles. Every weight byte is read once from SRAM per inference and every
activation byte is read and written once, in 64-bit words; energy is
``MACs · mac_pj + words · sram_read_pj_per_64bit`` (Horowitz, ISSCC 2014).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwmap import (Artifacts, Assumption, Bottleneck, Diagnostic, Graph, KPIs, LayerCost, Legalized, Mapping, Node,
                   Provenance, Register, Simulation, Target, TargetError, hookimpl, presets_in)
from hwmap.graph import save_npz
from hwmap.jsonio import dumps
from hwmap.ops import get_op

from .hardware import ToyConfig

KIND = "toy_cpu"
PROGRAM_FORMAT = "toy_cpu.program"
#: Activations move through the 8-bit datapath: one byte per element.
ACT_BYTES = 1
#: Samples the simulator runs at a time; it reports its progress after each slice.
SLICE = 64


@hookimpl
def hwmap_register_targets(register: Register) -> None:
    register(kind=KIND, config=ToyConfig, description="throw-away test CPU: layer by layer, int8 weights in SRAM",
             presets=presets_in("hwmap_toy_cpu"))


# -- weight storage -----------------------------------------------------------------------------
def _is_weight(a: np.ndarray) -> bool:
    return a.ndim >= 2 and np.issubdtype(a.dtype, np.floating)


def _encode(key: str, a: np.ndarray) -> dict[str, np.ndarray]:
    """A weight matrix as int8 codes with one symmetric float32 scale (max-abs / 127);
    anything else as float32 (or its own integer type)."""
    if _is_weight(a):
        peak = float(np.max(np.abs(a))) if a.size else 0.0
        scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
        codes = np.clip(np.round(a.astype(np.float64) / float(scale)), -127, 127).astype(np.int8)
        return {f"{key}.q": codes, f"{key}.scale": np.asarray(scale, dtype=np.float32)}
    if np.issubdtype(a.dtype, np.floating):
        return {key: a.astype(np.float32)}
    return {key: np.ascontiguousarray(a)}


def _decode(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in stored.items():
        if k.endswith(".q"):
            base = k[:-2]
            if f"{base}.scale" not in stored:
                raise TargetError(f"weights.npz holds {k!r} without its scale {base + '.scale'!r}")
            out[base] = (v.astype(np.float32) * stored[f"{base}.scale"]).astype(np.float32)
        elif not k.endswith(".scale"):
            out[k] = v
    return out


def stored_bytes(graph: Graph) -> int:
    """Bytes of SRAM the graph's constants take once encoded."""
    return sum(_node_bytes(n) for n in graph.nodes)


def _node_bytes(node: Node) -> int:
    """Bytes of SRAM one node's constants (its fused sub-nodes' included) take once encoded."""
    return sum(v.nbytes for sub in node.walk() for k, a in sub.params.items()
               for v in _encode(f"{sub.name}/{k}", a).values())


# -- legalize -------------------------------------------------------------------------------------
@hookimpl
def hwmap_legalize(graph: Graph, target: Target) -> Legalized:
    cfg = target.config_as(ToyConfig)
    g = graph.copy()
    diags: list[Diagnostic] = []
    for n in g.nodes:
        if get_op(n.op).category == "neuron":
            diags.append(Diagnostic("unsupported_op", f"the toy CPU has no neuron model for {n.op}", node=n.name))
    need = stored_bytes(g)
    if need > cfg.hardware.sram_bytes:
        diags.append(Diagnostic("weight_memory", f"weights need {need:,} bytes but the SRAM holds "
                                                 f"{cfg.hardware.sram_bytes:,} bytes"))
    return Legalized(g, diags, notes=["weights stored as int8 with one scale per tensor"])


# -- map --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    macs: int
    weight_bytes: int
    in_elements: int
    out_elements: int


class ToyMapping(Mapping):
    """The graph's nodes in execution order, each with its MACs and SRAM footprint."""

    def __init__(self, graph: Graph, layers: list[Layer]) -> None:
        super().__init__(graph)
        self.layers = layers

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {"graph": self.graph.name, "total_macs": self.total_macs, "layers": [asdict(x) for x in self.layers]}


@hookimpl
def hwmap_map(graph: Graph, target: Target) -> Mapping:
    layers = []
    for n in graph.nodes:
        opdef = get_op(n.op)
        ins = [graph.tensor(t).shape for t in n.inputs]
        outs = [graph.tensor(t).shape for t in n.outputs]
        macs = int(opdef.macs(n, ins, outs)) if opdef.macs is not None else 0
        layers.append(Layer(n.name, n.op, macs, _node_bytes(n), sum(math.prod(s) for s in ins),
                            sum(math.prod(s) for s in outs)))
    return ToyMapping(graph, layers)


# -- emit / simulate ------------------------------------------------------------------------------
@hookimpl
def hwmap_emit(mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
    assert isinstance(mapping, ToyMapping)
    stored: dict[str, np.ndarray] = {}
    for key, a in mapping.graph.arrays().items():
        stored.update(_encode(key, a))
    program = {"format": PROGRAM_FORMAT, "version": 1, "graph": mapping.graph.to_json(),
               "layers": [asdict(x) for x in mapping.layers]}
    (outdir / "program.json").write_text(dumps(program))
    save_npz(outdir / "weights.npz", stored)
    return Artifacts(outdir, ["program.json", "weights.npz"], {"format": PROGRAM_FORMAT, "version": 1})


def load_program(artifacts: Artifacts) -> Graph:
    """The graph the artifacts describe, weights decoded from their stored int8 form, read
    only through ``artifacts`` (listed regular files inside the artifacts directory, their
    sizes checked; anything else is an hwmap error naming the file)."""
    program = artifacts.read_json("program.json")
    stored = artifacts.load_npz("weights.npz")
    if not isinstance(program, dict) or program.get("format") != PROGRAM_FORMAT:
        raise TargetError(f"program.json is not a {PROGRAM_FORMAT}", where=str(artifacts.directory))
    return Graph.from_json(program.get("graph"), _decode(stored), where=str(artifacts.path("program.json")))


@hookimpl
def hwmap_simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    from hwmap.execute import run

    graph = load_program(artifacts)
    n = int(next(iter(inputs.values())).shape[0])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in graph.outputs}
    for start in range(0, n, SLICE):
        outputs = run(graph, {k: v[start:start + SLICE] for k, v in inputs.items()})
        for k in graph.outputs:
            parts[k].append(outputs[k])
        target.report_progress(min(start + SLICE, n), n)
    return Simulation({k: np.concatenate(v) for k, v in parts.items()}, {"samples": n})


# -- estimate ---------------------------------------------------------------------------------------
@hookimpl
def hwmap_estimate(mapping: Mapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    assert isinstance(mapping, ToyMapping)
    cfg = target.config_as(ToyConfig)
    lanes = cfg.hardware.macs_per_cycle
    layers = []
    for x in mapping.layers:
        cycles = math.ceil((x.macs or x.out_elements) / lanes)
        act_bytes = (x.in_elements + x.out_elements) * ACT_BYTES
        split = {"compute": x.macs * cfg.energy.mac_pj * 1e-12,
                  "memory": (math.ceil(x.weight_bytes / 8) + math.ceil(act_bytes / 8))
                  * cfg.energy.sram_read_pj_per_64bit * 1e-12}
        layers.append(LayerCost(x.name, x.op, latency_s=cycles / cfg.hardware.clock_hz, cycles=cycles,
                                energy_j=split, ops=x.macs,
                                resources={"weight_bytes": x.weight_bytes, "activation_bytes": act_bytes}))
    cycles = max(sum(layer.cycles or 0 for layer in layers), 1)
    latency = cycles / cfg.hardware.clock_hz
    weight_bytes = sum(x.weight_bytes for x in mapping.layers)
    macs = mapping.total_macs
    breakdown = {kind: sum(layer.energy_j[kind] for layer in layers) for kind in ("compute", "memory")}
    energy = sum(breakdown.values())
    slowest = max(layers, key=lambda layer: layer.cycles or 0)
    assumptions = dict(target.constants())
    assumptions["activation_bytes_per_element"] = Assumption(ACT_BYTES, "B", "assumed: an 8-bit datapath")
    assumptions["model"] = Assumption(
        "layers run one after another, each ceil(MACs / macs_per_cycle) cycles (or one per output without "
        "MACs); weights and activations read once per inference in 64-bit words", "",
        "Horowitz, ISSCC 2014 (energy per access); the toy CPU's own timing")
    return KPIs(
        latency_s=latency,
        throughput_inf_per_s=1.0 / latency,
        energy_per_inference_j=energy,
        power_w=energy / latency,
        weight_memory_bytes=weight_bytes,
        activation_memory_bytes=max((x.in_elements + x.out_elements) * ACT_BYTES for x in mapping.layers),
        ops_per_inference=macs,
        ops_kind="MAC",
        utilization=macs / (cycles * lanes),
        resources={"layers": len(mapping.layers), "cycles": cycles, "sram_bytes": cfg.hardware.sram_bytes,
                   "sram_used_bytes": weight_bytes},
        layers=layers,
        bottleneck=Bottleneck(f"layers run one at a time: {slowest.name} takes {slowest.cycles} of {cycles} cycles",
                              "MAC unit", slowest.name),
        energy_breakdown=breakdown,
        provenance=Provenance(kpis={k: "modelled" for k in ("latency_s", "throughput_inf_per_s",
                                                            "energy_per_inference_j", "power_w", "utilization")}
                              | {"weight_memory_bytes": "counted", "activation_memory_bytes": "counted",
                                 "ops_per_inference": "counted"}),
        assumptions=assumptions,
    )
