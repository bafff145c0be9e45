"""Neuron aliasing (Xylo's; the ``aliases`` of Rockpool's specifications) against XyloSim.

The semantics, measured on ``xylosim`` (the C++ simulator Rockpool's ``XyloSim`` wraps) and
asserted here: as a step's spikes are taken, the alias pairs ``(source, target)`` act in
neuron order: a source hands its count to a forward target (higher index) before the
target's own spikes are taken, so the target emits its own only up to 31 minus what it
received and its membrane keeps the charge of the rest; backward and self targets then add
their sources' counts of that pass, membranes untouched; counts stop at 31
(:func:`hwmap.ops.bitshift.alias_spikes`). So a chain ``0 → 1 → 2`` carries neuron 0's
spikes to 2 in the same step and ``2 → 1 → 0`` does not carry 2's to 0, a self-alias
doubles, and targets out of range are refused by XyloSim itself. hwmap's reference executor (``LIFBitshift``), the device's
simulator (numpy and numba) and its bitstream give XyloSim's spikes, spike for spike, on
hand-built probes and on random networks with random alias tables; Rockpool's own
``Residual`` network, mapped by Rockpool onto aliases, runs as Rockpool's ``XyloSim`` runs it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwmap import load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.flow import compile_model
from hwmap_digital_snn import kernel, plugin
from hwmap_digital_snn.hardware import DigitalSNNConfig
from hwmap_digital_snn.simulator import load, run_program
from hwmap_digital_snn.xylo_json import save_xylo_json

from xylo_specs import random_spec, xylosim_record

pytest.importorskip("xylosim.v2")

#: Alias tables of the probe (4 hidden neurons, neuron i driven to emit 1, 2, 4, 8 spikes at
#: step 0), and the hidden spikes XyloSim records at step 0 (measured, xylosim 0.1.3).
PROBES: dict[str, tuple[list[list[int]], list[int]]] = {
    "none": ([[], [], [], []], [1, 2, 4, 8]),
    "chain 0>1>2>3 (forward: transitive)": ([[1], [2], [3], []], [1, 3, 7, 15]),
    "chain 3>2>1>0 (backward: one hop)": ([[], [0], [1], [2]], [3, 6, 12, 8]),
    "cycle 0>1>0": ([[1], [0], [], []], [4, 3, 4, 8]),
    "cycle 0>1>2>0": ([[1], [2], [0], []], [8, 3, 7, 8]),
    "self 1>1 (doubles)": ([[], [1], [], []], [1, 4, 4, 8]),
    "two targets 0>1, 0>3": ([[1, 3], [], [], []], [1, 3, 4, 9]),
    "the same target twice": ([[1, 1], [], [], []], [1, 4, 4, 8]),
    "three sources onto 3": ([[3], [3], [3], []], [1, 2, 4, 15]),
    "self, then a forward target (gets the count before doubling)": ([[0, 1], [], [], []], [2, 3, 4, 8]),
    "a forward target, then self": ([[1, 0], [], [], []], [2, 3, 4, 8]),
    "self and a backward target (gets the count before doubling)": ([[], [1, 0], [], []], [3, 4, 4, 8]),
    "forward into a neuron with self and backward aliases": ([[1], [1, 0], [], []], [4, 6, 4, 8]),
    "backward, then forward from the backward source": ([[2], [0], [1], []], [3, 7, 5, 8]),
}
#: The step-0 counts the probe's inputs drive (spikes of each neuron without aliasing).
DRIVE = [1, 2, 4, 8]


def probe_spec(aliases: list[list[int]]) -> dict[str, Any]:
    """Input channel i drives hidden neuron i (weight 100, dash_syn 1, threshold 50: ``c``
    events give ``c`` spikes); every hidden neuron drives output 0 with weight 1 (a threshold
    it never reaches): the outputs' synaptic current counts what leaves through W_out."""
    n = 4
    return {"weights_in": (100 * np.eye(n, dtype=np.int64)), "weights_rec": np.zeros((n, n), np.int64),
            "weights_out": np.ones((n, 1), np.int64), "dash_mem": [1] * n, "dash_syn": [1] * n,
            "dash_syn_2": [1] * n, "dash_mem_out": [1], "dash_syn_out": [1], "threshold": [50] * n,
            "threshold_out": [30000], "bias": [0] * n, "bias_out": [0], "weight_shift_in": 0,
            "weight_shift_rec": 0, "weight_shift_out": 0, "aliases": aliases, "dt": 1e-3}


