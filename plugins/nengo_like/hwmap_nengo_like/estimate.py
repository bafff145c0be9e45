"""The KPI record of a network on the substrate.

Per inference the network runs ``steps`` time steps of ``dt`` (the conversion's timesteps and
dt): the substrate runs in real time, so ``latency_s = steps · dt``. Beside it, the time the
spiking network needs to come within ``[estimate] tolerance`` of the rate network's top-1
decisions (``agreement_by_step``, measured by the simulator after every step: the curve, and
the first step that meets the tolerance).

Counts per inference, from the simulation (or, without data, the worst case: every neuron
fires ``rate_scale`` spikes per step and every graded input is non-zero every step): spikes
per population, synaptic operations per receiving population (a spike or a non-zero graded
input costs the non-zero weights of its column), neuron updates (every neuron every step).
Energy: ``synop_pj`` per synaptic operation and ``neuron_update_pj`` per update (compute),
``spike_pj`` per spike routed (communication), ``static_w`` over the latency (static).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwmap import Assumption, Bottleneck, KPIs, LayerCost, Provenance, Target

from .hardware import LOIHI, NengoLikeConfig
from .mapper import NEFMapping

__all__ = ["estimate"]


def _worst_case(m: NEFMapping, rate_scale: float) -> tuple[dict[str, float], dict[str, float]]:
    d = m.description
    steps = d.steps or 1
    pops = {p.name: p for p in d.populations}
    spikes = {p.name: float(p.n) * steps * rate_scale for p in d.populations}
    synops: dict[str, float] = {}
    for link in d.links:
        nz = (link.weights != 0).sum(axis=0).astype(np.float64)
        if link.pre in pops:
            per = spikes[link.pre] / pops[link.pre].n
        else:
            per = float(steps)
        synops[link.post] = synops.get(link.post, 0.0) + float(nz.sum()) * per
    return spikes, synops


def estimate(m: NEFMapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    cfg = target.config_as(NengoLikeConfig)
    sub, en = cfg.substrate, cfg.energy
    d = m.description
    steps = d.steps or 1
    dt = d.dt
    simulated = activity is not None and bool(activity.get("samples"))
    if simulated:
        assert activity is not None
        n = float(activity["samples"])
        spikes = {k: float(np.sum(v)) / n for k, v in activity["spikes"].items()}
        synops = {k: float(v) / n for k, v in activity["synops"].items()}
    else:
        spikes, synops = _worst_case(m, cfg.neurons.rate_scale)
    latency = steps * dt
    layers: list[LayerCost] = []
    compute_total = comm_total = 0.0
    synapses_total = 0
    for p in d.populations:
        syn = sum(int(np.count_nonzero(link.weights)) if link.port != "decoded" else
                  int(np.count_nonzero((link.weights != 0).any(axis=0))) * p.n for link in d.links if link.post == p.name)
        synapses_total += syn
        ops = synops.get(p.name, 0.0)
        updates = p.n * steps
        compute = (ops * en.synop_pj + updates * en.neuron_update_pj) * 1e-12
        comm = spikes.get(p.name, 0.0) * en.spike_pj * 1e-12
        compute_total += compute
        comm_total += comm
        layers.append(LayerCost(p.label or p.name, f"{p.neuron['type']} ensemble", latency, None,
                                {"compute": compute, "communication": comm}, ops,
                                {"neurons": p.n, "cores": len(p.cores), "synapses": syn,
                                 "spikes_per_inference": spikes.get(p.name, 0.0),
                                 "synops_per_inference": ops, "core_ids": [c[0] for c in p.cores]}))
    for h in d.hosts:
        if h.kind == "output":
            ops = synops.get(h.name, 0.0)
            syn = sum(int(np.count_nonzero(link.weights)) for link in d.links if link.post == h.name)
            synapses_total += syn
            compute = ops * en.synop_pj * 1e-12
            compute_total += compute
            layers.append(LayerCost(h.name, "readout", latency, None, {"compute": compute, "communication": 0.0},
                                    ops, {"neurons": 0, "cores": 0, "synapses": syn, "spikes_per_inference": 0.0,
                                          "synops_per_inference": ops}))
    static = en.static_w * latency
    energy = compute_total + comm_total + static
    cores_used = sum(len(p.cores) for p in d.populations)
    neurons = sum(p.n for p in d.populations)
    curve = list(activity.get("agreement_by_step", [])) if simulated and activity else []
    tol = cfg.estimate.tolerance
    reached = next((i + 1 for i, a in enumerate(curve) if a >= 1.0 - tol - 1e-12), None)
    total_spikes = float(sum(spikes.values()))
    total_synops = float(sum(synops.values()))
    resources = {
        "cores_used": cores_used, "cores_available": sub.cores, "neurons": neurons, "synapses": synapses_total,
        "steps_per_inference": steps, "dt_s": dt, "spikes_per_inference": total_spikes,
        "synops_per_inference": total_synops, "neuron_type": d.meta.get("neuron_type", ""),
        "agreement_with_rate_network_by_step": curve,
        "steps_to_tolerance": reached, "time_to_tolerance_s": reached * dt if reached else None,
        "tolerance": tol,
    }
    busiest = max(layers, key=lambda x: x.ops or 0) if layers else None
    bottleneck = Bottleneck(
        f"the substrate runs in real time: {steps} steps of dt = {dt:g} s per inference; "
        + (f"{busiest.name} carries the most synaptic operations ({busiest.ops:,.0f})" if busiest else ""),
        "time steps", busiest.name if busiest else None)
    how = "simulated" if simulated else "modelled"
    assumptions = dict(target.constants())
    assumptions["model.latency"] = Assumption(
        "latency = steps × dt: the substrate advances one step per dt (real time); the curve gives the time to "
        "come within the tolerance of the rate network", "", f"{LOIHI}: Loihi advances in algorithmic time steps; "
        "the chapter, Section 3.2.5")
    assumptions["model.synop"] = Assumption(
        "a synaptic operation is one non-zero weight a spike (or a non-zero graded input) reaches; a decoded "
        "connection reaches every neuron of its post ensemble", "", f"{LOIHI}, Table 2: energy per synaptic spike "
        "operation")
    assumptions["model.activity"] = Assumption(
        "spikes and synaptic operations measured by the simulator on the scored data" if simulated else
        "no data: every neuron fires rate_scale spikes per step, every input is non-zero (worst case)", "",
        "hwmap nengo_like simulator" if simulated else "assumed: worst case without data")
    assumptions["model.weight_memory"] = Assumption(
        f"every stored synapse takes {sub.weight_bits} bits", "", f"{LOIHI}: 1 to 9-bit weights")
    kinds = ("latency_s", "throughput_inf_per_s", "energy_per_inference_j", "power_w", "ops_per_inference")
    return KPIs(
        latency_s=latency, throughput_inf_per_s=1.0 / latency, energy_per_inference_j=energy,
        power_w=energy / latency, weight_memory_bytes=int(math.ceil(synapses_total * sub.weight_bits / 8)),
        activation_memory_bytes=int(neurons * 4), ops_per_inference=int(round(total_synops)), ops_kind="SynOp",
        utilization=min(1.0, cores_used / sub.cores), resources=resources, layers=layers, bottleneck=bottleneck,
        energy_breakdown={"compute": compute_total, "communication": comm_total, "static": static},
        provenance=Provenance(kpis={k: how for k in kinds} | {"weight_memory_bytes": "counted",
                                                              "activation_memory_bytes": "counted",
                                                              "utilization": "counted"}),
        assumptions=assumptions)
