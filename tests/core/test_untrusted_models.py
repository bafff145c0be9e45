"""Hostile and broken model files through the command line: each is refused with exit code 2
and exactly one ``hwmap: error:`` line naming the file (and the node, parameter or HDF5
object), nothing outside what the user named is read, and memory stays bounded: the refusal
comes from declared sizes, before anything that size is allocated (the peak is measured).

The files are built here: NIR files with h5py (external storage, external and soft links,
virtual datasets, unknown filters, link cycles, 2 GiB of compressed weights in a few KB),
ONNX models with onnx.helper (NaN and infinite weights, ``Expand``/``ConstantOfShape``/``Tile``
to 10^6 × 10^6, an opset from the future, non-positive sizes, external data that is a FIFO
or too large), PyTorch factories (``sys.exit`` while loading, building or running; a
forward pass too large for memory)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hwmap.frontends._onnx_convert  # noqa: F401  (imported before any peak is measured)
import hwmap.frontends.nir  # noqa: F401
from hwmap import Graph, GraphError, ModelError, Node, ParseOptions, Tensor, load_model
from hwmap.cli import main
from hwmap.limits import ENV
from hwmap.passes import FoldConstants
from test_safeio import _default_limit  # noqa: F401  (autouse: the default limit, HWMAP_MAX_MEMORY unset)

h5py = pytest.importorskip("h5py")
nir = pytest.importorskip("nir")

#: What one refusal may allocate at its peak (Python and numpy allocations, tracemalloc).
PEAK = 64 << 20
#: A progress line of a stage that finished before the error (not an error line).
STAGE_LINE = re.compile(r"^hwmap: [^:]+(:[^:]+)*: \d+\.\d\d s$")
MIB = 1 << 20


# Every test: the default 1 GiB limit, and a registry holding the core's frontends only.
pytestmark = pytest.mark.usefixtures("registry")


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, int]:
    """Run ``hwmap ARGS`` in-process; it must exit 2 with one error line, print nothing on
    stdout and raise no warning. Returns the line and the peak of what it allocated."""
    capsys.readouterr()
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(list(args))
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not STAGE_LINE.match(line)]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("hwmap: error: "), err
    assert out == "" and "Traceback" not in err
    assert not [str(w.message) for w in caught]
    return lines[0], peak


def profile_refused(capsys: pytest.CaptureFixture[str], model: Path | str, *extra: str) -> tuple[str, int]:
    line, peak = refused(capsys, "profile", str(model), "--csv", "-q", *extra)
    assert f"hwmap: error: {model}: " in line, line
    return line, peak


# -- NIR files ------------------------------------------------------------------------------------

def _nir(path: Path, w: np.ndarray | None = None) -> Path:
    """Input(4) → Affine(w) → Output, written by ``nir.write``."""
    w = np.ones((3, 4), np.float32) if w is None else w
    graph = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([w.shape[1]])}),
                                   nir.Affine(weight=w, bias=np.zeros(w.shape[0], np.float32)),
                                   nir.Output(output_type={"output": np.array([w.shape[0]])}))
    nir.write(path, graph)
    return path


def _affine(f: Any) -> Any:
    """The Affine node's group; its ``weight`` is deleted for the test to put something back."""
    group = next(g for g in f["node/nodes"].values() if "weight" in g)
    del group["weight"]
    return group


def _external_storage(path: Path, tmp_path: Path) -> None:
    with h5py.File(path, "a") as f:
        _affine(f).create_dataset("weight", shape=(3, 4), dtype="<f4", external=[("/etc/passwd", 0, 48)])


