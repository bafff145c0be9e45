"""The ONNX frontend against onnxruntime: shapes of every tensor and (through hwmap's reference
executor) outputs, plus QDQ and QONNX quantization, external data, opset conversion,
auto_pad, unsupported ops and unreadable files."""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwmap import Graph, ModelError, ParseOptions, QuantAnnotation, UnsupportedOpError
from hwmap.frontends.onnx import graph_from_onnx, hwmap_parse

HAVE_EXECUTE = importlib.util.find_spec("hwmap.execute") is not None
QONNX = "qonnx.custom_op.general"


# -- helpers -------------------------------------------------------------------------------
def export(model: nn.Module, x: torch.Tensor, *, dynamic_batch: bool = False, **kw: object) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x, buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None, **kw)
    return buf.getvalue()


def parse(data: bytes | onnx.ModelProto, **opts: object) -> Graph:
    return graph_from_onnx(data, name="m", options=ParseOptions(**opts))  # type: ignore[arg-type]


def ort_all(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of the model, computed by onnxruntime (outputs added to a copy)."""
    m = onnx.load_from_string(data)
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in known:
                m.graph.output.append(helper.make_empty_tensor_value_info(o))
                known.add(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def check_against_ort(graph: Graph, data: bytes, feeds: dict[str, np.ndarray], *, atol: float = 1e-4,
                      min_shape_coverage: float = 1.0) -> None:
    """Shapes of every tensor the graph shares with the model, and outputs, against ORT."""
    ref = ort_all(data, feeds)
    shared = [t for t in graph.tensors if t in ref]
    produced = [t for n in graph.nodes for t in n.outputs]
    assert len([t for t in produced if t in ref]) >= min_shape_coverage * len(produced)
    for t in shared:
        assert graph.tensors[t].shape == tuple(ref[t].shape), t
        assert graph.tensors[t].dtype == str(ref[t].dtype), t
    if not HAVE_EXECUTE:
        return
    from hwmap.execute import run

    out = run(graph, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(out[name], ref[name], atol=atol, rtol=1e-4, err_msg=name)


def build(nodes: list, inputs: list, outputs: list, inits: list | None = None, *, opset: int = 17,
          extra_opsets: list | None = None, value_info: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [], value_info=value_info or [])
    ops = [helper.make_opsetid("", opset)] + (extra_opsets or [])
    m = helper.make_model(g, opset_imports=ops, producer_name="hwmap-tests")
    m.ir_version = 8
    return m


def vi(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def init(name: str, a: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


# -- torch models (plain torch) --------------------------------------------------------------
class CNN(nn.Module):
    """conv → relu → BN (kept as a node: not after a conv) → maxpool → conv → avgpool → flatten → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.bn(torch.relu(self.conv1(x))), 2)
        x = self.pool(self.conv2(x))
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(self.pw(nn.functional.relu6(self.dw(x))))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.drop(self.c2(torch.relu(self.c1(x)))) + x)


