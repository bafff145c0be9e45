"""Quantized PyTorch models exported to ONNX (:func:`hwmap.nn.onnx_export.export_onnx`) with
QuantizeLinear/DequantizeLinear (QDQ) or QONNX ``Quant`` nodes come back as hwmap's
quantization annotations: the annotations equal the torch quantizers' scales, zero points and
bit widths, and the quantized reference executor equals onnxruntime, the qonnx package's
executor and the torch model exactly. Bad quantizers are refused with one line naming the
node and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from hwmap import Graph, ModelError, ParseOptions, QuantAnnotation, execute
from hwmap.frontends.onnx import graph_from_onnx
from hwmap.nn.onnx_export import QONNX_DOMAIN, export_onnx

ort = pytest.importorskip("onnxruntime")


class FakeQuantNet(torch.nn.Module):
    """A conv net quantized as torch's own fake-quantizers do it (what hwmap.nn's quantizers
    compute through in eval mode): an asymmetric input quantizer, per-channel conv weights,
    an unsigned ReLU output, per-tensor fc weights, a signed output with a zero point.
    ``low_bits`` uses code ranges below 8 bits (6-bit ReLU, 5-bit fc weights, 4-bit narrow
    conv weights), which only QONNX can hold."""

    def __init__(self, seed: int = 0, low_bits: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, stride=1)
        self.fc = torch.nn.Linear(4 * 3 * 3, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.register_buffer("w_scale", torch.rand(4, generator=g) * (0.1 if low_bits else 0.01) + 0.004)
        self.register_buffer("w_zero", torch.zeros(4, dtype=torch.int32))
        self.pool = torch.nn.MaxPool2d(2)
        # (scale, zero point, qmin, qmax) of each per-tensor quantizer; the conv weights' range
        self.x_q = (0.02, 128, 0, 255)
        self.act_q = (0.05, 0, 0, 63) if low_bits else (0.05, 0, 0, 255)
        self.fc_w_q = (0.03, 0, -16, 15) if low_bits else (0.03, 0, -128, 127)
        self.out_q = (0.1, 3, -128, 127)
        self.w_range = (-7, 7) if low_bits else (-128, 127)

    def conv_weight(self) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(self.conv.weight, self.w_scale, self.w_zero, 0, *self.w_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.fake_quantize_per_tensor_affine(x, *self.x_q)
        y = torch.relu(torch.nn.functional.conv2d(x, self.conv_weight(), self.conv.bias, padding=1))
        y = torch.fake_quantize_per_tensor_affine(y, *self.act_q)
        y = self.pool(y).flatten(1)
        w2 = torch.fake_quantize_per_tensor_affine(self.fc.weight, *self.fc_w_q)
        y = torch.nn.functional.linear(y, w2, self.fc.bias)
        return torch.fake_quantize_per_tensor_affine(y, *self.out_q)


def _annotation(scale: float, zero: int, qmin: int, qmax: int) -> QuantAnnotation:
    """What a torch per-tensor fake-quantizer means: its scale as the float32 ONNX stores, the
    bit width and signedness of its code range."""
    bits = int(np.log2(qmax - qmin + 1))
    return QuantAnnotation(np.float64(np.float32(scale)), float(zero), bits, qmin < 0)


def _ort_spec(data: bytes) -> Any:
    """An onnxruntime session that runs the ONNX operators as specified: its default
    optimizations fuse QuantizeLinear/DequantizeLinear pairs with their neighbours into integer
    kernels, which may round a code differently from the float reference semantics."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _inputs() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((16, 3, 6, 6)).astype(np.float32) * 1.5


