"""hwmap.testing: the toy target conforms; deliberately broken variants of it are caught."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from hwmap import Artifacts, KPIs, Simulation, hookimpl
from hwmap.registry import Registry
from hwmap.testing import RANDOM_SAMPLES, assert_conforms, check_target, conformance_test
from hwmap_toy_cpu import plugin
from hwmap_toy_cpu.hardware import Hardware, ToyConfig
from toy_variants import Variant, failures_of, write_presets

pytestmark = pytest.mark.usefixtures("toy_registry")

# the one line a plugin's own test module writes
test_toy_cpu_conforms_in_one_line = conformance_test("toy_cpu")


def test_toy_target_conforms_with_data(tmp_path: Path) -> None:
    assert_conforms("toy_cpu", data="zoo:digits", model="zoo:digits_cnn", tmp_path=tmp_path)


def test_a_preset_the_model_does_not_fit_is_reported(tmp_path: Path) -> None:
    failures = check_target("toy_cpu", preset="small", tmp_path=tmp_path)
    assert len(failures) == 1
    assert failures[0].startswith("compile: zoo:chapter_cnn does not fit toy_cpu:small: weight_memory")


def test_an_unknown_kind(tmp_path: Path) -> None:
    failures = check_target("no_such_kind", tmp_path=tmp_path)
    assert failures == ["registration: unknown target kind 'no_such_kind' (installed: toy_cpu)"]
    with pytest.raises(AssertionError, match=r"'no_such_kind' does not conform .*\(1 problem\)"):
        assert_conforms("no_such_kind", tmp_path=tmp_path)


# -- broken variants of the toy target -----------------------------------------------------------
class TimestampedEmit(Variant):
    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        art = plugin.hwmap_emit(mapping, target, outdir)
        (outdir / "build.txt").write_text(f"built at {time.time_ns()}\n")
        return Artifacts(outdir, art.files + ["build.txt"], art.manifest)


class UnlistedFile(Variant):
    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        art = plugin.hwmap_emit(mapping, target, outdir)
        (outdir / "debug.log").write_text("scratch\n")
        return Artifacts(outdir, art.files + ["missing.bin"], art.manifest)


class EmptyEstimate(Variant):
    @hookimpl
    def hwmap_estimate(self, mapping: Any, target: Any, activity: Any) -> KPIs:
        k = plugin.hwmap_estimate(mapping, target, activity)
        k.energy_per_inference_j = None
        k.power_w = None
        k.ops_kind = "FLOP"
        k.assumptions = {}
        return k


class SimulatesFromWhereItWasBuilt(Variant):
    """Reads the program from the directory it was emitted to (an absolute path in the
    manifest) instead of the directory it is given: breaks once the directory moves."""

    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        art = plugin.hwmap_emit(mapping, target, outdir)
        return Artifacts(outdir, art.files, {**art.manifest, "built_in": str(outdir.resolve())})

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        here = Artifacts(Path(artifacts.manifest["built_in"]), artifacts.files, artifacts.manifest)
        return plugin.hwmap_simulate(here, target, inputs)


class DropsTheBatch(Variant):
    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        sim = plugin.hwmap_simulate(artifacts, target, inputs)
        return Simulation({k: v[0] for k, v in sim.outputs.items()}, sim.activity)


class NoisySimulation(Variant):
    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        sim = plugin.hwmap_simulate(artifacts, target, inputs)
        noise = np.random.default_rng().normal(0, 1e-3, size=1)  # unseeded: differs every run
        return Simulation({k: v + noise.astype(v.dtype) for k, v in sim.outputs.items()}, sim.activity)


class LaxConfig(BaseModel):
    hardware: dict[str, Any] = {}
    energy: dict[str, Any] = {}


class AcceptsAnything(Variant):
    config = LaxConfig
    description = ""

    @hookimpl
    def hwmap_legalize(self, graph: Any, target: Any) -> Any:
        return plugin.hwmap_legalize(graph, _as_toy(target))

    @hookimpl
    def hwmap_estimate(self, mapping: Any, target: Any, activity: Any) -> KPIs:
        return plugin.hwmap_estimate(mapping, _as_toy(target), activity)


class LaxHardware(Hardware):
    model_config = ConfigDict(extra="allow")


class LaxTableConfig(ToyConfig):
    hardware: LaxHardware = Field(default_factory=LaxHardware)


class LaxTable(Variant):
    config = LaxTableConfig


class InfHardware(Hardware):
    model_config = ConfigDict(allow_inf_nan=True)


class InfTableConfig(ToyConfig):
    hardware: InfHardware = Field(default_factory=InfHardware)


class InfTable(Variant):
    config = InfTableConfig


def _as_toy(target: Any) -> Any:
    from hwmap import Target

    return Target(target.spec, ToyConfig.model_validate(target.config.model_dump()), target.name, target.source)


@pytest.fixture
def bad_presets(tmp_path: Path) -> dict[str, Path]:
    return write_presets(tmp_path / "presets")


def _failures(toy_registry: Registry, variant: type[Variant], presets: dict[str, Path], tmp_path: Path) -> list[str]:
    return failures_of(toy_registry, variant, presets, tmp_path)


def test_the_unbroken_variant_conforms(toy_registry: Registry, bad_presets: dict[str, Path], tmp_path: Path) -> None:
    assert _failures(toy_registry, Variant, bad_presets, tmp_path) == []


@pytest.mark.parametrize("variant, expected", [
    (TimestampedEmit, ["determinism: artifacts/build.txt differs between two compiles of the same model"]),
    (UnlistedFile, ["artifacts: listed but not written: missing.bin",
                    "artifacts: written but not listed by emit: debug.log"]),
    (EmptyEstimate, ["kpis: energy_per_inference_j missing", "kpis: power_w missing",
                     "kpis: ops_kind 'FLOP' is neither 'MAC' nor 'SynOp'",
                     "kpis: assumptions empty: say which constants and models the estimate used",
                     "kpis: assumptions are empty"]),
    (SimulatesFromWhereItWasBuilt, ["simulate: hwmap simulate on the compiled directory fails: TargetError: "]),
    (DropsTheBatch, ["simulate: hwmap simulate on the compiled directory fails: TargetError: simulated output "
                     f"'output' has shape [8, 3, 29], the reference [{RANDOM_SAMPLES}, 8, 3, 29]"]),
    (NoisySimulation, ["simulate: output 'output' differs between two runs on the same data (not deterministic)"]),
    (AcceptsAnything, ["registration: the kind has no description",
                       "registration: config model LaxConfig accepts unknown keys",
                       "config: an unknown key 'hwmap_conformance_unknown_key' in a copy of the default preset "
                       "is accepted"]),
    (InfTable, ["registration: config table [hardware] (InfHardware) accepts inf and nan (derive it from "
                "hwmap.ConfigSection)"]),
    (LaxTable, ["registration: config table [hardware] (LaxHardware) accepts unknown keys",
                "config: an unknown key 'hardware.hwmap_conformance_unknown_key' in a copy of the default preset "
                "is accepted"]),
])
def test_broken_variants_are_caught(toy_registry: Registry, bad_presets: dict[str, Path], tmp_path: Path,
                                    variant: type[Variant], expected: list[str]) -> None:
    failures = _failures(toy_registry, variant, bad_presets, tmp_path)
    for e in expected:
        assert any(f.startswith(e) for f in failures), (e, failures)
    assert len(failures) >= len(expected)
    with pytest.raises(AssertionError, match="does not conform"):
        assert_conforms("toy_bad", tmp_path=tmp_path / "again")


def test_a_broken_preset_is_reported(toy_registry: Registry, bad_presets: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "presets" / "broken.toml"
    broken.write_text('kind = "toy_bad"\n[hardware]\nmacs_per_cycle = -1\n')
    failures = _failures(toy_registry, Variant, {**bad_presets, "broken": broken}, tmp_path)
    assert len(failures) == 1
    assert failures[0].startswith("preset toy_bad:broken: does not load: ConfigError: toy_bad:broken")
    assert "hardware.macs_per_cycle" in failures[0]


def test_no_default_preset(toy_registry: Registry, bad_presets: dict[str, Path], tmp_path: Path) -> None:
    failures = _failures(toy_registry, Variant, {"other": bad_presets["default"]}, tmp_path)
    assert failures[0] == "registration: no 'default' preset (presets: other); compare and demo use it"
    assert failures[-1] == "preset 'default' to compile with does not exist (presets: other)"


def test_registered_gives_a_fresh_registry_with_the_plugins_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from hwmap import PluginError
    from hwmap.registry import AUTOLOAD_ENV, get_registry
    from hwmap.testing import registered

    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    with registered(plugin) as reg:
        assert reg.kinds() == ["toy_cpu"] and get_registry() is reg
        assert_conforms("toy_cpu", model="zoo:chapter_cnn")
    assert AUTOLOAD_ENV not in os.environ

    class Twice(Variant):
        kind = "toy_cpu"  # already registered by the toy: refused

    with pytest.raises(PluginError, match="plugin 'Twice' could not be registered: kind 'toy_cpu' is already"):
        with registered(plugin, Twice({})):
            pass
