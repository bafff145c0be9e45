"""``zoo:mobilenet_v1``: MobileNet V1 (width 1.0, 1000 classes) with seeded weights.

Howard et al., "MobileNets" (2017), Table 1: a 3×3 stem convolution 3→32 with stride 2,
then 13 depthwise-separable blocks (3×3 depthwise + BN + ReLU, 1×1 pointwise + BN + ReLU)
with stride 2 in blocks 2, 4, 6 and 12, global average pooling and a fully connected
layer 1024→1000 with bias. Convolutions have no bias; each is followed by its own
BatchNormalization node; 3×3 convolutions pad 1 ("same"). That is 4,209,088 conv + FC
weights, 4,231,976 parameters with the BN affine terms and the FC bias, and 568,740,352
MACs at 224×224.

Node names: ``conv0`` (stem), ``dw1``..``dw13`` (depthwise), ``pw1``..``pw13`` (pointwise),
each followed by ``<name>_bn`` and ``<name>_relu``; then ``pool``, ``flatten``, ``fc``.
"""

from __future__ import annotations

import onnx

from ._builder import OnnxBuilder

__all__ = ["INPUT_SHAPE", "BLOCKS", "build_mobilenet_v1"]

INPUT_SHAPE = (1, 3, 224, 224)
#: (output channels, depthwise stride) of the 13 depthwise-separable blocks, in order.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
SEED = 1704  # arXiv 1704.04861
CLASSES = 1000


def build_mobilenet_v1(input_shape: tuple[int, ...] = INPUT_SHAPE) -> onnx.ModelProto:
    """MobileNet V1 at any RGB input resolution (the FC layer follows a global pool)."""
    b = OnnxBuilder.rgb("mobilenet_v1", input_shape, seed=SEED)
    x = b.bn_relu(b.conv(b.input_name, "conv0", 32, 3, stride=2, pad=1, bias=False), "conv0")
    for i, (channels, stride) in enumerate(BLOCKS, start=1):
        x = b.bn_relu(b.depthwise(x, f"dw{i}", 3, stride=stride, pad=1), f"dw{i}")
        x = b.bn_relu(b.conv(x, f"pw{i}", channels, 1, bias=False), f"pw{i}")
    x = b.pool_fc(x, CLASSES)
    return b.build(x, doc="MobileNet V1 1.0 (Howard et al. 2017), seeded weights, BN as separate nodes")
