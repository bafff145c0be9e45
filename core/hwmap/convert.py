"""``hwmap convert``: an ANN converted to a spiking network at several time-step counts and
encodings, each scored against the ANN on the same samples.

The data is split as everywhere in hwmap (:func:`hwmap.flow.split_data`): the first
``--calibrate`` samples calibrate the conversion (every scale ``λ``, and the percentile
itself when it is ``"auto"``); the rest are scored, and only they are. For each time-step
count ``T`` and encoding the report gives the converted network's accuracy (with labels),
the fraction of scored samples whose top-1 class agrees with the ANN's, the relative RMS
error of its outputs against the ANN's, and the spikes per inference: every spike of every
IF neuron over the ``T`` steps of one sample (the encoder's input spikes are not counted),
averaged over the scored samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .data import Dataset, check_labels
from .errors import ConfigError, DataError
from .graph import Graph, Node, Tensor
from .conversion_config import ConversionConfig
from .passes.snn_convert import Conversion, check_timesteps, convert_to_snn
from .progress import NullProgress, Progress

__all__ = ["ConvertRun", "ConvertReport", "convert_and_score", "count_spikes", "parse_timesteps",
           "conversion_config", "REPORT_FORMAT"]

REPORT_FORMAT = "hwmap.convert/1"


@dataclass
class ConvertRun:
    """One converted network scored: its ``encoding`` and ``timesteps``, accuracy (``None``
    without labels), top-1 agreement with the ANN (``None`` unless the output is
    classifier-shaped), relative RMS error of the outputs against the ANN's, the mean
    spikes per inference, and the percentile its scales came from."""

    encoding: str
    timesteps: int
    accuracy: float | None
    agreement: float | None
    rel_rms_error: float
    spikes_per_inference: float
    percentile: float

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ConvertReport:
    """Everything ``hwmap convert`` prints: the split, the ANN's accuracy, one
    :class:`ConvertRun` per (encoding, T), and the conversion (scales, notes, config) of
    the network ``-o`` writes (the first encoding at the largest T)."""

    model: str
    data: str
    calibration_samples: int
    scored_samples: int
    ann_accuracy: float | None
    runs: list[ConvertRun]
    config: ConversionConfig
    conversion: Conversion
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "model": self.model, "data": self.data,
                "calibration_samples": self.calibration_samples, "scored_samples": self.scored_samples,
                "ann_accuracy": self.ann_accuracy, "runs": [r.to_json() for r in self.runs],
                "config": self.config.model_dump(mode="json"),
                "saved": {"encoding": self.conversion.config.encoding, "timesteps": self.conversion.config.timesteps},
                "conversion": self.conversion.to_json()}


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4,8"`` as step counts (each an integer of at least 1, no repeats); a
    :class:`DataError` naming the value otherwise."""
    out: list[int] = []
    for part in str(text).split(","):
        p = part.strip()
        try:
            t = int(p)
        except ValueError:
            raise DataError(f"--timesteps {text!r}: {p!r} is not an integer; give counts like 1,2,4,8") from None
        if t < 1:
            raise DataError(f"--timesteps {text!r}: {t} time steps; each count must be at least 1")
        check_timesteps(t)
        if t not in out:
            out.append(t)
    from .ops.time import MAX_TIMESTEPS

    if any(t > MAX_TIMESTEPS for t in out):
        raise DataError(f"--timesteps {text!r}: at most {MAX_TIMESTEPS} time steps")
    return out


def conversion_config(overrides: Iterable[str] = (), **fixed: Any) -> ConversionConfig:
    """The default :class:`ConversionConfig` with ``--set KEY=VALUE`` overrides (``KEY`` a
    field, optionally prefixed ``conversion.``) and ``fixed`` values; a :class:`ConfigError`
    with one line per problem."""
    from .config import parse_overrides, validate_config

    body: dict[str, Any] = ConversionConfig().model_dump(mode="json")
    for path, value in parse_overrides(overrides):
        if path[:1] == ["conversion"]:
            path = path[1:]
        if len(path) != 1 or path[0] not in body:
            key = ".".join(path)
            raise ConfigError(f"--set {key}: not a conversion setting (the settings: {', '.join(body)})")
        if path[0] in fixed:
            raise ConfigError(f"--set {path[0]}: give it with --{path[0]}")
        body[path[0]] = value
    body.update({k: v for k, v in fixed.items() if v is not None})
    config = validate_config(ConversionConfig, body, "conversion settings")
    assert isinstance(config, ConversionConfig)
    return config


