"""examples/toy_cpu is a real package: its pyproject.toml declares the distribution and the
entry point the tests' fake distributions use, the entry point resolves to hooks that pass
hwmap's conformance suite (run through the example's own test module), and the wheel it
builds, once installed, is listed and compared by the ``hwmap`` command line."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from hwmap import Artifacts, load_data
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.flow import compile_model
from hwmap.registry import ENTRY_POINT_GROUP, Registry
from fake_dist import TOY_CPU_EXAMPLE, TOY_DISTRIBUTION, TOY_ENTRY_POINT, installed_example, write_dist
from hwmap_toy_cpu import plugin

PYPROJECT = TOY_CPU_EXAMPLE / "pyproject.toml"
#: The example's own test module, as a target author writes it.
OWN_TEST = TOY_CPU_EXAMPLE / "tests" / "test_conforms.py"


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def hwmap(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwmap.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)


# -- the package's declaration ---------------------------------------------------------------------
def test_pyproject_declares_the_distribution_its_entry_point_and_its_presets() -> None:
    project = pyproject()["project"]
    assert project["name"] == TOY_DISTRIBUTION
    # the one entry point, the same the tests' fake distributions declare
    assert project["entry-points"] == {ENTRY_POINT_GROUP: TOY_ENTRY_POINT}
    assert "hwmap" in {Requirement(r).name for r in project["dependencies"]}
    assert (TOY_CPU_EXAMPLE / project["readme"]).is_file()
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["hwmap_toy_cpu*"]
    assert setuptools["package-data"] == {"hwmap_toy_cpu.presets": ["*.toml"]}
    # the example's own tests run when pytest is started in its folder
    assert pyproject()["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_the_entry_point_resolves_to_hooks_that_conform(registry: Registry, tmp_path: Path) -> None:
    ((name, value),) = pyproject()["project"]["entry-points"][ENTRY_POINT_GROUP].items()
    module = md.EntryPoint(name, value, ENTRY_POINT_GROUP).load()  # what the registry does with it
    assert Path(module.__file__).resolve().is_relative_to(TOY_CPU_EXAMPLE)
    assert registry.add_plugin(module, name=name, package=TOY_DISTRIBUTION, version=pyproject()["project"]["version"])
    assert registry.kinds() == ["toy_cpu"] and registry.spec("toy_cpu").presets.keys() == {"default", "small"}
    assert {"hwmap_legalize", "hwmap_map", "hwmap_emit", "hwmap_simulate", "hwmap_estimate"} \
        <= set(registry.hooks_of(name))
    # the example's own test module, as a target author writes it: one line
    spec = importlib.util.spec_from_file_location("hwmap_toy_cpu_own_tests", OWN_TEST)
    assert spec is not None and spec.loader is not None
    own = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own)
    assert own.test_conforms.__name__ == "test_toy_cpu_conforms"
    own.test_conforms(tmp_path)  # hwmap.testing.assert_conforms("toy_cpu", model=zoo:digits_cnn, data=zoo:digits)


def test_the_own_test_module_is_the_one_line_of_the_guide() -> None:
    code = [line for line in OWN_TEST.read_text().splitlines() if line and not line.startswith(('"""', "#"))]
    assert code == ["from hwmap.testing import conformance_test",
                    'test_conforms = conformance_test("toy_cpu", model="zoo:digits_cnn", data="zoo:digits")']


# -- presets ---------------------------------------------------------------------------------------
def test_small_extends_default_and_changes_only_the_hardware(toy_registry: Registry) -> None:
    raw = tomllib.loads((TOY_CPU_EXAMPLE / "hwmap_toy_cpu" / "presets" / "small.toml").read_text())
    assert raw["extends"] == "toy_cpu:default" and "kind" not in raw and set(raw) == {
        "extends", "name", "description", "hardware"}
    small, default = load_target("toy_cpu:small"), load_target("toy_cpu:default")
    assert (small.kind, small.name) == ("toy_cpu", "toy-small")
    hw = small.config.hardware
    assert (hw.clock_hz, hw.macs_per_cycle, hw.sram_bytes) == (20e6, 1, 1024)
    # the energies, with their sources, come from the default preset
    assert small.config.energy == default.config.energy
    for key in ("energy.mac_pj", "energy.sram_read_pj_per_64bit"):
        assert small.constant(key) == default.constant(key)
        assert small.constant(key).source.startswith("Horowitz, ISSCC 2014, 45 nm")
    assert small.constant("hardware.sram_bytes").source == "assumed: 1 KiB, too small on purpose"


