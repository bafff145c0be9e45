"""``LIFBitshift``: the integer leaky integrate-and-fire neuron of SynSense's Xylo family, with
bit-shift decay, as its bit-accurate simulator ``xylosim`` (wrapped by Rockpool's ``XyloSim``)
computes it.

Synaptic current ``i`` and membrane ``v`` are integers. Each step, with ``x`` the integer
synaptic input (the weighted input spikes ``W·s``, computed by the Gemm or Conv before it):

    i = sat_syn(i + x)
    i = i - dec(i, dash_syn)
    v = sat_mem(v - dec(v, dash_mem) + i + bias)
    n = min(floor(v / threshold), max_spikes) where v >= threshold, else 0
    v = v - n * threshold

``dec(a, d)`` is the arithmetic shift ``a >> d`` (rounding toward minus infinity), except that
a positive state whose shift is 0 still loses 1: every state decays to 0, never sticks at a
small positive value. ``sat_syn`` and ``sat_mem`` saturate to signed ``syn_bits`` and
``mem_bits`` integers (16 on Xylo). A neuron emits up to ``max_spikes`` spikes per step
(31 for Xylo's hidden neurons, 1 for its readout neurons) and subtracts a threshold for each.
The decay of ``a`` over one step is ``a * (1 - 2**-dash)`` up to rounding, so ``dash`` acts as
``tau = -dt / ln(1 - 2**-dash)`` (Rockpool's ``bitshift_to_tau``).

Xylo's hidden neurons have two synaptic currents: a second input ``input_2`` (with its own
``dash_syn_2``) feeds a second state ``i_2`` the same way, and ``v`` adds both, ``v =
sat_mem(v - dec(v, dash_mem) + i + i_2 + bias)``. Xylo's hidden population is recurrent: its
spikes of the step before reach its own synapses through ``W_rec``. An acyclic graph cannot
hold that loop as edges, so the node holds it: the optional param ``w_rec`` (``F × F`` for one
synapse, ``F × F × 2`` for two; ``w_rec[j, k, s]`` from neuron ``j`` onto synapse ``s`` of
neuron ``k``, integers) adds ``n_prev · w_rec[:, :, s]`` to synapse ``s``'s input each step,
``n_prev`` the node's own spike counts of the step before (zeros at t=0). Features must then
be one axis ``(batch, F)``.

**Neuron aliasing** (Xylo's, as Rockpool specifies it: the ``aliases`` of a specification,
"for each neuron in the hidden population, a list containing the alias targets for that
neuron", ``rockpool.devices.xylo.syns61201.config_from_specification``; Rockpool maps a
``Residual`` bypass onto it). The optional param ``aliases`` is ``P × 2`` whole numbers,
pairs ``(source, target)`` of feature indices in the order of Rockpool's lists (by source,
then each source's targets in order). A source's spikes also count as its target's in the
same step: the target's output (its recorded spikes and its fan-out, ``w_rec`` here and the
weights after the node) carries both. As ``xylosim`` computes it (:func:`alias_spikes`,
measured against it): neurons are taken in index order, and a neuron hands its count to each
*forward* target (a higher index) before that target's own spikes are taken: the target
emits its own spikes only up to ``max_spikes`` minus what it received, and its membrane
loses only the thresholds of the spikes it emitted itself. Then every *backward* target (a
lower index, or the source itself) adds its sources' counts as they stood after that pass
(all at once); its membrane is untouched. Every count stops at ``max_spikes``. So a chain
``0 → 1 → 2`` carries neuron 0's spikes to 2 in the same step, a chain ``2 → 1 → 0`` does
not carry 2's to 0, a self-alias doubles, and a forward target of a self-aliased neuron
receives the count before the doubling.

One detail of the hardware the graph cannot express: Xylo adds the input events one at a
time and saturates after each, in the order it processes them, while this op adds their sum
``x`` (input and recurrent) and saturates once (the two agree unless a partial sum leaves
the ``syn_bits`` range). The tests check the op bit for bit against ``xylosim`` where its
input stays in range.

Parameters (``params``, integers, broadcast to the feature shape like the NIR neurons'):
``dash_mem``, ``dash_syn`` (0 to the state's bits - 1), ``threshold`` (at least 1),
``bias`` (default 0); ``dash_syn_2`` with a second input or two-synapse ``w_rec``;
``w_rec`` and ``aliases`` (optional, above). Attributes: ``syn_bits``, ``mem_bits`` (default 16), ``max_spikes``
(default 31). The input must hold whole numbers; outputs are spike counts (float32), states
are int64 at t=0 (no ``dt``: one step is one hardware time step).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, int_attr, shape_of
from .neuron import feature_param

__all__ = ["BITSHIFT_DEFAULTS", "bitshift_decay", "alias_spikes"]

#: Attribute defaults: Xylo's 16-bit states and its hidden neurons' 31 spikes per step.
BITSHIFT_DEFAULTS: dict[str, int] = {"syn_bits": 16, "mem_bits": 16, "max_spikes": 31}
_MAX_BITS = 62  # states live in int64 with room for one addition


def bitshift_decay(a: np.ndarray, dash: np.ndarray) -> np.ndarray:
    """``a - dec(a, dash)``: one step of bit-shift decay, a positive value losing at least 1."""
    k = a >> dash
    return a - np.where((a > 0) & (k == 0), 1, k)


def _int_param(node: Any, name: str, features: Shape, lo: int, hi: int, default: float | None = None) -> np.ndarray:
    a = feature_param(node, name, features, default)
    bad = (a != np.round(a)) | (a < lo) | (a > hi)
    if np.any(bad):
        raise fail(node, f"parameter {name!r} holds {float(a[bad].flat[0])!r}: must be whole numbers from {lo} to {hi}")
    return a.astype(np.int64)


#: Largest magnitude of a recurrent weight (a Xylo int8 weight shifted by up to 7 bits fits).
_MAX_REC = 2**31 - 1


def _feature_param(node: Any, name: str, features: Shape, what: str) -> tuple[np.ndarray, int] | None:
    """Parameter ``name`` as float64 and the feature count ``F``, or ``None`` when the node has
    no such parameter; ``what`` (the parameter, in words) needs one feature axis."""
    if name not in node.params:
        return None
    if len(features) != 1:
        raise fail(node, f"{what} need one feature axis (batch, F); features are {list(features)}")
    return np.asarray(node.params[name], np.float64), features[0]


def _recurrent(node: Any, features: Shape) -> np.ndarray | None:
    """``w_rec`` as int64 ``F × F × synapses``, or ``None`` without recurrence."""
    found = _feature_param(node, "w_rec", features, "recurrent weights")
    if found is None:
        return None
    w, f = found
    if w.ndim == 2:
        w = w[:, :, None]
    if w.ndim != 3 or w.shape[:2] != (f, f) or w.shape[2] not in (1, 2):
        raise fail(node, f"parameter 'w_rec' of shape {list(np.shape(node.params['w_rec']))}: must be "
                         f"[{f}, {f}] or [{f}, {f}, 2]")
    if not np.all(np.isfinite(w)) or np.any(w != np.round(w)) or np.any(np.abs(w) > _MAX_REC):
        raise fail(node, f"parameter 'w_rec' must hold whole numbers of magnitude at most {_MAX_REC}")
    return w.astype(np.int64)


def _aliases(node: Any, features: Shape) -> np.ndarray | None:
    """``aliases`` as int64 ``P × 2`` (source, target) pairs, or ``None`` without aliasing."""
    found = _feature_param(node, "aliases", features, "aliases")
    if found is None:
        return None
    a, f = found
    if a.ndim != 2 or a.shape[1] != 2:
        raise fail(node, f"parameter 'aliases' of shape {list(a.shape)}: must be [pairs, 2] (source, target)")
    bad = ~np.isfinite(a) | (a != np.round(a)) | (a < 0) | (a >= f)
    if np.any(bad):
        raise fail(node, f"parameter 'aliases' holds {float(a[bad].flat[0])!r}: neuron indices are whole numbers "
                         f"from 0 to {f - 1}")
    return a.astype(np.int64)


def alias_spikes(own: np.ndarray, aliases: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts after neuron aliasing (module docstring) and the spikes each neuron emits
    itself: ``own`` ``(batch, F)`` is ``floor(v / threshold)`` where ``v >= threshold``, else 0
    (not yet limited to ``cap`` = max_spikes); ``aliases`` the ``P × 2`` pairs. Returns
    ``(n, emitted)``: ``n`` what each neuron's output carries, ``emitted`` what it subtracts
    thresholds for. Works on integer or float arrays of whole numbers."""
    emitted = np.minimum(own, cap)
    n = emitted.copy()
    pairs = np.asarray(aliases, np.int64).reshape(-1, 2)
    fwd = pairs[pairs[:, 1] > pairs[:, 0]]
    targets: dict[int, list[int]] = {}
    for src, dst in fwd.tolist():
        targets.setdefault(src, []).append(dst)
    received: dict[int, np.ndarray] = {}
    for j in sorted(set(targets) | set(fwd[:, 1].tolist())):
        if j in received:  # a forward target: its own spikes fill what its sources left below cap
            a = received.pop(j)
            emitted[:, j] = np.minimum(own[:, j], np.maximum(cap - a, 0))
            n[:, j] = np.minimum(a + emitted[:, j], cap)
        for t in targets.get(j, ()):
            received[t] = received[t] + n[:, j] if t in received else n[:, j].copy()
    back = pairs[pairs[:, 1] <= pairs[:, 0]]
    if len(back):  # backward and self targets: the counts after the forward pass, all at once
        add = np.zeros_like(n)
        np.add.at(add.T, back[:, 1], n[:, back[:, 0]].T)
        n = np.minimum(n + add, cap)
    return n, emitted


