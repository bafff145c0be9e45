"""The tool flow: parse → legalize → map → emit → simulate → estimate.

``compile_model`` runs one model on one target and writes the output directory atomically:
everything is built in a hidden sibling folder and renamed into place at the end, so a
failure leaves nothing half-written. ``simulate_dir`` re-runs the artifacts of such a
directory. ``compare`` runs one model on several targets; a target that cannot take the
model becomes a record that says why.

Data (``--data``) is split: the first ``--calibrate N`` samples calibrate (quantization
ranges, conversion scales: ``Target.calibration``), the rest are scored (simulated and
compared with the reference model); ``simulate`` calibrates nothing and scores all the data
it is given. The KPI record says how many samples each side had (``provenance.data``).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, MutableMapping, Sequence

import numpy as np

from .data import Dataset, check_labels
from .errors import DataError, DoesNotFitError, HwmapError, TargetError
from .files import check_output_dir, commit_dir, remove_stale, temp_dir
from .graph import Graph
from .jsonio import dumps
from .kpi import Fidelity, KPIs
from .progress import NullProgress, Progress
from .registry import get_registry
from .source import ParseOptions, load_model, require_known
from .target import Artifacts, Legalized, Mapping, Simulation, Target

__all__ = [
    "CompileResult",
    "Scored",
    "compile_model",
    "simulate_dir",
    "compare",
    "fidelity",
    "model_inputs",
    "split_data",
    "calibration_size",
    "MAX_SIM_SAMPLES",
    "MAX_CALIBRATION_SAMPLES",
]

#: Samples of ``--data`` scored (simulated for fidelity and activity); the rest are not
#: needed for a stable top-1 agreement and keep slow simulators usable.
MAX_SIM_SAMPLES = 512
#: Scored samples the sparsity meters run on (the legalized graph, quantized, through the
#: reference executor): enough for stable fractions, few enough to add little to a compile.
MAX_SPARSITY_SAMPLES = 64
#: The default calibration split: the first quarter of the data, at most this many samples.
MAX_CALIBRATION_SAMPLES = 512
#: The smallest data set the default split accepts (one sample calibrates, the rest score).
MIN_SPLIT_SAMPLES = 4


@dataclass
class Scored:
    """The artifacts run on scored data and judged: the simulation, its fidelity to the
    reference model, and with labels the target's and the reference's accuracy."""

    simulation: Simulation
    fidelity: Fidelity
    accuracy: float | None
    reference_accuracy: float | None
    samples: int


@dataclass
class CompileResult:
    graph: Graph
    legalized: Legalized
    mapping: Mapping
    artifacts: Artifacts | None
    simulation: Simulation | None
    kpis: KPIs
    outdir: Path | None


def calibration_size(n: int, calibrate: int | None) -> int:
    """How many of ``n`` samples calibrate: ``calibrate`` if given, else the first quarter
    (at most :data:`MAX_CALIBRATION_SAMPLES`). At least one sample must remain to score."""
    if calibrate is None:
        if n < MIN_SPLIT_SAMPLES:
            raise DataError(f"{n} sample{'s' if n != 1 else ''} are too few to split into calibration and "
                            f"scoring (the default calibrates the first quarter; at least {MIN_SPLIT_SAMPLES} "
                            "samples); pass --calibrate 0 to score them all without calibrating")
        return min(n // 4, MAX_CALIBRATION_SAMPLES)
    if calibrate < 0:
        raise DataError(f"--calibrate {calibrate}: must be 0 or more samples")
    if calibrate >= n:
        raise DataError(f"--calibrate {calibrate} leaves none of the {n} samples to score; "
                        f"use at most {n - 1}")
    return calibrate


def split_data(data: Dataset, calibrate: int | None = None) -> tuple[Dataset | None, Dataset]:
    """``(calibration part or None, scored part)`` of ``data`` (see :func:`calibration_size`);
    the scored part is cut at :data:`MAX_SIM_SAMPLES`."""
    k = calibration_size(len(data), calibrate)
    x, y = data.x, data.y
    calib = Dataset(x[:k], None if y is None else y[:k], data.name) if k else None
    end = k + MAX_SIM_SAMPLES
    scored = Dataset(x[k:end], None if y is None else y[k:end], data.name)
    return calib, scored


def model_inputs(graph: Graph, data: Dataset, max_samples: int = MAX_SIM_SAMPLES, *,
                 sequences: bool = False) -> dict[str, np.ndarray]:
    """The data as the graph's input dict, checked against its declared shape.

    ``sequences``: also accept ``(N, T, *features)`` for any graph (the profiler's sequences
    of frames, :mod:`hwmap.sparsity`)."""
    if len(graph.inputs) != 1:
        raise DataError(f"--data feeds one input but the model has {len(graph.inputs)}: {', '.join(graph.inputs)}",
                        where=data.name)
    name = graph.inputs[0]
    want = graph.tensor(name).shape[1:]
    x = data.x[:max_samples]
    if ("dt" in graph.meta or sequences) and x.ndim == len(want) + 2:  # (N, T, *features): time steps, frames
        got = x.shape[2:]
    else:
        got = x.shape[1:]
    if tuple(got) != tuple(want):
        if int(np.prod(got)) == int(np.prod(want)) and x.ndim == len(want) + 1:
            x = x.reshape((x.shape[0], *want))
        else:
            raise DataError(f"samples of shape {list(got)} do not fit model input {name!r} of shape {list(want)}",
                            where=data.name)
    return {name: np.ascontiguousarray(x, dtype=np.float32)}


def fidelity(reference: dict[str, np.ndarray], simulated: dict[str, np.ndarray]) -> Fidelity:
    """Compare simulated outputs with the reference model's.

    A classifier-shaped output (batch × classes, classes > 1) is judged by top-1 agreement;
    any other by the maximum absolute error. ``detail`` always carries, per output, the
    maximum absolute error, the relative errors ``max |sim − ref| / max |ref|``
    (``rel_max_error``) and ``‖sim − ref‖ / ‖ref‖`` (``rel_rms_error``), top-1 agreement where
    defined, and ``bit_exact`` (1.0 when every output is identical).
    """
    detail: dict[str, float] = {}
    metric, value, samples = "max_abs_error", 0.0, 0
    exact = True
    for name, ref in reference.items():
        if name not in simulated:
            raise TargetError(f"the simulation returned no output {name!r} (got: {', '.join(simulated) or 'none'})")
        sim = np.asarray(simulated[name])
        ref = np.asarray(ref)
        if sim.shape != ref.shape:
            raise TargetError(f"simulated output {name!r} has shape {list(sim.shape)}, the reference {list(ref.shape)}")
        samples = int(ref.shape[0]) if ref.ndim else 1
        diff = sim.astype(np.float64) - ref.astype(np.float64)
        err = float(np.max(np.abs(diff))) if ref.size else 0.0
        detail[f"{name}.max_abs_error"] = err
        peak = float(np.max(np.abs(ref))) if ref.size else 0.0
        norm = float(np.linalg.norm(ref.astype(np.float64)))
        detail[f"{name}.rel_max_error"] = err / peak if peak > 0 else (0.0 if err == 0 else float("inf"))
        dnorm = float(np.linalg.norm(diff))
        detail[f"{name}.rel_rms_error"] = dnorm / norm if norm > 0 else (0.0 if dnorm == 0 else float("inf"))
        exact = exact and bool(np.array_equal(sim, ref))
        if ref.ndim == 2 and ref.shape[1] > 1:
            agree = float(np.mean(np.argmax(sim, axis=1) == np.argmax(ref, axis=1)))
            detail[f"{name}.top1_agreement"] = agree
            metric, value = "top1_agreement", agree
        elif metric == "max_abs_error":
            value = max(value, err)
    detail["bit_exact"] = 1.0 if exact else 0.0
    return Fidelity(metric=metric, value=value, samples=samples, detail=detail)


def encodings_refused(graph: Graph, target: Target) -> list[str]:
    """A violation for each ``Encoder`` whose encoding the target does not take
    (:attr:`~hwmap.target.TargetSpec.encodings`)."""
    takes = target.spec.encodings
    return [f"encoding at node {n.name!r}: {target.name!r} takes {', '.join(takes) or 'no'} encoded input, "
            f"not {n.attrs.get('encoding', 'direct')!r}"
            for n in graph.nodes if n.op == "Encoder" and n.attrs.get("encoding", "direct") not in takes]


def _samples(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _reference(graph: Graph, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
    from .execute import run_batched

    name = graph.inputs[0]
    with progress.stage(f"running the reference model on {_samples(inputs)} samples"):
        return run_batched(graph, inputs[name], progress=progress.update)


def _simulate_and_compare(target: Target, artifacts_dir: Path, graph: Graph, scored: Dataset,
                          reference: dict[str, np.ndarray] | None, progress: Progress) -> Scored:
    """Run the artifacts on the scored data and judge them against the reference model (run
    here unless the caller already has its outputs)."""
    inputs = model_inputs(graph, scored)
    n = _samples(inputs)
    target.progress = progress.update
    try:
        with progress.stage(f"simulating {n} samples on {target.name}"):
            sim = get_registry().call("hwmap_simulate", target.kind, artifacts=Artifacts.read(artifacts_dir),
                                      target=target, inputs=inputs)
    finally:
        target.progress = None
    if reference is None:
        reference = _reference(graph, inputs, progress)
    y = scored.y[:n] if scored.y is not None else None
    return Scored(sim, fidelity(reference, sim.outputs), _accuracy(sim.outputs, graph, y),
                  _accuracy(reference, graph, y), n)


def with_sparsity(activity: dict[str, Any], legalized: Graph, scored: Dataset) -> dict[str, Any]:
    """``activity`` (not modified) plus, under :data:`hwmap.sparsity.ACTIVITY_KEY`, the
    sparsity measured on the first :data:`MAX_SPARSITY_SAMPLES` scored samples by running
    the legalized graph quantized (its activations as the target computes them), 8-bit codes
    for unannotated tensors. A legalized graph the reference executor cannot run on the data
    gets no measurement (the estimate then says sparsity was not measured)."""
    from .sparsity import ACTIVITY_KEY, measure

    try:
        x = next(iter(model_inputs(legalized, scored, MAX_SPARSITY_SAMPLES).values()))
        m = measure(legalized, x, max_samples=MAX_SPARSITY_SAMPLES, quantized=True, act_bits=8,
                    where=f"data {scored.name!r}")
    except HwmapError:
        return dict(activity)
    return {**activity, ACTIVITY_KEY: m}


def _accuracy(outputs: dict[str, np.ndarray], graph: Graph, y: np.ndarray | None) -> float | None:
    if y is None or len(graph.outputs) != 1:
        return None
    out = np.asarray(outputs[graph.outputs[0]])
    if out.ndim != 2 or out.shape[0] != y.shape[0]:
        return None
    return float(np.mean(np.argmax(out, axis=1) == y))


# -- provenance ---------------------------------------------------------------------------------------
def data_digest(data: Dataset) -> str:
    """SHA-256 of a data set's arrays (dtype, shape and bytes of ``x`` and ``y``)."""
    h = hashlib.sha256()
    for key, a in (("x", data.x), ("y", data.y)):
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        h.update(f"\0{key}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _provenance(kpis: KPIs, graph: Graph, target: Target, data: Dataset | None, calibrated: int,
                scored: int) -> None:
    """Fill what the flow knows of where the record comes from."""
    from . import __version__

    p = kpis.provenance
    p.versions = {"hwmap": __version__}
    if target.spec.package:
        p.versions[target.spec.package] = target.spec.version
    p.sha256 = {"model": graph.digest(),
                "config": hashlib.sha256(dumps(target.config_dict()).encode()).hexdigest()}
    if data is not None:
        p.sha256["data"] = data_digest(data)
        p.data = {"name": data.name, "samples": len(data), "calibration_samples": calibrated,
                  "scored_samples": scored}
    else:
        p.data = {"name": None, "samples": 0, "calibration_samples": 0, "scored_samples": 0}
    if kpis.fidelity is not None:
        p.kpis["fidelity"] = "simulated"
    if kpis.accuracy is not None:
        p.kpis["accuracy"] = "simulated"
    if kpis.reference_accuracy is not None:
        p.kpis["reference_accuracy"] = "simulated"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(dumps(obj))