def _device(spec: dict[str, Any], tmp_path: Path, name: str, sets: list[str] | None = None) -> Any:
    """The program hwmap compiles from ``spec`` on the xylo-audio2 preset."""
    path = save_xylo_json(spec, tmp_path / f"{name}.xylo.json")
    r = compile_model(str(path), load_target("digital_snn:xylo-audio2", sets or []), tmp_path / name)
    assert r.legalized.fits, r.legalized.violations
    assert r.artifacts is not None
    return load(r.artifacts)


KERNELS = ["numpy"] + (["numba"] if kernel.AVAILABLE else [])


@pytest.mark.parametrize("case", list(PROBES))
def test_probe_semantics_as_xylosim(case: str, tmp_path: Path) -> None:
    aliases, want = PROBES[case]
    spec = probe_spec(aliases)
    x = np.zeros((2, 4, 4), np.int64)
    x[0, 0] = DRIVE
    x[1, 0] = [15, 15, 15, 15]  # counts that reach Xylo's 31 spikes per step through aliases
    ref = xylosim_record(spec, x)
    assert ref["hidden"][0, 0].tolist() == want  # the semantics (module docstring), as XyloSim computes them
    plain = xylosim_record(probe_spec([[], [], [], []]), x)
    # below the cap the membranes are untouched; at it, a forward target keeps the charge of the
    # spikes it did not emit (the chain's neurons 2 and 3 received 30 and 31 of their 31)
    np.testing.assert_array_equal(ref["v_mem"][0], plain["v_mem"][0])
    if case.startswith("chain 0>1>2>3"):
        assert ref["v_mem"][1, 0].tolist() == [0, 0, 700, 750] and plain["v_mem"][1, 0].tolist() == [0] * 4
    assert ref["hidden"].max() <= 31
    # hwmap's executor on the .xylo.json graph: every step's hidden and output spikes
    g = load_model(str(save_xylo_json(spec, tmp_path / "p.xylo.json")))
    got = run(g, {"input": x.astype(np.float32)}, collect=True)
    np.testing.assert_array_equal(got["hidden"], ref["hidden"])
    np.testing.assert_array_equal(got["output"], ref["out"])
    # the device: several targets per neuron allowed for the probe (Xylo's configuration holds one)
    p = _device(spec, tmp_path, "probe", ["hardware.alias_targets=4"])
    for k in KERNELS:
        one = run_program(p, x.astype(np.float64), 1, 2, k)  # step 0 alone: the counts of that step
        np.testing.assert_array_equal(one.hidden_spikes, ref["hidden"][:, 0].sum(axis=0), err_msg=k)
        act = run_program(p, x.astype(np.float64), 4, 2, k)
        np.testing.assert_array_equal(act.hidden_spikes, ref["hidden"].sum(axis=(0, 1)), err_msg=k)
        # what left through W_out (weight 1 from every neuron): the output's synaptic current
        np.testing.assert_array_equal(act.out_isyn[:, 0], _isyn_out(ref["hidden"]), err_msg=k)


def _isyn_out(hidden: np.ndarray) -> np.ndarray:
    """The probe's output synaptic current after the last step (dash_syn_out = 1): the hidden
    spikes summed through unit weights, one step late, decayed as Xylo decays."""
    i = np.zeros(hidden.shape[0], np.int64)
    prev = np.zeros(hidden.shape[0], np.int64)
    for t in range(hidden.shape[1]):
        i = i + prev
        i = i - np.where((i > 0) & ((i >> 1) == 0), 1, i >> 1)
        prev = hidden[:, t].sum(axis=1)
    return i


def random_aliases(seed: int, n_hid: int, pairs: int, max_targets: int = 3) -> list[list[int]]:
    """A random alias table: forward and backward pairs, chains, cycles, self-aliases and
    several targets per neuron."""
    rng = np.random.default_rng(seed)
    table: list[list[int]] = [[] for _ in range(n_hid)]
    for _ in range(pairs):
        src = int(rng.integers(n_hid))
        if len(table[src]) < max_targets:
            table[src].append(int(rng.integers(n_hid)))
    return table


