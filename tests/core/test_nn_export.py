"""hwmap.nn export: a torch SNN through NIR into the neutral graph runs spike for spike like
the torch forward in hwmap's executor; what NIR cannot say (reset by subtraction) is refused
by name; recurrence is NIR's cycle pattern, checked against the core's LIF op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nir = pytest.importorskip("nir")
from torch import nn  # noqa: E402

from hwmap import ModelError, ParseOptions, load_model  # noqa: E402
from hwmap.execute import run  # noqa: E402
from hwmap.graph import Node  # noqa: E402
from hwmap.nn import LIF, SNN, LayerSpec, build_nir, to_graph, to_nir  # noqa: E402
from hwmap.ops import get_op  # noqa: E402

D = torch.float64
STEPS = 64  # at least 50, as issue 8 asks


def _mlp(seed: int, recurrent: bool = False, reset: str = "zero") -> SNN:
    torch.manual_seed(seed)
    return SNN({"fc1": nn.Linear(20, 48, dtype=D),
                "lif1": LIF(48, tau=4e-3, threshold=0.3, reset=reset, recurrent=recurrent, dtype=D),
                "fc2": nn.Linear(48, 24, dtype=D),
                "lif2": LIF(24, tau=3e-3, threshold=0.1, per_neuron=False, dtype=D)})


def _conv(seed: int) -> SNN:
    torch.manual_seed(seed)
    return SNN({"conv1": nn.Conv2d(2, 6, 3, padding=1, dtype=D),
                "lif1": LIF((6, 8, 8), tau=5e-3, threshold=0.2, dtype=D),
                "conv2": nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False, dtype=D),
                "lif2": LIF((8, 4, 4), tau=3e-3, threshold=0.1, dtype=D),
                "flat": nn.Flatten(),
                "fc": nn.Linear(128, 10, dtype=D),
                "lif3": LIF(10, tau=3e-3, threshold=0.05, dtype=D)})


def _spread(net: SNN, seed: int) -> None:
    """Per-neuron time constants and thresholds that differ: each must land on its neuron."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.layers.values():
            if isinstance(m, LIF):
                m.rho.add_(0.5 * torch.randn(m.rho.shape, generator=g, dtype=D))
                m.psi.add_(0.3 * torch.randn(m.psi.shape, generator=g, dtype=D))