def compile_model(
    model: str | Graph,
    target: Target,
    outdir: Path | None,
    *,
    data: Dataset | None = None,
    calibrate: int | None = None,
    options: ParseOptions | None = None,
    progress: Progress | None = None,
    reference: dict[str, np.ndarray] | None = None,
    sensitivity: bool = False,
    legalize_cache: MutableMapping[str, Legalized] | None = None,
) -> CompileResult:
    """Run the whole flow for one model on one target.

    ``data`` is split by :func:`split_data` (``calibrate`` samples calibrate, the rest are
    scored). Raises :class:`DoesNotFitError` (exit code 1) with the named violations when
    the model does not fit; any other :class:`HwmapError` for bad input. With ``outdir``
    the result is written there: ``graph/`` (as parsed), ``legalized/``, ``mapping.json``,
    ``target.json``, ``artifacts/`` and ``kpis.json``. ``reference``: the reference model's
    outputs on the scored samples, when the caller already computed them (``compare`` does,
    once for all targets). ``sensitivity``: also vary every assumed constant
    (:func:`hwmap.sensitivity.sensitivity`) into ``kpis.sensitivity``. ``legalize_cache``:
    legalized graphs by :func:`legalize_key` (the graph, the kind, the effective config and
    the calibration data), reused instead of legalizing again (``hwmap explore``'s workers
    keep one; legalize must not depend on anything else).
    """
    prog = progress or NullProgress()
    if outdir is not None:  # refuse a destination before any work is done
        outdir = check_output_dir(outdir)
    reg = get_registry()
    kind = target.kind
    model_name = model if isinstance(model, str) else model.name
    if isinstance(model, str):
        with prog.stage(f"parsing {model_name}"):
            model = load_model(model, options)
    graph = require_known(model, f"compiling for target {target.name!r}")
    calib, scored = split_data(data, calibrate) if data is not None else (None, None)
    if scored is not None and data is not None:
        model_inputs(graph, scored)  # the data fits the model before any work is done
        check_labels(data, graph)
    target.calibration = next(iter(model_inputs(graph, calib, len(calib)).values())) if calib is not None else None
    refused = encodings_refused(graph, target)
    if refused:
        raise DoesNotFitError(f"{model_name} does not fit target {target.name!r}: " + "; ".join(refused), refused)
    key = legalize_key(graph, target) if legalize_cache is not None else ""
    cached = legalize_cache.get(key) if legalize_cache is not None else None
    if cached is not None:
        legal = cached
    else:
        with prog.stage(f"legalizing for {target.name}"):
            legal = reg.call("hwmap_legalize", kind, graph=graph, target=target)
        if legalize_cache is not None:
            legalize_cache[key] = legal
    if not legal.fits:
        raise DoesNotFitError(f"{model_name} does not fit target {target.name!r}: "
                              + "; ".join(str(v) for v in legal.violations),
                              [str(v) for v in legal.violations])
    with prog.stage(f"mapping onto {target.name}"):
        mapping: Mapping = reg.call("hwmap_map", kind, graph=legal.graph, target=target)
    if outdir is not None:
        remove_stale(outdir.parent)
        tmp = temp_dir(outdir.parent)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="hwmap-"))
    try:
        art_dir = tmp / "artifacts"
        art_dir.mkdir()
        with prog.stage(f"emitting artifacts for {target.name}"):
            artifacts: Artifacts = reg.call("hwmap_emit", kind, mapping=mapping, target=target, outdir=art_dir)
            artifacts.write_manifest(graph=graph, target=target)
        result = None
        if scored is not None:
            result = _simulate_and_compare(target, art_dir, graph, scored, reference, prog)
        activity = None
        if result is not None and scored is not None:
            with prog.stage(f"measuring sparsity on {target.name}'s legalized graph"):
                activity = with_sparsity(result.simulation.activity, legal.graph, scored)
        with prog.stage(f"estimating {target.name}"):
            kpis: KPIs = reg.call("hwmap_estimate", kind, mapping=mapping, target=target, activity=activity)
        kpis.target = kind
        kpis.config = target.name
        kpis.model = model_name
        if sensitivity:
            from .sensitivity import sensitivity as vary

            with prog.stage(f"varying the assumed constants of {target.name}"):
                kpis.sensitivity = vary(graph, target, activity, kpis)
        if result is not None:
            kpis.fidelity, kpis.accuracy = result.fidelity, result.accuracy
            kpis.reference_accuracy = result.reference_accuracy
        _provenance(kpis, graph, target, data, len(calib) if calib is not None else 0,
                    result.samples if result is not None else 0)
        if outdir is not None:
            graph.save(tmp / "graph")
            legal.graph.save(tmp / "legalized")
            _write_json(tmp / "mapping.json", mapping.to_json())
            _write_json(tmp / "target.json", {"kind": kind, "name": target.name, "source": target.source,
                                              "config": target.config.model_dump(mode="json")})
            _write_json(tmp / "diagnostics.json", [vars(d) for d in legal.diagnostics])
            (tmp / "kpis.json").write_text(kpis.dumps())
            commit_dir(tmp, outdir)
            artifacts = Artifacts.read(outdir / "artifacts")
        return CompileResult(graph, legal, mapping, artifacts if outdir is not None else None,
                             result.simulation if result is not None else None, kpis, outdir)
    finally:
        if tmp.exists() and (outdir is None or tmp != outdir):
            shutil.rmtree(tmp, ignore_errors=True)


