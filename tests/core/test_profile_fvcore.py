"""Peer test: the profiler's MAC counts against fvcore's ``FlopCountAnalysis``.

The models are written here in plain torch (conv without bias, BatchNorm, ReLU, depthwise
groups, a residual network with 1×1 projection shortcuts), counted by fvcore on the torch
module, exported to ONNX (``dynamo=False``, BatchNorm kept as its own node) and profiled
by hwmap from the ONNX file. fvcore counts one "flop" per multiply-accumulate for conv and
linear layers, so hwmap's conv+fc MACs must equal fvcore's per conv/linear module, and
hwmap's ``macs="fvcore"`` convention must equal fvcore's total, BatchNorm and pooling
included.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
fvcore_flop = pytest.importorskip("fvcore.nn")
nn = torch.nn

import hwmap  # noqa: E402
from hwmap.profile import profile  # noqa: E402

# MobileNet V1: (output channels, depthwise stride) of the 13 depthwise-separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class MobileNetV1(nn.Module):
    """Howard et al. 2017, width 1.0 (arXiv:1704.04861)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers = [ConvBNReLU(3, 32, 3, 2)]
        c = 32
        for cout, s in BLOCKS:
            layers += [ConvBNReLU(c, c, 3, s, groups=c), ConvBNReLU(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 16, 3)
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _seeded(model: nn.Module) -> nn.Module:
    """Random BN affine terms and statistics: the exporter would otherwise merge identical
    initializers (fresh γ = running_var = 1) into Identity nodes."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _fvcore(model: nn.Module, x) -> tuple[int, dict[str, int]]:
    fca = fvcore_flop.FlopCountAnalysis(model, (x,))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(fca.total()), {k: int(v) for k, v in fca.by_module().items()}


def _export(model: nn.Module, x, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # constant folding off: the exporter would otherwise fold each BatchNorm into its conv
        torch.onnx.export(model, (x,), str(path), dynamo=False, do_constant_folding=False,
                          input_names=["input"], output_names=["output"])
    return path


def _module_of(node_name: str) -> str:
    """The torch module path of an exported node: '/features/features.0/conv/Conv' ->
    'features.0.conv', '/layer2/down/down.0/Conv' -> 'layer2.down.0' (a Sequential's child
    scope repeats the Sequential's own name)."""
    path: list[str] = []
    for p in node_name.strip("/").split("/")[:-1]:
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return ".".join(path)


def _compare(model: nn.Module, shape: tuple[int, ...], tmp_path: Path) -> tuple[int, int]:
    model = _seeded(model)
    x = torch.randn(*shape)
    total, by_module = _fvcore(model, x)
    graph = hwmap.load_model(str(_export(model, x, tmp_path / "m.onnx")))
    prof = profile(graph)
    compute = {m: n for m, n in model.named_modules() if isinstance(n, (nn.Conv2d, nn.Linear))}
    seen = set()
    for row in prof.rows:
        if row.weights == 0:
            assert row.macs == 0, row
            continue
        module = _module_of(row.name)
        assert module in compute, (row.name, module)
        assert row.macs == by_module[module], (row.name, row.macs, by_module[module])
        seen.add(module)
    assert seen == set(compute)  # every conv/linear is one row, none left out
    assert prof.totals.macs == sum(by_module[m] for m in compute)
    fv = profile(graph, macs="fvcore")
    assert fv.totals.macs == total
    # per row: the conv's MACs plus the BatchNorm that joined it, as fvcore counts them
    modules = dict(model.named_modules())
    for row in fv.rows:
        if not row.weights:
            continue
        conv = _module_of(row.name)
        bn = _bn_of(conv)
        assert (bn != "" and bn in modules) == ("BatchNormalization" in row.post_ops), row.name
        assert row.macs == by_module[conv] + (by_module[bn] if bn else 0), (row.name, bn)
    return prof.totals.macs, total


def _bn_of(conv: str) -> str:
    """The BatchNorm module after conv module ``conv`` in these models (conv -> bn,
    conv1 -> bn1, down.0 -> down.1)."""
    head, _, leaf = conv.rpartition(".")
    pairs = {"conv": "bn", "conv1": "bn1", "conv2": "bn2", "0": "1"}
    return f"{head}.{pairs[leaf]}" if head and leaf in pairs else ""


def test_mobilenet_per_layer_matches_fvcore(tmp_path: Path) -> None:
    conv_fc, fv_total = _compare(MobileNetV1(), (1, 3, 64, 64), tmp_path)
    assert conv_fc < fv_total  # fvcore adds BatchNorm and the pool


def test_residual_per_layer_matches_fvcore(tmp_path: Path) -> None:
    _compare(SmallResNet(), (1, 3, 32, 32), tmp_path)


def test_mobilenet_224_totals_match_fvcore_and_reference(tmp_path: Path) -> None:
    model = _seeded(MobileNetV1())
    x = torch.randn(1, 3, 224, 224)
    total, by_module = _fvcore(model, x)
    graph = hwmap.load_model(str(_export(model, x, tmp_path / "m.onnx")))
    prof = profile(graph)
    # Howard et al. 2017: 569 M mult-adds (conv + fc), 4.2 M parameters
    assert prof.totals.macs == 568_740_352
    assert total == 578_875_904
    assert profile(graph, macs="fvcore").totals.macs == total
    assert prof.totals.weights == 4_209_088
    assert prof.totals.params == sum(p.numel() for p in model.parameters()) == 4_231_976
    # fvcore's own split: conv + linear against the rest
    fc_conv = sum(v for k, v in by_module.items()
                  if isinstance(dict(model.named_modules()).get(k), (nn.Conv2d, nn.Linear)))
    assert fc_conv == prof.totals.macs


def test_fresh_batchnorm_counts_like_fvcore(tmp_path: Path) -> None:
    """An untrained model (γ = 1, β = 0, shared initializers the exporter turns into
    Identity nodes) still counts BN as fvcore does: affine, 2 per element."""
    model = SmallResNet().eval()
    x = torch.randn(1, 3, 16, 16)
    total, by_module = _fvcore(model, x)
    graph = hwmap.load_model(str(_export(model, x, tmp_path / "m.onnx")))
    assert profile(graph, macs="fvcore").totals.macs == total
    assert profile(graph).totals.params == sum(p.numel() for p in model.parameters())
