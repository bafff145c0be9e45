"""NIR neuron primitives over discrete time: LIF, IF, LI, CubaLIF, CubaLI, Integrator, Delay,
plus the stateless Threshold and SumPool2d.

The continuous-time definitions are NIR 1.0's (``nir/ir/neuron.py``, ``delay.py``,
``threshold.py``, ``pooling.py``; Pedersen et al., "Neuromorphic intermediate
representation", Nat. Commun. 15, 8122, 2024). hwmap discretises them at the node's ``dt``
attribute (seconds), one step per input time step. With ``k = dt/tau`` (forward Euler, the
default) each membrane-like state follows

* LIF      ``v += k * ((v_leak - v) + r*I)``; ``z = v > v_threshold``; then the reset where ``z``
* IF       ``v += dt * r*I``; same threshold and reset
* LI       ``v += k * ((v_leak - v) + r*I)``; output ``v``
* CubaLIF  ``i += k_syn * (-i + w_in*S)``, then ``v += k_mem * ((v_leak - v) + r*i)``
  with the *updated* ``i`` (the input reaches the membrane in the same step); threshold, reset
* CubaLI   as CubaLIF without threshold; output ``v``
* Integrator (also registered as ``I``, NIR's class name) ``v += dt * r*I``; output ``v``
* Delay    ``y[t] = x[t - round(delay/dt)]`` per element (halves round to even), zeros before

LIF, IF and CubaLIF take three more settings (not NIR's: NIR resets to ``v_reset`` from 0):

* attribute ``reset``: ``"value"`` (the default: ``v = v_reset`` where it spiked) or
  ``"subtract"`` (``v = v - v_threshold`` where it spiked: the residue above the threshold is
  kept, as integrate-and-fire neurons of converted networks need, Rueckauer et al., Front.
  Neurosci. 11:682, 2017, eq. 2b).
* attribute ``discretization``: ``"euler"`` (the default, ``k = dt/tau`` above) or ``"exact"``:
  ``k = 1 - exp(-dt/tau)``, so that with ``alpha = exp(-dt/tau)``

      LIF      ``v = alpha*v + (1 - alpha)*(v_leak + r*I)``
      CubaLIF  ``i = beta*i + (1 - beta)*w_in*S`` (``beta = exp(-dt/tau_syn)``), then
               ``v = alpha*v + (1 - alpha)*(v_leak + r*i)``

  each state decays exponentially over the step and its input, held for the step, charges it
  exactly as the NIR ODE would (zero-order hold). This is Rockpool's ``LIFNeuronTorch``
  (``v = alpha*v + x + bias``) and ``LIFTorch`` (``i = beta*(i + x)``, ``v = alpha*v + i + bias``)
  with ``r = 1/(1 - alpha)``, ``v_leak = bias/(1 - alpha)`` and ``w_in = beta/(1 - beta)``:
  the tests check the two spike for spike. IF has no decay: its two discretizations agree.
* parameter ``v_init`` (default 0): the membrane potential at t=0, broadcast like the others.

Conventions: the spike condition is strict, ``v > v_threshold``, as NIR writes it; the value
reset sets ``v_reset`` (NIR's default 0 when the param is absent); states start at 0 at t=0
(``v`` at ``v_init``), the initial state of the NIR reference simulators (snnTorch, Rockpool,
Lava). State is kept in float64; outputs are float32 (spikes are 0.0/1.0).

Parameters live in ``node.params`` under their NIR names and broadcast to the feature shape
(a sample without the batch axis): numpy's trailing alignment, or a leading match such as
per-channel ``(C,)`` against ``(C, H, W)``.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, ints, require_dt, shape_of
from ._window import sliding, window

__all__ = ["NEURON_PARAMS", "EXTRA_PARAMS", "RESETS", "DISCRETIZATIONS", "feature_param", "neuron_settings"]

# op -> (required params, optional params with their NIR defaults)
NEURON_PARAMS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "LIF": (("tau", "r", "v_leak", "v_threshold"), {"v_reset": 0.0}),
    "IF": (("r", "v_threshold"), {"v_reset": 0.0}),
    "LI": (("tau", "r", "v_leak"), {}),
    "CubaLIF": (("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"), {"v_reset": 0.0, "w_in": 1.0}),
    "CubaLI": (("tau_syn", "tau_mem", "r", "v_leak"), {"w_in": 1.0}),
    "Integrator": (("r",), {}),
    "I": (("r",), {}),  # NIR's own class name for the integrator, an alias of Integrator
    "Delay": (("delay",), {}),
    "Threshold": (("threshold",), {}),
}
#: Parameters hwmap adds to NIR's (not in NIR, so a NIR file never sets them), with defaults.
EXTRA_PARAMS: dict[str, dict[str, float]] = {"LIF": {"v_init": 0.0}, "IF": {"v_init": 0.0},
                                             "CubaLIF": {"v_init": 0.0}}
#: Values of the ``reset`` and ``discretization`` attributes (the first is the default).
RESETS = ("value", "subtract")
DISCRETIZATIONS = ("euler", "exact")


def feature_param(node: Any, name: str, features: Shape, default: float | None = None) -> np.ndarray:
    """Param ``name`` of ``node`` as a float64 array of the feature shape."""
    if name in node.params:
        a = np.asarray(node.params[name], dtype=np.float64)
    elif default is not None:
        a = np.asarray(default, dtype=np.float64)
    else:
        raise fail(node, f"parameter {name!r} is missing")
    try:
        return np.broadcast_to(a, features)
    except ValueError:
        pass
    if a.ndim <= len(features) and a.shape == tuple(features[:a.ndim]):
        return np.broadcast_to(a.reshape(a.shape + (1,) * (len(features) - a.ndim)), features)
    raise fail(node, f"parameter {name!r} of shape {list(a.shape)} does not broadcast to features {list(features)}")


def _params(node: Any, features: Shape) -> dict[str, np.ndarray]:
    required, optional = NEURON_PARAMS[node.op]
    p = {k: feature_param(node, k, features) for k in required}
    p.update({k: feature_param(node, k, features, d) for k, d in {**optional, **EXTRA_PARAMS.get(node.op, {})}.items()})
    for k in ("tau", "tau_syn", "tau_mem"):
        if k in p and not np.all(p[k] > 0):
            raise fail(node, f"time constant {k!r} must be positive")
    return p


def neuron_settings(node: Any) -> tuple[str, str]:
    """``(reset, discretization)`` of a LIF, IF or CubaLIF node (defaults ``"value"``,
    ``"euler"``); a :class:`GraphError` naming the node for any other value, or for either
    attribute on a neuron that has no threshold or no decay to apply it to."""
    reset, disc = node.attrs.get("reset", RESETS[0]), node.attrs.get("discretization", DISCRETIZATIONS[0])
    if node.op not in EXTRA_PARAMS:
        given = [k for k in ("reset", "discretization") if k in node.attrs]
        if given:
            raise fail(node, f"attribute {given[0]!r} applies to LIF, IF and CubaLIF only")
    if reset not in RESETS:
        raise fail(node, f"attribute 'reset' = {reset!r}: must be one of {', '.join(map(repr, RESETS))}")
    if disc not in DISCRETIZATIONS:
        raise fail(node, f"attribute 'discretization' = {disc!r}: must be one of "
                         f"{', '.join(map(repr, DISCRETIZATIONS))}")
    return reset, disc


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("input",))["input"])
    if len(x) < 1:
        raise fail(node, "input must be batch first")
    if node.op != "Threshold":
        require_dt(node)
    neuron_settings(node)
    _params(node, x[1:])
    return [x]


def _gain(dt: float, tau: np.ndarray, discretization: str) -> np.ndarray:
    """How much of the way to its target a state moves in one step: ``dt/tau`` (forward
    Euler) or ``1 - exp(-dt/tau)`` (exact exponential decay over the step)."""
    return dt / tau if discretization == "euler" else -np.expm1(-dt / tau)


def _init(node: Any, x: np.ndarray, state: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Fresh state (``v`` at ``v_init``, other states 0, broadcast params, step gains) at
    t=0, else the carried one."""
    if state is not None:
        if state["shape"] != x.shape:
            raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
        return state
    p = _params(node, x.shape[1:])
    dt = require_dt(node)
    reset, disc = neuron_settings(node)
    states = {k: np.zeros(x.shape, dtype=np.float64) for k in names}
    if "v_init" in p:
        states["v"] = np.broadcast_to(p["v_init"], x.shape).astype(np.float64)
    gains = {f"k_{k}": _gain(dt, p[k], disc) for k in ("tau", "tau_syn", "tau_mem") if k in p}
    return {"shape": x.shape, "p": p, "dt": dt, "reset": reset, **gains, **states}


