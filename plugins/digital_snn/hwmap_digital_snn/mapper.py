"""Steps 3 and 4 of the chapter's Section 3.4.6: hardware mapping (fold every layer into the
one hidden population, Fig. 3.15) and parameter configuration (quantize to the device's
formats).

**Folding.** Hidden layers take consecutive neuron ids in graph order; output layers take
the output neurons in output order. Weights from the input are blocks of ``W_in``; weights
between hidden layers (feed-forward, residual bypasses, recurrent) are blocks of ``W_rec``;
weights into output neurons are blocks of ``W_out``. A hidden layer's alias pairs (a
``.xylo.json`` network's ``aliases``) become the program's alias table, offset by the
layer's first neuron id. The device delivers a spike through
``W_rec`` or ``W_out`` one step after it was emitted, so every layer after the first lags:
its *depth* is one more than the deepest layer feeding it (the first layers, fed by the
input, have depth 0). An encoded graph's outputs are ``lag`` (the output layer's depth)
steps late; the device runs ``timesteps + lag`` steps and the readout takes the last
``timesteps``.

**Quantization.** Every neuron ``j`` of a population gets one integer scale ``s_j`` (one per
neuron, or one per population with ``mapping.quantization = "global"``) that maps the
network's units onto the device's integers: weights ``round(gain_j * W_jk * s_j / q_k)``
(``q_k`` the input events per unit of input, 1 for spikes), threshold
``round(threshold_j * s_j)``, bias ``round(bias_j * s_j)``. ``s_j`` is the largest scale
for which every one of these fits its bits. Decays come from :func:`.drc.decay_code`. A
``LIFBitshift`` layer (already integer: a network quantized for the device) is taken as it
is, ``s = 1``; its weights may be int8 values already shifted left (a ``.xylo.json``
specification's weight shifts are folded into its weights): each of ``W_in``, ``W_rec`` and
``W_out`` gets the smallest shift that makes it fit ``weight_bits`` exactly
(:func:`weight_shift`), which gives the same products as the specification's. The integrator readout's weights get their own scale, undone by the host.
The relative RMS error of every quantized value is reported.

**Rate-coded networks** (:attr:`.network.Network.rate_coded`: an ANN converted to IF
neurons). Their values are spike counts: what counts is the charge a neuron takes over the
run, not when. The device differs from the converted graph's IF neurons in three ways that
lose charge, each made up for here:

* every input passes a synaptic state (``i ← i + x - (i + x) >> 1``, the fastest filter of
  unit gain), a one-step low-pass: the charge of a layer's last steps is still in its
  synapses when the run ends. The device runs ``mapping.flush_steps`` more steps (after the
  lag) so that it drains (the residue halves every step);
* the device starts every membrane from 0, the converted neurons from ``v_init = θ/2`` (so
  that a neuron's spike count rounds its input rather than floors it);
* a bias is added at every step of the run, the network's for its ``T`` steps only.

So each hidden layer of depth ``d`` gets the per-step bias ``(T·b + v_init) / E`` with
``E = T + flush + d``, the steps whose charge reaches the readout (a spike of step ``t``
reaches the output neurons ``L - d`` steps later, ``L`` the output layer's depth, and the
run has ``T + L + flush`` steps): the same total charge, hence for non-negative input the
same spike count, as the converted neuron's. On zoo:digits_cnn (rate spikes, 16 steps) this
takes the relative RMS error of the outputs against the ANN from 0.23 to 0.05 (the converted
graph's own is 0.04)
(README, "ANNs").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hwmap import Graph, Mapping, TargetError

from .drc import decay_code, recurrent_fan_in, weight_shift
from .hardware import HardwareConfig
from .network import INPUT, Network, Population
from .program import Layer, Program

__all__ = ["DeviceMapping", "QuantReport", "map_network", "depths", "input_scale", "weight_shift"]


@dataclass
class QuantReport:
    """Relative RMS error of what was quantized, per population (``weights`` over its
    incoming projections, ``thresholds``, ``biases``, the decays' ``1 - alpha``)."""

    population: str
    scale_min: float
    scale_max: float
    errors: dict[str, float] = field(default_factory=dict)


class DeviceMapping(Mapping):
    """The network folded onto the device: the :class:`~.program.Program` the bitstream
    carries, the quantization report and the counts the estimate needs."""

    def __init__(self, graph: Graph, program: Program, reports: list[QuantReport], notes: list[str],
                 dt_s: float) -> None:
        super().__init__(graph)
        self.program = program
        self.reports = reports
        self.notes = notes
        self.dt_s = dt_s

    def to_json(self) -> dict[str, Any]:
        p = self.program
        fan = p.fan_in()
        return {
            "graph": self.graph.name,
            "hidden_neurons_used": p.n_hid, "output_neurons_used": p.n_out, "input_channels_used": p.n_in,
            "synapses_per_neuron_used": p.n_syn,
            "nonzero_weights": {"W_in": int(np.count_nonzero(p.w_in)), "W_rec": int(np.count_nonzero(p.w_rec)),
                                "W_out": int(np.count_nonzero(p.w_out))},
            "max_fan_in": int(fan.max(initial=0)), "memory_words_used": p.memory_words,
            "alias_pairs": [[int(u), int(v)] for u, v in p.aliases],
            "lag_steps": p.lag, "timesteps": p.timesteps, "encoding": p.encoding, "readout": p.readout,
            "dt_s": self.dt_s,
            "layers": [asdict(x) for x in p.layers],
            "quantization": [{"population": r.population, "scale_min": r.scale_min, "scale_max": r.scale_max,
                              "rel_rms_error": dict(sorted(r.errors.items()))} for r in self.reports],
            "notes": list(self.notes),
        }


def depths(net: Network) -> dict[str, int]:
    """Each population's lag in steps behind the input (module docstring); recurrent and
    feedback weights (from the population itself or a later one) do not deepen it, nor do
    weights the graph itself delays by one step (``delayed``: the graph is as late)."""
    out: dict[str, int] = {}
    for pop in net.populations:
        srcs = [p for p in net.projections if p.dst == pop.name and (p.src == INPUT or p.src in out)]
        out[pop.name] = max((0 if p.src == INPUT else out[p.src] + (0 if p.delayed else 1) for p in srcs), default=0)
    return out


def input_scale(net: Network, hw: HardwareConfig, calibration: np.ndarray | None) -> tuple[float, str]:
    """Input events per unit of input: 1 for spikes (an encoder's rate or Poisson spikes, or
    event counts given); for a direct (graded) encoding, ``input_events_per_step`` over the
    largest calibration input (or over 1 without calibration data)."""
    if net.encoder is None or net.encoder["encoding"] != "direct":
        return 1.0, "input spikes are events one to one"
    top = float(np.max(calibration)) if calibration is not None and np.size(calibration) else 0.0
    if not np.isfinite(top) or top <= 0:
        return float(hw.input_events_per_step), ("direct input: graded values in [0, 1] become "
                                                 f"round(x * {hw.input_events_per_step}) events per step (no "
                                                 "calibration data gave the input range)")
    return hw.input_events_per_step / top, (f"direct input: graded values become round(x * "
                                            f"{hw.input_events_per_step / top:.6g}) events per step, the largest "
                                            f"calibration input {top:.6g} giving {hw.input_events_per_step}")


def _rel(err: np.ndarray, ref: np.ndarray) -> float:
    n = float(np.linalg.norm(ref))
    return float(np.linalg.norm(err)) / n if n > 0 else 0.0


def spread_bias(pop: Population, timesteps: int, steps: int) -> np.ndarray:
    """The per-step bias of a rate-coded population whose charge reaches the readout over
    ``steps`` device steps (module docstring): the network's ``timesteps`` biases and its
    initial membrane, spread evenly."""
    v0 = pop.v_init if pop.v_init is not None else np.zeros(pop.size)
    return (pop.bias * timesteps + v0) / steps


def _quantize(net: Network, pop: Population, hw: HardwareConfig, q_in: float, per_neuron: bool,
              integrator_steps: int, bias: np.ndarray | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], QuantReport]:
    """Integer weights (by projection name) and neuron parameters of ``pop`` (its per-step
    bias ``bias``, the population's own by default)."""
    bias_f = pop.bias if bias is None else bias
    wmax = 2 ** (hw.weight_bits - 1) - 1
    incoming = [p for p in net.projections if p.dst == pop.name]
    qsrc = {p.name: (q_in if p.src == INPUT else 1.0) for p in incoming}
    if pop.native is not None:
        weights = {}
        for p in incoming:
            w = np.asarray(p.weight, np.float64)
            if not np.array_equal(w, np.rint(w)) or weight_shift(w, hw.weight_bits, hw.max_weight_shift) is None:
                raise TargetError(f"layer {pop.name!r} is integer (LIFBitshift) but its weights {p.name!r} are not "
                                  f"whole numbers within {hw.weight_bits} bits shifted by at most "
                                  f"{hw.max_weight_shift}")
            weights[p.name] = w.astype(np.int64)
        n = pop.native
        dsyn = n["dash_syn"] if "dash_syn_2" not in n else np.stack([n["dash_syn"], n["dash_syn_2"]], axis=1)
        return weights, {"threshold": n["threshold"], "bias": n["bias"], "dmem": n["dash_mem"],
                         "dsyn": dsyn}, QuantReport(pop.name, 1.0, 1.0)
    g = pop.gain[:, None]
    eff = {p.name: g * p.weight / qsrc[p.name] for p in incoming} if pop.kind == "lif" else \
        {p.name: p.weight / qsrc[p.name] for p in incoming}
    wabs = np.max([np.abs(e).max(axis=1) for e in eff.values()], axis=0) if eff else np.zeros(pop.size)
    smax = 2 ** (hw.state_bits - 1) - 1
    limits = [np.where(wabs > 0, wmax / np.where(wabs > 0, wabs, 1), np.inf)]
    if pop.kind == "lif":
        thr_max = min(2 ** (hw.threshold_bits - 1) - 1, smax)
        b_max = min(2 ** (hw.bias_bits - 1) - 1, smax)
        limits.append(thr_max / np.maximum(pop.threshold, 1e-300))
        limits.append(np.where(np.abs(bias_f) > 0, b_max / np.maximum(np.abs(bias_f), 1e-300), np.inf))
    scale = np.min(limits, axis=0)
    scale = np.where(np.isfinite(scale), scale, 1.0)
    if not per_neuron:
        scale = np.full(pop.size, float(scale.min()))
    weights = {k: np.rint(e * scale[:, None]).astype(np.int64) for k, e in eff.items()}
    errors = {"weights": _rel(np.concatenate([(weights[k] / scale[:, None] - e).ravel() for k, e in eff.items()]),
                              np.concatenate([e.ravel() for e in eff.values()])) if eff else 0.0}
    if pop.kind == "integrator":
        top_m = decay_code(np.zeros(1), hw)[0].max() if hw.decay == "multiplicative" else None
        slow = 0 if top_m is not None else min(hw.state_bits - 1, 2**hw.decay_bits - 1)
        params = {"threshold": np.full(pop.size, smax), "bias": np.zeros(pop.size, np.int64),
                  "dmem": np.full(pop.size, slow), "dsyn": np.full(pop.size, slow), "scale": scale}
        return weights, params, QuantReport(pop.name, float(scale.min()), float(scale.max()), errors)
    thr = np.maximum(np.rint(pop.threshold * scale), 1).astype(np.int64)
    bias = np.rint(bias_f * scale).astype(np.int64)
    dmem, _ = decay_code(pop.alpha, hw)
    dsyn, _ = decay_code(pop.beta, hw)
    errors["thresholds"] = _rel(thr / scale - pop.threshold, pop.threshold)
    errors["biases"] = _rel(bias / scale - bias_f, bias_f)
    errors["membrane_decay"] = _rel(_decay_value(dmem, hw) - (1 - pop.alpha), 1 - pop.alpha)
    errors["synaptic_decay"] = _rel(_decay_value(dsyn, hw) - (1 - pop.beta), 1 - pop.beta)
    return weights, {"threshold": thr, "bias": bias, "dmem": dmem, "dsyn": dsyn}, \
        QuantReport(pop.name, float(scale.min()), float(scale.max()), errors)


