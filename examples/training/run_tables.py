"""The chapter's Tables 3.1–3.3 on generated moving digits: accuracy against activation sparsity
for a baseline CNN, the temporal delta layer with fixed-point activations at 8, 7, 6 and 5
bits, and the temporal delta layer with learned step size quantization (mixed precision).

    .venv/bin/python examples/training/run_tables.py [--quick] [--json OUT.json]

Data: :mod:`moving_digits` (generated from scikit-learn's digits: 8×8 digits translating
across a 16×16 frame, 8 frames per video; 1,437 training and 360 test videos).

Network, per frame: conv 1→8 3×3 → ReLU → conv 8→16 3×3 stride 2 → ReLU → conv 16→32 3×3
stride 2 → ReLU → fc 512→10; a video's class is the arg-max of its frames' mean logits. The
delta variants put a :class:`hwmap.nn.TemporalDelta` after each ReLU (the chapter's Fig. 3.3):
the first layer's input and the logits stay at full precision (Section 3.3.4.3).

Protocol (the chapter's Section 3.3.4.2): a network is trained first; each delta variant
starts from its weights and is fine-tuned with its quantizer and the sparsity penalty (eq.
3.15, the same ``λ`` on every delta layer); the baseline row is that network fine-tuned for
the same epochs without delta layers, so every row has had the same training. Scenario 1: fixed-point activations
(eq. 3.9–3.11), the range of each layer the largest activation seen in training. Scenario 2:
unclipped per-channel LSQ (eq. 3.13–3.14), steps initialized for ``LSQ_INIT_BITS`` bits and
learned with the weights; the bits each channel ends up needing (the largest code its
final step gives on the training videos) are reported, and the LSQ
variant is also fine-tuned at the other λ of ``LAMBDA_SWEEP`` (the trade-off table).

Measured on the test videos (:func:`hwmap.nn.measure_sparsity`): *activation sparsity* is the
fraction of zeros in what the layers after the ReLUs receive, weighted by size: the ReLU
outputs for the baseline, the delta maps ``ΔZ`` (every frame, the first included) for the
delta variants. The MACs a zero-skipping target would do: each layer's MACs (from
:func:`hwmap.profile.profile` on the exported per-frame model) times the fraction of its input
that is not zero (the first layer's input: the frames themselves). Delta inference (:meth:`hwmap.nn.DeltaNet.stream`) is checked
against dense inference on 64 test videos (eq. 3.7): the largest difference of the logits and
the agreement of the predicted classes are printed.

Everything is seeded and runs on one thread with deterministic algorithms: the same command
prints the same tables (and writes the same JSON). ``--quick`` runs a tiny configuration (for the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moving_digits import moving_digits  # noqa: E402

from hwmap.frontends.torch import graph_from_module  # noqa: E402
from hwmap.nn import DeltaNet, FixedPointQuantizer, LSQQuantizer, TemporalDelta, measure_sparsity  # noqa: E402
from hwmap.nn.meters import weighted  # noqa: E402
from hwmap.parsing import ParseOptions  # noqa: E402
from hwmap.profile import profile  # noqa: E402

SEED = 0
BATCH = 32
BASE_EPOCHS = 20
BASE_LR = 3e-3
FT_EPOCHS = 6
FT_LR = 1e-3
#: λ of eq. 3.15 on every delta layer (picked by hand: larger trades accuracy for sparsity).
LAMBDA = 1.0
#: Further λ the LSQ variant is fine-tuned with, for the trade-off table.
LAMBDA_SWEEP = (0.0, 4.0, 16.0)
FXP_BITS = (8, 7, 6, 5)
#: The fixed-point width of the Table 3.1 row (the chapter reports 6 bits for its spatial stream).
TABLE_FXP_BITS = 6
#: The unclipped LSQ steps start at 2·mean|Z|/sqrt(Q_P) of this many bits (Esser et al. 2020).
LSQ_INIT_BITS = 4
CHANNELS = (8, 16, 32)


def build(kind: str, bits: int = 8, lam: float = LAMBDA) -> DeltaNet:
    """The CNN; ``kind`` is ``baseline``, ``delta`` (FP32 deltas), ``fxp`` or ``lsq``."""
    c1, c2, c3 = CHANNELS

    def delta(i: int, ch: int) -> list[nn.Module]:
        if kind == "baseline":
            return []
        name = f"delta{i}"
        q: nn.Module | None = None
        if kind == "fxp":
            q = FixedPointQuantizer(bits, name=f"fxp{i}")
        elif kind == "lsq":
            q = LSQQuantizer(bits, channels=ch, clip=False, init_bits=LSQ_INIT_BITS, name=f"lsq{i}")
        return [TemporalDelta(q, lam, name)]

    return DeltaNet([
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), *delta(1, c1),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(), *delta(2, c2),
        nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(), *delta(3, c3),
        nn.Flatten(), nn.Linear(c3 * 4 * 4, 10)])


def _weighted_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def copy_weights(src: DeltaNet, dst: DeltaNet) -> None:
    for a, b in zip(_weighted_layers(src), _weighted_layers(dst), strict=True):
        b.load_state_dict(a.state_dict())


def train(net: DeltaNet, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> None:
    """Adam on cross-entropy of the video logits (mean over frames) plus the sparsity penalty."""
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():  # initialize the LSQ steps and the fixed-point ranges on one batch
        net(x[:BATCH])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for start in range(0, x.shape[0], BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]).mean(dim=1), y[idx]) + net.sparsity_penalty()
            loss.backward()
            opt.step()


@torch.no_grad()
def measure_bits(net: DeltaNet, x: torch.Tensor) -> None:
    """Set each LSQ step's largest code (hence its bits) to what the trained steps give on ``x``."""
    quantizers = [m for m in net.modules() if isinstance(m, LSQQuantizer)]
    if not quantizers:
        return
    for q in quantizers:
        q.reset_bits()
    net.train()
    for i in range(0, x.shape[0], 128):
        net(x[i:i + 128])
    net.eval()


