"""LIF, IF and CubaLIF with reset by subtraction, exact discretization and an initial
membrane potential: the rules by hand, and spike for spike against peers with the same
semantics on three-layer networks with random weights and random input spikes over 60 steps:
snnTorch's ``Leaky`` (forward Euler; reset by subtraction and to zero) and Rockpool's
``LIFTorch`` / ``LIFNeuronTorch`` (exact exponential decay, reset by subtraction)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmap.errors import GraphError
from hwmap.execute import run
from hwmap.graph import Node
from hwmap.ops import get_op

from snn_nets import currents, layer_stack, random_weights

STEPS = 60


def steps(node: Node, xs: np.ndarray) -> np.ndarray:
    """Run one neuron node over ``xs`` (N, T, F) with its op's step function."""
    opdef = get_op(node.op)
    opdef.infer(node, [xs.shape[:1] + xs.shape[2:]])
    state, out = None, []
    for t in range(xs.shape[1]):
        (y,), state = opdef.step(node, [xs[:, t]], state)
        out.append(y)
    return np.stack(out, axis=1)


def if_node(attrs: dict, **params: float) -> Node:
    return Node("n", "IF", ["x"], ["y"], {"dt": 1.0, **attrs},
                {"r": np.float32(1), "v_threshold": np.float32(1), **{k: np.float32(v) for k, v in params.items()}})


def test_reset_by_subtraction_keeps_the_residue_and_value_reset_drops_it():
    xs = np.full((1, 6, 1), 0.7, np.float32)
    # v: 0.7, 1.4 -> spike, 0.4; 1.1 -> spike, 0.1; 0.8; 1.5 -> spike, 0.5; 1.2 -> spike
    assert steps(if_node({"reset": "subtract"}), xs)[0, :, 0].tolist() == [0, 1, 1, 0, 1, 1]
    # v: 0.7, 1.4 -> spike, 0; 0.7, 1.4 -> spike ... (the default keeps NIR's reset to v_reset)
    assert steps(if_node({}), xs)[0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert steps(if_node({"reset": "value"}, v_reset=0.5), xs)[0, :, 0].tolist() == [0, 1, 1, 1, 1, 1]


def test_v_init_sets_the_membrane_at_t0():
    xs = np.full((1, 4, 1), 0.6, np.float32)
    assert steps(if_node({"reset": "subtract"}), xs)[0, :, 0].tolist() == [0, 1, 0, 1]
    # from 0.5: 1.1 -> spike, 0.1; 0.7; 1.3 -> spike, 0.3; 0.9
    assert steps(if_node({"reset": "subtract"}, v_init=0.5), xs)[0, :, 0].tolist() == [1, 0, 1, 0]


def test_exact_discretization_decays_exponentially():
    rng = np.random.default_rng(3)
    f, dt = 4, 1e-3
    tau, r, v_leak, thr = np.array([2e-3, 5e-3, 1e-2, 4e-2]), np.array([1.0, 2.0, 0.5, 1.5]), np.array(
        [0, 0.1, -0.1, 0]), np.array([0.3, 0.5, 0.2, 0.4])
    xs = rng.uniform(0, 2, size=(2, 40, f)).astype(np.float32)
    node = Node("lif", "LIF", ["x"], ["y"], {"dt": dt, "discretization": "exact", "reset": "subtract"},
                {k: np.asarray(v, np.float32) for k, v in
                 {"tau": tau, "r": r, "v_leak": v_leak, "v_threshold": thr, "v_init": 0.1}.items()})
    p = {k: v.astype(np.float64) for k, v in node.params.items()}
    alpha = np.exp(-dt / p["tau"])
    v, ref = np.full((2, f), p["v_init"]), []
    for t in range(40):
        v = alpha * v + (1 - alpha) * (p["v_leak"] + p["r"] * xs[:, t])
        z = v > p["v_threshold"]
        v = v - z * p["v_threshold"]
        ref.append(z)
    got = steps(node, xs)
    np.testing.assert_array_equal(got, np.stack(ref, axis=1))
    assert 0.05 < got.mean() < 0.95
    euler = steps(dataclasses.replace(node, attrs={**node.attrs, "discretization": "euler"}), xs)
    assert not np.array_equal(got, euler)  # dt/tau up to 0.5: forward Euler is another model


@pytest.mark.parametrize("attrs, message", [
    ({"reset": "zero"}, "'reset' = 'zero': must be one of 'value', 'subtract'"),
    ({"discretization": "rk4"}, "'discretization' = 'rk4'"),
])
def test_unknown_settings_are_refused_naming_the_node(attrs, message):
    with pytest.raises(GraphError, match=message) as e:
        get_op("IF").infer(if_node(attrs), [(1, 3)])
    assert "node 'n' (IF)" in str(e.value)


def test_settings_on_a_neuron_without_threshold_are_refused():
    li = Node("li", "LI", ["x"], ["y"], {"dt": 1.0, "reset": "subtract"},
              {"tau": np.float32(2), "r": np.float32(1), "v_leak": np.float32(0)})
    with pytest.raises(GraphError, match="'reset' applies to LIF, IF and CubaLIF only"):
        get_op("LI").infer(li, [(1, 3)])


# -- peers ---------------------------------------------------------------------------------
def input_spikes(seed: int, batch: int = 3, features: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch, STEPS, features)) < 0.3).astype(np.float32)