#: Random networks (``random_spec``) with random alias tables; inputs sparse enough that no
#: synaptic state nears the 16-bit range (the premise of the comparison: XyloSim saturates
#: after each event, hwmap after each step's sum, :mod:`hwmap_digital_snn.simulator`).
RANDOM: dict[str, dict[str, Any]] = {
    "residual-like 0..19 -> 20..39": dict(seed=0, table=[[j + 20] if j < 20 else [] for j in range(40)]),
    "random table, chains and cycles": dict(seed=1, table=random_aliases(11, 40, 25), density=0.05),
    "random table, one synapse": dict(seed=1, table=random_aliases(12, 40, 25), n_syn=1, density=0.05),
    "random table, feed-forward": dict(seed=1, table=random_aliases(13, 40, 25), recurrent=False, density=0.05),
}


def _random_case(case: str) -> tuple[dict[str, Any], np.ndarray]:
    c = dict(RANDOM[case])
    table = c.pop("table")
    density = c.pop("density", 0.12)
    seed = c["seed"]
    spec = random_spec(**c)
    spec["aliases"] = table
    rng = np.random.default_rng(200 + seed)
    x = (rng.random((3, 80, 16)) < density).astype(np.int64)
    return spec, x


@pytest.mark.parametrize("case", list(RANDOM))
def test_random_alias_tables_spike_for_spike(case: str, tmp_path: Path) -> None:
    spec, x = _random_case(case)
    ref = xylosim_record(spec, x)
    assert ref["isyn_max"] < 2**15 - 1, "premise: no synaptic state reaches the 16-bit rail"
    assert ref["out"].sum() > 0 and ref["hidden"].max() >= 2, "weak check: silent or no multi-spike"
    plain = xylosim_record({**spec, "aliases": [[] for _ in range(40)]}, x)
    assert not np.array_equal(plain["hidden"], ref["hidden"]), "weak check: the aliases change nothing"
    g = load_model(str(save_xylo_json(spec, tmp_path / "r.xylo.json")))
    got = run(g, {"input": x.astype(np.float32)}, collect=True)
    np.testing.assert_array_equal(got["hidden"], ref["hidden"])
    np.testing.assert_array_equal(got["output"], ref["out"])
    p = _device(spec, tmp_path, "rand", ["hardware.alias_targets=3"])
    assert len(p.aliases) == sum(len(t) for t in spec["aliases"])
    acts = {k: run_program(p, x.astype(np.float64), x.shape[1], x.shape[0], k) for k in KERNELS}
    for k, act in acts.items():
        np.testing.assert_array_equal(act.out_spikes, ref["out"], err_msg=k)
        np.testing.assert_array_equal(act.hidden_spikes, ref["hidden"].sum(axis=(0, 1)), err_msg=k)
        np.testing.assert_array_equal(act.hidden_active, np.count_nonzero(ref["hidden"], axis=(0, 1)), err_msg=k)
    for f in dataclasses.fields(acts["numpy"]):  # the two simulators, bit-identical
        for k, act in acts.items():
            np.testing.assert_array_equal(getattr(act, f.name), getattr(acts["numpy"], f.name), err_msg=f"{k} {f.name}")


