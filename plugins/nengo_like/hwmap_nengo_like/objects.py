"""The NEF object model the chapter lists (Section 3.2.5): network, ensemble, node,
connection, probe, with nengo's names and signatures for the subset supported here (nengo
4.1; Bekolay et al., Front. Neuroinform. 7:48, 2014), so that a nengo script of that
subset runs unchanged with ``import hwmap_nengo_like as nengo``.

Objects created inside ``with Network():`` join the innermost open network, as in nengo.
Anything outside the subset (learning rules, noise, Direct neurons, slicing with fancy
indices, solvers other than LstsqL2) is refused when the object is created, naming it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .dists import ScatteredHypersphere, Uniform
from .neurons import LIF, NeuronType
from .solvers import LstsqL2, Solver
from .synapses import Lowpass

__all__ = ["Network", "Ensemble", "Node", "Connection", "Probe", "Neurons", "Default"]


class _DefaultType:
    def __repr__(self) -> str:
        return "Default"


Default: Any = _DefaultType()


def _given(value: Any, default: Any) -> Any:
    return default if value is Default else value


class Network:
    context: list["Network"] = []

    def __init__(self, label: str | None = None, seed: int | None = None, add_to_container: bool | None = None) -> None:
        self.label = label
        self.seed = seed
        self.ensembles: list[Ensemble] = []
        self.nodes: list[Node] = []
        self.connections: list[Connection] = []
        self.probes: list[Probe] = []
        self.networks: list[Network] = []
        if add_to_container is not False and Network.context:
            Network.context[-1].networks.append(self)

    def __enter__(self) -> "Network":
        Network.context.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not Network.context or Network.context[-1] is not self:
            raise RuntimeError("Network context exited out of order")
        Network.context.pop()

    @property
    def all_objects(self) -> list[Any]:
        out: list[Any] = self.ensembles + self.nodes + self.connections + self.probes
        for n in self.networks:
            out += n.all_objects
        return out

    def __repr__(self) -> str:
        return f"<Network {self.label or id(self)}>"


def _add(obj: Any, kind: str) -> None:
    if not Network.context:
        raise RuntimeError(f"{type(obj).__name__} must be created inside a `with Network():` block")
    getattr(Network.context[-1], kind).append(obj)


class Neurons:
    """An ensemble's neurons, as a connection's pre or post and a probe's target."""

    def __init__(self, ensemble: "Ensemble") -> None:
        self.ensemble = ensemble

    @property
    def size_in(self) -> int:
        return self.ensemble.n_neurons

    @property
    def size_out(self) -> int:
        return self.ensemble.n_neurons

    def __repr__(self) -> str:
        return f"<Neurons of {self.ensemble!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Neurons) and other.ensemble is self.ensemble

    def __hash__(self) -> int:
        return hash(("neurons", id(self.ensemble)))


class Ensemble:
    def __init__(self, n_neurons: int, dimensions: int, radius: float = Default, encoders: Any = Default,
                 intercepts: Any = Default, max_rates: Any = Default, eval_points: Any = Default,
                 n_eval_points: int | None = Default, neuron_type: NeuronType = Default, gain: Any = Default,
                 bias: Any = Default, noise: Any = Default, normalize_encoders: bool = Default,
                 label: str | None = None, seed: int | None = None) -> None:
        if not isinstance(n_neurons, (int, np.integer)) or n_neurons < 1:
            raise ValueError(f"Ensemble: n_neurons = {n_neurons!r} must be a positive integer")
        if not isinstance(dimensions, (int, np.integer)) or dimensions < 1:
            raise ValueError(f"Ensemble: dimensions = {dimensions!r} must be a positive integer")
        if _given(noise, None) is not None:
            raise ValueError("Ensemble: noise is not supported by the nengo_like target")
        self.n_neurons = int(n_neurons)
        self.dimensions = int(dimensions)
        self.radius = float(_given(radius, 1.0))
        self.encoders = _given(encoders, ScatteredHypersphere(surface=True))
        self.intercepts = _given(intercepts, Uniform(-1.0, 0.9))
        self.max_rates = _given(max_rates, Uniform(200, 400))
        self.eval_points = _given(eval_points, ScatteredHypersphere())
        self.n_eval_points = _given(n_eval_points, None)
        self.neuron_type = _given(neuron_type, LIF())
        if not isinstance(self.neuron_type, NeuronType):
            raise ValueError(f"Ensemble: neuron_type {self.neuron_type!r} is not one of the supported types")
        self.gain = _given(gain, None)
        self.bias = _given(bias, None)
        self.normalize_encoders = bool(_given(normalize_encoders, True))
        self.label = label
        self.seed = seed
        self.neurons = Neurons(self)
        _add(self, "ensembles")

    @property
    def size_in(self) -> int:
        return self.dimensions

    @property
    def size_out(self) -> int:
        return self.dimensions

    def __repr__(self) -> str:
        return f"<Ensemble {self.label!r}>" if self.label else f"<Ensemble (unlabeled) at {id(self):#x}>"


