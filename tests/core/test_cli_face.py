"""The command line around models and listings: ``hwmap zoo``, preset descriptions in
``hwmap targets``, ``hwmap profile`` on ops hwmap does not know (and ``--strict``), and
models from the user's working directory, each through a subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hwmap import ParseOptions, zoo
from fake_dist import TOY_ENTRY_POINT, subprocess_env, write_dist

#: The console script pip installed next to this interpreter: what users run. Unlike
#: ``python -m``, it does not put the working directory on ``sys.path``.
HWMAP = Path(sys.executable).with_name("hwmap")


def hwmap(*args: str, env: dict[str, str], cwd: Path | None = None,
          timeout: float = 240) -> subprocess.CompletedProcess:
    assert HWMAP.is_file(), f"{HWMAP} is missing: run make setup"
    return subprocess.run([str(HWMAP), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess, code: int = 2) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwmap: error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    write_dist(site, "toy-target", TOY_ENTRY_POINT, version="0.1")
    return subprocess_env(site)


# -- hwmap zoo ---------------------------------------------------------------------------------------
def test_zoo_lists_every_model_and_data_set_one_line_each(env: dict[str, str]) -> None:
    p = hwmap("zoo", env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "models:" and "data sets:" in lines
    models = {line.split()[0]: line for line in lines[1:lines.index("data sets:")]}
    assert list(models) == [f"zoo:{m.name}" for m in zoo.list_models()]
    assert models["zoo:mobilenet_v1"].split()[1] == "1×3×224×224"
    assert "MobileNet V1" in models["zoo:mobilenet_v1"] and "BN as separate nodes" in models["zoo:mobilenet_v1"]
    (digits,) = lines[lines.index("data sets:") + 1:]
    assert digits.split()[:4] == ["zoo:digits", "360", "×", "1×8×8"] and "(360 samples)" in digits


def test_zoo_json_matches_the_models_and_data(env: dict[str, str]) -> None:
    p = hwmap("zoo", "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert [m["name"] for m in d["models"]] == [f"zoo:{m.name}" for m in zoo.list_models()]
    cnn = next(m for m in d["models"] if m["name"] == "zoo:digits_cnn")
    assert cnn["input_shape"] == [1, 1, 8, 8] and cnn["data"] == "zoo:digits" and cnn["description"]
    for m in d["models"]:  # the listed shape is the one the model is built with
        if m["name"] == "zoo:digits_snn":  # built through NIR, no ONNX form
            g = zoo.load_graph("digits_snn", ParseOptions())
            assert list(g.tensor(g.inputs[0]).shape) == m["input_shape"]
            continue
        graph_input = zoo.load_onnx(m["name"][4:]).graph.input[0]
        assert [dim.dim_value for dim in graph_input.type.tensor_type.shape.dim] == m["input_shape"]
    (digits,) = d["data"]
    data = zoo.load_data("digits")
    assert data.y is not None
    assert digits["name"] == "zoo:digits" and digits["samples"] == len(data) == 360
    assert digits["sample_shape"] == list(data.x.shape[1:]) and digits["classes"] == len(set(data.y.tolist()))


# -- hwmap targets: preset descriptions ----------------------------------------------------------
def test_targets_show_each_preset_with_its_description(env: dict[str, str]) -> None:
    p = hwmap("targets", "--json", env=env)
    assert p.returncode == 0, p.stderr
    toy = next(t for t in json.loads(p.stdout)["targets"] if t["kind"] == "toy_cpu")
    assert toy["presets"] == ["default", "small"]  # the names, as before
    assert toy["preset_descriptions"] == {
        "default": "a 100 MHz CPU with a 4-lane 8-bit MAC unit and 256 KiB of SRAM",
        "small": "1 KiB of SRAM, so any model with more than ~1 kB of weights does not fit"}
    p = hwmap("targets", env=env)
    assert p.returncode == 0, p.stderr
    assert "toy_cpu:default" in p.stdout and "a 100 MHz CPU with a 4-lane 8-bit MAC unit" in p.stdout
    assert "toy_cpu:small" in p.stdout and "default, small" in p.stdout


def test_a_preset_without_description_shows_none_and_a_broken_one_is_a_load_error(tmp_path: Path) -> None:
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "plain.toml").write_text('kind = "toy_plain"\n[hardware]\n')
    (presets / "said.toml").write_text('kind = "toy_plain"\ndescription = "with [brackets] kept"\n[hardware]\n')
    (presets / "broken.toml").write_text('kind = "toy_plain"\ndescription = \n')
    (tmp_path / "hwmap_toy_plain.py").write_text(
        "from pathlib import Path\nfrom hwmap import hookimpl\nfrom hwmap_toy_cpu.hardware import ToyConfig\n\n"
        "@hookimpl\ndef hwmap_register_targets(register):\n"
        f"    folder = Path({str(presets)!r})\n"
        "    register(kind='toy_plain', config=ToyConfig, description='toy without descriptions',\n"
        "             presets={p.stem: p for p in folder.glob('*.toml')})\n")
    write_dist(tmp_path, "toy-plain", {"toy_plain": "hwmap_toy_plain"})
    env = subprocess_env(tmp_path)
    p = hwmap("targets", "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    plain = next(t for t in d["targets"] if t["kind"] == "toy_plain")
    assert plain["presets"] == ["broken", "plain", "said"]
    assert plain["preset_descriptions"] == {"broken": None, "plain": None, "said": "with [brackets] kept"}
    (error,) = [e for e in d["errors"] if "toy_plain:broken" in e["error"]]
    assert error["plugin"] == "toy_plain" and "invalid TOML" in error["error"]
    p = hwmap("targets", env=env)
    assert p.returncode == 0, p.stderr
    plain_line = next(line for line in p.stdout.splitlines() if "toy_plain:plain" in line)
    assert plain_line.replace("│", "").split() == ["toy_plain:plain"]
    assert "with [brackets] kept" in p.stdout


# -- hwmap profile on unknown ops -----------------------------------------------------------------
@pytest.fixture(scope="module")
def unknown_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """input → conv → Hardmax → a custom-domain op → relu: two ops hwmap does not know."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Hardmax", ["c"], ["h"], name="hm"),
             helper.make_node("Swirl", ["h"], ["s"], name="swirl", domain="com.vendor"),
             helper.make_node("Relu", ["s"], ["output"], name="relu")]
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("unknown") / "u.onnx"
    onnx.save(model, str(path))
    return path


