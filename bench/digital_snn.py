"""Benchmark: the digital_snn simulator's throughput over XyloSim's, bit-exact.

The network is the issue's: 16 inputs, a hidden layer of 500 neurons, a second of 492 (the
two fill a 992-neuron population, ``W_rec`` holding the dense 500 → 492 block), 8 outputs:
1000 neurons. Weights are seeded random int8, thresholds and decays chosen so that the
hidden neurons fire sparsely, as a trained network does. The input is seeded random spikes.

1. XyloSim (the ``xylosim`` package's ``XyloLayer``, which Rockpool's ``syns61201.XyloSim``
   wraps; it simulates one input at a time): one input of 1000 steps.
2. hwmap's simulator (:func:`hwmap_digital_snn.simulator.run_program`) on a batch of 64
   inputs of 1000 steps, in one call, twice: its numpy path (the reference) and its compiled
   numba kernel (:mod:`hwmap_digital_snn.kernel`; compiled once before timing, cached on disk).

Throughput is neuron-steps per second (1000 neurons × steps × inputs over the wall time,
the best of ``--repeat`` runs). Goal (issue 9): at least 20× XyloSim's, still bit-exact;
the output spikes of the inputs XyloSim also ran are compared spike for spike, and the two
paths' spikes with each other. The machine's other load moves all three numbers; the
ratios, measured in one run, move less. Exit code 0
whatever the numbers: this prints, it does not judge.

    python bench/digital_snn.py [--repeat 3] [--batch 64] [--steps 1000] [--check 4]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _timing import best_of

from hwmap_digital_snn.program import Layer, Program
from hwmap_digital_snn.simulator import run_program

N_IN, H1, H2, N_OUT = 16, 500, 492, 8


def network(seed: int = 0) -> Program:
    """The 16-500-492-8 network as a device program (module docstring)."""
    rng = np.random.default_rng(seed)
    n_hid = H1 + H2
    w_in = np.zeros((N_IN, n_hid, 1), np.int64)
    w_in[:, :H1, 0] = rng.integers(-40, 80, (N_IN, H1))
    w_rec = np.zeros((n_hid, n_hid, 1), np.int64)
    w_rec[:H1, H1:, 0] = rng.integers(-60, 64, (H1, H2))
    w_out = np.zeros((n_hid, N_OUT), np.int64)
    w_out[H1:, :] = rng.integers(-60, 80, (H2, N_OUT))
    return Program(
        n_in=N_IN, n_hid=n_hid, n_out=N_OUT, n_syn=1, state_bits=16, decay="bitshift", decay_bits=4,
        hidden_spikes=31, output_spikes=1, input_events=15, weight_bits=8, w_in=w_in, w_rec=w_rec, w_out=w_out,
        hid_threshold=rng.integers(1500, 4000, n_hid), hid_bias=np.zeros(n_hid, np.int64),
        hid_dmem=rng.integers(1, 5, n_hid), hid_dsyn=rng.integers(1, 4, (n_hid, 1)),
        out_threshold=rng.integers(400, 1200, N_OUT), out_bias=np.zeros(N_OUT, np.int64),
        out_dmem=np.full(N_OUT, 3), out_dsyn=np.full(N_OUT, 2),
        layers=[Layer("hidden1", False, 0, H1, 0), Layer("hidden2", False, H1, n_hid, 1),
                Layer("out", True, 0, N_OUT, 2)])



def xylosim_layer(p: Program) -> tuple[Any, Any]:
    import xylosim.v2 as xs  # type: ignore[import-untyped]

    def synapses(w3: np.ndarray) -> list[list[Any]]:
        return [[xs.XyloSynapse(int(j), int(k), int(w3[i, j, k])) for j, k in zip(*np.nonzero(w3[i]))]
                for i in range(w3.shape[0])]

    wiring: Any = (synapses(p.w_in), synapses(p.w_rec), synapses(p.w_out[:, :, None]), [[] for _ in range(p.n_hid)])
    layer = xs.XyloLayer(*wiring, p.hid_threshold.tolist(), p.out_threshold.tolist(), False, p.hid_bias.tolist(),
                         p.out_bias.tolist(), 0, 0, 0, p.hid_dmem.tolist(), p.out_dmem.tolist(),
                         [[int(d), 0] for d in p.hid_dsyn[:, 0]], [[int(d)] for d in p.out_dsyn], "bench")
    return layer, wiring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    ap.add_argument("--batch", type=int, default=64, help="inputs hwmap simulates in one call (default 64)")
    ap.add_argument("--steps", type=int, default=1000, help="time steps per input (default 1000)")
    ap.add_argument("--check", type=int, default=4, help="inputs XyloSim also runs for the bit-exact check (default 4)")
    args = ap.parse_args()
    p = network()
    neurons = p.n_hid + p.n_out
    rng = np.random.default_rng(1)
    x = (rng.random((args.batch, args.steps, N_IN)) < 0.3).astype(np.int64) * rng.integers(1, 3, (args.batch,
                                                                                                 args.steps, N_IN))
    from hwmap_digital_snn.kernel import AVAILABLE, REASON

    xf = x.astype(np.float64)
    rates: dict[str, float] = {}
    acts: dict[str, Any] = {}
    kernels = ["numpy"] + (["numba"] if AVAILABLE else [])
    if AVAILABLE:
        run_program(p, xf[:1, :2], 2, 1, "numba")  # compile (or load the cached compilation) before timing
    for k in kernels:
        t, acts[k] = best_of(lambda: run_program(p, xf, args.steps, args.batch, k), args.repeat)
        rates[k] = neurons * args.steps * args.batch / t
        if k == kernels[0]:
            hidden_rate = float(acts[k].hidden_active.sum()) / (args.batch * args.steps * p.n_hid)
            print(f"network 16-500-492-8 ({neurons} neurons), {args.steps} steps, hidden neurons active in "
                  f"{hidden_rate:.1%} of their steps")
        print(f"hwmap digital_snn simulator, {k}: batch {args.batch} in {t:.3f} s = {rates[k] / 1e6:.2f} M "
              "neuron-steps/s")
    if not AVAILABLE:
        print(f"numba kernel not run: {REASON}")
    else:
        same = np.array_equal(acts["numpy"].out_spikes, acts["numba"].out_spikes) and \
            np.array_equal(acts["numpy"].hidden_spikes, acts["numba"].hidden_spikes)
        print(f"numpy and numba paths: output and hidden spikes {'identical' if same else 'DIFFER'}")
    try:
        layer, wiring = xylosim_layer(p)
    except ImportError:
        print("xylosim is not installed: no comparison")
        return

    def one() -> np.ndarray:
        layer.reset_all()
        return np.array(layer.evolve(x[0].tolist()))

    t_xs, _ = best_of(one, args.repeat)
    xs_rate = neurons * args.steps / t_xs
    print(f"XyloSim (xylosim.v2.XyloLayer): 1 input in {t_xs:.3f} s = {xs_rate / 1e6:.2f} M neuron-steps/s")
    for k in kernels:
        exact = all(np.array_equal(np.array((layer.reset_all(), layer.evolve(x[b].tolist()))[1]), acts[k].out_spikes[b])
                    for b in range(min(args.check, args.batch)))
        print(f"throughput ratio hwmap ({k}) / XyloSim: {rates[k] / xs_rate:.1f}x (goal: at least 20x); output "
              f"spikes of {min(args.check, args.batch)} inputs {'identical' if exact else 'DIFFER'} (goal: identical)")


if __name__ == "__main__":
    main()