class Node:
    def __init__(self, output: Any = Default, size_in: int = Default, size_out: int | None = Default,
                 label: str | None = None, seed: int | None = None) -> None:
        output = _given(output, None)
        self.size_in = int(_given(size_in, 0))
        self.label = label
        self.seed = seed
        self.output: Callable[..., Any] | None
        if output is None:
            if self.size_in < 1 and _given(size_out, None) in (None, 0):
                raise ValueError("Node: a node without output needs size_in")
            self.output = None
            size = _given(size_out, None)
            self.size_out = self.size_in if size is None else int(size)
        elif callable(output):
            self.output = output
            size = _given(size_out, None)
            if size is None:
                t0 = 0.0
                probe = output(t0, np.zeros(self.size_in)) if self.size_in else output(t0)
                size = 0 if probe is None else int(np.asarray(probe).size)
            self.size_out = int(size)
        else:
            value = np.asarray(output, dtype=np.float64).reshape(-1)
            self.output = lambda t, *x, _v=value: _v
            self.size_out = int(value.size)
        _add(self, "nodes")

    def __repr__(self) -> str:
        return f"<Node {self.label!r}>" if self.label else f"<Node (unlabeled) at {id(self):#x}>"


def _size_out(obj: Any) -> int:
    return int(obj.size_out)


class Connection:
    def __init__(self, pre: Any, post: Any, synapse: Any = Default, function: Any = Default,
                 transform: Any = Default, solver: Solver = Default, learning_rule_type: Any = Default,
                 eval_points: Any = Default, scale_eval_points: bool = Default, label: str | None = None,
                 seed: int | None = None) -> None:
        if _given(learning_rule_type, None) is not None:
            raise ValueError("Connection: learning rules are not supported by the nengo_like target")
        for end, what in ((pre, "pre"), (post, "post")):
            if not isinstance(end, (Ensemble, Node, Neurons)):
                raise ValueError(f"Connection: {what} {end!r} must be an Ensemble, its neurons or a Node")
        self.pre, self.post = pre, post
        self.synapse = _given(synapse, Lowpass(tau=0.005))
        self.function = _given(function, None)
        self.solver = _given(solver, LstsqL2())
        if not isinstance(self.solver, LstsqL2):
            raise ValueError(f"Connection: solver {self.solver!r} is not supported (LstsqL2)")
        self.eval_points = _given(eval_points, None)
        self.scale_eval_points = bool(_given(scale_eval_points, True))
        self.label = label
        self.seed = seed
        if self.function is not None and not isinstance(pre, (Ensemble, Node)):
            raise ValueError("Connection: a function needs an Ensemble or Node as pre")
        size_mid = _size_out(pre)
        if self.function is not None:
            if isinstance(self.function, np.ndarray):
                size_mid = int(self.function.shape[1]) if self.function.ndim == 2 else 1
            else:
                x0 = np.zeros(_size_out(pre))
                y0 = self.function(x0)
                size_mid = int(np.asarray(y0).size)
        self.size_mid = size_mid
        tr = _given(transform, None)
        size_in = int(post.size_in)
        if tr is None:
            if size_mid != size_in:
                raise ValueError(f"Connection: pre gives {size_mid} values, post takes {size_in}; give a transform")
            self.transform = np.eye(size_in)
        else:
            a = np.asarray(tr, dtype=np.float64)
            if a.ndim == 0:
                if size_mid != size_in:
                    raise ValueError(f"Connection: a scalar transform needs pre ({size_mid}) and post ({size_in}) "
                                     "of the same size")
                a = a * np.eye(size_in)
            elif a.ndim == 1:
                if a.size != size_in or size_mid != size_in:
                    raise ValueError(f"Connection: transform of {a.size} values for sizes {size_mid} -> {size_in}")
                a = np.diag(a)
            if a.shape != (size_in, size_mid):
                raise ValueError(f"Connection: transform shape {list(a.shape)} must be [{size_in}, {size_mid}]")
            self.transform = a
        _add(self, "connections")

    @property
    def pre_obj(self) -> Any:
        return self.pre

    @property
    def post_obj(self) -> Any:
        return self.post

    def __repr__(self) -> str:
        return f"<Connection from {self.pre!r} to {self.post!r}>"


class Probe:
    def __init__(self, target: Any, attr: str | None = None, sample_every: float | None = None,
                 synapse: Any = None, solver: Solver = Default, label: str | None = None,
                 seed: int | None = None) -> None:
        if sample_every is not None:
            raise ValueError("Probe: sample_every is not supported by the nengo_like target")
        if isinstance(target, Ensemble):
            attr = attr or "decoded_output"
            if attr != "decoded_output":
                raise ValueError(f"Probe: attribute {attr!r} of an ensemble is not supported (decoded_output)")
        elif isinstance(target, Neurons):
            attr = attr or "output"
            if attr != "output":
                raise ValueError(f"Probe: attribute {attr!r} of neurons is not supported (output)")
        elif isinstance(target, Node):
            attr = attr or "output"
            if attr != "output":
                raise ValueError(f"Probe: attribute {attr!r} of a node is not supported (output)")
        else:
            raise ValueError(f"Probe: target {target!r} must be an Ensemble, its neurons or a Node")
        self.target, self.attr, self.synapse, self.label, self.seed = target, attr, synapse, label, seed
        self.solver = _given(solver, LstsqL2())
        _add(self, "probes")

    def __repr__(self) -> str:
        return f"<Probe of {self.attr} of {self.target!r}>"