def _external_link(path: Path, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as o:
        o["w"] = np.full((3, 4), 7, np.float32)
    with h5py.File(path, "a") as f:
        _affine(f)["weight"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/w")


def _soft_link(path: Path, tmp_path: Path) -> None:
    with h5py.File(path, "a") as f:
        f["elsewhere"] = np.full((3, 4), 7, np.float32)
        _affine(f)["weight"] = h5py.SoftLink("/elsewhere")


def _virtual(path: Path, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as o:
        o["w"] = np.full((3, 4), 7, np.float32)
    layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "w", shape=(3, 4))
    with h5py.File(path, "a") as f:
        _affine(f).create_virtual_dataset("weight", layout)


def _plugin_filter(path: Path, tmp_path: Path) -> None:
    """A filter HDF5 does not have built in (it would go looking for a plugin library)."""
    with h5py.File(path, "a") as f:
        group = _affine(f)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((3, 4))
        dcpl.set_filter(32123, h5py.h5z.FLAG_OPTIONAL, (1,))
        ds = h5py.h5d.create(group.id, b"weight", h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((3, 4)), dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ones((3, 4), np.float32))


def _cycle(path: Path, tmp_path: Path) -> None:
    with h5py.File(path, "a") as f:
        f["node/nodes/affine/loop"] = f["node/nodes"]


@pytest.mark.parametrize("make, needle", [
    (_external_storage, "HDF5 dataset '/node/nodes/affine/weight' keeps its data in external file"),
    (_external_link, "HDF5 object '/node/nodes/affine/weight' is an external link"),
    (_soft_link, "HDF5 object '/node/nodes/affine/weight' is a SoftLink"),
    (_virtual, "HDF5 dataset '/node/nodes/affine/weight' is a virtual dataset"),
    (_plugin_filter, "HDF5 dataset '/node/nodes/affine/weight' uses HDF5 filter 32123"),
    (_cycle, "HDF5 group '/node/nodes/affine/loop' is linked more than once"),
], ids=["external-storage", "external-link", "soft-link", "virtual", "plugin-filter", "cycle"])
def test_nir_reading_outside_the_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any,
                                                  needle: str) -> None:
    path = _nir(tmp_path / "net.nir")
    make(path, tmp_path)
    line, _ = profile_refused(capsys, path)
    assert needle in line and line.endswith("refused"), line
    assert "root:" not in line  # nothing of /etc/passwd
    with pytest.raises(ModelError, match=re.escape(needle)):
        load_model(str(path))


def test_nir_declared_sizes_are_checked_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 24 KB file whose weight is 2 GiB once decompressed: refused from its declared shape."""
    path = _nir(tmp_path / "bomb.nir")
    with h5py.File(path, "a") as f:
        _affine(f).create_dataset("weight", shape=(1, 1 << 29), dtype="<f4", chunks=(1, 1 << 18),
                                  compression="gzip", fillvalue=1.0)
    assert path.stat().st_size < 64 << 10
    line, peak = profile_refused(capsys, path)
    assert "HDF5 dataset '/node/nodes/affine/weight' of shape [1, 536870912] (float32) would take 2 GiB, more " \
           "than the 1 GiB memory limit (raise it with --max-memory or HWMAP_MAX_MEMORY)" in line, line
    assert peak < PEAK, peak
    # several datasets, each within the limit, that together exceed it
    with h5py.File(path, "a") as f:
        group = _affine(f)
        group.create_dataset("weight", shape=(3, 4), dtype="<f4")
        for k in range(3):
            f.create_dataset(f"ballast{k}", shape=(100, MIB), dtype="<f4", chunks=(1, 1 << 18), compression="gzip")
    line, peak = profile_refused(capsys, path)
    assert "the datasets of the file (together" in line and peak < PEAK, (line, peak)


@pytest.mark.parametrize("value, what", [(np.nan, "1 NaN value"), (np.inf, "1 infinite value"),
                                         (-np.inf, "1 infinite value")])
def test_nir_non_finite_weights_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float,
                                             what: str) -> None:
    w = np.ones((3, 4), np.float32)
    w[1, 2] = value
    path = _nir(tmp_path / "net.nir", w)
    line, _ = profile_refused(capsys, path)
    assert f"NIR node 'affine': parameter 'weight' [3, 4] holds {what} (the first at flat index 6); parameters " \
           "must be finite" in line, line


def test_nir_shapes_too_large_are_refused_before_allocating(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An Input of 10^5 × 10^5 neurons (a LIF broadcasts five parameters to it), a Delay of a
    year at 1 ms: refused from their shapes."""
    row = np.ones((1, 100_000), np.float32)
    graph = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([100_000, 100_000])}),
                                   nir.LIF(tau=row * 0.01, r=row, v_leak=0 * row, v_threshold=row, v_reset=0 * row),
                                   nir.Output(output_type={"output": np.array([100_000, 100_000])}), type_check=False)
    nir.write(tmp_path / "wide.nir", graph)
    line, peak = profile_refused(capsys, tmp_path / "wide.nir", "--dt", "0.001")
    assert "tensor 'input' of shape [1, 100000, 100000] (float32) would take 37.3 GiB" in line, line
    assert peak < PEAK, peak
    delay = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([1000])}),
                                   nir.Delay(delay=np.full(1000, 1e6)),
                                   nir.Output(output_type={"output": np.array([1000])}))
    nir.write(tmp_path / "delay.nir", delay)
    line, peak = profile_refused(capsys, tmp_path / "delay.nir", "--dt", "0.001")
    assert "NIR Delay 'delay': the 1000000000 time steps of inputs of shape [1, 1000] it holds (delay 1000000.0 s " \
           "at dt 0.001 s) would take 3.73e+03 GiB" in line, line
    assert peak < PEAK, peak


