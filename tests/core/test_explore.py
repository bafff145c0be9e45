"""``hwmap explore`` in-process: the space file and its checks, Pareto fronts and hypervolumes
against brute force and optuna, the grid against the exhaustive enumeration, failing trials,
and a spiking target's ``[conversion]`` keys in a space. Trials run in this process
(``workers=0``) on throw-away targets registered by hand."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwmap import hookimpl
from hwmap.config import load_target
from hwmap.errors import ConfigError, DataError
from hwmap.explore import explore, hypervolume, pareto_indices, read_space
from hwmap.explore.pareto import dominates, reference_point
from hwmap.flow import compile_model
from toy_variants import KIND, Variant, write_presets

MODEL = "zoo:digits_mlp"


def write(tmp: Path, text: str, name: str = "space.toml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


TOY_SPACE = """
sampler = "grid"
[objectives]
energy_per_inference_j = "minimize"
latency_s = "minimize"
[[targets]]
target = "toy_cpu:default"
[targets.space]
"hardware.macs_per_cycle" = [1, 2, 4]
"hardware.clock_hz" = {low = 50e6, high = 150e6, step = 50e6}
"""


# -- Pareto fronts and hypervolumes -------------------------------------------------------------------
def brute_force_front(points: np.ndarray) -> list[int]:
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


@pytest.mark.parametrize("objectives", [1, 2, 3, 4])
def test_pareto_front_equals_a_brute_force_dominance_filter(objectives: int) -> None:
    rng = np.random.default_rng(objectives)
    for _ in range(40):
        n = int(rng.integers(1, 40))
        points = rng.integers(0, 6, size=(n, objectives)).astype(float)  # few values: ties and duplicates
        assert pareto_indices(points) == brute_force_front(points)


def test_hypervolume_equals_optunas() -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(0)
    for d in (2, 3, 4):
        for _ in range(10):
            points = rng.random((int(rng.integers(1, 25)), d))
            ref = np.full(d, 1.1)
            assert hypervolume(points, ref) == pytest.approx(compute_hypervolume(points, ref), rel=1e-12)
    assert hypervolume([[2.0, 2.0]], [1.0, 1.0]) == 0.0  # beyond the reference point: nothing
    assert hypervolume([[0.0, 0.0]], [1.0, 2.0]) == pytest.approx(2.0)
    assert reference_point([[1.0, -2.0], [3.0, -4.0]]).tolist() == pytest.approx([3.3, -2.0 / 1.1])


# -- the space file ----------------------------------------------------------------------------------
def test_the_space_is_read_in_file_order(toy_registry: Any, tmp_path: Path) -> None:
    space = read_space(write(tmp_path, TOY_SPACE))
    (t,) = space.targets
    assert [p.key for p in t.params] == ["hardware.macs_per_cycle", "hardware.clock_hz"]
    assert t.params[1].values() == [50e6, 100e6, 150e6]
    assert space.size() == 9
    assert [o.column for o in space.objectives] == ["energy_per_inference_j", "latency_s"]
    assert t.variant({"hardware.macs_per_cycle": 2, "hardware.clock_hz": 5e7}) == \
        "toy_cpu:default@hardware.macs_per_cycle=2@hardware.clock_hz=50000000.0"


@pytest.mark.parametrize("space, message", [
    ('"hardware.macs_per_cyle" = [1, 2]', "space key 'hardware.macs_per_cyle' is not a key of a toy_cpu config "
                                          "(did you mean 'hardware.macs_per_cycle'?)"),
    ('"hardware.macs_per_cycle" = {low = 8, high = 2}', "an empty range (low 8 > high 2)"),
    ('"hardware.macs_per_cycle" = []', "an empty list of choices"),
    ('"hardware.macs_per_cycle" = [1, 0]', "space key 'hardware.macs_per_cycle' = 0 is refused by the toy_cpu "
                                           "schema"),
    ('"hardware.clock_hz" = {low = 1e6, high = 2e6, log = true, step = 1e5}', "a log range takes no step"),
    ('"hardware" = {clock_hz = [1e6]}', "space key 'hardware' is a table: write the dotted key quoted"),
])
def test_a_bad_space_is_one_error_naming_the_key(toy_registry: Any, tmp_path: Path, space: str,
                                                 message: str) -> None:
    text = TOY_SPACE.split("[targets.space]")[0] + "[targets.space]\n" + space + "\n"
    with pytest.raises(ConfigError) as e:
        read_space(write(tmp_path, text))
    assert message in str(e.value)
    assert str(tmp_path / "space.toml") in str(e.value)
    assert len(e.value.lines()) == 1


@pytest.mark.parametrize("change, message", [
    (('latency_s = "minimize"', 'latency = "minimize"'), "objective 'latency' is not a KPI column (did you mean "
                                                          "'latency_s'?)"),
    (('latency_s = "minimize"', 'latency_s = "lower"'), "the direction must be \"minimize\" or \"maximize\""),
    (('sampler = "grid"', 'sampler = "grid"\nconstraints = ["accuracy => 0.9"]'), "expected COLUMN >= NUMBER"),
    (('sampler = "grid"', 'sampler = "bayes"'), "sampler 'bayes': must be one of nsga2, tpe, random, grid"),
    (('step = 50e6', 'log = true'), "sampler \"grid\" needs a finite space"),
    (('target = "toy_cpu:default"', 'target = "toy_cpu:huge"'), "target kind 'toy_cpu' has no preset 'huge'"),
    (('step = 50e6', 'step = 1e-6'), "the space has 300,000,000,000,003 points; at most 65,536 are enumerated"),
    (('target = "toy_cpu:default"', 'target = "../elsewhere.toml"'), "target '../elsewhere.toml' is outside the "
                                                                      "folder of the space file"),
    (('target = "toy_cpu:default"', 'target = "/etc/hwmap.toml"'), "target '/etc/hwmap.toml' is outside the "
                                                                    "folder of the space file"),
])
def test_bad_objectives_samplers_and_targets_are_refused(toy_registry: Any, tmp_path: Path,
                                                         change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        read_space(write(tmp_path, TOY_SPACE.replace(*change)))
    assert message in str(e.value)


# -- grid, failing trials ----------------------------------------------------------------------------
def test_grid_search_equals_the_exhaustive_enumeration(toy_registry: Any, tmp_path: Path) -> None:
    run = explore(MODEL, write(tmp_path, TOY_SPACE), trials=100, workers=0, outdir=str(tmp_path / "out"),
                  quiet=True)
    assert run.total == 9  # --trials is capped at the space's size
    rows = run.results.rows
    got = {(r.values["hardware.macs_per_cycle"], r.values["hardware.clock_hz"]): r for r in rows}
    want = list(itertools.product([1, 2, 4], [50e6, 100e6, 150e6]))
    assert sorted(got) == sorted(want) and len(rows) == len(want)
    for (macs, clock), row in got.items():  # each trial's record is the flow's own for that config
        target = load_target(row.config)  # the trial's config as a variant compile and compare take
        assert (target.config.hardware.macs_per_cycle, target.config.hardware.clock_hz) == (macs, clock)
        direct = json.loads(compile_model(MODEL, target, None).kpis.dumps())
        assert row.state == "complete" and row.kpis == direct
    vectors = run.results.objective_vectors(rows)
    assert {r.number for r in run.results.front} == {rows[i].number for i in pareto_indices(vectors)}
    csv_rows = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert len(csv_rows) == 10 and csv_rows[0].startswith("trial,state,target,kind,config,hardware.macs_per_cycle")
    again = explore(MODEL, write(tmp_path, TOY_SPACE), trials=100, workers=0, outdir=str(tmp_path / "out"),
                    quiet=True)
    assert again.summary.recorded == 0  # a rerun of a finished study adds nothing
    assert (tmp_path / "out" / "trials.csv").read_text() == "\n".join(csv_rows) + "\n"


class RaisingToy(Variant):
    """The toy target whose estimate raises a plain exception (a plugin bug) at 2 MACs per cycle."""

    @hookimpl
    def hwmap_estimate(self, mapping: Any, target: Any, activity: Any) -> Any:
        if target.config.hardware.macs_per_cycle == 2:
            raise RuntimeError("estimator bug at 2 MACs per cycle")
        return super().hwmap_estimate(mapping, target, activity)


def test_failing_trials_are_recorded_and_the_study_goes_on(registry: Any, tmp_path: Path) -> None:
    assert registry.add_plugin(RaisingToy(write_presets(tmp_path / "presets")), name="raising") == "raising"
    text = TOY_SPACE.replace('"hardware.clock_hz" = {low = 50e6, high = 150e6, step = 50e6}',
                             '"hardware.sram_bytes" = [1024, 262144]').replace("toy_cpu:", f"{KIND}:")
    run = explore(MODEL, write(tmp_path, text), trials=6, workers=0, outdir=str(tmp_path / "out"), quiet=True)
    rows = {(r.values["hardware.macs_per_cycle"], r.values["hardware.sram_bytes"]): r for r in run.results.rows}
    assert len(rows) == 6
    for (macs, sram), r in rows.items():
        if sram == 1024:
            assert r.state == "fail" and r.error.startswith("does not fit: "), r.error
        elif macs == 2:
            assert r.state == "fail" and r.error == "plugin error: RuntimeError: estimator bug at 2 MACs per cycle"
        else:
            assert r.state == "complete" and not r.error
        assert r.kpis["fits"] is (r.state == "complete")


def test_objectives_on_accuracy_need_data(toy_registry: Any, tmp_path: Path) -> None:
    text = TOY_SPACE.replace('latency_s = "minimize"', 'accuracy = "maximize"')
    with pytest.raises(ConfigError, match="'accuracy' is measured by simulating the artifacts .* it needs --data"):
        explore(MODEL, write(tmp_path, text), workers=0, outdir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(DataError, match="give -o DIR"):
        explore(MODEL, write(tmp_path, TOY_SPACE), workers=0)


def test_a_spiking_targets_conversion_keys_are_a_space(registry: Any, tmp_path: Path) -> None:
    """``conversion.timesteps`` (the [conversion] table of spiking targets, as --set takes it)."""
    import spiking_toy

    assert registry.add_plugin(spiking_toy.plugin, name="spiking_toy") == "spiking_toy", registry.errors
    data = tmp_path / "digits.npz"
    from hwmap.data import load_data

    digits = load_data("zoo:digits")
    np.savez(data, x=digits.x[:24], y=digits.y[:24])
    text = f"""