def _decay_value(code: np.ndarray, hw: HardwareConfig) -> np.ndarray:
    """The fraction ``1 - alpha`` a decay code removes per step (before rounding)."""
    c = np.asarray(code, np.float64)
    return 2.0 ** -c if hw.decay == "bitshift" else c / 2**hw.decay_bits


def map_network(graph: Graph, net: Network, hw: HardwareConfig, *, per_neuron: bool,
                calibration: np.ndarray | None, flush_steps: int = 0) -> DeviceMapping:
    """Fold ``net`` onto the device and quantize it (module docstring); a rate-coded network
    runs ``flush_steps`` more steps."""
    depth = depths(net)
    timesteps = net.encoder["timesteps"] if net.encoder else 0
    flush = flush_steps if net.rate_coded else 0
    q_in, in_note = input_scale(net, hw, calibration)
    hidden = net.hidden
    outputs = [net.population(k) for k in net.outputs]
    layers: list[Layer] = []
    start = 0
    hid_index: dict[str, int] = {}
    for pop in hidden:
        hid_index[pop.name] = start
        layers.append(Layer(pop.name, False, start, start + pop.size, depth[pop.name]))
        start += pop.size
    n_hid = start
    out_index: dict[str, int] = {}
    start = 0
    for pop in outputs:
        out_index[pop.name] = start
        layers.append(Layer(pop.name, True, start, start + pop.size, depth[pop.name]))
        start += pop.size
    n_out = start
    n_syn = max([p.synapse + 1 for p in net.projections if p.dst in hid_index] or [1])
    w_in = np.zeros((net.n_inputs, n_hid, n_syn), np.int64)
    w_rec = np.zeros((n_hid, n_hid, n_syn), np.int64)
    w_out = np.zeros((n_hid, n_out), np.int64)
    hid = {k: np.zeros(n_hid, np.int64) for k in ("threshold", "bias", "dmem")}
    hid_dsyn = np.zeros((n_hid, n_syn), np.int64)
    out = {k: np.zeros(n_out, np.int64) for k in ("threshold", "bias", "dmem", "dsyn")}
    out_scale, out_offset = np.ones(n_out), np.zeros(n_out)
    reports = []
    for pop in net.populations:
        bias = spread_bias(pop, timesteps, timesteps + flush + depth[pop.name]) if net.rate_coded and \
            pop.name in hid_index else None
        weights, params, report = _quantize(net, pop, hw, q_in, per_neuron, timesteps, bias)
        reports.append(report)
        if pop.name in hid_index:
            a = hid_index[pop.name]
            sl = slice(a, a + pop.size)
            for k in ("threshold", "bias", "dmem"):
                hid[k][sl] = params[k]
            d = np.asarray(params["dsyn"]).reshape(pop.size, -1)[:, :n_syn]
            hid_dsyn[sl, :d.shape[1]] = d
        else:
            a = out_index[pop.name]
            sl = slice(a, a + pop.size)
            for k in ("threshold", "bias", "dmem", "dsyn"):
                out[k][sl] = np.asarray(params[k]).reshape(pop.size, -1)[:, 0]
            if pop.kind == "integrator" and net.readout is not None:
                sc = params["scale"]
                bias = net.out_bias if net.out_bias is not None else np.zeros(pop.size)
                steps = max(timesteps, 1)
                if net.readout["mode"] == "membrane":
                    out_scale[sl], out_offset[sl] = 1.0 / (sc * steps), bias
                else:
                    out_scale[sl], out_offset[sl] = 1.0 / sc, bias * steps
            elif net.readout is not None and net.readout["mode"] == "membrane":
                out_scale[sl] = 1.0 / max(timesteps, 1)
        for p in net.projections:
            if p.dst != pop.name:
                continue
            w = weights[p.name]
            if p.src == INPUT:
                w_in[:, sl, p.synapse] = w.T
            else:
                s0 = hid_index[p.src]
                rows = slice(s0, s0 + w.shape[1])
                if pop.name in hid_index:
                    w_rec[rows, sl, p.synapse] = w.T
                else:
                    w_out[rows, sl] = w.T
    shifts = []
    for name, mat in (("W_in", w_in), ("W_rec", w_rec), ("W_out", w_out)):
        sh = weight_shift(mat, hw.weight_bits, hw.max_weight_shift)
        if sh is None:
            raise TargetError(f"{name} does not fit {hw.weight_bits}-bit weights shifted left by one shift of at most "
                              f"{hw.max_weight_shift}")
        shifts.append(sh)
    w_in, w_rec, w_out = w_in >> shifts[0], w_rec >> shifts[1], w_out >> shifts[2]
    aliases = [pop.aliases + hid_index[pop.name] for pop in hidden if pop.aliases is not None]
    lag = max((depth[k] for k in net.outputs), default=0) + flush
    readout = _readout_kind(net)
    program = Program(
        n_in=net.n_inputs, n_hid=n_hid, n_out=n_out, n_syn=n_syn, state_bits=hw.state_bits, decay=hw.decay,
        decay_bits=hw.decay_bits, hidden_spikes=hw.hidden_spikes_per_step, output_spikes=hw.output_spikes_per_step,
        input_events=hw.input_events_per_step, weight_bits=hw.weight_bits, w_in=w_in, w_rec=w_rec, w_out=w_out,
        hid_threshold=hid["threshold"], hid_bias=hid["bias"], hid_dmem=hid["dmem"], hid_dsyn=hid_dsyn,
        out_threshold=out["threshold"], out_bias=out["bias"], out_dmem=out["dmem"], out_dsyn=out["dsyn"],
        encoding=net.encoder["encoding"] if net.encoder else "events", readout=readout, timesteps=timesteps,
        lag=lag, seed=int(net.encoder["seed"]) if net.encoder else 0, input_scale=q_in,
        dt_s=net.dt if net.dt is not None else hw.dt_s, out_scale=out_scale, out_offset=out_offset, layers=layers,
        shift_in=shifts[0], shift_rec=shifts[1], shift_out=shifts[2],
        aliases=np.concatenate(aliases) if aliases else np.zeros((0, 2), np.int64))
    fan = program.fan_in()
    notes = [in_note, f"{n_hid} hidden neurons in {len(hidden)} layers, {n_out} output neurons; outputs lag {lag - flush} "
                      f"step{'s' if lag - flush != 1 else ''} behind the input (one per layer after the first)",
             f"recurrent memory: {program.memory_words} non-zero weights, largest fan-in {int(fan.max(initial=0))} "
             f"of {hw.fan_in}"]
    if len(program.aliases):
        notes.append(f"neuron aliasing: {len(program.aliases)} alias pairs (a source's spikes also count as its "
                     "target's, through the target's fan-out)")
    if net.rate_coded:
        notes.append(f"rate-coded network: the device runs {timesteps} steps of input, {lag - flush} of lag and "
                     f"{flush} more (mapping.flush_steps) for the charge held in synaptic states to reach the readout; "
                     "each hidden layer's biases and initial membrane (v_init) are spread evenly over the steps whose "
                     "charge reaches the readout (timesteps + flush + its depth)")
    for r in reports:
        errs = ", ".join(f"{k} {v:.3g}" for k, v in sorted(r.errors.items()))
        if errs:
            notes.append(f"quantized {r.population}: relative RMS error {errs}")
    return DeviceMapping(graph, program, reports, notes, program.dt_s)


def _readout_kind(net: Network) -> str:
    if net.readout is None:
        return "spikes"
    out = net.population(net.outputs[0])
    if out.kind == "integrator":
        return "integrator"
    return "spike_mean" if net.readout["mode"] == "membrane" else "spike_sum"


def fan_in_summary(net: Network) -> dict[str, int]:
    """Largest recurrent fan-in per hidden population."""
    return {p.name: int(recurrent_fan_in(net, p).max(initial=0)) for p in net.hidden}