@pytest.mark.parametrize("suffix", [".nir", ".onnx"])
def test_devices_and_fifos_are_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / f"fifo{suffix}"
    os.mkfifo(fifo)  # nobody writes it: reading would block forever
    for path in (zero, fifo):
        line, peak = profile_refused(capsys, path)
        assert line.endswith("file is not a regular file (a device, FIFO or socket); refused"), line
        assert peak < PEAK, peak


# -- ONNX models ---------------------------------------------------------------------------------

def _onnx(path: Path, nodes: list[Any], inits: list[Any], inputs: list[Any], outputs: list[Any],
          opset: int = 17) -> Path:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _vi(name: str, shape: list[Any]) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _matmul(path: Path, w: np.ndarray, opset: int = 17) -> Path:
    return _onnx(path, [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [numpy_helper.from_array(w, "w")],
                 [_vi("x", [1, w.shape[0]])], [_vi("y", [1, w.shape[1]])], opset)


@pytest.mark.parametrize("value, what", [(np.nan, "1 NaN value"), (np.inf, "1 infinite value")])
def test_onnx_non_finite_weights_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float,
                                              what: str) -> None:
    w = np.ones((4, 3), np.float32)
    w[0, 0] = value
    line, _ = profile_refused(capsys, _matmul(tmp_path / "m.onnx", w))
    assert line.endswith(f"node 'fc' (MatMul): parameter 'B' [4, 3] holds {what}; parameters must be finite"), line


@pytest.mark.parametrize("op", ["Expand", "ConstantOfShape", "Tile"])
def test_onnx_huge_constants_are_refused_from_their_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           op: str) -> None:
    """A constant expanded to 10^6 × 10^6 (4 TB): refused at parse time from the shape ONNX
    infers, before constant folding or the executor could allocate it (profile, which keeps
    ops hwmap does not know as unknown nodes, and compile alike)."""
    big = numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shape")
    one = numpy_helper.from_array(np.ones((1, 1), np.float32), "one")
    node = helper.make_node(op, ["shape"] if op == "ConstantOfShape" else ["one", "shape"], ["e"], name="grow")
    path = _onnx(tmp_path / "grow.onnx", [node, helper.make_node("Relu", ["x"], ["y"])],
                 [big] if op == "ConstantOfShape" else [one, big], [_vi("x", [1, 4])],
                 [_vi("y", [1, 4]), _vi("e", ["a", "b"])])
    line, peak = profile_refused(capsys, path)
    assert f"running the graph: node 'grow' ({op}) with its tensors e [1000000, 1000000]" in line, line
    assert "would take 3.73e+03 GiB, more than the 1 GiB memory limit" in line and peak < PEAK, (line, peak)
    with pytest.raises(ModelError, match="would take 3.73e"):
        load_model(str(path), ParseOptions(allow_unknown=True))


def test_constant_folding_checks_declared_sizes_first() -> None:
    """Constant folding evaluates nothing whose declared outputs exceed the limit (a graph
    built by hand, never validated)."""
    node = Node("grow", "Expand", [], ["e"], params={"input": np.ones((1, 1), np.float32),
                                                    "shape": np.array([10**6, 10**6], np.int64)})
    relu = Node("relu", "Relu", ["x"], ["y"])
    g = Graph("g", ["x"], ["y", "e"], [relu, node],
              {"x": Tensor("x", (1, 4)), "y": Tensor("y", (1, 4)), "e": Tensor("e", (10**6, 10**6))})
    tracemalloc.start()
    try:
        with pytest.raises(GraphError, match=r"graph 'g': folding constant node 'grow' \(Expand\) into outputs "
                                             r"\[\[1000000, 1000000\]\] would take 3.73e\+03 GiB, more than the 1 GiB"):
            FoldConstants().apply(g)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK, peak
    with pytest.raises(GraphError, match="running the graph: node 'grow'"):
        g.validate()