@torch.no_grad()
def accuracy(net: DeltaNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i:i + 128]).mean(dim=1).argmax(dim=1) for i in range(0, x.shape[0], 128)])
    return float((pred == y).float().mean())


def layer_macs(net: DeltaNet, frame: int) -> list[int]:
    """MACs per frame of each weighted layer, from hwmap's profiler on the exported frame model."""
    g = graph_from_module(net.frame_model().eval(), name="moving_digits_cnn",
                          options=ParseOptions(input_shape=(1, 1, frame, frame)))
    return [int(r.macs) for r in profile(g).rows if r.macs]


@dataclass
class Result:
    setup: str
    bits: str
    accuracy: float
    sparsity: float  # transmitted, size-weighted over the metered layers
    spatial: float
    temporal: float | None
    layers: list[dict[str, Any]]
    macs_dense: int
    macs_skipping: float
    delta_vs_dense: float | None = None
    delta_agreement: float | None = None
    lsq_bits: list[list[int]] = field(default_factory=list)


def evaluate(setup: str, bits: str, net: DeltaNet, x: torch.Tensor, y: torch.Tensor, macs: list[int]) -> Result:
    rows = measure_sparsity(net, x)
    input_zero = float((x == 0).float().mean())
    feeds = [input_zero] + [r.transmitted for r in rows]  # what each weighted layer reads
    skipping = sum(m * (1.0 - s) for m, s in zip(macs, feeds, strict=True))
    res = Result(setup, bits, accuracy(net, x, y), weighted(rows, "transmitted") or 0.0,
                 weighted(rows, "spatial") or 0.0, weighted(rows, "temporal"),
                 [asdict(r) for r in rows], sum(macs), skipping)
    if any(True for _ in net.deltas()):
        with torch.no_grad():
            net.eval()
            n = min(64, x.shape[0])
            streamed, dense = net.stream(x[:n]), net(x[:n])
            res.delta_vs_dense = float((streamed - dense).abs().max())
            res.delta_agreement = float((streamed.mean(1).argmax(1) == dense.mean(1).argmax(1)).float().mean())
    res.lsq_bits = [m.required_bits() for m in net.modules() if isinstance(m, LSQQuantizer)]
    return res


