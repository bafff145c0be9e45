"""Buffer tuning and the cycle simulation: bypass FIFOs on hand-worked cases, residual
networks never deadlock, a bypass one entry short does, stalls show, and the analytic
initiation interval is within 5 % of the simulated one."""

from __future__ import annotations

from functools import lru_cache

import pytest

from hwmap import DoesNotFitError, load_model
from hwmap.config import load_target
from hwmap_pipelined_dnn.buffers import bypass_depths, output_layers, sim_layers
from hwmap_pipelined_dnn.cyclesim import simulate
from hwmap_pipelined_dnn.layers import LayerSpec
from hwmap_pipelined_dnn.legalize import legalize
from hwmap_pipelined_dnn.mapping import PipelineMapping, map_graph


def residual(w: int, c: int = 2) -> list[LayerSpec]:
    """fork → conv3×3 → conv3×3 → add(., fork): an identity bypass over two 3×3 convolutions."""
    src = LayerSpec("src", "source", "Input", [], (c, w, w), (c, w, w), "x")
    kw = dict(kernel=(3, 3), pads=(1, 1, 1, 1))
    a = LayerSpec("a", "conv", "Conv", ["src"], (c, w, w), (c, w, w), "a", **kw)  # type: ignore[arg-type]
    b = LayerSpec("b", "conv", "Conv", ["a"], (c, w, w), (c, w, w), "b", **kw)  # type: ignore[arg-type]
    add = LayerSpec("add", "add", "Add", ["b", "src"], (c, w, w), (c, w, w), "y")
    return [src, a, b, add]


@pytest.mark.parametrize("w", [4, 8, 13])
def test_identity_bypass_depth_hand_worked(w: int) -> None:
    # add pixel k needs conv b's pixel k, which needs conv a's pixel k + W + 1, which needs the
    # fork's pixel k + 2W + 2 (away from the borders): the bypass must hold 2W + 2 pixels
    depths = bypass_depths(residual(w))
    assert depths[(3, 1)] == 2 * w + 2
    assert depths[(3, 0)] == 0


def run(specs: list[LayerSpec], bypass: int, cycles: list[int]) -> object:
    fifo = [[], [2], [2], [2, bypass]]
    return simulate(sim_layers(specs, cycles, fifo, 1), [3], 3, pace=float(max(cycles)), spread=True,
                    max_sweeps=300)


@pytest.mark.parametrize("cycles", [[64, 64, 64, 64], [64, 640, 128, 64], [64, 64, 900, 640]])
def test_bypass_one_short_deadlocks_and_the_bound_does_not(cycles: list[int]) -> None:
    specs = residual(8)
    need = bypass_depths(specs)[(3, 1)]
    ok = run(specs, need, cycles)
    assert not ok.deadlock and ok.ii >= max(cycles)  # type: ignore[attr-defined]
    short = run(specs, need - 1, cycles)
    assert short.deadlock and short.moving  # type: ignore[attr-defined]


def test_small_fifos_stall_and_the_simulation_says_so() -> None:
    # a fast producer bursting into a slow consumer through 2-entry FIFOs, then a bottleneck
    specs = residual(8)
    fifo = [[], [2], [2], [2, 200]]
    res = simulate(sim_layers(specs, [64, 64, 640, 64], fifo, 1), [3], 4)
    assert not res.deadlock
    assert res.ii == pytest.approx(640)
    assert res.blocked["a"] > 0 or res.blocked["src"] > 0  # back-pressure upstream of the bottleneck


@lru_cache(maxsize=None)
def mapped(model: str, mult: int) -> PipelineMapping:
    t = load_target(f"pipelined_dnn:default@hardware.multipliers={mult}")
    m = map_graph(legalize(load_model(model), t).graph, t)
    assert isinstance(m, PipelineMapping)
    return m


