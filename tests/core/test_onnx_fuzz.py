"""Fuzzing the ONNX frontend: random bytes, truncations and byte flips of a valid model file
either parse or raise one of hwmap's own errors (with a one-line message naming the file);
no onnx, protobuf or numpy exception escapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hwmap import Graph, HwmapError, ParseOptions
from hwmap.frontends.onnx import hwmap_parse

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_model() -> bytes:
    """A small model touching the frontend's main paths: constants into params, a Constant
    node, auto_pad, a QDQ pair, a weight DequantizeLinear, Identity removal, Concat."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-8, 8, (3, 2, 3, 3)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "ws"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "z"),
        numpy_helper.from_array(rng.standard_normal((12, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0),
        helper.make_node("Conv", ["xd", "w"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2], name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Identity", ["r"], ["ri"]),
        helper.make_node("MaxPool", ["ri"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, 12], np.int64))),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Concat", ["m", "m"], ["y"], axis=1),
    ]
    g = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


VALID = _valid_model()


def _parse(tmp_path: Path, data: bytes) -> Graph | None:
    p = tmp_path / "fuzz.onnx"
    p.write_bytes(data)
    try:
        return hwmap_parse(str(p), ParseOptions())
    except HwmapError as e:
        msg = str(e)
        assert msg.startswith(str(p) + ": ") and "\n" not in msg, msg
        return None


def test_the_seed_model_parses(tmp_path: Path) -> None:
    g = _parse(tmp_path, VALID)
    assert g is not None and g.tensors["y"].shape == (1, 8)
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "MaxPool", "Reshape", "MatMul", "Concat"]


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    _parse(tmp_path, data)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(VALID) - 1))
def test_truncations(tmp_path: Path, cut: int) -> None:
    _parse(tmp_path, VALID[:cut])


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_byte_flips(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, value in flips:
        data[pos] = value
    _parse(tmp_path, bytes(data))


@pytest.mark.parametrize("step", [7, 13, 31])
def test_every_nth_byte_flipped(tmp_path: Path, step: int) -> None:
    """Deterministic sweep so every region of the file (header, weights, nodes) is hit."""
    for start in range(0, len(VALID), step * 8):
        data = bytearray(VALID)
        data[start] ^= 0xFF
        _parse(tmp_path, bytes(data))