def test_onnx_input_shape_too_large_for_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--input-shape 1,3,4000,4000 on a 3→64-channel convolution: 4 GiB for its output,
    refused from shapes; the same model at a small shape parses."""
    w = numpy_helper.from_array(np.ones((64, 3, 3, 3), np.float32), "w")
    path = _onnx(tmp_path / "conv.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                 [w], [_vi("x", ["N", 3, "H", "W"])], [_vi("y", ["N", 64, "H", "W"])])
    assert load_model(str(path), ParseOptions(input_shape=(1, 3, 32, 32))).tensor("y").shape == (1, 64, 32, 32)
    line, peak = profile_refused(capsys, path, "--input-shape", "1,3,4000,4000")
    assert "running the graph: node 'conv' (Conv) with its tensors x [1, 3, 4000, 4000], y [1, 64, 4000, 4000] " \
           "and 6,912 bytes of parameters would take 3.99 GiB, more than the 1 GiB memory limit" in line, line
    assert peak < PEAK, peak
    line, _ = refused(capsys, "profile", "zoo:mobilenet_v1", "--input-shape", "1,3,4000,4000", "-q")
    assert "zoo:mobilenet_v1" in line and "running the graph: node" in line, line
    assert "more than the 1 GiB memory limit" in line, line


def test_the_executor_checks_the_batch_it_runs_before_evaluating(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1→256-channel convolution takes 4 MiB of output a 64×64 sample: 16 samples at once
    are refused under a 32 MiB limit before anything runs, 4 run."""
    from hwmap.errors import DataError
    from hwmap.execute import run

    w = numpy_helper.from_array(np.ones((256, 1, 3, 3), np.float32), "w")
    path = _onnx(tmp_path / "wide.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                 [w], [_vi("x", ["N", 1, 64, 64])], [_vi("y", ["N", 256, 64, 64])])
    g = load_model(str(path))
    monkeypatch.setenv(ENV, "32M")
    assert run(g, {"x": np.zeros((4, 1, 64, 64), np.float32)})["y"].shape == (4, 256, 64, 64)
    x = np.zeros((16, 1, 64, 64), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"^graph 'wide': running the graph at batch 16: node 'conv' \(Conv\) with "
                                            r"its tensors x \[16, 1, 64, 64\], y \[16, 256, 64, 64\] and 9,216 bytes "
                                            r"of parameters would take 64.3 MiB, more than the 32 MiB memory limit"):
            run(g, {"x": x})
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * MIB, peak


@pytest.mark.parametrize("shape, needle", [
    ("1,3,99999999999999999999,4", "size 99999999999999999999 is larger than any tensor can be (at most 2147483647)"),
    ("1,3,2147483647,2147483647", "input shape [1, 3, 2147483647, 2147483647]: a float32 tensor of that shape would "
                                  "take"),
    ("1,3,-5,4", "must be positive"),
])
def test_absurd_input_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str, needle: str) -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    path = _onnx(tmp_path / "conv.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [w],
                 [_vi("x", ["N", 3, "H", "W"])], [_vi("y", ["N", 2, "H", "W"])])
    line, peak = refused(capsys, "profile", str(path), f"--input-shape={shape}", "-q")
    assert needle in line and peak < PEAK, line


def test_onnx_opset_and_ir_version_from_the_future(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    known = onnx.defs.onnx_opset_version()
    path = _matmul(tmp_path / "future.onnx", np.ones((4, 3), np.float32), opset=known + 1)
    line, _ = profile_refused(capsys, path)
    assert f"opset {known + 1} is newer than the installed onnx {onnx.__version__} knows (up to opset {known})" in line
    m = onnx.load(str(_matmul(tmp_path / "ir.onnx", np.ones((4, 3), np.float32))))
    m.ir_version = onnx.IR_VERSION + 1
    onnx.save(m, str(tmp_path / "ir.onnx"))
    line, _ = profile_refused(capsys, tmp_path / "ir.onnx")
    assert f"IR version {onnx.IR_VERSION + 1} is newer than the installed onnx" in line, line


@pytest.mark.parametrize("size", [0, -3])
def test_onnx_non_positive_sizes_are_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   size: int) -> None:
    path = _onnx(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])], [], [_vi("x", [1, size])],
                 [_vi("y", [1, 4])])
    line, _ = profile_refused(capsys, path)
    assert line.endswith(f"graph input 'x' has size {size} in dimension 1 of shape [1, {size}]: sizes must be "
                         "positive (or give --input-shape)"), line
    assert "symbolic" not in line
    # a batch written as 0 or -1 by some exporters still takes the batch
    path = _onnx(tmp_path / "b.onnx", [helper.make_node("Relu", ["x"], ["y"])], [], [_vi("x", [size, 4])],
                 [_vi("y", ["N", 4])])
    assert load_model(str(path)).tensor("x").shape == (1, 4)


