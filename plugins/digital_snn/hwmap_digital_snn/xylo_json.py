"""The ``.xylo.json`` frontend: Rockpool's Xylo specification as an hwmap graph.

Rockpool's Xylo mappers (``rockpool.devices.xylo.syns61201.mapper``, ``syns63300.mapper``)
and its quantizers produce a *specification*: a dictionary of the device's integer
parameters, the arguments of ``config_from_specification`` and ``XyloSim.from_specification``.
Saved as JSON of nested lists (:func:`save_xylo_json`) in a file named ``*.xylo.json``, a
network already quantized for Xylo imports bit-exactly. The keys (``Nin`` input channels,
``Nhid`` hidden neurons, ``Nout`` outputs, ``S`` synapses per hidden neuron, 1 or 2):

==================================  ============================================================
``weights_in``                      int8 ``Nin × Nres [× S]`` (``Nres <= Nhid``: the first
                                    ``Nres`` hidden neurons take input)
``weights_rec``                     int8 ``Nhid × Nhid [× S]`` (optional; zeros; sets ``Nhid``)
``weights_out``                     int8 ``Nout_res × Nout`` (``Nout_res <= Nhid``: the *last*
                                    ``Nout_res`` hidden neurons drive the outputs, as Xylo
                                    IMU's output expansion neurons; ``Nhid`` without W_rec)
``dash_mem``, ``dash_syn``,         hidden decays ``[Nhid]``, 0..15 (default 1, as Rockpool's
``dash_syn_2``                      ``config_from_specification``)
``dash_mem_out``, ``dash_syn_out``  output decays ``[Nout]``, 0..15 (default 1)
``threshold``, ``threshold_out``    ``[Nhid]``, ``[Nout]``, 1..32767 (required)
``bias`` (or ``bias_hidden``),      ``[Nhid]``, ``[Nout]``, 16-bit (default 0)
``bias_out``
``weight_shift_in/rec/out``         left shifts of the weight matrices, 0..15 (default 0)
``aliases``                         ``Nhid`` lists of hidden neuron ids (optional): neuron
                                    ``j``'s alias targets (below)
``dt``                              seconds per step (optional; the device's otherwise)
``mapped_graph``                    ignored (Rockpool's graph object; not data)
==================================  ============================================================

**Aliases.** Rockpool's ``aliases``: "for each neuron in the hidden population, a list
containing the alias targets for that neuron" (``syns61201.config_from_specification``); its
mappers fill it from ``AliasConnection`` graph modules, which its ``Residual`` combinator
wraps around the block (the block's input neurons aliased one to one onto its output
neurons: the bypass adds the input layer's spikes to the output layer's, and they leave
through the output layer's fan-out). They are read as ``(source, target)`` pairs in the
lists' order and held by the hidden node (:mod:`hwmap.ops.bitshift` gives the semantics, as
``xylosim`` computes them); the target ids must be hidden neurons, each list at most
``Nhid`` long. The chip's configuration holds one target per neuron (the digital_snn rule
``alias_targets``).

Any other key, a non-integer, a ragged or mis-shaped list or a value out of range is refused
with a :class:`hwmap.ModelError` naming the file and the key (exit code 2). The file is at
most :data:`MAX_BYTES` long, checked before it is read; array sizes are checked against
:data:`MAX_NEURONS` before anything is built.

**The graph.** ``input`` (events per channel and step, ``(N, T, Nin)``) → ``Gemm`` ``w_in``
(and ``w_in_2`` for the second synapse) → ``LIFBitshift`` ``hidden`` → ``Delay`` ``hidden_lag``
(one step) → ``Gemm`` ``w_out`` → ``LIFBitshift`` ``output`` (one spike per step at most),
whose spikes per step are the graph's output. Weight shifts are folded into the weights
(``w << shift``: the same products). **Recurrence** is carried inside the hidden node: the
core's ``LIFBitshift`` holds ``W_rec`` as its ``w_rec`` param and adds its own spikes of the
step before through it (:mod:`hwmap.ops.bitshift`); an acyclic graph cannot hold the loop
as edges. So the whole hidden population, feed-forward layers, residual bypasses and
recurrent weights alike, is one node: hwmap's reference executor runs it as XyloSim does
(one step of lag through ``W_rec`` and ``W_out``; the explicit ``Delay`` is the device's lag
into the outputs), and the digital_snn target maps it as one population. What the graph does
not give back is the layer structure the network had before Rockpool folded it (per-layer
KPIs show one hidden layer). Exact while a step's weighted input stays below 2**24 in
magnitude (the Gemm's float32 sums; beyond the 16-bit states anyway, where both saturate),
and, as for XyloSim everywhere, while no partial sum of one step's events leaves the 16-bit
range (:mod:`hwmap.ops.bitshift`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hwmap import Graph, ModelError, Node, Tensor

from .hardware import MAX_NEURONS

__all__ = ["SUFFIX", "MAX_BYTES", "KEYS", "XyloSpec", "read_xylo_json", "parse_spec", "spec_graph", "save_xylo_json",
           "read_spec"]

SUFFIX = ".xylo.json"
#: Largest .xylo.json read (a dense 1000-neuron Xylo Audio 2 specification is about 9 MB).
MAX_BYTES = 256 << 20
#: Xylo's states, hidden spikes per step and readout spikes per step (Rockpool 3.1, XyloSim).
STATE_BITS, HIDDEN_SPIKES, OUTPUT_SPIKES = 16, 31, 1
_W = (-128, 127)
_DASH = (0, 15)
_THR = (1, 2**15 - 1)
_BIAS = (-(2**15), 2**15 - 1)
_SHIFT = (0, 15)
KEYS = ("weights_in", "weights_rec", "weights_out", "dash_mem", "dash_syn", "dash_syn_2", "dash_mem_out",
        "dash_syn_out", "threshold", "threshold_out", "bias", "bias_hidden", "bias_out", "weight_shift_in",
        "weight_shift_rec", "weight_shift_out", "aliases", "dt", "mapped_graph")


class XyloSpec(dict):  # type: ignore[type-arg]
    """A checked specification: int64 arrays by Rockpool's keys, ``weights_in`` and
    ``weights_rec`` always ``… × S``, the shifts as ints, ``dt`` a float or ``None``."""

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(Nin, Nhid, Nout, S)``."""
        w_in, w_out = self["weights_in"], self["weights_out"]
        return int(w_in.shape[0]), int(w_out.shape[0]), int(w_out.shape[1]), int(w_in.shape[2])


