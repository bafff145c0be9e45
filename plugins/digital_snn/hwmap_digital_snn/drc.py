"""Step 2 of the chapter's Section 3.4.6: the design-rule check of an extracted network
against the device. Every rule is named and every violation is reported at once, with the
layer and the numbers. The structural rules (the input goes first through a weight, no two
weights in a row, outputs come directly from neurons, one dt for all neurons) are found while
the network is extracted (:mod:`.network`); the rules here need the device's sizes:

* ``input_channels``, ``hidden_neurons``, ``output_neurons``: the counts the network needs;
* ``two_neuron_layers``: a hidden layer between the input and the outputs (W_in reaches the
  hidden population only);
* ``output_not_recurrent``: output neurons drive nothing (no recurrent or onward weights);
* ``fan_in``: non-zero recurrent weights into one hidden neuron at most ``fan_in``;
* ``synapses``: synapses per hidden neuron at most ``n_syn``, one per output neuron;
* ``time_constants``: every decay representable in the device's decay form;
* ``thresholds``: positive thresholds;
* ``integer_neurons``: a layer already in the device's integers (``LIFBitshift``) has the
  device's spikes per step, state bits, bit-shift decay and parameter ranges (it is taken as
  it is, so anything else would run differently);
* ``integer_weights``: its weights are ``weight_bits`` integers shifted left by at most
  ``max_weight_shift``;
* ``aliasing``: a layer's neuron aliasing (``aliases``) needs a device that has it
  (``alias_targets`` ≥ 1);
* ``alias_targets``: each hidden neuron has at most ``alias_targets`` alias targets (Xylo:
  one; a Rockpool specification's list may hold more, which XyloSim runs but the chip's
  configuration, one ``alias_target`` per neuron, cannot hold);
* ``alias_outputs``: output neurons have no aliasing (the device's aliases are hidden
  neurons' only; Xylo's readout neurons have none);
* ``real_time`` (a warning): the worst-case cycles of one step fit in one ``dt``.

Alias chains and cycles (a target that is itself a source) are not refused: the device
applies the pairs in order, in place, as XyloSim does, and the simulator does the same
(:mod:`.simulator`).
"""

from __future__ import annotations

import numpy as np

from hwmap import Diagnostic

from .hardware import HardwareConfig
from .network import INPUT, Network, Population

__all__ = ["check", "decay_code", "recurrent_fan_in", "worst_case_cycles", "weight_shift"]


def decay_code(alpha: np.ndarray, hw: HardwareConfig) -> tuple[np.ndarray, np.ndarray]:
    """The device's decay parameter for per-step decays ``alpha`` and whether each is
    representable: bit shift ``dash = round(log2(1/(1-alpha)))`` (Rockpool's
    ``dash = round(log2(tau/dt))``), from 0 to ``min(state_bits - 1, 2**decay_bits - 1)``;
    multiplicative ``m = round((1-alpha) * 2**decay_bits)``, from 0 to ``2**decay_bits - 1``
    (0 only for no decay at all)."""
    k = 1.0 - np.asarray(alpha, np.float64)
    if hw.decay == "bitshift":
        top = min(hw.state_bits - 1, 2**hw.decay_bits - 1)
        with np.errstate(divide="ignore"):
            d = np.rint(np.log2(1.0 / np.where(k > 0, k, 1e-300)))
        ok = (k > 0) & (k <= 1) & (d <= top)
        return np.clip(d, 0, top).astype(np.int64), ok | (k == 0)
    top = 2**hw.decay_bits - 1
    m = np.rint(k * 2**hw.decay_bits)
    ok = (k >= 0) & (m <= top) & ((m >= 1) | (k == 0))
    return np.clip(m, 0, top).astype(np.int64), ok


def weight_shift(w: np.ndarray, bits: int, max_shift: int) -> int | None:
    """The smallest left shift ``s <= max_shift`` with ``w`` whole multiples of ``2**s`` and
    ``w >> s`` within signed ``bits``; ``None`` if there is none."""
    w = np.asarray(w, np.int64)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for s in range(max_shift + 1):
        if np.any(w % (1 << s)):
            return None
        q = w >> s
        if q.size == 0 or (int(q.min()) >= lo and int(q.max()) <= hi):
            return s
    return None


def recurrent_fan_in(net: Network, pop: Population) -> np.ndarray:
    """Non-zero weights from hidden or output neurons into each neuron of ``pop``."""
    fan = np.zeros(pop.size, np.int64)
    for p in net.projections:
        if p.dst == pop.name and p.src != INPUT:
            fan += np.count_nonzero(p.weight, axis=1)
    return fan