def bounded(weights: list[tuple[np.ndarray, np.ndarray]], betas: list[float], thresholds: list[float],
            rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shift every row toward excitation and scale it so that the largest current the layer can
    receive (all positive inputs spiking once) is ``0.95 * (2 - beta) * threshold``: the membrane
    then never exceeds two thresholds, nor one after a subtraction."""
    out = []
    for (w, b), beta, thr in zip(weights, betas, thresholds):
        w = w + np.abs(rng.normal(0.3, 0.2, size=(w.shape[0], 1))).astype(np.float32)
        peak = np.maximum(w, 0).sum(axis=1) + np.maximum(b, 0)
        k = (0.95 * (2 - beta) * thr / peak).astype(np.float32)
        out.append((w * k[:, None], b * k))
    return out


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_euler_matches_snntorch_leaky_spike_for_spike(reset):
    """snnTorch's ``Leaky`` computes ``mem = beta*mem + input``: NIR's LIF under forward Euler
    with ``tau = dt/(1 - beta)`` and ``r = tau/dt``. Its ``reset_delay=False`` resets in the
    step that spiked, as hwmap does: to zero (``reset="value"``, ``v_reset`` 0) or by
    subtracting the threshold (``reset="subtract"``). The subtraction agrees while the membrane
    left after a reset stays at most one threshold (snnTorch subtracts a carried excess before
    it tests the next step's membrane): the weights are bounded so that it does, and the test
    asserts it of the run."""
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    dt, sizes = 1e-3, [12, 16, 12, 8]
    betas, thresholds = [0.9, 0.75, 0.95], [1.0, 0.8, 1.2]
    rng = np.random.default_rng(11)
    weights = bounded(random_weights(rng, sizes, scale=1.0), betas, thresholds, rng)
    neurons = []
    for beta, thr in zip(betas, thresholds):
        tau = dt / (1 - beta)
        neurons.append(("LIF", {"tau": tau, "r": tau / dt, "v_leak": 0.0, "v_threshold": thr},
                        {"reset": "subtract" if reset == "subtract" else "value"}))
    graph = layer_stack(weights, neurons, dt)
    x = input_spikes(5)
    ours = run(graph, {"x": x})

    # The peer: snnTorch in float64 on the currents hwmap's Gemm gives (float32). hwmap holds
    # float32 parameters, so the peer decays by 1 - k with k = dt/tau and takes k*r*I as input.
    layers, gains = [], []
    for op, params, _ in neurons:
        k = dt / np.float64(np.float32(params["tau"]))
        gains.append(k * np.float64(np.float32(params["r"])))
        layers.append(snn.Leaky(beta=torch.tensor(1 - k, dtype=torch.float64),
                                threshold=float(np.float32(params["v_threshold"])), reset_mechanism=reset,
                                reset_delay=False))
    spikes = x
    peak_after_reset = 0.0
    for i, ((w, b), leaky) in enumerate(zip(weights, layers)):
        mem = leaky.reset_mem()
        out = []
        for t in range(STEPS):
            cur = torch.tensor(gains[i] * currents(spikes[:, t], w, b).astype(np.float64))
            spk, mem = leaky(cur, mem)
            peak_after_reset = max(peak_after_reset, float(mem.max() / leaky.threshold))
            out.append(spk.numpy())
        spikes = np.stack(out, axis=1).astype(np.float32)
        if reset == "subtract":
            assert peak_after_reset <= 1.0, "the premise of the comparison does not hold: weaker weights"
        np.testing.assert_array_equal(ours[f"s{i}"], spikes, err_msg=f"layer {i}")
        assert 0.02 < spikes.mean() < 0.9, f"layer {i} fires {spikes.mean():.3f}: the check would prove little"


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_cubalif_and_lif_match_rockpool_spike_for_spike(seed):
    """Rockpool's ``LIFTorch`` (``i = beta*(i + x)``, ``v = alpha*v + i + bias``) and
    ``LIFNeuronTorch`` (``v = alpha*v + x + bias``), both with ``alpha = exp(-dt/tau)``, one
    spike per step at most and reset by subtraction, are hwmap's CubaLIF and LIF with
    ``discretization="exact"``, ``reset="subtract"``, ``r = 1/(1 - alpha)``, ``w_in =
    beta/(1 - beta)`` and ``v_leak = bias/(1 - alpha)``. Rockpool fires at ``v >= threshold``,
    hwmap at ``v > threshold``: they differ only on exact ties (none here)."""
    torch = pytest.importorskip("torch")
    modules = pytest.importorskip("rockpool.nn.modules")
    rng = np.random.default_rng(100 + seed)
    dt, sizes = 1e-3, [12, 16, 12, 8]
    weights = random_weights(rng, sizes, scale=1.5)
    specs = []  # (op, tau_mem, tau_syn or None, threshold, bias)
    for i, n in enumerate(sizes[1:]):
        tau_mem = rng.uniform(2e-3, 3e-2, n)
        tau_syn = rng.uniform(1e-3, 1e-2, n) if i < 2 else None
        specs.append(("CubaLIF" if tau_syn is not None else "LIF", tau_mem, tau_syn, rng.uniform(0.5, 1.5, n),
                      rng.normal(0, 0.05, n)))
    neurons = []
    for op, tau_mem, tau_syn, thr, bias in specs:
        a = np.exp(-dt / tau_mem)
        params = {"r": 1 / (1 - a), "v_leak": bias / (1 - a), "v_threshold": thr}
        if op == "CubaLIF":
            bsyn = np.exp(-dt / tau_syn)
            params.update(tau_mem=tau_mem, tau_syn=tau_syn, w_in=bsyn / (1 - bsyn))
        else:
            params.update(tau=tau_mem)
        neurons.append((op, params, {"discretization": "exact", "reset": "subtract"}))
    graph = layer_stack(weights, neurons, dt)
    x = input_spikes(200 + seed)
    ours = run(graph, {"x": x})

    spikes = x
    for i, ((w, b), (op, tau_mem, tau_syn, thr, bias)) in enumerate(zip(weights, specs)):
        f32 = {k: torch.tensor(np.float32(v)) for k, v in (("tau_mem", tau_mem), ("threshold", thr), ("bias", bias))}
        if op == "CubaLIF":
            peer = modules.LIFTorch(shape=(len(thr),), tau_syn=torch.tensor(np.float32(tau_syn)), dt=dt,
                                    max_spikes_per_dt=1, **f32)
        else:
            peer = modules.LIFNeuronTorch(shape=(len(thr),), dt=dt, max_spikes_per_dt=1, **f32)
        cur = np.stack([currents(spikes[:, t], w, b) for t in range(STEPS)], axis=1)
        with torch.no_grad():
            out, _, _ = peer(torch.tensor(cur))
        spikes = out.numpy().astype(np.float32)
        np.testing.assert_array_equal(ours[f"s{i}"], spikes, err_msg=f"layer {i} ({op})")
        assert 0.02 < spikes.mean() < 0.9, f"layer {i} fires {spikes.mean():.3f}: the check would prove little"