# -- the simulator reports its progress ---------------------------------------------------------
def test_simulate_reports_progress_after_each_slice(toy_registry: Registry, tmp_path: Path) -> None:
    target = load_target("toy_cpu:default")
    compile_model("zoo:digits_cnn", target, tmp_path / "out")
    x = load_data("zoo:digits").x[:150]
    seen: list[tuple[int, int]] = []
    target.progress = lambda done, total: seen.append((done, total))
    sim = plugin.hwmap_simulate(Artifacts.read(tmp_path / "out" / "artifacts"), target, {"input": x})
    assert plugin.SLICE == 64 and seen == [(64, 150), (128, 150), (150, 150)]
    whole = run(plugin.load_program(Artifacts.read(tmp_path / "out" / "artifacts")), {"input": x})["output"]
    assert sim.outputs["output"].shape == (150, 10)
    np.testing.assert_allclose(sim.outputs["output"], whole, rtol=1e-5, atol=1e-6)


# -- an installed copy is refused by the test run ---------------------------------------------------
def test_an_installed_copy_of_the_example_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert installed_example() is None  # the test run itself (tests/conftest.py refuses otherwise)
    info = write_dist(tmp_path, TOY_DISTRIBUTION, TOY_ENTRY_POINT, version="0.1.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed_example() == str(info)


# -- built and installed as pip would ----------------------------------------------------------------
def test_the_wheel_ships_the_package_its_presets_and_the_entry_point(example_wheel: Path) -> None:
    version = pyproject()["project"]["version"]
    assert example_wheel.name == f"hwmap_toy_cpu-{version}-py3-none-any.whl"
    with zipfile.ZipFile(example_wheel) as z:
        names = set(z.namelist())
        info = f"hwmap_toy_cpu-{version}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    package = {n for n in names if not n.startswith(info)}
    assert package == {"hwmap_toy_cpu/__init__.py", "hwmap_toy_cpu/hardware.py", "hwmap_toy_cpu/plugin.py",
                       "hwmap_toy_cpu/presets/default.toml", "hwmap_toy_cpu/presets/small.toml"}
    assert entry_points.split() == ["[hwmap.targets]", "toy_cpu", "=", "hwmap_toy_cpu.plugin"]
    assert f"Name: {TOY_DISTRIBUTION}\n" in metadata and "Requires-Dist: hwmap>=0.1\n" in metadata


def test_installed_from_its_wheel_hwmap_lists_and_compares_it(example_site: Path, installed_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-c", "import hwmap_toy_cpu; print(hwmap_toy_cpu.__file__)"],
                       env=installed_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and Path(p.stdout.strip()).is_relative_to(example_site), p.stderr
    p = hwmap("targets", "--json", env=installed_env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    (toy,) = [t for t in d["targets"] if t["kind"] == "toy_cpu"]
    assert (toy["package"], toy["version"]) == (TOY_DISTRIBUTION, pyproject()["project"]["version"])
    assert toy["presets"] == ["default", "small"]
    assert not [e for e in d["errors"] if "toy" in e["plugin"]]
    p = hwmap("compare", "zoo:digits_cnn", "toy_cpu:default", "--data", "zoo:digits", "--json", env=installed_env,
              cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (rec,) = json.loads(p.stdout)
    assert rec["fits"] and rec["target"] == "toy_cpu" and rec["config"] == "toy-default"
    assert rec["fidelity"]["metric"] == "top1_agreement" and rec["fidelity"]["value"] >= 0.9
    assert rec["provenance"]["versions"][TOY_DISTRIBUTION] == pyproject()["project"]["version"]
