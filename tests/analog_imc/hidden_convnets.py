"""Plain-torch convnets of the kind a user brings to hwmap (conv, batch norm, ReLU, a
residual add, pooling, linear layers), used by test_hidden_convnets.py and
bench/analog_fidelity.py:

* ``plain_convnet``, ``residual_convnet``: seeded random weights, classes balanced (loaded as
  ``PATH.py:FACTORY`` through hwmap's torch frontend). A stress test: their class scores differ
  by a few tenths of a percent, finer than 8-bit activations resolve.
* ``trained_plain_convnet``, ``trained_residual_convnet``: the same two networks trained on
  real data — the training part of scikit-learn's digits (``hwmap.zoo.digits.digits_split``),
  each 8×8 image enlarged to 16×16 (every pixel 2×2) and repeated in three channels
  (:func:`digits16`) — as a user's trained model would come: deterministic (seeded, one
  thread), a few seconds on a CPU, 98–99 % test accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (1, 3, 16, 16)


def _seeded_bn(net: nn.Module) -> None:
    """Batch-norm statistics as training would leave them (not the identity of a fresh layer)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def _balanced(net: nn.Module, last: nn.Linear) -> nn.Module:
    """The last layer's bias shifted so that every class has the same mean score over 256
    seeded U(0, 1) images: random weights otherwise give every image the same class (the
    features' common mean dominates), and top-1 agreement would measure nothing; a trained
    classifier's classes are balanced too."""
    net.eval()
    x = torch.rand((256, *INPUT_SHAPE[1:]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean = net(x).mean(dim=0)
        last.bias.sub_(mean - mean.mean())
    return net


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class ResidualNet(nn.Module):
    """stem → residual block → max pool → conv → global average pool → two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.a = nn.Sequential(_cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2)
        self.b = _cbr(16, 32)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.a(x) + x)
        x = self.b(self.pool(x))
        return self.head(x.mean(dim=(2, 3)))


def digits16(x: np.ndarray) -> np.ndarray:
    """N×1×8×8 digits images as the convnets' N×3×16×16 input: each pixel 2×2, the grey
    image in all three channels."""
    big = np.repeat(np.repeat(np.asarray(x, dtype=np.float32), 2, axis=2), 2, axis=3)
    return np.ascontiguousarray(np.repeat(big, INPUT_SHAPE[1], axis=1))


#: Training of the ``trained_*`` factories: Adam, cross-entropy, batch 64, seeded order.
EPOCHS, LEARNING_RATE, BATCH = 15, 1e-2, 64


def _trained(net: nn.Module) -> nn.Module:
    """``net`` trained on the digits training split (:func:`digits16`), in eval mode."""
    from hwmap.zoo.digits import digits_split

    x_train, _, y_train, _ = digits_split()
    x, y = torch.from_numpy(digits16(x_train)), torch.from_numpy(y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order, run after run
    try:
        torch.manual_seed(0)
        order = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        net.train()
        for _ in range(EPOCHS):
            perm = torch.randperm(len(x), generator=order)
            for i in range(0, len(x), BATCH):
                idx = perm[i:i + BATCH]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def residual_convnet() -> nn.Module:
    torch.manual_seed(7)
    net = ResidualNet()
    _seeded_bn(net)
    head = net.head[2]
    assert isinstance(head, nn.Linear)
    return _balanced(net, head)


def plain_convnet() -> nn.Module:
    """Three conv/BN/ReLU stages with max pooling, flattened into a linear classifier."""
    torch.manual_seed(11)
    net = nn.Sequential(_cbr(3, 16), nn.MaxPool2d(2), _cbr(16, 32), nn.MaxPool2d(2), _cbr(32, 32),
                        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    _seeded_bn(net)
    head = net[-1]
    assert isinstance(head, nn.Linear)
    return _balanced(net, head)


def trained_plain_convnet() -> nn.Module:
    """:func:`plain_convnet` trained on the digits (see the module docstring)."""
    return _trained(plain_convnet())


def trained_residual_convnet() -> nn.Module:
    """:func:`residual_convnet` trained on the digits (see the module docstring)."""
    return _trained(residual_convnet())
