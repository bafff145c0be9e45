"""A small ONNX graph builder for the zoo: layers in, a checked ``onnx.ModelProto`` out.

Every layer is one ONNX node whose name is given by the caller; the node's single output
tensor carries the same name, and its constant operands are initializers named
``<node>.<slot>`` after the ONNX schema slot (``conv1.W``, ``conv1.B``, ``bn1.scale``,
``bn1.input_mean``, ...). So a model builds to the same bytes every time, and a layer is
easy to find in the graph a frontend makes of it.

Weights come from ``numpy.random.default_rng(seed)`` in construction order unless given:

* Conv and Gemm weights are He-normal (He et al., "Delving Deep into Rectifiers", ICCV
  2015): ``W ~ N(0, 2 / fan_in)`` with ``fan_in = C_in / group * k_h * k_w`` (Gemm:
  the input features), which keeps the activation variance about constant through ReLUs.
* Biases are ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's default for Conv2d/Linear.
* BatchNormalization: ``scale ~ 1 + 0.1 N(0,1)``, ``B ~ 0.1 N(0,1)``,
  ``input_mean ~ 0.1 N(0,1)``, ``input_var ~ U(0.5, 1.5)``: near identity, so a deep
  seeded network still gives finite, varied outputs, yet folding it changes every weight.

The builder tracks shapes itself (the ONNX formulas for Conv and pooling) so it can size
the next layer's weights and declare the output shape; an input too small for a layer is a
:class:`~hwmap.errors.ModelError` naming the layer.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError

__all__ = ["OnnxBuilder", "OPSET", "IR_VERSION"]

#: ONNX opset and IR version of every zoo model; IR 8 is what onnxruntime >= 1.14 loads.
OPSET = 17
IR_VERSION = 8

Shape = tuple[int, ...]


class OnnxBuilder:
    """Builds one model layer by layer; each method returns the name of its output tensor."""

    def __init__(self, model: str, input_shape: Sequence[int], *, seed: int, input_name: str = "input") -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.input_name = input_name
        self.input_shape: Shape = tuple(int(d) for d in input_shape)
        self.shapes: dict[str, Shape] = {input_name: self.input_shape}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    @classmethod
    def rgb(cls, model: str, input_shape: Sequence[int], *, seed: int) -> "OnnxBuilder":
        """A builder for a network that takes RGB images: :class:`ModelError` unless
        ``input_shape`` has 3 channels."""
        if input_shape[1] != 3:
            raise ModelError(f"input {list(input_shape)} has {input_shape[1]} channels, {model} takes 3 (RGB)",
                             where=f"zoo:{model}")
        return cls(model, input_shape, seed=seed)

    # -- helpers -----------------------------------------------------------------------------
    def _where(self, name: str) -> str:
        return f"zoo:{self.model} layer {name!r}"

    def _const(self, node: str, slot: str, value: np.ndarray) -> str:
        name = f"{node}.{slot}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def _weight(self, node: str, given: dict[str, np.ndarray] | None, slot: str, shape: Shape,
                fan_in: int, kind: str) -> np.ndarray:
        """``given[slot]`` checked against ``shape``, else a seeded draw of ``kind``."""
        if given is not None:
            if slot not in given:
                raise ModelError(f"weights for slot {slot!r} missing", where=self._where(node))
            w = np.asarray(given[slot], dtype=np.float32)
            if w.shape != shape:
                raise ModelError(f"{slot} has shape {list(w.shape)}, the layer needs {list(shape)}",
                                 where=self._where(node))
            return w
        if kind == "he":
            return self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        return self.rng.uniform(-bound, bound, shape)

    def _emit(self, op: str, name: str, inputs: list[str], shape: Shape, **attrs: Any) -> str:
        if any(d < 1 for d in shape):
            raise ModelError(f"input {list(self.input_shape)} is too small: {op} would give shape {list(shape)}",
                             where=self._where(name))
        if name in self.shapes:
            raise ValueError(f"zoo builder: layer name {name!r} used twice in {self.model}")  # a zoo bug
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.shapes[name] = shape
        return name

    # -- layers ------------------------------------------------------------------------------
    def conv(self, x: str, name: str, out_channels: int, kernel: int, *, stride: int = 1, pad: int = 0,
             group: int = 1, bias: bool = True, weights: dict[str, np.ndarray] | None = None) -> str:
        """2-D convolution, square kernel, symmetric padding (ONNX Conv; W shaped O×I/g×k×k)."""
        n, c, h, w = self.shapes[x]
        if c % group or out_channels % group:
            raise ValueError(f"zoo builder: {name}: group {group} does not divide {c}->{out_channels}")
        fan_in = c // group * kernel * kernel
        wt = self._weight(name, weights, "W", (out_channels, c // group, kernel, kernel), fan_in, "he")
        inputs = [x, self._const(name, "W", wt)]
        if bias:
            inputs.append(self._const(name, "B", self._weight(name, weights, "B", (out_channels,), fan_in, "uniform")))
        # ONNX Conv output size: floor((H + 2p - k) / s) + 1 (dilation 1)
        oh = (h + 2 * pad - kernel) // stride + 1
        ow = (w + 2 * pad - kernel) // stride + 1
        return self._emit("Conv", name, inputs, (n, out_channels, oh, ow), kernel_shape=[kernel, kernel],
                          strides=[stride, stride], pads=[pad, pad, pad, pad], group=group)

    def depthwise(self, x: str, name: str, kernel: int, *, stride: int = 1, pad: int = 0, bias: bool = False) -> str:
        """Depthwise convolution: one k×k filter per channel (Conv with group = channels)."""
        c = self.shapes[x][1]
        return self.conv(x, name, c, kernel, stride=stride, pad=pad, group=c, bias=bias)

    def bn(self, x: str, name: str, *, epsilon: float = 1e-5) -> str:
        """BatchNormalization (inference form) with seeded statistics; see the module docstring."""
        c = self.shapes[x][1]
        scale = 1.0 + 0.1 * self.rng.standard_normal(c)
        shift = 0.1 * self.rng.standard_normal(c)
        mean = 0.1 * self.rng.standard_normal(c)
        var = self.rng.uniform(0.5, 1.5, c)
        inputs = [x] + [self._const(name, s, v) for s, v in
                        (("scale", scale), ("B", shift), ("input_mean", mean), ("input_var", var))]
        return self._emit("BatchNormalization", name, inputs, self.shapes[x], epsilon=epsilon)

    def relu(self, x: str, name: str) -> str:
        return self._emit("Relu", name, [x], self.shapes[x])

    def bn_relu(self, x: str, name: str) -> str:
        """BatchNormalization ``NAME_bn`` then ReLU ``NAME_relu`` after layer ``NAME``."""
        return self.relu(self.bn(x, f"{name}_bn"), f"{name}_relu")

    def add(self, a: str, b: str, name: str) -> str:
        """Element-wise sum of two tensors of the same shape (a residual connection)."""
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"zoo builder: {name}: adding {self.shapes[a]} and {self.shapes[b]}")
        return self._emit("Add", name, [a, b], self.shapes[a])

    def global_avg_pool(self, x: str, name: str) -> str:
        n, c = self.shapes[x][:2]
        return self._emit("GlobalAveragePool", name, [x], (n, c, 1, 1))

    def flatten(self, x: str, name: str) -> str:
        """ONNX Flatten, axis 1: N×(C·H·W) in C-major order, as ``torch.flatten(x, 1)``."""
        s = self.shapes[x]
        return self._emit("Flatten", name, [x], (s[0], math.prod(s[1:])), axis=1)

    def gemm(self, x: str, name: str, out_features: int, *, weights: dict[str, np.ndarray] | None = None) -> str:
        """Fully connected layer ``x · Wᵀ + b`` (ONNX Gemm, transB = 1, W shaped out×in as torch Linear)."""
        n, k = self.shapes[x]
        trained = weights.get("W") if weights is not None else None
        if trained is not None and np.ndim(trained) == 2 and np.shape(trained)[1] != k:
            # trained weights fix the input resolution: say so rather than "wrong shape"
            raise ModelError(f"input {list(self.input_shape)} gives {k} features, the trained layer takes "
                             f"{np.shape(trained)[1]}", where=self._where(name))
        wt = self._weight(name, weights, "W", (out_features, k), k, "he")
        b = self._weight(name, weights, "B", (out_features,), k, "uniform")
        return self._emit("Gemm", name, [x, self._const(name, "W", wt), self._const(name, "B", b)],
                          (n, out_features), transB=1)

    def pool_fc(self, x: str, classes: int) -> str:
        """The classifier head: global average pool ``pool``, ``flatten``, fully connected ``fc``."""
        return self.gemm(self.flatten(self.global_avg_pool(x, "pool"), "flatten"), "fc", classes)

    # -- result ------------------------------------------------------------------------------
    def build(self, output: str, *, output_name: str = "output", doc: str = "") -> onnx.ModelProto:
        """The model with graph input ``input`` and graph output ``output_name``.

        The last node's output is renamed to ``output_name`` so every zoo model reads
        ``input`` and writes ``output``.
        """
        last = self.nodes[-1]
        if last.output[0] != output:
            raise ValueError(f"zoo builder: output {output!r} is not the last layer's")
        last.output[0] = output_name
        graph = helper.make_graph(
            self.nodes, self.model,
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(self.shapes[output]))],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="hwmap.zoo", doc_string=doc)
        model.ir_version = IR_VERSION
        return model
