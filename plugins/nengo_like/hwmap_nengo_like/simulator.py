"""The simulator: runs a :class:`~.description.Description` (read back from the emitted files)
step by step, vectorized over neurons and batched over input samples.

Each step ``k`` (time ``t = k·dt``, ``k`` from 1, as nengo counts):

1. every object, in an order where the links without synapse run from earlier to later
   objects, takes its input: the sum of what its links with a synapse filtered at the
   previous step (nengo's one-step delay) and of ``W · out(pre)`` of its links without one,
   computed this step. A population's current is ``bias + scaled_encoders · decoded + gain ·
   neurons``; its neuron type steps (:mod:`.neurons`). An ``input`` host gives the encoded
   static input, a ``node`` host calls its callable on the host (``f(t)`` or ``f(t, x)``),
   an ``output`` host accumulates its readout, a ``probe`` host records what its links deliver
   this step (as nengo's probes sample);
2. the links with a synapse filter ``W · out(pre)`` (the update phase).

``backend="numba"`` (the default) runs, where it covers the network (one sample, LIF
populations, nodes without input, probes, Lowpass links: :mod:`.fused`), a whole ``advance``
in one compiled call, within 1e-12 of the numpy step (not bit-identical: ``expm1``/``log1p``
by series or the C library, not numpy's SIMD code; another summation order), spikes
identical; elsewhere the populations' steps and the Lowpass filters through compiled loops
bit-identical to numpy (:mod:`.compiled`). ``backend="numpy"`` runs the array operations of
:mod:`.neurons` and :mod:`.synapses`, the reference.

``rate=True`` runs the *rate network*: every spiking type replaced by its rate (a wrapper's
base type times its amplitude, LIF by LIFRate, SpikingRectifiedLinear by RectifiedLinear),
the reference the spiking network's accuracy over time is measured against.

Measured per population: spikes per neuron (summed over steps and samples) and synaptic
operations (counted at the receiving object): a spike costs the non-zero weights of its column in every outgoing link (for a
link into a population's decoded input, one per neuron of the post population: the weights
``encoders · W`` the cores hold); a graded input (direct encoding) costs its non-zero weights
every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .description import Description, Host, Link, Population
from .neurons import (LIF, LIFRate, NeuronType, RatesToSpikesNeuronType, RectifiedLinear, SpikingRectifiedLinear,
                      from_spec)
from .synapses import FilterStep, from_spec as synapse_from_spec

__all__ = ["Result", "Runner", "run", "simulate", "SLICE", "order", "BACKENDS"]

#: How a step runs: ``numba``, compiled loops (:mod:`.compiled`); ``numpy``, the reference
#: (array operations).
BACKENDS = ("numba", "numpy")

#: Samples simulated at once by the hook (bounded memory: every state is batch × neurons).
SLICE = 128


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    history: dict[str, np.ndarray] = field(default_factory=dict)
    probes: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    synops: dict[str, float] = field(default_factory=dict)
    steps: int = 0


class _RateOf(NeuronType):
    """The rate equivalent of a spiking type (its average output)."""

    def __init__(self, neuron: NeuronType) -> None:
        super().__init__()
        if isinstance(neuron, RatesToSpikesNeuronType):
            self.base, self.scale = neuron.base_type, neuron.amplitude
        elif isinstance(neuron, LIF):
            self.base, self.scale = LIFRate(neuron.tau_rc, neuron.tau_ref, neuron.amplitude), 1.0
        elif isinstance(neuron, SpikingRectifiedLinear):
            self.base, self.scale = RectifiedLinear(neuron.amplitude), 1.0
        else:
            self.base, self.scale = neuron, 1.0

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base.gain_bias(max_rates, intercepts)

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base.max_rates_intercepts(gain, bias)

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        self.base.step(dt, J, output)
        if self.scale != 1.0:
            output *= self.scale


def _unit(neuron: NeuronType) -> float:
    """The output of one spike (``amplitude``); 0 for rate types."""
    return float(getattr(neuron, "amplitude", 1.0)) if neuron.spiking else 0.0


def order(d: Description) -> list[str]:
    """The objects in an order where every link without synapse runs forward; ``ValueError``
    naming the objects of a cycle of such links."""
    names = [p.name for p in d.populations] + [h.name for h in d.hosts]
    deps: dict[str, set[str]] = {n: set() for n in names}
    for link in d.links:
        if link.synapse is None:
            deps[link.post].add(link.pre)
    out: list[str] = []
    done: set[str] = set()
    while len(out) < len(names):
        ready = [n for n in names if n not in done and deps[n] <= done]
        if not ready:
            raise ValueError("links without synapse form a cycle through " +
                             ", ".join(sorted(n for n in names if n not in done)))
        for n in ready:
            out.append(n)
            done.add(n)
    return out


def _encode(h: Host, x: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    enc = h.attrs.get("encoding", "direct")
    if enc == "direct":
        return x
    p = np.clip(x.astype(np.float64), 0.0, 1.0)
    if enc == "rate":
        acc = state.setdefault("acc", np.zeros_like(p)) + p
        z = acc >= 1.0
        state["acc"] = acc - z
        return z.astype(np.float64)
    if "gens" not in state:
        import hashlib

        seed = int(h.attrs.get("seed", 0))
        state["gens"] = [np.random.default_rng([seed, int.from_bytes(hashlib.blake2b(
            s.tobytes(), digest_size=8).digest(), "little")]) for s in np.ascontiguousarray(x, dtype=np.float32)]
    u = np.stack([g.random(x.shape[1:]) for g in state["gens"]]) if len(x) else np.zeros(x.shape)
    return (u < p).astype(np.float64)


class Runner:
    """A description being run: ``advance(steps)`` runs more steps, continuing from where the
    last call stopped (``nengo.Simulator.run`` may be called several times); ``backend``: one
    of :data:`BACKENDS`."""

    def __init__(self, d: Description, *, batch: int = 1, inputs: dict[str, np.ndarray] | None = None,
                 nodes: dict[str, Callable[..., Any]] | None = None, rate: bool = False, measure: bool = True,
                 backend: str = "numba") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
        self.d, self.B, self.rate, self.measure, self.backend = d, batch, rate, measure, backend
        self.inputs = inputs or {}
        self.nodes = nodes or {}
        B = batch
        self.pops = {p.name: p for p in d.populations}
        self.hosts = {h.name: h for h in d.hosts}
        self.neuron: dict[str, NeuronType] = {}
        self.state: dict[str, dict[str, Any]] = {}
        for p in d.populations:
            nt = from_spec(p.neuron, f"population {p.name!r}")
            if rate and nt.spiking:
                nt = _RateOf(nt)
            self.neuron[p.name] = nt
            st: dict[str, Any] = {}
            if not rate:
                base = {k[5:]: np.tile(v, (B, 1)) for k, v in p.state.items() if k.startswith("base.")}
                st = {k: np.tile(v, (B, 1)) for k, v in p.state.items() if not k.startswith("base.")}
                if isinstance(nt, RatesToSpikesNeuronType):
                    st["base_state"] = base
                if type(nt).__name__ in ("PoissonSpiking", "StochasticSpiking"):
                    st["rng"] = np.random.RandomState(p.seed)
            self.state[p.name] = st
        for h in d.hosts:
            if h.kind == "input" and h.name not in self.inputs:
                raise ValueError(f"input {h.name!r} not given")
        self.incoming: dict[str, list[tuple[int, Link]]] = {}
        for i, link in enumerate(d.links):
            self.incoming.setdefault(link.post, []).append((i, link))
        self.filters = {i: FilterStep(*synapse_from_spec(link.synapse).discretize(d.dt), (B, link.weights.shape[0]))
                        for i, link in enumerate(d.links) if link.synapse is not None}
        self.delayed = {i: np.zeros((B, link.weights.shape[0])) for i, link in enumerate(d.links) if i in self.filters}
        self.WT = {i: np.ascontiguousarray(link.weights.T) for i, link in enumerate(d.links)}
        self.fanout: dict[int, np.ndarray] = {}
        for i, link in enumerate(d.links):
            nz = link.weights != 0
            col = nz.sum(axis=0).astype(np.float64)
            if link.port == "decoded" and link.post in self.pops:
                col = np.where(nz.any(axis=0), float(self.pops[link.post].n), 0.0)
            self.fanout[i] = col
        self.encT = {p.name: p.encoders.T for p in d.populations if p.dims}
        self.neuron_port = {name: any(link.port == "neurons" for _, link in lst) for name, lst in self.incoming.items()}
        self.seq = order(d)
        self.sources: dict[tuple[str, str | None], list[tuple[int, bool, str]]] = {}
        for name, lst in self.incoming.items():
            for i, link in lst:
                for key in ((name, None), (name, link.port)):
                    self.sources.setdefault(key, []).append((i, i in self.filters, link.pre))
        self.out: dict[str, np.ndarray] = {}
        self.enc_state: dict[str, dict[str, Any]] = {h.name: {} for h in d.hosts}
        self.readout = {h.name: np.zeros((B, h.size_in)) for h in d.hosts if h.kind == "output"}
        self.spikes = {p.name: np.zeros(p.n) for p in d.populations}
        self.synops = {name: 0.0 for name in [p.name for p in d.populations] + [h.name for h in d.hosts]}
        self.units = {p.name: _unit(self.neuron[p.name]) for p in d.populations}
        self.k = 0
        self.steppers: dict[str, Any] = {}
        self.fused: Any = None  # the whole run in one compiled call, where it covers the network (:mod:`.fused`)
        if backend == "numba":
            from . import compiled

            compiled.warm_up()
            self._compiled = compiled
            self.obuf = {p.name: (o, o.reshape(-1)) for p in d.populations for o in [np.zeros((B, p.n))]}
            self.steppers = {p.name: compiled.stepper(self.neuron[p.name], p, B, bool(self.neuron_port.get(p.name)))
                             for p in d.populations}
            from . import fused

            if fused.covers(self):
                fused.warm_up(type(self))
                self.fused = fused.Fused(self)

    def _gather(self, name: str, size: int, port: str | None = None, into: np.ndarray | None = None) -> np.ndarray:
        """The sum of what ``name``'s links (into ``port``, or all) deliver this step, added onto
        zeros (``into``, already zero, or a new array)."""
        acc = np.zeros((self.B, size)) if into is None else into
        for i, filtered, pre in self.sources.get((name, port), ()):
            acc += self.delayed[i] if filtered else self.out[pre] @ self.WT[i]
        return acc

    def _step_compiled(self, p: Population, dt: float) -> np.ndarray:
        """A population's step through its compiled stepper (:mod:`.compiled`): the decoded
        input gathered (and, above one dimension, projected on the encoders) by numpy, the
        rest compiled; its output."""
        none = self._compiled.NONE
        x = none
        if p.dims == 1:
            x = self._gather(p.name, 1, "decoded").reshape(-1)
        elif p.dims:
            x = (self._gather(p.name, p.dims, "decoded") @ self.encT[p.name]).reshape(-1)
        nin = self._gather(p.name, p.n, "neurons").reshape(-1) if self.neuron_port.get(p.name) else none
        o, flat = self.obuf[p.name]  # written in full every step; reused: a fresh array costs page faults
        self.steppers[p.name].step(dt, x, nin, flat, self.state[p.name])
        return o

    def _step_numpy(self, p: Population, dt: float) -> np.ndarray:
        """A population's step by numpy (the reference): its current, its type's step; its output."""
        name = p.name
        if p.dims:  # bias + encoded input, added in the other order (IEEE addition commutes)
            J = self._gather(name, p.dims, "decoded") @ self.encT[name]
            J += p.bias
        else:
            J = np.empty((self.B, p.n))
            J[...] = p.bias
        if self.neuron_port.get(name):
            J += p.gain * self._gather(name, p.n, "neurons")
        o = np.zeros((self.B, p.n))
        self.neuron[name].step(dt, J, o, **self.state[name])
        return o

    def advance(self, steps: int, history: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run ``steps`` more steps; the outputs' readouts after every step (with ``history``)
        and the probes' records, each ``(steps, batch, size)``."""
        if self.fused is not None:  # no output hosts there: no history
            return {}, self.fused.advance(steps)
        d, B, dt = self.d, self.B, self.d.dt
        pops, hosts, out = self.pops, self.hosts, self.out
        hist = {h.name: np.zeros((steps, B, h.size_in)) for h in d.hosts if h.kind == "output"} if history else {}
        probes = {h.name: np.zeros((steps, B, h.size_in)) for h in d.hosts if h.kind == "probe"}
        probe_hosts = [h for h in d.hosts if h.kind == "probe"]
        plan = [(name, pops.get(name), hosts.get(name)) for name in self.seq if name not in probes]
        filters = [(i, f, d.links[i].pre, self.WT[i]) for i, f in self.filters.items()]
        filter_step = self._compiled.filter_step if self.steppers else None
        count = self.measure and not self.rate
        for j in range(steps):
            self.k += 1
            k = self.k
            t = k * dt
            for name, p, h in plan:
                if p is not None:
                    o = self._step_compiled(p, dt) if self.steppers else self._step_numpy(p, dt)
                    out[name] = o
                    if self.units[name] and count:
                        self.spikes[name] += np.abs(o).sum(axis=0) * (dt / self.units[name])
                    continue
                assert h is not None
                x = self._gather(name, h.size_in) if h.size_in else None
                if h.kind == "input":
                    out[name] = _encode(h, np.asarray(self.inputs[name], np.float64) * float(h.attrs.get("scale", 1.0)),
                                        self.enc_state[name])
                elif h.kind == "node":
                    f = self.nodes.get(name)
                    if f is None:
                        out[name] = x if x is not None and h.size_out == h.size_in else np.zeros((B, h.size_out))
                        continue
                    if B != 1:
                        raise ValueError(f"node {name!r}: host callables run with batch 1")
                    y = f(t, x[0]) if x is not None else f(t)
                    y = np.zeros(h.size_out) if y is None or h.size_out == 0 else np.asarray(y, np.float64).reshape(-1)
                    if y.size != h.size_out:
                        raise ValueError(f"node {name!r} returned {y.size} values, expected {h.size_out}")
                    out[name] = y[None, :]
                elif h.kind == "output":
                    assert x is not None
                    self.readout[name] += x + np.asarray(h.attrs.get("bias", 0.0), np.float64)
                    if history:
                        hist[name][j] = self.readout[name] / (k if h.attrs.get("mode", "membrane") == "membrane" else 1)
            for h in probe_hosts:  # as nengo samples: a filtered signal as its readers see it this step
                self._gather(h.name, h.size_in, into=probes[h.name][j])
            for i, f, pre, WT in filters:
                u = out[pre] @ WT
                self.delayed[i] = filter_step(f, u) if filter_step is not None else f(u)
            if count:
                for i, link in enumerate(d.links):
                    pre = link.pre
                    if pre in pops:
                        if self.units[pre]:
                            n_sp = (np.abs(out[pre]) * (dt / self.units[pre])).sum(axis=0)
                            self.synops[link.post] += float(n_sp @ self.fanout[i])
                    elif hosts[pre].kind == "input":
                        self.synops[link.post] += float((out[pre] != 0).sum(axis=0) @ self.fanout[i])
        return hist, probes

    def outputs(self) -> dict[str, np.ndarray]:
        res = {}
        for h in self.d.hosts:
            if h.kind == "output":
                mode = h.attrs.get("mode", "membrane")
                res[h.name] = self.readout[h.name] / (max(self.k, 1) if mode == "membrane" else 1)
        return res


