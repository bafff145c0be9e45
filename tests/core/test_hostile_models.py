"""Hostile ONNX models whose harm is in the number of nodes rather than in any declared
tensor size: a node costs about 30 bytes of protobuf but about 3.5 KiB once checked, shape-
inferred and converted (measured: a 3 MB chain of 100,000 Relu nodes took 436 MB of
``hwmap profile``), so a model within the 1 GiB file limit could take 100 GiB. The node
count, subgraphs included, is checked against the memory limit at
:data:`hwmap.frontends._onnx_read.NODE_BYTES` per node right after the protobuf is decoded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import guard
from hwmap import ModelError, load_model
from hwmap.frontends._onnx_read import NODE_BYTES
from hwmap.limits import set_max_memory
from test_safeio import _default_limit  # noqa: F401  (autouse: the default 1 GiB limit in every test)


def _relu_chain(path: Path, n: int) -> Path:
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}" if i < n - 1 else "y"], name=f"n{i}")
             for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_model_of_too_many_nodes_is_refused_before_it_is_checked(tmp_path: Path) -> None:
    path = _relu_chain(tmp_path / "chain.onnx", 20_000)
    set_max_memory(20_000 * NODE_BYTES - 1)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="20,000 nodes") as e:
            load_model(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        set_max_memory(None)
    assert str(path) in str(e.value) and "memory limit" in str(e.value)
    # decoding costs a few times the file (600 kB); converting would have cost 50 MB
    assert peak < 8 * path.stat().st_size, f"{peak:,} bytes"


def test_through_the_command_line_it_is_one_line(tmp_path: Path) -> None:
    path = _relu_chain(tmp_path / "chain.onnx", 5_000)
    run = guard.run_cli(["profile", str(path), "--max-memory", f"{5_000 * NODE_BYTES - 1}", "-q"])
    assert run.code == 2, run.stderr
    assert "5,000 nodes" in run.error_line()


def test_nodes_inside_subgraphs_count_too(tmp_path: Path) -> None:
    inner = [helper.make_node("Identity", ["a" if i == 0 else f"b{i - 1}"], [f"b{i}" if i < 999 else "out"])
             for i in range(1000)]
    body = helper.make_graph(inner, "then", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
                             [helper.make_tensor("a", TensorProto.FLOAT, [1, 4], [0.0] * 4)])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [cond])
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    set_max_memory(2000 * NODE_BYTES)
    try:
        with pytest.raises(ModelError, match="2,001 nodes"):
            load_model(str(path))
    finally:
        set_max_memory(None)


def test_models_of_ordinary_size_are_untouched() -> None:
    assert len(load_model("zoo:mobilenet_v1").nodes) > 20
