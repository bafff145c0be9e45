"""Agreement with nengo 4.1 (the peer): same seeds and parameters give the same gains, biases,
encoders and decoders, the same spike trains for the deterministic types, the same rates in
distribution for the stochastic wrappers, and decoded signals as good as nengo's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hwmap_nengo_like as mine

nengo = pytest.importorskip("nengo")

T = 0.3  # seconds simulated: short, the suite stays fast


def _types(lib: Any) -> dict[str, Any]:
    return {"LIF": lib.LIF(), "LIFRate": lib.LIFRate(), "RectifiedLinear": lib.RectifiedLinear(),
            "SpikingRectifiedLinear": lib.SpikingRectifiedLinear(), "Sigmoid": lib.Sigmoid(), "Tanh": lib.Tanh(),
            "RegularSpiking(LIFRate)": lib.RegularSpiking(lib.LIFRate()),
            "RegularSpiking(Tanh)": lib.RegularSpiking(lib.Tanh()),
            "PoissonSpiking(LIFRate)": lib.PoissonSpiking(lib.LIFRate()),
            "StochasticSpiking(LIFRate)": lib.StochasticSpiking(lib.LIFRate())}


def _sine_net(lib: Any, kind: str, n: int = 50, seed: int = 5, dims: int = 1) -> tuple[Any, dict[str, Any]]:
    with lib.Network(seed=seed) as net:
        u = lib.Node(lambda t: np.sin(2 * np.pi * 2 * t) * np.ones(dims))
        a = lib.Ensemble(n, dims, neuron_type=_types(lib)[kind])
        b = lib.Ensemble(n, dims, neuron_type=_types(lib)[kind])
        lib.Connection(u, a, synapse=0.005)
        c = lib.Connection(a, b, function=lambda x: x ** 2, synapse=lib.Lowpass(0.005))
        p = lib.Probe(a, synapse=lib.Lowpass(0.02))
        s = lib.Probe(a.neurons)
    return net, {"a": a, "b": b, "c": c, "p": p, "s": s}


def _run(lib: Any, kind: str, **kw: Any) -> dict[str, Any]:
    net, o = _sine_net(lib, kind, **kw)
    with lib.Simulator(net, progress_bar=False) as sim:
        sim.run(T)
        t = sim.trange()
        return {"gain": sim.data[o["a"]].gain, "bias": sim.data[o["a"]].bias,
                "encoders": sim.data[o["a"]].encoders, "eval_points": sim.data[o["a"]].eval_points,
                "max_rates": sim.data[o["a"]].max_rates, "intercepts": sim.data[o["a"]].intercepts,
                "weights": sim.data[o["c"]].weights, "decoded": sim.data[o["p"]][:, 0].copy(),
                "spikes": sim.data[o["s"]].copy(), "t": t}


@pytest.mark.parametrize("kind", ["LIF", "Tanh", "RegularSpiking(LIFRate)"])
@pytest.mark.parametrize("dims", [1, 2])
def test_built_parameters_equal_nengos(kind: str, dims: int) -> None:
    a, b = _run(mine, kind, dims=dims), _run(nengo, kind, dims=dims)
    for key in ("gain", "bias", "encoders", "eval_points", "max_rates", "intercepts", "weights"):
        assert a[key].shape == b[key].shape, key
        assert np.allclose(a[key], b[key], rtol=1e-9, atol=1e-9), (key, np.max(np.abs(a[key] - b[key])))


@pytest.mark.parametrize("kind", ["LIF", "SpikingRectifiedLinear", "RegularSpiking(LIFRate)",
                                  "RegularSpiking(Tanh)"])
def test_spike_trains_identical_step_for_step(kind: str) -> None:
    a, b = _run(mine, kind), _run(nengo, kind)
    assert a["spikes"].shape == b["spikes"].shape
    assert np.array_equal(a["spikes"], b["spikes"])
    assert np.allclose(a["decoded"], b["decoded"], atol=1e-9)


@pytest.mark.parametrize("kind", ["PoissonSpiking(LIFRate)", "StochasticSpiking(LIFRate)"])
def test_stochastic_wrappers_equal_in_distribution(kind: str) -> None:
    a, b = _run(mine, kind, n=200), _run(nengo, kind, n=200)
    ra, rb = a["spikes"].mean(axis=0), b["spikes"].mean(axis=0)  # Hz per neuron
    steps = len(a["t"])
    # the summed rate over 200 neurons: Poisson-like counts, 5 standard errors of the total count
    total_a, total_b = ra.sum() * steps * 1e-3, rb.sum() * steps * 1e-3
    assert abs(total_a - total_b) < 5 * np.sqrt(total_a + total_b)
    assert np.corrcoef(ra, rb)[0, 1] > 0.9


@pytest.mark.parametrize("kind", list(_types(mine)))
def test_decoded_sine_rmse_within_ten_percent_of_nengos(kind: str) -> None:
    a, b = _run(mine, kind), _run(nengo, kind)
    target = np.sin(2 * np.pi * 2 * a["t"])
    skip = 30  # the filters' start-up
    ea = np.sqrt(np.mean((a["decoded"][skip:] - target[skip:]) ** 2))
    eb = np.sqrt(np.mean((b["decoded"][skip:] - target[skip:]) ** 2))
    assert ea <= 1.1 * eb + 1e-3, (ea, eb)


def test_lif_saturates_at_400_hz_with_2_5_ms_refractory_period() -> None:
    lif = mine.LIF(tau_ref=0.0025)
    J = np.full(4, 1e6)
    out = np.zeros(4)
    state = lif.make_state(4, rng=np.random.RandomState(0))
    spikes = 0.0
    for _ in range(1000):
        lif.step(1e-3, J, out, **state)
        spikes += out.sum() * 1e-3
    assert spikes / 4 == pytest.approx(400, abs=1)
    assert mine.LIFRate(tau_ref=0.0025).rates(np.array([1e9]), np.ones(1), np.zeros(1))[0, 0] == pytest.approx(400, rel=1e-3)


def test_tanh_wrappers_spike_negatively_and_several_per_step() -> None:
    rs = mine.RegularSpiking(mine.Tanh(), amplitude=1.0)
    J = np.array([-3.0, 3.0])
    out = np.zeros(2)
    v = np.zeros(2)
    total = np.zeros(2)
    for _ in range(100):
        rs.step(1e-3, J, out, voltage=v)
        total += out * 1e-3
    assert total[0] < 0 < total[1]
    assert total[0] == pytest.approx(-total[1], abs=1)
    several = np.zeros(1)
    mine.RegularSpiking(mine.RectifiedLinear()).step(1e-3, np.array([2500.0]), several, voltage=np.zeros(1))
    assert several[0] * 1e-3 == 2  # 2.5 spikes due in one step: two now, the half carried


def test_lowpass_coefficients_are_zero_order_hold() -> None:
    dt, tau = 1e-3, 0.005
    A, B, C, D = mine.Lowpass(tau).discretize(dt)
    a = float(A.item())
    assert a == pytest.approx(np.exp(-dt / tau), rel=1e-12)
    assert float(B.item() * C.item()) == pytest.approx(1 - a, rel=1e-12)
    assert float(D.item()) == 0
    ref = nengo.Lowpass(tau)._get_ss(dt)
    for x, y in zip((A, B, C, D), ref):
        assert np.allclose(x, y, rtol=1e-12, atol=0)
    refa = nengo.Alpha(tau)._get_ss(dt)
    for x, y in zip(mine.Alpha(tau).discretize(dt), refa):
        assert np.allclose(x, y, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["LIF", "Sigmoid", "Tanh", "RectifiedLinear"])
def test_gain_bias_inverse_and_tuning_curves_match_nengo(kind: str) -> None:
    rng = np.random.RandomState(0)
    max_rates = rng.uniform(100, 350, 20)
    intercepts = rng.uniform(-0.9, 0.9, 20)
    ma, na = _types(mine)[kind], _types(nengo)[kind]
    g1, b1 = ma.gain_bias(max_rates, intercepts)
    g2, b2 = na.gain_bias(max_rates, intercepts)
    assert np.allclose(g1, g2, rtol=1e-12) and np.allclose(b1, b2, rtol=1e-12)
    m1, i1 = ma.max_rates_intercepts(g1, b1)
    assert np.allclose(m1, max_rates) and np.allclose(i1, intercepts)
    x = np.linspace(-1, 1, 41)
    assert np.allclose(ma.rates(x, g1, b1), na.rates(x, g2, b2), rtol=1e-12, atol=1e-12)


def test_two_runs_identical() -> None:
    a, b = _run(mine, "LIF"), _run(mine, "LIF")
    assert np.array_equal(a["spikes"], b["spikes"]) and np.array_equal(a["decoded"], b["decoded"])
