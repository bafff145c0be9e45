"""``zoo:chapter_cnn``: the two-convolution example of the chapter's mapping strategy.

Chapter Section 3.4.5, Fig. 3.13 (the chapter's worked example): input
13×64×1; Conv1 4×4×1 with 16 filters; Conv2 3×3×16 with 8 filters; output 3×29×8. The
stated sizes fix the strides: Conv1 has stride 2 (floor((13−4)/2)+1 = 5,
floor((64−4)/2)+1 = 31) and Conv2 stride 1 (5−3+1 = 3, 31−3+1 = 29), no padding.
A ReLU sits between the two. Convolutions carry biases; weights are seeded (see
:mod:`hwmap.zoo._builder`).
"""

from __future__ import annotations

import onnx

from ._builder import OnnxBuilder

__all__ = ["INPUT_SHAPE", "build_chapter_cnn"]

#: N×C×H×W of the chapter's 13×64 single-channel input.
INPUT_SHAPE = (1, 1, 13, 64)
SEED = 3413  # chapter section 3.4, figure 13


def build_chapter_cnn(input_shape: tuple[int, ...] = INPUT_SHAPE) -> onnx.ModelProto:
    """Conv1 (16 filters 4×4, stride 2) → ReLU → Conv2 (8 filters 3×3, stride 1)."""
    b = OnnxBuilder("chapter_cnn", input_shape, seed=SEED)
    x = b.conv(b.input_name, "conv1", 16, 4, stride=2)
    x = b.relu(x, "relu1")
    x = b.conv(x, "conv2", 8, 3, stride=1)
    return b.build(x, doc="Chapter Fig. 3.13: 13x64x1 -> Conv 4x4x1 x16 /2 -> ReLU -> Conv 3x3x16 x8 -> 3x29x8")