def _settings(node: Any, features: Shape, second: bool = False) -> dict[str, Any]:
    syn_bits = int_attr(node, "syn_bits", BITSHIFT_DEFAULTS["syn_bits"], 2, _MAX_BITS)
    mem_bits = int_attr(node, "mem_bits", BITSHIFT_DEFAULTS["mem_bits"], 2, _MAX_BITS)
    mem_hi = 2 ** (mem_bits - 1) - 1
    w_rec = _recurrent(node, features)
    two = second or "dash_syn_2" in node.params or (w_rec is not None and w_rec.shape[2] == 2)
    return {
        "w_rec": w_rec,
        "aliases": _aliases(node, features),
        "dash_syn_2": _int_param(node, "dash_syn_2", features, 0, syn_bits - 1) if two else None,
        "syn": (-(2 ** (syn_bits - 1)), 2 ** (syn_bits - 1) - 1),
        "mem": (-(2 ** (mem_bits - 1)), mem_hi),
        "max_spikes": int_attr(node, "max_spikes", BITSHIFT_DEFAULTS["max_spikes"], 1, 2**31 - 1),
        "dash_syn": _int_param(node, "dash_syn", features, 0, syn_bits - 1),
        "dash_mem": _int_param(node, "dash_mem", features, 0, mem_bits - 1),
        "threshold": _int_param(node, "threshold", features, 1, mem_hi),
        "bias": _int_param(node, "bias", features, -mem_hi - 1, mem_hi, 0.0),
    }


