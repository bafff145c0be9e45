"""The parallelism tuner against exhaustive search: with one resource it must find the
optimum of its template model (the least initiation interval within the multiplier
budget, and with a target frame rate the fewest multipliers meeting it); with memory blocks
budgeted too, the greedy stays within every budget."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from hwmap import load_model
from hwmap.config import load_target
from hwmap_pipelined_dnn.layers import LayerSpec, extract_layers
from hwmap_pipelined_dnn.legalize import legalize
from hwmap_pipelined_dnn.templates import Context, Option, options, templates_for
from hwmap_pipelined_dnn.tuner import Infeasible, balanced_bound_fps, tune

CTX = Context(weight_bits=8, block_bits=18432)
CLOCK = 200e6


@lru_cache(maxsize=None)
def layers_of(model: str) -> tuple[LayerSpec, ...]:
    return tuple(extract_layers(legalize(load_model(model), load_target("pipelined_dnn:default")).graph))


def every(spec: LayerSpec) -> list[Option]:
    return [o for t in templates_for(spec.kind) for o in t.enum_options(spec, CTX)]


def exhaustive(opts: list[list[Option]], budget: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Every combination at once (numpy broadcasting): the least max-cycles within the budget,
    and the arrays of max-cycles and multiplier sums over all combinations."""
    cyc = np.zeros((1,) * len(opts), dtype=np.int64)
    mul = np.zeros((1,) * len(opts), dtype=np.int64)
    for i, o in enumerate(opts):
        shape = [1] * len(opts)
        shape[i] = len(o)
        cyc = np.maximum(cyc, np.array([x.cycles for x in o]).reshape(shape))
        mul = mul + np.array([x.multipliers for x in o]).reshape(shape)
    feasible = mul <= budget
    best = float(cyc[feasible].min()) if feasible.any() else math.inf
    return best, cyc, mul


def synthetic(seed: int) -> list[LayerSpec]:
    """A small random chain: source, conv, depthwise, pointwise, fc."""
    rng = np.random.default_rng(seed)
    c0, c1, c2, h = int(rng.integers(1, 4)), int(rng.integers(2, 9)), int(rng.integers(2, 13)), int(rng.integers(4, 9))
    out = [LayerSpec("src", "source", "Input", [], (c0, h, h), (c0, h, h), "x")]
    conv = LayerSpec("conv", "conv", "Conv", ["src"], (c0, h, h), (c1, h, h), "a", kernel=(3, 3), pads=(1, 1, 1, 1))
    dw = LayerSpec("dw", "depthwise", "Conv", ["conv"], (c1, h, h), (c1, h, h), "b", kernel=(3, 3), pads=(1, 1, 1, 1))
    pw = LayerSpec("pw", "pointwise", "Conv", ["dw"], (c1, h, h), (c2, h, h), "c")
    fc = LayerSpec("fc", "fc", "Gemm", ["pw"], (c2, h, h), (5, 1, 1), "d")
    for s, w in ((conv, c0 * c1 * 9), (dw, c1 * 9), (pw, c1 * c2), (fc, c2 * h * h * 5)):
        s.weights, s.macs = w, w * s.out_items
    return out + [conv, dw, pw, fc]


@pytest.mark.parametrize("model", ["zoo:digits_cnn", "zoo:digits_mlp", "zoo:chapter_cnn"])
def test_tuner_finds_the_exhaustive_optimum_on_zoo_networks(model: str) -> None:
    specs = list(layers_of(model))
    opts = [every(s) for s in specs]  # every option, before pruning: the search space itself
    pruned = [options(s, CTX) for s in specs]
    floor_mult = sum(min(o.multipliers for o in x) for x in opts)
    full = sum(max(o.multipliers for o in x) for x in opts)
    budgets = sorted({floor_mult, floor_mult + 1, 7, 16, 50, 100, 333, 1000, full} - {0})
    for r in (b for b in budgets if b >= floor_mult):
        res = tune(specs, pruned, {"multipliers": r, "memory_blocks": 0}, clock_hz=CLOCK)
        best, _, _ = exhaustive(opts, r)
        assert res.ii == best, (model, r, res.ii, best)
        assert res.used["multipliers"] <= r and res.method == "bisection"