sampler = "grid"
[objectives]
latency_s = "minimize"
accuracy = "maximize"
[[targets]]
target = "{spiking_toy.KIND}:default"
[targets.space]
"conversion.timesteps" = [2, 4]
"""
    run = explore("zoo:digits_cnn", write(tmp_path, text), data=str(data), trials=2, workers=0,
                  outdir=str(tmp_path / "out"), quiet=True)
    by_t = {r.values["conversion.timesteps"]: r for r in run.results.rows}
    assert sorted(by_t) == [2, 4] and all(r.state == "complete" for r in by_t.values())
    assert by_t[4].columns["latency_s"] == pytest.approx(2 * by_t[2].columns["latency_s"])
    assert by_t[2].config == f"{spiking_toy.KIND}:default@conversion.timesteps=2"

    # --set conversion.timesteps=4 (as compile and compare take it) under a space of another key
    text = text.replace('"conversion.timesteps" = [2, 4]', '"hardware.step_s" = [1e-3, 2e-3]')
    run = explore("zoo:digits_cnn", write(tmp_path, text), data=str(data), trials=2, workers=0,
                  outdir=str(tmp_path / "out"), quiet=True, overrides=["conversion.timesteps=4"])
    by_step = {r.values["hardware.step_s"]: r for r in run.results.rows}
    assert by_step[1e-3].columns["latency_s"] == pytest.approx(4e-3)
    assert by_step[2e-3].columns["latency_s"] == pytest.approx(8e-3)
    assert by_step[2e-3].config == f"{spiking_toy.KIND}:default@conversion.timesteps=4@hardware.step_s=0.002"
    assert by_step[1e-3].differences == {}  # the default step, with the --set config as the base
    with pytest.raises(ConfigError, match="space key 'hardware.step_s' is also given by --set"):
        read_space(write(tmp_path, text), ["hardware.step_s=1e-3"])


def test_workers_reuse_legalized_graphs_per_config(toy_registry: Any) -> None:
    from hwmap.explore.evaluate import LegalizeCache
    from hwmap.source import load_model

    graph = load_model(MODEL)
    cache = LegalizeCache(size=2)
    first = compile_model(graph, load_target("toy_cpu:default"), None, legalize_cache=cache)
    again = compile_model(graph, load_target("toy_cpu:default@name=\"renamed\""), None, legalize_cache=cache)
    assert cache.hits == 1 and again.legalized is first.legalized  # the same config under another name
    assert again.kpis.energy_per_inference_j == first.kpis.energy_per_inference_j
    for macs in (2, 3):
        compile_model(graph, load_target(f"toy_cpu:default@hardware.macs_per_cycle={macs}"), None,
                      legalize_cache=cache)
    assert cache.hits == 1 and len(cache) == 2  # other configs are legalized; the oldest is dropped
