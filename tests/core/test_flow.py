"""The flow: data split into calibration and scoring, provenance, sensitivity, progress."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import hwmap
from hwmap import DataError, Dataset, load_data
from hwmap.config import load_target
from hwmap.flow import calibration_size, compare, compile_model, simulate_dir, split_data

pytestmark = pytest.mark.usefixtures("toy_registry")

MODEL = "zoo:digits_cnn"


@pytest.mark.parametrize("n, calibrate, k", [(360, None, 90), (4, None, 1), (7, None, 1), (4000, None, 512),
                                             (360, 0, 0), (360, 10, 10), (2, 1, 1)])
def test_calibration_size(n: int, calibrate: int | None, k: int) -> None:
    assert calibration_size(n, calibrate) == k


@pytest.mark.parametrize("n, calibrate, needle", [
    (3, None, "3 samples are too few to split"), (1, None, "1 sample are too few"),
    (10, 10, "--calibrate 10 leaves none of the 10 samples to score; use at most 9"),
    (10, -1, "--calibrate -1: must be 0 or more samples")])
def test_a_split_that_cannot_be_made_is_a_clear_error(n: int, calibrate: int | None, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        calibration_size(n, calibrate)


def test_split_data_keeps_labels_in_step() -> None:
    d = load_data("zoo:digits")
    calib, scored = split_data(d)
    assert calib is not None and (len(calib), len(scored)) == (90, 270)
    assert np.array_equal(calib.x, d.x[:90]) and np.array_equal(scored.y, d.y[90:])
    none, everything = split_data(d, 0)
    assert none is None and len(everything) == 360


class Recorder:
    """A :class:`hwmap.progress.Progress` that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        self.events.append(("start", label))
        yield
        self.events.append(("end", label))

    def update(self, done: int, total: int) -> None:
        self.events.append(("update", (done, total)))


def test_compile_calibrates_on_the_first_part_and_scores_the_rest(tmp_path: Path) -> None:
    data = load_data("zoo:digits")
    rec = Recorder()
    target = load_target("toy_cpu:default")
    res = compile_model(MODEL, target, tmp_path / "out", data=data, calibrate=40, progress=rec)
    assert np.array_equal(target.calibration, data.x[:40])  # what legalize was handed
    k = res.kpis
    assert k.fidelity is not None and k.fidelity.samples == 320
    assert k.provenance.data == {"name": "zoo:digits", "samples": 360, "calibration_samples": 40,
                                 "scored_samples": 320}
    # the reference model's accuracy on the same 320 scored samples
    from hwmap.execute import run

    ref = run(res.graph, {"input": data.x[40:]})["output"]
    assert k.reference_accuracy == pytest.approx(float(np.mean(ref.argmax(1) == data.y[40:])))
    assert k.provenance.kpis["fidelity"] == k.provenance.kpis["accuracy"] == "simulated"
    labels = [label for what, label in rec.events if what == "start"]
    assert labels[0] == f"parsing {MODEL}" and "simulating 320 samples on toy-default" in labels
    assert ("end", "estimating toy-default") in rec.events
    assert ("update", (320, 320)) in rec.events  # the reference model's run, in slices
    # kpis.json says the same
    on_disk = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert on_disk["provenance"]["data"]["calibration_samples"] == 40


