"""Batches amortize reprogramming: with several computation cycles each cycle's weights are
programmed once per batch of ``schedule.batch`` inferences; the batch's latency grows, the
energy and time per inference fall, and the estimate and the simulator count the same
programming rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap_analog_imc import emit
from hwmap_analog_imc.estimate import estimate
from hwmap_analog_imc.simulator import Simulator
from test_estimate import compile_

BATCHES = (1, 4, 16, 64)


def test_mobilenet_v1_batches_amortize_reprogramming() -> None:
    """zoo:mobilenet_v1 on analog_imc:default: 33 cycles, 16.8 M cells written per round."""
    k = {}
    for b in BATCHES:
        m, t = compile_("zoo:mobilenet_v1", "default", f"schedule.batch={b}")
        k[b] = estimate(m, t, None)
    cells = k[1].resources["cells_used"]
    for b, x in k.items():
        assert x.check() == []
        r = x.resources
        assert r["computation_cycles"] == 33 and r["batch"] == b
        assert r["programming_rounds_per_inference"] == pytest.approx(33 / b)
        assert x.energy_breakdown["reprogramming"] == pytest.approx(cells * 100e-12 / b)
        assert x.throughput_inf_per_s == pytest.approx(b / x.latency_s)
        assert sum(x.energy_breakdown.values()) == pytest.approx(x.energy_per_inference_j)
        assert x.bottleneck.resource == "reprogramming"
    energy = [k[b].energy_per_inference_j for b in BATCHES]
    share = [k[b].energy_breakdown["reprogramming"] / k[b].energy_per_inference_j for b in BATCHES]
    latency = [k[b].latency_s for b in BATCHES]
    per_inference = [k[b].latency_s / b for b in BATCHES]
    assert all(a > c for a, c in zip(energy, energy[1:]))
    assert all(a > c for a, c in zip(share, share[1:]))
    assert all(a < c for a, c in zip(latency, latency[1:]))
    assert all(a > c for a, c in zip(per_inference, per_inference[1:]))
    # programming time is paid once per batch; each further inference adds the cycles'
    # initiation intervals: the batch latency is affine in the batch
    assert (latency[3] - latency[0]) / (latency[1] - latency[0]) == pytest.approx(63 / 3, rel=1e-9)
    assert k[64].resources["programming_s_per_cycle"] == k[1].resources["programming_s_per_cycle"]
    # the numbers the README reports
    assert energy[0] == pytest.approx(2.2168e-3, rel=1e-4) and share[0] == pytest.approx(0.760, abs=1e-3)
    assert energy[3] == pytest.approx(0.5575e-3, rel=1e-3) and share[3] == pytest.approx(0.047, abs=1e-3)
    assert "per batch of 64 inferences" in k[64].bottleneck.description


def _simulate(tmp: Path, n: int, *sets: str) -> tuple[hwmap.KPIs, dict, hwmap.KPIs]:
    m, t = compile_("zoo:digits_cnn", "default", "hardware.cores=1", "hardware.crossbar_rows=64",
                    "hardware.crossbar_cols=64", *sets)
    emit.write_program(m, t, tmp).write_manifest()
    sim = Simulator.load(hwmap.Artifacts.read(tmp), t)
    x = np.random.default_rng(0).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)
    activity = sim.run({m.graph.inputs[0]: x}).activity
    return estimate(m, t, None), activity, estimate(m, t, activity)


def test_the_simulator_counts_the_programming_rounds_the_estimate_assumes(tmp_path: Path) -> None:
    analytic, activity, measured = _simulate(tmp_path / "a", 8, "schedule.batch=4")
    cycles = analytic.resources["computation_cycles"]
    assert cycles > 1
    # 8 samples in 2 batches of 4: every cycle programmed twice, cycles / 4 per inference
    assert activity["programmings_per_inference"] == pytest.approx(cycles * 2 / 8)
    assert analytic.resources["programming_rounds_per_inference"] == pytest.approx(cycles / 4)
    assert measured.energy_breakdown["reprogramming"] == pytest.approx(analytic.energy_breakdown["reprogramming"])
    # 6 samples: the second batch is short, so each of its inferences carries more programming
    analytic6, activity6, measured6 = _simulate(tmp_path / "b", 6, "schedule.batch=4")
    assert activity6["programmings_per_inference"] == pytest.approx(cycles * 2 / 6)
    assert measured6.energy_breakdown["reprogramming"] == \
        pytest.approx(analytic6.energy_breakdown["reprogramming"] * 4 * 2 / 6)
    # batch 1: every inference reprograms every cycle
    _, activity1, _ = _simulate(tmp_path / "c", 3)
    assert activity1["programmings_per_inference"] == pytest.approx(cycles)
