"""The tool flow: parse → legalize → map → emit → simulate → estimate (DESIGN.md, Data flow).

``compile_model`` runs one model on one target and writes the output directory atomically:
everything is built in a hidden sibling folder and renamed into place at the end, so a
failure leaves nothing half-written. ``simulate_dir`` re-runs the artifacts of such a
directory. ``compare`` runs one model on several targets; a target that cannot take the
model becomes a record that says why.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import Dataset
from .errors import DataError, DoesNotFitError, HwmapError, TargetError
from .graph import Graph
from .jsonio import dumps
from .kpi import Fidelity, KPIs
from .registry import get_registry
from .source import ParseOptions, load_model
from .target import Artifacts, Legalized, Mapping, Simulation, Target

__all__ = [
    "CompileResult",
    "compile_model",
    "simulate_dir",
    "compare",
    "fidelity",
    "model_inputs",
    "MAX_SIM_SAMPLES",
]

#: Samples of ``--data`` simulated for fidelity and activity (the rest are not needed for
#: a stable top-1 agreement and keep slow simulators usable).
MAX_SIM_SAMPLES = 512

Progress = Callable[[str], None]


@dataclass
class CompileResult:
    graph: Graph
    legalized: Legalized
    mapping: Mapping
    artifacts: Artifacts | None
    simulation: Simulation | None
    kpis: KPIs
    outdir: Path | None


def model_inputs(graph: Graph, data: Dataset, max_samples: int = MAX_SIM_SAMPLES) -> dict[str, np.ndarray]:
    """The data as the graph's input dict, checked against its declared shape."""
    if len(graph.inputs) != 1:
        raise DataError(f"--data feeds one input but the model has {len(graph.inputs)}: {', '.join(graph.inputs)}",
                        where=data.name)
    name = graph.inputs[0]
    want = graph.tensor(name).shape[1:]
    x = data.x[:max_samples]
    if "dt" in graph.meta and x.ndim == len(want) + 2:  # (N, T, *features) for time-stepped graphs
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
    any other by the maximum absolute error. ``detail`` always carries both where defined,
    and ``bit_exact`` (1.0 when every output is identical).
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
        err = float(np.max(np.abs(sim.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
        detail[f"{name}.max_abs_error"] = err
        exact = exact and bool(np.array_equal(sim, ref))
        if ref.ndim == 2 and ref.shape[1] > 1:
            agree = float(np.mean(np.argmax(sim, axis=1) == np.argmax(ref, axis=1)))
            detail[f"{name}.top1_agreement"] = agree
            metric, value = "top1_agreement", agree
        elif metric == "max_abs_error":
            value = max(value, err)
    detail["bit_exact"] = 1.0 if exact else 0.0
    return Fidelity(metric=metric, value=value, samples=samples, detail=detail)


def _samples(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _simulate_and_compare(target: Target, artifacts_dir: Path, graph: Graph, inputs: dict[str, np.ndarray],
                          labels: np.ndarray | None, reference: dict[str, np.ndarray] | None,
                          say: Progress) -> tuple[Simulation, Fidelity, float | None]:
    """Run the artifacts on ``inputs`` and judge them against the reference model (run
    here unless the caller already has its outputs)."""
    from .execute import run

    say(f"simulating {_samples(inputs)} samples on {target.name}")
    sim = get_registry().call("hwmap_simulate", target.kind, artifacts=Artifacts.read(artifacts_dir),
                              target=target, inputs=inputs)
    if reference is None:
        say("running the reference model")
        reference = run(graph, inputs)
    y = labels[: _samples(inputs)] if labels is not None else None
    return sim, fidelity(reference, sim.outputs), _accuracy(sim.outputs, graph, y)


def _accuracy(outputs: dict[str, np.ndarray], graph: Graph, y: np.ndarray | None) -> float | None:
    if y is None or len(graph.outputs) != 1:
        return None
    out = np.asarray(outputs[graph.outputs[0]])
    if out.ndim != 2 or out.shape[0] != y.shape[0]:
        return None
    return float(np.mean(np.argmax(out, axis=1) == y))


def _prepare_outdir(outdir: Path) -> Path:
    """A fresh hidden sibling folder to build in; refuse to replace a foreign directory."""
    if outdir.exists():
        if not outdir.is_dir():
            raise DataError("exists and is not a directory", where=str(outdir))
        if any(outdir.iterdir()) and not (outdir / "kpis.json").exists():
            raise DataError("exists, is not empty and is not an hwmap output directory (no kpis.json); "
                            "choose another -o", where=str(outdir))
    outdir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))


def _commit_outdir(tmp: Path, outdir: Path) -> None:
    if outdir.exists():
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.replace(outdir, old)
        os.replace(tmp, outdir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, outdir)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(dumps(obj))


def compile_model(
    model: str | Graph,
    target: Target,
    outdir: Path | None,
    *,
    data: Dataset | None = None,
    options: ParseOptions | None = None,
    progress: Progress | None = None,
    reference: dict[str, np.ndarray] | None = None,
) -> CompileResult:
    """Run the whole flow for one model on one target.

    Raises :class:`DoesNotFitError` (exit code 1) with the named violations when the model
    does not fit; any other :class:`HwmapError` for bad input. With ``outdir`` the result is
    written there: ``graph/`` (as parsed), ``legalized/``, ``mapping.json``, ``target.json``,
    ``artifacts/`` and ``kpis.json``. ``reference``: the reference model's outputs on
    ``data``, when the caller already computed them (``compare`` does, once for all targets).
    """
    say = progress or (lambda msg: None)
    reg = get_registry()
    kind = target.kind
    model_name = model if isinstance(model, str) else model.name
    say(f"parsing {model_name}")
    graph = load_model(model, options) if isinstance(model, str) else model
    inputs = model_inputs(graph, data) if data is not None else None
    if inputs is not None:
        target.calibration = next(iter(inputs.values()))
    say(f"legalizing for {target.name}")
    legal: Legalized = reg.call("hwmap_legalize", kind, graph=graph, target=target)
    if not legal.fits:
        raise DoesNotFitError(f"{model_name} does not fit target {target.name!r}: "
                              + "; ".join(str(v) for v in legal.violations),
                              [str(v) for v in legal.violations])
    say(f"mapping onto {target.name}")
    mapping: Mapping = reg.call("hwmap_map", kind, graph=legal.graph, target=target)
    tmp = _prepare_outdir(outdir) if outdir is not None else Path(tempfile.mkdtemp(prefix="hwmap-"))
    try:
        art_dir = tmp / "artifacts"
        art_dir.mkdir()
        say("emitting artifacts")
        artifacts: Artifacts = reg.call("hwmap_emit", kind, mapping=mapping, target=target, outdir=art_dir)
        artifacts.write_manifest()
        sim = None
        fid = None
        acc = None
        if inputs is not None and data is not None:
            sim, fid, acc = _simulate_and_compare(target, art_dir, graph, inputs, data.y, reference, say)
        say("estimating")
        kpis: KPIs = reg.call("hwmap_estimate", kind, mapping=mapping, target=target,
                              activity=sim.activity if sim is not None else None)
        kpis.target = kind
        kpis.config = target.name
        kpis.model = model_name
        kpis.fidelity = fid
        kpis.accuracy = acc
        if outdir is not None:
            graph.save(tmp / "graph")
            legal.graph.save(tmp / "legalized")
            _write_json(tmp / "mapping.json", mapping.to_json())
            _write_json(tmp / "target.json", {"kind": kind, "name": target.name, "source": target.source,
                                              "config": target.config.model_dump(mode="json")})
            _write_json(tmp / "diagnostics.json", [vars(d) for d in legal.diagnostics])
            (tmp / "kpis.json").write_text(kpis.dumps())
            _commit_outdir(tmp, outdir)
            artifacts = Artifacts.read(outdir / "artifacts")
        return CompileResult(graph, legal, mapping, artifacts if outdir is not None else None, sim, kpis, outdir)
    finally:
        if tmp.exists() and (outdir is None or tmp != outdir):
            shutil.rmtree(tmp, ignore_errors=True)


def load_compiled_target(outdir: Path) -> Target:
    """The target a compile directory was built for, from its ``target.json``."""
    from .config import validate_config

    try:
        d = json.loads((outdir / "target.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"not an hwmap compile directory ({e})", where=str(outdir)) from None
    spec = get_registry().spec(d["kind"])
    config = validate_config(spec.config_model, d["config"], str(outdir / "target.json"))
    return Target(spec=spec, config=config, name=d["name"], source=d.get("source", str(outdir)))


def simulate_dir(outdir: Path, data: Dataset, progress: Progress | None = None) -> tuple[Simulation, Fidelity, float | None]:
    """Run a compile directory's artifacts on ``data``; compare with its parsed graph."""
    say = progress or (lambda msg: None)
    if not (outdir / "artifacts" / "artifacts.json").exists():
        raise DataError("not an hwmap compile directory (no artifacts/artifacts.json)", where=str(outdir))
    target = load_compiled_target(outdir)
    graph = Graph.load(outdir / "graph")
    return _simulate_and_compare(target, outdir / "artifacts", graph, model_inputs(graph, data), data.y, None, say)


def compare(
    model: str | Graph,
    targets: Sequence[Target],
    *,
    data: Dataset | None = None,
    options: ParseOptions | None = None,
    progress: Progress | None = None,
) -> list[KPIs]:
    """One KPI record per target, in the order given. The model is parsed once; a target
    that cannot take it (design-rule violation, unsupported op, plugin failure) yields a
    record with ``fits`` false and the reason."""
    graph = load_model(model, options) if isinstance(model, str) else model
    model_name = model if isinstance(model, str) else graph.name
    reference = None
    if data is not None:  # the reference model's outputs are the same for every target
        from .execute import run

        reference = run(graph, model_inputs(graph, data))
    records = []
    for target in targets:
        try:
            res = compile_model(graph, target, None, data=data, options=options, progress=progress,
                                reference=reference)
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
