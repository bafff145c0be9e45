"""The sparsity meters (hwmap.sparsity) against counts made independently: onnxruntime's
activations, torch's unfold for the MACs whose operand is zero, and constructed sequences
whose temporal sparsity is known."""

from __future__ import annotations

import numpy as np
import pytest

import hwmap
from hwmap import DataError
from hwmap.sparsity import ACTIVITY_KEY, SparsityMeasurement, from_activity, measure


def _ort_activations(n: int, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from hwmap.zoo import load_onnx

    model = load_onnx("digits_cnn", (n, 1, 8, 8))
    for t in names:
        if t not in [o.name for o in model.graph.output]:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    out["input"] = x
    return out


def test_spatial_and_temporal_sparsity_match_onnxruntime(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    n, bits = 48, 4
    m = measure(digits_cnn, digits_x[:n], act_bits=bits)
    ref = _ort_activations(n, list(m.tensors), digits_x[:n])
    for t, s in m.tensors.items():
        y = ref[t].reshape(n, -1).astype(np.float64)
        assert s.frames == n and s.elements == y.shape[1] and s.bits == bits
        assert s.zeros == pytest.approx(np.mean(y == 0), abs=1e-12), t
        # the documented codes: step = max|y| / (2^bits - 1) (never negative) or / (2^(bits-1) - 1)
        step = np.abs(y).max() / ((2 ** (bits - 1) - 1) if (y < 0).any() else (2**bits - 1))
        codes = np.round(y / step)
        # float32 sums may differ in the last bit between engines: a code may flip at a half step
        assert s.unchanged == pytest.approx(np.mean(codes[1:] == codes[:-1]), abs=0.01), t


def test_zero_operand_macs_match_torch_unfold(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    """Each Conv MAC reads one input element of one window (padding included): count the
    zero ones with torch's unfold, the windows every output channel of a group sees."""
    torch = pytest.importorskip("torch")
    n = 20
    m = measure(digits_cnn, digits_x[:n])
    ref = _ort_activations(n, [nd.inputs[0] for nd in digits_cnn.nodes], digits_x[:n])
    for node in digits_cnn.nodes:
        if node.op == "Conv":
            w = node.params["W"]
            x = torch.from_numpy(np.ascontiguousarray(ref[node.inputs[0]], dtype=np.float32))
            pads = node.attrs.get("pads", [0] * 4)
            assert pads[0] == pads[2] and pads[1] == pads[3]
            cols = torch.nn.functional.unfold(x, tuple(w.shape[2:]), dilation=tuple(node.attrs.get("dilations", [1, 1])),
                                              padding=(pads[0], pads[1]), stride=tuple(node.attrs.get("strides", [1, 1])))
            assert int(node.attrs.get("group", 1)) == 1
            expect = float((cols == 0).double().mean())  # every output channel reads every column once
        elif node.op == "Gemm":
            expect = float(np.mean(ref[node.inputs[0]] == 0))
        else:
            assert node.name not in m.nodes
            continue
        assert m.nodes[node.name].zero_operand_macs == pytest.approx(expect, abs=1e-12), node.name
        assert m.nodes[node.name].input == node.inputs[0]


def test_depthwise_and_strided_convolutions_count_their_own_windows() -> None:
    """A depthwise (group = channels), strided, padded conv: the operand fraction equals a
    brute-force loop over its outputs and windows."""
    from hwmap.graph import Graph, Node, Tensor

    rng = np.random.default_rng(3)
    g = Graph("dw", ["x"], ["y"], [Node("dw", "Conv", ["x"], ["y"], {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                                   "kernel_shape": [3, 3]},
                                        {"W": rng.standard_normal((6, 1, 3, 3)).astype(np.float32)})],
              {"x": Tensor("x", (1, 3, 7, 7), "float32"), "y": Tensor("y", (1, 6, 4, 4), "float32")})
    x = rng.standard_normal((5, 3, 7, 7)).astype(np.float32)
    x[x < 0.3] = 0
    m = measure(g, x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    zero = total = 0
    for c_out in range(6):
        c_in = c_out // 2
        for i in range(4):
            for j in range(4):
                win = xp[:, c_in, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                zero += int(np.count_nonzero(win == 0))
                total += win.size
    assert m.nodes["dw"].zero_operand_macs == pytest.approx(zero / total, abs=1e-12)


def test_sequences_compare_within_each_sequence(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    """Data (N, T, ...) for a static graph: N sequences of T frames; a sequence that holds
    still is fully unchanged however much the sequences differ from each other."""
    n, t = 4, 5
    still = np.repeat(digits_x[:n, None], t, axis=1)  # (N, T, 1, 8, 8): each sequence one image
    m = measure(digits_cnn, still)
    assert m.layout == "sequences" and m.samples == n
    for s in m.tensors.values():
        assert s.unchanged == 1.0 and s.frames == n * t
    # a change-driven implementation computes each sequence's first frame in full (but never
    # the convolutions' zero padding, which counts as unchanged)
    assert m.nodes["fc"].unchanged_operand_macs == pytest.approx((t - 1) / t, abs=1e-12)
    assert all(s.unchanged_operand_macs >= (t - 1) / t for s in m.nodes.values())
    moving = measure(digits_cnn, digits_x[:n * t].reshape(n, t, 1, 8, 8))
    assert all(s.unchanged is not None and s.unchanged < 1.0 for s in moving.tensors.values())
    # the same frames as one long sequence of samples compare across image boundaries too
    flat = measure(digits_cnn, digits_x[:n * t])
    assert flat.layout == "samples" and flat.tensors["input"].frames == n * t


def test_fewer_code_bits_leave_more_unchanged(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    coarse = measure(digits_cnn, digits_x[:32], act_bits=2)
    fine = measure(digits_cnn, digits_x[:32], act_bits=8)
    exact = measure(digits_cnn, digits_x[:32], act_bits=None)
    for t in fine.tensors:
        assert coarse.tensors[t].unchanged >= fine.tensors[t].unchanged >= exact.tensors[t].unchanged
    assert exact.tensors["relu1"].bits is None


def test_quantized_graph_compares_its_own_codes(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    """A tensor with an annotation is compared on the annotation's codes, not on act_bits."""
    from hwmap.graph import QuantAnnotation

    g = digits_cnn.copy()
    q = QuantAnnotation(np.float64(0.5), 0.0, 4, False)
    g.tensors["relu1"].quant = q
    m = measure(g, digits_x[:16], quantized=True, act_bits=8)
    assert m.tensors["relu1"].bits == 4 and m.tensors["relu2"].bits == 8
    y = hwmap.execute.run(g, {"input": digits_x[:16]}, quantized=True, collect=True)["relu1"].reshape(16, -1)
    codes = q.quantize(y)
    assert m.tensors["relu1"].unchanged == pytest.approx(np.mean(codes[1:] == codes[:-1]), abs=1e-12)


def test_measurement_travels_in_activity(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    m = measure(digits_cnn, digits_x[:4])
    assert from_activity({ACTIVITY_KEY: m}) is m
    assert from_activity(None) is None and from_activity({ACTIVITY_KEY: {"zeros": 1}}) is None
    j = m.to_json()
    assert list(j) == ["samples", "layout", "quantized", "act_bits", "tensors", "nodes"]
    assert isinstance(m, SparsityMeasurement) and j["nodes"]["conv1"]["input"] == "input"


def test_bad_data_is_one_line(digits_cnn: hwmap.Graph) -> None:
    with pytest.raises(DataError, match=r"data must be \(N, 1, 8, 8\) or sequences \(N, T, 1, 8, 8\)"):
        measure(digits_cnn, np.zeros((3, 64), np.float32))
    with pytest.raises(DataError, match="act_bits must be from 1 to 64"):
        measure(digits_cnn, np.zeros((3, 1, 8, 8), np.float32), act_bits=0)
