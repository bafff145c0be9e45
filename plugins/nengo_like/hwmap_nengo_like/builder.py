"""Building a NEF network (:mod:`.objects`) into a network description, as nengo's builder
does (nengo 4.1, ``nengo/builder``), with the same random draws:

* seeds: every object gets ``RandomState(seed of its network).randint(2**31 - 1)`` in the
  order connections, ensembles, networks, nodes, probes (each in creation order), whether or
  not it has its own seed (which then wins); a network without a seed draws one from
  ``numpy.random``, as nengo does;
* an ensemble draws, from ``RandomState(its seed)``: evaluation points, encoders (then
  normalized), maximum rates, intercepts; gain and bias come from the neuron type's
  ``gain_bias``; the initial neuron state is drawn from ``RandomState(its seed + 1)`` (a
  wrapper: the base type's, then its own from a fresh ``RandomState(seed + 1)``);
* a decoded connection solves ``rates(eval_points · encodersᵀ / radius) · D ≈
  function(eval_points)`` with its solver (default ``LstsqL2``, ``reg = 0.1``); its weights are
  ``transform · Dᵀ``; a probe on an ensemble is such a connection, with the probe's synapse;
* a connection into ``ens.neurons`` is multiplied by the neurons' gains (nengo does the
  same), one into an ensemble goes through its scaled encoders (``encoders · gain / radius``).

Node callables stay on the host: the description names each node and the simulator calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .description import Description, Host, Link, Population
from .dists import Distribution, get_samples
from .neurons import RatesToSpikesNeuronType
from .objects import Connection, Ensemble, Network, Neurons, Node, Probe
from .solvers import LstsqL2
from .synapses import synapse_spec

__all__ = ["BuiltEnsemble", "BuiltConnection", "Built", "build", "MAXINT", "default_n_eval_points"]

MAXINT = int(np.iinfo(np.int32).max)


@dataclass
class BuiltEnsemble:
    eval_points: np.ndarray
    encoders: np.ndarray
    intercepts: np.ndarray
    max_rates: np.ndarray
    scaled_encoders: np.ndarray
    gain: np.ndarray
    bias: np.ndarray


@dataclass
class BuiltConnection:
    eval_points: np.ndarray | None
    solver_info: dict[str, Any]
    transform: np.ndarray
    weights: np.ndarray


@dataclass
class Built:
    description: Description
    params: dict[Any, Any]
    names: dict[Any, str]
    nodes: dict[str, Any]
    probes: dict[Any, str]
    seeds: dict[Any, int]
    build_time_s: float = 0.0


def default_n_eval_points(n_neurons: int, dimensions: int) -> int:
    return max(int(np.clip(500 * dimensions, 750, 2500)), 2 * n_neurons)


def _seed(network: Network, seeds: dict[Any, int], rng: Any) -> None:
    def set_seed(obj: Any, r: Any) -> None:
        s = int(r.randint(MAXINT))
        if id(obj) not in seeds:
            seeds[id(obj)] = obj.seed if getattr(obj, "seed", None) is not None else s

    if id(network) not in seeds:
        set_seed(network, rng)
    r = np.random.RandomState(seeds[id(network)])
    for group in (network.connections, network.ensembles, network.networks, network.nodes, network.probes):
        for obj in group:
            set_seed(obj, r)
    for sub in network.networks:
        _seed(sub, seeds, rng)


def _eval_points(ens: Ensemble, dist: Any, rng: Any, scale: bool = True) -> np.ndarray:
    if isinstance(dist, Distribution):
        n = ens.n_eval_points if ens.n_eval_points is not None else default_n_eval_points(ens.n_neurons,
                                                                                          ens.dimensions)
        pts = np.asarray(dist.sample(n, ens.dimensions, rng), dtype=np.float64)
    else:
        pts = np.array(dist, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[:, None]
    if pts.ndim != 2 or pts.shape[1] != ens.dimensions:
        raise ValueError(f"{ens!r}: eval_points must be (n, {ens.dimensions})")
    return pts * ens.radius if scale else pts


def build_ensemble(ens: Ensemble, seed: int) -> tuple[BuiltEnsemble, dict[str, np.ndarray]]:
    rng = np.random.RandomState(seed)
    eval_points = _eval_points(ens, ens.eval_points, rng)
    encoders = np.asarray(get_samples(ens.encoders, ens.n_neurons, ens.dimensions, rng=rng), dtype=np.float64)
    if encoders.ndim == 1:
        encoders = encoders[:, None]
    if encoders.shape != (ens.n_neurons, ens.dimensions):
        raise ValueError(f"{ens!r}: encoders must be ({ens.n_neurons}, {ens.dimensions})")
    if ens.normalize_encoders:
        encoders = encoders / np.linalg.norm(encoders, axis=1, keepdims=True)
    if np.any(np.isnan(encoders)):
        raise ValueError(f"{ens!r}: NaN encoders (a zero-length encoder was normalized)")
    nt = ens.neuron_type
    if ens.gain is not None and ens.bias is not None:
        gain = np.asarray(get_samples(ens.gain, ens.n_neurons, rng=rng), np.float64)
        bias = np.asarray(get_samples(ens.bias, ens.n_neurons, rng=rng), np.float64)
        max_rates, intercepts = nt.max_rates_intercepts(gain, bias)
    elif ens.gain is not None or ens.bias is not None:
        raise ValueError(f"{ens!r}: gain or bias set, but not both")
    else:
        max_rates = np.asarray(get_samples(ens.max_rates, ens.n_neurons, rng=rng), np.float64)
        intercepts = np.asarray(get_samples(ens.intercepts, ens.n_neurons, rng=rng), np.float64)
        gain, bias = nt.gain_bias(max_rates, intercepts)
        if not np.all(np.isfinite(gain)) or np.any(gain <= 0.0):
            raise ValueError(f"{ens!r}: the intercepts give neurons negative or non-finite gain; keep them below 1")
    state: dict[str, np.ndarray] = {}
    if isinstance(nt, RatesToSpikesNeuronType):
        for k, v in nt.base_type.make_state(ens.n_neurons, rng=np.random.RandomState(seed + 1)).items():
            state["base." + k] = v
        own = RatesToSpikesNeuronType.make_state(nt, ens.n_neurons, rng=np.random.RandomState(seed + 1))
    else:
        own = nt.make_state(ens.n_neurons, rng=np.random.RandomState(seed + 1))
    state.update({k: v for k, v in own.items() if isinstance(v, np.ndarray)})
    scaled = encoders * (gain / ens.radius)[:, None]
    return BuiltEnsemble(eval_points, encoders, intercepts, max_rates, scaled, gain, bias), state


def _targets(conn: Any, pts: np.ndarray) -> np.ndarray:
    if conn.function is None:
        return pts
    if isinstance(conn.function, np.ndarray):
        return np.asarray(conn.function, np.float64).reshape(len(pts), -1)
    out = np.zeros((len(pts), conn.size_mid))
    for i, ep in enumerate(pts):
        y = conn.function(ep)
        if y is None:
            raise ValueError(f"{conn!r}: the function returned None")
        out[i] = np.hstack(y) if isinstance(y, (tuple, list)) else y
    return out


def solve_decoders(ens: Ensemble, built: BuiltEnsemble, conn: Any, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(eval_points, decoders (size_mid × n), solver info)`` of a decoded connection."""
    rng = np.random.RandomState(seed)
    if getattr(conn, "eval_points", None) is None:
        pts = built.eval_points
    else:
        pts = _eval_points(ens, conn.eval_points, rng, getattr(conn, "scale_eval_points", True))
    solver = conn.solver
    stride = int(getattr(solver, "stride", 1))
    targets = _targets(conn, pts)
    sub = pts[::stride] if stride > 1 else pts
    x = sub @ (built.encoders.T / ens.radius)
    A = ens.neuron_type.rates(x, built.gain, built.bias)
    if np.count_nonzero(A) == 0:
        raise ValueError(f"{conn!r}: no evaluation point falls in the firing range of any neuron of {ens!r}")
    tsub = targets[::stride] if stride > 1 else targets
    dec, info = LstsqL2.__call__(solver, A, tsub)
    return pts, dec.T, info


