"""A compile directory is untrusted input: ``hwmap simulate`` opens only regular files inside
it, checks every size before reading, checks ``artifacts.json``, ``target.json`` and the
graph against their schemas, and refuses artifacts of another graph or config; every refusal
is exit 2 with one line naming the file, never its contents."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import guard
from guard import Run
from hwmap import Artifacts, DataError, GraphError, TargetError, load_model
from hwmap import registry as _registry
from hwmap.compiledir import (JSON_EXPANSION, MAX_JSON_DEPTH, config_digest, name_problem, open_compile_dir,
                              read_manifest, stamp)
from hwmap.config import load_target
from hwmap.data import load_data
from hwmap.flow import compile_model, load_compiled_target, simulate_dir
from hwmap.graph import Graph
from hwmap.limits import ENV
from hwmap.testing import other_weights

MODEL = "zoo:digits_mlp"


def _toy_registry() -> _registry.Registry:
    from hwmap_toy_cpu import plugin

    _registry.reset_registry()
    reg = _registry.get_registry()
    reg.add_plugin(plugin, name="toy_target", package="toy-target", version="0.1")
    return reg


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two toy_cpu compile directories (the model, and the same model with other weights)
    and a 4-sample data file, made once."""
    root = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(_registry.AUTOLOAD_ENV, "1")
        _toy_registry()
        try:
            graph = load_model(MODEL)
            compile_model(graph, load_target("toy_cpu:default"), root / "a")
            compile_model(other_weights(graph), load_target("toy_cpu:default"), root / "b")
        finally:
            _registry.reset_registry()
    yield {"a": root / "a", "b": root / "b", "data": guard.digits_data(root / "data.npz")}


