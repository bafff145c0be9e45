"""hwmap.nn temporal delta layer: delta inference equals dense inference (eq. 3.7), the delta
map telescopes back to the activation (eq. 3.8), the sparsity penalty is eq. 3.15 and
trains the delta maps sparser; the sparsity meters against hwmap's profiler on the same
frames; misplaced layers and bad settings named in one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from hwmap.errors import ModelError  # noqa: E402
from hwmap.nn import (  # noqa: E402
    DeltaNet, FixedPointQuantizer, LSQQuantizer, QuantConv2d, SparsityMeter, TemporalDelta, measure_sparsity)


def _video(n: int = 3, t: int = 6, seed: int = 0) -> "torch.Tensor":
    """A small square drifting one pixel per frame over a noisy-free background."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, t, 1, 10, 10), np.float32)
    for i in range(n):
        r, c = rng.integers(0, 4, 2)
        for k in range(t):
            x[i, k, 0, r:r + 3, c + k // 2:c + k // 2 + 3] = rng.uniform(0.5, 1.0)
    return torch.from_numpy(x)


def _net(quant: str, penalty: float = 0.0, pool: bool = False) -> DeltaNet:
    torch.manual_seed(1)

    def q(name: str, ch: int) -> nn.Module | None:
        if quant == "fxp":
            return FixedPointQuantizer(6, name=name)
        if quant == "lsq":
            return LSQQuantizer(8, channels=ch, clip=False, init_bits=4, name=name)
        return None

    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [TemporalDelta(q("q1", 4), penalty, "d1"),
               QuantConv2d(4, 6, 3, stride=2, padding=1, weight_quant=FixedPointQuantizer(8, range="tensor")),
               nn.ReLU(), TemporalDelta(q("q2", 6), penalty, "d2"), nn.Flatten(),
               nn.Linear(6 * (3 if pool else 5) ** 2, 3)]
    return DeltaNet(layers)


@pytest.mark.parametrize("quant", ["none", "fxp", "lsq"])
@pytest.mark.parametrize("pool", [False, True])
def test_delta_inference_equals_dense_inference(quant: str, pool: bool) -> None:
    net = _net(quant, pool=pool)
    x = _video()
    net.train()
    net(x)  # calibrates the running ranges and initializes the steps
    net.eval()
    dense = net(x)
    streamed = net.stream(x)
    assert streamed.shape == dense.shape == (3, 6, 3)
    torch.testing.assert_close(streamed, dense, rtol=1e-5, atol=1e-5)
    assert not net.training  # stream restores the mode


def test_delta_map_telescopes_to_the_quantized_activation() -> None:
    net = _net("fxp")
    x = _video()
    net.train()
    net(x)
    net.eval()
    net(x)
    d1 = next(net.deltas())
    assert d1.delta is not None
    z = net.layers[1](net.layers[0](x.reshape(-1, 1, 10, 10)))
    q = d1.quantizer(z).reshape(3, 6, 4, 10, 10)  # type: ignore[misc]
    torch.testing.assert_close(torch.cumsum(d1.delta, dim=1), q, rtol=0, atol=1e-6)
    assert float((d1.delta == 0).float().mean()) > float((q == 0).float().mean())  # deltas sparser than Z


def test_penalty_is_eq_3_15_and_training_with_it_sparsifies() -> None:
    x = _video(n=4, t=6)
    y = torch.tensor([0, 1, 2, 0])
    net = _net("fxp", penalty=0.5)
    net.train()
    net(x)
    want = sum(0.5 * d.delta.abs().sum() / d.delta.numel() for d in net.deltas())  # type: ignore[union-attr]
    torch.testing.assert_close(net.sparsity_penalty(), want)

    def train(lam: float) -> float:
        m = _net("fxp", penalty=lam)
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        m.train()
        for _ in range(40):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x).mean(dim=1), y) + m.sparsity_penalty()
            loss.backward()
            opt.step()
        rows = measure_sparsity(m, x)
        return float(np.mean([r.transmitted for r in rows]))

    assert train(5.0) > train(0.0) + 0.05


