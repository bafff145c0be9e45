"""The conformance suite a target plugin runs against itself.

A third-party target proves it plays by hwmap's rules with one line in its own tests::

    from hwmap.testing import conformance_test

    test_conforms = conformance_test("my_kind", data="zoo:digits", model="zoo:digits_cnn")

or, inside any test, ``assert_conforms("my_kind", tmp_path=tmp_path)``. :func:`check_target`
returns the list of failures instead (empty: the target conforms). What is checked:

1. the kind is registered, with a description and a pydantic config model that rejects
   unknown keys (a :class:`hwmap.TargetConfig` subclass or ``extra="forbid"``), and a
   ``default`` preset (the one ``compare`` and ``demo`` use);
2. every preset loads, the JSON Schema (``hwmap schema``) can be produced, and a wrong
   key in a copy of the default preset, at the top and inside each table, is a
   :class:`hwmap.ConfigError` naming the key;
3. compiling ``model`` twice, into two directories, gives byte-identical artifacts and
   ``kpis.json``, and ``artifacts/artifacts.json`` lists exactly the files that exist;
4. the artifacts simulate when read back from disk only (the compile directory is moved
   first), return every graph output with the reference's shape, and do so
   deterministically;
5. the KPI record is complete (:meth:`hwmap.KPIs.check`), names target, config and model,
   states its assumptions, and carries a fidelity when data was given.

Without ``data`` the simulation runs on seeded random inputs shaped like the model's.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from .config import load_target, read_toml, schema_for
from .data import Dataset, load_data
from .errors import ConfigError, DoesNotFitError, HwmapError
from .graph import Graph
from .kpi import KPIs
from .registry import get_registry
from .target import TargetConfig, TargetSpec

__all__ = ["check_target", "assert_conforms", "conformance_test", "BOGUS_KEY"]

#: The key the suite adds to a preset to see it rejected.
BOGUS_KEY = "hwmap_conformance_unknown_key"
#: Random inputs simulated when no data is given.
RANDOM_SAMPLES = 8


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
    failures += _check_flow(kind, model=model, data=data, preset=preset, tmp_path=tmp_path)
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
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann.model_config.get("extra") != "forbid":
            out.append(f"registration: config table [{name}] ({ann.__name__}) accepts unknown keys "
                       "(set model_config = ConfigDict(extra='forbid'))")
    if "default" not in spec.presets:
        out.append(f"registration: no 'default' preset (presets: {', '.join(sorted(spec.presets)) or 'none'}); "
                   "compare and demo use it")
    return out


# -- 2. configs ---------------------------------------------------------------------------------------
def _check_configs(spec: TargetSpec, tmp_path: Path) -> list[str]:
    out = []
    kind = spec.kind
    for name in sorted(spec.presets):
        ref = f"{kind}:{name}"
        try:
            t = load_target(ref)
        except Exception as e:
            out.append(f"preset {ref}: does not load: {_one_line(e)}")
            continue
        if t.kind != kind:
            out.append(f"preset {ref}: declares kind {t.kind!r}")
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
        p.write_text(_to_toml(doc))
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


# -- 3.–5. the flow ---------------------------------------------------------------------------------
def _check_flow(kind: str, *, model: str, data: str | None, preset: str, tmp_path: Path) -> list[str]:
    from .flow import compile_model, simulate_dir
    from .source import load_model

    ref = f"{kind}:{preset}"
    try:
        graph = load_model(model)
        dataset = load_data(data) if data is not None else _random_data(graph)
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
        sim, _, _ = simulate_dir(moved, dataset)
        again, _, _ = simulate_dir(moved, dataset)
    except Exception as e:
        return out + [f"simulate: hwmap simulate on the compiled directory fails: {_one_line(e)}"]
    from .execute import run
    from .flow import model_inputs

    reference = run(graph, model_inputs(graph, dataset))
    for name in graph.outputs:
        if name not in sim.outputs:
            out.append(f"simulate: output {name!r} missing (got: {', '.join(sorted(sim.outputs)) or 'none'})")
            continue
        got = np.asarray(sim.outputs[name]).shape
        if got != reference[name].shape:
            out.append(f"simulate: output {name!r} has shape {list(got)}, the reference model's "
                       f"{list(reference[name].shape)}")
        elif not np.all(np.isfinite(np.asarray(sim.outputs[name], dtype=np.float64))):
            out.append(f"simulate: output {name!r} holds NaN or infinite values")
        if name in again.outputs and not np.array_equal(np.asarray(again.outputs[name]),
                                                        np.asarray(sim.outputs[name])):
            out.append(f"simulate: output {name!r} differs between two runs on the same data (not deterministic)")
    if data is not None and results[0].simulation is not None:
        for name in graph.outputs:
            a, b = results[0].simulation.outputs.get(name), sim.outputs.get(name)
            if a is not None and b is not None and not np.array_equal(np.asarray(a), np.asarray(b)):
                out.append(f"simulate: output {name!r} read back from disk differs from the simulation run "
                           "right after compile")
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


def _to_toml(d: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for presets read by ``tomllib`` (scalars, arrays, tables)."""
    scalars = [f"{_key(k)} = {_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    text = "\n".join(scalars) + ("\n" if scalars else "")
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}{_key(k)}"
            text += f"\n[{name}]\n" + _to_toml(v, name + ".")
    return text


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    # tomllib gives datetimes and times; their isoformat is valid TOML
    return v.isoformat()


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    if not isinstance(e, HwmapError):
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            text += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return text
