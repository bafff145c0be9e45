"""Every op against a reference no one here wrote.

ONNX ops: a one-node ONNX model built with ``onnx.helper`` runs in onnxruntime; the same op
as a hand-built hwmap node (constant operands in ``params`` by schema slot) must give the
same values (rtol/atol 1e-5) and ``infer`` the same shapes. NIR neurons: hand-written loops
of the NIR 1.0 equations, and the parameter names of the installed ``nir`` package.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hwmap.errors import GraphError, UnsupportedOpError
from hwmap.graph import Node
from hwmap.ops import get_op, known_ops

RNG = np.random.default_rng(1234)


def rand(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


@dataclasses.dataclass
class D:
    """A dynamic operand (a graph input of the ONNX model, a dynamic input of the node)."""

    slot: str
    value: np.ndarray


@dataclasses.dataclass
class C:
    """A constant operand (an initializer in ONNX, a param of the hwmap node)."""

    slot: str
    value: np.ndarray


Absent = None  # an omitted optional operand ("" in ONNX)


def ort_single(op: str, operands: list[Any], attrs: dict[str, Any], *, opset: int, n_out: int) -> list[np.ndarray]:
    names, inputs, inits, feeds = [], [], [], {}
    for i, o in enumerate(operands):
        if o is None:
            names.append("")
            continue
        name = f"{o.slot}_{i}"
        names.append(name)
        if isinstance(o, D):
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(o.value.dtype),
                                                        o.value.shape))
            feeds[name] = o.value
        else:
            inits.append(numpy_helper.from_array(np.asarray(o.value), name))
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    # outputs without a declared type: onnxruntime takes the one its kernel produces
    graph = helper.make_graph([node], "g", inputs, [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10 if opset > 20 else 9 if opset > 18 else 8)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # ONNX's own shape inference lags ORT on ceil_mode; silence its warning
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def hw_node(op: str, operands: list[Any], attrs: dict[str, Any], n_out: int = 1) -> tuple[Node, list[np.ndarray]]:
    dyn = [o for o in operands if isinstance(o, D)]
    params = {o.slot: np.asarray(o.value) for o in operands if isinstance(o, C)}
    node = Node(f"{op.lower()}0", op, [f"in{i}" for i in range(len(dyn))], [f"out{i}" for i in range(n_out)],
                dict(attrs), params)
    return node, [o.value for o in dyn]


def check(op: str, operands: list[Any], attrs: dict[str, Any] | None = None, *, opset: int = 18, n_out: int = 1,
          rtol: float = 1e-5, atol: float = 1e-5) -> list[np.ndarray]:
    attrs = attrs or {}
    expected = ort_single(op, operands, attrs, opset=opset, n_out=n_out)
    node, dyn = hw_node(op, operands, attrs, n_out)
    opdef = get_op(op)
    got = opdef.evaluate(node, dyn)
    assert len(got) == n_out
    assert opdef.infer(node, [d.shape for d in dyn]) == [e.shape for e in expected]
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        if e.dtype.kind == "f":
            assert g.dtype == e.dtype
        else:
            assert g.dtype.kind == e.dtype.kind
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return got


# -- Conv ----------------------------------------------------------------------------------
CONV_CASES = [
    ((2, 4, 9, 8), (6, 4, 3, 3), {}),
    ((1, 4, 9, 8), (6, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 4, 10, 7), (6, 4, 3, 2), {"pads": [0, 1, 2, 1], "dilations": [2, 1]}),
    ((1, 4, 9, 9), (8, 2, 3, 3), {"group": 2, "strides": [1, 2], "pads": [1, 1, 1, 1]}),
    ((2, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 3, 8, 8), (6, 1, 3, 3), {"group": 3, "strides": [2, 2], "pads": [0, 0, 1, 1]}),  # depthwise x2
    ((1, 5, 6, 6), (7, 5, 1, 1), {}),  # pointwise
    ((2, 3, 11), (4, 3, 3), {"strides": [2], "pads": [1, 2], "dilations": [2]}),  # 1-D
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"pads": [1, 0, 0, 0, 1, 1]}),  # 3-D
    ((1, 3, 7, 9), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 7, 9), (4, 3, 2, 2), {"auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv_matches_onnxruntime(x_shape, w_shape, attrs, bias):
    w = rand(*w_shape) / math.sqrt(math.prod(w_shape[1:]))
    ops = [D("X", rand(*x_shape)), C("W", w)] + ([C("B", rand(w_shape[0]))] if bias else [])
    check("Conv", ops, attrs)


def test_conv_with_dynamic_weight():
    check("Conv", [D("X", rand(1, 2, 6, 6)), D("W", rand(3, 2, 3, 3)), C("B", rand(3))], {"pads": [1, 1, 1, 1]})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(3, 12), w=st.integers(3, 12), k=st.integers(1, 3), s=st.integers(1, 3), d=st.integers(1, 2),
       p=st.integers(0, 2), groups=st.sampled_from([1, 2, 4]), mult=st.integers(1, 2))
def test_conv_shapes_and_values_hypothesis(h, w, k, s, d, p, groups, mult):
    if (k - 1) * d + 1 > min(h, w) + 2 * p:
        return
    cin, cout = 4, groups * mult
    check("Conv", [D("X", rand(1, cin, h, w)), C("W", rand(cout, cin // groups, k, k)), C("B", rand(cout))],
          {"strides": [s, s], "pads": [p, p, p, p], "dilations": [d, d], "group": groups})


def test_conv_errors_name_the_node():
    node, _ = hw_node("Conv", [D("X", rand(1, 3, 5, 5)), C("W", rand(4, 2, 3, 3))], {})
    with pytest.raises(GraphError, match="conv0.*channels do not match"):
        get_op("Conv").infer(node, [(1, 3, 5, 5)])
    node, _ = hw_node("Conv", [D("X", rand(1, 3, 5, 5))], {})
    with pytest.raises(GraphError, match="operand 'W' is missing"):
        get_op("Conv").infer(node, [(1, 3, 5, 5)])


# -- pooling -------------------------------------------------------------------------------
POOL_CASES = [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1},  # last window dropped
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0]},
]


@pytest.mark.parametrize("attrs", POOL_CASES)
def test_maxpool_matches_onnxruntime(attrs):
    check("MaxPool", [D("X", rand(2, 3, 8, 7))], attrs)


def test_pools_dilated_1d_3d():
    check("MaxPool", [D("X", rand(1, 2, 9, 9))], {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [1, 2]})
    check("MaxPool", [D("X", rand(1, 2, 10))], {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1})
    check("MaxPool", [D("X", rand(1, 2, 5, 6, 7))], {"kernel_shape": [2, 3, 2], "strides": [2, 2, 2], "ceil_mode": 1})
    for include in (0, 1):
        check("AveragePool", [D("X", rand(1, 2, 9, 8))], {"kernel_shape": [2, 3], "dilations": [2, 2],
              "pads": [1, 1, 1, 1], "strides": [2, 1], "count_include_pad": include, "ceil_mode": 1}, opset=19)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("attrs", POOL_CASES)
def test_averagepool_matches_onnxruntime(attrs, include):
    check("AveragePool", [D("X", rand(2, 3, 8, 7))], {**attrs, "count_include_pad": include})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    check(op, [D("X", rand(2, 3, 5, 4))])
    check(op, [D("X", rand(2, 3, 7))])


# -- Gemm, MatMul --------------------------------------------------------------------------
@pytest.mark.parametrize("attrs,a,b,c", [
    ({}, (3, 4), (4, 5), (5,)),
    ({"transB": 1}, (3, 4), (5, 4), (3, 5)),
    ({"transA": 1, "alpha": 0.5, "beta": 2.0}, (4, 3), (4, 5), (1, 5)),
    ({"transA": 1, "transB": 1}, (4, 3), (5, 4), ()),
    ({"transB": 1}, (2, 6), (3, 6), None),
])
def test_gemm_matches_onnxruntime(attrs, a, b, c):
    ops = [D("A", rand(*a)), C("B", rand(*b))] + ([] if c is None else [C("C", rand(*c))])
    check("Gemm", ops, attrs)


def test_gemm_with_dynamic_b():
    check("Gemm", [D("A", rand(3, 4)), D("B", rand(4, 2)), C("C", rand(2))])


@pytest.mark.parametrize("a,b,const_b", [
    ((3, 4), (4, 5), True),
    ((2, 1, 3, 4), (5, 4, 6), False),
    ((4,), (4, 5), True),
    ((2, 3, 4), (4,), True),
    ((2, 3, 4), (2, 4, 3), False),
])
def test_matmul_matches_onnxruntime(a, b, const_b):
    check("MatMul", [D("A", rand(*a)), (C if const_b else D)("B", rand(*b))])


def test_macs_hand_computed():
    conv, _ = hw_node("Conv", [D("X", rand(1, 4, 9, 9)), C("W", rand(8, 2, 3, 3)), C("B", rand(8))],
                      {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]})
    out = get_op("Conv").infer(conv, [(3, 4, 9, 9)])
    assert out == [(3, 8, 5, 5)]
    # N·Cout·Ho·Wo·(Cin/group)·Kh·Kw, bias not counted
    assert get_op("Conv").macs(conv, [(3, 4, 9, 9)], out) == 3 * 8 * 5 * 5 * 2 * 3 * 3
    dw, _ = hw_node("Conv", [D("X", rand(1, 32, 112, 112)), C("W", rand(32, 1, 3, 3))],
                    {"group": 32, "pads": [1, 1, 1, 1]})
    assert get_op("Conv").macs(dw, [(1, 32, 112, 112)], [(1, 32, 112, 112)]) == 32 * 112 * 112 * 9
    gemm, _ = hw_node("Gemm", [D("A", rand(7, 5)), C("B", rand(3, 5)), C("C", rand(3))], {"transB": 1})
    assert get_op("Gemm").macs(gemm, [(7, 5)], [(7, 3)]) == 7 * 3 * 5
    mm, _ = hw_node("MatMul", [D("A", rand(2, 1, 3, 4)), D("B", rand(5, 4, 6))], {})
    assert get_op("MatMul").macs(mm, [(2, 1, 3, 4), (5, 4, 6)], [(2, 5, 3, 6)]) == 2 * 5 * 3 * 6 * 4
    vec, _ = hw_node("MatMul", [D("A", rand(4)), C("B", rand(4, 5))], {})
    assert get_op("MatMul").macs(vec, [(4,)], [(5,)]) == 20
    for op in known_ops():
        if get_op(op).category != "compute":
            assert get_op(op).macs is None, op  # every other op counts 0 MACs


# -- elementwise ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("a,b,const", [((2, 3, 4), (2, 3, 4), None), ((2, 3, 4, 5), (3, 1, 1), "B"),
                                       ((4,), (2, 3, 4), "A"), ((2, 1, 4), (3, 1), None)])
def test_binary_broadcasting(op, a, b, const):
    x, y = rand(*a, lo=0.5, hi=2.0), rand(*b, lo=0.5, hi=2.0)
    check(op, [(C if const == "A" else D)("A", x), (C if const == "B" else D)("B", y)])


def test_pow():
    check("Pow", [D("X", rand(2, 3, lo=0.1, hi=2.0)), C("Y", np.array([2.0, 0.5, 3.0], np.float32))])


def test_integer_div_truncates():
    a = np.array([7, -7, 7, -7], np.int64)
    b = np.array([2, 2, -2, -2], np.int64)
    check("Div", [D("A", a), D("B", b)])


UNARY = [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("LeakyRelu", {}), ("Sigmoid", {}), ("Tanh", {}),
         ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Exp", {}),
         ("Neg", {}), ("Abs", {}), ("Erf", {}), ("Identity", {}), ("Elu", {"alpha": 0.7}), ("Softmax", {}),
         ("Softmax", {"axis": 1})]


@pytest.mark.parametrize("op,attrs", UNARY)
def test_unary(op, attrs):
    check(op, [D("X", rand(2, 3, 5, lo=-4, hi=4))], attrs)


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal"])
def test_unary_positive_domain(op):
    check(op, [D("X", rand(3, 4, lo=0.1, hi=5.0))])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check("Gelu", [D("X", rand(3, 7, lo=-4, hi=4))], {"approximate": approximate}, opset=20)


def test_clip_forms():
    x = rand(3, 4, lo=-3, hi=3)
    check("Clip", [D("input", x), C("min", np.float32(-1)), C("max", np.float32(0.5))])
    check("Clip", [D("input", x), Absent, C("max", np.float32(6.0 / 4))])
    check("Clip", [D("input", x), C("min", np.float32(0.0))])
    check("Clip", [D("input", x)], {"min": -0.5, "max": 0.25}, opset=6)


def test_dropout_is_identity_at_inference():
    x = rand(2, 5)
    check("Dropout", [D("data", x), C("ratio", np.float32(0.3))])
    check("Dropout", [D("data", x)], n_out=2)


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic(op):
    check(op, [D("data_0", rand(2, 3, 4)), D("data_1", rand(3, 1)), D("data_2", rand(4))])
    check(op, [D("data_0", rand(2, 3))])


def test_batchnorm():
    check("BatchNormalization", [D("X", rand(2, 3, 4, 5)), C("scale", rand(3)), C("B", rand(3)),
                                 C("input_mean", rand(3)), C("input_var", rand(3, lo=0.1, hi=2))],
          {"epsilon": 1e-3})
    check("BatchNormalization", [D("X", rand(4, 3)), C("scale", rand(3)), C("B", rand(3)),
                                 C("input_mean", rand(3)), C("input_var", rand(3, lo=0.1, hi=2))])


# -- shape ops -----------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1, -4])
def test_flatten(axis):
    check("Flatten", [D("input", rand(2, 3, 4, 5))], {"axis": axis})


@pytest.mark.parametrize("shape,allowzero", [([0, -1], 0), ([2, 0, 5, 4], 0), ([-1], 0), ([6, -1, 2], 0),
                                              ([2, 3, 20], 1)])
def test_reshape(shape, allowzero):
    check("Reshape", [D("data", rand(2, 3, 4, 5)), C("shape", np.array(shape, np.int64))], {"allowzero": allowzero},
          opset=14)


def test_reshape_dynamic_shape_is_not_inferable():
    node, _ = hw_node("Reshape", [D("data", rand(2, 3)), D("shape", np.array([3, 2], np.int64))], {})
    assert get_op("Reshape").infer(node, [(2, 3), (2,)]) is None


def test_squeeze_unsqueeze_forms():
    x = rand(2, 1, 3, 1)
    check("Squeeze", [D("data", x), C("axes", np.array([1, -1], np.int64))], opset=13)
    check("Squeeze", [D("data", x)], opset=13)
    check("Squeeze", [D("data", x)], {"axes": [3]}, opset=11)
    check("Unsqueeze", [D("data", rand(2, 3)), C("axes", np.array([0, -1, 2], np.int64))], opset=13)
    check("Unsqueeze", [D("data", rand(2, 3))], {"axes": [1]}, opset=11)


@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [3, 1, 0, 2]])
def test_transpose(perm):
    check("Transpose", [D("data", rand(2, 3, 4, 5))], {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("axis", [1, -1])
def test_concat(axis):
    if axis == 1:
        parts = [rand(2, 1, 4), rand(2, 3, 4), rand(2, 2, 4)]
    else:
        parts = [rand(2, 3, 1), rand(2, 3, 2), rand(2, 3, 5)]
    check("Concat", [D(f"inputs_{i}", p) for i, p in enumerate(parts)], {"axis": axis})


@pytest.mark.parametrize("mode,pads", [("constant", [0, 1, 2, 0, 1, 0]), ("constant", [1, -1, 0, 0, 2, -1]),
                                       ("reflect", [0, 1, 2, 0, 1, 2]), ("edge", [1, 0, 2, 1, 1, 0])])
def test_pad(mode, pads):
    ops = [D("data", rand(2, 3, 4)), C("pads", np.array(pads, np.int64))]
    if mode == "constant":
        ops.append(C("constant_value", np.float32(0.75)))
    check("Pad", ops, {"mode": mode})


def test_pad_with_axes_and_legacy_attrs():
    check("Pad", [D("data", rand(2, 3, 4)), C("pads", np.array([1, 2, 0, 1], np.int64)), Absent,
                  C("axes", np.array([1, -1], np.int64))])
    check("Pad", [D("data", rand(2, 3))], {"pads": [0, 1, 1, 0], "value": 2.0}, opset=2)


def test_constant():
    value = rand(3, 2)
    expected = ort_single("Constant", [], {"value": numpy_helper.from_array(value)}, opset=18, n_out=1)[0]
    node = Node("k", "Constant", [], ["y"], {}, {"value": value})
    assert get_op("Constant").infer(node, []) == [(3, 2)]
    np.testing.assert_array_equal(get_op("Constant").evaluate(node, [])[0], expected)


@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"start": -3, "end": -1}, {"end": 10}])
def test_shape(attrs):
    check("Shape", [D("data", rand(2, 3, 4, 5))], attrs, opset=15)


@pytest.mark.parametrize("indices,axis", [(np.array(1, np.int64), 0), (np.array([[0, 2], [-1, 1]], np.int64), 1),
                                          (np.array([3, 0], np.int64), -1)])
def test_gather(indices, axis):
    check("Gather", [D("data", rand(3, 4, 5)), C("indices", indices)], {"axis": axis})
    check("Gather", [D("data", rand(3, 4, 5)), D("indices", indices)], {"axis": axis})


@pytest.mark.parametrize("to", [TensorProto.INT64, TensorProto.FLOAT16, TensorProto.INT32])
def test_cast(to):
    check("Cast", [D("input", rand(3, 4, lo=-9, hi=9))], {"to": to})


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], [1], None),
    ([0, -3], [2, 100], [0, 2], [1, 2]),
    ([-1], [-1000], [1], [-1]),
    ([10, 2], [0, -1], [2, 0], [-3, 1]),
    ([2], [9223372036854775807], None, None),
])
def test_slice(starts, ends, axes, steps):
    ops = [D("data", rand(3, 4, 5)), C("starts", np.array(starts, np.int64)), C("ends", np.array(ends, np.int64))]
    ops.append(Absent if axes is None else C("axes", np.array(axes, np.int64)))
    ops.append(Absent if steps is None else C("steps", np.array(steps, np.int64)))
    while ops[-1] is None:
        ops.pop()
    check("Slice", ops)


def test_slice_legacy_attrs():
    check("Slice", [D("data", rand(3, 4))], {"starts": [1, 0], "ends": [3, -1], "axes": [0, 1]}, opset=9)


def test_split():
    x = rand(2, 7, 3)
    check("Split", [D("input", x), C("split", np.array([2, 4, 1], np.int64))], {"axis": 1}, n_out=3)
    check("Split", [D("input", rand(2, 6))], {"axis": -1}, n_out=3, opset=13)
    check("Split", [D("input", x)], {"axis": 1, "num_outputs": 3}, n_out=3)  # opset 18: 3, 3, 1


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes,keepdims", [([2, 3], 1), ([-1], 0), (None, 1), (None, 0)])
def test_reductions(op, axes, keepdims):
    ops = [D("data", rand(2, 3, 4, 5))] + ([] if axes is None else [C("axes", np.array(axes, np.int64))])
    check(op, ops, {"keepdims": keepdims})


def test_reduce_legacy_attrs_and_noop():
    check("ReduceMean", [D("data", rand(2, 3, 4))], {"axes": [1], "keepdims": 0}, opset=13)
    check("ReduceSum", [D("data", rand(2, 3, 4))], {"noop_with_empty_axes": 1}, opset=13)


def test_expand():
    check("Expand", [D("input", rand(3, 1)), C("shape", np.array([2, 1, 4], np.int64))])


def test_every_onnx_op_uses_its_schema_slot_names():
    for op in known_ops():
        opdef = get_op(op)
        if op.startswith("Fused") or opdef.category in ("neuron", "time") or op == "SumPool2d":
            continue
        schema = onnx.defs.get_schema(op)
        assert opdef.slots == tuple(i.name for i in schema.inputs), op


def test_unknown_op_and_bad_shapes_raise_project_errors():
    with pytest.raises(UnsupportedOpError, match="NoSuchOp"):
        get_op("NoSuchOp")
    node, _ = hw_node("Add", [D("A", rand(2, 3)), D("B", rand(4))], {})
    with pytest.raises(GraphError, match="do not broadcast"):
        get_op("Add").infer(node, [(2, 3), (4,)])
    node, _ = hw_node("Reshape", [D("data", rand(2, 3)), C("shape", np.array([4, -1], np.int64))], {})
    with pytest.raises(GraphError, match="cannot reshape"):
        get_op("Reshape").infer(node, [(2, 3)])
    node, _ = hw_node("Relu", [D("X", rand(2))], {})
    with pytest.raises(GraphError, match="2 dynamic inputs"):
        get_op("Relu").infer(node, [(2,), (2,)])


# -- fused ---------------------------------------------------------------------------------
def ort_chain(nodes: list[Any], inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray]) -> np.ndarray:
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                                           for k, v in inputs.items()],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def test_fused_conv_matches_the_unfused_chain_in_onnxruntime():
    # Conv -> Div(A constant: k / c) -> Add(residual r as A, chained value as B) -> Relu
    x, r = rand(1, 3, 6, 6, lo=0, hi=1), rand(1, 4, 6, 6, lo=-2, hi=2)
    w, b = rand(4, 3, 3, 3, lo=0, hi=0.3), rand(4, lo=0.5, hi=1.0)  # keeps c > 0.5: a tame division
    k = rand(4, 1, 1, lo=1, hi=3)
    expected = ort_chain([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                          helper.make_node("Div", ["k", "c"], ["d"]),
                          helper.make_node("Add", ["r", "d"], ["a"]),
                          helper.make_node("Relu", ["a"], ["y"])], {"x": x, "r": r}, {"w": w, "b": b, "k": k})
    conv = Node("conv", "Conv", ["x"], ["c"], {"pads": [1, 1, 1, 1]}, {"W": w, "B": b})
    subs = [conv, Node("div", "Div", ["c"], ["d"], {}, {"A": k}), Node("res", "Add", ["r", "d"], ["a"]),
            Node("relu", "Relu", ["a"], ["y"])]
    fused = Node("f", "FusedConv", ["x", "r"], ["y"], dict(conv.attrs), dict(conv.params), fused=subs)
    opdef = get_op("FusedConv")
    np.testing.assert_allclose(opdef.evaluate(fused, [x, r])[0], expected, rtol=1e-5, atol=1e-5)
    assert opdef.infer(fused, [x.shape, r.shape]) == [expected.shape]
    assert opdef.macs(fused, [x.shape, r.shape], [expected.shape]) == 4 * 36 * 3 * 9
    assert opdef.category == "compute"
    # the fused node's own params are what runs (a pass that rewrites them rewrites the result)
    doubled = dataclasses.replace(fused, params={"W": w * 2, "B": b * 2})
    assert not np.allclose(opdef.evaluate(doubled, [x, r])[0], expected)


def test_fused_gemm_and_structure_checks():
    a, w, bias = rand(3, 5), rand(4, 5), rand(4)
    expected = ort_chain([helper.make_node("Gemm", ["a", "w", "b"], ["g"], transB=1),
                          helper.make_node("Mul", ["g", "h"], ["m"]), helper.make_node("Sigmoid", ["m"], ["y"])],
                         {"a": a}, {"w": w, "b": bias, "h": np.float32(0.5)})
    gemm = Node("g", "Gemm", ["a"], ["g"], {"transB": 1}, {"B": w, "C": bias})
    subs = [gemm, Node("m", "Mul", ["g"], ["m"], {}, {"B": np.float32(0.5)}), Node("s", "Sigmoid", ["m"], ["s"])]
    fused = Node("fg", "FusedGemm", ["a"], ["s"], dict(gemm.attrs), dict(gemm.params), fused=subs)
    np.testing.assert_allclose(get_op("FusedGemm").evaluate(fused, [a])[0], expected, rtol=1e-5, atol=1e-5)
    assert get_op("FusedGemm").macs(fused, [a.shape], [(3, 4)]) == 3 * 4 * 5
    with pytest.raises(GraphError, match="has 2 inputs, its fused nodes take 1"):
        get_op("FusedGemm").infer(dataclasses.replace(fused, inputs=["a", "extra"]), [a.shape, (3, 4)])
    with pytest.raises(GraphError, match="is a Gemm, expected MatMul"):
        get_op("FusedMatMul").infer(dataclasses.replace(fused, op="FusedMatMul"), [a.shape])
    with pytest.raises(GraphError, match="needs its original nodes"):
        get_op("FusedConv").infer(Node("e", "FusedConv", ["x"], ["y"]), [(1, 1, 3, 3)])


# -- NIR neurons ---------------------------------------------------------------------------
def neuron(op: str, params: dict[str, Any], dt: float = 1e-3) -> Node:
    return Node(op.lower(), op, ["x"], ["y"], {"dt": dt}, {k: np.asarray(v, np.float32) for k, v in params.items()})


def run_steps(node: Node, xs: np.ndarray) -> np.ndarray:
    opdef = get_op(node.op)
    assert opdef.infer(node, [xs.shape[:1] + xs.shape[2:]]) == [xs.shape[:1] + xs.shape[2:]]
    state, out = None, []
    for t in range(xs.shape[1]):
        (y,), state = opdef.step(node, [xs[:, t]], state)
        out.append(y)
    return np.stack(out, axis=1)


def test_nir_parameter_names_match_the_nir_package():
    import nir

    from hwmap.ops.neuron import NEURON_PARAMS

    classes = {"LIF": nir.LIF, "IF": nir.IF, "LI": nir.LI, "CubaLIF": nir.CubaLIF, "CubaLI": nir.CubaLI,
               "Integrator": nir.I, "Delay": nir.Delay, "Threshold": nir.Threshold}
    for op, cls in classes.items():
        required, optional = NEURON_PARAMS[op]
        fields = {f.name for f in dataclasses.fields(cls)} - {"input_type", "output_type", "metadata"}
        assert set(required) | set(optional) == fields, op


def test_lif_against_a_hand_written_nir_loop():
    f = 5
    tau, r, v_leak = np.full(f, 0.01), np.linspace(0.5, 2, f), np.array([0, 0.1, -0.1, 0, 0.2])
    thr, reset = np.array([0.5, 0.4, 0.6, 0.5, 0.3]), np.array([0, 0, 0.1, -0.1, 0])
    dt = 1e-3
    xs = RNG.uniform(0, 3, size=(2, 30, f)).astype(np.float32)
    node = neuron("LIF", {"tau": tau, "r": r, "v_leak": v_leak, "v_threshold": thr, "v_reset": reset}, dt)
    got = run_steps(node, xs)
    p = {k: v.astype(np.float64) for k, v in node.params.items()}
    v = np.zeros((2, f))
    ref = []
    for t in range(30):
        # NIR: tau dv/dt = (v_leak - v) + R I; z = v > v_thr; v = v_reset where z (forward Euler)
        v = v + dt / p["tau"] * ((p["v_leak"] - v) + p["r"] * xs[:, t])
        z = v > p["v_threshold"]
        v = np.where(z, p["v_reset"], v)
        ref.append(z.astype(np.float32))
    np.testing.assert_array_equal(got, np.stack(ref, axis=1))
    assert got.dtype == np.float32 and 0 < got.mean() < 1


def test_threshold_is_strict():
    node = neuron("IF", {"r": [1.0], "v_threshold": [1.0]}, dt=1.0)
    # v reaches 1.0 (= threshold: no spike), then 2.0 (spike, reset to 0), then 1.0 again
    assert run_steps(node, np.ones((1, 3, 1), np.float32))[0, :, 0].tolist() == [0.0, 1.0, 0.0]


def test_if_li_integrator_cubalif_loops():
    dt, xs = 0.5, RNG.uniform(-1, 2, size=(1, 12, 3)).astype(np.float32)
    r, thr = np.array([1.0, 0.5, 2.0]), np.array([1.0, 1.5, 0.7])
    v, ref = np.zeros(3), []
    for t in range(12):
        v = v + dt * r * xs[0, t]
        z = v > thr
        v = np.where(z, 0.0, v)
        ref.append(z)
    np.testing.assert_array_equal(run_steps(neuron("IF", {"r": r, "v_threshold": thr}, dt), xs)[0], np.array(ref))

    tau, vl = np.array([2.0, 4.0, 1.0]), np.array([0.0, 0.5, -0.5])
    v, ref = np.zeros(3), []
    for t in range(12):
        v = v + dt / tau * ((vl - v) + r * xs[0, t])
        ref.append(v.copy())
    np.testing.assert_allclose(run_steps(neuron("LI", {"tau": tau, "r": r, "v_leak": vl}, dt), xs)[0], ref,
                               rtol=1e-6, atol=1e-6)

    v, ref = np.zeros(3), []
    for t in range(12):
        v = v + dt * r * xs[0, t]
        ref.append(v.copy())
    np.testing.assert_allclose(run_steps(neuron("Integrator", {"r": r}, dt), xs)[0], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(run_steps(neuron("I", {"r": r}, dt), xs),
                                  run_steps(neuron("Integrator", {"r": r}, dt), xs))

    ts, tm, w_in = np.array([1.0, 2.0, 4.0]), np.array([2.0, 1.0, 3.0]), np.array([1.0, 2.0, 0.5])
    i, v, ref = np.zeros(3), np.zeros(3), []
    for t in range(12):
        i = i + dt / ts * (-i + w_in * xs[0, t])
        v = v + dt / tm * ((vl - v) + r * i)
        z = v > thr * 0.3
        v = np.where(z, 0.0, v)
        ref.append(z)
    node = neuron("CubaLIF", {"tau_syn": ts, "tau_mem": tm, "r": r, "v_leak": vl, "v_threshold": thr * 0.3,
                              "w_in": w_in}, dt)
    got = run_steps(node, xs)[0]
    np.testing.assert_array_equal(got, np.array(ref))
    assert got.any()


def test_neuron_params_broadcast_and_need_dt():
    node = neuron("LIF", {"tau": 0.02, "r": 1.0, "v_leak": 0.0, "v_threshold": np.ones(3)})
    assert get_op("LIF").infer(node, [(1, 3, 4, 4)]) == [(1, 3, 4, 4)]  # per-channel threshold (C,) vs (C, H, W)
    bad = dataclasses.replace(node, attrs={})
    with pytest.raises(GraphError, match="'dt'"):
        get_op("LIF").infer(bad, [(1, 3)])
    bad = neuron("LIF", {"tau": 0.02, "r": 1.0, "v_leak": 0.0, "v_threshold": np.ones(5)})
    with pytest.raises(GraphError, match="v_threshold"):
        get_op("LIF").infer(bad, [(1, 3)])


def test_delay_shifts_each_element():
    node = neuron("Delay", {"delay": [0.0, 0.002, 0.0049]}, dt=1e-3)  # 0, 2 and 5 steps
    xs = RNG.uniform(size=(2, 9, 3)).astype(np.float32)
    got = run_steps(node, xs)
    for k, d in enumerate([0, 2, 5]):
        np.testing.assert_array_equal(got[:, d:, k], xs[:, :9 - d, k])
        np.testing.assert_array_equal(got[:, :d, k], 0)


def test_threshold_and_sumpool2d():
    import torch
    import torch.nn.functional as F

    x = rand(2, 3, 7, 6)
    th = Node("t", "Threshold", ["x"], ["y"], {}, {"threshold": np.float32(0.2)})
    np.testing.assert_array_equal(get_op("Threshold").evaluate(th, [x])[0], (x > 0.2).astype(np.float32))
    for attrs, (k, s, p) in [({"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}, (2, 2, 0)),
                             ({"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1]}, (3, 2, 1))]:
        node = Node("sp", "SumPool2d", ["x"], ["y"], attrs)
        ref = F.avg_pool2d(torch.from_numpy(x), k, s, p, count_include_pad=True, divisor_override=1).numpy()
        got = get_op("SumPool2d").evaluate(node, [x])[0]
        assert get_op("SumPool2d").infer(node, [x.shape]) == [ref.shape]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