def worst_case_cycles(net: Network, hw: HardwareConfig) -> float:
    """Cycles of one step when every input channel and neuron fires (Rockpool's cycle
    model's worst case): every stored weight is one synaptic operation, every neuron updates,
    every alias pair acts."""
    hidden = {p.name for p in net.hidden}
    cyc = 0.0
    for p in net.projections:
        nnz = float(np.count_nonzero(p.weight))
        cyc += nnz * (hw.cycles_per_input_synop if p.src == INPUT else
                      hw.cycles_per_hidden_synop if p.dst in hidden else hw.cycles_per_output_synop)
    cyc += sum(p.size for p in net.hidden) * hw.cycles_per_hidden_neuron
    cyc += sum(len(p.aliases) for p in net.hidden if p.aliases is not None) * hw.cycles_per_alias
    cyc += sum(p.size for p in net.populations if p.name in net.outputs) * hw.cycles_per_output_neuron
    return cyc


def check(net: Network, hw: HardwareConfig) -> list[Diagnostic]:
    """Every design-rule violation of ``net`` on the device ``hw`` (empty: it fits)."""
    out: list[Diagnostic] = []
    hidden = net.hidden
    n_hid = sum(p.size for p in hidden)
    n_out = sum(p.size for p in net.populations if p.name in net.outputs)
    if net.n_inputs > hw.n_in:
        out.append(Diagnostic("input_channels", f"the network takes {net.n_inputs} input channels; the device has "
                              f"{hw.n_in}"))
    if n_hid > hw.n_hid:
        sizes = ", ".join(f"{p.name} {p.size}" for p in hidden)
        out.append(Diagnostic("hidden_neurons", f"the network needs {n_hid} hidden neurons ({sizes}); the device has "
                              f"{hw.n_hid}"))
    if n_out > hw.n_out:
        out.append(Diagnostic("output_neurons", f"the network needs {n_out} output neurons; the device has {hw.n_out}",
                              net.outputs[0] if net.outputs else None))
    if not hidden:
        out.append(Diagnostic("two_neuron_layers", "the network has one neuron layer: the device's input weights "
                              "reach hidden neurons only, so a hidden layer must come before the output neurons"))
    outputs = set(net.outputs)
    for p in net.projections:
        if p.src in outputs:
            out.append(Diagnostic("output_not_recurrent", f"output layer {p.src!r} drives {p.dst!r} through "
                                  f"{p.name!r}: output neurons cannot be recurrent or drive other neurons", p.name))
        if p.src == INPUT and p.dst in outputs and hidden:
            out.append(Diagnostic("two_neuron_layers", f"input weights {p.name!r} reach output layer {p.dst!r}: the "
                                  "device's input weights reach hidden neurons only", p.name))
    for pop in hidden:
        fan = recurrent_fan_in(net, pop)
        over = fan > hw.fan_in
        if np.any(over):
            out.append(Diagnostic("fan_in", f"{int(over.sum())} of {pop.size} neurons have a recurrent fan-in above "
                                  f"{hw.fan_in} (the largest {int(fan.max())}); prune or spread the weights "
                                  "(mapping.prune_to_fan_in)", pop.name))
        syns = sorted({p.synapse for p in net.projections if p.dst == pop.name})
        if syns and syns[-1] >= hw.n_syn:
            out.append(Diagnostic("synapses", f"uses {syns[-1] + 1} synapses per neuron; the device's hidden neurons "
                                  f"have {hw.n_syn}", pop.name))
    out += _aliases(net, hw)
    for pop in net.populations:
        if pop.name in outputs and any(p.synapse > 0 for p in net.projections if p.dst == pop.name):
            out.append(Diagnostic("synapses", "output neurons have one synapse; weights reach a second one", pop.name))
        if pop.native is not None:
            out += _integer_layer(net, pop, hw, pop.name in outputs)
        if pop.native is None and pop.kind == "lif":
            out += _time_constants(pop, hw)
            if np.any(pop.threshold <= 0):
                out.append(Diagnostic("thresholds", f"{int(np.sum(pop.threshold <= 0))} neurons have a threshold "
                                      "≤ 0; the device's thresholds are positive", pop.name))
    dt = net.dt if net.dt is not None else hw.dt_s
    cycles = worst_case_cycles(net, hw)
    if cycles / hw.clock_hz > dt:
        out.append(Diagnostic("real_time", f"a step takes up to {cycles:,.0f} cycles = {cycles / hw.clock_hz:.3g} s "
                              f"at {hw.clock_hz:g} Hz, longer than dt = {dt:g} s: the device runs slower than real "
                              "time when every neuron fires", None, "warning"))
    return out