@pytest.fixture
def cdir(built: dict[str, Path], toy_registry: _registry.Registry, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the compiled directory, the toy target registered, the default bound."""
    return guard.fresh_copy(built["a"], tmp_path / "cdir", monkeypatch)


def simulate(cdir: Path, built: dict[str, Path]) -> Run:
    return guard.simulate(cdir, built["data"])


def refused(cdir: Path, built: dict[str, Path], *fragments: str) -> str:
    return guard.refused(cdir, built["data"], *fragments)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(change(doc)))


def test_a_compiled_directory_simulates_and_records_its_digests(cdir: Path, built: dict[str, Path]) -> None:
    run = simulate(cdir, built)
    assert run.code == 0, run.stderr
    manifest = json.loads((cdir / "artifacts" / "artifacts.json").read_text())
    provenance = json.loads((cdir / "kpis.json").read_text())["provenance"]["sha256"]
    assert manifest["graph_sha256"] == provenance["model"] == Graph.load(cdir / "graph").digest()
    assert manifest["config_sha256"] == provenance["config"] == config_digest(load_compiled_target(cdir))
    compiled = open_compile_dir(cdir)
    assert compiled.artifacts.files == ["program.json", "weights.npz"]
    assert compiled.graph.digest() == manifest["graph_sha256"]


# -- 1. only regular files inside artifacts/ that the manifest lists ---------------------------------------
@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/dev/zero", "/etc/passwd", "sub/../../../kpis.json",
                                  "./program.json", "", "a\\b", "C:/x", "artifacts.json", "a\nb", "a//b"])
def test_artifact_names_leaving_the_directory_are_refused(cdir: Path, built: dict[str, Path], name: str) -> None:
    edit_json(cdir / "artifacts" / "artifacts.json", lambda d: {**d, "files": [name, *d["files"][1:]]})
    line = refused(cdir, built, "artifacts.json", "refused")
    assert "root:" not in line  # never a byte of any file


def test_an_artifact_listed_twice_is_refused(cdir: Path, built: dict[str, Path]) -> None:
    edit_json(cdir / "artifacts" / "artifacts.json", lambda d: {**d, "files": d["files"] * 2})
    refused(cdir, built, "artifacts.json", "listed twice")


@pytest.mark.parametrize("name", ["x", "a/b.bin", "deep/er/file.npz"])
def test_plain_relative_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


def test_the_artifacts_api_opens_only_listed_regular_files_inside(cdir: Path, tmp_path: Path) -> None:
    art = cdir / "artifacts"
    artifacts = Artifacts.read(art)
    assert artifacts.read_bytes("program.json") == (art / "program.json").read_bytes()
    assert artifacts.read_json("program.json")["format"]
    assert set(artifacts.load_npz("weights.npz")) == set(np.load(art / "weights.npz").files)
    with artifacts.open("weights.npz") as f:
        assert f.read(2) == b"PK"
    with pytest.raises(TargetError, match="not listed in artifacts.json"):
        artifacts.read_bytes("kpis.json")
    with pytest.raises(TargetError, match="refused"):
        artifacts.read_bytes("../kpis.json")
    with pytest.raises(TargetError, match="more than the 10 its target reads"):
        artifacts.read_bytes("program.json", max_bytes=10)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret\n")
    (art / "program.json").unlink()
    (art / "program.json").symlink_to(secret)
    with pytest.raises(TargetError, match="symbolic link") as e:
        artifacts.read_bytes("program.json")
    assert "secret" not in str(e.value).replace("secret.txt", "")
    (art / "program.json").unlink()
    (art / "program.json").mkdir()
    with pytest.raises(TargetError, match="directory"):
        artifacts.read_bytes("program.json")
    (art / "program.json").rmdir()
    os.mkfifo(art / "program.json")  # opening a FIFO for reading would block: refused from its type
    with pytest.raises(TargetError, match="not a regular file"):
        artifacts.read_bytes("program.json")
    (art / "program.json").unlink()
    with pytest.raises(TargetError, match="no such artifact"):
        artifacts.read_bytes("program.json")


def test_a_symlinked_folder_on_the_way_is_refused(cdir: Path, tmp_path: Path) -> None:
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "w.bin").write_bytes(b"secret")
    (cdir / "artifacts" / "sub").symlink_to(outside_dir)
    artifacts = Artifacts(cdir / "artifacts", ["sub/w.bin"])
    with pytest.raises(TargetError, match="symbolic link"):
        artifacts.read_bytes("sub/w.bin")


@pytest.mark.parametrize("rel", ["artifacts", "graph", "target.json", "kpis.json", "graph/params.npz",
                                 "artifacts/artifacts.json"])
def test_symbolic_links_in_the_directory_are_refused(cdir: Path, built: dict[str, Path], tmp_path: Path,
                                                     rel: str) -> None:
    moved = tmp_path / "moved"
    shutil.move(str(cdir / rel), str(moved))
    (cdir / rel).symlink_to(moved)  # what it points to is even right: still refused
    refused(cdir, built, "symbolic link", "refused")


def test_an_artifact_larger_than_the_bound_is_refused_before_it_is_read(cdir: Path, built: dict[str, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "64M")
    art = Artifacts.read(cdir / "artifacts")
    with open(cdir / "artifacts" / "weights.npz", "r+b") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB that take no disk
    with pytest.raises(TargetError, match=r"weights.npz: artifact \(8,589,934,592 bytes\) would take 8 GiB, more than "
                                        r"the 64 MiB memory limit"):
        art.read_bytes("weights.npz")
    with open(cdir / "artifacts" / "artifacts.json", "r+b") as f:
        f.truncate(3 << 30)
    run = simulate(cdir, built)
    assert run.code == 2 and "artifacts.json" in run.error_line() and "memory limit" in run.error_line()
    assert run.peak < 32 << 20


# -- 2. artifacts.json, target.json and the graph against their schemas ------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("text, says", [
    ("{", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"), ("[]", "(top level)"), ('{"files": 3}', "files"),
    ('{"files": [1]}', "files.0"), ('{"manifest": {}}', "files: Field required"),
    ('{"files": [], "extra": 1}', "extra: Extra inputs are not permitted"),
    ('{"files": [], "graph_sha256": "abc"}', "graph_sha256"), (DEEP, "nests deeper than"),
    ('{"files": []}' + " " * 10, "records no digest"),
])
def test_a_broken_artifacts_manifest_is_one_line_naming_it(cdir: Path, built: dict[str, Path], text: Any,
                                                          says: str) -> None:
    (cdir / "artifacts" / "artifacts.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(cdir, built, "artifacts.json", says)


@pytest.mark.parametrize("change, says", [
    (lambda d: "{", "not valid JSON"),
    (lambda d: {k: v for k, v in d.items() if k != "kind"}, "kind: Field required"),
    (lambda d: {**d, "kind": "no_such_kind"}, "no_such_kind"),
    (lambda d: {**d, "config": []}, "config: Input should be a valid dictionary"),
    (lambda d: {**d, "config": {**d["config"], "hardware": {"clock_hz": "fast"}}}, "clock_hz"),
    (lambda d: {**d, "config": {**d["config"], "bogus": 1}}, "bogus"),
    (lambda d: {**d, "name": 7}, "name: Input should be a valid string"),
    (lambda d: {**d, "config": {**d["config"], "x": "y" * 5000}}, "5,000 characters"),
    (lambda d: {**d, "config": {"hardware": json.loads("[" * 70 + "]" * 70)}}, "nests deeper than"),
])
def test_a_broken_target_file_is_one_line_naming_it(cdir: Path, built: dict[str, Path], change: Any,
                                                    says: str) -> None:
    d = json.loads((cdir / "target.json").read_text())
    new = change(d)
    (cdir / "target.json").write_text(new if isinstance(new, str) else json.dumps(new))
    refused(cdir, built, "target.json", says)


def _node(d: dict[str, Any], i: int, **changes: Any) -> dict[str, Any]:
    """``d`` with node ``i`` changed (a Gemm with parameters: node 1)."""
    nodes = list(d["nodes"])
    nodes[i] = {**nodes[i], **changes}
    return {**d, "nodes": nodes}


@pytest.mark.parametrize("change, says", [
    (lambda d: "[", "not valid JSON"),
    (lambda d: {**d, "format": "other"}, "not an hwmap graph"),
    (lambda d: {**d, "version": 9}, "graph format version 9"),
    (lambda d: {k: v for k, v in d.items() if k != "nodes"}, "nodes: Field required"),
    (lambda d: {**d, "tensors": [{**d["tensors"][0], "shape": ["a"]}]}, "tensors.0.shape.0"),
    (lambda d: {**d, "tensors": [*d["tensors"], d["tensors"][0]]}, "declared twice"),
    (lambda d: {**d, "tensors": [{**d["tensors"][0], "dtype": "object"}, *d["tensors"][1:]]}, "only numbers"),
    (lambda d: {**d, "tensors": [{**d["tensors"][0], "shape": [1 << 40, 1 << 20]}, *d["tensors"][1:]]},
     "memory limit"),
    (lambda d: _node(d, 1, params={**d["nodes"][1]["params"], "Z": {"shape": [1], "dtype": "float32"}}),
     "missing from params.npz"),
    (lambda d: _node(d, 1, params={}), "no node declares"),
    (lambda d: _node(d, 1, params={**d["nodes"][1]["params"], "B": {"shape": [3], "dtype": "float32"}}),
     "not the float32 array of shape [3]"),
    (lambda d: _node(d, 0, attrs={"axis": "one"}), "attributes do not fit its op"),
    (lambda d: _node(d, 0, op="NoSuchOp"), "NoSuchOp"),
    (lambda d: {**d, "outputs": ["nowhere"]}, "nowhere"),
])
def test_a_broken_graph_is_one_line_naming_it(cdir: Path, built: dict[str, Path], change: Any, says: str) -> None:
    d = json.loads((cdir / "graph" / "graph.json").read_text())
    new = change(d)
    (cdir / "graph" / "graph.json").write_text(new if isinstance(new, str) else json.dumps(new))
    line = refused(cdir, built, says)
    assert "graph" in line


def test_broken_graph_parameters_are_one_line_naming_them(cdir: Path, built: dict[str, Path]) -> None:
    (cdir / "graph" / "params.npz").write_bytes(b"PK\x03\x04 not really a zip")
    refused(cdir, built, "params.npz", "not an .npz")


def test_a_graph_file_larger_than_its_parse_may_take_is_refused(cdir: Path, built: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "16M")
    size = (16 << 20) // JSON_EXPANSION + 1
    (cdir / "graph" / "graph.json").write_bytes(b" " * size)
    refused(cdir, built, "graph.json", f"{size:,} bytes of JSON, parsed", "memory limit")


def test_json_nesting_is_bounded_without_recursion(cdir: Path) -> None:
    doc = json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    (cdir / "artifacts" / "artifacts.json").write_text(json.dumps({"files": [], "manifest": {"x": doc}}))
    with pytest.raises(DataError, match="nests deeper than 64 levels"):
        read_manifest(cdir / "artifacts")


# -- 3. the artifacts belong to the graph and config beside them --------------------------------------------
def test_artifacts_of_another_graph_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    shutil.rmtree(cdir / "artifacts")
    shutil.copytree(built["b"] / "artifacts", cdir / "artifacts")
    line = refused(cdir, built, "artifacts.json", "compiled from another graph")
    got = json.loads((built["b"] / "artifacts" / "artifacts.json").read_text())["graph_sha256"]
    assert got[:12] in line and Graph.load(cdir / "graph").digest()[:12] in line
    stamp(cdir)  # recorded as belonging: the core lets it through (the toy simulates what it is given)
    assert simulate(cdir, built).code == 0


def test_a_graph_swapped_under_the_artifacts_is_refused(cdir: Path, built: dict[str, Path]) -> None:
    shutil.rmtree(cdir / "graph")
    shutil.copytree(built["b"] / "graph", cdir / "graph")
    refused(cdir, built, "compiled from another graph")


def test_artifacts_of_another_config_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    edit_json(cdir / "target.json",
              lambda d: {**d, "config": {**d["config"], "hardware": {**d["config"]["hardware"], "clock_hz": 2e8}}})
    refused(cdir, built, "artifacts.json", "compiled for another hardware config", "target.json")
    edit_json(cdir / "target.json", lambda d: {**d, "name": "renamed"})
    refused(cdir, built, "another hardware config")


def test_artifacts_without_digests_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    edit_json(cdir / "artifacts" / "artifacts.json", lambda d: {"files": d["files"], "manifest": d["manifest"]})
    refused(cdir, built, "artifacts.json", "records no digest", "compile the model again")


def test_simulate_dir_raises_the_refusal(cdir: Path, built: dict[str, Path]) -> None:
    shutil.rmtree(cdir / "artifacts")
    shutil.copytree(built["b"] / "artifacts", cdir / "artifacts")
    with pytest.raises(DataError, match="another graph"):
        simulate_dir(cdir, load_data(str(built["data"])))


# -- not a compile directory --------------------------------------------------------------------------------
@pytest.mark.parametrize("remove, says", [
    ("kpis.json", "not an hwmap compile directory (no kpis.json)"),
    ("target.json", "not an hwmap compile directory (no target.json)"),
    ("graph", "not an hwmap compile directory (no graph/graph.json)"),
    ("graph/params.npz", "not an hwmap compile directory (no graph/params.npz)"),
    ("artifacts", "not an hwmap compile directory (no artifacts/artifacts.json)"),
])
def test_a_directory_missing_a_file_is_not_a_compile_directory(cdir: Path, built: dict[str, Path], remove: str,
                                                               says: str) -> None:
    p = cdir / remove
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    refused(cdir, built, says)


def test_what_is_not_a_compile_directory_says_so(cdir: Path, built: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, built, "not an hwmap compile directory (no kpis.json)")
    refused(tmp_path / "missing", built, "no such compile directory")
    refused(built["data"], built, "not an hwmap compile directory (not a directory)")
    (cdir / "kpis.json").unlink()
    (cdir / "kpis.json").mkdir()
    refused(cdir, built, "kpis.json is a directory")


def test_graph_load_refuses_a_symlinked_file(cdir: Path, tmp_path: Path) -> None:
    target = tmp_path / "g.json"
    shutil.move(str(cdir / "graph" / "graph.json"), target)
    (cdir / "graph" / "graph.json").symlink_to(target)
    with pytest.raises(GraphError, match="symbolic link"):
        Graph.load(cdir / "graph")
