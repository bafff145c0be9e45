"""hwmap.nn: the spike function and its surrogate gradients (eqs. 3.1-3.3, SuperSpike),
checked numerically and analytically; the LIF layer's discrete time, its positive trainable
constants, reset, recurrence; training reduces a loss; no torch needed to import hwmap.nn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from hwmap.nn import LIF, SNN, spike, surrogate, surrogate_grad  # noqa: E402

D = torch.float64
DT = 1e-3


def _u(seed: int = 0, n: int = 2000) -> "torch.Tensor":
    """Points away from the kink at 0, where the finite differences are exact enough."""
    u = torch.from_numpy(np.random.default_rng(seed).uniform(-2, 2, n))
    return u[u.abs() > 1e-3]


# -- the spike and its surrogates ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["relu", "fast_sigmoid"])
def test_forward_is_the_heaviside_step(kind: str) -> None:
    u = torch.tensor([-1.0, -1e-300, 0.0, 1e-300, 2.0], dtype=D)
    assert spike(u, kind).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # eq. 3.1, strict: fires when V > V_th


@pytest.mark.parametrize("kind, beta", [("relu", 10.0), ("fast_sigmoid", 10.0), ("fast_sigmoid", 2.5)])
def test_backward_is_the_surrogates_derivative_by_finite_differences(kind: str, beta: float) -> None:
    u = _u().requires_grad_(True)
    weight = torch.from_numpy(np.random.default_rng(1).standard_normal(u.shape[0]))
    (spike(u, kind, beta) * weight).sum().backward()
    h = 1e-6
    with torch.no_grad():
        numeric = (surrogate(u + h, kind, beta) - surrogate(u - h, kind, beta)) / (2 * h)
    np.testing.assert_allclose(u.grad.numpy(), (weight * numeric).numpy(), rtol=1e-7, atol=1e-9)


def test_backward_matches_the_analytic_expressions() -> None:
    u = _u(2).requires_grad_(True)
    spike(u, "relu").sum().backward()
    assert torch.equal(u.grad, (u > 0).to(D))  # eq. 3.3: dS/dV = [V_mem > V_th]
    u.grad = None
    spike(u, "fast_sigmoid", 4.0).sum().backward()
    np.testing.assert_allclose(u.grad.numpy(), (1 / (1 + 4.0 * u.detach().abs()) ** 2).numpy(), rtol=1e-15)
    # and Ŝ itself: max(u, 0) (eq. 3.2), u / (1 + β|u|)
    x = torch.tensor([-2.0, 0.5], dtype=D)
    assert surrogate(x, "relu").tolist() == [0.0, 0.5]
    assert surrogate(x, "fast_sigmoid", 2.0).tolist() == [-2.0 / 5.0, 0.25]
    assert surrogate_grad(x, "fast_sigmoid", 2.0).tolist() == [1 / 25, 1 / 4]


def test_bad_surrogate_arguments() -> None:
    u = torch.zeros(3)
    with pytest.raises(ValueError, match="surrogate 'tanh' is not one of relu, fast_sigmoid"):
        spike(u, "tanh")
    with pytest.raises(ValueError, match="beta must be positive"):
        spike(u, "fast_sigmoid", 0.0)


# -- one LIF step, by hand -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["relu", "fast_sigmoid"])
def test_one_step_gradients_are_the_chain_rule(kind: str) -> None:
    """v' = α·I from v = 0 (α = dt/tau = sigmoid(ρ)); s = H(v' - θ), θ = softplus(ψ):
    dL/dI = g·α, dL/dρ = g·I·α(1-α), dL/dψ = -g·sigmoid(ψ), g the surrogate's derivative."""
    lif = LIF(64, tau=3e-3, threshold=0.4, surrogate=kind, beta=5.0, dtype=D)
    with torch.no_grad():
        lif.rho.add_(torch.linspace(-0.5, 0.5, 64, dtype=D))
        lif.psi.add_(torch.linspace(0.3, -0.3, 64, dtype=D))
    current = torch.linspace(-1.0, 2.0, 64, dtype=D).reshape(1, 1, 64).requires_grad_(True)
    lif(current).sum().backward()
    a, theta, i = lif.decay.detach(), lif.threshold.detach(), current.detach()[0, 0]
    g = surrogate_grad(a * i - theta, kind, 5.0)
    assert 0 < int((g > 0).sum()) < 64 or kind == "fast_sigmoid"
    np.testing.assert_allclose(current.grad[0, 0].numpy(), (g * a).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lif.rho.grad.numpy(), (g * i * a * (1 - a)).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lif.psi.grad.numpy(), (-g * torch.sigmoid(lif.psi.detach())).numpy(), rtol=1e-12,
                               atol=1e-15)