def _fail(where: str, key: str, what: str) -> ModelError:
    return ModelError(f"{key}: {what}", where=where)


def _shape(value: Any, where: str, key: str) -> tuple[int, ...]:
    """The shape of nested lists, checked rectangular, without building an array."""
    shape: list[int] = []
    v = value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    level = [value]
    for d, n in enumerate(shape):
        nxt = []
        for item in level:
            if not isinstance(item, list) or len(item) != n:
                raise _fail(where, key, f"is not a rectangular array (axis {d} should have {n} entries)")
            nxt.extend(item)
        level = nxt
    for item in level:
        if isinstance(item, list) or isinstance(item, bool) or not isinstance(item, int):
            kind = "a list too deep" if isinstance(item, list) else f"{type(item).__name__} {item!r}"[:60]
            raise _fail(where, key, f"holds {kind}: Xylo parameters are integers")
    return tuple(shape)


def _array(doc: Mapping[str, Any], key: str, where: str, shapes: Sequence[tuple[int, ...]], lo: int, hi: int,
           default: int | None = None) -> np.ndarray:
    """``doc[key]`` as int64 of one of ``shapes`` (``-1``: any size up to MAX_NEURONS), within ``lo..hi``."""
    if key not in doc:
        if default is None:
            raise _fail(where, key, "is missing")
        fixed = next(s for s in shapes if -1 not in s)
        return np.full(fixed, default, np.int64)
    value = doc[key]
    if not isinstance(value, list):
        raise _fail(where, key, f"must be a list, got {type(value).__name__}")
    shape = _shape(value, where, key)
    ok = [s for s in shapes if len(s) == len(shape) and all(w in (-1, g) for w, g in zip(s, shape))]
    if not ok:
        want = " or ".join("[" + ", ".join("any" if d == -1 else str(d) for d in s) + "]" for s in shapes)
        raise _fail(where, key, f"has shape {list(shape)}; expected {want}")
    if any(d > MAX_NEURONS for d in shape):
        raise _fail(where, key, f"has shape {list(shape)}: more than {MAX_NEURONS} along an axis")
    try:
        a = np.asarray(value, dtype=np.int64).reshape(shape)
    except OverflowError:
        raise _fail(where, key, f"holds an integer beyond 64 bits, outside {lo}..{hi}") from None
    bad = (a < lo) | (a > hi)
    if np.any(bad):
        raise _fail(where, key, f"holds {int(a[bad].flat[0])}, outside {lo}..{hi}")
    return a


