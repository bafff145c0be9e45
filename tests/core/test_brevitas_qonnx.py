"""Brevitas (Xilinx's quantization-aware training library, a peer) exports QONNX that hwmap
reads: the annotations equal brevitas's own quantizer parameters, the weights brevitas's
quantized weights bit for bit, and hwmap's quantized execution equals brevitas's torch output
and the qonnx package's executor exactly (the network ends in an 8-bit quantizer, so the
float32 rounding of differently ordered sums does not reach the output on these samples).
Skipped where brevitas (the test extra) is not installed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hwmap import ParseOptions, execute
from hwmap.frontends.onnx import graph_from_onnx

qnn = pytest.importorskip("brevitas.nn")
brevitas_export = pytest.importorskip("brevitas.export")
pytest.importorskip("onnxoptimizer")  # brevitas's ONNX export needs it


class BrevitasNet(torch.nn.Module):
    """QuantIdentity (8-bit input) → QuantConv2d (4-bit weights) → QuantReLU (4-bit) →
    QuantLinear (4-bit weights) → QuantIdentity (8-bit output)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(1, 4, 3, padding=1, weight_bit_width=4, bias=True)
        self.relu = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(4 * 8 * 8, 10, weight_bit_width=4, bias=True)
        self.out = qnn.QuantIdentity(bit_width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(self.inp(x)))
        return self.out(self.fc(y.flatten(1)))


@pytest.fixture(scope="module")
def trained() -> BrevitasNet:
    torch.manual_seed(0)
    m = BrevitasNet()
    m.train()
    with torch.no_grad():  # let the activation quantizers' statistics settle on data
        for _ in range(5):
            m(torch.randn(32, 1, 8, 8))
    return m.eval()


@pytest.mark.parametrize("dynamo", [False, True])
def test_brevitas_qonnx_is_read_with_brevitas_parameters(trained: BrevitasNet, dynamo: bool, tmp_path: Path) -> None:
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        brevitas_export.export_qonnx(trained, input_t=x, export_path=str(path), dynamo=dynamo)
    g = graph_from_onnx(path.read_bytes(), name="brevitas", options=ParseOptions())
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Reshape", "Gemm"] or \
        [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    conv, relu, _, gemm = g.nodes

    # annotations: brevitas's scales, bit widths and signedness
    with torch.no_grad():
        qw = trained.conv.quant_weight()
        assert conv.param_quant["W"].bits == int(qw.bit_width) == 4
        assert conv.param_quant["W"].signed and conv.param_quant["W"].narrow  # brevitas's default: narrow range
        np.testing.assert_array_equal(conv.params["W"], qw.value.numpy())  # quantized weights, bit for bit
        np.testing.assert_allclose(conv.param_quant["W"].scale, qw.scale.numpy().reshape(-1), rtol=1e-7)
        qf = trained.fc.quant_weight()
        np.testing.assert_array_equal(gemm.params["B"].T if gemm.attrs.get("transB", 0) == 0 else gemm.params["B"],
                                      qf.value.numpy().T if gemm.attrs.get("transB", 0) == 0 else qf.value.numpy())
        act = g.tensors[relu.outputs[0]].quant
        assert act is not None and (act.bits, act.signed) == (4, False)
        assert int(trained.relu(torch.zeros(1, 4, 8, 8)).bit_width) == 4
        np.testing.assert_allclose(act.scale, float(trained.relu(torch.zeros(1, 4, 8, 8)).scale), rtol=1e-7)
        inp = g.tensors[g.inputs[0]].quant
        assert inp is not None and (inp.bits, inp.signed) == (8, True)
        np.testing.assert_allclose(inp.scale, float(trained.inp(torch.zeros(1, 1, 8, 8)).scale), rtol=1e-7)

        ref = trained(x)
        ref = (ref.value if hasattr(ref, "value") else ref).numpy()
    ours = execute.run(g, {g.inputs[0]: x.numpy()}, quantized=True)[g.outputs[0]]
    # float32 accumulation order differs from torch's: equal to float rounding, and on the
    # output grid the codes agree except where a sum lands within rounding of a half step
    # the output quantizer puts both on the same 8-bit grid: equal, bit for bit
    np.testing.assert_array_equal(ours, ref)
    out_q = g.tensors[g.outputs[0]].quant
    assert out_q is not None and (out_q.bits, out_q.signed) == (8, True)

    qonnx_exec = pytest.importorskip("qonnx.core.onnx_exec")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(str(path)).transform(InferShapes())
    theirs = qonnx_exec.execute_onnx(wrapped, {wrapped.graph.input[0].name: x.numpy()})[wrapped.graph.output[0].name]
    np.testing.assert_array_equal(ours, theirs)