def run(d: Description, *, batch: int = 1, inputs: dict[str, np.ndarray] | None = None,
        nodes: dict[str, Callable[..., Any]] | None = None, steps: int | None = None, rate: bool = False,
        history: bool = False, backend: str = "numba") -> Result:
    """Run ``d`` for ``steps`` steps (default: the description's) on ``batch`` samples.

    ``inputs``: per ``input`` host, its static input ``(batch, size)``; ``nodes``: per
    ``node`` host, its callable. Returns the outputs' readouts, with ``history`` their value
    after every step ``(steps, batch, size)``, the probes' records ``(steps, batch, size)``,
    spikes per neuron and synaptic operations per population.
    """
    r = Runner(d, batch=batch, inputs=inputs, nodes=nodes, rate=rate, backend=backend)
    n = int(steps if steps is not None else (d.steps or 1))
    hist, probes = r.advance(n, history)
    return Result(r.outputs(), hist, probes, r.spikes, r.synops, n)


def simulate(artifacts: Any, target: Any, inputs: dict[str, np.ndarray]) -> Any:
    """The ``hwmap_simulate`` hook: the description read back from ``artifacts``, run on all of
    ``inputs`` in slices, spiking and as the rate network; outputs, and the activity
    (spikes, synaptic operations, agreement with the rate network after every step)."""
    from hwmap import Simulation, TargetError

    from .description import read

    d = read(artifacts)
    in_hosts = [h for h in d.hosts if h.kind == "input"]
    outs = [h for h in d.hosts if h.kind == "output"]
    names = d.meta.get("graph_inputs", [h.name for h in in_hosts])
    if len(names) != len(in_hosts) or any(n not in inputs for n in names):
        raise TargetError(f"the network takes inputs {names}; got {sorted(inputs)}", where=str(artifacts.directory))
    n = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    parts: dict[str, list[np.ndarray]] = {h.name: [] for h in outs}
    spikes = {p.name: np.zeros(p.n) for p in d.populations}
    synops: dict[str, float] = {}
    steps = d.steps or 1
    agree = np.zeros(steps)
    for start in range(0, n, SLICE):
        feed = {h.name: np.asarray(inputs[nm][start:start + SLICE], np.float64).reshape(
            len(inputs[nm][start:start + SLICE]), -1) for h, nm in zip(in_hosts, names)}
        b = len(next(iter(feed.values())))
        try:
            r = run(d, batch=b, inputs=feed, history=True)
            ref = run(d, batch=b, inputs=feed, rate=True)
        except ValueError as e:
            raise TargetError(str(e), where=str(artifacts.directory)) from None
        for h in outs:
            parts[h.name].append(r.outputs[h.name])
        for k, v in r.spikes.items():
            spikes[k] += v
        for k, s in r.synops.items():
            synops[k] = synops.get(k, 0.0) + s
        first = outs[0].name if outs else None
        if first is not None and r.history[first].shape[-1] > 1:
            want = ref.outputs[first].argmax(axis=1)
            agree += (r.history[first].argmax(axis=2) == want[None, :]).sum(axis=1)
        target.report_progress(min(start + SLICE, n), n)
    shapes = d.meta.get("output_shapes", {})
    outputs = {}
    for h in outs:
        a = np.concatenate(parts[h.name]).astype(np.float32)
        outputs[h.name] = a.reshape((len(a),) + tuple(shapes.get(h.name, [h.size_in])))
    activity = {"samples": n, "steps": steps, "spikes": {k: v.tolist() for k, v in spikes.items()},
                "synops": synops, "agreement_by_step": (agree / max(n, 1)).tolist()}
    return Simulation(outputs, activity)
