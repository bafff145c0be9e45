"""Step 1 of the chapter's Section 3.4.6, graph extraction: a neutral hwmap graph as standard
graph modules: neuron populations, the weights between them (feed-forward, residual
bypasses; recurrent blocks where a network gives them), and where the input enters and the
outputs leave.

A population is a layer of neurons (a ``LIF``, ``CubaLIF``, ``IF`` or ``LIFBitshift`` node),
or the *integrator* the device makes of a linear last layer read out by a membrane
``Readout`` (:mod:`hwmap.ops.time`: the membrane of a non-leaky integrator without threshold).
A projection is a weight matrix (a ``Gemm`` or ``MatMul``) from the input or a population
into a population; a population fed by an ``Add`` of several weights receives several
projections (a residual block). Shape-only nodes (``Reshape``, ``Flatten``, ``Identity``,
``Squeeze``, ``Unsqueeze``) pass through: the device's channels are the features in C order.

Each population carries its dynamics as the device runs them, in the network's units
(:class:`Population`): per step, with ``x`` the weighted input,

    i = beta * (i + gain * x)         (per synapse)
    v = alpha * v + sum(i) + bias
    spike where v >= threshold, then v -= threshold per spike

the discretization of the NIR neuron equations (:mod:`hwmap.ops.neuron`) the integer device
approximates. A NIR ``LIF`` has no synaptic state while the device always filters its input
(Xylo: ``i = i - (i >> dash_syn)`` after the input is added, so ``dash_syn = 0`` would discard
it): it gets the fastest filter, ``beta = 1/2``, whose steady-state gain ``beta/(1-beta)`` is 1.
Findings that do not stop the mapping (a value reset that the device does as a subtraction)
come back as warnings.

A ``LIFBitshift`` layer is the device's own integer neuron (a network already quantized for
Xylo, e.g. from a ``.xylo.json`` specification, :mod:`.xylo_json`): its parameters are taken
as they are, its second input (``input_2``) feeds synapse 2, and its recurrent weights
(``w_rec``, held in the node: :mod:`hwmap.ops.bitshift`) become projections from the layer
onto itself, and its alias table (``aliases``, Xylo's neuron aliasing: :mod:`hwmap.ops.bitshift`)
becomes the population's :attr:`Population.aliases`. A ``Delay`` of exactly one step between neurons and a weight is the device's own
one-step lag through ``W_rec`` and ``W_out``: the projection is marked ``delayed`` and the
device adds no lag of its own for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwmap import Diagnostic, Graph, Node

__all__ = ["Population", "Projection", "Network", "extract", "INPUT", "NEURON_OPS", "PASS_OPS"]

#: The source name of projections from the device's input channels.
INPUT = "input"
NEURON_OPS = ("LIF", "CubaLIF", "IF", "LIFBitshift")
PASS_OPS = ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze")
WEIGHT_OPS = ("Gemm", "MatMul")
#: Violations after which the network is still extracted (and checked against the device).
NON_STRUCTURAL = ("one_dt",)
#: The synaptic decay a neuron without a synaptic state gets: the fastest filter of unit gain.
FAST_SYNAPSE = 0.5


@dataclass
class Population:
    """A population of ``size`` neurons (``kind`` ``"lif"``, or ``"integrator"``: the output
    neurons of a linear last layer read out by their accumulated input). Float dynamics in
    the network's units (see the module docstring); ``native`` holds the integer parameters of
    a ``LIFBitshift`` layer (``dash_syn``, ``dash_mem``, ``threshold``, ``bias``), which are
    taken as they are. ``v_init``: the membrane the network starts from (the device starts
    from 0; a rate-coded network's is given as bias, :attr:`Network.rate_coded`)."""

    name: str
    size: int
    kind: str
    op: str
    alpha: np.ndarray
    beta: np.ndarray
    gain: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray
    dt: float | None = None
    native: dict[str, np.ndarray] | None = None
    #: A native layer's spikes per step and (synaptic, membrane) state bits.
    max_spikes: int | None = None
    state_bits: tuple[int, int] | None = None
    v_init: np.ndarray | None = None
    #: A native layer's alias pairs ``(source, target)`` (neuron indices within the layer, in
    #: the order they act: :mod:`hwmap.ops.bitshift`), ``P × 2``; ``None`` without aliasing.
    aliases: np.ndarray | None = None


@dataclass
class Projection:
    """Weights ``weight`` (``dst × src``, network units) from ``src`` (:data:`INPUT` or a
    population) to population ``dst``, onto its synapse ``synapse``."""

    name: str
    src: str
    dst: str
    weight: np.ndarray
    synapse: int = 0
    #: The graph delays the source's spikes by one step (a Delay node): the device's own lag.
    delayed: bool = False


@dataclass
class Network:
    """The extracted network: populations in graph order, projections, the output
    populations in the order of the graph's output features, and how time enters and leaves
    (``encoder``: the Encoder's ``encoding``, ``timesteps``, ``seed``; ``readout``: the
    Readout's ``mode`` and the linear readout's bias, or ``None`` for a native SNN whose
    outputs are spikes per step)."""

    name: str
    n_inputs: int
    populations: list[Population]
    projections: list[Projection]
    outputs: list[str]
    dt: float | None
    encoder: dict[str, Any] | None = None
    readout: dict[str, Any] | None = None
    out_bias: np.ndarray | None = None

    def population(self, name: str) -> Population:
        return next(p for p in self.populations if p.name == name)

    @property
    def rate_coded(self) -> bool:
        """Whether the network is rate coded, as the ANN-to-SNN conversion makes it: an
        encoder, non-leaky integrate-and-fire hidden neurons (``IF``) and an integrator
        readout. Its values are spike counts, the charge a neuron takes over the whole run,
        so the mapper lets the device drain (``mapping.flush_steps``) and spreads biases and
        initial membranes over the steps (:mod:`.mapper`)."""
        outs = [self.population(k) for k in self.outputs]
        return (self.encoder is not None and self.readout is not None and bool(self.hidden)
                and all(p.op == "IF" for p in self.hidden) and bool(outs)
                and all(p.kind == "integrator" for p in outs))

    @property
    def hidden(self) -> list[Population]:
        return [p for p in self.populations if p.name not in self.outputs]


@dataclass
class _Walk:
    graph: Graph
    producer: dict[str, Node]
    consumers: dict[str, list[Node]]
    diags: list[Diagnostic] = field(default_factory=list)

    def origin(self, tensor: str) -> Node | None:
        """The node that really produced ``tensor``, through shape-only nodes (``None``: the
        graph input or an Encoder's output, i.e. the device's input channels)."""
        node = self.producer.get(tensor)
        while node is not None and node.op in PASS_OPS:
            node = self.producer.get(node.inputs[0])
        if node is not None and node.op == "Encoder":
            return None
        return node


def _features(graph: Graph, tensor: str) -> int:
    return int(np.prod(graph.tensor(tensor).shape[1:], dtype=np.int64))


def _gemm_weight(node: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W dst×src, bias dst)`` of a Gemm/MatMul with constant weights, or ``None``."""
    if node.op == "Gemm":
        w = node.params.get("B")
        if w is None or float(node.attrs.get("alpha", 1.0)) != 1.0 or int(node.attrs.get("transA", 0)) != 0:
            return None
        w = np.asarray(w, np.float64)
        w = w if int(node.attrs.get("transB", 0)) else w.T
        c = np.asarray(node.params.get("C", np.zeros(w.shape[0])), np.float64) * float(node.attrs.get("beta", 1.0))
        return w, np.broadcast_to(c, (w.shape[0],)).copy()
    w = node.params.get("B")
    if w is None or np.asarray(w).ndim != 2:
        return None
    w = np.asarray(w, np.float64).T
    return w, np.zeros(w.shape[0])


def _neuron_dynamics(node: Node, size: int, diags: list[Diagnostic]) -> Population:
    """The device dynamics (module docstring) of one neuron node."""
    from hwmap.ops.neuron import feature_param, neuron_settings

    feats = (size,)
    dt = node.attrs.get("dt")
    dt = float(dt) if dt is not None else None
    if node.op == "LIFBitshift":
        native = {k: np.rint(feature_param(node, k, feats, d)).astype(np.int64)
                  for k, d in (("dash_syn", None), ("dash_mem", None), ("threshold", None), ("bias", 0.0))}
        if "dash_syn_2" in node.params:
            native["dash_syn_2"] = np.rint(feature_param(node, "dash_syn_2", feats)).astype(np.int64)
        alpha = 1.0 - 2.0 ** -native["dash_mem"].astype(np.float64)
        beta = 1.0 - 2.0 ** -native["dash_syn"].astype(np.float64)
        bits = (int(node.attrs.get("syn_bits", 16)), int(node.attrs.get("mem_bits", 16)))
        aliases = np.rint(np.asarray(node.params["aliases"], np.float64)).astype(np.int64).reshape(-1, 2) \
            if "aliases" in node.params else None
        return Population(node.name, size, "lif", node.op, alpha, beta, np.ones(size), native["bias"].astype(float),
                          native["threshold"].astype(float), dt, native, int(node.attrs.get("max_spikes", 31)), bits,
                          aliases=aliases if aliases is not None and len(aliases) else None)
    reset, disc = neuron_settings(node)
    p = {k: feature_param(node, k, feats, d) for k, d in
         (("r", None), ("v_threshold", None), ("v_leak", 0.0), ("v_reset", 0.0), ("w_in", 1.0), ("v_init", 0.0))
         if k in node.params or d is not None}
    step = dt if dt is not None else 1.0

    def gain(tau: np.ndarray) -> np.ndarray:
        tau = np.asarray(tau, np.float64)
        return step / tau if disc == "euler" else -np.expm1(-step / tau)

    if node.op == "IF":
        k_mem = np.zeros(size)
        g = step * p["r"]
        bias = np.zeros(size)
    else:
        k_mem = gain(feature_param(node, "tau" if node.op == "LIF" else "tau_mem", feats))
        g = k_mem * p["r"]
        bias = k_mem * p["v_leak"]
    beta = np.full(size, FAST_SYNAPSE)
    if node.op == "CubaLIF":
        k_syn = gain(feature_param(node, "tau_syn", feats))
        beta = 1.0 - k_syn
        g = g * k_syn * p["w_in"] / np.where(beta > 0, beta, 1.0)
    if reset == "value" and np.any(p["v_reset"] != 0):
        diags.append(Diagnostic("reset", "resets to v_reset ≠ 0; the device subtracts the threshold instead",
                                node.name, "warning"))
    elif reset == "value":
        diags.append(Diagnostic("reset", "resets to 0 after a spike; the device subtracts the threshold (the "
                                "residue above it is kept)", node.name, "warning"))
    if np.any(p["v_init"] != 0):
        diags.append(Diagnostic("v_init", "starts from v_init ≠ 0; the device starts every input from 0" +
                                ("" if node.op != "IF" else " (in a rate-coded network v_init is spread over the run "
                                 "as bias: the same spike count for non-negative input)"), node.name, "warning"))
    return Population(node.name, size, "lif", node.op, 1.0 - k_mem, beta, g, bias, p["v_threshold"].copy(), dt,
                      v_init=np.broadcast_to(np.asarray(p["v_init"], np.float64), feats).copy())


def _integrator(name: str, size: int, dt: float | None) -> Population:
    """Output neurons that accumulate their input: the device's readout of a linear layer."""
    one = np.ones(size)
    return Population(name, size, "integrator", "Readout", one, one, one, np.zeros(size), np.full(size, np.inf), dt)


def extract(graph: Graph) -> tuple[Network | None, list[Diagnostic]]:
    """The network of ``graph`` (``None`` when its structure cannot be extracted) and every
    finding: unsupported nodes, inputs that do not go first through a weight, two weights in
    a row, outputs that do not come from neurons, reset and start-state approximations."""
    producer = {t: n for n in graph.nodes for t in n.outputs}
    consumers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    w = _Walk(graph, producer, consumers)
    known = set(NEURON_OPS) | set(PASS_OPS) | set(WEIGHT_OPS) | {"Encoder", "Readout", "Add", "Delay"}
    before = _before_encoder(graph, producer)
    for n in before:
        w.diags.append(Diagnostic("input_scale", f"{n.op} node {n.name!r} changes the input before the encoder; the "
                                  "device's host encodes the raw input (a conversion's λ_0 ≠ 1: scale the data so "
                                  "that its calibration percentile is 1)", n.name))
    for n in graph.nodes:
        if n.op not in known and n not in before:
            w.diags.append(Diagnostic("unsupported_op", f"the device has no {n.op} (it runs weights and LIF neurons "
                                      "only)", n.name))
    if len(graph.inputs) != 1:
        w.diags.append(Diagnostic("inputs", f"the device takes one input; the graph has {len(graph.inputs)}"))
        return None, w.diags
    encoders = [n for n in graph.nodes if n.op == "Encoder"]
    encoder = None
    if encoders:
        from hwmap.ops.time import encoder_settings

        encoding, timesteps, seed = encoder_settings(encoders[0])
        encoder = {"encoding": encoding, "timesteps": timesteps, "seed": seed}
        n_inputs = _features(graph, encoders[0].outputs[0])
    else:
        n_inputs = _features(graph, graph.inputs[0])
    pops: dict[str, Population] = {}
    projections: list[Projection] = []
    neuron_nodes = [n for n in graph.nodes if n.op in NEURON_OPS]
    for n in neuron_nodes:
        size = _features(graph, n.outputs[0])
        pop = _neuron_dynamics(n, size, w.diags)
        pops[n.name] = pop
        projections += _incoming(w, n.name, n.inputs[0], pop)
        if len(n.inputs) > 1:  # LIFBitshift's second synapse
            second = _incoming(w, n.name, n.inputs[1], pop)
            for p in second:
                p.synapse = 1
            projections += second
        if "w_rec" in n.params:  # recurrent weights held in the node (hwmap.ops.bitshift)
            rec = np.asarray(n.params["w_rec"], np.float64)
            rec = rec[:, :, None] if rec.ndim == 2 else rec
            projections += [Projection(f"{n.name}.w_rec" + ("" if k == 0 else f"_{k + 1}"), n.name, n.name,
                                       rec[:, :, k].T.copy(), k) for k in range(rec.shape[2])]
    readout, out_bias, outputs = _outputs(w, pops, projections)
    _check_weights_feed_neurons(w)
    dts = sorted({p.dt for p in pops.values() if p.dt is not None})
    if len(dts) > 1:
        w.diags.append(Diagnostic("one_dt", "the device runs every neuron at one time step; the network's neurons "
                                  f"use {len(dts)}: {', '.join(f'{d:g} s' for d in dts)}"))
    if not pops:
        w.diags.append(Diagnostic("neurons", "the network has no neuron layer: the device runs spiking networks "
                                  "(an ANN must be converted first)"))
    seen: set[tuple[str, str | None, str]] = set()
    w.diags = [d for d in w.diags if (d.rule, d.node, d.message) not in seen
               and not seen.add((d.rule, d.node, d.message))]  # type: ignore[func-returns-value]
    if any(d.severity == "error" and d.rule not in NON_STRUCTURAL for d in w.diags):
        return None, w.diags
    order = [n.name for n in graph.nodes if n.name in pops] + [p for p in pops if p not in {n.name for n in graph.nodes}]
    net = Network(graph.name, n_inputs, [pops[k] for k in order], projections, outputs, dts[0] if dts else None,
                  encoder, readout, out_bias)
    return net, w.diags


def _before_encoder(graph: Graph, producer: dict[str, Node]) -> list[Node]:
    """The nodes between the graph's input and its encoder (the conversion's input scaling)."""
    out: list[Node] = []
    for enc in (n for n in graph.nodes if n.op == "Encoder"):
        node = producer.get(enc.inputs[0])
        while node is not None and node not in out:
            out.append(node)
            node = producer.get(node.inputs[0]) if node.inputs else None
    return out


def _incoming(w: _Walk, dst: str, tensor: str, pop: Population) -> list[Projection]:
    """The projections feeding ``tensor`` (a neuron's input): one weight, or an Add of weights."""
    node = w.origin(tensor)
    if node is None:
        w.diags.append(Diagnostic("input_through_weight", "the input reaches this neuron layer without a weight: the "
                                  "device's input channels connect to neurons through W_in only", dst))
        return []
    if node.op == "Add":
        out = []
        for t in node.inputs:
            out += _incoming(w, dst, t, pop)
        return out
    if node.op not in WEIGHT_OPS:
        w.diags.append(Diagnostic("neuron_input", f"neurons take weighted spikes only; this layer's input comes from "
                                  f"{node.op} node {node.name!r}", dst))
        return []
    wb = _gemm_weight(node, w.graph)
    if wb is None:
        w.diags.append(Diagnostic("weights", "a weight must be a constant matrix (Gemm with alpha = 1, no transA)",
                                  node.name))
        return []
    weight, bias = wb
    pop.bias = pop.bias + pop.gain * bias if pop.kind == "lif" and pop.native is None else pop.bias
    summed = w.origin(node.inputs[0])
    if summed is not None and summed.op in ("Add", "Sum") and weight.shape[0] == pop.size:
        # weights of a sum of spike trains (a residual sum of layers' spikes): one projection per train
        out = []
        for t in summed.inputs:
            out += _projection(w, node, t, dst, weight)
        return out
    if weight.shape[0] != pop.size:
        w.diags.append(Diagnostic("weights", f"{weight.shape[0]} outputs for a layer of {pop.size} neurons", node.name))
        return []
    return _projection(w, node, node.inputs[0], dst, weight)


def _projection(w: _Walk, node: Node, tensor: str, dst: str, weight: np.ndarray) -> list[Projection]:
    """The projection through weights ``node`` of the spikes in ``tensor`` (the input's, a
    layer's, or a layer's delayed one step)."""
    src_node = w.origin(tensor)
    delayed = False
    if src_node is not None and src_node.op == "Delay":
        src_node, delayed = _one_step_delay(w, src_node)
        if src_node is None:
            return []
    if src_node is None:
        src = INPUT
    elif src_node.op in NEURON_OPS:
        src = src_node.name
    elif src_node.op in WEIGHT_OPS:
        w.diags.append(Diagnostic("consecutive_weights", f"weights {src_node.name!r} feed weights {node.name!r} "
                                  "directly: two weights in a row have no neurons between them on the device",
                                  node.name))
        return []
    else:
        w.diags.append(Diagnostic("weight_input", f"weights take spikes from the input or from neurons; this one takes "
                                  f"the output of {src_node.op} node {src_node.name!r}", node.name))
        return []
    return [Projection(node.name, src, dst, weight, delayed=delayed)]


def _one_step_delay(w: _Walk, node: Node) -> tuple[Node | None, bool]:
    """The neuron node a Delay of exactly one step delays (the device's own lag), or
    ``None`` with a diagnostic."""
    dt = node.attrs.get("dt")
    delay = np.asarray(node.params.get("delay", np.nan), np.float64)
    src = w.origin(node.inputs[0])
    steps = np.rint(delay / float(dt)) if dt else np.full(1, np.nan)
    if not (np.all(np.isfinite(steps)) and np.all(steps == 1)):
        w.diags.append(Diagnostic("unsupported_op", "the device delays spikes through W_rec and W_out by exactly one "
                                  "step; this Delay is not one step", node.name))
        return None, False
    if src is None or src.op not in NEURON_OPS:
        w.diags.append(Diagnostic("unsupported_op", "a Delay is the device's one-step lag between neurons and "
                                  "weights; this one delays " + ("the input" if src is None else f"{src.op} node "
                                  f"{src.name!r}"), node.name))
        return None, False
    return src, True


def _outputs(w: _Walk, pops: dict[str, Population], projections: list[Projection]
             ) -> tuple[dict[str, Any] | None, np.ndarray | None, list[str]]:
    """The output populations; a linear layer read out by a Readout becomes an integrator."""
    from hwmap.ops.time import readout_mode

    g = w.graph
    if len(g.outputs) != 1:
        w.diags.append(Diagnostic("outputs", f"the device has one output population; the graph has {len(g.outputs)} "
                                  f"outputs ({', '.join(g.outputs)})"))
        return None, None, []
    node = w.origin(g.outputs[0])
    readout = None
    out_bias = None
    if node is not None and node.op == "Readout":
        readout = {"mode": readout_mode(node)}
        node = w.origin(node.inputs[0])
    if node is not None and node.op in NEURON_OPS:
        return readout, out_bias, [node.name]
    if node is not None and node.op in WEIGHT_OPS and readout is not None:
        size = _features(g, node.outputs[0])
        dts = [p.dt for p in pops.values() if p.dt is not None]
        pop = _integrator(node.name, size, dts[0] if dts else None)
        pops[node.name] = pop
        got = _incoming(w, node.name, node.outputs[0], pop)
        projections += got
        wb = _gemm_weight(node, g)
        out_bias = wb[1] if wb is not None else np.zeros(size)
        return readout, out_bias, [node.name]
    what = "the input" if node is None else f"{node.op} node {node.name!r}"
    w.diags.append(Diagnostic("output_from_neurons", f"the graph's output comes from {what}: the device's outputs "
                              "come directly from neurons (a linear last layer only under a Readout)",
                              None if node is None else node.name))
    return readout, out_bias, []


def _check_weights_feed_neurons(w: _Walk) -> None:
    """Rules on what a weight's output may reach: neurons (possibly through an Add), or a Readout."""
    for n in w.graph.nodes:
        if n.op not in WEIGHT_OPS:
            continue
        frontier = list(n.outputs)
        while frontier:
            t = frontier.pop()
            for c in w.consumers.get(t, []):
                if c.op in PASS_OPS or c.op == "Add":
                    frontier += c.outputs
                elif c.op in WEIGHT_OPS:
                    w.diags.append(Diagnostic("consecutive_weights", f"weights {n.name!r} feed weights {c.name!r} "
                                              "directly: two weights in a row have no neurons between them on the "
                                              "device", c.name))