class _ProbeConn:
    def __init__(self, probe: Probe) -> None:
        self.function = None
        self.eval_points = None
        self.solver = probe.solver
        self.size_mid = probe.target.dimensions

    def __repr__(self) -> str:
        return "<probe connection>"


def build(network: Network, dt: float = 0.001) -> Built:
    import time

    t0 = time.perf_counter()
    seeds: dict[Any, int] = {}
    _seed(network, seeds, np.random)
    d = Description(network.label or "network", float(dt), None)
    params: dict[Any, Any] = {}
    names: dict[Any, str] = {}
    nodes: dict[str, Any] = {}
    probes: dict[Any, str] = {}
    objs = network.all_objects
    ens_built: dict[int, BuiltEnsemble] = {}
    for i, ens in enumerate(o for o in objs if isinstance(o, Ensemble)):
        name = f"ens{i}" + (f"_{ens.label}" if ens.label else "")
        names[id(ens)] = name
        b, state = build_ensemble(ens, seeds[id(ens)])
        ens_built[id(ens)] = b
        params[ens] = b
        d.populations.append(Population(name, ens.n_neurons, ens.dimensions, ens.neuron_type.spec(), b.gain, b.bias,
                                        b.scaled_encoders, state, seeds[id(ens)] + 1, label=ens.label or ""))
    for i, node in enumerate(o for o in objs if isinstance(o, Node)):
        name = f"node{i}" + (f"_{node.label}" if node.label else "")
        names[id(node)] = name
        if node.output is not None:
            nodes[name] = node.output
        d.hosts.append(Host(name, "node", node.size_in, node.size_out))

    def endpoint(obj: Any, post: bool) -> tuple[str, str]:
        if isinstance(obj, Neurons):
            return names[id(obj.ensemble)], "neurons"
        return names[id(obj)], ("decoded" if isinstance(obj, Ensemble) else "in") if post else "out"

    for i, conn in enumerate(o for o in objs if isinstance(o, Connection)):
        pre, post = conn.pre, conn.post
        info: dict[str, Any] = {}
        pts = None
        if isinstance(pre, Ensemble):
            pts, dec, info = solve_decoders(pre, ens_built[id(pre)], conn, seeds[id(conn)])
            weights = conn.transform @ dec
        else:
            if isinstance(pre, Node) and conn.function is not None:
                raise ValueError(f"{conn!r}: a function on a connection from a node is not supported; apply it "
                                 "in the node")
            weights = conn.transform
        params[conn] = BuiltConnection(pts, info, conn.transform, weights)
        pre_name, _ = endpoint(pre, False)
        post_name, port = endpoint(post, True)
        d.links.append(Link(f"conn{i}", pre_name, post_name, port, weights, synapse_spec(conn.synapse)))
    for i, probe in enumerate(o for o in objs if isinstance(o, Probe)):
        name = f"probe{i}"
        probes[probe] = name
        target = probe.target
        if isinstance(target, Ensemble):
            _, dec, _ = solve_decoders(target, ens_built[id(target)], _ProbeConn(probe), seeds[id(probe)])
            weights, src, size = dec, names[id(target)], target.dimensions
        elif isinstance(target, Neurons):
            weights, src, size = np.eye(target.size_out), names[id(target.ensemble)], target.size_out
        else:
            weights, src, size = np.eye(target.size_out), names[id(target)], target.size_out
        d.hosts.append(Host(name, "probe", size, 0))
        d.links.append(Link(f"{name}_link", src, name, "in", weights, synapse_spec(probe.synapse)))
    return Built(d, params, names, nodes, probes, seeds, time.perf_counter() - t0)
