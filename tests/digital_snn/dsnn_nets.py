"""Small spiking networks for the digital_snn tests, and the layer-by-layer integer reference.

The networks are hwmap graphs of Gemm + LIF nodes (as the NIR frontend gives them): a
feed-forward stack, a residual block (an Add of a bypass and the main path) and variants that
break one design rule each. :func:`reference_graph` rebuilds a mapped program layer by layer
as a graph of hwmap ops (Gemm, Delay for the device's one-step lag between layers, Add,
``LIFBitshift``) that :func:`hwmap.execute.run` runs: the integer reference the simulator must
equal spike for spike. :func:`reference_numpy` is the same reference written out in numpy,
for networks with recurrent weights (which an acyclic graph cannot hold)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmap.graph import Graph, Node, Tensor
from hwmap.ops import get_op
from hwmap.ops.bitshift import bitshift_decay

DT = 1e-3


def graph_from(nodes: list[Node], inputs: dict[str, tuple[int, ...]], outputs: list[str], name: str = "g") -> Graph:
    tensors = {k: Tensor(k, s) for k, s in inputs.items()}
    for n in nodes:
        for t, s in zip(n.outputs, get_op(n.op).infer(n, [tensors[t].shape for t in n.inputs])):
            tensors[t] = Tensor(t, s)
    return Graph(name, list(inputs), outputs, nodes, tensors, {}).validate()


def lif(name: str, inp: str, out: str, size: int, rng: np.random.Generator, **over: Any) -> Node:
    params = {"tau": rng.uniform(2e-3, 8e-3, size), "r": np.ones(size), "v_leak": np.zeros(size),
              "v_threshold": rng.uniform(0.5, 1.5, size)}
    params.update(over.pop("params", {}))
    attrs = {"dt": DT, "reset": "subtract", **over}
    return Node(name, "LIF", [inp], [out], attrs, {k: np.asarray(v, np.float32) for k, v in params.items()})


def gemm(name: str, inp: str, out: str, n_in: int, n_out: int, rng: np.random.Generator, scale: float = 8.0,
         bias: bool = True, sparsity: float = 0.0) -> Node:
    w = rng.normal(0, scale / np.sqrt(n_in), (n_out, n_in))
    if sparsity:
        w *= rng.random(w.shape) >= sparsity
    params = {"B": w.astype(np.float32)}
    if bias:
        params["C"] = rng.normal(0, 0.1, n_out).astype(np.float32)
    return Node(name, "Gemm", [inp], [out], {"transB": 1}, params)


def feed_forward(sizes: list[int], seed: int = 0, params: dict[str, Any] | None = None, **lif_over: Any) -> Graph:
    """``x → (Gemm → LIF)*``, the last LIF the output."""
    rng = np.random.default_rng(seed)
    nodes: list[Node] = []
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        nodes += [gemm(f"fc{i}", prev, f"c{i}", a, b, rng),
                  lif(f"lif{i}", f"c{i}", f"s{i}", b, rng, params=(params if i == 0 else {}) or {}, **lif_over)]
        prev = f"s{i}"
    return graph_from(nodes, {"x": (1, sizes[0])}, [prev], name=f"ff{'-'.join(map(str, sizes))}")


def residual(n_in: int = 6, width: int = 12, n_out: int = 4, seed: int = 0) -> Graph:
    """``x → fc0 → lif0 → fc1 → lif1 → (fc2(lif1) + skip(lif0)) → lif2 → fc3 → lif3``."""
    rng = np.random.default_rng(seed)
    nodes = [gemm("fc0", "x", "c0", n_in, width, rng), lif("lif0", "c0", "s0", width, rng),
             gemm("fc1", "s0", "c1", width, width, rng), lif("lif1", "c1", "s1", width, rng),
             gemm("fc2", "s1", "c2", width, width, rng), gemm("skip", "s0", "k2", width, width, rng),
             Node("add", "Add", ["c2", "k2"], ["a2"], {}, {}), lif("lif2", "a2", "s2", width, rng),
             gemm("fc3", "s2", "c3", width, n_out, rng), lif("lif3", "c3", "s3", n_out, rng)]
    return graph_from(nodes, {"x": (1, n_in)}, ["s3"], name="residual")


def events(rng: np.random.Generator, batch: int, steps: int, n_in: int, top: int = 3) -> np.ndarray:
    return rng.integers(0, top + 1, (batch, steps, n_in)).astype(np.float32)


def _blocks(p: Any) -> list[tuple[str, str, np.ndarray, int]]:
    """``(src, dst, block dst×src, synapse)`` of every non-zero block of the program, by layer."""
    out = []
    hidden = [x for x in p.layers if not x.output]
    for dst in p.layers:
        cols = slice(dst.start, dst.stop)
        if not dst.output:
            for k in range(p.n_syn):
                b = p.w_in[:, cols, k].T
                if np.any(b):
                    out.append(("input", dst.name, b, k))
        for src in hidden:
            rows = slice(src.start, src.stop)
            blocks = [p.w_out[rows, cols].T] if dst.output else [p.w_rec[rows, cols, k].T for k in range(p.n_syn)]
            for k, b in enumerate(blocks):
                if np.any(b):
                    out.append((src.name, dst.name, b, k))
    return out


def reference_graph(p: Any) -> Graph:
    """The program as a layer-by-layer graph of hwmap ops (module docstring); one synapse per
    neuron, bit-shift decays, no weight shifts."""
    assert p.n_syn == 1 and p.decay == "bitshift" and not (p.shift_in or p.shift_rec or p.shift_out)
    nodes: list[Node] = []
    delayed: set[str] = set()
    for lay in p.layers:
        terms = []
        for i, (src, dst, b, _) in enumerate(x for x in _blocks(p) if x[1] == lay.name):
            inp = "x"
            if src != "input":
                inp = f"{src}.late"
                if src not in delayed:
                    nodes.append(Node(f"{src}.lag", "Delay", [f"{src}.s"], [inp], {"dt": 1.0},
                                      {"delay": np.ones(b.shape[1], np.float32)}))
                    delayed.add(src)
            nodes.append(Node(f"{lay.name}.w{i}", "Gemm", [inp], [f"{lay.name}.c{i}"], {"transB": 1},
                              {"B": b.astype(np.float32)}))
            terms.append(f"{lay.name}.c{i}")
        acc = terms[0]
        for i, t in enumerate(terms[1:]):
            nodes.append(Node(f"{lay.name}.add{i}", "Add", [acc, t], [f"{lay.name}.a{i}"], {}, {}))
            acc = f"{lay.name}.a{i}"
        sl = slice(lay.start, lay.stop)
        if lay.output:
            prm = {"dash_syn": p.out_dsyn[sl], "dash_mem": p.out_dmem[sl], "threshold": p.out_threshold[sl],
                   "bias": p.out_bias[sl]}
            spikes = p.output_spikes
        else:
            prm = {"dash_syn": p.hid_dsyn[sl, 0], "dash_mem": p.hid_dmem[sl], "threshold": p.hid_threshold[sl],
                   "bias": p.hid_bias[sl]}
            spikes = p.hidden_spikes
        nodes.append(Node(lay.name, "LIFBitshift", [acc], [f"{lay.name}.s"],
                          {"syn_bits": p.state_bits, "mem_bits": p.state_bits, "max_spikes": spikes},
                          {k: np.asarray(v, np.float32) for k, v in prm.items()}))
    outs = [f"{x.name}.s" for x in p.layers if x.output]
    return graph_from(nodes, {"x": (1, p.n_in)}, outs + [f"{x.name}.s" for x in p.layers if not x.output],
                      name="reference")


def reference_numpy(p: Any, x: np.ndarray) -> np.ndarray:
    """The same reference in numpy, layer by layer, recurrent blocks included: output spikes
    ``(N, T, n_out)``. Bit-shift decays, one saturation of each step's summed input."""
    n, steps, _ = x.shape
    lo, hi = -(2 ** (p.state_bits - 1)), 2 ** (p.state_bits - 1) - 1
    blocks = _blocks(p)
    state = {lay.name: {"i": np.zeros((n, lay.size, p.n_syn if not lay.output else 1), np.int64),
                        "v": np.zeros((n, lay.size), np.int64), "s": np.zeros((n, lay.size), np.int64)}
             for lay in p.layers}
    out = np.zeros((n, steps, sum(x_.size for x_ in p.layers if x_.output)), np.int64)
    for t in range(steps):
        prev = {k: v["s"].copy() for k, v in state.items()}
        for lay in p.layers:
            st = state[lay.name]
            xin = np.zeros_like(st["i"])
            for src, dst, b, k in blocks:
                if dst == lay.name:
                    s = x[:, t].astype(np.int64) if src == "input" else prev[src]
                    xin[:, :, k] += s @ b.T.astype(np.int64)
            sl = slice(lay.start, lay.stop)
            if lay.output:
                dsyn, dmem, thr, bias, top = (p.out_dsyn[sl, None], p.out_dmem[sl], p.out_threshold[sl],
                                              p.out_bias[sl], p.output_spikes)
            else:
                dsyn, dmem, thr, bias, top = (p.hid_dsyn[sl], p.hid_dmem[sl], p.hid_threshold[sl], p.hid_bias[sl],
                                              p.hidden_spikes)
            i = bitshift_decay(np.clip(st["i"] + xin, lo, hi), dsyn)
            v = np.clip(bitshift_decay(st["v"], dmem) + i.sum(axis=2) + bias, lo, hi)
            s = np.where(v >= thr, np.minimum(v // thr, top), 0)
            st.update(i=i, v=v - s * thr, s=s)
            if lay.output:
                out[:, t, sl] = s
    return out
