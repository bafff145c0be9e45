"""The compiled numba kernel against the numpy path (the reference) of the simulator: the
same spikes, output currents and activity counts on random programs: several spikes per
step, states saturating, two synapses, weight shifts, both decay forms, sparse and dense
rows, int32 and int64 sums."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from hwmap_digital_snn import kernel, simulator
from hwmap_digital_snn.program import Layer, Program
from hwmap_digital_snn.simulator import run_program

pytestmark = pytest.mark.skipif(not kernel.AVAILABLE, reason=f"numba kernel unavailable: {kernel.REASON}")


def random_program(seed: int, n_in: int = 12, n_hid: int = 50, n_out: int = 6, n_syn: int = 2, density: float = 0.3,
                   shifts: tuple[int, int, int] = (0, 1, 0), decay: str = "bitshift", loud: bool = False,
                   aliases: int = 0) -> Program:
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, n_hid, (aliases, 2))
    def w(*s: int) -> np.ndarray:
        return rng.integers(-128, 128, s) * (rng.random(s) < density)

    decay_bits = 4 if decay == "bitshift" else 8
    top = 15 if decay == "bitshift" else 255
    thr = (50, 400) if loud else (800, 4000)
    return Program(
        n_in=n_in, n_hid=n_hid, n_out=n_out, n_syn=n_syn, state_bits=16, decay=decay, decay_bits=decay_bits,
        hidden_spikes=31, output_spikes=int(rng.integers(1, 4)), input_events=15, weight_bits=8, w_in=w(n_in, n_hid, n_syn),
        w_rec=w(n_hid, n_hid, n_syn), w_out=w(n_hid, n_out), hid_threshold=rng.integers(*thr, n_hid),
        hid_bias=rng.integers(-50, 50, n_hid), hid_dmem=rng.integers(0, min(top, 6) + 1, n_hid),
        hid_dsyn=rng.integers(0, min(top, 6) + 1, (n_hid, n_syn)), out_threshold=rng.integers(*thr, n_out),
        out_bias=rng.integers(-50, 50, n_out), out_dmem=rng.integers(0, 5, n_out), out_dsyn=rng.integers(0, 5, n_out),
        shift_in=shifts[0], shift_rec=shifts[1], shift_out=shifts[2], layers=[Layer("h", False, 0, n_hid, 0),
                                                                              Layer("o", True, 0, n_out, 1)],
        aliases=pairs[np.argsort(pairs[:, 0], kind="stable")])


CASES: dict[str, dict[str, Any]] = {
    "two synapses, bit shift": dict(seed=0),
    "one synapse, loud (many spikes, saturation)": dict(seed=1, n_syn=1, loud=True),
    "multiplicative decay": dict(seed=2, decay="multiplicative"),
    "dense rows, large shifts (int64 sums)": dict(seed=3, density=0.9, shifts=(7, 15, 15), loud=True),
    "very sparse rows": dict(seed=4, density=0.03, n_hid=200),
    "aliases: forward, backward, self, chains, several targets": dict(seed=7, loud=True, aliases=60),
}


@pytest.mark.parametrize("case", list(CASES))
def test_numba_equals_numpy(case: str) -> None:
    p = random_program(**CASES[case])
    rng = np.random.default_rng(7)
    x = (rng.random((5, 70, p.n_in)) < 0.4) * rng.integers(1, 16, (5, 70, p.n_in))
    a = run_program(p, x.astype(np.float64), 70, 5, "numpy")
    b = run_program(p, x.astype(np.float64), 70, 5, "numba")
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(b, f.name), getattr(a, f.name), err_msg=f.name)
    assert a.hidden_spikes.sum() > 0 and a.out_spikes.sum() > 0, "weak check: silent"
    if CASES[case].get("aliases"):
        assert a.alias_active.sum() > 0, "weak check: aliases idle"
    if CASES[case].get("loud"):
        assert (a.hidden_spikes / np.maximum(a.hidden_active, 1)).max() > 2, "weak check: no multi-spike"


def test_saturation_is_reached_and_agrees() -> None:
    """A program whose synaptic states hit the 16-bit bounds: both paths clip identically."""
    p = random_program(5, n_syn=1, density=1.0, shifts=(7, 7, 7), loud=True)
    p.hid_dsyn[:] = 15
    x = np.full((2, 30, p.n_in), 15.0)
    a = run_program(p, x, 30, 2, "numpy")
    b = run_program(p, x, 30, 2, "numba")
    np.testing.assert_array_equal(a.out_spikes, b.out_spikes)
    np.testing.assert_array_equal(a.hidden_spikes, b.hidden_spikes)
    assert np.abs(np.asarray(p.w_in) << 7).sum(axis=0).max() * 15 > 2**15  # one step's input leaves the range


def test_rows_store_dense_spans_and_sparse_entries() -> None:
    w = np.zeros((3, 10), np.int64)
    w[0, 2:6] = [1, 2, 0, 3]  # dense span 2..5
    w[1, [0, 9]] = [4, -5]  # sparse
    ptr, col, val, first = kernel.rows(w, 1)
    assert first.tolist() == [2, -1, -1] and ptr.tolist() == [0, 4, 6, 6]
    assert val.tolist() == [2, 4, 0, 6, 8, -10] and col[4:6].tolist() == [0, 9]


def test_encoded_input_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    p = random_program(6)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 3, (4, 25, p.n_in)).astype(np.float64)
    a = run_program(p, lambda t: frames[:, t], 25, 4, "numpy")
    b = run_program(p, lambda t: frames[:, t], 25, 4)
    np.testing.assert_array_equal(a.out_spikes, b.out_spikes)
    assert simulator.default_kernel() == "numba"
    monkeypatch.setattr(kernel, "AVAILABLE", False)
    assert simulator.default_kernel() == "numpy"
