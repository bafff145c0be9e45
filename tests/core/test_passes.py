"""Graph passes: batch-norm folding, compute/post-op fusion, constant folding.

References: onnxruntime runs the original ONNX model; hwmap.execute runs the rewritten graph.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwmap import Graph, GraphError, ParseOptions
from hwmap.execute import run
from hwmap.frontends.onnx import graph_from_onnx
from hwmap.passes import (
    FoldBatchNorm,
    FoldConstants,
    FuseComputeWithPostOps,
    run_passes,
)

HERE = Path(__file__).parent
RNG = np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_rng() -> None:
    """Each test draws the same numbers whether it runs alone or with the others."""
    global RNG
    RNG = np.random.default_rng(1234)


# -- helpers ---------------------------------------------------------------------------------

def _torch_onnx(factory: str, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch, **kw: object) -> bytes:
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(HERE))
    import torch_models

    model = getattr(torch_models, factory)().eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(shape),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], **kw)
    return buf.getvalue()


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray]) -> bytes:
    g = helper.make_graph(nodes, "t", inputs, outputs,
                          [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _vi(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _ort(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)


def _snapshot(g: Graph) -> tuple[str, dict[str, bytes]]:
    return json.dumps(g.to_json(), sort_keys=True), {k: v.tobytes() for k, v in g.arrays().items()}


def _apply(p, g: Graph) -> tuple[Graph, bool]:
    """Apply ``p`` and check it left its input untouched and gave a valid graph."""
    before = _snapshot(g)
    out, changed = p.apply(g)
    assert _snapshot(g) == before, f"{p.name} mutated its input"
    assert out is not g
    assert out.outputs == g.outputs
    out.validate()
    return out, changed


def _ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


# -- batch-norm folding ----------------------------------------------------------------------

@pytest.mark.parametrize("factory,shape", [("small_cnn", (2, 3, 8, 8)), ("conv_bn_grouped", (2, 4, 5, 5))])
def test_fold_bn_into_torch_conv(factory: str, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    # PRESERVE keeps the BN node (EVAL would let the exporter fold it itself).
    model = _torch_onnx(factory, shape, monkeypatch, training=torch.onnx.TrainingMode.PRESERVE,
                        do_constant_folding=False)
    g = graph_from_onnx(model, name=factory, options=ParseOptions(batch=shape[0]))
    assert "BatchNormalization" in _ops(g)
    folded, changed = _apply(FoldBatchNorm(), g)
    assert changed and "BatchNormalization" not in _ops(folded)
    conv = next(n for n in folded.nodes if n.op == "Conv")
    assert "B" in conv.params  # a bias appears even where the conv had none
    assert not np.array_equal(conv.params["W"], next(n for n in g.nodes if n.op == "Conv").params["W"])
    x = RNG.normal(size=shape).astype(np.float32)
    ref = _ort(model, {"input": x})[0]
    np.testing.assert_allclose(run(folded, {"input": x})["output"], ref, atol=1e-5)


@pytest.mark.parametrize("trans_b,with_c,beta", [(1, True, 1.0), (0, True, 0.5), (0, False, 1.0)])
def test_fold_bn_into_gemm(trans_b: int, with_c: bool, beta: float) -> None:
    k, n = 6, 4
    w = RNG.normal(size=(n, k) if trans_b else (k, n))
    inits = {"W": w, "gamma": RNG.uniform(0.5, 1.5, n), "beta": RNG.normal(size=n),
             "mean": RNG.normal(size=n), "var": RNG.uniform(0.5, 2.0, n)}
    if with_c:
        inits["C"] = RNG.normal(size=n)
    gemm = helper.make_node("Gemm", ["x", "W"] + (["C"] if with_c else []), ["h"], transB=trans_b, beta=beta)
    bn = helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)
    model = _model([gemm, bn], [_vi("x", (3, k))], [_vi("y", (3, n))], inits)
    g = graph_from_onnx(model, name="gemm_bn", options=ParseOptions())
    folded, changed = _apply(FoldBatchNorm(), g)
    assert changed and _ops(folded) == ["Gemm"] and folded.outputs == ["y"]
    assert folded.nodes[0].attrs["beta"] == 1.0
    x = RNG.normal(size=(3, k)).astype(np.float32)
    np.testing.assert_allclose(run(folded, {"x": x})["y"], _ort(model, {"x": x})[0], atol=1e-5)


def test_bn_not_folded_when_conv_output_is_shared() -> None:
    w = RNG.normal(size=(2, 1, 3, 3))
    stats = {"gamma": np.ones(2), "beta": np.zeros(2), "mean": np.zeros(2), "var": np.ones(2)}
    conv = helper.make_node("Conv", ["x", "W"], ["h"], pads=[1, 1, 1, 1])
    bn = helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"])
    relu = helper.make_node("Relu", ["y"], ["z"])
    bn2 = helper.make_node("BatchNormalization", ["z", "gamma", "beta", "mean", "var"], ["u"])
    shape = (1, 2, 4, 4)
    # h is also a graph output: folding would change it. u's BN follows a Relu: nothing to fold into.
    model = _model([conv, bn, relu, bn2], [_vi("x", (1, 1, 4, 4))], [_vi("h", shape), _vi("u", shape)],
                   {"W": w, **stats})
    g = graph_from_onnx(model, name="shared", options=ParseOptions())
    out, changed = _apply(FoldBatchNorm(), g)
    assert not changed and _ops(out) == ["Conv", "BatchNormalization", "Relu", "BatchNormalization"]


# -- fusion ----------------------------------------------------------------------------------

def _conv_chain_model() -> bytes:
    """Conv → Mul(c) → Add(c) → Sub(c − ·) → Div(c) → Relu → Clip: the Fig. 3.11 pattern."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "m"], ["t1"]),
        helper.make_node("Add", ["a", "t1"], ["t2"]),
        helper.make_node("Sub", ["s", "t2"], ["t3"]),
        helper.make_node("Div", ["t3", "d"], ["t4"]),
        helper.make_node("Relu", ["t4"], ["t5"]),
        helper.make_node("Clip", ["t5", "lo", "hi"], ["y"]),
    ]
    inits = {"W": RNG.normal(size=(3, 2, 3, 3)), "B": RNG.normal(size=3), "m": RNG.uniform(0.5, 2, (3, 1, 1)),
             "a": RNG.normal(size=(3, 1, 1)), "s": np.array(0.25), "d": np.array(1.5),
             "lo": np.array(0.0), "hi": np.array(1.0)}
    return _model(nodes, [_vi("x", (1, 2, 5, 5))], [_vi("y", (1, 3, 5, 5))], inits)