_SLOTS = ("input", "input_2")


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    b = bind(node, shapes, _SLOTS)
    x = shape_of(b["input"])
    if len(x) < 1:
        raise fail(node, "input must be batch first")
    if b["input_2"] is not None and shape_of(b["input_2"]) != x:
        raise fail(node, f"input_2 of shape {list(shape_of(b['input_2']))}; input is {list(x)}")
    _settings(node, x[1:], b["input_2"] is not None)
    return [x]


def _integer(node: Any, x: np.ndarray) -> np.ndarray:
    xi = np.rint(x.astype(np.float64))
    if not np.array_equal(xi, x) or np.any(np.abs(xi) > 2.0**_MAX_BITS):
        raise fail(node, "takes integer synaptic input (integer weights times spike counts); got "
                         f"{float(x.flat[int(np.argmax(xi != x))])!r}")
    return xi.astype(np.int64)


def _step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
    b = bind(node, inputs, _SLOTS)
    x = np.asarray(b["input"])
    x2 = None if b["input_2"] is None else np.asarray(b["input_2"])
    if state is None:
        state = {"shape": x.shape, **_settings(node, x.shape[1:], x2 is not None), "i": np.zeros(x.shape, np.int64),
                 "v": np.zeros(x.shape, np.int64), "n": np.zeros(x.shape, np.int64)}
        if state["dash_syn_2"] is not None:
            state["i_2"] = np.zeros(x.shape, np.int64)
    elif state["shape"] != x.shape or (x2 is not None and x2.shape != x.shape):
        raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
    s = state
    xs = [_integer(node, x), None if x2 is None else _integer(node, x2)]
    if s["w_rec"] is not None:
        for k in range(s["w_rec"].shape[2]):
            r = s["n"] @ s["w_rec"][:, :, k]
            xs[k] = r if xs[k] is None else xs[k] + r
    i = bitshift_decay(np.clip(s["i"] + xs[0], *s["syn"]), s["dash_syn"])
    total = i
    new = {"i": i}
    if s["dash_syn_2"] is not None:
        i2 = s["i_2"] if xs[1] is None else np.clip(s["i_2"] + xs[1], *s["syn"])
        new["i_2"] = bitshift_decay(i2, s["dash_syn_2"])
        total = i + new["i_2"]
    v = np.clip(bitshift_decay(s["v"], s["dash_mem"]) + total + s["bias"], *s["mem"])
    own = np.where(v >= s["threshold"], v // s["threshold"], 0)
    if s["aliases"] is None:
        n = emitted = np.minimum(own, s["max_spikes"])
    else:
        n, emitted = alias_spikes(own, s["aliases"], s["max_spikes"])
    v = v - emitted * s["threshold"]
    return [as_f32(n.astype(np.float64))], {**s, **new, "v": v, "n": n}


register_op(OpDef("LIFBitshift", _SLOTS, _infer, step=_step, category="neuron",
                  doc="Xylo-family integer LIF: bit-shift decay, 16-bit saturating states, up to max_spikes "
                      "spikes per step, reset by subtraction; optionally a second synapse "
                      "(input_2), recurrent weights held in the node (w_rec) and Xylo's neuron aliasing (aliases)."))
