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

import copy
import json
import os
import re
import shutil
import tempfile
import traceback
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from pydantic import BaseModel

from .config import load_target, read_toml, schema_for
from .constants import UNSOURCED
from .data import Dataset, load_data
from .errors import ConfigError, DoesNotFitError, HwmapError
from .graph import Graph
from .kpi import KPIs
from .registry import get_registry
from .target import Artifacts, FidelityClaim, Simulation, TargetConfig, TargetSpec
from .tomlwrite import dumps_toml

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["check_target", "assert_conforms", "conformance_test", "registered", "BOGUS_KEY", "TOP1_FLOOR",
           "REL_RMS_FLOOR", "RANDOM_SAMPLES", "PROBE_SAMPLES", "other_weights"]

#: The key the suite adds to a preset to see it rejected.
BOGUS_KEY = "hwmap_conformance_unknown_key"
#: Random inputs simulated when no data is given. Enough that one arg-max flip between two
#: near-tied logits of a classifier on noise (1/8 with 8 samples: analog_imc:default on
#: zoo:digits_cnn) does not take the top-1 agreement below :data:`TOP1_FLOOR`.
RANDOM_SAMPLES = 64
#: Samples simulated by the checks that the simulation depends on the artifacts (exact
#: comparisons: a few samples decide them).
PROBE_SAMPLES = 16

# The floor every target's simulation must reach, whatever it claims. Measured on every
# sample the suite simulates (zoo:digits: 360; random: 64), top-1 agreement / relative RMS
# error against the float reference model:
#
#   target (preset)             digits_cnn, digits   digits_mlp, digits   chapter_cnn, random
#   toy_cpu (int8 weights)      1.000 / 0.0053       1.000 / 0.0063       0.0132
#   analog_imc:default          0.997 / 0.0056       1.000 / 0.0059       0.0119
#   analog_imc:chapter-fig3.13  0.994 / 0.045        1.000 / 0.028        0.048
#   analog_imc:isaac-like       1.000 / 0.00002      1.000 / 0.00002      0.00004
#
# and zoo:digits_cnn on random images: 0.984 (toy_cpu), 1.000 (analog_imc:default; 0.875 on
# 8 images), 0.969 (chapter-fig3.13). Wrong outputs measure: zeros 1.0; the reference rolled
# by one sample 0.69 on chapter_cnn (a roll along any one axis: 0.68-1.63) and 1.2-1.35 on
# the digits models, whose top-1 agreement then falls to chance (0.10; classes permuted:
# 0.00); every sample given the mean output 0.48. For scale, chapter_cnn's weights rounded
# per tensor to 6 bits give 0.040, to 4 bits 0.26.
#: Top-1 agreement with the reference model, on classifier-shaped outputs (2-D, classes > 1).
TOP1_FLOOR = 0.9
#: ``||sim - ref|| / ||ref||`` on any other output: 7.5x above what an honest 8-bit target
#: measures (0.0132), 2x above the coarsest shipped preset (0.048), and 4.8x below the
#: closest wrong output measured (the mean output, 0.48; a permutation, 0.68; zeros, 1.0):
#: about the geometric middle between the honest 8-bit targets and the wrong outputs.
REL_RMS_FLOOR = 0.1
#: How a config source reads when the file gave a value without one (hwmap.config).
_UNSOURCED = re.compile("^" + re.escape(UNSOURCED).replace(re.escape("{}"), "(?P<file>.+)") + "$")


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
    failures += _check_registration(spec)
    failures += _check_configs(spec, tmp_path)
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


# -- 1. registration -----------------------------------------------------------------------------
def _check_registration(spec: TargetSpec) -> list[str]:
    out = []
    if not isinstance(spec.description, str) or not spec.description.strip():
        out.append("registration: the kind has no description")
    model = spec.config_model
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        out.append(f"registration: config model {model!r} is not a pydantic model")
        return out
    if not issubclass(model, TargetConfig) and model.model_config.get("extra") != "forbid":
        out.append(f"registration: config model {model.__name__} accepts unknown keys "
                   "(subclass hwmap.TargetConfig or set extra='forbid')")
    for name, info in model.model_fields.items():
        if name in ("kind", "name"):
            out.append(f"registration: config model field {name!r} clashes with the config file's own {name!r} key")
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann.model_config.get("extra") != "forbid":
                out.append(f"registration: config table [{name}] ({ann.__name__}) accepts unknown keys "
                           "(derive it from hwmap.ConfigSection)")
            if ann.model_config.get("allow_inf_nan", True):
                out.append(f"registration: config table [{name}] ({ann.__name__}) accepts inf and nan "
                           "(derive it from hwmap.ConfigSection)")
    if "default" not in spec.presets:
        out.append(f"registration: no 'default' preset (presets: {', '.join(sorted(spec.presets)) or 'none'}); "
                   "compare and demo use it")
    return out