def _int(doc: Mapping[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    v = doc.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(where, key, f"= {str(v)[:40]}: must be an integer from {lo} to {hi}")
    return v


def _aliases(value: Any, n_hid: int, where: str) -> np.ndarray:
    """Rockpool's ``aliases`` (``Nhid`` lists of target ids) as ``(source, target)`` pairs,
    ``P × 2`` int64, in the lists' order (module docstring)."""
    if value is None:
        return np.zeros((0, 2), np.int64)
    if not isinstance(value, list) or len(value) != n_hid or not all(isinstance(a, list) for a in value):
        raise _fail(where, "aliases", f"must be {n_hid} lists (one per hidden neuron)")
    pairs = []
    for j, targets in enumerate(value):
        if len(targets) > n_hid:
            raise _fail(where, "aliases", f"hidden neuron {j} has {len(targets)} alias targets, more than the "
                        f"{n_hid} hidden neurons")
        for t in targets:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_hid:
                raise _fail(where, "aliases", f"hidden neuron {j} has alias target {str(t)[:40]}: targets are hidden "
                            f"neuron ids from 0 to {n_hid - 1}")
            pairs.append((j, t))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def parse_spec(doc: Any, where: str) -> XyloSpec:
    """A specification dictionary (JSON types: nested lists of ints) checked and as arrays
    (module docstring); :class:`ModelError` naming ``where`` and the key otherwise."""
    if not isinstance(doc, dict):
        raise ModelError(f"a Xylo specification is a JSON object of Rockpool's keys; got {type(doc).__name__}",
                         where=where)
    unknown = sorted(k for k in doc if k not in KEYS)
    if unknown:
        raise _fail(where, str(unknown[0])[:60], f"is not a Xylo specification key (known: {', '.join(KEYS)})")
    if "bias" in doc and "bias_hidden" in doc:
        raise _fail(where, "bias_hidden", "given together with bias (the same parameter)")
    w_out = _array(doc, "weights_out", where, [(-1, -1)], *_W)
    n_oen, n_out = w_out.shape
    if n_oen < 1 or n_out < 1:
        raise _fail(where, "weights_out", f"has shape {list(w_out.shape)}: no hidden or no output neuron")
    n_hid = n_oen
    if isinstance(doc.get("weights_rec"), list) and doc["weights_rec"]:
        n_hid = len(doc["weights_rec"])
        if not n_oen <= n_hid <= MAX_NEURONS:
            raise _fail(where, "weights_rec", f"has {n_hid} rows: Nhid must be at least weights_out's {n_oen} rows "
                        f"and at most {MAX_NEURONS}")
        w_out = np.concatenate([np.zeros((n_hid - n_oen, n_out), np.int64), w_out], axis=0)
    w_in = _array(doc, "weights_in", where, [(-1, -1), (-1, -1, 1), (-1, -1, 2)], *_W)
    if w_in.ndim == 2:
        w_in = w_in[:, :, None]
    n_in, n_res, n_syn = w_in.shape
    if n_in < 1 or not 1 <= n_res <= n_hid:
        raise _fail(where, "weights_in", f"has shape {list(w_in.shape)}: needs at least one input channel and at "
                    f"most Nhid = {n_hid} target neurons")
    if n_res < n_hid:
        w_in = np.concatenate([w_in, np.zeros((n_in, n_hid - n_res, n_syn), np.int64)], axis=1)
    if "weights_rec" in doc:
        w_rec = _array(doc, "weights_rec", where, [(n_hid, n_hid), (n_hid, n_hid, 1), (n_hid, n_hid, 2)], *_W)
        w_rec = w_rec[:, :, None] if w_rec.ndim == 2 else w_rec
    else:
        w_rec = np.zeros((n_hid, n_hid, n_syn), np.int64)
    if w_rec.shape[2] != n_syn:
        # Rockpool: one 2-D matrix means one synapse; pad the other to two
        pad = lambda w: np.concatenate([w, np.zeros(w.shape[:2] + (1,), np.int64)], axis=2)  # noqa: E731
        w_in, w_rec, n_syn = (w_in, pad(w_rec), 2) if n_syn == 2 else (pad(w_in), w_rec, 2)
    hid = [(n_hid,)]
    out = [(n_out,)]
    spec = XyloSpec(weights_in=w_in, weights_rec=w_rec, weights_out=w_out)
    spec["dash_mem"] = _array(doc, "dash_mem", where, hid, *_DASH, default=1)
    spec["dash_syn"] = _array(doc, "dash_syn", where, hid, *_DASH, default=1)
    spec["dash_syn_2"] = _array(doc, "dash_syn_2", where, hid, *_DASH, default=1)
    spec["dash_mem_out"] = _array(doc, "dash_mem_out", where, out, *_DASH, default=1)
    spec["dash_syn_out"] = _array(doc, "dash_syn_out", where, out, *_DASH, default=1)
    spec["threshold"] = _array(doc, "threshold", where, hid, *_THR)
    spec["threshold_out"] = _array(doc, "threshold_out", where, out, *_THR)
    bias_key = "bias_hidden" if "bias_hidden" in doc else "bias"
    spec["bias"] = _array(doc, bias_key, where, hid, *_BIAS, default=0)
    spec["bias_out"] = _array(doc, "bias_out", where, out, *_BIAS, default=0)
    for k in ("weight_shift_in", "weight_shift_rec", "weight_shift_out"):
        spec[k] = _int(doc, k, where, *_SHIFT)
    spec["aliases"] = _aliases(doc.get("aliases"), n_hid, where)
    dt = doc.get("dt")
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt <= 10.0):
        raise _fail(where, "dt", f"= {str(dt)[:40]}: must be a number of seconds in (0, 10]")
    spec["dt"] = None if dt is None else float(dt)
    return spec


def read_spec(path: Path | str) -> XyloSpec:
    """The checked specification in the ``.xylo.json`` file ``path``."""
    from hwmap.safeio import parse_json, read_file

    where = str(path)
    raw = read_file(Path(path), what="Xylo specification", error=ModelError, limit=MAX_BYTES)
    return parse_spec(parse_json(raw, what="Xylo specification", where=where, error=ModelError), where)


def read_xylo_json(path: Path | str, name: str | None = None) -> Graph:
    """The graph of the ``.xylo.json`` file ``path`` (module docstring)."""
    spec = read_spec(path)
    stem = Path(path).name[: -len(SUFFIX)] if str(path).endswith(SUFFIX) else Path(path).stem
    try:
        return spec_graph(spec, name or stem or "xylo")
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - a graph the checks let through but the ops refuse: still the file's
        raise ModelError(f"does not build a graph: {e}", where=str(path)) from None


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32)