def _reference(current: np.ndarray, alpha: float, theta: float, reset: str,
               w_rec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The equations of hwmap.nn.lif's docstring, one step at a time, in numpy."""
    v = np.zeros(current.shape[:1] + current.shape[2:])
    s = np.zeros_like(v)
    spikes, potentials = [], []
    for t in range(current.shape[1]):
        i = current[:, t] + (0 if w_rec is None else s @ w_rec.T)
        v = v + alpha * ((0.0 - v) + i)
        s = (v > theta).astype(float)
        potentials.append(v)
        v = np.where(s > 0, 0.0, v) if reset == "zero" else v - theta * s
        spikes.append(s)
    return np.stack(spikes, 1), np.stack(potentials, 1)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_discrete_time_semantics(reset: str, recurrent: bool) -> None:
    torch.manual_seed(0)
    lif = LIF(16, tau=4e-3, threshold=0.5, reset=reset, recurrent=recurrent, per_neuron=False, dtype=D)
    current = torch.from_numpy(np.random.default_rng(3).uniform(-0.5, 1.5, (3, 40, 16)))
    with torch.no_grad():
        s, v = lif(current, membrane=True)
        alpha, theta = lif.decay.item(), lif.threshold.item()
    w_rec = None if lif.w_rec is None else lif.w_rec.detach().numpy()
    ref_s, ref_v = _reference(current.numpy(), alpha, theta, reset, w_rec)
    assert 0.1 < s.mean() < 0.6
    np.testing.assert_array_equal(s.numpy(), ref_s)
    np.testing.assert_allclose(v.numpy(), ref_v, rtol=1e-12, atol=1e-12)
    if reset == "subtract":  # the residue above threshold survives the spike
        assert (v.numpy()[s.numpy() > 0] > theta).all()


def test_constants_stay_positive_under_hard_training() -> None:
    """50 Adam steps of size 1 pushing both constants down: the threshold stays positive and
    tau above dt (tau = dt only where sigmoid(ρ) rounds to 1 in float64, ρ > 37)."""
    lif = LIF(8, dt=DT, tau=2e-3, threshold=0.3, dtype=D)
    rho0, psi0 = lif.rho.detach().clone(), lif.psi.detach().clone()
    opt = torch.optim.Adam(lif.parameters(), lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        (lif.tau.sum() / DT + lif.threshold.sum()).backward()
        opt.step()
    # the raw parameters moved by more than 5 each: a plain threshold of 0.3 would be negative
    assert (lif.psi < psi0 - 5).all() and (lif.rho > rho0 + 5).all()
    assert (lif.tau >= DT).all() and (lif.threshold > 0).all()
    assert torch.isfinite(lif(torch.ones(2, 5, 8, dtype=D))).all()


def test_set_constants_round_trips() -> None:
    lif = LIF(5, tau=2e-3, threshold=1.0, dtype=D)
    tau = torch.tensor([1.5e-3, 2e-3, 5e-3, 20e-3, 1.0], dtype=D)
    thr = torch.tensor([1e-3, 0.2, 1.0, 7.0, 40.0], dtype=D)
    lif.set_constants(tau, thr)
    np.testing.assert_allclose(lif.tau.detach().numpy(), tau.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lif.threshold.detach().numpy(), thr.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="need tau > dt"):
        lif.set_constants(torch.full((5,), 1e-3, dtype=D), thr)


@pytest.mark.parametrize("kwargs, message", [
    ({"tau": 1e-3}, "tau must exceed dt"),
    ({"threshold": 0.0}, "threshold must be positive"),
    ({"reset": "hold"}, "reset 'hold' is not one of zero, subtract"),
    ({"surrogate": "tanh"}, "surrogate 'tanh'"),
    ({"dt": -1.0}, "dt must be a positive"),
])
def test_bad_layer_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LIF(4, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recurrent weights need a 1-D layer"):
        LIF((2, 3), recurrent=True)
    with pytest.raises(ValueError, match=r"expected \(N, T, 4\)"):
        LIF(4)(torch.zeros(2, 4))


# -- training --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, recurrent", [("relu", False), ("fast_sigmoid", False), ("relu", True)])
def test_training_reduces_the_loss(kind: str, recurrent: bool) -> None:
    """Three classes of noisy 12-pixel patterns over 10 steps, summed outputs: the loss
    falls to under a third in 60 Adam steps, and the time constants and thresholds move."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    protos = rng.random((3, 12))
    y = rng.integers(0, 3, 96)
    x = np.clip(protos[y] + 0.2 * rng.standard_normal((96, 12)), 0, 1)
    xs = torch.from_numpy(x)[:, None].expand(-1, 10, -1)
    net = SNN({"fc1": nn.Linear(12, 32, dtype=D),
               "lif1": LIF(32, tau=5e-3, threshold=0.25, surrogate=kind, recurrent=recurrent, dtype=D),
               "fc2": nn.Linear(32, 3, dtype=D)})
    lif = net.layers["lif1"]
    tau0, thr0 = lif.tau.detach().clone(), lif.threshold.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(net(xs).sum(1), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 3, losses[::10]
    assert not torch.equal(lif.tau, tau0) and not torch.equal(lif.threshold, thr0)


# -- PyTorch is optional ----------------------------------------------------------------------

def test_without_torch_hwmap_nn_imports_and_zoo_digits_snn_runs() -> None:
    code = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("No module named 'torch'")

sys.meta_path.insert(0, NoTorch())  # import torch now fails as if it were not installed
import hwmap, hwmap.nn
from hwmap.nn import LayerSpec, build_nir  # the torch-free half
try:
    hwmap.nn.LIF
except ImportError as e:
    assert "hwmap.nn.LIF needs PyTorch" in str(e) and "hwmap[torch]" in str(e), e
else:
    raise AssertionError("no error")
from hwmap.execute import run
d = hwmap.load_data("zoo:digits")
g = hwmap.load_model("zoo:digits_snn")
y = run(g, {g.inputs[0]: d.x[:60]})["output"]
assert (y.argmax(1) == d.y[:60]).mean() > 0.9
assert "torch" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    subprocess.run([sys.executable, "-c", "import sys, hwmap, hwmap.nn; assert 'torch' not in sys.modules"],
                   check=True, timeout=120)