def _check_graph(g: Graph, model: FakeQuantNet, narrow_w: bool) -> None:
    """The quantizers are all folded away and their annotations equal the torch parameters."""
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    conv, relu, _, _, gemm = g.nodes
    assert g.tensors["x"].quant == _annotation(*model.x_q)
    assert g.tensors[relu.outputs[0]].quant == _annotation(*model.act_q)
    assert g.tensors["y"].quant == _annotation(*model.out_q)
    wq = conv.param_quant["W"]
    assert (wq.bits, wq.signed, wq.axis, wq.narrow) == ((4, True, 0, True) if narrow_w else (8, True, 0, False))
    np.testing.assert_array_equal(wq.scale, model.w_scale.numpy().astype(np.float64))
    np.testing.assert_array_equal(wq.zero_point, np.zeros(4))
    assert gemm.param_quant["B"] == _annotation(*model.fc_w_q)
    # the weights are the torch fake-quantized weights, bit for bit
    np.testing.assert_array_equal(conv.params["W"], model.conv_weight().detach().numpy())


@pytest.mark.parametrize("opset", [13, 17])
def test_fake_quant_torch_model_round_trips_through_qdq_exactly(opset: int) -> None:
    model = FakeQuantNet()
    data = export_onnx(model, torch.zeros(2, 3, 6, 6), fmt="qdq", opset=opset)
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 5
    g = graph_from_onnx(data, name="fq", options=ParseOptions())
    _check_graph(g, model, narrow_w=False)
    x = _inputs()
    ours = execute.run(g, {"x": x}, quantized=True)["y"]
    theirs = _ort_spec(data).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ours, theirs)
    with torch.no_grad():
        np.testing.assert_array_equal(ours, model(torch.from_numpy(x)).numpy())
    # the output is on its grid: codes y / 0.1 + 3 are integers
    codes = ours.astype(np.float64) / np.float32(0.1) + 3
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)


class SevenBitNet(torch.nn.Module):
    """PyTorch's reduced-range activations, (0, 127): exported as QuantizeLinear → Clip →
    DequantizeLinear, read back as 7-bit unsigned annotations."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc(torch.fake_quantize_per_tensor_affine(x, 0.05, 64, 0, 127)))
        return torch.fake_quantize_per_tensor_affine(y, 0.02, 0, 0, 127)


def test_reduced_range_qdq_with_clip_is_seven_bits() -> None:
    model = SevenBitNet().eval()
    data = export_onnx(model, torch.zeros(2, 6), fmt="qdq")
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("Clip") == 2
    g = graph_from_onnx(data, name="seven", options=ParseOptions())
    assert [n.op for n in g.nodes] == ["Gemm", "Relu"]
    assert g.tensors["x"].quant == _annotation(0.05, 64, 0, 127)
    assert g.tensors["y"].quant == _annotation(0.02, 0, 0, 127)
    x = (np.random.default_rng(0).standard_normal((50, 6)) * 4).astype(np.float32)
    ours = execute.run(g, {"x": x}, quantized=True)["y"]
    assert ours.max() == np.float32(127 * np.float32(0.02))  # clipped at 127 codes, not 255
    np.testing.assert_array_equal(ours, _ort_spec(data).run(None, {"x": x})[0])
    with torch.no_grad():
        np.testing.assert_array_equal(ours, model(torch.from_numpy(x)).numpy())


def test_low_bit_torch_model_round_trips_through_qonnx_exactly() -> None:
    """Code ranges below 8 bits (which ONNX QDQ cannot hold) export as QONNX Quant nodes; the
    qonnx package's own executor is the independent reference where it is installed."""
    model = FakeQuantNet(low_bits=True)
    with pytest.raises(ModelError, match=r"cannot export as qdq: .*Got \(-7, 7\); export as fmt='qonnx'"):
        export_onnx(model, torch.zeros(2, 3, 6, 6), fmt="qdq")
    # a fixed batch: qonnx's executor takes no symbolic dimensions
    data = export_onnx(model, torch.zeros(16, 3, 6, 6), fmt="qonnx", dynamic_batch=False)
    ops = [(n.domain, n.op_type) for n in onnx.load_from_string(data).graph.node]
    assert ops.count((QONNX_DOMAIN, "Quant")) == 5
    g = graph_from_onnx(data, name="fq", options=ParseOptions())
    _check_graph(g, model, narrow_w=True)
    x = _inputs()
    ours = execute.run(g, {"x": x}, quantized=True)["y"]
    with torch.no_grad():
        np.testing.assert_array_equal(ours, model(torch.from_numpy(x)).numpy())
    qonnx_exec = pytest.importorskip("qonnx.core.onnx_exec")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(onnx.load_from_string(data)).transform(InferShapes())
    theirs = qonnx_exec.execute_onnx(wrapped, {"x": x})["y"]
    np.testing.assert_array_equal(ours, theirs)