class Reshaper(nn.Module):
    """nn.Flatten, x.reshape(x.size(0), -1) and a view to 3-D: Shape/Gather chains when the
    batch is dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = nn.Flatten()(self.conv(x))
        b = self.conv(x).reshape(x.size(0), -1)
        y = self.fc(a + b)
        return y.view(x.size(0), 2, 3).sum(dim=2)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.1), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


TORCH_CASES = {
    "cnn_bn": (CNN, (1, 3, 8, 8)),
    "depthwise": (Depthwise, (1, 4, 6, 6)),
    "residual": (Residual, (1, 4, 5, 5)),
    "mlp": (mlp, (1, 6)),
    "reshape": (Reshaper, (1, 2, 5, 5)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_models_match_onnxruntime(case: str) -> None:
    factory, shape = TORCH_CASES[case]
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(*shape)
    data = export(model, x)
    g = parse(data)
    assert g.inputs == ["x"] and g.outputs == ["y"]
    assert g.meta["source_format"] == "onnx" and g.meta["opset"] == 17
    assert g.meta["producer"].startswith("pytorch")
    check_against_ort(g, data, {"x": x.numpy()})
    # constants became params, never tensors
    for n in g.nodes:
        assert n.op not in ("Constant", "Identity", "Dropout"), n
    if case == "cnn_bn":
        ops = [n.op for n in g.nodes]
        assert "BatchNormalization" in ops and "Softmax" in ops and "Flatten" in ops
        bn = next(n for n in g.nodes if n.op == "BatchNormalization")
        assert set(bn.params) == {"scale", "B", "input_mean", "input_var"} and len(bn.inputs) == 1
        assert bn.attrs["epsilon"] == 1e-5
        conv2 = [n for n in g.nodes if n.op == "Conv"][1]
        assert set(conv2.params) == {"W"}
        assert conv2.attrs["strides"] == [2, 2] and conv2.attrs["group"] == 1
        assert conv2.attrs["dilations"] == [1, 1] and conv2.attrs["kernel_shape"] == [3, 3]
        pool = next(n for n in g.nodes if n.op == "AveragePool")
        assert pool.attrs["count_include_pad"] == 0 and pool.attrs["ceil_mode"] == 0
        fc = next(n for n in g.nodes if n.op == "Gemm")
        assert fc.attrs["alpha"] == 1.0 and fc.attrs["beta"] == 1.0 and fc.attrs["transA"] == 0
        np.testing.assert_array_equal(fc.params["B"], model.fc.weight.detach().numpy())
    if case == "depthwise":
        dw = g.nodes[0]
        assert dw.op == "Conv" and dw.attrs["group"] == 4
        clips = [n for n in g.nodes if n.op == "Clip"]
        assert len(clips) == 2 and all(float(c.params["min"]) == 0 and float(c.params["max"]) == 6 for c in clips)
    if case == "mlp":
        lrelu = next(n for n in g.nodes if n.op == "LeakyRelu")
        assert lrelu.attrs["alpha"] == 0.1


def test_dynamic_batch_is_fixed_to_options_batch() -> None:
    torch.manual_seed(0)
    model = Reshaper()
    data = export(model, torch.randn(1, 2, 5, 5), dynamic_batch=True)
    m = onnx.load_from_string(data)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    g = parse(data, batch=3)
    assert g.tensors["x"].shape == (3, 2, 5, 5) and g.tensors["y"].shape == (3, 2)
    check_against_ort(g, data, {"x": x})
    assert parse(data).tensors["y"].shape == (1, 2)


def test_parse_is_deterministic() -> None:
    torch.manual_seed(0)
    data = export(CNN(), torch.randn(1, 3, 8, 8))
    a, b = parse(data), parse(data)
    assert a.to_json() == b.to_json()
    assert a.arrays().keys() == b.arrays().keys()
    assert all(np.array_equal(v, b.arrays()[k]) for k, v in a.arrays().items())


def test_hook_reads_files_and_ignores_other_sources(tmp_path: Path) -> None:
    torch.manual_seed(0)
    p = tmp_path / "mlp.onnx"
    p.write_bytes(export(mlp(), torch.randn(1, 6)))
    g = hwmap_parse(str(p), ParseOptions())
    assert g is not None and g.name == "mlp"
    assert hwmap_parse(str(p), ParseOptions(name="custom")).name == "custom"
    assert hwmap_parse(str(tmp_path / "x.nir"), ParseOptions()) is None
    assert hwmap_parse("pkg.mod:factory", ParseOptions()) is None
    with pytest.raises(ModelError, match="no such file"):
        hwmap_parse(str(tmp_path / "missing.onnx"), ParseOptions())


# -- nodes, names, constants ---------------------------------------------------------------------
def test_names_constants_identity_and_variadic_operands() -> None:
    c = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.full((1, 3), 2.0, np.float32)))
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),                 # removed, consumers rewired
        helper.make_node("Mul", ["xi", "c"], ["a"]),                 # unnamed: Mul_2
        c,
        helper.make_node("Add", ["a", "c"], ["b"], name="dup"),      # the constant is copied into each
        helper.make_node("Concat", ["b", "k", "a"], ["cat"], name="dup", axis=1),  # duplicate name; k constant
        helper.make_node("Identity", ["cat"], ["y"], name="out_id"),  # produces a graph output: kept
    ]
    m = build(nodes, [vi("x", [1, 3])], [vi("y", [1, 9])], [init("k", np.arange(3, dtype=np.float32)[None])])
    # Mul comes before the Constant it reads in this list; ONNX requires topological order.
    m.graph.node.insert(0, m.graph.node.pop(2))
    g = parse(m)
    names = [n.name for n in g.nodes]
    assert names == ["Mul_2", "dup", "k", "dup_1", "out_id"], names
    mul, add, k, cat, ident = g.nodes
    assert mul.inputs == ["x"] and set(mul.params) == {"B"} and add.params["B"] is not mul.params["B"]
    assert k.op == "Constant" and k.outputs == ["k"] and np.array_equal(k.params["value"], [[0, 1, 2]])
    assert cat.inputs == ["b", "k", "a"] and cat.params == {}
    assert ident.op == "Identity" and ident.outputs == ["y"]
    assert g.tensors["cat"].shape == (1, 9) and g.tensors["k"].shape == (1, 3)
    if HAVE_EXECUTE:  # onnxruntime refuses the duplicate node name: compare with numpy
        from hwmap.execute import run

        x = np.array([[1, 2, 3]], np.float32)
        expect = np.concatenate([x * 2 + 2, [[0, 1, 2]], x * 2], axis=1)
        np.testing.assert_array_equal(run(g, {"x": x})["y"], expect)


def test_defaults_and_clip_slots() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["g"]),
        helper.make_node("Clip", ["g", "", "hi"], ["c"]),          # min absent: ONNX lowest float
        helper.make_node("Softmax", ["c"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"]),
    ]
    m = build(nodes, [vi("x", [2, 4])], [vi("y", [2, 3])],
              [init("w", np.ones((4, 3), np.float32)), init("hi", np.array(0.5, np.float32))])
    g = parse(m)
    gemm, clip, sm, fl = g.nodes
    assert gemm.attrs == {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    assert clip.params["max"] == np.float32(0.5) and clip.params["min"] == np.finfo(np.float32).min
    assert sm.attrs["axis"] == -1 and fl.attrs["axis"] == 1
    check_against_ort(g, m.SerializeToString(), {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)})


def test_dynamic_input_after_empty_optional_slot_is_refused() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", ""], ["y"])]
    m = build(nodes, [vi("x", [2, 4]), vi("w", [4, 3])], [vi("y", [2, 3])])
    g = parse(m)  # trailing empty optional input: fine
    assert g.nodes[0].inputs == ["x", "w"]
    nodes = [helper.make_node("Pad", ["x", "p", "", "ax"], ["y"])]
    m = build(nodes, [vi("x", [2, 4]), vi("ax", [1], TensorProto.INT64)], [vi("y", [2, 6])],
              [init("p", np.array([1, 1], np.int64))], opset=18)
    with pytest.raises(ModelError, match="empty optional input"):
        parse(m)


# -- auto_pad ---------------------------------------------------------------------------------
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_resolved_into_pads(auto_pad: str) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=auto_pad, strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["y"], auto_pad=auto_pad, kernel_shape=[2, 2], strides=[2, 1]),
    ]
    m = build(nodes, [vi("x", [1, 2, 7, 6])], [vi("y", [1, 3, None, None])], [init("w", w)])
    g = parse(m)
    conv, pool = g.nodes
    assert "auto_pad" not in conv.attrs and "auto_pad" not in pool.attrs
    assert conv.attrs["kernel_shape"] == [4, 3]
    if auto_pad == "SAME_UPPER":  # in 7, stride 2, k 4: out 4, total pad 3 -> (1, 2); 6/2 k 3: total 1 -> (0, 1)
        assert conv.attrs["pads"] == [1, 0, 2, 1]
    elif auto_pad == "SAME_LOWER":
        assert conv.attrs["pads"] == [2, 1, 1, 0]
    else:
        assert conv.attrs["pads"] == [0, 0, 0, 0]
    data = m.SerializeToString()
    check_against_ort(g, data, {"x": rng.standard_normal((1, 2, 7, 6)).astype(np.float32)})


# -- opset conversion ---------------------------------------------------------------------------
def test_old_opset_is_converted() -> None:
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),   # axes became an input in opset 13
        helper.make_node("Relu", ["u"], ["r"]),
        helper.make_node("Squeeze", ["r"], ["y"], axes=[1]),
    ]
    m = build(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], opset=11)
    m.ir_version = 6
    g = parse(m)
    assert g.meta["opset"] == 13 and g.meta["converted_from_opset"] == 11
    unsq = next(n for n in g.nodes if n.op == "Unsqueeze")
    assert unsq.params["axes"].tolist() == [1] and unsq.inputs == ["x"]
    assert g.tensors["u"].shape == (2, 1, 3)
    check_against_ort(g, m.SerializeToString(), {"x": np.array([[-1, 2, -3], [4, -5, 6]], np.float32)})


def test_failed_opset_conversion_is_a_model_error() -> None:
    inits = [init(k, np.ones(2, np.float32)) for k in ("s", "b", "m", "v")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0)]
    m = build(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 4, 4])], inits, opset=7)
    m.ir_version = 6
    with pytest.raises(ModelError, match="opset 7 is older than 13 and the ONNX version converter failed"):
        parse(m)


def test_dropout_is_removed_unless_it_produces_a_graph_output() -> None:
    nodes = [
        helper.make_node("Dropout", ["x", "ratio"], ["d"]),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Dropout", ["r"], ["y"], name="last"),
    ]
    m = build(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [init("ratio", np.array(0.3, np.float32))])
    g = parse(m)
    assert [(n.op, n.name, n.inputs, n.outputs) for n in g.nodes] == [
        ("Relu", "Relu_1", ["x"], ["r"]), ("Identity", "last", ["r"], ["y"])]
    check_against_ort(g, m.SerializeToString(), {"x": np.array([[-1, 0, 1], [2, -2, 3]], np.float32)})


# -- QDQ ----------------------------------------------------------------------------------------
def _qdq_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    wq = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    w_scale = np.array([0.002, 0.004, 0.006, 0.008], np.float32)
    bq = rng.integers(-500, 500, 4).astype(np.int32)
    consts = {
        "x_s": np.array(0.05, np.float32), "x_z": np.array(128, np.uint8),
        "wq": wq, "w_s": w_scale, "w_z": np.zeros(4, np.int8),
        "bq": bq, "b_s": (w_scale * 0.05).astype(np.float32),
        "r_s": np.array(0.5, np.float32), "r_z": np.array(0, np.int8),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xdq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["wq", "w_s", "w_z"], ["w"], name="dq_w", axis=0),
        helper.make_node("DequantizeLinear", ["bq", "b_s"], ["b"], name="dq_b", axis=0),
        helper.make_node("Conv", ["xdq", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "r_s", "r_z"], ["rq"], name="q_out"),
        helper.make_node("DequantizeLinear", ["rq", "r_s", "r_z"], ["y"], name="dq_out"),
    ]
    m = build(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", [1, 4, 5, 5])], [init(k, v) for k, v in consts.items()])
    return m, consts


def test_qdq_becomes_annotations() -> None:
    m, c = _qdq_model()
    g = parse(m)
    # the output quantizer's float input r is read by nothing else: Relu produces y directly
    assert [n.op for n in g.nodes] == ["Conv", "Relu"]
    conv, relu = g.nodes
    assert conv.inputs == ["x"] and relu.outputs == ["y"] and "r" not in g.tensors
    assert g.tensors["x"].quant == QuantAnnotation(np.float32(0.05), 128, 8, False)
    assert g.tensors["x"].quant.axis is None
    assert g.tensors["y"].quant == QuantAnnotation(np.float32(0.5), 0.0, 8, True)
    np.testing.assert_array_equal(conv.params["W"], c["wq"].astype(np.float32) * c["w_s"][:, None, None, None])
    assert conv.params["W"].dtype == np.float32 and conv.params["B"].dtype == np.float32
    wq = conv.param_quant["W"]
    assert (wq.bits, wq.signed, wq.axis, wq.narrow) == (8, True, 0, False)
    np.testing.assert_array_equal(wq.scale, c["w_s"].astype(np.float64))
    bq = conv.param_quant["B"]
    assert (bq.bits, bq.signed) == (32, True) and bq.axis == 0
    # Executed without quantizing activations, on an input already on the input grid the
    # graph differs from onnxruntime only by the output quantizer's rounding.
    x = ((np.random.default_rng(3).integers(0, 256, (1, 2, 5, 5)) - 128) * 0.05).astype(np.float32)
    check_against_ort(g, m.SerializeToString(), {"x": x}, atol=0.25 + 1e-5, min_shape_coverage=0.6)


def test_float_weight_through_q_and_dq_is_fake_quantized() -> None:
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    m = build(nodes, [vi("x", [2, 3])], [vi("y", [2, 4])],
              [init("w", w), init("s", np.array(0.02, np.float32)), init("z", np.array(0, np.int8))])
    g = parse(m)
    (mm,) = g.nodes
    np.testing.assert_allclose(mm.params["B"], np.clip(np.round(w / 0.02), -128, 127) * 0.02, rtol=0, atol=1e-7)
    assert mm.param_quant["B"].bits == 8 and mm.param_quant["B"].signed
    check_against_ort(g, m.SerializeToString(), {"x": np.ones((2, 3), np.float32)})


def test_qdq_on_fanned_out_activation_keeps_float_path() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"]),
        helper.make_node("Add", ["rd", "r"], ["y"]),  # r is also read unquantized
    ]
    m = build(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])],
              [init("s", np.array(0.5, np.float32)), init("z", np.array(0, np.uint8))])
    g = parse(m)
    assert [n.op for n in g.nodes] == ["Relu", "Identity", "Add"]
    assert g.tensors["r"].quant is None and g.tensors["rd"].quant is not None
    assert g.nodes[2].inputs == ["rd", "r"]


# -- QONNX ----------------------------------------------------------------------------------------
def qonnx_fake_quant(x: np.ndarray, scale: np.ndarray, zp: float, bits: int, signed: bool, narrow: bool) -> np.ndarray:
    """Independent restatement of QONNX IntQuant (ROUND mode) for the test."""
    lo = -(2 ** (bits - 1)) + int(narrow) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - int(narrow)
    return ((np.round(np.clip(x / scale + zp, lo, hi)) - zp) * scale).astype(np.float32)


def _qonnx_model(bitwidth: float = 4.0, op: str = "Quant") -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w_scale = np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1, 1)
    q = lambda i, o, s, z, b, **kw: helper.make_node(op, [i, s, z, b], [o], domain=QONNX, **kw)  # noqa: E731
    nodes = [
        q("x", "xq", "a_s", "zero", "eight", signed=0, narrow=0, rounding_mode="ROUND", name="quant_in"),
        q("w", "wq", "w_s", "zero", "bits", signed=1, narrow=1, rounding_mode="ROUND", name="quant_w"),
        helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        q("r", "rq", "a_s", "zero", "eight", signed=0, narrow=0, name="quant_relu"),
        helper.make_node("GlobalAveragePool", ["rq"], ["y"], name="gap"),
    ]
    inits = [init("w", w), init("w_s", w_scale), init("zero", np.array(0.0, np.float32)),
             init("bits", np.array(bitwidth, np.float32)), init("eight", np.array(8.0, np.float32)),
             init("a_s", np.array(0.05, np.float32))]
    m = build(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", [1, 3, 1, 1])], inits,
              extra_opsets=[helper.make_opsetid(QONNX, 1)])
    return m, w, w_scale


@pytest.mark.parametrize("op", ["Quant", "IntQuant"])
def test_qonnx_quant_on_weights_and_activations(op: str) -> None:
    m, w, w_scale = _qonnx_model(op=op)
    g = parse(m)
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "GlobalAveragePool"]
    conv, relu, gap = g.nodes
    # the graph input keeps its name and carries the input quantizer's annotation
    assert conv.inputs == ["x"]
    assert g.tensors["x"].quant == QuantAnnotation(np.float32(0.05), 0.0, 8, False)
    # the activation quantizer's output name survives: Relu now produces it
    assert relu.outputs == ["rq"] and gap.inputs == ["rq"] and "r" not in g.tensors
    # ONNX shape inference stops at the custom-domain Quant; hwmap's op inference fills the rest
    inferred = onnx.shape_inference.infer_shapes(m)
    assert "c" not in {v.name for v in inferred.graph.value_info}
    assert g.tensors["c"].shape == (1, 3, 3, 3) and g.tensors["rq"].shape == (1, 3, 3, 3)
    assert g.tensors["rq"].quant == QuantAnnotation(np.float32(0.05), 0.0, 8, False)
    np.testing.assert_array_equal(conv.params["W"], qonnx_fake_quant(w, w_scale, 0.0, 4, True, True))
    pq = conv.param_quant["W"]
    assert (pq.bits, pq.signed, pq.narrow, pq.axis, pq.qmin, pq.qmax) == (4, True, True, 0, -7, 7)
    np.testing.assert_array_equal(pq.scale, w_scale.reshape(-1).astype(np.float64))
    # the annotation reproduces the stored parameter
    np.testing.assert_array_equal(pq.fake_quantize(w), conv.params["W"])
    if HAVE_EXECUTE:
        from hwmap.execute import run

        x = np.random.default_rng(5).standard_normal((1, 2, 5, 5)).astype(np.float32)
        wf = torch.from_numpy(conv.params["W"])
        ref = torch.relu(nn.functional.conv2d(torch.from_numpy(x), wf)).numpy()
        ref = qonnx_fake_quant(ref, np.float32(0.05), 0.0, 8, False, False).mean(axis=(2, 3), keepdims=True)
        out = run(g, {"x": x})["y"]
        assert out.shape == (1, 3, 1, 1)
        # the graph runs in float (annotations only), so it differs by at most half a step
        np.testing.assert_allclose(out, ref, atol=0.025 + 1e-6)


def test_qonnx_activation_quant_read_elsewhere_keeps_float_path() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Quant", ["r", "s", "z", "b"], ["rq"], domain=QONNX, signed=0, narrow=0, name="qa"),
        helper.make_node("Sub", ["r", "rq"], ["y"]),  # the quantization error: r read unquantized
    ]
    m = build(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])],
              [init("s", np.array(0.25, np.float32)), init("z", np.array(0.0, np.float32)),
               init("b", np.array(4, np.int32))], extra_opsets=[helper.make_opsetid(QONNX, 1)])
    g = parse(m)
    assert [(n.op, n.name, n.inputs, n.outputs) for n in g.nodes] == [
        ("Relu", "Relu_0", ["x"], ["r"]), ("Identity", "qa", ["r"], ["rq"]), ("Sub", "Sub_2", ["r", "rq"], ["y"])]
    assert g.tensors["r"].quant is None
    assert g.tensors["rq"].quant == QuantAnnotation(np.float32(0.25), 0.0, 4, False)


def test_qonnx_rounding_modes_and_errors() -> None:
    m, w, w_scale = _qonnx_model()
    for node in m.graph.node:
        if node.name == "quant_w":
            node.attribute.append(helper.make_attribute("rounding_mode", "FLOOR"))
            del node.attribute[[a.name for a in node.attribute].index("rounding_mode")]
    g = parse(m)
    expect = (np.floor(np.clip(w / w_scale, -7, 7)) * w_scale).astype(np.float32)
    np.testing.assert_array_equal(g.nodes[0].params["W"], expect)

    m, _, _ = _qonnx_model(bitwidth=3.5)
    with pytest.raises(ModelError, match=r"quant_w.*bitwidth must be one integer from 2 to 32, got 3.5$"):
        parse(m)
    m, _, _ = _qonnx_model()
    m.graph.node[0].op_type = "FloatQuant"  # minifloat codes: no integer annotation holds them
    with pytest.raises(UnsupportedOpError, match=r"quant_in \(qonnx.custom_op.general:FloatQuant\)"):
        parse(m)
    m, _, _ = _qonnx_model()
    m.graph.node[0].op_type = "BipolarQuant"
    with pytest.raises(ModelError, match=r"quant_in' \(qonnx.custom_op.general:BipolarQuant\): expects inputs "
                                         r"\(x, scale\)"):
        parse(m)


# -- external data ----------------------------------------------------------------------------------
def _save_external(tmp_path: Path) -> tuple[Path, np.ndarray]:
    w = np.arange(24, dtype=np.float32).reshape(4, 6) / 10
    m = build([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 6])], [init("w", w)])
    d = tmp_path / "model"
    d.mkdir()
    onnx.save_model(m, str(d / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (d / "weights.bin").exists()
    return d / "m.onnx", w


def _relocate(path: Path, location: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())


def test_external_data_inside_the_folder_is_loaded(tmp_path: Path) -> None:
    path, w = _save_external(tmp_path)
    g = hwmap_parse(str(path), ParseOptions())
    assert g is not None
    np.testing.assert_array_equal(g.nodes[0].params["B"], w)
    (path.parent / "sub").mkdir()
    os.replace(path.parent / "weights.bin", path.parent / "sub" / "weights.bin")
    _relocate(path, "sub/weights.bin")
    np.testing.assert_array_equal(hwmap_parse(str(path), ParseOptions()).nodes[0].params["B"], w)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "missing"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, how: str) -> None:
    path, _ = _save_external(tmp_path)
    outside = tmp_path / "outside.bin"
    os.replace(path.parent / "weights.bin", outside)
    if how == "dotdot":
        location = "../outside.bin"
    elif how == "absolute":
        location = str(outside)
    elif how == "symlink":
        location = "link.bin"
        (path.parent / "link.bin").symlink_to(outside)
    else:
        location = "weights.bin"
    _relocate(path, location)
    msg = "not found" if how == "missing" else "outside the model's folder"
    with pytest.raises(ModelError, match=rf"m\.onnx: tensor 'w'.*{location!s}.*{msg}".replace("..", r"\.\.")):
        hwmap_parse(str(path), ParseOptions())
    with pytest.raises(ModelError, match="without its folder"):
        graph_from_onnx(path.read_bytes(), name="m", options=ParseOptions())


# -- unsupported ops and bad files -------------------------------------------------------------------
def test_unsupported_ops_are_all_listed() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("LpNormalization", ["a"], ["b"], name="norm"),
        helper.make_node("Frobnicate", ["b"], ["c"], name="custom1", domain="com.example"),
        helper.make_node("Hardmax", ["c"], ["y"]),
    ]
    m = build(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])],
              extra_opsets=[helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError) as info:
        parse(m)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ONNX model 'm': 3 node(s)")
    assert "norm (LpNormalization), custom1 (com.example:Frobnicate), Hardmax_3 (Hardmax)" in msg


def _unknown_ops_model() -> onnx.ModelProto:
    """conv → relu → Hardmax → Resize (×2) → a custom-domain op → conv → relu, and a side
    branch Hardmax → Sigmoid → a second graph output: ONNX infers the shapes of the
    default-domain ops, not of the custom one nor of what follows it (the last conv)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Hardmax", ["r"], ["h"], name="hm", axis=1),
        helper.make_node("Resize", ["h", "", "scales"], ["u"], name="up", mode="nearest"),
        helper.make_node("Frobnicate", ["u"], ["f"], name="custom", domain="com.example"),
        helper.make_node("Conv", ["f", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
        helper.make_node("Sigmoid", ["h"], ["side"], name="sig"),
    ]
    inits = [init("w", rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
             init("w2", rng.standard_normal((4, 4, 3, 3)).astype(np.float32)),
             init("scales", np.array([1, 1, 2, 2], np.float32))]
    return build(nodes, [vi("x", [1, 2, 6, 6])], [vi("y", [1, 4, 12, 12]), vi("side", [1, 4, 6, 6])], inits,
                 extra_opsets=[helper.make_opsetid("com.example", 1)])


def test_unknown_ops_are_kept_with_allow_unknown() -> None:
    from hwmap.source import require_known, unknown_nodes

    g = parse(_unknown_ops_model(), allow_unknown=True)
    assert [(n.name, n.op) for n in g.nodes] == [
        ("conv", "Conv"), ("relu", "Relu"), ("hm", "Hardmax"), ("up", "Resize"), ("custom", "com.example:Frobnicate"),
        ("conv2", "Conv"), ("relu2", "Relu"), ("sig", "Sigmoid")]
    assert g.node("hm").attrs == {"axis": 1} and g.node("up").attrs["mode"] == "nearest"
    assert g.node("up").params["scales"].tolist() == [1, 1, 2, 2]
    # shapes from ONNX shape inference where it has them
    assert g.tensors["h"].shape == (1, 4, 6, 6) and g.tensors["u"].shape == (1, 4, 12, 12)
    assert g.tensors["y"].shape == (1, 4, 12, 12) and g.tensors["side"].shape == (1, 4, 6, 6)
    unknown = unknown_nodes(g)
    assert [(u.node, u.op, u.cause, u.unshaped) for u in unknown] == [
        ("hm", "Hardmax", "unknown_op", ()), ("up", "Resize", "unknown_op", ()),
        ("custom", "com.example:Frobnicate", "unknown_op", ("f",)),
        ("conv2", "Conv", "unknown_shape", ("c2",)), ("relu2", "Relu", "unknown_shape", ())]
    assert unknown[0].describe() == "node 'hm' (Hardmax): op 'Hardmax' is not known to hwmap"
    assert unknown[3].reason == "the shape of its input 'f' is unknown (it follows an unknown op)"
    # such a graph never passes as a normal one: validate, the executor and require_known name the op
    with pytest.raises(UnsupportedOpError, match=r"^node 'hm' \(Hardmax\): op 'Hardmax' is not known"):
        g.validate()
    with pytest.raises(UnsupportedOpError, match=r"^graph 'm': compiling needs every op known to hwmap; 3 node\(s\) "
                                                 r"use ops hwmap does not support: hm \(Hardmax\), up \(Resize\), "
                                                 r"custom \(com\.example:Frobnicate\) \(and 2 node\(s\) after them"):
        require_known(g, "compiling")
    if HAVE_EXECUTE:
        from hwmap.execute import run

        with pytest.raises(UnsupportedOpError, match="'Hardmax' is not known"):
            run(g, {"x": np.zeros((1, 2, 6, 6), np.float32)})
    # without the option: today's error, every offender at once
    with pytest.raises(UnsupportedOpError, match=r"3 node\(s\) use ops hwmap does not support"):
        parse(_unknown_ops_model())


def test_a_graph_with_unknown_nodes_is_still_validated() -> None:
    from hwmap import GraphError
    from hwmap.source import validate_known

    g = parse(_unknown_ops_model(), allow_unknown=True)
    assert validate_known(g) is g
    bad = g.copy()
    bad.tensors["r"].shape = (1, 4, 5, 5)  # a known node's output no longer matches its op
    with pytest.raises(GraphError, match=r"node 'relu' \(Relu\): shape mismatch on output 'r'"):
        validate_known(bad)
    bad = g.copy()
    bad.node("custom").inputs = ["nowhere"]
    with pytest.raises(GraphError, match=r"node 'custom' \(com\.example:Frobnicate\): input 'nowhere' is dangling"):
        validate_known(bad)
    bad = g.copy()
    bad.meta["unknown_nodes"] = [*bad.meta["unknown_nodes"], {"node": "ghost", "op": "X", "reason": "?"}]
    with pytest.raises(GraphError, match="does not have: \\['ghost'\\]"):
        validate_known(bad)


def test_a_same_padded_conv_after_an_unknown_op_is_unknown_not_an_error() -> None:
    nodes = [helper.make_node("Frobnicate", ["x"], ["f"], name="custom", domain="com.example"),
             helper.make_node("Conv", ["f", "w"], ["y"], name="conv", kernel_shape=[3, 3], auto_pad="SAME_UPPER")]
    m = build(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", [1, 4, 5, 5])],
              [init("w", np.ones((4, 2, 3, 3), np.float32))], extra_opsets=[helper.make_opsetid("com.example", 1)])
    g = parse(m, allow_unknown=True)
    from hwmap.source import unknown_nodes

    assert [(u.node, u.cause) for u in unknown_nodes(g)] == [("custom", "unknown_op"), ("conv", "unknown_shape")]
    assert g.node("conv").attrs["auto_pad"] == "SAME_UPPER" and g.tensors["y"].shape == (1, 4, 5, 5)


def test_subgraph_ops_are_unknown_with_their_reason() -> None:
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["b"])], "branch", [], [vi("b", [1, 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Cast", ["s"], ["cond"], name="cast", to=TensorProto.BOOL),
             helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=branch, else_branch=branch)]
    m = build(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])])
    with pytest.raises(UnsupportedOpError, match=r"branchy \(If: subgraph attributes\)"):
        parse(m)
    from hwmap.source import unknown_nodes

    (u,) = unknown_nodes(parse(m, allow_unknown=True))
    assert (u.node, u.op, u.cause) == ("branchy", "If", "unknown_op") and "subgraph attributes" in u.reason


