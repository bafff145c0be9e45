"""The conformance suite a target plugin runs against itself.

A third-party target proves it plays by hwmap's rules with one line in its own tests::

    from hwmap.testing import conformance_test

    test_conforms = conformance_test("my_kind", data="zoo:digits", model="zoo:digits_cnn")

or, inside any test, ``assert_conforms("my_kind", tmp_path=tmp_path)``. :func:`check_target`
returns the list of failures instead (empty: the target conforms), one line each: what was
checked, the measured value and the bound. What is checked:

1. the kind is registered, with a description and a pydantic config model that rejects
   unknown keys (a :class:`hwmap.TargetConfig` subclass or ``extra="forbid"``) whose tables
   reject unknown keys and non-finite numbers (:class:`hwmap.ConfigSection`), and a
   ``default`` preset (the one ``compare`` and ``demo`` use);
2. every preset loads and every value it sets carries a source (``key = { value = ...,
   source = "..." }``), the JSON Schema (``hwmap schema``) can be produced, and a wrong key
   in a copy of the default preset, at the top and inside each table, is a
   :class:`hwmap.ConfigError` naming the key;
3. compiling ``model`` twice, into two directories, gives byte-identical artifacts and
   ``kpis.json``, and ``artifacts/artifacts.json`` lists exactly the files that exist;
4. the artifacts simulate when read back from disk only (the compile directory is moved
   first), return every graph output with the reference's shape, finite, and do so
   deterministically;
5. the simulated outputs agree with the reference model's (:func:`hwmap.execute.run`) at
   least as well as the suite's floor, which no target can lower: top-1 agreement
   >= :data:`TOP1_FLOOR` on classifier outputs (batch x classes, classes > 1) and relative
   RMS error ``||sim - ref|| / ||ref||`` <= :data:`REL_RMS_FLOOR` on any other output; and
   as well as the target claims at registration (:class:`hwmap.FidelityClaim`: a higher
   top-1 agreement, a ``max_rel_error`` bound on ``max|sim - ref| / max|ref|``, or
   ``bit_exact``: identical to the legalized graph run with its quantization annotations
   applied, ``run(legalized, inputs, quantized=True)``);
6. the simulation is a function of the artifacts: with the files ``emit`` listed deleted,
   simulate fails with an :class:`hwmap.HwmapError`; with the artifacts of the same model
   with other weights (each weight tensor's values shuffled by a seeded generator,
   compiled into its own directory) swapped in, and the digests ``artifacts.json`` records
   set to the directory's graph and config (so ``hwmap simulate``'s own check, which refuses
   artifacts of another graph, lets them through to the target), it gives exactly what that
   model's own directory gives, or refuses with an :class:`hwmap.HwmapError` (a target may
   check that artifacts belong to the graph);
7. the KPI record is complete (:meth:`hwmap.KPIs.check`), names target, config and model,
   states its assumptions, and carries a fidelity when data was given.

Without ``data`` the simulation runs on :data:`RANDOM_SAMPLES` seeded random inputs shaped
like the model's. The data (at most :data:`hwmap.flow.MAX_SIM_SAMPLES` samples) is simulated
three times: by each compile and from the moved directory (without ``data`` the compiles do
not simulate, and the moved directory is simulated twice); the checks of 6 simulate only the
first :data:`PROBE_SAMPLES` samples.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .config import load_target
from .data import Dataset, load_data
from .errors import DoesNotFitError, HwmapError, describe_error
from .graph import Graph
from .kpi import KPIs
from .registry import get_registry
from .target import TargetSpec
from .testing_artifacts import (check_artifacts_needed, check_artifacts_swapped, check_determinism, check_manifest,
                                other_weights, simulate)
from .testing_config import BOGUS_KEY, check_configs, check_registration
from .testing_fidelity import REL_RMS_FLOOR, TOP1_FLOOR, check_fidelity, check_output

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["check_target", "assert_conforms", "conformance_test", "registered", "BOGUS_KEY", "TOP1_FLOOR",
           "REL_RMS_FLOOR", "RANDOM_SAMPLES", "PROBE_SAMPLES", "other_weights"]

#: Random inputs simulated when no data is given. Enough that one arg-max flip between two
#: near-tied logits of a classifier on noise (1/8 with 8 samples: analog_imc:default on
#: zoo:digits_cnn) does not take the top-1 agreement below :data:`TOP1_FLOOR`.
RANDOM_SAMPLES = 64
#: Samples simulated by the checks that the simulation depends on the artifacts (exact
#: comparisons: a few samples decide them).
PROBE_SAMPLES = 16


def check_target(kind: str, *, model: str = "zoo:chapter_cnn", data: str | None = None, preset: str = "default",
                 tmp_path: Path | None = None) -> list[str]:
    """Run the conformance checks for ``kind``; return one line per failure (empty = conforms).

    ``model`` is compiled with the ``preset`` config; ``data`` (``zoo:NAME`` or .npz) is
    used for calibration, simulation and fidelity. ``tmp_path`` is a scratch directory
    (a temporary one is made and removed when ``None``).
    """
    if tmp_path is None:
        with tempfile.TemporaryDirectory(prefix="hwmap-conformance-") as tmp:
            return check_target(kind, model=model, data=data, preset=preset, tmp_path=Path(tmp))
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    try:
        spec = get_registry().spec(kind)
    except HwmapError as e:
        return [f"registration: {e}"]
    failures += check_registration(spec)
    failures += check_configs(spec, tmp_path)
    if preset not in spec.presets:
        return failures + [f"preset {preset!r} to compile with does not exist (presets: "
                           f"{', '.join(sorted(spec.presets)) or 'none'})"]
    failures += _check_flow(spec, model=model, data=data, preset=preset, tmp_path=tmp_path)
    return failures


def assert_conforms(kind: str, **kw: Any) -> None:
    """:func:`check_target`, raising ``AssertionError`` listing every failure."""
    failures = check_target(kind, **kw)
    if failures:
        raise AssertionError(f"target kind {kind!r} does not conform to hwmap's target contract "
                             f"({len(failures)} problem{'s' if len(failures) != 1 else ''}):\n  - "
                             + "\n  - ".join(failures))


def conformance_test(kind: str, **kw: Any) -> Callable[[Path], None]:
    """A pytest test function for a plugin's test module: ``test_conforms =
    conformance_test("my_kind", data="zoo:digits")`` (it uses pytest's ``tmp_path``)."""

    def test_target_conforms(tmp_path: Path) -> None:
        assert_conforms(kind, tmp_path=tmp_path, **kw)

    test_target_conforms.__name__ = f"test_{kind}_conforms"
    test_target_conforms.__doc__ = f"hwmap conformance suite for target kind {kind!r}."
    return test_target_conforms


@contextmanager
def registered(*plugins: Any, autoload: bool = False) -> Iterator["Registry"]:
    """A fresh process-wide registry holding the core's frontends and ``plugins`` (modules
    or objects with hook implementations), registered in-process: how a plugin's tests try
    a target that is not installed, or a variant of one. Entry points are skipped unless
    ``autoload``; the previous registry and setting come back on exit. A plugin the
    registry refuses raises :class:`hwmap.PluginError` with the registry's reason."""
    from .errors import PluginError
    from .registry import AUTOLOAD_ENV, reset_registry

    previous = os.environ.get(AUTOLOAD_ENV)
    if not autoload:
        os.environ[AUTOLOAD_ENV] = "1"
    reset_registry()
    try:
        reg = get_registry()
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            if reg.add_plugin(plugin, name=name) is None or any(e.plugin == name for e in reg.errors):
                problem = next((e.error for e in reg.errors if e.plugin == name), "refused")
                raise PluginError(f"plugin {name!r} could not be registered: {problem}")
        yield reg
    finally:
        reset_registry()
        if previous is None:
            os.environ.pop(AUTOLOAD_ENV, None)
        else:
            os.environ[AUTOLOAD_ENV] = previous


# -- 3.–7. the flow ---------------------------------------------------------------------------------
def _check_flow(spec: TargetSpec, *, model: str, data: str | None, preset: str, tmp_path: Path) -> list[str]:
    from .execute import run
    from .flow import compile_model, model_inputs, split_data
    from .source import load_model

    kind = spec.kind
    ref = f"{kind}:{preset}"
    try:
        graph = load_model(model)
        dataset = load_data(data) if data is not None else _random_data(graph)
        # a compile with data scores what its calibration leaves: judge the same samples
        scored = split_data(dataset)[1] if data is not None else dataset
        inputs = model_inputs(graph, scored)
    except HwmapError as e:
        return [f"setup: cannot load the model or data: {e}"]
    dirs = [tmp_path / "compile-a", tmp_path / "compile-b"]
    results = []
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        try:
            results.append(compile_model(model, load_target(ref), d, data=dataset if data is not None else None))
        except DoesNotFitError as e:
            return [f"compile: {model} does not fit {ref}: {'; '.join(e.violations) or e}"]
        except Exception as e:
            return [f"compile: {model} on {ref} fails: {describe_error(e)}"]
    out: list[str] = []
    out += check_determinism(dirs[0], dirs[1])
    out += check_manifest(dirs[0] / "artifacts")
    out += _check_kpis(results[0].kpis, dirs[0], kind=kind, model=model, with_data=data is not None)

    # simulate from disk only: move the directory so nothing can point at where it was built
    moved = tmp_path / "moved"
    shutil.rmtree(moved, ignore_errors=True)
    shutil.move(str(dirs[0]), str(moved))
    shutil.rmtree(dirs[1], ignore_errors=True)
    try:
        sim = simulate(moved, scored)
        # with data, each compile simulated already: compare with those instead of a 4th run
        runs = [r.simulation for r in results if r.simulation is not None] or [simulate(moved, scored)]
    except Exception as e:
        return out + [f"simulate: hwmap simulate on the compiled directory fails: {describe_error(e)}"]
    reference = run(graph, inputs)
    for name in graph.outputs:
        out += check_output(name, sim, reference[name], runs, after_compile=data is not None)
    comparable = {k: v for k, v in reference.items() if k in sim.outputs and np.shape(sim.outputs[k]) == v.shape
                  and np.all(np.isfinite(np.asarray(sim.outputs[k], dtype=np.float64)))}
    out += check_fidelity(comparable, sim.outputs, spec.fidelity,
                          lambda: run(Graph.load(moved / "legalized"), inputs, quantized=True))
    probe = dataset.head(PROBE_SAMPLES)
    out += check_artifacts_needed(moved, probe, tmp_path)
    out += check_artifacts_swapped(moved, graph, probe, ref, tmp_path, calibrate=data is not None)
    return out


def _check_kpis(kpis: KPIs, outdir: Path, *, kind: str, model: str, with_data: bool) -> list[str]:
    out = [f"kpis: {p}" for p in kpis.check()]
    if not kpis.fits:
        out.append("kpis: the record says the model does not fit, but compile succeeded")
    if kpis.target != kind:
        out.append(f"kpis: target is {kpis.target!r}, not {kind!r}")
    if not kpis.config:
        out.append("kpis: config (the config's label) is empty")
    if kpis.model != model:
        out.append(f"kpis: model is {kpis.model!r}, not {model!r}")
    if not kpis.assumptions:
        out.append("kpis: assumptions are empty")
    if with_data and kpis.fidelity is None:
        out.append("kpis: no fidelity although data was given")
    try:
        on_disk = KPIs.from_json(json.loads((outdir / "kpis.json").read_text()))
    except Exception as e:
        out.append(f"kpis: kpis.json cannot be read back: {describe_error(e)}")
    else:
        if on_disk.dumps() != kpis.dumps():
            out.append("kpis: kpis.json does not round-trip to the record compile returned")
    return out



def _random_data(graph: Graph) -> Dataset:
    """Seeded uniform [0, 1) inputs shaped like the model's single input."""
    if len(graph.inputs) != 1:
        from .errors import DataError

        raise DataError(f"the model has {len(graph.inputs)} inputs; pass data= for it")
    shape = graph.tensor(graph.inputs[0]).shape
    rng = np.random.default_rng(0)
    return Dataset(rng.random((RANDOM_SAMPLES, *shape[1:]), dtype=np.float32), None, "random")