def _torch_spikes(net: SNN, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every LIF layer's spikes from the torch forward, by layer name."""
    out = {}
    h = torch.from_numpy(x).to(D)
    with torch.no_grad():
        for name, m in net.layers.items():
            if isinstance(m, LIF):
                h = m(h)
                out[name] = h.numpy()
            else:
                n, t = h.shape[:2]
                y = m(h.reshape(n * t, *h.shape[2:]))
                h = y.reshape(n, t, *y.shape[1:])
        np.testing.assert_array_equal(net(torch.from_numpy(x).to(D)).numpy(), h.numpy())
    return out


def _compare(net: SNN, graph: Any, x: np.ndarray) -> dict[str, float]:
    """Spikes of every LIF layer: torch forward == hwmap executor; returns the spike rates."""
    want = _torch_spikes(net, x)
    got = run(graph, {graph.inputs[0]: x}, collect=True)
    last = list(want)[-1]
    rates = {}
    for name, spikes in want.items():
        mine = got["output" if name == last else name]
        assert mine.shape == spikes.shape, name
        mismatched = int((mine != spikes).sum())
        assert mismatched == 0, f"{name}: {mismatched} of {spikes.size} spikes differ"
        rates[name] = float(spikes.mean())
    return rates


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_spike_for_spike_on_random_inputs(kind: str, seed: int) -> None:
    """The exported float32 numbers loaded back into the torch network (``load_arrays``), random
    input currents over 64 steps: every spike of every layer is the executor's."""
    net = _mlp(seed) if kind == "mlp" else _conv(seed)
    _spread(net, seed)
    shape = (20,) if kind == "mlp" else (2, 8, 8)
    graph = to_graph(net, shape, batch=3)
    assert [n.op for n in graph.nodes if n.op == "LIF"] == ["LIF"] * (2 if kind == "mlp" else 3)
    assert graph.meta["dt"] == 1e-3
    net.load_arrays(net.arrays())  # the very numbers the graph holds
    x = np.random.default_rng(seed).uniform(0.0, 2.0, (5, STEPS, *shape)).astype(np.float32)
    rates = _compare(net, graph, x)
    assert all(0.03 < r < 0.7 for r in rates.values()), rates  # every layer spikes, none saturates


def test_exported_arrays_are_the_networks_rounded_once() -> None:
    net = _mlp(0)
    _spread(net, 0)
    arrays = net.arrays()
    lif1 = net.layers["lif1"]
    assert all(a.dtype == np.float32 for a in arrays.values())
    np.testing.assert_array_equal(arrays["lif1.tau"], lif1.tau.detach().numpy().astype(np.float32))
    np.testing.assert_array_equal(arrays["lif1.v_threshold"], lif1.threshold.detach().numpy().astype(np.float32))
    assert arrays["lif2.tau"].shape == ()  # one shared constant, broadcast on export
    graph = to_graph(net, (20,))
    lif = {n.name: n for n in graph.nodes}
    np.testing.assert_array_equal(lif["lif1"].params["tau"], arrays["lif1.tau"])
    np.testing.assert_array_equal(lif["lif2"].params["v_threshold"], np.full(24, arrays["lif2.v_threshold"]))
    assert (lif["lif1"].params["r"] == 1).all() and (lif["lif1"].params["v_leak"] == 0).all()
    assert (lif["lif1"].params["v_reset"] == 0).all()
    with torch.no_grad():
        net.layers["fc1"].weight[0, 0] = 1e-13
    assert net.arrays()["fc1.W"][0, 0] == 0.0  # below DEAD: written as 0


def test_spike_for_spike_through_a_nir_file(tmp_path: Path) -> None:
    net = _mlp(3)
    path = tmp_path / "snn.nir"
    nir.write(str(path), to_nir(net, (20,)))
    graph = load_model(str(path), ParseOptions(dt=net.dt))
    net.load_arrays(net.arrays())
    x = np.random.default_rng(3).uniform(0.0, 2.0, (4, STEPS, 20)).astype(np.float32)
    assert sum(_compare(net, graph, x).values()) > 0


def test_reset_by_subtraction_is_refused_by_name() -> None:
    """NIR's LIF resets to v_reset; v -= v_threshold has no NIR form: refused, not approximated."""
    net = _mlp(0, reset="subtract")
    for export in (lambda: to_nir(net, (20,)), lambda: to_graph(net, (20,))):
        with pytest.raises(ModelError, match="layer 'lif1' \\(lif\\): resets by subtraction.*NIR cannot express"):
            export()


@pytest.mark.parametrize("layers, arrays, message", [
    ([LayerSpec("fc", "linear")], {}, "array 'fc.W' is missing"),
    ([LayerSpec("fc", "linear")], {"fc.W": np.zeros((3, 5))}, "weight \\[3, 5\\] does not take input \\[4\\]"),
    ([LayerSpec("pool", "maxpool")], {}, "kind 'maxpool' is not one of linear, conv2d, flatten, lif"),
    ([LayerSpec("input", "flatten")], {}, "names must be unique"),
    ([LayerSpec("l", "lif", {"reset": "hold"})], {"l.tau": 1.0, "l.v_threshold": 1.0}, "reset 'hold'"),
    ([LayerSpec("l", "lif")], {"l.tau": np.ones(3), "l.v_threshold": 1.0}, "tau of shape \\[3\\] does not broadcast"),
    ([LayerSpec("l", "lif", {"recurrent": True})], {"l.tau": 1.0, "l.v_threshold": 1.0, "l.W_rec": np.eye(3)},
     "recurrent weight \\[3, 3\\] must be square over the \\[4\\] neurons"),
])
def test_build_nir_refuses_what_does_not_fit(layers: list[LayerSpec], arrays: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_nir(layers, arrays, (4,))


def test_unsupported_torch_layers_are_named() -> None:
    with pytest.raises(ValueError, match="layer 'relu': ReLU is not supported"):
        SNN({"relu": nn.ReLU()})
    with pytest.raises(ValueError, match="different time steps"):
        SNN([LIF(3, dt=1e-3), LIF(3, dt=2e-3, tau=5e-3)])
    with pytest.raises(ModelError, match="padding_mode 'reflect' has no NIR form"):
        to_nir(SNN({"c": nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "l": LIF((1, 4, 4))}), (1, 4, 4))


# -- recurrence ---------------------------------------------------------------------------------

def _step_nir_recurrent(g: Any, x: np.ndarray, dt: float) -> np.ndarray:
    """Run the NIR graph input -> fc1 -> lif1 (<-> lif1_rec) -> ... reading the cycle as one
    step of delay, each LIF stepped by the core's own LIF op; float32 between nodes, as the
    executor keeps them. Returns lif1's spikes."""
    lif_op = get_op("LIF")
    n = g.nodes["lif1"]
    node = Node("lif1", "LIF", [], [], {"dt": dt},
                {k: np.asarray(getattr(n, k), np.float32) for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")})
    fc1, rec = g.nodes["fc1"], g.nodes["lif1_rec"]
    state, s = None, np.zeros((x.shape[0], fc1.weight.shape[0]), np.float32)
    out = []
    for t in range(x.shape[1]):
        ff = (x[:, t].astype(np.float64) @ fc1.weight.T.astype(np.float64) + fc1.bias).astype(np.float32)
        back = (s.astype(np.float64) @ rec.weight.T.astype(np.float64)).astype(np.float32)
        (s,), state = lif_op.step(node, [(ff.astype(np.float64) + back).astype(np.float32)], state)
        out.append(s)
    return np.stack(out, axis=1)


def test_recurrent_layer_exports_as_nirs_cycle() -> None:
    net = _mlp(4, recurrent=True)
    net.load_arrays(net.arrays())
    g = to_nir(net, (20,))
    assert isinstance(g.nodes["lif1_rec"], nir.Linear)
    np.testing.assert_array_equal(g.nodes["lif1_rec"].weight, net.arrays()["lif1.W_rec"])
    assert {("fc1", "lif1"), ("lif1", "lif1_rec"), ("lif1_rec", "lif1"), ("lif1", "fc2")} <= set(g.edges)
    x = np.random.default_rng(4).uniform(0.0, 2.0, (4, STEPS, 20)).astype(np.float32)
    want = _torch_spikes(net, x)["lif1"]
    assert 0.03 < want.mean() < 0.7
    np.testing.assert_array_equal(_step_nir_recurrent(g, x, net.dt), want)
    # Without its recurrent weights the same layer spikes differently: the cycle matters.
    with torch.no_grad():
        net.layers["lif1"].w_rec.zero_()
    assert (_torch_spikes(net, x)["lif1"] != want).any()


def test_recurrent_graph_in_the_core() -> None:
    """hwmap's NIR frontend refuses cycles today, naming this one; once it reads them, the
    executor must run the recurrent network spike for spike like torch."""
    net = _mlp(5, recurrent=True)
    try:
        graph = to_graph(net, (20,))
    except ModelError as e:
        assert "recurrent NIR graphs are not supported" in str(e) and "'lif1', 'lif1_rec'" in str(e)
        return
    net.load_arrays(net.arrays())
    x = np.random.default_rng(5).uniform(0.0, 2.0, (4, STEPS, 20)).astype(np.float32)
    _compare(net, graph, x)