def test_symbolic_non_batch_dimension_is_named() -> None:
    m = build([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["n", "h"])], [vi("y", ["n", "h"])])
    with pytest.raises(ModelError, match=r"graph input 'x' has symbolic dimension 1 \(h\)"):
        parse(m)
    g = parse(m, input_shape=(2, 7))
    assert g.tensors["y"].shape == (2, 7)
    with pytest.raises(ModelError, match="does not match"):
        parse(m, input_shape=(2, 7, 1))


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff" * 5, b"not onnx at all\n"])
def test_unreadable_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError) as info:
        hwmap_parse(str(p), ParseOptions())
    assert str(info.value).startswith(str(p) + ": ") and "\n" not in str(info.value)


def test_other_protobufs_and_checker_failures_are_model_errors(tmp_path: Path) -> None:
    p = tmp_path / "tensor.onnx"
    p.write_bytes(init("t", np.ones((2, 2), np.float32)).SerializeToString())
    with pytest.raises(ModelError, match="tensor.onnx"):
        hwmap_parse(str(p), ParseOptions())
    m = build([helper.make_node("Relu", ["nowhere"], ["y"])], [vi("x", [1])], [vi("y", [1])])
    with pytest.raises(ModelError, match="ONNX checker rejected the model"):
        parse(m)
    m = build([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1])], [vi("y", [1])])
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ModelError):
        parse(m)
