"""ANN to NEF network: the converted graph (the core's conversion pass,
:func:`hwmap.convert_to_snn`: normalization, Encoder, Readout) as a network description.

Each ``IF`` node of the converted graph becomes a population: one neuron per element of its
output, of the configured spiking type around ``RectifiedLinear`` (``[neurons] type``), with
the ANN's gain and bias: the linear ops between two neuron layers (convolutions, fully
connected layers, scalings, pooling, flattening) are one affine map ``W s + b``, measured by
running them (:func:`hwmap.execute.run`) on the zero vector (``b``) and on the unit vectors
(the columns of ``W``); the population's current is ``J = gain · (W s) + bias`` with ``gain =
rate_scale / dt`` and ``bias = gain · b``, so a neuron fires ``rate_scale · (W s + b)`` spikes
per step, the rate of the converted IF neuron, and each spike has amplitude ``dt /
rate_scale``: what it passes on averages to the normalized activation whatever the rate
scale. The membrane starts at half a spike (the conversion's half-threshold start). The
``Encoder`` becomes the ``input`` host (its encoding, a scale before it), the ``Readout`` an
``output`` host reading the last affine map (bias included), optionally through a Lowpass
(``[neurons] output_synapse_tau_s``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwmap import Diagnostic, Graph, Tensor

from .description import Description, Host, Link, Population
from .neurons import RectifiedLinear, SpikingRectifiedLinear, from_spec
from .synapses import Lowpass

__all__ = ["describe", "neuron_spec", "MAX_DENSE_WEIGHTS"]

#: The largest dense weight matrix the description holds (elements): beyond it the network is
#: refused by name (a substrate of these cores would not hold it either).
MAX_DENSE_WEIGHTS = 50_000_000


def neuron_spec(kind: str, rate_scale: float, dt: float) -> dict[str, Any]:
    """The spec of neuron type ``kind`` (a wrapper around ``RectifiedLinear``, or
    ``SpikingRectifiedLinear``) whose spikes have amplitude ``dt / rate_scale``."""
    amp = dt / rate_scale
    if kind == "SpikingRectifiedLinear":
        return SpikingRectifiedLinear(amplitude=amp).spec()
    return from_spec({"type": kind, "amplitude": amp, "base_type": RectifiedLinear().spec()}, "[neurons] type").spec()


def _size(shape: Any) -> int:
    return int(math.prod(int(s) for s in shape[1:]))


def _affine(g: Graph, target: str, sources: dict[str, str], producers: dict[str, Any]) -> tuple[
        dict[str, np.ndarray], np.ndarray] | Diagnostic:
    """``({source tensor: W}, b)`` with ``target = Σ W_s · s + b``, or a diagnostic."""
    if target in sources:
        n = _size(g.tensors[target].shape)
        return {target: np.eye(n)}, np.zeros(n)
    nodes: list[Any] = []
    used: set[str] = set()
    stack, seen = [target], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in sources:
            used.add(t)
            continue
        node = producers.get(t)
        if node is None:
            return Diagnostic("unsupported", f"tensor {t!r} depends on the static input other than through the "
                                             "encoder", None)
        if node.op in ("IF", "Encoder", "Readout") or node.op in ("LIF", "CubaLIF", "LIFBitshift"):
            return Diagnostic("unsupported", f"op {node.op} between neuron layers", node.name)
        nodes.append(node)
        stack.extend(node.inputs)
    order = [n for n in g.nodes if n in nodes]
    srcs = [s for s in sources if s in used]
    m = {s: _size(g.tensors[s].shape) for s in srcs}
    n_out = _size(g.tensors[target].shape)
    if sum(m.values()) * n_out > MAX_DENSE_WEIGHTS:
        return Diagnostic("too_large", f"the affine map into {target!r} would hold {sum(m.values()) * n_out:,} "
                                       f"weights (at most {MAX_DENSE_WEIGHTS:,})", order[-1].name if order else None)
    from hwmap.execute import run

    tensors = {}
    for node in order:
        for t in list(node.inputs) + list(node.outputs):
            if t in g.tensors:
                tensors[t] = g.tensors[t]
    for s in srcs:
        tensors[s] = g.tensors[s]
    sub = Graph(f"{g.name}_affine", srcs, [target], [n.copy() for n in order],
                {k: Tensor.from_json(v.to_json()) for k, v in tensors.items()})
    batch = 1 + sum(m.values())
    feeds = {s: np.zeros((batch,) + tuple(g.tensors[s].shape[1:]), np.float32) for s in srcs}
    row = 1
    for s in srcs:
        flat = feeds[s].reshape(batch, -1)
        flat[row + np.arange(m[s]), np.arange(m[s])] = 1.0
        row += m[s]
    y = np.asarray(run(sub, feeds)[target], np.float64).reshape(batch, -1)
    b = y[0]
    out: dict[str, np.ndarray] = {}
    row = 1
    for s in srcs:
        out[s] = (y[row:row + m[s]] - b).T.copy()
        row += m[s]
    return out, b


def describe(g: Graph, kind: str, rate_scale: float, output_tau: float) -> tuple[Description | None, list[Diagnostic]]:
    """The description of the converted (encoded) graph ``g``, or the diagnostics saying why not."""
    diags: list[Diagnostic] = []
    producers = g.producers()
    encoders = [n for n in g.nodes if n.op == "Encoder"]
    if len(encoders) != 1 or len(g.inputs) != 1:
        return None, [Diagnostic("unsupported", "the network must have one input and one Encoder (an ANN the "
                                                "conversion turned into an encoded graph)")]
    enc = encoders[0]
    scale = 1.0
    src = enc.inputs[0]
    if src != g.inputs[0]:
        pre = producers.get(src)
        if pre is None or pre.op != "Mul" or pre.inputs[0] != g.inputs[0] or np.size(pre.params.get("B", [])) != 1:
            return None, [Diagnostic("unsupported", "only a scalar Mul may stand before the Encoder", enc.name)]
        scale = float(np.asarray(pre.params["B"]).reshape(-1)[0])
    neurons = [n for n in g.nodes if n.op == "IF"]
    dt = float(neurons[0].attrs.get("dt", 1e-3)) if neurons else 1e-3
    timesteps = int(enc.attrs.get("timesteps", 1))
    d = Description(g.name, dt, timesteps)
    inp = g.inputs[0]
    d.hosts.append(Host(inp, "input", 0, _size(g.tensors[inp].shape),
                        {"encoding": enc.attrs.get("encoding", "direct"), "seed": int(enc.attrs.get("seed", 0)),
                         "scale": scale}))
    sources: dict[str, str] = {enc.outputs[0]: inp}
    spec = neuron_spec(kind, rate_scale, dt)
    gain_value = rate_scale / dt
    for node in neurons:
        found = _affine(g, node.inputs[0], sources, producers)
        if isinstance(found, Diagnostic):
            diags.append(found)
            continue
        ws, b = found
        n = _size(g.tensors[node.outputs[0]].shape)
        gain = np.full(n, gain_value)
        state = {"voltage": np.full(n, 0.5)} if spec["type"] in ("RegularSpiking", "SpikingRectifiedLinear") else {}
        name = f"ens_{node.name}"
        d.populations.append(Population(name, n, 0, spec, gain, gain * b, np.zeros((n, 0)), state, 0,
                                        label=node.name))
        for s, w in ws.items():
            d.links.append(Link(f"{sources[s]}->{name}", sources[s], name, "neurons", w))
        sources[node.outputs[0]] = name
    shapes: dict[str, list[int]] = {}
    for node in (n for n in g.nodes if n.op == "Readout"):
        found = _affine(g, node.inputs[0], sources, producers)
        if isinstance(found, Diagnostic):
            diags.append(found)
            continue
        ws, b = found
        out = node.outputs[0]
        shapes[out] = [int(s) for s in g.tensors[out].shape[1:]]
        d.hosts.append(Host(out, "output", len(b), 0, {"mode": node.attrs.get("mode", "membrane"),
                                                       "bias": b.tolist()}))
        syn = Lowpass(output_tau).spec() if output_tau > 0 else None
        for s, w in ws.items():
            d.links.append(Link(f"{sources[s]}->{out}", sources[s], out, "in", w,
                                syn if sources[s] != inp else None))
    if set(shapes) != set(g.outputs):
        diags.append(Diagnostic("unsupported", "every output must be a Readout of the converted network"))
    for i, p in enumerate(d.populations):  # the stochastic types' generators: the conversion's seed, then the layer
        p.seed = (int(enc.attrs.get("seed", 0)) + i + 1) % (2**31 - 1)
    d.meta = {"graph_inputs": [inp], "output_shapes": shapes, "neuron_type": kind, "rate_scale": rate_scale}
    return (None if diags else d), diags
