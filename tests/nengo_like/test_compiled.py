"""The compiled step (``backend="numba"``, :mod:`hwmap_nengo_like.compiled`) against the numpy
step it replaces (``backend="numpy"``, the reference): bit for bit, on every neuron type and
wrapper, batched, with decoded inputs of 0, 1 and 2 dimensions, connections into the neurons,
links with and without synapses, and through the nengo-compatible ``Simulator``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hwmap_nengo_like as nl
from hwmap_nengo_like.description import Description, Host, Link, Population
from hwmap_nengo_like.neurons import RatesToSpikesNeuronType
from hwmap_nengo_like.simulator import Runner

TYPES: dict[str, Any] = {
    "LIF": nl.LIF(),
    # refractory period shorter than a step, negative floor, other amplitude: every branch of the LIF step
    "LIF(tau_ref=0.4ms,min_voltage=-0.5)": nl.LIF(tau_ref=0.0004, min_voltage=-0.5, amplitude=0.3),
    "LIF(tau_ref=3.3ms)": nl.LIF(tau_rc=0.05, tau_ref=0.0033),
    "SpikingRectifiedLinear": nl.SpikingRectifiedLinear(amplitude=2.0),
    "RectifiedLinear": nl.RectifiedLinear(amplitude=0.5),
    "LIFRate": nl.LIFRate(),
    "Sigmoid": nl.Sigmoid(),
    "Tanh": nl.Tanh(),
    "RegularSpiking(LIFRate)": nl.RegularSpiking(nl.LIFRate(), amplitude=0.7),
    "RegularSpiking(RectifiedLinear)": nl.RegularSpiking(nl.RectifiedLinear()),
    "RegularSpiking(Tanh)": nl.RegularSpiking(nl.Tanh()),
    "RegularSpiking(Sigmoid)": nl.RegularSpiking(nl.Sigmoid()),
    "PoissonSpiking(LIFRate)": nl.PoissonSpiking(nl.LIFRate()),
    "StochasticSpiking(Tanh)": nl.StochasticSpiking(nl.Tanh()),
    "StochasticSpiking(RectifiedLinear)": nl.StochasticSpiking(nl.RectifiedLinear()),
}


def _population(name: str, nt: Any, n: int, dims: int, rng: np.random.RandomState, seed: int) -> Population:
    gain, bias = nt.gain_bias(rng.uniform(100, 280, n), rng.uniform(-0.9, 0.9, n))
    enc = rng.normal(size=(n, dims))
    enc /= np.maximum(np.linalg.norm(enc, axis=1, keepdims=True), 1e-12)
    state: dict[str, np.ndarray] = {}
    if isinstance(nt, RatesToSpikesNeuronType):
        state.update({"base." + k: v for k, v in nt.base_type.make_state(n, rng=rng).items()})
        own = RatesToSpikesNeuronType.make_state(nt, n, rng=rng)
    else:
        own = nt.make_state(n, rng=rng)
    state.update({k: v for k, v in own.items() if isinstance(v, np.ndarray)})
    if "refractory_time" in state:  # some neurons start refractory, for part of the first step or longer
        state["refractory_time"] = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0, 0.004, n), 0.0)
    return Population(name, n, dims, nt.spec(), gain, bias, enc * gain[:, None], state, seed)


def _network(nt: Any, seed: int = 3) -> Description:
    """An input of 2 values into ``A`` (2-D, through a synapse) and ``C`` (1-D, no synapse);
    ``A``'s spikes into ``B``'s neurons (no decoded input); every output probed."""
    rng = np.random.RandomState(seed)
    a, b, c = _population("A", nt, 30, 2, rng, 11), _population("B", nt, 20, 0, rng, 12), \
        _population("C", nt, 25, 1, rng, 13)
    lp = {"type": "Lowpass", "tau": 0.005}
    hosts = [Host("in", "input", 0, 2), Host("pa", "probe", 30, 0), Host("pb", "probe", 20, 0),
             Host("pc", "probe", 25, 0), Host("dec", "probe", 2, 0)]
    links = [Link("in>A", "in", "A", "decoded", rng.normal(size=(2, 2)), lp),
             Link("in>C", "in", "C", "decoded", rng.normal(size=(1, 2))),
             Link("A>B", "A", "B", "neurons", rng.normal(size=(20, 30)) * 1e-3, {"type": "Lowpass", "tau": 0.01}),
             Link("A>pa", "A", "pa", "in", np.eye(30)), Link("B>pb", "B", "pb", "in", np.eye(20)),
             Link("C>pc", "C", "pc", "in", np.eye(25)),
             Link("A>dec", "A", "dec", "in", rng.normal(size=(2, 30)) * 1e-3, {"type": "Alpha", "tau": 0.01})]
    return Description("net", 0.001, 120, [a, b, c], hosts, links)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float64).view(np.int64)


def _run(d: Description, backend: str, batch: int, rate: bool = False) -> tuple[dict[str, Any], Runner]:
    x = np.random.RandomState(7).uniform(-1, 1, (batch, 2))
    r = Runner(d, batch=batch, inputs={"in": x}, rate=rate, backend=backend)
    _, probes = r.advance(70)
    _, more = r.advance(50)  # continued from where the first call stopped
    return {k: np.concatenate([v, more[k]]) for k, v in probes.items()}, r


@pytest.mark.parametrize("kind", list(TYPES))
def test_compiled_step_bit_identical_to_numpy(kind: str) -> None:
    d = _network(TYPES[kind])
    for batch in (1, 3):
        fast, rf = _run(d, "numba", batch)
        ref, rr = _run(d, "numpy", batch)
        for name in ref:
            assert np.array_equal(_bits(fast[name]), _bits(ref[name])), (kind, batch, name)
        for pop in ("A", "B", "C"):
            for key, v in rr.state[pop].items():
                if isinstance(v, np.ndarray):
                    assert np.array_equal(_bits(rf.state[pop][key]), _bits(v)), (kind, batch, pop, key)
            assert np.array_equal(rf.spikes[pop], rr.spikes[pop]) and rf.synops == rr.synops
        if TYPES[kind].spiking:  # the test is not vacuous: the neurons spike
            assert sum(float(rr.spikes[p].sum()) for p in ("A", "B", "C")) > 0


def test_rate_network_identical() -> None:
    d = _network(TYPES["LIF"])
    fast, _ = _run(d, "numba", 2, rate=True)
    ref, _ = _run(d, "numpy", 2, rate=True)
    assert all(np.array_equal(_bits(fast[k]), _bits(ref[k])) for k in ref)


def _sine(kind: str, backend: str) -> dict[str, np.ndarray]:
    with nl.Network(seed=5) as net:
        u = nl.Node(lambda t: np.sin(2 * np.pi * 2 * t) * np.ones(2))
        a = nl.Ensemble(60, 2, neuron_type=TYPES[kind])
        b = nl.Ensemble(40, 1, neuron_type=TYPES[kind])
        nl.Connection(u, a, synapse=0.005)
        nl.Connection(a, b, function=lambda x: x[0] * x[1], synapse=0.005)
        nl.Connection(a.neurons, b.neurons, transform=np.full((40, 60), 1e-3))
        p, q, s = nl.Probe(a, synapse=0.02), nl.Probe(b, synapse=0.01), nl.Probe(a.neurons)
    with nl.Simulator(net, progress_bar=False, backend=backend) as sim:
        sim.run(0.2)
        return {"a": sim.data[p], "b": sim.data[q], "spikes": sim.data[s]}


@pytest.mark.parametrize("kind", ["LIF", "SpikingRectifiedLinear", "RegularSpiking(LIFRate)", "Tanh"])
def test_simulator_backends_bit_identical(kind: str) -> None:
    fast, ref = _sine(kind, "numba"), _sine(kind, "numpy")
    for k in ref:
        assert np.array_equal(_bits(fast[k]), _bits(ref[k])), (kind, k)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend 'cuda'"):
        Runner(_network(TYPES["LIF"]), inputs={"in": np.zeros((1, 2))}, backend="cuda")
