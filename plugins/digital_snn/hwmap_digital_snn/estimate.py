"""The KPI record of a network on the device.

Per inference the device runs ``steps`` time steps (an encoded graph: its ``timesteps`` plus
the lag of its output layer, and for a rate-coded network the ``mapping.flush_steps`` that
drain it; a native SNN: the steps of its input). The counts:

* a *synaptic operation* is one stored non-zero weight delivered: every step an input
  channel receives events costs its non-zero ``W_in`` weights, every step a hidden neuron
  spikes costs its non-zero ``W_rec`` and ``W_out`` weights (several spikes of one neuron in
  one step cost the same as one, as Rockpool's cycle model counts them);
* every used neuron updates once per step;
* with neuron aliasing, a hidden neuron's spikes are those it delivers (its own and its
  alias sources', as XyloSim records them), so a step in which only an alias source fired
  still costs the target's fan-out; each alias pair whose source has spikes in a step is
  one *alias operation* of ``cycles_per_alias`` cycles (Rockpool's cycle model).

With a simulation these come from the measured activity; without one from Rockpool's
cycle model's worst case, every channel and neuron active every step. Cycles per step are
the config's cycles per synaptic operation and per neuron update; the device advances one
step per ``dt`` (it runs in real time), or slower when a step needs more cycles than a
``dt`` holds. Energy: ``synop_pj`` per synaptic operation and ``neuron_update_pj`` per
neuron update (compute), plus ``static_w`` over the inference's duration (static).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwmap import Assumption, Bottleneck, KPIs, LayerCost, Provenance, Target

from .hardware import DigitalSNNConfig
from .mapper import DeviceMapping

__all__ = ["estimate"]


def _per_inference(program: Any, activity: dict[str, Any] | None, steps: int) -> dict[str, np.ndarray]:
    """Active steps per input channel and hidden neuron, and spikes, per inference."""
    p = program
    if activity is None or not activity.get("samples"):
        full = float(steps)
        return {"input_active": np.full(p.n_in, full), "hidden_active": np.full(p.n_hid, full),
                "hidden_spikes": np.full(p.n_hid, full), "output_spikes": np.full(p.n_out, full),
                "alias_active": np.full(len(p.aliases), full)}
    n = float(activity["samples"])
    out = {k: np.asarray(activity[k], np.float64) / n for k in ("input_active", "hidden_active", "hidden_spikes",
                                                                 "output_spikes")}
    alias = np.asarray(activity.get("alias_active", []), np.float64) / n
    out["alias_active"] = alias if alias.shape == (len(p.aliases),) else np.zeros(len(p.aliases))
    return out


def estimate(m: DeviceMapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    cfg = target.config_as(DigitalSNNConfig)
    hw, en = cfg.hardware, cfg.energy
    p = m.program
    simulated = activity is not None and bool(activity.get("samples"))
    steps = int(activity["steps"]) if activity is not None and simulated else max(p.timesteps, 1) + p.lag
    act = _per_inference(p, activity if simulated else None, steps)
    nz_in = (p.w_in != 0).reshape(p.n_in, p.n_hid, p.n_syn).sum(axis=2).astype(np.float64)  # ch × hid
    nz_rec = (p.w_rec != 0).sum(axis=2).astype(np.float64)  # src × dst
    nz_out = (p.w_out != 0).astype(np.float64)  # src × out
    syn_in = act["input_active"] @ nz_in  # per hidden neuron
    syn_rec = act["hidden_active"] @ nz_rec
    syn_out = act["hidden_active"] @ nz_out
    # alias operations per hidden neuron (charged to the layer of the pair's source)
    alias_ops = np.bincount(np.asarray(p.aliases, np.int64).reshape(-1, 2)[:, 0], weights=act["alias_active"],
                            minlength=p.n_hid)
    dt = m.dt_s
    layers: list[LayerCost] = []
    total_cycles = 0.0
    total_compute = 0.0
    for lay in p.layers:
        sl = slice(lay.start, lay.stop)
        if lay.output:
            synops = float(syn_out[sl].sum())
            cycles = synops * hw.cycles_per_output_synop + lay.size * steps * hw.cycles_per_output_neuron
            synapses = int(np.count_nonzero(p.w_out[:, sl]))
            spikes = float(act["output_spikes"][sl].sum())
        else:
            synops = float(syn_in[sl].sum() + syn_rec[sl].sum())
            cycles = (float(syn_in[sl].sum()) * hw.cycles_per_input_synop + float(syn_rec[sl].sum())
                      * hw.cycles_per_hidden_synop + lay.size * steps * hw.cycles_per_hidden_neuron
                      + float(alias_ops[sl].sum()) * hw.cycles_per_alias)
            synapses = int(np.count_nonzero(p.w_in[:, sl]) + np.count_nonzero(p.w_rec[:, sl]))
            spikes = float(act["hidden_spikes"][sl].sum())
        updates = lay.size * steps
        energy = (synops * en.synop_pj + updates * en.neuron_update_pj) * 1e-12
        total_cycles += cycles
        total_compute += energy
        layers.append(LayerCost(lay.name, "output neurons" if lay.output else "hidden LIF", cycles / hw.clock_hz,
                                int(round(cycles)), {"compute": energy}, synops,
                                {"neurons": lay.size, "synapses": synapses, "spikes_per_inference": spikes,
                                 "lag_steps": lay.depth, "neuron_ids": [lay.start, lay.stop],
                                 "population": "output" if lay.output else "hidden"}))
    cycles_per_step = total_cycles / steps
    step_s = max(dt, cycles_per_step / hw.clock_hz)
    latency = steps * step_s
    static = en.static_w * latency
    energy = total_compute + static
    synops_total = float(syn_in.sum() + syn_rec.sum() + syn_out.sum())
    nnz = int(np.count_nonzero(p.w_in) + np.count_nonzero(p.w_rec) + np.count_nonzero(p.w_out))
    index_bits = max(1, math.ceil(math.log2(max(p.n_hid, 2))))
    dense_words = p.n_in * p.n_hid * p.n_syn + p.n_hid * p.n_out
    weight_bytes = math.ceil((dense_words + p.memory_words) * p.weight_bits / 8 + p.memory_words * index_bits / 8)
    state_bytes = math.ceil((p.n_hid * (p.n_syn + 1) + 2 * p.n_out) * p.state_bits / 8)
    busiest = max(layers, key=lambda x: x.cycles or 0) if layers else None
    fan = p.fan_in()
    resources = {
        "input_channels_used": p.n_in, "hidden_neurons_used": p.n_hid, "output_neurons_used": p.n_out,
        "synapses_used": nnz, "max_fan_in": int(fan.max(initial=0)), "memory_words_used": p.memory_words,
        "memory_words_available": hw.fan_in * hw.n_hid, "synaptic_states_per_neuron": p.n_syn,
        "lag_steps": p.lag, "steps_per_inference": steps,
        "spikes_per_inference": float(act["hidden_spikes"].sum() + act["output_spikes"].sum()),
        "synops_per_inference": synops_total, "cycles_per_step": cycles_per_step,
        "alias_pairs": len(p.aliases), "alias_ops_per_inference": float(alias_ops.sum()),
    }
    real = "real time" if step_s == dt else "slower than real time"
    bottleneck = Bottleneck(
        f"the device advances one step per dt = {dt:g} s ({real}; a step needs {cycles_per_step:,.0f} cycles = "
        f"{cycles_per_step / hw.clock_hz:.3g} s at {hw.clock_hz:g} Hz); an inference takes {steps} steps, "
        f"{p.lag} of them the layers' lag (and, for a converted ANN, the steps that drain it)" + (f"; {busiest.name} needs the most cycles" if busiest else ""),
        "time steps", busiest.name if busiest else None)
    how = "simulated" if simulated else "modelled"
    assumptions = dict(target.constants())
    assumptions["model.synop"] = Assumption(
        "a synaptic operation is one non-zero weight delivered: an input channel with events, or a hidden neuron "
        "that spikes, costs its stored weights once per step however many events or spikes it carries", "",
        "Rockpool 3.1, rockpool.devices.xylo.syns61201.power_cycles_model.cycles_model: multiple events per bin "
        "cost the same as a single event")
    assumptions["model.aliasing"] = Assumption(
        "neuron aliasing: a target's fan-out delivered because an alias source fired is charged as synaptic "
        "operations; each alias pair whose source has spikes in a step costs cycles_per_alias cycles and no energy "
        "of its own (none is published)", "",
        "Rockpool 3.1, syns61201 power_cycles_model.cycles_model: alias handling in the hidden spiking stage")
    assumptions["model.activity"] = Assumption(
        "activity measured by the bit-accurate simulator on the scored data" if simulated else
        "no data: every input channel and neuron active every step (worst case)", "",
        "hwmap digital_snn simulator" if simulated else
        "Rockpool 3.1 cycles_model's default worst case: every neuron fires every step")
    assumptions["model.latency"] = Assumption(
        "latency = steps × max(dt, cycles per step / clock); steps = timesteps + the output layer's lag (+ "
        "mapping.flush_steps for a converted ANN); a layer's "
        "latency is its busy time (its cycles / clock): the layers share each step", "",
        "the chapter, Section 3.4.6 (one step of lag per layer folded into W_rec); Xylo runs in real time, one "
        "step per dt (Bos and Muir, arXiv:2406.15112, 2024)")
    assumptions["model.weight_memory"] = Assumption(
        f"dense W_in and W_out words plus the sparse W_rec's non-zero words, {p.weight_bits} bits each, and a "
        f"{index_bits}-bit source index per sparse word", "", "the chapter, Section 3.4.6: only non-zero weights "
        "are stored, linearised into blocks of N_F × N words")
    kinds = ("latency_s", "throughput_inf_per_s", "energy_per_inference_j", "power_w", "ops_per_inference")
    return KPIs(
        latency_s=latency, throughput_inf_per_s=1.0 / latency, energy_per_inference_j=energy,
        power_w=energy / latency, weight_memory_bytes=weight_bytes, activation_memory_bytes=state_bytes,
        ops_per_inference=int(round(synops_total)), ops_kind="SynOp", utilization=p.n_hid / hw.n_hid,
        resources=resources, layers=layers, bottleneck=bottleneck,
        energy_breakdown={"compute": total_compute, "static": static},
        provenance=Provenance(kpis={k: how for k in kinds} | {"weight_memory_bytes": "counted",
                                                              "activation_memory_bytes": "counted",
                                                              "utilization": "counted"}),
        assumptions=assumptions)