def _external(tmp_path: Path) -> Path:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    m = onnx.load(str(_matmul(tmp_path / "m.onnx", w)))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(m, str(folder / "m.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return folder / "m.onnx"


def test_onnx_external_data_must_be_a_regular_file_within_the_limit(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = _external(tmp_path)
    assert load_model(str(path)).nodes[0].params["B"].shape == (4, 3)
    weights = path.parent / "weights.bin"
    weights.unlink()
    os.mkfifo(weights)
    line, _ = profile_refused(capsys, path)
    assert "tensor 'w': external data file 'weights.bin' is not a regular file" in line, line
    weights.unlink()
    with open(weights, "wb") as f:  # 8 MiB of zeros, sparse
        f.truncate(8 * MIB)
    monkeypatch.setenv(ENV, "4M")
    m = onnx.load(str(path), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "length":
            e.value = str(6 * MIB)
    path.write_bytes(m.SerializeToString())
    line, peak = profile_refused(capsys, path)
    assert "the external data of the model's tensors (together 6,291,456 bytes) would take 6 MiB, more than the " \
           "4 MiB memory limit" in line and peak < PEAK, (line, peak)


def test_onnx_declared_tensor_sizes_are_checked_before_decoding(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.zeros((512, 1024), np.float32)  # 2 MiB
    path = _matmul(tmp_path / "m.onnx", w)
    monkeypatch.setenv(ENV, "3M")
    assert load_model(str(path)).nodes[0].params["B"].shape == (512, 1024)
    monkeypatch.setenv(ENV, "1M")
    line, _ = profile_refused(capsys, path)
    assert "file (2,097," in line and "more than the 1 MiB memory limit" in line, line
    # a sparse initializer densified: its declared dense shape is checked
    monkeypatch.setenv(ENV, "64M")
    values = numpy_helper.from_array(np.ones(1, np.float32), "w")
    indices = numpy_helper.from_array(np.array([0], np.int64), "i")
    sparse = helper.make_sparse_tensor(values, indices, [100_000, 100_000])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [_vi("x", [1, 100_000])],
                          [_vi("y", [1, 100_000])], sparse_initializer=[sparse])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "sparse.onnx"))
    line, peak = profile_refused(capsys, tmp_path / "sparse.onnx")
    assert "initializer 'w': sparse tensor of shape [100000, 100000] densified would take 37.3 GiB" in line, line
    assert peak < PEAK, peak


# -- PyTorch factories --------------------------------------------------------------------------

NETS = '''
import sys
import torch
from torch import nn


def conv():
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU())


class Zeros(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 100000, 100000).sum() + x


def zeros():
    return Zeros()


class Exits(nn.Module):
    def forward(self, x):
        sys.exit(0)


def exits_in_forward():
    return Exits()


def exits_in_factory():
    exit()
'''


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    return tmp_path


@pytest.mark.parametrize("spec, needle", [
    ("sys:exit", "factory 'exit' in module 'sys' raised SystemExit"),
    ("nets.py:exits_in_factory", "factory 'exits_in_factory' in file 'nets.py' raised SystemExit"),
    ("nets.py:exits_in_forward", "forward pass on input shape [1, 3, 4, 4] failed: SystemExit: 0"),
    ("exits_on_import.py:make", "cannot execute 'exits_on_import.py': SystemExit: 0"),
])
def test_torch_code_calling_sys_exit_is_a_model_error(nets: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, spec: str, needle: str) -> None:
    pytest.importorskip("torch")
    monkeypatch.chdir(nets)
    line, _ = refused(capsys, "profile", spec, "--input-shape", "1,3,4,4", "-q")
    assert line.startswith(f"hwmap: error: {spec}: ") and needle in line, line


@pytest.mark.parametrize("spec, needle", [
    ("nets.py:conv", "op aten.convolution.default with its inputs and outputs would take 3.99 GiB"),
    ("nets.py:zeros", "op aten.zeros.default with its inputs and outputs would take 37.3 GiB"),
])
def test_torch_forward_pass_too_large_is_refused_before_it_runs(nets: Path, spec: str, needle: str) -> None:
    """--input-shape 1,3,4000,4000 on a 3→64-channel convolution, a forward pass allocating
    10^10 zeros: refused before the op runs, in a process whose peak RSS (torch included)
    stays far below what the op would take."""
    pytest.importorskip("torch")
    result = nets / "result.json"
    # VmHWM, the peak RSS of this process image: getrusage's ru_maxrss would carry over the
    # peak of the (large) pytest worker that forked it, which Linux keeps across exec
    code = ("import json, sys; from hwmap.cli import main; code = main(sys.argv[2:]); "
            "hwm = [int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]; "
            "json.dump({'code': code, 'maxrss_kib': hwm}, open(sys.argv[1], 'w'))")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    p = subprocess.run([sys.executable, "-c", code, str(result), "profile", spec, "--input-shape", "1,3,4000,4000",
                        "-q"], cwd=nets, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in p.stderr.splitlines() if not STAGE_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"hwmap: error: {spec}: the forward pass: "), p.stderr
    assert needle in lines[0] and "more than the 1 GiB memory limit" in lines[0], lines[0]
    measured = json.loads(result.read_text())
    assert measured["code"] == 2
    assert measured["maxrss_kib"] * 1024 < 900 * MIB, measured  # torch itself takes ~400 MiB, the input 192 MiB


def test_torch_guard_leaves_a_fitting_model_alone(nets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.chdir(nets)
    g = load_model("nets.py:conv", ParseOptions(input_shape=(1, 3, 16, 16)))
    assert g.tensor(g.outputs[0]).shape == (1, 64, 16, 16)
    monkeypatch.setenv(ENV, "200K")  # at 32×32: input 12 KiB, weights 7 KiB, output 256 KiB
    with pytest.raises(ModelError, match=r"^nets.py:conv: the forward pass: op aten.convolution.default with its "
                                         r"inputs and outputs would take 275 KiB, more than the 200 KiB memory limit"):
        load_model("nets.py:conv", ParseOptions(input_shape=(1, 3, 32, 32)))


def test_a_python_file_that_is_a_device_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("zero.py").symlink_to("/dev/zero")
    line, peak = refused(capsys, "profile", "zero.py:make", "--input-shape", "1,2", "-q")
    assert line == "hwmap: error: zero.py:make: 'zero.py' is not a file" and peak < PEAK, line


def test_messages_carry_no_bytes_of_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NIR node type and an ONNX file of random bytes: the lines name the file, not its bytes."""
    path = _nir(tmp_path / "t.nir")
    with h5py.File(path, "a") as f:
        del f["node/nodes/affine/type"]
        f["node/nodes/affine/type"] = np.frombuffer(b"\x1b]0;pwned\x07" + bytes(range(200, 256)), np.uint8)
    line, _ = profile_refused(capsys, path)
    assert "\x1b" not in line and "\x07" not in line and "pwned" not in line, line
    (tmp_path / "r.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    line, _ = profile_refused(capsys, tmp_path / "r.onnx")
    assert line == f"hwmap: error: {tmp_path / 'r.onnx'}: not an ONNX model (cannot be decoded as an ONNX protobuf; " \
                   "truncated or corrupt?)", line


def test_good_models_still_parse(tmp_path: Path) -> None:
    """What the checks must not refuse: a normal NIR file, an ONNX model at its batch."""
    g = load_model(str(_nir(tmp_path / "ok.nir")))
    assert g.nodes[0].params["B"].shape == (3, 4)
    shutil.copy(tmp_path / "ok.nir", tmp_path / "copy.nir")
    same = ParseOptions(name="net")
    assert load_model(str(tmp_path / "copy.nir"), same).digest() == load_model(str(tmp_path / "ok.nir"), same).digest()
    assert load_model(str(_matmul(tmp_path / "m.onnx", np.ones((4, 3), np.float32)))).tensor("y").shape == (1, 3)
