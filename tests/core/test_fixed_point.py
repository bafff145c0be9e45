"""Fixed-point quantization (the chapter's eq. 3.9-3.11): the format, the quantizer against a
literal transcription of the equations and against torch's fake-quantize kernel, and the
post-training graph pass on the digits CNN run by the reference executor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwmap.errors import DataError
from hwmap.execute import run
from hwmap.parsing import ParseOptions
from hwmap.passes import QuantizeFixedPoint, fixed_point_format, fixed_point_quantize, run_passes
from hwmap.zoo import load_data, load_graph


def _eq_3_11(x: np.ndarray, bw: int) -> np.ndarray:
    """Eq. 3.9-3.11 as printed (log2, floor), the clip at the BW-bit two's-complement range."""
    i = 1 + math.floor(math.log2(float(np.max(np.abs(x)))))
    f = bw - i - 1
    return np.clip(np.round(x * 2.0**f), -(2 ** (bw - 1)), 2 ** (bw - 1) - 1) / 2.0**f


@pytest.mark.parametrize("max_abs, bits, integer, fraction", [
    (1.0, 8, 1, 6), (0.99, 8, 0, 7), (3.5, 8, 2, 5), (0.2, 6, -2, 7), (127.0, 8, 7, 0), (0.0, 4, 0, 3)])
def test_format_follows_eq_3_9_and_3_10(max_abs: float, bits: int, integer: int, fraction: int) -> None:
    f = fixed_point_format(max_abs, bits)
    assert (f.integer_bits, f.fraction_bits) == (integer, fraction)
    assert f.scale == 2.0**-fraction and (f.qmin, f.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12])
@pytest.mark.parametrize("spread", [0.03, 1.0, 37.0])
def test_quantizer_is_eq_3_11(bits: int, spread: float) -> None:
    x = np.random.default_rng(bits).normal(0.0, spread, 4000)
    q = fixed_point_quantize(x, bits)
    np.testing.assert_array_equal(q, _eq_3_11(x, bits))
    f = fixed_point_format(float(np.max(np.abs(x))), bits)
    inside = np.abs(x) <= f.qmax * f.scale
    assert np.max(np.abs(q - x)[inside]) <= f.scale / 2  # rounding error at most half a step
    assert len(np.unique(q)) <= 2**bits


def test_quantizer_matches_torch_fake_quantize() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(0.0, 2.0, 5000).astype(np.float32)
    for bits in (4, 6, 8):
        f = fixed_point_format(float(np.max(np.abs(x))), bits)
        peer = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), f.scale, 0, f.qmin, f.qmax).numpy()
        np.testing.assert_array_equal(fixed_point_quantize(x, bits), peer)