def legalize_key(graph: Graph, target: Target) -> str:
    """What a legalized graph depends on, hashed: the graph, the target kind, its effective
    config (not its display name) and the calibration samples."""
    h = hashlib.sha256(graph.digest().encode())
    h.update(f"\0{target.kind}\0".encode())
    h.update(dumps(target.config.model_dump(mode="json")).encode())
    if target.calibration is not None:
        c = np.ascontiguousarray(target.calibration)
        h.update(f"\0{c.dtype.str}\0{list(c.shape)}\0".encode())
        h.update(c.tobytes())
    return h.hexdigest()


def load_compiled_target(outdir: Path) -> Target:
    """The target a compile directory was built for, from its ``target.json`` (checked:
    :func:`hwmap.compiledir.load_target`)."""
    from .compiledir import load_target

    return load_target(outdir)


def simulate_dir(outdir: Path, data: Dataset, progress: Progress | None = None) -> Scored:
    """Run a compile directory's artifacts on all of ``data`` (up to
    :data:`MAX_SIM_SAMPLES`; nothing calibrates) and compare with its parsed graph. The
    directory is input: it is read and checked by :func:`hwmap.compiledir.open_compile_dir`
    (a :class:`DataError` for anything it refuses, such as artifacts of another graph or
    config)."""
    from .compiledir import open_compile_dir

    compiled = open_compile_dir(Path(outdir))
    check_labels(data, compiled.graph)
    return _simulate_and_compare(compiled.target, compiled.artifacts.directory, compiled.graph,
                                 data.head(MAX_SIM_SAMPLES), None, progress or NullProgress())