class LearnedStepNet(torch.nn.Module):
    """Quantizers whose steps are learned parameters (as learned step size quantization keeps
    them), passed detached to the fake-quantize calls in eval mode: a 4-bit ReLU output and
    per-channel 4-bit weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.fc = torch.nn.Linear(6, 3)
        self.step = torch.nn.Parameter(torch.tensor(0.07))
        self.w_step = torch.nn.Parameter(torch.tensor([0.05, 0.09, 0.03]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.fake_quantize_per_tensor_affine(torch.relu(x), self.step.detach(),
                                                  torch.tensor(0, dtype=torch.int32), 0, 15)
        w = torch.fake_quantize_per_channel_affine(self.fc.weight, self.w_step.detach(),
                                                   torch.zeros(3, dtype=torch.int32), 0, -8, 7)
        return torch.nn.functional.linear(a, w, self.fc.bias)


def test_learned_steps_export_from_their_parameters() -> None:
    model = LearnedStepNet()
    g = graph_from_onnx(export_onnx(model, torch.zeros(2, 6), fmt="qonnx"), name="lsq", options=ParseOptions())
    (act,) = [t.quant for t in g.tensors.values() if t.quant is not None]
    assert act == QuantAnnotation(np.float64(np.float32(0.07)), 0.0, 4, False)
    (gemm,) = [n for n in g.nodes if n.param_quant]
    (wq,) = gemm.param_quant.values()
    np.testing.assert_array_equal(wq.scale, model.w_step.detach().numpy().astype(np.float64))
    assert (wq.bits, wq.signed, wq.narrow) == (4, True, False)
    x = _inputs()[:, 0, 0, :6].copy()
    ours = execute.run(g, {"x": x}, quantized=True)["y"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    # the output is not quantized: equal up to float32 rounding of the differently ordered sums
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_export_refuses_a_partial_code_range() -> None:
    model = FakeQuantNet(low_bits=True)
    model.act_q = (0.05, 0, 0, 50)
    with pytest.raises(ModelError, match=r"code range \(0, 50\) is not a whole"):
        export_onnx(model, torch.zeros(1, 3, 6, 6), fmt="qonnx")
    with pytest.raises(ModelError, match="unknown export format 'tflite'"):
        export_onnx(model, torch.zeros(1, 3, 6, 6), fmt="tflite")


# -- bad quantizers ------------------------------------------------------------------------------
def _qdq_with_scale(scale: float) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq_in")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("scale", [0.0, -0.5])
def test_qdq_with_zero_or_negative_scale_is_refused(scale: float) -> None:
    with pytest.raises(ModelError) as e:
        graph_from_onnx(_qdq_with_scale(scale), name="bad", options=ParseOptions())
    msg = str(e.value)
    assert "\n" not in msg
    assert f"node 'q_in' (QuantizeLinear): scale must be positive and finite, got {scale!r}" in msg


def _quant_with_bits(bits: float) -> onnx.ModelProto:
    dom = "qonnx.custom_op.general"
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in
             (("s", 0.1), ("z", 0.0), ("b", bits))]
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain=dom, name="act_q", signed=1, narrow=0,
                            rounding_mode="ROUND")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)])


@pytest.mark.parametrize("bits, shown", [(1.0, "1"), (0.0, "0"), (2.5, "2.5"), (-3.0, "-3")])
def test_quant_bit_width_below_two_or_fractional_is_refused(bits: float, shown: str) -> None:
    with pytest.raises(ModelError) as e:
        graph_from_onnx(_quant_with_bits(bits), name="bad", options=ParseOptions())
    msg = str(e.value)
    assert "\n" not in msg
    assert "node 'act_q' (qonnx.custom_op.general:Quant): bitwidth must be one integer from 2 to 32, got " \
           f"{shown}" in msg


def test_cli_names_the_bad_scale_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(_qdq_with_scale(0.0).SerializeToString())
    r = subprocess.run([sys.executable, "-m", "hwmap.cli", "profile", str(path)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "q_in" in lines[0] and "got 0.0" in lines[0], r.stderr
    assert r.stdout == ""


def _trunc_model(mode: str = "ROUND", out_scale: float = 0.4, inputs: int = 6) -> onnx.ModelProto:
    dom = QONNX_DOMAIN
    vals = {"s": 0.1, "z": 0.0, "ib": 8.0, "os": out_scale, "ob": 4.0}
    names = ["r", "s", "z", "ib", "os", "ob"] if inputs == 6 else ["r", "s", "z", "ib", "ob"]
    inits = [numpy_helper.from_array(np.array(vals[k], np.float32), k) for k in names[1:]]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Trunc", names, ["y"], domain=dom, name="trunc", rounding_mode=mode, signed=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 2)])


def test_trunc_rounds_as_qonnx_does(tmp_path: Path) -> None:
    """A hand-made Trunc (scale 0.1 → 0.4, 8 → 4 bits, ROUND) against the qonnx package's
    executor, on values chosen to hit the half-way codes (c / 4 = k + 0.5)."""
    m = _trunc_model()
    g = graph_from_onnx(m, name="t", options=ParseOptions())
    x = (np.arange(-2, 40, dtype=np.float32) * np.float32(0.05)).reshape(7, 6)
    ours = execute.run(g, {"x": x}, quantized=True)["y"]
    codes = np.round(np.maximum(x, 0).astype(np.float64) / np.float32(0.1))
    expect = (np.clip(np.round(codes / 4), 0, 15) * np.float32(0.4)).astype(np.float32)  # half to even
    np.testing.assert_array_equal(ours, expect)
    # the annotation survives hwmap's own graph format
    g.save(tmp_path / "saved")
    again = Graph.load(tmp_path / "saved")
    assert again.tensors["y"].quant == g.tensors["y"].quant and again.tensors["y"].quant.input_scale is not None
    np.testing.assert_array_equal(execute.run(again, {"x": x}, quantized=True)["y"], expect)
    qonnx_exec = pytest.importorskip("qonnx.core.onnx_exec")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(m).transform(InferShapes())
    for row in x:  # the model's batch is 1
        theirs = qonnx_exec.execute_onnx(wrapped, {"x": row[None]})["y"]
        np.testing.assert_array_equal(execute.run(g, {"x": row[None]}, quantized=True)["y"], theirs)


@pytest.mark.parametrize("kw, message", [
    ({"mode": "FLOOR"}, "rounding_mode 'FLOOR': hwmap's annotations round half to even, so only ROUND is read"),
    ({"out_scale": 0.3}, "output scale [0.30000001192092896] is not the scale [0.10000000149011612] times a power"),
    ({"inputs": 5}, "Trunc version 1 (5 inputs)"),
])
def test_trunc_that_no_annotation_holds_is_refused(kw: dict, message: str) -> None:
    with pytest.raises(ModelError) as e:
        graph_from_onnx(_trunc_model(**kw), name="t", options=ParseOptions())
    assert "node 'trunc' (qonnx.custom_op.general:Trunc): " + message in str(e.value)


def test_activation_quant_with_another_rounding_mode_is_refused() -> None:
    """An annotation rounds half to even when the graph runs: a QONNX activation quantizer
    that floors cannot become one (a weight can: it is quantized while parsing)."""
    m = _quant_with_bits(4.0)
    m.graph.node[0].attribute[[a.name for a in m.graph.node[0].attribute].index("rounding_mode")].s = b"FLOOR"
    with pytest.raises(ModelError, match=r"node 'act_q' \(qonnx.custom_op.general:Quant\): rounding_mode 'FLOOR' on "
                                         r"an activation: hwmap's annotations round half to even"):
        graph_from_onnx(m, name="floor", options=ParseOptions())