class BinaryNet(torch.nn.Module):
    """A binarized MLP: bipolar (±1) inputs, weights and hidden activations, exported by
    brevitas as QONNX BipolarQuant nodes. The weight scale is a power of two (0.125), so the
    sums are exact in float32 and a pre-activation of exactly zero binarizes the same way
    (+1) in every engine; with a scale like 0.1 a zero sum may come out as ±1e-8 in one
    engine and exactly 0 in another, and the sign differs."""

    def __init__(self) -> None:
        super().__init__()
        from brevitas.quant import SignedBinaryActPerTensorConst as Act
        from brevitas.quant import SignedBinaryWeightPerTensorConst as Weight

        self.inp = qnn.QuantIdentity(act_quant=Act, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(16, 12, bias=False, weight_quant=Weight, weight_scaling_const=0.125)
        self.act = qnn.QuantIdentity(act_quant=Act, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(12, 4, bias=False, weight_quant=Weight, weight_scaling_const=0.125)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.inp(x))))


def test_brevitas_binary_network_reads_as_bipolar_annotations(tmp_path: Path) -> None:
    torch.manual_seed(2)
    m = BinaryNet().eval()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "binary.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        brevitas_export.export_qonnx(m, input_t=x, export_path=str(path), dynamo=False)
    import onnx

    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("BipolarQuant") == 4
    g = graph_from_onnx(path.read_bytes(), name="binary", options=ParseOptions())
    quants = [t.quant for t in g.tensors.values() if t.quant is not None]
    assert len(quants) == 2 and all(q.bipolar and q.bits == 1 and float(q.scale) == 1.0 for q in quants)
    weights = [(q, n.params[k]) for n in g.nodes for k, q in n.param_quant.items()]
    assert len(weights) == 2
    with torch.no_grad():
        for (q, w), layer in zip(weights, (m.fc1, m.fc2)):
            assert q.bipolar and float(q.scale) == 0.125
            np.testing.assert_array_equal(np.sort(w.ravel()), np.sort(layer.quant_weight().value.numpy().ravel()))
        ref = m(x)
        ref = (ref.value if hasattr(ref, "value") else ref).numpy()
    ours = execute.run(g, {g.inputs[0]: x.numpy()}, quantized=True)[g.outputs[0]]
    np.testing.assert_array_equal(ours, ref)
    # round trip through hwmap's own graph format keeps the bipolar annotations
    g.save(tmp_path / "saved")
    from hwmap import Graph

    again = Graph.load(tmp_path / "saved")
    np.testing.assert_array_equal(execute.run(again, {g.inputs[0]: x.numpy()}, quantized=True)[g.outputs[0]], ref)


class PoolNet(torch.nn.Module):
    """QuantIdentity (8 bit) → QuantReLU (4 bit) → TruncAvgPool2d (4 bit): brevitas exports the
    pool as AveragePool followed by QONNX Trunc (version 2, rounding ROUND)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.relu = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.pool = qnn.TruncAvgPool2d(kernel_size=2, stride=2, bit_width=4, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.inp(x)))


def test_brevitas_trunc_avg_pool_reads_as_a_requantizing_annotation(tmp_path: Path) -> None:
    torch.manual_seed(4)
    m = PoolNet()
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(8, 2, 4, 4))
    m.eval()
    x = torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "pool.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        brevitas_export.export_qonnx(m, input_t=x, export_path=str(path), dynamo=False)
    import onnx

    trunc = [nd for nd in onnx.load(str(path)).graph.node if nd.op_type == "Trunc"]
    assert len(trunc) == 1 and len(trunc[0].input) == 6
    g = graph_from_onnx(path.read_bytes(), name="pool", options=ParseOptions())
    assert [n.op for n in g.nodes] == ["Relu", "AveragePool"]
    out = g.tensors[g.nodes[1].outputs[0]].quant
    with torch.no_grad():
        relu_scale = float(m.relu(m.inp(torch.zeros(1, 2, 4, 4))).scale)
    # the pool's sums, on codes of a quarter of the ReLU's scale, requantized to 4 bits at its scale
    assert out is not None and (out.bits, out.signed) == (4, False) and out.input_scale is not None
    assert float(out.scale) == pytest.approx(relu_scale, rel=1e-7) and float(out.input_scale) * 4 == float(out.scale)
    with torch.no_grad():
        ref = m(x).numpy()
    ours = execute.run(g, {g.inputs[0]: x.numpy()}, quantized=True)[g.outputs[0]]
    np.testing.assert_array_equal(ours, ref)

    qonnx_exec = pytest.importorskip("qonnx.core.onnx_exec")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(str(path)).transform(InferShapes())
    theirs = qonnx_exec.execute_onnx(wrapped, {wrapped.graph.input[0].name: x.numpy()})[wrapped.graph.output[0].name]
    np.testing.assert_array_equal(ours, theirs)