def compare(
    model: str | Graph,
    targets: Sequence[Target],
    *,
    data: Dataset | None = None,
    calibrate: int | None = None,
    options: ParseOptions | None = None,
    progress: Progress | None = None,
    sensitivity: bool = False,
) -> list[KPIs]:
    """One KPI record per target, in the order given. The model is parsed once; a target
    that cannot take it (design-rule violation, unsupported op, plugin failure) yields a
    record with ``fits`` false and the reason."""
    prog = progress or NullProgress()
    model_name = model if isinstance(model, str) else model.name
    if isinstance(model, str):
        with prog.stage(f"parsing {model}"):
            model = load_model(model, options)
    graph = require_known(model, "comparing targets")
    reference = None
    if data is not None:  # the reference model's outputs are the same for every target
        check_labels(data, graph)
        _, scored = split_data(data, calibrate)
        reference = _reference(graph, model_inputs(graph, scored), prog)
    records = []
    for target in targets:
        try:
            res = compile_model(graph, target, None, data=data, calibrate=calibrate, options=options,
                                progress=prog, reference=reference, sensitivity=sensitivity)
            res.kpis.model = model_name
            records.append(res.kpis)
        except DoesNotFitError as e:
            records.append(KPIs.not_fitting(target.kind, target.name, model_name, e.violations or [str(e)]))
        except DataError:
            raise
        except HwmapError as e:
            records.append(KPIs.not_fitting(target.kind, target.name, model_name, [str(e)]))
        except Exception as e:  # a plugin bug must not take the other columns down
            records.append(KPIs.not_fitting(target.kind, target.name, model_name,
                                            [f"plugin error: {type(e).__name__}: {e}".replace("\n", " ")]))
    return records
