"""pipelined_dnn plugin wiring: registration and presets, where every number comes from,
the conformance suite, the KPI record, the pictures, and bad input on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hwmap import ConfigError, Graph, load_model
from hwmap.config import load_target
from hwmap.constants import NO_SOURCE, field_source, leaf_fields
from hwmap.flow import compile_model
from hwmap.registry import get_registry
from hwmap.testing import conformance_test
from hwmap_pipelined_dnn import plugin
from hwmap_pipelined_dnn.hardware import PipelinedConfig
from hwmap_pipelined_dnn.legalize import legalize

test_conforms = conformance_test("pipelined_dnn", model="zoo:digits_cnn", data="zoo:digits")

#: Values nothing published backs: their sources must say "assumed".
ASSUMED = ("hardware.multipliers", "hardware.memory_blocks", "hardware.accumulator_bits",
           "hardware.external_memory_bytes", "energy.static_w", "tuner.min_fifo_depth", "tuner.sim_frames")


def hwmap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwmap.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_registered_with_its_presets() -> None:
    spec = get_registry().spec("pipelined_dnn")
    assert spec.config_model is PipelinedConfig and spec.description
    assert set(spec.presets) == {"default", "dneuro-like"}
    assert get_registry().owners["pipelined_dnn"] is plugin
    d = load_target("pipelined_dnn:dneuro-like").config
    assert isinstance(d, PipelinedConfig)
    assert (d.hardware.clock_hz, d.hardware.multipliers) == (200e6, 528)
    assert plugin.FIDELITY.bit_exact


def test_every_field_declares_the_source_of_its_default() -> None:
    fields = leaf_fields(PipelinedConfig)
    for path, (_, info) in fields.items():
        assert field_source(info).strip(), path
    for path in ASSUMED:
        assert field_source(fields[path][1]).startswith("assumed"), path
    src = {p: field_source(info) for p, (_, info) in fields.items()}
    assert "Horowitz" in src["energy.mac_pj"] and "UG573" in src["hardware.memory_block_bits"]


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and set(v) != {"value", "source"}:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("preset", sorted(plugin.presets()))
def test_every_preset_value_carries_its_source(preset: str) -> None:
    raw = tomllib.loads(plugin.presets()[preset].read_text())
    raw.pop("description"), raw.pop("name"), raw.pop("kind", None), raw.pop("extends", None)
    for key, v in _leaves(raw).items():
        assert isinstance(v, dict) and set(v) == {"value", "source"} and v["source"].strip(), (preset, key)
    for key, a in load_target(f"pipelined_dnn:{preset}").constants().items():
        assert "without a source" not in a.source and not a.source.startswith(NO_SOURCE), (key, a.source)


@pytest.mark.parametrize(("override", "key"), [("hardware.multipliers=0", "hardware.multipliers"),
                                               ("hardware.weight_bits=1", "hardware.weight_bits"),
                                               ("hardware.external_memory_bytes=0", "external_memory_bytes"),
                                               ("tuner.speed=3", "tuner.speed")])
def test_bad_configs_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_target("pipelined_dnn:default", [override])
    assert key in str(err.value)


def test_kpi_record(tmp_path: Path) -> None:
    res = compile_model("zoo:resnet_small", load_target("pipelined_dnn:default@hardware.multipliers=256"),
                        tmp_path / "out")
    k = res.kpis
    assert k.check() == [] and k.fits
    r = k.resources
    for key in ("multipliers_budget", "multipliers_used", "onchip_memory_bytes_used", "initiation_interval_cycles",
                "simulated_initiation_interval_cycles", "balanced_bound_fps", "bottleneck_layer"):
        assert key in r, key
    assert r["multipliers_used"] <= r["multipliers_budget"] == 256
    assert r["simulated_initiation_interval_cycles"] >= r["initiation_interval_cycles"]
    assert k.throughput_inf_per_s == pytest.approx(200e6 / r["simulated_initiation_interval_cycles"])
    assert k.bottleneck is not None and k.bottleneck.layer == r["bottleneck_layer"]
    assert sum(k.energy_breakdown.values()) == pytest.approx(k.energy_per_inference_j)
    assert set(k.energy_breakdown) == {"compute", "memory", "static"}
    conv = next(x for x in k.layers if x.name == "stem_fused")
    for key in ("template", "parallelism", "multipliers", "buffer_bytes", "data_volume", "bandwidth_bps",
                "busy_fraction"):
        assert key in conv.resources, key
    assert conv.cycles and conv.energy_j["compute"] > 0
    assert 0 < k.utilization <= 1
    assert k.assumptions["energy.mac_pj"].source.startswith("Horowitz")
    assert "model.tuner" in k.assumptions and "calibration" in k.assumptions
    mapping = json.loads((tmp_path / "out" / "mapping.json").read_text())
    assert mapping["tuner"]["method"] == "bisection" and mapping["layers"][1]["choice"]["template"]


def test_compile_with_plot_and_simulate(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:digits_cnn", "--target", "pipelined_dnn:default", "--data", "zoo:digits", "-o", "out",
              "--plot", "pipe.png", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "pipe.png").read_bytes()[:4] == b"\x89PNG"
    kpis = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert kpis["fidelity"]["value"] == 1.0
    files = json.loads((tmp_path / "out" / "artifacts" / "artifacts.json").read_text())["files"]
    assert files[0] == "pipeline.json" and any(f.endswith("_weights.bin") for f in files)
    p = hwmap("simulate", "out", "--data", "zoo:digits", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_budget_too_small_exits_1(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:digits_cnn", "--target", "pipelined_dnn:default@hardware.multipliers=2", "-o", "out",
              cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "multiplier_budget" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_frame_rate_exits_1(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:digits_cnn", "--target", "pipelined_dnn:default", "--set", "tuner.target_fps=1e9",
              "-o", "out", cwd=tmp_path)
    assert p.returncode == 1 and "target_fps" in p.stderr and "Traceback" not in p.stderr


def test_bad_value_exits_2(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:digits_cnn", "--target", "pipelined_dnn:default", "--set", "hardware.clock_hz=-1",
              "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and "hardware.clock_hz" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def _with_sigmoid(tmp_path: Path) -> Path:
    g: Graph = load_model("zoo:digits_cnn")
    node = next(n for n in g.nodes if n.name == "relu1")
    node.op = "Sigmoid"
    g.save(tmp_path / "sigmoid")
    return tmp_path / "sigmoid"


def test_layer_without_template_is_a_named_violation(tmp_path: Path) -> None:
    model = _with_sigmoid(tmp_path)
    legal = legalize(Graph.load(model), load_target("pipelined_dnn:default"))
    assert not legal.fits
    v = legal.violations[0]
    assert v.rule == "no_template" and v.node == "relu1" and "Sigmoid" in v.message
    p = hwmap("compile", str(model), "--target", "pipelined_dnn:default", "-o", "out", cwd=tmp_path)
    assert p.returncode == 1 and "no_template" in p.stderr and "relu1" in p.stderr


def test_compare_default_presets(tmp_path: Path) -> None:
    p = hwmap("compare", "zoo:digits_mlp", "pipelined_dnn:default", "pipelined_dnn:dneuro-like", "--data",
              "zoo:digits", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    records = json.loads(p.stdout)
    recs = records if isinstance(records, list) else records.get("records", records)
    assert len(recs) == 2