def count_spikes(conversion: Conversion, x: np.ndarray, batch_size: int = 64) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The converted graph's outputs on ``x`` and each sample's spike count (every IF neuron,
    every step). The count is the graph's own: a ``Readout`` in ``spike_count`` mode is
    added on each IF node's output, so nothing per step is kept in memory."""
    from .execute import run_batched

    g = conversion.graph.copy()
    counts: list[str] = []
    for node in [n for n in g.nodes if n.op == "IF"]:
        t = node.outputs[0]
        name = f"{t}.spike_count"
        while name in g.tensors:
            name += "'"
        g.tensors[name] = Tensor(name, g.tensors[t].shape, "float32")
        g.nodes.append(Node(f"{node.name}.spike_count", "Readout", [t], [name], {"mode": "spike_count"}))
        counts.append(name)
    g.outputs = list(g.outputs) + counts
    out = run_batched(g, x, batch_size)
    n = len(x)
    spikes = sum((out[c].reshape(n, -1).astype(np.float64).sum(axis=1) for c in counts), np.zeros(n))
    return {o: out[o] for o in conversion.graph.outputs}, spikes


def convert_and_score(graph: Graph, data: Dataset, timesteps: Sequence[int], encodings: Sequence[str],
                      config: ConversionConfig, *, calibrate: int | None = None, model: str | None = None,
                      progress: Progress | None = None) -> ConvertReport:
    """Convert ``graph`` with ``config`` at each of ``timesteps`` for each of ``encodings``
    (calibrated on the calibration part of ``data``) and score each on the scored part
    against the ANN."""
    from .execute import run_batched
    from .flow import model_inputs, split_data

    prog = progress or NullProgress()
    if not timesteps or not encodings:
        raise DataError("nothing to convert: give at least one time-step count and one encoding")
    if len(graph.outputs) != 1:
        raise DataError(f"the conversion is scored on one output; {graph.name!r} has {len(graph.outputs)}")
    check_labels(data, graph)
    calib, scored = split_data(data, calibrate)
    if calib is None:
        raise DataError("--calibrate 0 leaves no sample to calibrate the conversion (each layer's scale comes from "
                        "the calibration samples)")
    xs = model_inputs(graph, scored)[graph.inputs[0]]
    xc = model_inputs(graph, calib, len(calib))[graph.inputs[0]]
    out_name = graph.outputs[0]
    with prog.stage(f"running the ANN on {len(xs)} scored samples"):
        ann = run_batched(graph, xs, progress=prog.update)[out_name]
    y = scored.y[:len(xs)] if scored.y is not None else None
    classifier = ann.ndim == 2 and ann.shape[1] > 1
    runs: list[ConvertRun] = []
    kept: Conversion | None = None
    keep = (encodings[0], max(timesteps))
    for enc in encodings:
        for t in timesteps:
            cfg = config.model_copy(update={"encoding": enc, "timesteps": t})
            with prog.stage(f"converting ({enc}, T = {t}) and running {len(xs)} samples"):
                conv = convert_to_snn(graph, xc, cfg)
                outs, spikes = count_spikes(conv, xs)
            snn = outs[out_name].astype(np.float64)
            ref = ann.astype(np.float64)
            norm = float(np.linalg.norm(ref))
            err = float(np.linalg.norm(snn - ref)) / norm if norm > 0 else float(np.linalg.norm(snn - ref))
            runs.append(ConvertRun(
                enc, t,
                float(np.mean(np.argmax(snn, axis=1) == y)) if classifier and y is not None else None,
                float(np.mean(np.argmax(snn, axis=1) == np.argmax(ref, axis=1))) if classifier else None,
                err, float(np.mean(spikes)), conv.percentile))
            if (enc, t) == keep:
                kept = conv
    assert kept is not None
    ann_acc = float(np.mean(np.argmax(ann, axis=1) == y)) if classifier and y is not None else None
    return ConvertReport(model or graph.name, data.name, len(xc), len(xs), ann_acc, runs, config, kept,
                         list(kept.notes))
