"""A saved graph's folder (Graph.save: graph.json + params.npz) is a MODEL for every command:
read back exactly, its shapes fixed, anything wrong in it refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap.errors import ModelError
from hwmap.execute import run
from hwmap.source import ParseOptions

from guard import run_cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "digits_snn"
    hwmap.load_model("zoo:digits_snn").save(folder)
    return folder


def test_a_saved_graph_reads_back_exactly(saved: Path) -> None:
    original = hwmap.load_model("zoo:digits_snn")
    for source in (str(saved), str(saved / "graph.json")):
        g = hwmap.load_model(source)
        assert g.to_json() == original.to_json() and g.digest() == original.digest()
    x = hwmap.load_data("zoo:digits").x[:20]
    np.testing.assert_array_equal(run(g, {"input": x})["output"], run(original, {"input": x})["output"])
    assert hwmap.load_model(str(saved), ParseOptions(name="mine")).name == "mine"


def test_the_cli_takes_the_folder_as_a_model(saved: Path) -> None:
    r = run_cli(["profile", str(saved), "--json"])
    assert r.code == 0, r.stderr
    assert [row["name"] for row in json.loads(r.stdout)["layers"]][:2] == ["encode_input", "fc1"]


def test_fixed_shapes(saved: Path) -> None:
    with pytest.raises(ModelError, match=r"--input-shape \[1, 1, 16, 16\]: a saved graph's input 'input' is"):
        hwmap.load_model(str(saved), ParseOptions(input_shape=(1, 1, 16, 16)))
    assert hwmap.load_model(str(saved), ParseOptions(input_shape=(7, 1, 8, 8))).name == "zoo:digits_snn"
    with pytest.raises(ModelError, match=r"--dt 0.01: the saved graph's neurons run at dt = 0.001 s"):
        hwmap.load_model(str(saved), ParseOptions(dt=0.01))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "graph.json").write_text("{"), "graph.json"),
    (lambda d: (d / "params.npz").unlink(), "params.npz"),
    (lambda d: (d / "graph.json").write_text(json.dumps({**json.loads((d / "graph.json").read_text()),
                                                         "nodes": []})), "graph.json"),
    # a time step of NaN would be written back as the non-JSON token NaN
    (lambda d: (d / "graph.json").write_text((d / "graph.json").read_text().replace('"dt": 0.001', '"dt": NaN')),
     "meta.dt must be a positive number of seconds or null, not nan"),
])
def test_a_damaged_saved_graph_is_refused_naming_the_file(saved: Path, tmp_path: Path, damage, message) -> None:
    folder = tmp_path / "g"
    hwmap.load_model(str(saved)).save(folder)
    damage(folder)
    r = run_cli(["profile", str(folder)])
    assert r.code == 2 and message in r.error_line(), r.stderr
