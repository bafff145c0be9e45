"""Factories the PyTorch frontend tests load as ``torch_models:NAME`` (plain torch, seeded)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv → BN → ReLU → MaxPool → flatten (via view) → Linear: exercises BN, pooling and
    the Shape/Gather/Concat/Reshape chain torch emits for ``x.view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.view(x.size(0), -1))


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    """Non-trivial running statistics so that folding them is actually tested."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = SmallCNN()
    _randomize_bn(m.bn)
    return m


class Residual(nn.Module):
    """conv1 → relu → conv2, plus the block input: a residual Add of two dynamic tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


def residual() -> nn.Module:
    torch.manual_seed(1)
    return Residual()


def mlp() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Sigmoid())


def conv_bn_grouped() -> nn.Module:
    """A depthwise conv without bias followed by BN (MobileNet's pattern)."""
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    _randomize_bn(m[1])
    return m


def not_a_module() -> int:
    return 42


def raising() -> nn.Module:
    raise RuntimeError("weights file is missing")


NOT_CALLABLE = 3