@pytest.mark.parametrize("seed", range(6))
def test_tuner_finds_the_exhaustive_optimum_on_random_chains(seed: int) -> None:
    specs = synthetic(seed)
    opts = [every(s) for s in specs]
    pruned = [options(s, CTX) for s in specs]
    _, cyc, mul = exhaustive(opts, 10**9)
    for r in np.unique(np.quantile(mul, [0.0, 0.01, 0.1, 0.3, 0.6, 1.0]).astype(int)):
        res = tune(specs, pruned, {"multipliers": int(r), "memory_blocks": 0}, clock_hz=CLOCK)
        assert res.ii == cyc[mul <= r].min(), (seed, r)


@pytest.mark.parametrize("model", ["zoo:digits_cnn", "zoo:chapter_cnn"])
def test_target_frame_rate_is_met_at_the_least_cost(model: str) -> None:
    specs = list(layers_of(model))
    opts = [every(s) for s in specs]
    pruned = [options(s, CTX) for s in specs]
    _, cyc, mul = exhaustive(opts, 10**9)
    for t in np.unique(np.quantile(cyc, [0.0, 0.2, 0.5, 0.9]).astype(int)):
        fps = CLOCK / t
        res = tune(specs, pruned, {"multipliers": 10**6, "memory_blocks": 0}, clock_hz=CLOCK, target_fps=fps)
        assert res.ii <= math.floor(CLOCK / fps)
        assert res.used["multipliers"] == mul[cyc <= math.floor(CLOCK / fps)].min()
        assert res.method == "target"


def test_target_frame_rate_too_high_is_a_named_violation() -> None:
    specs = list(layers_of("zoo:digits_cnn"))
    pruned = [options(s, CTX) for s in specs]
    with pytest.raises(Infeasible) as err:
        tune(specs, pruned, {"multipliers": 10**6, "memory_blocks": 0}, clock_hz=CLOCK, target_fps=CLOCK)
    assert err.value.rule == "target_fps"


def test_budget_below_the_minimal_parallelism() -> None:
    specs = list(layers_of("zoo:digits_cnn"))
    pruned = [options(s, CTX) for s in specs]
    with pytest.raises(Infeasible) as err:
        tune(specs, pruned, {"multipliers": 2, "memory_blocks": 0}, clock_hz=CLOCK)
    assert err.value.rule == "multiplier_budget" and "hardware.multipliers = 2" in str(err.value)


@pytest.mark.parametrize("blocks", [6, 12, 40])
def test_greedy_with_memory_blocks_stays_within_both_budgets(blocks: int) -> None:
    specs = synthetic(3)
    pruned = [options(s, CTX) for s in specs]
    one = tune(specs, pruned, {"multipliers": 200, "memory_blocks": 0}, clock_hz=CLOCK)
    try:
        res = tune(specs, pruned, {"multipliers": 200, "memory_blocks": blocks}, clock_hz=CLOCK)
    except Infeasible as e:
        assert e.rule == "memory_block_budget"
        return
    assert res.method == "greedy"
    assert res.used["multipliers"] <= 200 and res.used["memory_blocks"] <= blocks
    assert res.ii >= one.ii  # a second budget can only cost throughput
    # and it is no worse than the slowest configuration
    assert res.ii <= max(max(o.cycles for o in x) for x in pruned)


def test_mobilenet_ratios_and_balanced_bound() -> None:
    """The tuner alone on MobileNet V1: the achievable ratios the issue quotes for one engine
    per layer with integer output/input-channel parallelism (0.922 / 0.956 / 0.972)."""
    specs = list(extract_layers(legalize(load_model("zoo:mobilenet_v1"), load_target("pipelined_dnn:default")).graph))
    pruned = [options(s, CTX) for s in specs]
    macs = sum(s.macs for s in specs)
    assert macs == 568_740_352
    for r, goal in ((256, 0.90), (1024, 0.95), (4096, 0.95)):
        res = tune(specs, pruned, {"multipliers": r, "memory_blocks": 0}, clock_hz=CLOCK)
        ratio = (CLOCK / res.ii) / balanced_bound_fps(CLOCK, r, macs)
        assert goal <= ratio <= 1.0, (r, ratio)