def spec_graph(spec: XyloSpec, name: str) -> Graph:
    """The hwmap graph of a checked specification (module docstring)."""
    n_in, n_hid, n_out, n_syn = spec.sizes
    dt = spec["dt"]
    step = dt if dt is not None else 1.0
    sh_in, sh_rec, sh_out = (2 ** spec[k] for k in ("weight_shift_in", "weight_shift_rec", "weight_shift_out"))
    nodes: list[Node] = []
    hid_inputs = []
    for k in range(n_syn):
        t = "w_in" if k == 0 else f"w_in_{k + 1}"
        nodes.append(Node(t, "Gemm", ["input"], [t], {"transB": 1}, {"B": _f32(spec["weights_in"][:, :, k].T * sh_in)}))
        hid_inputs.append(t)
    hid_params = {"dash_mem": spec["dash_mem"], "dash_syn": spec["dash_syn"], "threshold": spec["threshold"],
                  "bias": spec["bias"]}
    if n_syn == 2:
        hid_params["dash_syn_2"] = spec["dash_syn_2"]
    if np.any(spec["weights_rec"]):
        hid_params["w_rec"] = spec["weights_rec"] * sh_rec
    if len(spec["aliases"]):
        hid_params["aliases"] = spec["aliases"]
    bits = {"syn_bits": STATE_BITS, "mem_bits": STATE_BITS}
    nodes.append(Node("hidden", "LIFBitshift", hid_inputs, ["hidden"], {**bits, "max_spikes": HIDDEN_SPIKES},
                      {k: _f32(v) for k, v in hid_params.items()}))
    nodes.append(Node("hidden_lag", "Delay", ["hidden"], ["hidden_lag"], {"dt": step},
                      {"delay": np.full(n_hid, step, np.float32)}))
    nodes.append(Node("w_out", "Gemm", ["hidden_lag"], ["w_out"], {"transB": 1},
                      {"B": _f32(spec["weights_out"].T * sh_out)}))
    nodes.append(Node("output", "LIFBitshift", ["w_out"], ["output"], {**bits, "max_spikes": OUTPUT_SPIKES},
                      {"dash_mem": _f32(spec["dash_mem_out"]), "dash_syn": _f32(spec["dash_syn_out"]),
                       "threshold": _f32(spec["threshold_out"]), "bias": _f32(spec["bias_out"])}))
    tensors = {"input": Tensor("input", (1, n_in))}
    for t, n in (("w_in", n_hid), ("w_in_2", n_hid), ("hidden", n_hid), ("hidden_lag", n_hid), ("w_out", n_out),
                 ("output", n_out)):
        tensors[t] = Tensor(t, (1, n))
    if n_syn == 1:
        del tensors["w_in_2"]
    meta: dict[str, Any] = {"dt": dt, "source_format": "xylo-spec"}
    return Graph(name, ["input"], ["output"], nodes, tensors, meta).validate()


def save_xylo_json(spec: Mapping[str, Any], path: Path | str) -> Path:
    """Write a Rockpool Xylo specification (the dictionary its mappers and quantizers give,
    numpy arrays or lists) to ``path`` as ``.xylo.json``: nested lists of ints, ``dt`` a
    number; ``mapped_graph`` and ``None`` values are left out. Returns the path. Values are
    written as given; :func:`read_spec` checks them."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise ValueError(f"a Xylo specification file is named *{SUFFIX}; got {path.name!r}")
    doc: dict[str, Any] = {}
    for k, v in spec.items():
        if k == "mapped_graph" or v is None:
            continue
        if k == "dt":
            doc[k] = float(v)
        elif k == "aliases":
            doc[k] = [[int(t) for t in a] for a in v]
        elif isinstance(v, (int, np.integer)):
            doc[k] = int(v)
        else:
            a = np.asarray(v)
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
                    raise ValueError(f"{k}: not whole numbers; quantize the specification first")
                a = np.rint(a).astype(np.int64)
            doc[k] = a.astype(np.int64).tolist()
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path