def test_fuse_conv_with_constant_post_ops() -> None:
    model = _conv_chain_model()
    g = graph_from_onnx(model, name="chain", options=ParseOptions())
    fused, changed = _apply(FuseComputeWithPostOps(), g)
    assert changed and _ops(fused) == ["FusedConv"]
    node = fused.nodes[0]
    assert [f.op for f in node.fused] == ["Conv", "Mul", "Add", "Sub", "Div", "Relu", "Clip"]
    assert [f.name for f in node.fused] == [n.name for n in g.nodes]
    assert node.inputs == ["x"] and node.outputs == ["y"]
    np.testing.assert_array_equal(node.params["W"], g.nodes[0].params["W"])
    assert node.attrs == g.nodes[0].attrs
    x = RNG.normal(size=(1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(fused, {"x": x})["y"], _ort(model, {"x": x})[0], atol=1e-5)


def test_fusion_options_restrict_the_chain() -> None:
    g = graph_from_onnx(_conv_chain_model(), name="chain", options=ParseOptions())
    two, _ = _apply(FuseComputeWithPostOps(max_post_ops=2), g)
    assert _ops(two) == ["FusedConv", "Sub", "Div", "Relu", "Clip"]
    assert [f.op for f in two.nodes[0].fused] == ["Conv", "Mul", "Add"]
    acts_only, changed = _apply(FuseComputeWithPostOps(post_ops=["Relu", "Clip"]), g)
    assert not changed and _ops(acts_only) == _ops(g)  # the Mul right after the Conv is not allowed


def test_fuse_gemm_chains_of_torch_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _torch_onnx("mlp", (2, 6), monkeypatch)
    g = graph_from_onnx(model, name="mlp", options=ParseOptions(batch=2))
    fused, changed = _apply(FuseComputeWithPostOps(), g)
    assert changed and _ops(fused) == ["FusedGemm", "FusedGemm"]
    assert [[f.op for f in n.fused] for n in fused.nodes] == [["Gemm", "Relu"], ["Gemm", "Sigmoid"]]
    x = RNG.normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_allclose(run(fused, {"input": x})["output"], _ort(model, {"input": x})[0], atol=1e-5)


def test_residual_add_fused_only_with_dynamic_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _torch_onnx("residual", (1, 4, 6, 6), monkeypatch)
    g = graph_from_onnx(model, name="res", options=ParseOptions())
    assert _ops(g) == ["Conv", "Relu", "Conv", "Add", "Relu"]
    strict, _ = _apply(FuseComputeWithPostOps(), g)
    assert _ops(strict) == ["FusedConv", "Conv", "Add", "Relu"]
    loose, _ = _apply(FuseComputeWithPostOps(allow_dynamic_operands=True), g)
    assert _ops(loose) == ["FusedConv", "FusedConv"]
    second = loose.nodes[1]
    assert [f.op for f in second.fused] == ["Conv", "Add", "Relu"]
    assert second.inputs == [loose.nodes[0].outputs[0], "input"]  # compute input, then the bypass
    x = RNG.normal(size=(1, 4, 6, 6)).astype(np.float32)
    ref = _ort(model, {"input": x})[0]
    for graph in (strict, loose):
        np.testing.assert_allclose(run(graph, {"input": x})["output"], ref, atol=1e-5)


def test_fusion_stops_at_shared_and_output_tensors() -> None:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["r", "W2"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["y"])]
    model = _model(nodes, [_vi("x", (2, 3))], [_vi("t", (2, 4)), _vi("h2", (2, 2)), _vi("y", (2, 2))],
                   {"W": RNG.normal(size=(3, 4)), "W2": RNG.normal(size=(4, 2))})
    g = graph_from_onnx(model, name="shared", options=ParseOptions())
    out, changed = _apply(FuseComputeWithPostOps(), g)
    # h has two readers, h2 is a graph output: nothing may disappear into a fused node.
    assert not changed and _ops(out) == _ops(g)


