"""A tampered ``pipeline.json`` in a compile directory is refused before anything runs:
exit 2, one line naming the file and the layer, memory bounded (``hwmap simulate`` on
hostile compile directories; the honest ones are simulated bit-exactly in
test_pipe_bit_exact.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import guard
from hwmap import TargetError
from hwmap.config import load_target
from hwmap.data import load_data
from hwmap.flow import compile_model

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("pipe")
    compile_model("zoo:digits_cnn", load_target("pipelined_dnn:default"), root / "out",
                  data=load_data("zoo:digits").head(32))
    yield {"dir": root / "out", "data": guard.digits_data(root / "data.npz")}


def _layer(i: int, **kv: Any) -> Callable[[Doc], None]:
    return lambda d: d["layers"][i]["layer"].update(kv)


def _entry(i: int, **kv: Any) -> Callable[[Doc], None]:
    return lambda d: d["layers"][i].update(kv)


def _every(**kv: Any) -> Callable[[Doc], None]:
    return lambda d: [e.update(kv) for e in d["layers"]] and None


# each change, and a fragment of the line that must refuse it (the simulation used to fail with
# ValueError/IndexError/ZeroDivisionError, exit 3, or allocate terabytes)
CHANGES: list[tuple[str, Callable[[Doc], None], str]] = [
    ("stride 0", _layer(1, stride=[0, 0]), "stride [0, 0] must be positive"),
    ("pads far past the input", _layer(1, pads=[30000] * 4), "give [8, 60006, 60006]"),
    ("pads and output grown together", _layer(1, pads=[0, 0, 10**7, 10**7], out_shape=[8, 10**7 + 6, 10**7 + 6]),
     "memory limit"),
    ("source shape", _layer(0, out_shape=[1, 4, 4]), "its input 'input:input' writes [1, 4, 4]"),
    ("input shape of a layer", _layer(1, in_shape=[1, 4000, 4000]), "reads [1, 4000, 4000]"),
    ("no cycles", _every(cycles=0), "cycles 0"),
    ("negative cycles", _entry(1, cycles=-5), "cycles -5"),
    ("negative FIFO", _entry(1, fifo_depths=[-3]), "FIFO depths [-3]"),
    ("FIFO missing", _entry(1, fifo_depths=[]), "one depth per input"),
    ("ten million frames", lambda d: d.update(sim_frames=10**7), "sim_frames 10000000 outside 3..64"),
    ("no frames", lambda d: d.update(sim_frames=0), "sim_frames 0"),
    ("no pixels per cycle", lambda d: d.update(input_pixels_per_cycle=0), "input_pixels_per_cycle 0"),
    ("output shape", lambda d: d["outputs"][0].update(shape=[10**9]), "is not what layer 3 writes"),
    ("two sources", _layer(1, kind="source"), "the only one"),
]


@pytest.mark.parametrize("change,needle", [(c[1], c[2]) for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_a_tampered_pipeline_is_refused_before_it_runs(built: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       change: Callable[[Doc], None], needle: str) -> None:
    cdir = guard.fresh_copy(built["dir"], tmp_path / "c", monkeypatch)
    path = cdir / "artifacts" / "pipeline.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    line = guard.refused(cdir, built["data"], "pipeline.json", needle, peak=256 << 20)
    assert "internal error" not in line


def test_the_untampered_directory_still_simulates(built: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = guard.fresh_copy(built["dir"], tmp_path / "c", monkeypatch)
    run = guard.simulate(cdir, built["data"])
    assert run.code == 0, run.stderr


def test_slices_shrink_to_fit_the_memory_limit(built: dict[str, Path]) -> None:
    """The integer simulation takes as many samples at a time as its largest window matrix
    lets within the limit, and refuses when not even one fits."""
    from hwmap.artifacts import Artifacts
    from hwmap.limits import set_max_memory
    from hwmap_pipelined_dnn.postprocess import read_program
    from hwmap_pipelined_dnn.program_checks import batch_for, sample_bytes

    prog = read_program(Artifacts.read(built["dir"] / "artifacts"))
    biggest = max(sample_bytes(pl.spec) for pl in prog.layers)
    # conv2: 8×8×8 input padded to 10×10, 4×4 outputs of a 3×3 window over 8 channels, 16×4×4 out (int64)
    assert biggest == 8 * (8 * 10 * 10 + 8 * 4 * 4 * 3 * 3 + 16 * 4 * 4)
    try:
        set_max_memory(biggest * 5)
        assert batch_for(prog, 256, "p") == 5
        assert batch_for(prog, 3, "p") == 3
        set_max_memory(biggest - 1)
        with pytest.raises(TargetError, match="one sample's largest layer"):
            batch_for(prog, 256, "p")
    finally:
        set_max_memory(None)