def run(quick: bool = False) -> tuple[list[Result], list[tuple[float, Result]]]:
    """The rows of the tables, and the LSQ variant at each λ of the sweep (``LAMBDA`` included)."""
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    limit, base_epochs, ft_epochs = (48, 1, 1) if quick else (None, BASE_EPOCHS, FT_EPOCHS)
    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in moving_digits(seed=SEED, limit=limit))
    frame = xtr.shape[-1]
    pretrained = build("baseline")
    train(pretrained, xtr, ytr, base_epochs, BASE_LR, SEED)
    macs = layer_macs(pretrained, frame)

    def finetune(kind: str, bits: int, lam: float) -> DeltaNet:
        net = build(kind, bits, lam)
        copy_weights(pretrained, net)
        train(net, xtr, ytr, ft_epochs, FT_LR, SEED + 1)
        measure_bits(net, xtr)
        return net

    # the baseline gets the same fine-tuning epochs as every variant (without delta layers)
    results = [evaluate("Baseline", "32", finetune("baseline", 32, 0.0), xte, yte, macs)]
    variants = [("Temporal delta layer, FP32 activations", "32", "delta", 32)]
    variants += [("Temporal delta layer with fixed point quantization", str(b), "fxp", b) for b in FXP_BITS]
    variants += [("Temporal delta layer with learned step-size quantization", "mixed", "lsq", 8)]
    for setup, label, kind, bits in variants:
        results.append(evaluate(setup, label, finetune(kind, bits, LAMBDA), xte, yte, macs))
    sweep = [(LAMBDA, results[-1])]
    for lam in LAMBDA_SWEEP:
        sweep.append((lam, evaluate(f"LSQ, λ = {lam}", "mixed", finetune("lsq", 8, lam), xte, yte, macs)))
    return results, sorted(sweep, key=lambda p: p[0])


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def tables(results: list[Result], sweep: list[tuple[float, Result]]) -> str:
    """The results as Markdown tables in the shape of the chapter's Tables 3.1–3.3."""
    base = results[0]
    fxp = next(r for r in results if r.bits == str(TABLE_FXP_BITS))
    lsq = results[-1]
    out = [f"Table 3.1/3.2 shape (fixed point at {TABLE_FXP_BITS} bits; λ = {LAMBDA}):", "",
           "| Model setup | Accuracy (%) | Activation sparsity (%) |", "|---|---:|---:|"]
    for r in (base, fxp, lsq):
        out.append(f"| {r.setup} | {_pct(r.accuracy)} | {_pct(r.sparsity)} |")
    out += ["", "Table 3.3 shape (temporal delta layer with fixed-point activations of each bit width; "
            "32 = no quantization):", "",
            "| Activation bit width | Setup | Accuracy (%) | Activation sparsity (%) | Spatial (%) | Temporal (%) |",
            "|---|---|---:|---:|---:|---:|"]
    for r in results[:-1]:
        kind = "baseline (no delta layer)" if r is base else "delta layer"
        out.append(f"| {r.bits} | {kind} | {_pct(r.accuracy)} | {_pct(r.sparsity)} | {_pct(r.spatial)} "
                   f"| {_pct(r.temporal)} |")
    out += ["", "MACs per frame on a zero-skipping target (a MAC is skipped when its activation operand is 0):",
            "", "| Setup | Bits | Dense MACs | MACs done | Saved (%) | Delta vs dense: max abs diff, top-1 agreement |",
            "|---|---|---:|---:|---:|---|"]
    for r in results:
        diff = "–" if r.delta_vs_dense is None else f"{r.delta_vs_dense:.1e}, {_pct(r.delta_agreement)} %"
        out.append(f"| {r.setup} | {r.bits} | {r.macs_dense:,} | {r.macs_skipping:,.0f} "
                   f"| {_pct(1 - r.macs_skipping / r.macs_dense)} | {diff} |")
    out += ["", "Per layer (transmitted sparsity %, at the three places after the ReLUs):", "",
            "| Setup | Bits | " + " | ".join(r["name"] for r in lsq.layers) + " |",
            "|---|---|" + "---:|" * len(lsq.layers)]
    for r in results:
        out.append(f"| {r.setup} | {r.bits} | " + " | ".join(_pct(row["transmitted"]) for row in r.layers) + " |")
    out += ["", "Bits each channel needs after LSQ training (unclipped, eq. 3.13; the largest unsigned activation "
            "code on the training videos):", "",
            "| Layer | Channels | Min | Median | Max | Histogram (bits: channels) |", "|---|---:|---:|---:|---:|---|"]
    for i, bits in enumerate(lsq.lsq_bits, start=1):
        hist = ", ".join(f"{b}: {bits.count(b)}" for b in sorted(set(bits)))
        out.append(f"| delta{i} | {len(bits)} | {min(bits)} | {int(np.median(bits))} | {max(bits)} | {hist} |")
    out += ["", "The penalty coefficient λ (eq. 3.15), temporal delta layer with LSQ:", "",
            "| λ | Accuracy (%) | Activation sparsity (%) | MACs saved (%) | Bits per channel (max over layers) |",
            "|---:|---:|---:|---:|---:|"]
    for lam, r in sweep:
        widest = max(max(b) for b in r.lsq_bits) if r.lsq_bits else "–"
        out.append(f"| {lam:g} | {_pct(r.accuracy)} | {_pct(r.sparsity)} | {_pct(1 - r.macs_skipping / r.macs_dense)} "
                   f"| {widest} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny configuration (48 videos, 1 epoch)")
    ap.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = ap.parse_args(argv)
    results, sweep = run(args.quick)
    print(tables(results, sweep))
    if args.json:
        doc = {"results": [asdict(r) for r in results], "lambda_sweep": [{"lambda": lam, **asdict(r)} for lam, r in sweep]}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
