"""The compiled backend (``backend="numba"``) against the numpy step (``backend="numpy"``, the
reference).

Two compiled paths. The step-by-step one (:mod:`hwmap_nengo_like.compiled`, every network the
fused run does not cover: batches, static inputs, other neuron types and synapses) is
bit-identical to numpy, compared bit for bit on every neuron type and wrapper, batched, with
decoded inputs of 0, 1 and 2 dimensions, connections into the neurons, links with and
without synapses.

The fused run (:mod:`hwmap_nengo_like.fused`: one sample, LIF populations, node and probe
hosts, Lowpass links; the whole ``advance`` in one compiled call) is *not* bit-identical, by
design: it calls the C library's ``expm1``/``log1p`` (numba's), where numpy uses its own SIMD
code (SVML on AVX-512), and the two differ in the last bit for some arguments; its
matrix-vector products skip the zero outputs and sum in another order than numpy's BLAS. So
it is held to a stated tolerance: every probe record, voltage, refractory time, filter state
and count within ``ATOL + RTOL·|reference|`` (both 1e-12; the largest difference measured
is 2.2e-15, on a voltage), and every spike train identical. :func:`test_tolerance_detects_a_changed_formula`
shows the comparison fails for a change of 1 part in 10^9 of one LIF constant.
"""

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
    # dt/tau_rc = 0.1: expm1/log1p arguments beyond the fused run's series (the C library's there)
    "LIF(tau_rc=10ms)": nl.LIF(tau_rc=0.01),
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