def _aliases(net: Network, hw: HardwareConfig) -> list[Diagnostic]:
    """``aliasing``, ``alias_targets`` and ``alias_outputs`` (module docstring)."""
    out: list[Diagnostic] = []
    for pop in net.populations:
        if pop.aliases is None or not len(pop.aliases):
            continue
        if pop.name in net.outputs:
            out.append(Diagnostic("alias_outputs", f"output layer {pop.name!r} has {len(pop.aliases)} alias pairs: "
                                  "the device's output neurons have no aliasing", pop.name))
            continue
        if hw.alias_targets == 0:
            out.append(Diagnostic("aliasing", f"the layer has {len(pop.aliases)} alias pairs; the device has no neuron "
                                  "aliasing (alias_targets = 0)", pop.name))
            continue
        per = np.bincount(pop.aliases[:, 0], minlength=pop.size)
        over = np.flatnonzero(per > hw.alias_targets)
        if len(over):
            out.append(Diagnostic("alias_targets", f"{len(over)} neurons have more than {hw.alias_targets} alias "
                                  f"target{'s' if hw.alias_targets != 1 else ''} (neuron {int(over[0])} has "
                                  f"{int(per[over[0]])}); the device's hidden neurons have {hw.alias_targets}",
                                  pop.name))
    return out


def _time_constants(pop: Population, hw: HardwareConfig) -> list[Diagnostic]:
    out = []
    for what, a in (("membrane", pop.alpha), ("synaptic", pop.beta)):
        _, ok = decay_code(a, hw)
        if not np.all(ok):
            bad = np.asarray(a)[~ok]
            form = ("a bit-shift decay 1 - 2^-dash" if hw.decay == "bitshift"
                    else f"a {hw.decay_bits}-bit multiplicative decay")
            out.append(Diagnostic("time_constants", f"{int((~ok).sum())} {what} decays per step (e.g. "
                                  f"{float(bad[0]):.4g}) are not representable as {form}: a time constant at or "
                                  "below dt, or too long", pop.name))
    return out


def _integer_layer(net: Network, pop: Population, hw: HardwareConfig, output: bool) -> list[Diagnostic]:
    """``integer_neurons`` and ``integer_weights`` of a native (``LIFBitshift``) layer."""
    out: list[Diagnostic] = []
    n = pop.native or {}
    spikes = hw.output_spikes_per_step if output else hw.hidden_spikes_per_step
    what = "output" if output else "hidden"
    problems = []
    if pop.max_spikes is not None and pop.max_spikes != spikes:
        problems.append(f"emits up to {pop.max_spikes} spikes per step; the device's {what} neurons {spikes}")
    if pop.state_bits is not None and pop.state_bits != (hw.state_bits, hw.state_bits):
        problems.append(f"has {pop.state_bits[0]}-bit synaptic and {pop.state_bits[1]}-bit membrane states; the "
                        f"device {hw.state_bits}-bit")
    if hw.decay != "bitshift":
        problems.append("decays by bit shifts; the device's decay is multiplicative")
    top = min(hw.state_bits - 1, 2**hw.decay_bits - 1)
    for key, lo, hi in (("dash_mem", 0, top), ("dash_syn", 0, top), ("dash_syn_2", 0, top),
                        ("threshold", 1, 2 ** (hw.threshold_bits - 1) - 1),
                        ("bias", -(2 ** (hw.bias_bits - 1)), 2 ** (hw.bias_bits - 1) - 1)):
        a = n.get(key)
        if a is not None and a.size and (int(a.min()) < lo or int(a.max()) > hi):
            problems.append(f"{key} holds {int(a.min())}..{int(a.max())}; the device takes {lo}..{hi}")
    if problems:
        out.append(Diagnostic("integer_neurons", "the layer is in the device's integers and taken as it is, but it "
                              + "; ".join(problems), pop.name))
    for p in net.projections:
        if p.dst != pop.name:
            continue
        w = np.asarray(p.weight, np.float64)
        if not np.all(np.isfinite(w)) or np.any(w != np.rint(w)) or \
                weight_shift(w.astype(np.int64), hw.weight_bits, hw.max_weight_shift) is None:
            out.append(Diagnostic("integer_weights", f"weights {p.name!r} into integer layer {pop.name!r} are not "
                                  f"{hw.weight_bits}-bit integers shifted left by at most {hw.max_weight_shift}",
                                  p.name))
    return out