def test_profile_lists_unknown_ops_with_a_warning(env: dict[str, str], unknown_onnx: Path) -> None:
    p = hwmap("profile", str(unknown_onnx), "--json", "-q", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        "hwmap: warning: node 'hm' (Hardmax): op 'Hardmax' is not known to hwmap: not counted (no MACs, no parameters)",
        "hwmap: warning: node 'swirl' (com.vendor:Swirl): op 'com.vendor:Swirl' is not known to hwmap: not counted "
        "(no MACs, no parameters)",
        "hwmap: warning: 1 node(s) after them read tensors of unknown shape and are not counted either: relu (Relu)"]
    d = json.loads(p.stdout)
    assert [(r["name"], r["unknown"], r["macs"]) for r in d["layers"]] == [
        ("conv", False, 4 * 16 * 18), ("hm", True, None), ("swirl", True, None), ("relu", True, None)]
    assert d["totals"]["macs"] == 4 * 16 * 18 and d["totals"]["uncounted_nodes"] == 3
    p = hwmap("profile", str(unknown_onnx), "--csv", env=env)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["unknown"] for r in rows] == ["False", "True", "True", "True"] and rows[1]["macs"] == ""
    p = hwmap("profile", str(unknown_onnx), env=env)
    assert p.returncode == 0, p.stderr
    assert "unknown (Hardmax)" in p.stdout and "3 node(s) not counted" in " ".join(p.stdout.split())


def test_strict_and_the_other_commands_refuse_unknown_ops(env: dict[str, str], unknown_onnx: Path,
                                                          tmp_path: Path) -> None:
    expected = "2 node(s) use ops hwmap does not support: hm (Hardmax), swirl (com.vendor:Swirl)"
    assert expected in one_error_line(hwmap("profile", str(unknown_onnx), "--strict", "-q", env=env))
    out = tmp_path / "out"
    assert expected in one_error_line(hwmap("compile", str(unknown_onnx), "--target", "toy_cpu:default",
                                            "-o", str(out), "-q", env=env))
    assert not out.exists()
    assert expected in one_error_line(hwmap("compare", str(unknown_onnx), "toy_cpu:default", "-q", env=env))
    line = one_error_line(hwmap("profile", str(unknown_onnx), "--data", "zoo:digits", "-q", env=env))
    assert "zoo:digits" in line  # the data does not fit the model: said before anything runs
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2, 6, 6), np.float32))
    line = one_error_line(hwmap("profile", str(unknown_onnx), "--data", str(tmp_path / "d.npz"), "-q", env=env))
    assert line.startswith("hwmap: error: graph 'u': measuring sparsity with data (--data) needs every op known "
                           f"to hwmap; {expected}")


def test_new_options_say_what_they_do(env: dict[str, str]) -> None:
    text = " ".join(hwmap("profile", "--help", env=env).stdout.split())
    assert "--strict refuse a model using ops hwmap does not know (exit code 2" in text and "(default: off)" in text
    text = " ".join(hwmap("zoo", "--help", env=env).stdout.split())
    assert "--json print the listing as JSON (default: one line each)" in text


# -- models from the working directory --------------------------------------------------------------
NET = """\
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A user's folder: a model file, and files named like libraries hwmap imports, which
    would break everything if they were imported."""
    for name in ("numpy", "onnx", "torch", "rich", "json"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('a file in the working directory was imported')\n")
    (tmp_path / "mynet.py").write_text(NET)
    (tmp_path / "broken.py").write_text("def make(:\n")
    return tmp_path


@pytest.mark.parametrize("spec", ["mynet:make", "./mynet.py:make", "mynet.py:make"])
def test_profile_a_model_from_the_working_directory(env: dict[str, str], workdir: Path, spec: str) -> None:
    p = hwmap("profile", spec, "--input-shape", "1,1,8,8", "--json", "-q", env=env, cwd=workdir)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["settings"]["model"] == spec and [r["kind"] for r in d["layers"]] == ["conv", "fc"]
    assert d["totals"]["macs"] == 4 * 36 * 9 + 144 * 3 and p.stderr == ""


@pytest.mark.parametrize("args,needle", [
    (["broken:make"], "broken:make: cannot import module 'broken' from the working directory"),
    (["./broken.py:make"], "./broken.py:make: cannot execute './broken.py': SyntaxError"),
    (["./mynet.py:nope"], "./mynet.py:nope: file './mynet.py' has no attribute 'nope'"),
    (["./gone.py:make"], "./gone.py:make: no such file './gone.py'"),
    (["onnx:make"], "use ./onnx.py:make"),
    (["mynet.py"], "a Python file needs the name of its factory"),
])
def test_bad_models_from_the_working_directory(env: dict[str, str], workdir: Path, args: list[str],
                                               needle: str) -> None:
    p = hwmap("profile", *args, "--input-shape", "1,1,8,8", "-q", env=env, cwd=workdir)
    assert needle in one_error_line(p)