def _neuron(name: str, update: Callable[[dict[str, Any], np.ndarray], np.ndarray], state_names: tuple[str, ...],
            doc: str) -> None:
    def step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
        x = np.asarray(bind(node, inputs, ("input",))["input"])
        s = dict(_init(node, x, state, state_names))
        out = update(s, x.astype(np.float64))
        return [as_f32(out)], s
    register_op(OpDef(name, ("input",), _infer, step=step, category="neuron", doc=doc))


def _spike(s: dict[str, Any], v: np.ndarray) -> np.ndarray:
    p = s["p"]
    z = v > p["v_threshold"]
    s["v"] = v - z * p["v_threshold"] if s["reset"] == "subtract" else np.where(z, p["v_reset"], v)
    return z.astype(np.float64)


def _lif(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    p = s["p"]
    return _spike(s, s["v"] + s["k_tau"] * ((p["v_leak"] - s["v"]) + p["r"] * x))


def _if(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return _spike(s, s["v"] + s["dt"] * s["p"]["r"] * x)


def _li(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    p = s["p"]
    s["v"] = s["v"] + s["k_tau"] * ((p["v_leak"] - s["v"]) + p["r"] * x)
    return s["v"]


def _cuba_current(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    p = s["p"]
    s["i"] = s["i"] + s["k_tau_syn"] * (-s["i"] + p["w_in"] * x)
    return s["v"] + s["k_tau_mem"] * ((p["v_leak"] - s["v"]) + p["r"] * s["i"])


def _cubalif(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return _spike(s, _cuba_current(s, x))


def _cubali(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    s["v"] = _cuba_current(s, x)
    return s["v"]


def _integrator(s: dict[str, Any], x: np.ndarray) -> np.ndarray:
    s["v"] = s["v"] + s["dt"] * s["p"]["r"] * x
    return s["v"]


_neuron("LIF", _lif, ("v",), "NIR LIF, forward Euler or exact decay, spike if v > v_threshold, reset to v_reset "
                             "or by subtraction, membrane from v_init.")
_neuron("IF", _if, ("v",), "NIR IF, spike if v > v_threshold, reset to v_reset or by subtraction, membrane from "
                           "v_init.")
_neuron("LI", _li, ("v",), "NIR LI, forward Euler; outputs the membrane potential.")
_neuron("CubaLIF", _cubalif, ("v", "i"), "NIR CubaLIF, forward Euler or exact decay (synaptic current first), "
                                         "reset to v_reset or by subtraction, membrane from v_init.")
_neuron("CubaLI", _cubali, ("v", "i"), "NIR CubaLI, forward Euler; outputs the membrane potential.")
_neuron("Integrator", _integrator, ("v",), "NIR I (integrator), forward Euler; outputs v.")
_neuron("I", _integrator, ("v",), "NIR I under its NIR class name: the same op as Integrator.")


# -- Delay ---------------------------------------------------------------------------------
def delay_steps(node: Any, features: Shape) -> np.ndarray:
    """Per-element delay in whole steps: ``round(delay / dt)`` (halves to even)."""
    d = np.rint(feature_param(node, "delay", features) / require_dt(node))
    if np.any(d < 0):
        raise fail(node, "delay must not be negative")
    return d.astype(np.int64)


def _delay_step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    if state is None:
        d = np.broadcast_to(delay_steps(node, x.shape[1:]), x.shape)
        # history[k] holds the input of k+1 steps ago
        state = {"shape": x.shape, "d": d, "history": np.zeros((int(d.max(initial=0)), *x.shape), dtype=x.dtype)}
    elif state["shape"] != x.shape:
        raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
    full = np.concatenate([x[None], state["history"]], axis=0)
    y = np.take_along_axis(full, state["d"][None], axis=0)[0]
    return [as_f32(y)], {**state, "history": full[:-1]}


register_op(OpDef("Delay", ("input",), _infer, step=_delay_step, category="neuron",
                  doc="NIR Delay: y[t] = x[t - round(delay/dt)] per element, zeros before the first input."))


# -- Threshold (stateless) -----------------------------------------------------------------
def _threshold_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    return [(x > feature_param(node, "threshold", x.shape[1:])).astype(np.float32)]


register_op(OpDef("Threshold", ("input",), _infer, _threshold_eval, category="neuron",
                  doc="NIR Threshold: Heaviside step, 1 where x > threshold."))


# -- SumPool2d (stateless) -----------------------------------------------------------------
def _sumpool_geometry(node: Any, x: Shape) -> Any:
    """ONNX-style attrs (kernel_shape, strides, pads), or NIR's (kernel_size, stride, padding)."""
    if len(x) != 4:
        raise fail(node, f"input must be (N, C, H, W), got shape {list(x)}")
    a = node.attrs
    kernel = a.get("kernel_shape", a.get("kernel_size"))
    if kernel is None:
        raise fail(node, "attribute kernel_shape is required")
    kernel = ints(kernel) * (2 if len(ints(kernel)) == 1 else 1)
    strides = a.get("strides", a.get("stride", kernel))
    strides = ints(strides) * (2 if len(ints(strides)) == 1 else 1)
    if "pads" in a:
        pads = ints(a["pads"])
    else:
        p = ints(a.get("padding", [0, 0]))
        p = p * (2 if len(p) == 1 else 1)
        pads = p + p
    shim = types.SimpleNamespace(name=node.name, op=node.op, attrs={"strides": strides, "pads": pads})
    return window(shim, x[2:], kernel)


def _sumpool_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("input",))["input"])
    return [(*x[:2], *_sumpool_geometry(node, x).out)]


def _sumpool_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    geo = _sumpool_geometry(node, x.shape)
    return [as_f32(sliding(x.astype(np.float64), geo, 0.0).sum(axis=(-2, -1)))]


register_op(OpDef("SumPool2d", ("input",), _sumpool_infer, _sumpool_eval, category="pool",
                  doc="NIR SumPool2d: sum over each window; stride defaults to the kernel size."))