# -- constant folding ------------------------------------------------------------------------

def test_fold_shape_gather_concat_reshape_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    # A dynamic batch axis and no exporter folding: torch emits Shape → Gather → Unsqueeze
    # → Concat → Reshape for x.view(x.size(0), -1).
    model = _torch_onnx("small_cnn", (1, 3, 8, 8), monkeypatch, do_constant_folding=False,
                        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    g = graph_from_onnx(model, name="cnn", options=ParseOptions(batch=2))
    assert {"Shape", "Gather", "Concat"} <= set(_ops(g))
    folded, changed = _apply(FoldConstants(), g)
    assert changed
    assert _ops(folded) == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Reshape", "Gemm"]
    reshape = next(n for n in folded.nodes if n.op == "Reshape")
    assert reshape.params["shape"].tolist() == [2, -1] and len(reshape.inputs) == 1
    assert set(folded.tensors) < set(g.tensors)  # the shape tensors are gone
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(folded, {"input": x})["output"], _ort(model, {"input": x})[0], atol=1e-5)


def test_constant_operand_of_variadic_op_stays_a_constant_node() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["r", "k"], ["y"], axis=1)]
    model = _model(nodes, [_vi("x", (1, 2))], [_vi("y", (1, 5))], {"k": RNG.normal(size=(1, 3))})
    g = graph_from_onnx(model, name="cat", options=ParseOptions())
    assert "Constant" in _ops(g)
    out, changed = _apply(FoldConstants(), g)
    assert not changed and _ops(out) == _ops(g)


def test_constant_fed_into_non_variadic_slot_becomes_a_param() -> None:
    g = graph_from_onnx(_conv_chain_model(), name="chain", options=ParseOptions())
    # Rebuild the Mul's constant as a Constant node feeding it, as a hand-written graph might.
    g = g.copy()
    mul = next(n for n in g.nodes if n.op == "Mul")
    from hwmap import Node, Tensor

    value = mul.params.pop("B")
    g.tensors["m_const"] = Tensor("m_const", value.shape)
    mul.inputs.append("m_const")
    g.nodes.insert(0, Node("m_const_node", "Constant", [], ["m_const"], params={"value": value}))
    g.validate()
    out, changed = _apply(FoldConstants(), g)
    assert changed and "Constant" not in _ops(out) and "m_const" not in out.tensors
    np.testing.assert_array_equal(out.node(mul.name).params["B"], value)
    x = RNG.normal(size=(1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})["y"], run(g, {"x": x})["y"])


# -- the driver ------------------------------------------------------------------------------

def test_run_passes_reaches_a_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    model = _torch_onnx("small_cnn", (1, 3, 8, 8), monkeypatch, do_constant_folding=False,
                        training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes={"input": {0: "N"}})
    g = graph_from_onnx(model, name="cnn", options=ParseOptions())
    before = _snapshot(g)
    passes = [FuseComputeWithPostOps(), FoldBatchNorm(), FoldConstants()]  # fusion first on purpose
    out = run_passes(g, passes)
    assert _snapshot(g) == before
    assert _ops(out) == ["FusedConv", "MaxPool", "Reshape", "Gemm"]
    assert [f.op for f in out.nodes[0].fused] == ["Conv", "Relu"]
    for p in passes:
        assert p.apply(out)[1] is False
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"input": x})["output"], _ort(model, {"input": x})[0], atol=1e-5)


def test_run_passes_names_passes_that_never_settle() -> None:
    class Flip:
        name = "flip"

        def apply(self, graph: Graph) -> tuple[Graph, bool]:
            g = graph.copy()
            g.meta["flip"] = not g.meta.get("flip", False)
            return g, True

    g = graph_from_onnx(_conv_chain_model(), name="chain", options=ParseOptions())
    with pytest.raises(GraphError, match="fixed point.*flip"):
        run_passes(g, [FoldConstants(), Flip()], max_iter=3)


def test_fusion_rejects_a_zero_chain_length() -> None:
    with pytest.raises(ValueError, match="max_post_ops"):
        FuseComputeWithPostOps(max_post_ops=0)