@pytest.mark.parametrize("bits", [1, 0, 33, 2.5, True])
def test_bad_bit_widths_name_the_setting(bits: object) -> None:
    with pytest.raises(DataError, match=r"fixed-point act_bits = "):
        QuantizeFixedPoint(weight_bits=8, act_bits=bits)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"fixed-point weight_bits = "):
        QuantizeFixedPoint(weight_bits=bits, act_bits=None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def digits() -> tuple:
    g = load_graph("digits_cnn", ParseOptions())
    d = load_data("digits")
    return g, d.x, d.y


def test_pass_annotates_weights_and_activations(digits: tuple) -> None:
    g, x, y = digits
    q = run_passes(g, [QuantizeFixedPoint(weight_bits=6, act_bits=6, calibration=x[:100])])
    assert g.digest() != q.digest() and not any(n.param_quant for n in g.nodes)  # the input is untouched
    weights = {n.name: n for n in q.nodes if n.op in ("Conv", "Gemm")}
    assert len(weights) == 3
    for n in weights.values():
        slot = "W" if n.op == "Conv" else "B"
        a = n.param_quant[slot]
        f = fixed_point_format(float(np.max(np.abs(n.params[slot]))), 6)
        assert (float(a.scale), a.bits, a.signed) == (f.scale, 6, True)
    relus = [n.outputs[0] for n in q.nodes if n.op == "Relu"]
    values = run(q, {q.inputs[0]: x[:100]}, quantized=True, collect=True)
    for t in relus:
        a = q.tensors[t].quant
        assert a is not None and a.bits == 6
        codes = values[t] / float(a.scale)
        np.testing.assert_array_equal(codes, np.round(codes))  # on the grid of 2^-F
        assert codes.max() <= 31 and codes.min() >= 0
        # the range is the largest activation's (eq. 3.9): its top code is above half the range
        assert codes.max() >= 16
    # applying the pass again changes nothing (its ranges ignore its own activation annotations)
    again, changed = QuantizeFixedPoint(weight_bits=6, act_bits=6, calibration=x[:100]).apply(q)
    assert not changed and again.digest() == q.digest()


def test_pass_at_8_bits_keeps_accuracy_and_degrades_at_3(digits: tuple) -> None:
    g, x, y = digits
    float_acc = float(np.mean(np.argmax(run(g, {g.inputs[0]: x})[g.outputs[0]], axis=1) == y))
    acc = {}
    for bits in (8, 3):
        q = run_passes(g, [QuantizeFixedPoint(weight_bits=bits, act_bits=bits, calibration=x[:100])])
        out = run(q, {q.inputs[0]: x}, quantized=True)[q.outputs[0]]
        acc[bits] = float(np.mean(np.argmax(out, axis=1) == y))
    assert acc[8] >= float_acc - 0.01
    assert acc[3] < acc[8]


def test_pass_weights_only_and_skip(digits: tuple) -> None:
    g, x, _ = digits
    first = next(n.name for n in g.nodes if n.op == "Conv")
    q = run_passes(g, [QuantizeFixedPoint(weight_bits=8, act_bits=None, skip=(first,))])
    assert not q.node(first).param_quant
    assert all(t.quant is None for t in q.tensors.values())
    assert sum(bool(n.param_quant) for n in q.nodes) == 2


def test_pass_without_calibration_says_what_it_needs(digits: tuple) -> None:
    g, _, _ = digits
    with pytest.raises(DataError, match="needs calibration samples"):
        QuantizeFixedPoint(weight_bits=8, act_bits=8).apply(g)


def test_torch_modules_and_the_pass_compute_the_same_network(digits: tuple) -> None:
    """zoo:digits_cnn quantized twice: by the graph pass (run by hwmap's reference executor)
    and as torch modules (QuantConv2d/QuantLinear weights, FixedPointQuantizer activations in
    the formats the pass chose), evaluated through torch's fake-quantize kernels."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from hwmap.nn import FixedPointQuantizer, QuantConv2d, QuantLinear
    from hwmap.zoo.digits import CNN_LAYERS, load_weights

    g, x, _ = digits
    bits = 6
    q = run_passes(g, [QuantizeFixedPoint(weight_bits=bits, act_bits=bits, calibration=x[:100])])
    w = {k: torch.from_numpy(v) for k, v in load_weights("digits_cnn", CNN_LAYERS).items()}

    def act(tensor: str) -> FixedPointQuantizer:
        a = q.tensors[tensor].quant
        assert a is not None
        m = FixedPointQuantizer(bits)
        m.max_abs.fill_(2.0 ** (bits - 2 + math.log2(float(a.scale))))  # a magnitude with the pass's I
        m.seen.fill_(True)
        return m

    def wq() -> FixedPointQuantizer:
        return FixedPointQuantizer(bits, range="tensor")

    conv1 = QuantConv2d(1, 8, 3, padding=1, weight_quant=wq())
    conv2 = QuantConv2d(8, 16, 3, stride=2, padding=1, weight_quant=wq())
    fc = QuantLinear(256, 10, weight_quant=wq())
    for layer, name in ((conv1, "conv1"), (conv2, "conv2"), (fc, "fc")):
        layer.weight.data, layer.bias.data = w[f"{name}.W"], w[f"{name}.B"]
    relus = [n.outputs[0] for n in q.nodes if n.op == "Relu"]
    model = nn.Sequential(conv1, nn.ReLU(), act(relus[0]), conv2, nn.ReLU(), act(relus[1]), nn.Flatten(), fc).eval()
    with torch.no_grad():
        mine = model(torch.from_numpy(x)).numpy()
    ref = run(q, {q.inputs[0]: x}, quantized=True)[q.outputs[0]]
    assert np.mean(np.argmax(mine, 1) == np.argmax(ref, 1)) == 1.0
    # float sums in another order may put an activation on the other side of a rounding boundary
    assert np.mean(np.abs(mine - ref) < 1e-4) > 0.99
