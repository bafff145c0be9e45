"""hwmap.nn quantizers: LSQ's gradients against the analytic form (Esser et al. 2020, eq. 3.12-3.14)
and against PyTorch's own learnable fake-quantize kernel, its initialization and per-channel
bit widths; fixed point's straight-through gradient; evaluation mode through torch's
fake-quantize ops, exported as QDQ and run by onnxruntime; bad settings named."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from hwmap.errors import ModelError  # noqa: E402
from hwmap.nn import FixedPointQuantizer, LSQQuantizer, QuantConv2d  # noqa: E402
from hwmap.passes import fixed_point_quantize  # noqa: E402

D = torch.float64


def _lsq_grads(q: LSQQuantizer, x: "torch.Tensor", up: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    x = x.clone().requires_grad_(True)
    q.step.grad = None
    (q(x) * up).sum().backward()
    assert x.grad is not None and q.step.grad is not None
    return x.grad, q.step.grad


def _analytic(x: np.ndarray, s: np.ndarray, up: np.ndarray, qn: float, qp: float, g: float, clip: bool,
              axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx and dL/ds of Esser 2020 eq. 3 (clip) or the chapter's eq. 3.14 (no clip)."""
    v = x / s
    below, above = (v < -qn, v > qp) if clip else (np.zeros_like(v, bool), np.zeros_like(v, bool))
    inside = ~(below | above)
    dq_ds = np.where(below, -qn, np.where(above, qp, np.round(v) - v))
    dx = up * inside
    ds_elem = up * dq_ds * g
    ds = ds_elem.sum() if axis is None else ds_elem.sum(axis=tuple(d for d in range(x.ndim) if d != axis))
    return dx, ds


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("clip", [True, False])
def test_lsq_gradients_equal_the_analytic_form(signed: bool, per_channel: bool, clip: bool) -> None:
    rng = np.random.default_rng(int(signed) + 2 * int(per_channel) + 4 * int(clip))
    x = rng.normal(0.4, 1.5, (6, 4, 5, 5))
    if not signed:
        x = np.abs(x)
    up = rng.normal(0, 1, x.shape)
    q = LSQQuantizer(4, signed=signed, channels=4 if per_channel else None, clip=clip).to(D)
    q.train()
    xt = torch.from_numpy(x)
    q.initialize(xt)
    with torch.no_grad():  # a step that clips part of the data (the init alone rarely does)
        q.step.mul_(torch.from_numpy(rng.uniform(0.15, 0.4, q.step.shape)))
    dx, ds = _lsq_grads(q, xt, torch.from_numpy(up))
    s = q.step.detach().numpy()
    sb = s.reshape(1, 4, 1, 1) if per_channel else s
    qn, qp = q.levels
    g = q.gradient_scale(xt)
    if clip:
        assert g == pytest.approx(1.0 / math.sqrt((x[0].size // (4 if per_channel else 1)) * qp))
        assert (np.abs(x / sb) > qp).any()  # the clipped branch is exercised
    else:
        assert g == 1.0
    want_dx, want_ds = _analytic(x, sb, up, qn, qp, g, clip, 1 if per_channel else None)
    np.testing.assert_allclose(dx.numpy(), want_dx, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.numpy(), want_ds, rtol=1e-6, atol=1e-6)


def test_lsq_initialization_is_2_mean_over_sqrt_qp() -> None:
    x = torch.rand(8, 3, 4, 4, dtype=D) * torch.tensor([1.0, 4.0, 0.25], dtype=D).reshape(1, 3, 1, 1)
    q = LSQQuantizer(4, channels=3).to(D)
    q(x)
    want = 2 * x.abs().mean(dim=(0, 2, 3)) / math.sqrt(15)
    torch.testing.assert_close(q.step.detach(), want)
    t = LSQQuantizer(8, signed=True, weight=True).to(D)
    t(x)
    torch.testing.assert_close(t.step.detach(), 2 * x.abs().mean() / math.sqrt(127))
    assert t.gradient_scale(x) == pytest.approx(1 / math.sqrt(x.numel() * 127))


@pytest.mark.parametrize("per_channel", [False, True])
def test_lsq_matches_torch_learnable_fake_quantize(per_channel: bool) -> None:
    """PyTorch's own LSQ kernel (``_fake_quantize_learnable_per_*_affine``, grad_factor = g):
    the values and both gradients, on data away from the half-step band at the range's edge
    (where Esser's rule clips before rounding and PyTorch's after)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (5, 3, 4, 4)).astype(np.float32)
    q = LSQQuantizer(4, signed=True, channels=3 if per_channel else None)
    q.train()
    xt = torch.from_numpy(x)
    q.initialize(xt)
    s = q.step.detach().reshape(1, -1, 1, 1) if per_channel else q.step.detach()
    v = (xt / s).numpy()
    keep = torch.from_numpy(~(((v > 7) & (v < 7.5)) | ((v < -8) & (v > -8.5))))
    up = torch.from_numpy(rng.normal(0, 1, x.shape).astype(np.float32)) * keep
    g = q.gradient_scale(xt)
    dx, ds = _lsq_grads(q, xt, up)
    xp = xt.clone().requires_grad_(True)
    sp = q.step.detach().clone().requires_grad_(True)
    if per_channel:
        zp = torch.zeros(3)
        yp = torch._fake_quantize_learnable_per_channel_affine(xp, sp, zp, 1, -8, 7, g)
    else:
        yp = torch._fake_quantize_learnable_per_tensor_affine(xp, sp.reshape(1), torch.zeros(1), -8, 7, g)
    (yp * up).sum().backward()
    q.eval()
    torch.testing.assert_close(q(xt) * keep, yp.detach() * keep)
    torch.testing.assert_close(dx, xp.grad)
    torch.testing.assert_close(ds.reshape(-1), sp.grad.reshape(-1), rtol=1e-4, atol=1e-5)


def test_unclipped_lsq_reports_the_bits_each_channel_needs() -> None:
    q = LSQQuantizer(8, channels=3, clip=False).to(D)
    q.initialize(torch.ones(1, 3, 1, 1, dtype=D))
    with torch.no_grad():
        q.step.copy_(torch.tensor([1.0, 0.5, 0.01], dtype=D))
    x = torch.tensor([5.0, 5.0, 5.0], dtype=D).reshape(1, 3, 1, 1)
    y = q(x)  # no clip: 5/0.01 = 500 is kept
    torch.testing.assert_close(y.reshape(-1), torch.tensor([5.0, 5.0, 5.0], dtype=D))
    assert q.required_bits() == [3, 4, 9]  # codes 5, 10 and 500
    s = LSQQuantizer(8, signed=True, channels=3, clip=False).to(D)
    s.initialize(torch.ones(1, 3, 1, 1, dtype=D))
    with torch.no_grad():
        s.step.copy_(torch.tensor([1.0, 0.5, 0.01], dtype=D))
    s(-x)
    assert s.required_bits() == [4, 5, 10]  # one more for the sign
    assert q.annotation().bits == 9 and q.annotation().axis == 1


def test_fixed_point_module_is_eq_3_11_with_a_straight_through_gradient() -> None:
    x = torch.from_numpy(np.random.default_rng(5).normal(0, 3, (4, 2, 6, 6)))
    fq = FixedPointQuantizer(5, range="tensor")
    xr = x.clone().requires_grad_(True)
    y = fq(xr)
    np.testing.assert_array_equal(y.detach().numpy(), fixed_point_quantize(x.numpy(), 5))
    y.sum().backward()
    i, f = fq.format(x)
    top = (2**4 - 1) * 2.0**-f
    want = ((x >= -(2**4) * 2.0**-f - 2.0**-f / 2) & (x <= top + 2.0**-f / 2)).double()
    torch.testing.assert_close(xr.grad, want)  # 1 inside, 0 where clipped
    assert i == 1 + math.floor(math.log2(float(x.abs().max())))


def test_running_range_is_frozen_in_evaluation() -> None:
    fq = FixedPointQuantizer(8)
    fq.train()
    fq(torch.tensor([0.1, 2.9]))
    fq(torch.tensor([0.3, 1.0]))
    assert float(fq.max_abs) == pytest.approx(2.9) and fq.format() == (2, 5)
    fq.eval()
    y = fq(torch.tensor([100.0]))  # larger than the range: clipped to the top code
    assert float(y) == pytest.approx(127 / 32)
    assert float(fq.max_abs) == pytest.approx(2.9)


def _onnx_ops_and_output(model: nn.Module, x: "torch.Tensor") -> tuple[list[str], np.ndarray]:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"])
    m = onnx.load_from_string(buf.getvalue())
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return [n.op_type for n in m.graph.node], sess.run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize("bits", [8, 5])
def test_evaluation_mode_exports_8_bits_as_qdq_and_onnxruntime_agrees(bits: int) -> None:
    torch.manual_seed(0)
    act = FixedPointQuantizer(bits)
    lsq = LSQQuantizer(bits, channels=4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), act, nn.Conv2d(4, 4, 3), nn.ReLU(), lsq)
    x = torch.rand(2, 1, 8, 8)
    model.train()
    train_out = model(x).detach()
    model.eval()
    eval_out = model(x).detach()
    torch.testing.assert_close(eval_out, train_out, rtol=0, atol=1e-6)
    if bits != 8:  # PyTorch's exporter writes QDQ for 8-bit code ranges only
        with pytest.raises(torch.onnx.errors.SymbolicValueError, match=r"\(-16, 15\)"):
            _onnx_ops_and_output(model, x)
        return
    ops, _ = _onnx_ops_and_output(model, x)
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 2
    # each quantizer alone, on the same input (a whole chain would differ where onnxruntime's
    # convolutions, summing in another order, put a value on the other side of a rounding boundary)
    for stage, inp in ((act, model[:2](x)), (lsq, model[:5](x))):
        inp = inp.detach()
        _, out = _onnx_ops_and_output(stage, inp)
        np.testing.assert_allclose(out, stage(inp).detach().numpy(), rtol=0, atol=1e-6)


def test_unclipped_lsq_evaluates_in_the_whole_range_of_the_bits_it_reached() -> None:
    q = LSQQuantizer(8, channels=2, clip=False, init_bits=4).to(D)
    q.initialize(torch.ones(1, 2, 1, 1, dtype=D))
    assert q.export_bits() == 4  # nothing seen yet: the initialization's width
    with torch.no_grad():
        q.step.copy_(torch.tensor([1.0, 0.1], dtype=D))
    q(torch.tensor([3.0, 2.0], dtype=D).reshape(1, 2, 1, 1))  # codes 3 and 20: 2 and 5 bits
    assert q.required_bits() == [2, 5] and q.export_bits() == 5 and q.annotation().bits == 5
    q.eval()
    y = q(torch.tensor([40.0, 40.0], dtype=D).reshape(1, 2, 1, 1))
    torch.testing.assert_close(y.reshape(-1), torch.tensor([31.0, 3.1], dtype=D))  # clipped at 2^5 - 1 codes


def test_quantized_weights_in_conv() -> None:
    torch.manual_seed(0)
    conv = QuantConv2d(2, 3, 3, weight_quant=FixedPointQuantizer(4, range="tensor", name="w"))
    x = torch.rand(1, 2, 5, 5)
    w = torch.from_numpy(fixed_point_quantize(conv.weight.detach().numpy(), 4))
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, w, conv.bias))


@pytest.mark.parametrize("make", [
    lambda: FixedPointQuantizer(1, name="act3"),
    lambda: LSQQuantizer(1, name="act3"),
    lambda: LSQQuantizer(8, clip=False, init_bits=0, name="act3"),
])
def test_bit_width_below_2_is_one_line_naming_layer_and_value(make: object) -> None:
    with pytest.raises(ModelError) as e:
        make()  # type: ignore[operator]
    msg = str(e.value)
    assert "\n" not in msg and "layer 'act3'" in msg and ("1" in msg or "0" in msg) and "at least" not in msg
    assert "from 2" in msg