# -- 2. configs ---------------------------------------------------------------------------------------
def _check_configs(spec: TargetSpec, tmp_path: Path) -> list[str]:
    out = []
    kind = spec.kind
    reported: set[str] = set()  # files whose unsourced values are reported (presets extend each other)
    for name in sorted(spec.presets):
        ref = f"{kind}:{name}"
        try:
            t = load_target(ref)
        except Exception as e:
            out.append(f"preset {ref}: does not load: {_one_line(e)}")
            continue
        if t.kind != kind:
            out.append(f"preset {ref}: declares kind {t.kind!r}")
        out += _check_sources(ref, t.sources, reported)
    try:
        json.dumps(schema_for(kind))
    except Exception as e:
        out.append(f"schema: hwmap schema {kind} fails: {_one_line(e)}")
    if "default" not in spec.presets:
        return out
    try:
        base = read_toml(spec.presets["default"])
    except Exception as e:
        return out + [f"preset {kind}:default: cannot be read: {_one_line(e)}"]
    bad = copy.deepcopy(base)
    bad[BOGUS_KEY] = 1
    cases = [(BOGUS_KEY, bad)]
    # every table the schema describes with its own model (a free-form dict table may take any key)
    fields = spec.config_model.model_fields
    for table in sorted(base):
        ann = fields[table].annotation if table in fields else None
        if isinstance(base[table], dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            bad = copy.deepcopy(base)
            bad[table][BOGUS_KEY] = 1
            cases.append((f"{table}.{BOGUS_KEY}", bad))
    for i, (key, doc) in enumerate(cases):
        p = tmp_path / f"wrong-key-{i}.toml"
        p.write_text(dumps_toml(doc))
        try:
            load_target(str(p))
        except ConfigError as e:
            if key not in str(e):
                out.append(f"config: the error for an unknown key {key!r} does not name it: {e}")
        except Exception as e:
            out.append(f"config: an unknown key {key!r} raises {type(e).__name__}, not ConfigError: {_one_line(e)}")
        else:
            out.append(f"config: an unknown key {key!r} in a copy of the default preset is accepted")
    return out


def _check_sources(ref: str, sources: dict[str, str], reported: set[str]) -> list[str]:
    """One line per file of preset ``ref`` (itself or one it extends) that sets values without
    a source, naming the keys; a file already in ``reported`` is not reported again."""
    by_file: dict[str, list[str]] = {}
    for path in sorted(sources):
        unsourced = _UNSOURCED.match(sources[path])
        if unsourced and unsourced["file"] not in reported:
            by_file.setdefault(unsourced["file"], []).append(path)
    reported.update(by_file)
    return [f"preset {ref}: {len(keys)} value{'s' if len(keys) > 1 else ''} set in {file} without a source: "
            f"{', '.join(keys)} (write key = {{ value = ..., source = \"...\" }})" for file, keys in by_file.items()]


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
            return [f"compile: {model} on {ref} fails: {_one_line(e)}"]
    out: list[str] = []
    out += _check_determinism(dirs[0], dirs[1])
    out += _check_manifest(dirs[0] / "artifacts")
    out += _check_kpis(results[0].kpis, dirs[0], kind=kind, model=model, with_data=data is not None)

    # simulate from disk only: move the directory so nothing can point at where it was built
    moved = tmp_path / "moved"
    shutil.rmtree(moved, ignore_errors=True)
    shutil.move(str(dirs[0]), str(moved))
    shutil.rmtree(dirs[1], ignore_errors=True)
    try:
        sim = _simulate(moved, scored)
        # with data, each compile simulated already: compare with those instead of a 4th run
        runs = [r.simulation for r in results if r.simulation is not None] or [_simulate(moved, scored)]
    except Exception as e:
        return out + [f"simulate: hwmap simulate on the compiled directory fails: {_one_line(e)}"]
    reference = run(graph, inputs)
    for name in graph.outputs:
        out += _check_output(name, sim, reference[name], runs, after_compile=data is not None)
    comparable = {k: v for k, v in reference.items() if k in sim.outputs and np.shape(sim.outputs[k]) == v.shape
                  and np.all(np.isfinite(np.asarray(sim.outputs[k], dtype=np.float64)))}
    out += _check_fidelity(comparable, sim.outputs, spec.fidelity,
                           lambda: run(Graph.load(moved / "legalized"), inputs, quantized=True))
    probe = dataset.head(PROBE_SAMPLES)
    out += _check_artifacts_needed(moved, probe, tmp_path)
    out += _check_artifacts_swapped(moved, graph, probe, ref, tmp_path, calibrate=data is not None)
    return out


def _simulate(outdir: Path, data: Dataset) -> Simulation:
    from .flow import simulate_dir

    return simulate_dir(outdir, data).simulation


def _check_output(name: str, sim: Simulation, reference: np.ndarray, runs: list[Simulation],
                  after_compile: bool) -> list[str]:
    """Shape, finiteness and repeatability of one simulated output; empty when all hold."""
    if name not in sim.outputs:
        return [f"simulate: output {name!r} missing (got: {', '.join(sorted(sim.outputs)) or 'none'})"]
    got = np.asarray(sim.outputs[name])
    if got.shape != reference.shape:
        return [f"simulate: output {name!r} has shape {list(got.shape)}, the reference model's {list(reference.shape)}"]
    out = []
    if not np.all(np.isfinite(got.astype(np.float64))):
        out.append(f"simulate: output {name!r} holds NaN or infinite values")
    others = [np.asarray(r.outputs[name]) for r in runs if name in r.outputs]
    if any(not np.array_equal(o, others[0]) for o in others[1:]):
        out.append(f"simulate: output {name!r} differs between two runs on the same data (not deterministic)")
    elif others and not np.array_equal(others[0], got):
        out.append(f"simulate: output {name!r} read back from disk differs from the simulation run right after "
                   "compile" if after_compile else
                   f"simulate: output {name!r} differs between two runs on the same data (not deterministic)")
    return out


# -- 5. fidelity ------------------------------------------------------------------------------------
def _check_fidelity(reference: dict[str, np.ndarray], simulated: dict[str, np.ndarray],
                    claim: FidelityClaim | None, quantized_reference: Callable[[], dict[str, np.ndarray]]) -> list[str]:
    """The suite's floor and the target's claim on every output in ``reference`` (outputs
    of the reference's shape, finite); ``quantized_reference`` is computed only when the
    target claims ``bit_exact``."""
    claim = claim or FidelityClaim()
    out = []
    for name, ref in reference.items():
        r, s = np.asarray(ref, dtype=np.float64), np.asarray(simulated[name], dtype=np.float64)
        if r.ndim == 2 and r.shape[1] > 1:
            agree = float(np.mean(np.argmax(s, axis=1) == np.argmax(r, axis=1))) if len(r) else 1.0
            for bound, whose in ((TOP1_FLOOR, "the suite's floor"), (claim.top1_agreement, "claimed at registration")):
                if bound is not None and agree < bound:
                    out.append(f"fidelity: output {name!r} top-1 agreement with the reference model {agree:.4f} "
                               f"({len(r)} samples) is below {bound:g} ({whose})")
        else:
            rel = _ratio(float(np.linalg.norm(s - r)), float(np.linalg.norm(r)))
            if rel > REL_RMS_FLOOR:
                out.append(f"fidelity: output {name!r} relative RMS error ||sim - ref|| / ||ref|| = {rel:.4g} "
                           f"({len(r)} samples) is above {REL_RMS_FLOOR:g} (the suite's floor)")
        if claim.max_rel_error is not None and r.size:
            rel_max = _ratio(float(np.max(np.abs(s - r))), float(np.max(np.abs(r))))
            if rel_max > claim.max_rel_error:
                out.append(f"fidelity: output {name!r} max|sim - ref| / max|ref| = {rel_max:.4g} is above "
                           f"{claim.max_rel_error:g} (claimed at registration)")
    if claim.bit_exact and reference:
        try:
            quantized = quantized_reference()
        except Exception as e:  # a plugin's annotation that does not fit its tensor, an unreadable legalized/
            return out + [f"fidelity: claims bit_exact, but the quantized reference cannot run the legalized graph: "
                          f"{_one_line(e)}"]
        for name in reference:
            q, s = quantized[name], np.asarray(simulated[name])
            if q.shape != s.shape or not np.array_equal(q, s):
                differ = int(np.sum(q != s)) if q.shape == s.shape else q.size
                worst = float(np.max(np.abs(q.astype(np.float64) - s))) if q.shape == s.shape else float("nan")
                out.append(f"fidelity: output {name!r} differs from the quantized reference (the legalized graph, "
                           f"annotations applied) in {differ} of {q.size} values, max |difference| {worst:.4g}; "
                           "bound 0 (bit_exact claimed at registration)")
    return out


def _ratio(num: float, den: float) -> float:
    """``num / den``, 0 when both are 0 and infinite when only ``den`` is."""
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


# -- 6. the simulation is a function of the artifacts ---------------------------------------------------
def other_weights(graph: Graph, seed: int = 0) -> Graph:
    """The same architecture with other weights: the values of every floating parameter
    (ndim >= 1) of every compute node (fused ones included) shuffled by a seeded generator.

    Shuffling keeps each tensor's shape, value distribution and scale, so the copy compiles
    wherever the original does; with a per-axis ``param_quant`` annotation the values are
    shuffled within each slice along its axis, so they stay on their slice's grid.
    """
    from .ops import get_op

    rng = np.random.default_rng(seed)
    g = graph.copy()
    for node in g.nodes:
        for sub in node.walk():
            if get_op(sub.op, where=f"node {sub.name!r}").category != "compute":
                continue
            for slot in sorted(sub.params):
                a = sub.params[slot]
                if a.ndim < 1 or not np.issubdtype(a.dtype, np.floating):
                    continue
                q = sub.param_quant.get(slot)
                axis = q.axis % a.ndim if q is not None and q.axis is not None else None
                lead = np.moveaxis(a, axis, 0) if axis is not None else a.reshape(1, -1)
                shuffled = np.stack([rng.permutation(row.ravel()).reshape(row.shape) for row in lead])
                sub.params[slot] = np.ascontiguousarray(
                    np.moveaxis(shuffled, 0, axis) if axis is not None else shuffled.reshape(a.shape))
    return g


def _check_artifacts_needed(moved: Path, probe: Dataset, tmp_path: Path) -> list[str]:
    """With every file ``emit`` listed deleted (``artifacts.json`` kept), simulate must fail
    with an :class:`HwmapError`: a simulator that still succeeds does not read them."""
    gone = tmp_path / "artifacts-deleted"
    shutil.rmtree(gone, ignore_errors=True)
    shutil.copytree(moved, gone)
    try:
        listed = [str(f) for f in Artifacts.read(gone / "artifacts").files]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # the manifest check reports an unreadable artifacts.json
    if not listed:
        return []  # the manifest check reports an empty list
    for f in listed:
        (gone / "artifacts" / f).unlink(missing_ok=True)
    try:
        _simulate(gone, probe)
    except HwmapError:
        return []
    except Exception as e:
        return [f"artifacts: with the emitted files deleted simulate fails with {_one_line(e)}, "
                "not an hwmap error naming the missing file"]
    return [f"artifacts: simulate still succeeds with the {len(listed)} emitted files deleted "
            f"({', '.join(listed)}): it does not read its artifacts"]


def _check_artifacts_swapped(moved: Path, graph: Graph, probe: Dataset, ref: str, tmp_path: Path,
                             calibrate: bool) -> list[str]:
    """Simulating ``moved`` with the artifacts of the same model with other weights (compiled
    into its own directory) swapped in must give exactly what that directory gives, or be
    refused with an :class:`HwmapError`."""
    from .compiledir import stamp
    from .flow import compile_model

    other = tmp_path / "other-weights"
    shutil.rmtree(other, ignore_errors=True)
    try:
        compile_model(other_weights(graph), load_target(ref), other, data=probe if calibrate else None)
        expected = _simulate(other, probe)
    except Exception as e:
        return [f"artifacts: the same model with other weights does not compile and simulate on {ref}: {_one_line(e)}"]
    swapped = tmp_path / "artifacts-swapped"
    shutil.rmtree(swapped, ignore_errors=True)
    shutil.copytree(moved, swapped)
    shutil.rmtree(swapped / "artifacts")
    shutil.copytree(other / "artifacts", swapped / "artifacts")
    stamp(swapped)  # past the core's digest check (it would refuse the swap): the target's simulator is judged
    try:
        got = _simulate(swapped, probe)
    except HwmapError:
        return []  # refused: the target checks that the artifacts belong to the graph
    except Exception as e:
        return [f"artifacts: with another model's artifacts swapped in simulate fails with {_one_line(e)}, "
                "not an hwmap error naming the mismatch"]
    out = []
    for name in graph.outputs:
        a, b = got.outputs.get(name), expected.outputs.get(name)
        if a is not None and b is not None and np.shape(a) == np.shape(b):
            if np.array_equal(a, b):
                continue
            worst = f"max |difference| {float(np.max(np.abs(np.asarray(a, np.float64) - b))):.4g}"
        else:
            worst = "output missing or of another shape"
        out.append(f"artifacts: output {name!r} simulated with the artifacts of the same model with other weights "
                   f"swapped in is not what that model's own directory gives ({worst}, bound 0): the simulation "
                   "is not a function of the artifacts")
    return out


def _check_determinism(a: Path, b: Path) -> list[str]:
    out = []
    files_a = _files(a / "artifacts")
    files_b = _files(b / "artifacts")
    if files_a != files_b:
        out.append(f"determinism: two compiles wrote different artifact files: "
                   f"{sorted(set(files_a) ^ set(files_b))}")
    for rel in sorted(set(files_a) & set(files_b)):
        if (a / "artifacts" / rel).read_bytes() != (b / "artifacts" / rel).read_bytes():
            out.append(f"determinism: artifacts/{rel} differs between two compiles of the same model")
    for rel in ("kpis.json", "mapping.json"):
        if (a / rel).exists() and (a / rel).read_bytes() != (b / rel).read_bytes():
            out.append(f"determinism: {rel} differs between two compiles of the same model")
    return out


def _check_manifest(art: Path) -> list[str]:
    manifest = art / "artifacts.json"
    if not manifest.exists():
        return ["artifacts: artifacts/artifacts.json is missing"]
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"artifacts: artifacts.json is not readable: {_one_line(e)}"]
    if not isinstance(listed, list) or not listed:
        return ["artifacts: emit returned no files"]
    out = []
    missing = [f for f in listed if not (art / str(f)).is_file()]
    if missing:
        out.append(f"artifacts: listed but not written: {', '.join(map(str, missing))}")
    unlisted = sorted(set(_files(art)) - {str(f) for f in listed} - {"artifacts.json"})
    if unlisted:
        out.append(f"artifacts: written but not listed by emit: {', '.join(unlisted)}")
    if len(set(map(str, listed))) != len(listed):
        out.append("artifacts: a file is listed twice")
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
        out.append(f"kpis: kpis.json cannot be read back: {_one_line(e)}")
    else:
        if on_disk.dumps() != kpis.dumps():
            out.append("kpis: kpis.json does not round-trip to the record compile returned")
    return out


# -- helpers ---------------------------------------------------------------------------------------
def _files(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _random_data(graph: Graph) -> Dataset:
    """Seeded uniform [0, 1) inputs shaped like the model's single input."""
    if len(graph.inputs) != 1:
        from .errors import DataError

        raise DataError(f"the model has {len(graph.inputs)} inputs; pass data= for it")
    shape = graph.tensor(graph.inputs[0]).shape
    rng = np.random.default_rng(0)
    return Dataset(rng.random((RANDOM_SAMPLES, *shape[1:]), dtype=np.float32), None, "random")


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    if not isinstance(e, HwmapError):
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            text += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return text