def test_rockpools_residual_network_runs_as_rockpools_xylosim(tmp_path: Path) -> None:
    """Rockpool's ``Residual`` block, mapped by Rockpool's Audio 2 mapper (its bypass as
    aliases), quantized by ``channel_quantize``; Rockpool's ``XyloSim.from_specification``
    against hwmap's compiled bitstream, spike for spike."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("rockpool")
    import warnings

    from xylo_specs import import_rockpool_xylo

    audio2, _ = import_rockpool_xylo()
    from rockpool.nn.combinators import Residual, Sequential  # type: ignore[import-untyped]
    from rockpool.nn.modules import LIFTorch, LinearTorch  # type: ignore[import-untyped]
    from rockpool.transform.quantize_methods import channel_quantize  # type: ignore[import-untyped]

    torch.manual_seed(0)
    lin = lambda a, b: LinearTorch((a, b), has_bias=False)  # noqa: E731
    net = Sequential(lin(16, 32), LIFTorch(32, dt=1e-3), Residual(lin(32, 32), LIFTorch(32, dt=1e-3)), lin(32, 8),
                     LIFTorch(8, dt=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = audio2.mapper(net.as_graph())
        spec.update(channel_quantize(**spec))
    spec = {k: v for k, v in spec.items() if k != "mapped_graph"}
    assert spec["aliases"][:32] == [[32 + j] for j in range(32)] and not any(spec["aliases"][32:])
    p = _device(spec, tmp_path, "residual")
    assert p.n_hid == 64 and p.aliases.tolist() == [[j, 32 + j] for j in range(32)]
    rng = np.random.default_rng(0)
    x = (rng.random((2, 100, 16)) < 0.08).astype(np.int64)
    for b in range(x.shape[0]):
        sim = audio2.XyloSim.from_specification(**spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _, rec = sim(x[b], record=True)
        assert int(np.abs(np.asarray(rec["Isyn"])).max()) < 2**15 - 1, "premise: no state reaches the 16-bit rail"
        for k in KERNELS:
            act = run_program(p, x[b:b + 1].astype(np.float64), x.shape[1], 1, k)
            np.testing.assert_array_equal(act.out_spikes[0], np.asarray(out), err_msg=k)
            np.testing.assert_array_equal(act.hidden_spikes, np.asarray(rec["Spikes"]).sum(axis=0), err_msg=k)
        assert np.asarray(out).sum() > 0, "weak check: silent outputs"


def test_alias_rules(tmp_path: Path) -> None:
    spec = probe_spec([[1, 3], [], [2], []])
    g = load_model(str(save_xylo_json(spec, tmp_path / "a.xylo.json")))
    legal = plugin.hwmap_legalize(g, load_target("digital_snn:xylo-audio2"))
    found = {v.rule: v for v in legal.violations}
    assert set(found) == {"alias_targets"} and "neuron 0 has 2" in found["alias_targets"].message
    assert found["alias_targets"].node == "hidden"
    legal = plugin.hwmap_legalize(g, load_target("digital_snn:xylo-audio2", ["hardware.alias_targets=0"]))
    assert {v.rule for v in legal.violations} == {"aliasing"}
    # aliases on the output layer: the device's output neurons have none
    out = next(n for n in g.nodes if n.name == "output")
    out.params["aliases"] = np.array([[0, 0]], np.float32)
    legal = plugin.hwmap_legalize(g, load_target("digital_snn:xylo-audio2", ["hardware.alias_targets=2"]))
    assert {v.rule for v in legal.violations} == {"alias_outputs"}


def test_estimate_counts_alias_operations(tmp_path: Path) -> None:
    spec, x = _random_case("residual-like 0..19 -> 20..39")
    path = save_xylo_json(spec, tmp_path / "e.xylo.json")
    t = load_target("digital_snn:xylo-audio2")
    legal = plugin.hwmap_legalize(load_model(str(path)), t)
    m = plugin.hwmap_map(legal.graph, t)
    from hwmap_digital_snn.estimate import estimate

    act = run_program(m.program, x.astype(np.float64), x.shape[1], x.shape[0])
    activity = {"samples": x.shape[0], "steps": x.shape[1], **{k: getattr(act, k).tolist() for k in (
        "input_active", "hidden_active", "hidden_spikes", "output_spikes", "alias_active")}}
    k = estimate(m, t, activity)
    ops = float(act.alias_active.sum()) / x.shape[0]
    assert k.resources["alias_pairs"] == 20 and ops > 0
    assert k.resources["alias_ops_per_inference"] == pytest.approx(ops)
    # the cycles charge them: the same activity without aliases costs cycles_per_alias less per operation
    k0 = estimate(m, t, {**activity, "alias_active": [0.0] * 20})
    per_op = t.config_as(DigitalSNNConfig).hardware.cycles_per_alias
    diff = (k.resources["cycles_per_step"] - k0.resources["cycles_per_step"]) * x.shape[1]
    assert per_op > 0 and diff == pytest.approx(ops * per_op)


@pytest.mark.parametrize("aliases, needle", [
    (np.array([[0, 4]], np.float32), "holds 4.0: neuron indices are whole numbers from 0 to 3"),
    (np.array([[0, 1.5]], np.float32), "holds 1.5"),
    (np.array([0, 1], np.float32), "must be [pairs, 2]"),
])
def test_the_op_refuses_bad_alias_tables(aliases: np.ndarray, needle: str, tmp_path: Path) -> None:
    from hwmap import GraphError

    g = load_model(str(save_xylo_json(probe_spec([[], [], [], []]), tmp_path / "b.xylo.json")))
    hidden = next(n for n in g.nodes if n.name == "hidden")
    hidden.params["aliases"] = aliases
    with pytest.raises(GraphError, match="hidden") as e:
        g.validate()
        run(g, {"input": np.zeros((1, 2, 4), np.float32)})
    assert needle in str(e.value)
