"""The fused run (``backend="numba"``): a whole ``advance`` in one compiled call
(:func:`.fused_kernels.run`) for the networks it covers, the nengo scripts of the benchmark's
kind: one sample, every population LIF, hosts that are probes or nodes without input, links
without synapse or through a Lowpass.

Node callables still run on the host, each once per step in step order, before the compiled
call (as nengo-loihi's ``precompute=True`` runs its host nodes ahead of the chip when nothing
flows back from the chip to the host): a node without input depends on time only. Networks
outside this set run step by step (:mod:`.compiled`).

The runner's arrays (outputs, states, filter states, spike counts) become views into the
fused buffers, so they stay current between calls and ``backend`` paths agree on where state
lives. Not bit-identical to the numpy reference (``expm1``/``log1p`` by series or the C
library, another summation order; see :mod:`.fused_kernels`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .neurons import LIF

__all__ = ["Fused", "covers", "warm_up"]


def covers(r: Any) -> bool:
    """Whether runner ``r`` (a :class:`.simulator.Runner`) can run fused."""
    if r.rate or r.B != 1:
        return False
    if any(type(nt) is not LIF for nt in r.neuron.values()):
        return False
    for h in r.d.hosts:
        if h.kind == "probe":
            continue
        if h.kind != "node" or h.size_in != 0:
            return False
    pops = r.pops
    for i, link in enumerate(r.d.links):
        if i in r.filters and r.filters[i].kind != "onex":
            return False
        if link.post in pops and link.port not in ("decoded", "neurons"):
            return False
        if link.post in pops and link.port == "decoded" and link.weights.shape[0] != pops[link.post].dims:
            return False
    return True


class Fused:
    """Runner ``r``'s network laid out in flat buffers for :func:`.fused_kernels.run`."""

    def __init__(self, r: Any) -> None:
        from . import fused_kernels

        self.r, self.kernel = r, fused_kernels.run
        d = r.d
        pops = d.populations
        self.node_hosts = [h for h in d.hosts if h.kind == "node"]
        self.probe_hosts = [h for h in d.hosts if h.kind == "probe"]
        # sig: outputs of populations and nodes, then every filtered link's state
        off, size = {}, 0
        for name, n in [(p.name, p.n) for p in pops] + [(h.name, h.size_out) for h in self.node_hosts]:
            off[name], size = size, size + n
        l_x = np.zeros(len(d.links), np.int64)
        for i, link in enumerate(d.links):
            if i in r.filters:
                l_x[i], size = size, size + link.weights.shape[0]
        sig = np.zeros(size)
        for name in off:  # current values kept (a runner may have stepped already)
            if name in r.out:
                sig[off[name]:off[name] + r.out[name].size] = r.out[name].reshape(-1)
            r.out[name] = sig[off[name]:off[name] + (r.pops[name].n if name in r.pops else
                                                    r.hosts[name].size_out)].reshape(1, -1)
        for i, f in r.filters.items():
            m = d.links[i].weights.shape[0]
            sig[l_x[i]:l_x[i] + m] = f.X.reshape(-1)
            f.X = sig[l_x[i]:l_x[i] + m].reshape(1, 1, m)
            r.delayed[i] = f.X[0]
        # weights (transposed, pre × post) and per-population parameters, fan-outs
        parts: list[np.ndarray] = []
        at = 0

        def put(a: np.ndarray) -> int:
            nonlocal at
            parts.append(np.ascontiguousarray(a, np.float64).reshape(-1))
            at += parts[-1].size
            return at - parts[-1].size

        l_w = np.array([put(r.WT[i]) for i in range(len(d.links))], np.int64)
        self.wt = np.concatenate(parts) if parts else np.zeros(0)
        parts, at = [], 0
        p_enc = np.array([put(p.encoders) for p in pops], np.int64)
        p_bias = np.array([put(p.bias) for p in pops], np.int64)
        p_gain = np.array([put(p.gain) for p in pops], np.int64)
        l_fanout = np.array([put(r.fanout[i]) for i in range(len(d.links))], np.int64)
        self.par = np.concatenate(parts) if parts else np.zeros(0)
        # state and spike counts: views replace the runner's arrays
        self.st = np.zeros(2 * sum(p.n for p in pops))
        self.spikes = np.zeros(sum(p.n for p in pops))
        p_v, p_rt, p_cnt = (np.zeros(len(pops), np.int64) for _ in range(3))
        s = c = 0
        for q, p in enumerate(pops):
            st = r.state[p.name]
            for key, arr in (("voltage", p_v), ("refractory_time", p_rt)):
                arr[q] = s
                self.st[s:s + p.n] = st[key].reshape(-1)
                st[key] = self.st[s:s + p.n].reshape(1, -1)
                s += p.n
            p_cnt[q] = c
            self.spikes[c:c + p.n] = r.spikes[p.name]
            r.spikes[p.name] = self.spikes[c:c + p.n]
            c += p.n
        dt = d.dt
        p_f = np.zeros((len(pops), 6))
        for q, p in enumerate(pops):
            nt: Any = r.neuron[p.name]
            p_f[q] = (nt.tau_rc, nt.tau_ref, nt.min_voltage, nt.amplitude / dt, math.expm1(-dt / nt.tau_rc),
                      dt / r.units[p.name] if r.units[p.name] else 0.0)
        # the links into each receiving port, as ranges of links_in
        links_in: list[int] = []

        def span(name: str, port: str | None) -> tuple[int, int]:
            start = len(links_in)
            links_in.extend(i for i, link in enumerate(d.links) if link.post == name and port in (None, link.port))
            return start, len(links_in)

        p_dec = np.array([span(p.name, "decoded") for p in pops], np.int64).reshape(-1, 2)
        p_neu = np.array([span(p.name, "neurons") for p in pops], np.int64).reshape(-1, 2)
        pr_ptr = np.array([span(h.name, None) for h in self.probe_hosts], np.int64).reshape(-1, 2)
        self.pr_off = np.cumsum([0] + [h.size_in for h in self.probe_hosts])
        index = {p.name: q for q, p in enumerate(pops)}
        nindex = {h.name: q for q, h in enumerate(self.node_hosts)}
        self.n_node = np.cumsum([0] + [h.size_out for h in self.node_hosts])
        ops = [(0, index[n]) if n in index else (1, nindex[n]) for n in r.seq if n in index or n in nindex]
        pre_off = [off.get(link.pre, 0) for link in d.links]
        self.tables = (
            self.par, self.st, np.array(ops, np.int64).reshape(-1, 2),
            np.array([off[h.name] for h in self.node_hosts], np.int64),
            np.array([h.size_out for h in self.node_hosts], np.int64), self.n_node[:-1].astype(np.int64),
            np.array([p.n for p in pops], np.int64), np.array([p.dims for p in pops], np.int64),
            np.array([off[p.name] for p in pops], np.int64), p_enc, p_bias, p_gain, p_v, p_rt, p_f, p_dec, p_neu,
            pr_ptr, self.pr_off[:-1].astype(np.int64), np.array(links_in, np.int64),
            np.array(pre_off, np.int64), np.array([link.weights.shape[1] for link in d.links], np.int64),
            np.array([link.weights.shape[0] for link in d.links], np.int64), l_w,
            np.array([i in r.filters for i in range(len(d.links))], np.int64), l_x,
            np.array([r.filters[i].a if i in r.filters else 0.0 for i in range(len(d.links))]),
            np.array([r.filters[i].b if i in r.filters else 0.0 for i in range(len(d.links))]),
            l_fanout, np.array([r.units.get(link.pre, 0.0) for link in d.links]),
            np.array([index.get(link.pre, -1) for link in d.links], np.int64))
        self.sig, self.p_cnt, self.p_out = sig, p_cnt, np.array([off[p.name] for p in pops], np.int64)
        self.act, self.nact = np.zeros(len(self.spikes), np.int32), np.zeros(len(pops), np.int64)
        self.synops = np.zeros(len(d.links))

    def advance(self, steps: int) -> dict[str, np.ndarray]:
        """``steps`` more steps; the probes' records ``(steps, 1, size)``."""
        r, dt = self.r, self.r.d.dt
        for q, p in enumerate(r.d.populations):  # the spikes of the last step, whichever path ran it
            hit = np.flatnonzero(self.sig[self.p_out[q]:self.p_out[q] + p.n])
            self.act[self.p_cnt[q]:self.p_cnt[q] + hit.size], self.nact[q] = hit, hit.size
        nodes = np.zeros((steps, int(self.n_node[-1])))
        for q, h in enumerate(self.node_hosts):  # every callable, in step order, before the compiled run
            f = r.nodes.get(h.name)
            if f is None or h.size_out == 0:
                continue
            col = nodes[:, self.n_node[q]:self.n_node[q + 1]]
            ys = [f((r.k + j + 1) * dt) for j in range(steps)]
            arr = None
            if not any(y is None for y in ys):
                try:  # one conversion for all steps where every value has the node's size
                    arr = np.asarray(ys, np.float64)
                except (ValueError, TypeError):
                    pass
            if arr is not None and arr.size == steps * h.size_out:
                col[...] = arr.reshape(steps, h.size_out)
                continue
            for j, y in enumerate(ys):  # None (no output) or a value of the wrong size
                if y is None:
                    continue
                y = np.asarray(y, np.float64).reshape(-1)
                if y.size != h.size_out:
                    raise ValueError(f"node {h.name!r} returned {y.size} values, expected {h.size_out}")
                col[j] = y
        rec = np.zeros((steps, int(self.pr_off[-1])))
        count = int(r.measure)
        self.synops[:] = 0.0
        self.kernel(steps, dt, nodes, rec, self.sig, self.wt, *self.tables, count, self.spikes, self.p_cnt,
                    self.act, self.nact, self.synops)
        r.k += steps
        if count:
            for i, link in enumerate(r.d.links):
                if self.tables[-1][i] >= 0:
                    r.synops[link.post] += float(self.synops[i])
        return {h.name: rec[:, None, self.pr_off[q]:self.pr_off[q + 1]] for q, h in enumerate(self.probe_hosts)}


_WARM: list[bool] = []


def warm_up(runner: Any) -> None:
    """Compile (or load from numba's cache) the fused loop on a two-neuron network run by
    ``runner`` (the simulator's ``Runner`` class, passed in: this module does not import the
    simulator, which imports it), so that no run pays for it."""
    if _WARM:
        return
    _WARM.append(True)
    from .description import Description, Host, Link, Population

    two = np.full(2, 5.0)
    pop = Population("a", 2, 1, LIF().spec(), two, two, np.ones((2, 1)),
                     {"voltage": np.zeros(2), "refractory_time": np.array([0.0, 0.0015])})
    d = Description("warm", 0.001, 2, [pop], [Host("u", "node", 0, 1), Host("p", "probe", 0, 1)],
                    [Link("u>a", "u", "a", "decoded", np.ones((1, 1)), {"type": "Lowpass", "tau": 0.005}),
                     Link("a>p", "a", "p", "in", np.ones((1, 2)))])
    runner(d, nodes={"u": lambda t: 1.0}, backend="numba").advance(3)
