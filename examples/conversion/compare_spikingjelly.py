"""hwmap's ANN-to-SNN conversion of ``zoo:digits_cnn`` beside spikingjelly's ``ann2snn`` on the
same network, the same calibration samples and the same scored samples, in one run.

    .venv/bin/python examples/conversion/compare_spikingjelly.py [--timesteps 1,2,4,8,16,32] [--json]

The data is ``zoo:digits`` split as every hwmap command splits it
(:func:`hwmap.flow.split_data`): the first quarter (90 samples) calibrates both converters,
the other 270 are scored. hwmap converts with its defaults (direct encoding, a scale per
channel at the 99.9th percentile, reset by subtraction, membrane starting at half the
threshold) and, for comparison, with the rate and Poisson encoders, with one scale per layer
(Rueckauer et al., Front. Neurosci. 11:682, 2017, as published) and with the percentile
chosen on the calibration samples (``percentile = "auto"``).

spikingjelly converts the same CNN rebuilt in plain PyTorch from the zoo's weights, with its
``RateCodingRecipe`` (IF neurons, reset by subtraction, threshold 1 after scaling) in its
layer-wise modes ``"99.9%"`` and ``"max"``, and with its channel-wise scales and
half-threshold start (``channel_wise=True, half_threshold=True``); its network gets the
analog image at every step (direct input, as in spikingjelly's own ann2snn examples) and is
read as the mean of its output over the steps. spikingjelly is not a dependency of hwmap:
``pip install --no-deps spikingjelly loguru requests`` (its declared dependencies pull
torchvision and torchaudio, which would replace the CPU torch the Makefile installs; its
``ann2snn`` needs neither). Without it, only hwmap's rows are printed.

Each cell is the accuracy on the scored samples (and, in ``--json``, the top-1 agreement with
the ANN, the relative RMS error of the outputs against the ANN's and, for hwmap, the spikes
per inference).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, Callable

import numpy as np

from hwmap import ConversionConfig, convert_to_snn, load_data, load_model
from hwmap.convert import count_spikes, parse_timesteps
from hwmap.execute import run_batched
from hwmap.flow import model_inputs, split_data
from hwmap.zoo.digits import CNN_LAYERS, load_weights

Row = dict[str, Any]


def score(out: np.ndarray, ann: np.ndarray, y: np.ndarray, spikes: np.ndarray | None = None) -> Row:
    out, ann = out.astype(np.float64), ann.astype(np.float64)
    row = {"accuracy": float(np.mean(out.argmax(1) == y)), "agreement": float(np.mean(out.argmax(1) == ann.argmax(1))),
           "rel_rms_error": float(np.linalg.norm(out - ann) / np.linalg.norm(ann))}
    if spikes is not None:
        row["spikes_per_inference"] = float(np.mean(spikes))
    return row


def hwmap_rows(timesteps: list[int], xc: np.ndarray, xs: np.ndarray, ann: np.ndarray, y: np.ndarray) -> dict[str, list[Row]]:
    graph = load_model("zoo:digits_cnn")
    variants: dict[str, dict[str, Any]] = {
        "hwmap, direct (default)": {},
        "hwmap, rate": {"encoding": "rate"},
        "hwmap, poisson": {"encoding": "poisson"},
        "hwmap, direct, one λ per layer": {"normalization": "layer"},
        "hwmap, direct, percentile auto": {"percentile": "auto"},
    }
    rows: dict[str, list[Row]] = {}
    for label, settings in variants.items():
        rows[label] = []
        for t in timesteps:
            conv = convert_to_snn(graph, xc, ConversionConfig(timesteps=t, **settings))
            outs, spikes = count_spikes(conv, xs)
            rows[label].append({"timesteps": t, "percentile": conv.percentile,
                                **score(outs["output"], ann, y, spikes)})
    return rows


def torch_cnn() -> Any:
    """zoo:digits_cnn as a plain torch module (nn.ReLU modules, which ann2snn replaces)."""
    import torch
    from torch import nn

    w = load_weights("digits_cnn", CNN_LAYERS)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(256, 10))
    state = {"0.weight": w["conv1.W"], "0.bias": w["conv1.B"], "2.weight": w["conv2.W"], "2.bias": w["conv2.B"],
             "5.weight": w["fc.W"], "5.bias": w["fc.B"]}
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net.eval()


def spikingjelly_converter() -> Callable[..., Any] | str:
    """A function ``(net, calibration loader, **recipe options) -> converted net``, or why
    spikingjelly cannot be used here."""
    try:
        from spikingjelly.activation_based import ann2snn
    except Exception as e:  # not installed, or a missing dependency of its own
        return f"spikingjelly does not import ({type(e).__name__}: {e})"
    try:
        from loguru import logger

        logger.disable("spikingjelly")  # its conversion logs every step at INFO
    except ImportError:
        pass
    if hasattr(ann2snn, "RateCodingRecipe"):  # spikingjelly 2.x
        def convert(net: Any, loader: Any, **options: Any) -> Any:
            return ann2snn.FXConverter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, **options)).convert(net)
        return convert

    def convert_legacy(net: Any, loader: Any, **options: Any) -> Any:  # spikingjelly 0.0.0.0.14
        if set(options) - {"mode"}:
            raise TypeError(f"this spikingjelly has no {', '.join(sorted(set(options) - {'mode'}))}")
        return ann2snn.Converter(dataloader=loader, mode=options["mode"]).convert(net)
    return convert_legacy


def spikingjelly_rows(timesteps: list[int], xc: np.ndarray, yc: np.ndarray, xs: np.ndarray, ann: np.ndarray,
                      y: np.ndarray) -> dict[str, list[Row]] | str:
    convert = spikingjelly_converter()
    if isinstance(convert, str):
        return convert
    import torch
    from spikingjelly.activation_based import functional

    net = torch_cnn()
    with torch.no_grad():
        torch_ann = net(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(torch_ann, ann, rtol=1e-4, atol=1e-4)  # the same network
    loader = [(torch.from_numpy(xc), torch.from_numpy(yc))]
    variants = {"spikingjelly, mode 99.9%": {"mode": "99.9%"}, "spikingjelly, mode max": {"mode": "max"},
                "spikingjelly, 99.9% channel-wise, half threshold": {"mode": "99.9%", "channel_wise": True,
                                                                     "half_threshold": True}}
    rows: dict[str, list[Row]] = {}
    for label, options in variants.items():
        try:
            snn = convert(copy.deepcopy(net), loader, **options)
        except TypeError as e:
            rows[label] = [{"timesteps": t, "error": str(e)} for t in timesteps]
            continue
        x = torch.from_numpy(xs)
        rows[label] = []
        with torch.no_grad():
            functional.reset_net(snn)
            total = None
            for t in range(1, max(timesteps) + 1):
                step = snn(x)
                total = step if total is None else total + step
                if t in timesteps:
                    rows[label].append({"timesteps": t, **score((total / t).numpy(), ann, y)})
    return rows


def markdown(ann_acc: float, timesteps: list[int], rows: dict[str, list[Row]], n_calib: int, n_scored: int) -> str:
    head = "| converter | " + " | ".join(f"T={t}" for t in timesteps) + " |"
    lines = [f"zoo:digits_cnn on zoo:digits: {n_calib} samples calibrate, {n_scored} are scored; "
             f"the ANN's accuracy is {ann_acc:.2%}.", "", head, "|---|" + "---:|" * len(timesteps)]
    for label, cells in rows.items():
        text = [f"{c['accuracy']:.2%}" if "accuracy" in c else "n/a" for c in cells]
        lines.append(f"| {label} | " + " | ".join(text) + " |")
    lines += ["", "top-1 agreement with the ANN:", "", head, "|---|" + "---:|" * len(timesteps)]
    for label, cells in rows.items():
        text = [f"{c['agreement']:.2%}" if "agreement" in c else "n/a" for c in cells]
        lines.append(f"| {label} | " + " | ".join(text) + " |")
    lines += ["", "relative RMS error of the outputs against the ANN's:", "", head, "|---|" + "---:|" * len(timesteps)]
    for label, cells in rows.items():
        text = [f"{c['rel_rms_error']:.3f}" if "rel_rms_error" in c else "n/a" for c in cells]
        lines.append(f"| {label} | " + " | ".join(text) + " |")
    spiking = {k: v for k, v in rows.items() if v and "spikes_per_inference" in v[0]}
    lines += ["", "spikes per inference (hwmap, every IF neuron over the steps):", "", head,
              "|---|" + "---:|" * len(timesteps)]
    for label, cells in spiking.items():
        lines.append(f"| {label} | " + " | ".join(f"{c['spikes_per_inference']:,.0f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--timesteps", default="1,2,4,8,16,32", help="time-step counts (default: 1,2,4,8,16,32)")
    p.add_argument("--json", action="store_true", help="print every number as JSON (default: Markdown tables)")
    args = p.parse_args(argv)
    timesteps = parse_timesteps(args.timesteps)
    graph = load_model("zoo:digits_cnn")
    calib, scored = split_data(load_data("zoo:digits"))
    assert calib is not None and scored.y is not None and calib.y is not None
    xc = model_inputs(graph, calib, len(calib))["input"]
    xs = model_inputs(graph, scored)["input"]
    y = scored.y[:len(xs)]
    ann = run_batched(graph, xs)["output"]
    ann_acc = float(np.mean(ann.argmax(1) == y))
    rows = hwmap_rows(timesteps, xc, xs, ann, y)
    peer = spikingjelly_rows(timesteps, xc, calib.y, xs, ann, y)
    if isinstance(peer, str):
        print(f"note: {peer}: spikingjelly's rows are left out", file=sys.stderr)
    else:
        rows.update(peer)
    if args.json:
        print(json.dumps({"ann_accuracy": ann_acc, "calibration_samples": len(xc), "scored_samples": len(xs),
                          "timesteps": timesteps, "rows": rows}, indent=1))
    else:
        sys.stdout.write(markdown(ann_acc, timesteps, rows, len(xc), len(xs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