@pytest.mark.parametrize("mult", [16, 64, 256, 2048])
def test_resnet_never_deadlocks_and_estimate_within_5_percent(mult: int) -> None:
    m = mapped("zoo:resnet_small", mult)
    assert not m.sim.deadlock
    assert m.sim.ii >= m.analytic_ii
    assert abs(m.analytic_ii - m.sim.ii) <= 0.05 * m.sim.ii
    adds = [i for i, s in enumerate(m.specs) if s.kind == "add"]
    assert len(adds) == 3
    for i in adds:  # the bypass FIFO holds at least the deadlock-free bound
        assert all(d >= b for d, b in zip(m.plan.layers[i].fifo_depths, m.plan.layers[i].bypass_min_depths))
    assert max(max(m.plan.layers[i].bypass_min_depths) for i in adds) >= 2 * 32 + 2


def test_resnet_bypass_cut_below_its_bound_deadlocks() -> None:
    m = mapped("zoo:resnet_small", 256)
    i = next(i for i, s in enumerate(m.specs) if s.kind == "add")
    fifo = [list(b.fifo_depths) for b in m.plan.layers]
    bound = m.plan.layers[i].bypass_min_depths
    fast = max(range(2), key=lambda e: bound[e])
    fifo[i][fast] = bound[fast] - 1
    res = simulate(sim_layers(m.specs, m.cycles, fifo, 1), m.outputs, 3, pace=float(m.analytic_ii), spread=True,
                   max_sweeps=200)
    assert res.deadlock


@pytest.mark.parametrize("mult,goal", [(256, 0.90), (1024, 0.95), (4096, 0.95)])
def test_mobilenet_simulated_throughput_meets_the_goals(mult: int, goal: float) -> None:
    m = mapped("zoo:mobilenet_v1", mult)
    assert not m.sim.deadlock
    fps = m.cfg.hardware.clock_hz / m.sim.ii
    assert fps / m.balanced_bound_fps >= goal
    assert abs(m.analytic_ii - m.sim.ii) <= 0.05 * m.sim.ii
    assert m.tuned.used["multipliers"] <= mult  # tuning time: bench/pipelined_dnn.py (never a timed test)


def test_streamed_weights_cost_bandwidth() -> None:
    t = load_target("pipelined_dnn:default@hardware.onchip_memory_bytes=1500000"
                    "@hardware.external_bandwidth_bytes_per_s=2e8")
    m = map_graph(legalize(load_model("zoo:mobilenet_v1"), t).graph, t)
    streamed = [s.name for s, b in zip(m.specs, m.plan.layers) if b.streamed]
    assert "fc" in streamed  # read once per frame: the first to go
    assert m.plan.external_bytes_per_frame > 0 and m.plan.onchip_bytes <= 1500000
    assert m.plan.bandwidth_ii > 0 and m.sim.ii >= m.plan.bandwidth_ii


def test_weights_exceeding_every_memory_is_a_named_violation() -> None:
    t = load_target("pipelined_dnn:default@hardware.onchip_memory_bytes=100000"
                    "@hardware.external_memory_bytes=200000")
    legal = legalize(load_model("zoo:mobilenet_v1"), t)
    assert not legal.fits and legal.violations[0].rule == "weight_memory"
    t2 = load_target("pipelined_dnn:default@hardware.onchip_memory_bytes=2000"
                     "@hardware.external_memory_bytes=0@hardware.external_bandwidth_bytes_per_s=0")
    with pytest.raises(DoesNotFitError) as err:
        map_graph(legalize(load_model("zoo:digits_cnn"), t2).graph, t2)
    assert "weight_memory" in str(err.value) or "onchip_memory" in str(err.value)


def test_output_layers() -> None:
    m = mapped("zoo:digits_cnn", 64)
    assert [m.specs[i].name for i in output_layers(m.specs, m.graph.outputs)] == ["fc"]


def test_mobilenet_with_memory_blocks_budgeted_uses_the_greedy() -> None:
    t = load_target("pipelined_dnn:default@hardware.memory_blocks=2500")
    m = map_graph(legalize(load_model("zoo:mobilenet_v1"), t).graph, t)
    assert m.tuned.method == "greedy"
    assert m.tuned.used["multipliers"] <= 1024 and m.tuned.used["memory_blocks"] <= 2500
    exact = mapped("zoo:mobilenet_v1", 1024)
    ratio = m.analytic_ii / exact.analytic_ii
    assert 1.0 <= ratio <= 1.05  # a second budget costs at most a few per cent here
    assert not m.sim.deadlock
