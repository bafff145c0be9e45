"""Where time begins and ends in a graph: ``Encoder`` (static data in, one frame per step out)
and ``Readout`` (one frame per step in, a static result after the last step).

A graph holding an ``Encoder`` is an *encoded* graph: it takes the same static inputs
``(N, *features)`` as the ANN it came from, runs its spiking part for the encoder's
``timesteps`` steps, and its ``Readout`` turns the steps back into one static tensor shaped
like the ANN's output, so accuracy and fidelity compare with the ANN directly
(:mod:`hwmap.execute` says how the executor runs such graphs). Because the encoding is a node,
every target receives the same input: a target states which encodings it accepts.

``Encoder`` (input: a static tensor; attributes ``encoding``, ``timesteps``, ``seed``)
outputs at each step ``t = 0 .. timesteps-1``, element by element:

* ``direct``: the input itself, every step (a graded current into the first layer;
  Rueckauer et al., Front. Neurosci. 11:682, 2017: analog input to the first hidden layer).
* ``rate``: deterministic regular spiking at the rate ``p = clip(x, 0, 1)`` spikes per step:
  an accumulator ``a`` starts at 0, ``a += p``, a spike where ``a >= 1``, then ``a -= 1``
  where it spiked. Over ``T`` steps an element spikes ``floor(T*p)`` times (up to float
  rounding), evenly spread.
* ``poisson``: a spike with probability ``p = clip(x, 0, 1)`` per step, independently
  (Bernoulli per step, the discrete-time Poisson process of Rueckauer et al. and Diehl et
  al., IJCNN 2015). The random numbers of a sample come from a generator seeded with
  ``(seed, digest of the sample's values)``, so a sample is encoded the same whatever batch it
  is run in, on every target and on every run.

Values of ``rate`` and ``poisson`` inputs outside [0, 1] are clipped: a probability or a
rate per step cannot leave that range. Spikes are 0.0/1.0 float32.

``Readout`` (input: the per-step tensor; attribute ``mode``) outputs after the last step:

* ``membrane`` (the default): the mean of its input over the steps: the membrane potential
  of a non-leaky integrator without threshold, starting at 0, that accumulates the input
  each step, divided by the step count, so it sits on the scale of the ANN output the input
  approximates (a converted network's output layer read as accumulated potential, as in
  Rueckauer et al. 2017).
* ``spike_count``: the sum of its input over the steps (the spike count of spiking outputs).

Both ops are stateful (they have ``step``): the state counts the steps, and the executor
reads the ``Readout``'s output at the last step.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, int_attr, shape_of

__all__ = ["ENCODINGS", "READOUT_MODES", "MAX_TIMESTEPS", "encoder_settings", "readout_mode"]

#: Values of the Encoder's ``encoding`` attribute and the Readout's ``mode`` (first: default).
ENCODINGS = ("direct", "rate", "poisson")
READOUT_MODES = ("membrane", "spike_count")
#: The largest ``timesteps`` an Encoder accepts (a bound on run time, not a hardware limit).
MAX_TIMESTEPS = 1 << 16


def encoder_settings(node: Any) -> tuple[str, int, int]:
    """``(encoding, timesteps, seed)`` of an Encoder node; a :class:`GraphError` naming the node
    for a value out of range."""
    encoding = node.attrs.get("encoding", ENCODINGS[0])
    if encoding not in ENCODINGS:
        raise fail(node, f"attribute 'encoding' = {encoding!r}: must be one of {', '.join(map(repr, ENCODINGS))}")
    timesteps = int_attr(node, "timesteps", None, 1, MAX_TIMESTEPS)
    seed = int_attr(node, "seed", 0, 0, 2**63 - 1)
    return encoding, timesteps, seed


def readout_mode(node: Any) -> str:
    """The ``mode`` of a Readout node (default ``"membrane"``)."""
    mode = node.attrs.get("mode", READOUT_MODES[0])
    if mode not in READOUT_MODES:
        raise fail(node, f"attribute 'mode' = {mode!r}: must be one of {', '.join(map(repr, READOUT_MODES))}")
    return mode


def _same_shape(check: Any) -> Any:
    def infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
        x = shape_of(bind(node, shapes, ("input",))["input"])
        if len(x) < 1:
            raise fail(node, "input must be batch first")
        check(node)
        return [x]
    return infer


def _sample_generators(x: np.ndarray, seed: int) -> list[np.random.Generator]:
    """One generator per sample, seeded from ``seed`` and the digest of the sample's values."""
    gens = []
    for sample in np.ascontiguousarray(x, dtype=np.float32):
        digest = int.from_bytes(hashlib.blake2b(sample.tobytes(), digest_size=8).digest(), "little")
        gens.append(np.random.default_rng([seed, digest]))
    return gens


def _encoder_step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    encoding, timesteps, seed = encoder_settings(node)
    if state is None:
        state = {"shape": x.shape, "t": 0}
        if encoding == "rate":
            state["acc"] = np.zeros(x.shape, np.float64)
        elif encoding == "poisson":
            state["gens"] = _sample_generators(x, seed)
    elif state["shape"] != x.shape:
        raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
    s = dict(state, t=state["t"] + 1)
    if encoding == "direct":
        return [as_f32(x)], s
    p = np.clip(x.astype(np.float64), 0.0, 1.0)
    if encoding == "rate":
        acc = s["acc"] + p
        z = acc >= 1.0
        s["acc"] = acc - z
    else:
        u = np.stack([g.random(x.shape[1:]) for g in s["gens"]]) if x.shape[0] else np.zeros(x.shape)
        z = u < p
    return [as_f32(z.astype(np.float64))], s


def _readout_step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
    x = np.asarray(bind(node, inputs, ("input",))["input"]).astype(np.float64)
    mode = readout_mode(node)
    if state is None:
        state = {"shape": x.shape, "t": 0, "sum": np.zeros(x.shape, np.float64)}
    elif state["shape"] != x.shape:
        raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
    s = {**state, "t": state["t"] + 1, "sum": state["sum"] + x}
    out = s["sum"] / s["t"] if mode == "membrane" else s["sum"]
    return [as_f32(out)], s


register_op(OpDef("Encoder", ("input",), _same_shape(encoder_settings), step=_encoder_step, category="time",
                  doc="Static data to one frame per time step: direct (graded), rate (regular spikes) or "
                      "poisson (seeded per sample); attribute timesteps sets how many steps the graph runs."))
register_op(OpDef("Readout", ("input",), _same_shape(readout_mode), step=_readout_step, category="time",
                  doc="One frame per step to a static result after the last step: the mean of the input "
                      "(membrane, default) or its sum (spike_count)."))
