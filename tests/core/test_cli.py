"""Every ``hwmap`` command through a subprocess, with the toy target installed as a fake
distribution (its dist-info on PYTHONPATH), as ``pip install`` would set it up."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_dist import TOY_ENTRY_POINT, subprocess_env, write_dist

MODEL = "zoo:digits_cnn"
DATA = "zoo:digits"


def hwmap(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwmap.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


#: A finished stage's progress line (printed without a terminal for stages over a second).
STAGE_LINE = re.compile(r"^hwmap: [^:]+(:[^:]+)*: \d+\.\d\d s$")


def one_error_line(p: subprocess.CompletedProcess, code: int = 2) -> str:
    """The process failed with ``code`` and said why in exactly one line, no traceback
    (progress lines of stages that finished before are not errors)."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if not STAGE_LINE.match(line)]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("hwmap: error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    return lines[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake ``toy-target`` distribution."""
    root = tmp_path_factory.mktemp("site")
    write_dist(root, "toy-target", TOY_ENTRY_POINT, version="0.1")
    return root


@pytest.fixture(scope="module")
def env(site: Path) -> dict[str, str]:
    return subprocess_env(site)


@pytest.fixture(scope="module")
def compiled(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``hwmap compile zoo:digits_cnn --target toy_cpu:default --data zoo:digits``, once."""
    out = tmp_path_factory.mktemp("compiled") / "digits-on-toy"
    p = hwmap("compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "--data", DATA, env=env)
    assert p.returncode == 0, p.stderr
    return out, p


# -- targets, check, schema ----------------------------------------------------------------------
def test_targets_json(env: dict[str, str]) -> None:
    p = hwmap("targets", "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    toy = [t for t in d["targets"] if t["kind"] == "toy_cpu"]
    assert len(toy) == 1
    assert toy[0]["package"] == "toy-target" and toy[0]["version"] == "0.1"
    assert toy[0]["presets"] == ["default", "small"]
    assert {"hwmap_legalize", "hwmap_map", "hwmap_emit", "hwmap_simulate", "hwmap_estimate"} <= set(toy[0]["hooks"])
    assert not [e for e in d["errors"] if "toy" in e["plugin"]]


def test_targets_table(env: dict[str, str]) -> None:
    p = hwmap("targets", env=env)
    assert p.returncode == 0, p.stderr
    assert "toy_cpu" in p.stdout and "toy-target" in p.stdout and "default, small" in p.stdout


def test_targets_with_a_broken_and_a_duplicate_plugin(tmp_path: Path, site: Path) -> None:
    # "[/opt/sdk]" looks like a closing rich markup tag: the table must print it as text
    (tmp_path / "hwmap_broken_target.py").write_text("raise ImportError('vendor SDK [/opt/sdk] missing')\n")
    (tmp_path / "hwmap_toy_twin.py").write_text(
        "from hwmap import hookimpl\nfrom hwmap_toy_cpu.hardware import ToyConfig\n\n@hookimpl\n"
        "def hwmap_register_targets(register):\n    register(kind='toy_cpu', config=ToyConfig, description='twin')\n")
    write_dist(tmp_path, "broken-target", {"broken": "hwmap_broken_target"})
    write_dist(tmp_path, "toy-twin", {"toy_twin": "hwmap_toy_twin"})
    env = subprocess_env(tmp_path, site)
    p = hwmap("targets", "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    errors = {e["plugin"]: e["error"] for e in d["errors"]}
    assert errors["broken (hwmap_broken_target)"] == "import failed: ImportError: vendor SDK [/opt/sdk] missing"
    assert errors["toy_twin"] == "kind 'toy_cpu' is already registered by plugin 'toy_cpu'; refused"
    assert [t["package"] for t in d["targets"] if t["kind"] == "toy_cpu"] == ["toy-target"]
    p = hwmap("targets", env=env)
    assert p.returncode == 0, p.stderr
    assert "load error broken (hwmap_broken_target): import failed: ImportError: vendor SDK [/opt/sdk] missing" \
        in p.stdout
    # the healthy plugin still works
    p = hwmap("check", "toy_cpu:default", env=env)
    assert p.returncode == 0, p.stderr


def test_targets_with_nothing_installed(site: Path) -> None:
    p = hwmap("targets", env=subprocess_env(site, autoload=False))
    assert p.returncode == 0 and "no target plugins installed" in p.stdout


def test_check_ok(env: dict[str, str], tmp_path: Path) -> None:
    p = hwmap("check", "toy_cpu:default", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "toy_cpu:default: valid toy_cpu config 'toy-default'"
    cfg = tmp_path / "mine.toml"
    cfg.write_text('kind = "toy_cpu"\n[hardware]\nmacs_per_cycle = 16\n')
    p = hwmap("check", str(cfg), "--set", "hardware.sram_bytes=2048", env=env)
    assert p.returncode == 0 and "valid toy_cpu config 'mine'" in p.stdout


@pytest.mark.parametrize("text, needle", [
    ('kind = "toy_cpu"\n[hardware]\ncores = 4\n',
     "unknown key 'hardware.cores' = 4; known keys: clock_hz, macs_per_cycle, sram_bytes"),
    ('kind = "toy_cpu"\n[hardware\n', "invalid TOML"),
    ('kind = "tpu"\n', "unknown target kind 'tpu'"),
    ('kind = "toy_cpu"\n[energy]\nmac_pj = -1\n', "key 'energy.mac_pj' = -1"),
])
def test_check_bad_configs(env: dict[str, str], tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    line = one_error_line(hwmap("check", str(cfg), env=env))
    assert line.startswith(f"hwmap: error: {cfg}: ") and needle in line


def test_check_bad_override_and_missing_preset(env: dict[str, str]) -> None:
    line = one_error_line(hwmap("check", "toy_cpu:default", "--set", "hardware.macs_per_cycle=0", env=env))
    assert "hardware.macs_per_cycle" in line
    line = one_error_line(hwmap("check", "toy_cpu:default", "--set", "nonsense", env=env))
    assert "expected KEY=VALUE" in line
    line = one_error_line(hwmap("check", "toy_cpu:turbo", env=env))
    assert "no preset 'turbo' (presets: default, small)" in line


def test_schema(env: dict[str, str]) -> None:
    p = hwmap("schema", "toy_cpu", env=env)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["properties"]["kind"]["const"] == "toy_cpu" and s["additionalProperties"] is False
    assert "sram_bytes" in s["$defs"]["Hardware"]["properties"]
    assert "unknown target kind 'nope'" in one_error_line(hwmap("schema", "nope", env=env))


# -- profile -------------------------------------------------------------------------------------------
def test_profile(env: dict[str, str], tmp_path: Path) -> None:
    p = hwmap("profile", "zoo:chapter_cnn", "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    names = [layer["name"] for layer in d["layers"]]
    assert "conv1" in names and "conv2" in names
    assert all(layer["macs"] > 0 for layer in d["layers"] if layer["name"].startswith("conv"))
    p = hwmap("profile", "zoo:chapter_cnn", env=env)
    assert p.returncode == 0 and "conv1" in p.stdout
    p = hwmap("profile", "zoo:chapter_cnn", "--csv", env=env)
    assert p.returncode == 0 and "conv2" in p.stdout
    png = tmp_path / "profile.png"
    p = hwmap("profile", "zoo:chapter_cnn", "--plot", str(png), env=env)
    assert p.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"


# -- compile ------------------------------------------------------------------------------------------
def test_compile_writes_the_directory(compiled: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, p = compiled
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    for f in ("graph/graph.json", "graph/params.npz", "legalized/graph.json", "mapping.json", "target.json",
              "artifacts/artifacts.json", "artifacts/program.json", "artifacts/weights.npz", "kpis.json"):
        assert f in files
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["fits"] and kpis["target"] == "toy_cpu" and kpis["config"] == "toy-default"
    assert kpis["model"] == MODEL and kpis["fidelity"]["metric"] == "top1_agreement"
    assert kpis["fidelity"]["value"] >= 0.95 and kpis["fidelity"]["samples"] == 270
    assert kpis["provenance"]["data"] == {"name": "zoo:digits", "samples": 360, "calibration_samples": 90,
                                          "scored_samples": 270}
    assert "toy-default" in p.stdout and "25.6k MAC" in p.stdout
    assert [x.name for x in out.parent.iterdir()] == [out.name]  # no leftovers of the atomic write


def test_compile_does_not_fit(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    # -q: on a loaded machine parsing may pass the 1 s after which progress lines appear
    line = one_error_line(hwmap("compile", MODEL, "--target", "toy_cpu:small", "-o", str(out), "-q", env=env), code=1)
    assert "does not fit target 'toy-small'" in line and "weight_memory" in line
    line = one_error_line(hwmap("compile", MODEL, "--target", "toy_cpu:default", "--set", "hardware.sram_bytes=100",
                                "-o", str(out), "-q", env=env), code=1)
    assert "SRAM holds 100 bytes" in line
    assert list(tmp_path.iterdir()) == []


def _bad_models(tmp_path: Path) -> dict[str, Path]:
    from hwmap.zoo import load_onnx

    good = load_onnx("digits_cnn").SerializeToString()
    d = {"truncated": tmp_path / "truncated.onnx", "random": tmp_path / "random.onnx",
         "extension": tmp_path / "model.xyz", "missing": tmp_path / "missing.onnx", "empty": tmp_path / "empty.onnx"}
    d["truncated"].write_bytes(good[: len(good) // 2])
    d["random"].write_bytes(np.random.default_rng(7).bytes(4096))
    d["extension"].write_bytes(good)
    d["empty"].write_bytes(b"")
    return d


@pytest.mark.parametrize("case", ["truncated", "random", "extension", "missing", "empty"])
def test_compile_bad_models(env: dict[str, str], tmp_path: Path, case: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = _bad_models(models)[case]
    runs = tmp_path / "runs"
    runs.mkdir()
    line = one_error_line(hwmap("compile", str(model), "--target", "toy_cpu:default", "-o", str(runs / "out"),
                                env=env))
    assert str(model) in line
    assert list(runs.iterdir()) == []


def test_compile_bad_target_and_data(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert "unknown target kind" in one_error_line(
        hwmap("compile", MODEL, "--target", "gpu:default", "-o", str(out), env=env))
    assert "no such file" in one_error_line(
        hwmap("compile", MODEL, "--target", "toy_cpu:default", "--data", str(tmp_path / "no.npz"), "-o", str(out),
              env=env))
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3, 5), dtype=np.float32))
    assert "do not fit model input" in one_error_line(
        hwmap("compile", MODEL, "--target", "toy_cpu:default", "--data", str(tmp_path / "wrong.npz"), "-o", str(out),
              env=env))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["wrong.npz"]


def test_compile_refuses_to_replace_a_foreign_directory(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not mine")
    line = one_error_line(hwmap("compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), env=env))
    assert "holds files hwmap did not write (holiday.jpg)" in line
    assert [x.name for x in out.iterdir()] == ["holiday.jpg"] and [x.name for x in tmp_path.iterdir()] == ["photos"]


def test_usage_errors_are_one_line(env: dict[str, str]) -> None:
    p = hwmap("compile", MODEL, env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--target" in p.stderr
    p = hwmap("frobnicate", env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    p = hwmap("--version", env=env)
    assert p.returncode == 0 and p.stdout.startswith("hwmap ")


# -- simulate ------------------------------------------------------------------------------------------
def test_simulate_writes_one_array_per_output(env: dict[str, str], tmp_path: Path,
                                              compiled: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = compiled
    npz = tmp_path / "out.npz"
    p = hwmap("simulate", str(out), "--data", DATA, "-o", str(npz), env=env)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    graph = json.loads((out / "graph" / "graph.json").read_text())
    with np.load(npz) as z:
        assert sorted(z.files) == sorted(graph["outputs"]) == ["output"]
        y = z["output"]
    assert y.shape == (360, 10) and np.all(np.isfinite(y))
    kpis = json.loads((out / "kpis.json").read_text())
    assert summary["fidelity"]["value"] == kpis["fidelity"]["value"]
    assert summary["accuracy"] == kpis["accuracy"]
    from hwmap.data import load_data

    labels = load_data(DATA).y
    assert float(np.mean(np.argmax(y, axis=1) == labels)) == summary["accuracy"] > 0.9


def test_simulate_bad_directory(env: dict[str, str], tmp_path: Path) -> None:
    assert "not an hwmap compile directory" in one_error_line(
        hwmap("simulate", str(tmp_path), "--data", DATA, env=env))


# -- compare -------------------------------------------------------------------------------------------
def test_compare_formats(env: dict[str, str], tmp_path: Path) -> None:
    args = ["compare", MODEL, "toy_cpu:default", "toy_cpu:small", "--data", DATA]
    png = tmp_path / "cmp.png"
    p = hwmap(*args, "--json", "--plot", str(png), env=env)
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    assert [(r["config"], r["fits"]) for r in recs] == [("toy-default", True), ("toy-small", False)]
    assert recs[0]["fidelity"]["metric"] == "top1_agreement" and recs[0]["accuracy"] > 0.9
    assert "weight_memory" in recs[1]["violations"][0]
    assert png.read_bytes()[:4] == b"\x89PNG"

    args = args[:-2]  # the other formats without data: faster, same columns
    p = hwmap(*args, "--csv", env=env)
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["fits"] for r in rows] == ["true", "false"] and rows[0]["resources.layers"] == "6"
    assert rows[0]["fidelity_metric"] == "" and rows[1]["violations"].startswith("weight_memory")

    md = tmp_path / "cmp.md"
    p = hwmap(*args, "--markdown", "--output", str(md), env=env)
    assert p.returncode == 0 and p.stdout == ""
    text = md.read_text()
    assert "| KPI | toy-default (toy_cpu) | toy-small (toy_cpu) |" in text
    assert "| fits | yes | does not fit |" in text

    p = hwmap(*args, env=env)
    assert p.returncode == 0 and "does not fit" in p.stdout and "toy-default" in p.stdout


def test_compare_with_overrides_and_defaults(env: dict[str, str]) -> None:
    p = hwmap("compare", "zoo:chapter_cnn", "toy_cpu:default", "--set", "hardware.macs_per_cycle=64", "--json",
              env=env)
    assert p.returncode == 0, p.stderr
    wide = json.loads(p.stdout)[0]
    p = hwmap("compare", "zoo:chapter_cnn", "--json", env=env)  # every installed target's default preset
    assert p.returncode == 0, p.stderr
    recs = {r["target"]: r for r in json.loads(p.stdout)}
    assert recs["toy_cpu"]["latency_s"] > wide["latency_s"]
    assert recs["toy_cpu"]["fidelity"] is None  # no data, no simulation


def test_compare_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    assert "no such file" in one_error_line(hwmap("compare", str(tmp_path / "m.onnx"), "toy_cpu:default", env=env))
    assert "unknown key" in one_error_line(
        hwmap("compare", MODEL, "toy_cpu:default", "--set", "hardware.cores=2", env=env))
    missing = tmp_path / "no" / "such" / "dir" / "out.json"
    line = one_error_line(hwmap("compare", "zoo:chapter_cnn", "toy_cpu:default", "--json", "--output", str(missing),
                                env=env))
    assert line == f"hwmap: error: {missing}: --output: no such folder '{missing.parent}' (hwmap does not create it)"


# -- demo ----------------------------------------------------------------------------------------------
def test_demo_with_the_toy_target(env: dict[str, str]) -> None:
    p = hwmap("demo", env=env)
    assert p.returncode == 0, p.stderr
    assert ("zoo:digits_cnn with zoo:digits on every installed target's default preset: the first 90 of its 360 "
            "held-out samples calibrate, the other 270 are scored") in p.stdout
    assert "toy-default" in p.stdout and "top1_agreement" in p.stdout


def test_demo_without_targets_profiles(site: Path) -> None:
    p = hwmap("demo", env=subprocess_env(site, autoload=False))
    assert p.returncode == 0, p.stderr
    assert "no target plugins are installed: profiling the demo model instead" in p.stdout
    assert "conv1" in p.stdout


# -- reading the cost: per-layer table, sensitivity, variants, config views ------------------------------
def test_compile_prints_the_per_layer_table_and_the_split(compiled: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, p = compiled
    assert "per layer" in p.stdout and "bottleneck: layers run one at a time" in p.stdout
    assert "90 cal. / 270 scored" in p.stdout and "reference accuracy" in p.stdout
    kpis = json.loads((out / "kpis.json").read_text())
    assert [x["name"] for x in kpis["layers"]][:2] == ["conv1", "relu1"]
    assert kpis["bottleneck"]["layer"] in {x["name"] for x in kpis["layers"]}
    assert sum(kpis["energy_breakdown"].values()) == pytest.approx(kpis["energy_per_inference_j"])
    assert all(a["source"] for a in kpis["assumptions"].values())


def test_compile_calibrate_and_sensitivity(env: dict[str, str], tmp_path: Path) -> None:
    p = hwmap("compile", MODEL, "--target", "toy_cpu:default", "-o", str(tmp_path / "o"), "--data", DATA,
              "--calibrate", "0", "--sensitivity", env=env)
    assert p.returncode == 0, p.stderr
    kpis = json.loads((tmp_path / "o" / "kpis.json").read_text())
    assert kpis["provenance"]["data"]["scored_samples"] == 360
    assert "sensitivity to assumed constants" in p.stdout and "hardware.clock_hz" in p.stdout
    assert kpis["sensitivity"]["hardware.clock_hz"]["x2"]["latency_s"] == pytest.approx(0.5)
    line = one_error_line(hwmap("compile", MODEL, "--target", "toy_cpu:default", "-o", str(tmp_path / "p"),
                                "--data", DATA, "--calibrate", "400", env=env))
    assert "--calibrate 400 leaves none of the 360 samples to score" in line
    assert not (tmp_path / "p").exists()
    assert "--calibrate needs --data" in one_error_line(
        hwmap("compile", MODEL, "--target", "toy_cpu:default", "-o", str(tmp_path / "q"), "--calibrate", "3",
              env=env))


def test_compare_variants_and_set_anywhere(env: dict[str, str]) -> None:
    p = hwmap("compare", "zoo:chapter_cnn", "toy_cpu:default", "--set", "energy.mac_pj=0.5",
              "toy_cpu:default@hardware.macs_per_cycle=64", "--json", env=env)
    assert p.returncode == 0, p.stderr
    a, b = json.loads(p.stdout)
    assert (a["config"], b["config"]) == ("toy-default", "toy_cpu:default@hardware.macs_per_cycle=64")
    assert b["latency_s"] < a["latency_s"]
    assert a["assumptions"]["energy.mac_pj"] == {"value": 0.5, "unit": "pJ", "source": "--set on the command line"}
    assert b["assumptions"]["energy.mac_pj"]["value"] == 0.5  # --set applies to every config


def test_compare_layers_csv_and_table(env: dict[str, str]) -> None:
    p = hwmap("compare", "zoo:chapter_cnn", "toy_cpu:default", "--csv", "--layers", env=env)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["layer"] for r in rows][:1] == ["conv1"] and all(r["config"] == "toy-default" for r in rows)
    p = hwmap("compare", "zoo:chapter_cnn", "toy_cpu:default", "--layers", env=env)
    assert p.returncode == 0 and "per layer" in p.stdout and "energy" in p.stdout


def test_check_show_and_fallback_warnings(env: dict[str, str], tmp_path: Path) -> None:
    p = hwmap("check", "toy_cpu:default", "--show", env=env)
    assert p.returncode == 0, p.stderr
    assert "# pJ; Horowitz, ISSCC 2014" in p.stdout and p.stdout.startswith("# effective config of toy_cpu:default")
    shown = tmp_path / "shown.toml"
    shown.write_text(p.stdout)
    assert hwmap("check", str(shown), env=env).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "toy_cpu"\n[hardware]\nclock_hx = 1\nmacs_per_cycle = 0\n[energy]\nmac_pj = -1\n')
    p = hwmap("check", str(bad), env=env)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"hwmap: error: {bad}: ") for line in lines)
    assert "did you mean 'hardware.clock_hz'?" in p.stderr


@pytest.mark.parametrize("command", ["targets", "check", "schema", "profile", "compile", "simulate", "compare",
                                     "convert", "explore", "demo"])
def test_every_help_ends_with_an_example(env: dict[str, str], command: str) -> None:
    p = hwmap(command, "--help", env=env)
    assert p.returncode == 0, p.stderr
    assert re.search(r"example:\n  hwmap " + command + r"\b", p.stdout), p.stdout[-300:]
    options = re.findall(r"^  (-[-\w, ]+?)(?:  +|\n)(.*)$", p.stdout, flags=re.M)
    assert options and all(text.strip() or "help" in flag for flag, text in options), options
