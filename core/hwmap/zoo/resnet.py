"""``zoo:resnet_small``: a small CIFAR-style ResNet with residual adds, seeded weights.

The basic block of He et al., "Deep Residual Learning" (CVPR 2016): 3×3 conv + BN + ReLU,
3×3 conv + BN, added to the shortcut, then ReLU. The shortcut is the identity, or a 1×1
convolution + BN (their option B) where the stride or the channel count changes.
Layout for a 1×3×32×32 input: stem 3×3 conv 3→16 + BN + ReLU; three stages of one basic
block each with 16, 32 and 64 channels and strides 1, 2, 2; global average pooling;
fully connected 64→10. Convolutions have no bias (BN follows each).

Node names: ``stem``; in stage ``s`` (1..3) ``s{s}_conv1``, ``s{s}_conv2``, ``s{s}_proj``
(projection), each followed by ``<name>_bn``; ``s{s}_relu1``, ``s{s}_add``, ``s{s}_relu2``;
then ``pool``, ``flatten``, ``fc``.
"""

from __future__ import annotations

import onnx

from ._builder import OnnxBuilder

__all__ = ["INPUT_SHAPE", "STAGES", "build_resnet_small"]

INPUT_SHAPE = (1, 3, 32, 32)
#: (channels, stride) of the three stages.
STAGES: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (64, 2))
SEED = 1512  # arXiv 1512.03385
CLASSES = 10


def build_resnet_small(input_shape: tuple[int, ...] = INPUT_SHAPE) -> onnx.ModelProto:
    """Stem, three one-block stages, global pool, FC to 10 classes."""
    b = OnnxBuilder.rgb("resnet_small", input_shape, seed=SEED)
    x = b.bn_relu(b.conv(b.input_name, "stem", STAGES[0][0], 3, pad=1, bias=False), "stem")
    for s, (channels, stride) in enumerate(STAGES, start=1):
        p = f"s{s}"
        y = b.conv(x, f"{p}_conv1", channels, 3, stride=stride, pad=1, bias=False)
        y = b.relu(b.bn(y, f"{p}_conv1_bn"), f"{p}_relu1")
        y = b.bn(b.conv(y, f"{p}_conv2", channels, 3, pad=1, bias=False), f"{p}_conv2_bn")
        shortcut = x
        if stride != 1 or b.shapes[x][1] != channels:
            shortcut = b.bn(b.conv(x, f"{p}_proj", channels, 1, stride=stride, bias=False), f"{p}_proj_bn")
        x = b.relu(b.add(y, shortcut, f"{p}_add"), f"{p}_relu2")
    x = b.pool_fc(x, CLASSES)
    return b.build(x, doc="Small ResNet (He et al. 2016 basic blocks, projection shortcuts), seeded weights")