def test_provenance_versions_and_hashes(tmp_path: Path) -> None:
    data = load_data("zoo:digits")
    a = compile_model(MODEL, load_target("toy_cpu:default"), None, data=data).kpis
    b = compile_model(MODEL, load_target("toy_cpu:default@hardware.macs_per_cycle=8"), None, data=data).kpis
    other = Dataset(data.x[::-1].copy(), data.y[::-1].copy(), "reversed")
    c = compile_model(MODEL, load_target("toy_cpu:default"), None, data=other).kpis
    assert a.provenance.versions == {"hwmap": hwmap.__version__, "toy-target": "0.1"}
    assert set(a.provenance.sha256) == {"model", "data", "config"}
    assert all(len(h) == 64 for h in a.provenance.sha256.values())
    assert a.provenance.sha256["model"] == b.provenance.sha256["model"] == c.provenance.sha256["model"]
    assert a.provenance.sha256["config"] != b.provenance.sha256["config"]
    assert a.provenance.sha256["data"] != c.provenance.sha256["data"]
    assert a.provenance.sha256["config"] == c.provenance.sha256["config"]
    nodata = compile_model(MODEL, load_target("toy_cpu:default"), None).kpis
    assert "data" not in nodata.provenance.sha256 and nodata.provenance.data["scored_samples"] == 0


def test_simulate_scores_everything_it_is_given(tmp_path: Path) -> None:
    data = load_data("zoo:digits")
    compile_model(MODEL, load_target("toy_cpu:default"), tmp_path / "out", data=data)
    scored = simulate_dir(tmp_path / "out", data)
    assert scored.samples == scored.fidelity.samples == 360
    assert scored.accuracy is not None and scored.reference_accuracy is not None


def test_compare_splits_once_for_every_target() -> None:
    data = load_data("zoo:digits")
    recs = compare(MODEL, [load_target("toy_cpu:default"), load_target("toy_cpu:small")], data=data, calibrate=60)
    assert recs[0].provenance.data["scored_samples"] == 300 and recs[0].reference_accuracy is not None
    assert not recs[1].fits
    with pytest.raises(DataError, match="leaves none of the 360 samples"):
        compare(MODEL, [load_target("toy_cpu:default")], data=data, calibrate=360)


def test_sensitivity_varies_only_assumed_constants() -> None:
    data = load_data("zoo:digits")
    k = compile_model(MODEL, load_target("toy_cpu:default"), None, data=data, sensitivity=True).kpis
    # the toy default preset marks its clock, MAC lanes and SRAM size "assumed"; the energies are cited
    assert sorted(k.sensitivity) == ["hardware.clock_hz", "hardware.macs_per_cycle", "hardware.sram_bytes"]
    clock = k.sensitivity["hardware.clock_hz"]
    assert clock["value"] == 100e6 and clock["source"].startswith("assumed")
    assert clock["x0.5"]["latency_s"] == pytest.approx(2.0) and clock["x2"]["latency_s"] == pytest.approx(0.5)
    assert clock["x2"]["energy_per_inference_j"] == pytest.approx(1.0)
    lanes = k.sensitivity["hardware.macs_per_cycle"]
    assert (lanes["x0.5"]["value"], lanes["x2"]["value"]) == (2, 8)
    assert lanes["x0.5"]["latency_s"] > 1.5 and lanes["x2"]["latency_s"] < 0.75
    sram = k.sensitivity["hardware.sram_bytes"]
    assert sram["x0.5"]["energy_per_inference_j"] == pytest.approx(1.0)  # the model still fits in half
    assert compile_model(MODEL, load_target("toy_cpu:default"), None, data=data).kpis.sensitivity == {}


def test_sensitivity_reports_variants_the_schema_refuses_or_that_do_not_fit(tmp_path: Path) -> None:
    p = tmp_path / "tight.toml"
    p.write_text('extends = "toy_cpu:default"\n[hardware]\n'
                 'sram_bytes = { value = 4000, source = "assumed: just enough for digits_cnn" }\n'
                 'clock_hz = { value = 9e9, source = "assumed: near the schema bound" }\n')
    k = compile_model(MODEL, load_target(str(p)), None, sensitivity=True).kpis
    assert k.sensitivity["hardware.sram_bytes"]["x0.5"]["error"].startswith("does not fit: weight_memory")
    assert "x2" in k.sensitivity["hardware.sram_bytes"] and "error" not in k.sensitivity["hardware.sram_bytes"]["x2"]
    assert "less than or equal to 10000000000" in k.sensitivity["hardware.clock_hz"]["x2"]["error"]