ATOL = RTOL = 1e-12


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` within the stated tolerance of the reference ``b`` (same shape, NaN nowhere)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= ATOL + RTOL * np.abs(b)))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float64).view(np.int64)


def _run(d: Description, backend: str, batch: int, rate: bool = False) -> tuple[dict[str, Any], Runner]:
    x = np.random.RandomState(7).uniform(-1, 1, (batch, 2))
    r = Runner(d, batch=batch, inputs={"in": x}, rate=rate, backend=backend)
    _, probes = r.advance(70)
    _, more = r.advance(50)  # continued from where the first call stopped
    return {k: np.concatenate([v, more[k]]) for k, v in probes.items()}, r


@pytest.mark.parametrize("kind", list(TYPES))
def test_stepwise_compiled_bit_identical_to_numpy(kind: str) -> None:
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


def _sine(kind: str, backend: str) -> tuple[dict[str, np.ndarray], Any]:
    with nl.Network(seed=5) as net:
        u = nl.Node(lambda t: np.sin(2 * np.pi * 2 * t) * np.ones(2))
        a = nl.Ensemble(60, 2, neuron_type=TYPES[kind])
        b = nl.Ensemble(40, 1, neuron_type=TYPES[kind])
        nl.Connection(u, a, synapse=0.005)
        nl.Connection(a, b, function=lambda x: x[0] * x[1], synapse=0.005)
        nl.Connection(a.neurons, b.neurons, transform=np.full((40, 60), 1e-3))
        p, q, s = nl.Probe(a, synapse=0.02), nl.Probe(b, synapse=0.01), nl.Probe(a.neurons)
    with nl.Simulator(net, progress_bar=False, backend=backend) as sim:
        sim.run(0.1)
        sim.run(0.1)  # continued
        return {"a": sim.data[p], "b": sim.data[q], "spikes": sim.data[s]}, sim._runner.fused


@pytest.mark.parametrize("kind", ["LIF", "SpikingRectifiedLinear", "RegularSpiking(LIFRate)", "Tanh"])
def test_simulator_backends_agree(kind: str) -> None:
    """Through the nengo-compatible ``Simulator``: LIF runs fused (within the tolerance, spikes
    identical), the other types step by step (bit-identical)."""
    (fast, fused), (ref, _) = _sine(kind, "numba"), _sine(kind, "numpy")
    assert (fused is not None) == (kind == "LIF")
    for k in ref:
        if fused is None or k == "spikes":
            assert np.array_equal(_bits(fast[k]), _bits(ref[k])), (kind, k)
        else:
            assert _close(fast[k], ref[k]), (kind, k, float(np.abs(fast[k] - ref[k]).max()))
    assert ref["spikes"].sum() > 0


LIFS = {k: v for k, v in TYPES.items() if k.startswith("LIF(") or k == "LIF"}


def _node_network(nt: Any, seed: int = 3) -> Description:
    """As :func:`_network`, the input a node (time only) and the synapses Lowpass: a network the
    fused run covers."""
    d = _network(nt, seed)
    d.hosts[0] = Host("in", "node", 0, 2)
    d.links[-1].synapse = {"type": "Lowpass", "tau": 0.02}
    return d


def _wave(t: float) -> Any:
    return np.array([np.sin(20 * t), np.cos(13 * t)])


def _fused_run(d: Description, backend: str, nt: Any, node: Any = _wave) -> tuple[dict[str, np.ndarray], Runner]:
    r = Runner(d, nodes={"in": node}, backend=backend)
    assert (r.fused is not None) == (backend == "numba")
    _, probes = r.advance(70)
    _, more = r.advance(50)
    return {k: np.concatenate([v, more[k]]) for k, v in probes.items()}, r


def _agree(fast: tuple[dict[str, np.ndarray], Runner], ref: tuple[dict[str, np.ndarray], Runner]) -> list[str]:
    """What differs beyond the tolerance (spike trains and counts: at all)."""
    (pf, rf), (pr, rr) = fast, ref
    bad = [k for k in pr if not _close(pf[k], pr[k])]
    bad += [k for k in ("pa", "pb", "pc") if not np.array_equal(pf[k], pr[k])]
    for pop in ("A", "B", "C"):
        bad += [f"{pop}.{k}" for k in ("voltage", "refractory_time") if not _close(rf.state[pop][k], rr.state[pop][k])]
        bad += [f"{pop}.spikes"] if not _close(rf.spikes[pop], rr.spikes[pop]) else []
    bad += [f"delayed {i}" for i in rr.delayed if not _close(rf.delayed[i], rr.delayed[i])]
    bad += [f"synops {k}" for k in rr.synops if not _close(rf.synops[k], rr.synops[k])]
    return bad


@pytest.mark.parametrize("kind", list(LIFS))
def test_fused_run_within_tolerance_of_numpy(kind: str) -> None:
    d = _node_network(LIFS[kind])
    fast, ref = _fused_run(d, "numba", LIFS[kind]), _fused_run(d, "numpy", LIFS[kind])
    assert _agree(fast, ref) == [], kind
    assert sum(float(ref[1].spikes[p].sum()) for p in ("A", "B", "C")) > 0  # not vacuous: the neurons spike
    assert any(np.any(ref[1].state[p]["refractory_time"] > 0) for p in ("A", "B", "C"))


@pytest.mark.parametrize("kind", ["LIF", "LIF(tau_ref=3.3ms)", "LIF(tau_ref=0.4ms,min_voltage=-0.5)"])
def test_fused_run_in_short_calls(kind: str) -> None:
    """Many short ``advance`` calls (1, 2, 3, 5 steps ...): the membrane factor of the step
    ending a refractory period is computed ahead (when the neuron spikes, and for the state at
    the start of each call), also where that step falls in a later call."""
    nt = LIFS[kind]
    d = _node_network(nt)
    r = Runner(d, nodes={"in": _wave}, backend="numba")
    assert r.fused is not None
    parts = []
    for steps in (1, 1, 2, 3, 5, 8, 13, 1, 2, 4, 40):
        parts.append(r.advance(steps)[1])
    fast = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ref = _fused_run(d, "numpy", nt, node=_wave)
    refp = {k: v[:80] for k, v in ref[0].items()}  # the reference ran 120 steps
    assert all(_close(fast[k], refp[k]) for k in refp)
    assert all(np.array_equal(fast[k], refp[k]) for k in ("pa", "pb", "pc"))
    assert sum(float(np.count_nonzero(refp[k])) for k in ("pa", "pb", "pc")) > 0


@pytest.mark.parametrize("density", [0.0, 0.07, 0.5, 1.0])
def test_compress16_stores_the_flagged_indices(density: float) -> None:
    """The 16-at-a-time store of the spiking neurons' indices (``vpcompressd`` on AVX-512)
    against numpy's ``flatnonzero``, appended at a running position."""
    from numba import njit

    from hwmap_nengo_like import fused_kernels as FK

    @njit
    def scan(mask: np.ndarray, out: np.ndarray) -> int:
        ns = 3  # after 3 entries already there
        for q in range(mask.size // 16):
            ns += FK._compress16(out, ns, mask, 16 * q)
        return ns

    mask = (np.random.RandomState(1).uniform(size=16 * 41) < density).astype(np.uint8)
    out = np.full(mask.size + 3, -1, np.int32)
    ns = scan(mask, out)
    hit = np.flatnonzero(mask)
    assert ns == 3 + hit.size and np.array_equal(out[3:ns], hit) and np.all(out[:3] == -1)
    assert np.all(out[ns:] == -1)  # nothing stored past the flagged ones


def test_fused_node_output_none_and_errors() -> None:
    """A node returning None gives zeros (as the numpy step); one returning the wrong size is
    refused with its name."""
    nt = LIFS["LIF"]
    d = _node_network(nt)
    gated = lambda t: None if t < 0.03 else _wave(t)  # noqa: E731
    fast, ref = _fused_run(d, "numba", nt, gated), _fused_run(d, "numpy", nt, gated)
    assert _agree(fast, ref) == []
    with pytest.raises(ValueError, match="node 'in' returned 3 values, expected 2"):
        Runner(d, nodes={"in": lambda t: np.ones(3)}).advance(2)


def test_tolerance_detects_a_changed_formula() -> None:
    """The comparison is tight: the reference against itself with ``tau_rc`` changed by 1 part
    in 10^9 (a formula off by that much) fails it."""
    nt = LIFS["LIF"]
    ref = _fused_run(_node_network(nt), "numpy", nt)
    off = nl.LIF(tau_rc=nt.tau_rc * (1 + 1e-9), tau_ref=nt.tau_ref)
    d = _node_network(nt)
    for p in d.populations:
        p.neuron = off.spec()
    changed = _fused_run(d, "numpy", off)
    bad = _agree(changed, ref)
    assert "A.voltage" in bad and "A.refractory_time" in bad, bad


@pytest.mark.parametrize("exp", [True, False])
def test_series_within_ulps_of_numpy(exp: bool) -> None:
    """The fused run's ``expm1``/``log1p`` (Taylor series within ``|x| <= 1/16``, the C
    library's beyond) within 4 ulps of numpy's, on both sides of the series' range."""
    from hwmap_nengo_like import fused_kernels as FK

    x = np.concatenate([np.linspace(-FK.SERIES_MAX, FK.SERIES_MAX, 20001), np.linspace(-0.5, 0.5, 2001),
                        [1e-300, -1e-300, 0.0]])
    out = np.zeros_like(x)
    FK._series(x.size, x, out, FK._EXPM1 if exp else FK._LOG1P, exp)
    ref = np.expm1(x) if exp else np.log1p(x)
    assert np.all(np.abs(out - ref) <= 4 * np.spacing(np.abs(ref)) + 1e-320)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend 'cuda'"):
        Runner(_network(TYPES["LIF"]), inputs={"in": np.zeros((1, 2))}, backend="cuda")