def test_meters_agree_with_the_profiler_on_one_sequence() -> None:
    """The meter's spatial sparsity of each ReLU equals hwmap.profile's on the exported model,
    fed the same frames as consecutive samples, and its temporal sparsity (exact equality)
    equals hwmap.sparsity.measure's with act_bits=None (the profile compares act_bits codes,
    so it finds at least as many unchanged elements)."""
    from hwmap.frontends.torch import graph_from_module
    from hwmap.parsing import ParseOptions
    from hwmap.profile import profile
    from hwmap.sparsity import measure

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 3))
    frames = _video(n=1, t=8)[0]
    rows = measure_sparsity(model, frames, timesteps=8)
    g = graph_from_module(model, name="m", options=ParseOptions(input_shape=(1, 1, 10, 10)))
    prof = profile(g, data=frames.numpy())
    relus = [r for r in prof.rows if "Relu" in r.post_ops]
    assert len(relus) == len(rows) == 2
    exact = measure(g, frames.numpy(), act_bits=None, tensors=[r.output for r in relus])
    for mine, theirs in zip(rows, relus):
        assert mine.spatial == pytest.approx(theirs.activation_sparsity, abs=1e-12)
        assert mine.temporal == pytest.approx(exact.tensors[theirs.output].unchanged, abs=1e-12)
        assert theirs.temporal_sparsity >= mine.temporal - 1e-12
        assert mine.transmitted == mine.spatial  # no delta layer: what is sent is the output


def test_meter_counts_delta_maps_and_sequences_separately() -> None:
    net = DeltaNet([nn.Identity(), nn.ReLU(), TemporalDelta(None, 0.0, "d")])
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 2.0]],  # sequence 1
                      [[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]]])  # sequence 2: never compared with 1
    with SparsityMeter(net) as m:
        net(x)
    (r,) = m.report()
    assert (r.elements, r.frames) == (2, 6)
    assert r.spatial == pytest.approx(7 / 12)
    assert r.temporal == pytest.approx(6 / 8)  # 3 of 4 element pairs unchanged in each sequence
    # delta maps: seq 1 [1,0] [0,0] [0,2], seq 2 [0,0] [0,0] [3,0]: 9 zeros of 12
    assert r.transmitted == pytest.approx(9 / 12)


@pytest.mark.parametrize("layers, where, what", [
    (lambda: [TemporalDelta(name="d0"), nn.Linear(2, 2)], "layer 'd0'", "follows nothing"),
    (lambda: [nn.Linear(2, 2), TemporalDelta(name="d1")], "layer 'd1'", "follows '0:Linear'"),
    (lambda: [nn.Conv2d(1, 1, 1), nn.MaxPool2d(1), TemporalDelta(name="d2")], "layer 'd2'", "(Conv2d)"),
])
def test_delta_layer_before_any_activation_is_refused(layers: object, where: str, what: str) -> None:
    with pytest.raises(ModelError) as e:
        DeltaNet(layers())  # type: ignore[operator]
    msg = str(e.value)
    assert "\n" not in msg and where in msg and what in msg and "must follow an activation" in msg


def test_activation_then_pooling_then_delta_is_accepted() -> None:
    DeltaNet([nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(1), TemporalDelta(name="d")])


@pytest.mark.parametrize("lam", [-0.1, float("nan"), "0.1"])
def test_bad_penalty_is_one_line_naming_layer_and_value(lam: object) -> None:
    with pytest.raises(ModelError) as e:
        TemporalDelta(FixedPointQuantizer(8), lam, "delta3")  # type: ignore[arg-type]
    msg = str(e.value)
    assert "\n" not in msg and "layer 'delta3'" in msg and "λ" in msg and str(lam) in msg
