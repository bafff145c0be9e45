"""The network description: what the substrate loads, and all the simulator reads.

A :class:`Description` is a NEF network reduced to what runs on cores:

* :class:`Population`: an ensemble's neurons: the neuron type (its JSON spec), ``gain`` and
  ``bias`` per neuron, the *scaled encoders* (``encoders · gain / radius``, nengo's
  ``scaled_encoders``) that take the ensemble's decoded input to currents, the initial state
  of every state variable, the seed of the stochastic types' generator, and the cores it
  occupies (``[core, first neuron, last neuron + 1]``, filled by the mapper);
* :class:`Host`: an object the host computer runs (nengo-loihi runs nodes on the host too):
  ``input`` (the network's static input, encoded into steps), ``node`` (a nengo Node: its
  callable is given to the simulator, never stored), ``output`` (a readout: the mean of its
  input over the steps, or the sum), ``probe`` (records its input each step);
* :class:`Link`: a connection: ``weights`` (``size_out × size_pre``: decoders times
  transform for a decoded connection, a weight matrix for a neuron-to-neuron one) from the
  output of ``pre`` to ``post``'s ``port`` (``"decoded"``: through the post population's
  scaled encoders; ``"neurons"``: into its neurons, times their gain as nengo does;
  ``"in"``: a host's input), through ``synapse`` (a filter spec, or ``None`` for none).

A link with a synapse delivers what it filtered at step ``k`` at step ``k+1`` (nengo's
one-step delay: the filter runs in the update phase); a link without one delivers within
the step, so links without synapses must not form a cycle.

:func:`write` stores it as ``network.json`` (everything but arrays, keys sorted) and
``arrays.npz``; :func:`read` reads it back, checking every field and naming the file and the
key of anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hwmap.passes import ENCODINGS, READOUTS

__all__ = ["Population", "Host", "Link", "Description", "write", "read", "FORMAT", "VERSION", "JSON_FILE",
           "ARRAYS_FILE", "HOST_KINDS", "PORTS"]

FORMAT = "hwmap-nengo-like-network"
VERSION = 1
JSON_FILE = "network.json"
ARRAYS_FILE = "arrays.npz"
HOST_KINDS = ("input", "node", "output", "probe")
#: the most steps a description may ask for (1000 s at dt = 1 ms): the simulator's records
#: grow with the steps, and the steps come from a file the user hands over
MAX_STEPS = 1_000_000
PORTS = ("decoded", "neurons", "in")


@dataclass
class Population:
    name: str
    n: int
    dims: int
    neuron: dict[str, Any]
    gain: np.ndarray
    bias: np.ndarray
    encoders: np.ndarray  # scaled encoders, n × dims
    state: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    cores: list[list[int]] = field(default_factory=list)
    label: str = ""


@dataclass
class Host:
    name: str
    kind: str
    size_in: int
    size_out: int
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Link:
    name: str
    pre: str
    post: str
    port: str
    weights: np.ndarray
    synapse: dict[str, Any] | None = None


@dataclass
class Description:
    name: str
    dt: float
    steps: int | None
    populations: list[Population] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def population(self, name: str) -> Population:
        return next(p for p in self.populations if p.name == name)

    def size_out(self, name: str) -> int:
        for p in self.populations:
            if p.name == name:
                return p.n
        for h in self.hosts:
            if h.name == name:
                return h.size_out
        raise KeyError(name)


def _arrays(d: Description) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(d.populations):
        out[f"p{i}.gain"] = np.asarray(p.gain, np.float64)
        out[f"p{i}.bias"] = np.asarray(p.bias, np.float64)
        out[f"p{i}.encoders"] = np.asarray(p.encoders, np.float64)
        for k, v in sorted(p.state.items()):
            out[f"p{i}.state.{k}"] = np.asarray(v, np.float64)
    for i, link in enumerate(d.links):
        out[f"l{i}.weights"] = np.asarray(link.weights, np.float64)
    return out


def to_json(d: Description) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "name": d.name, "dt": d.dt, "steps": d.steps, "meta": d.meta,
        "populations": [{"name": p.name, "label": p.label, "n": p.n, "dims": p.dims, "neuron": p.neuron,
                         "seed": p.seed, "cores": p.cores, "state": sorted(p.state)} for p in d.populations],
        "hosts": [{"name": h.name, "kind": h.kind, "size_in": h.size_in, "size_out": h.size_out, "attrs": h.attrs}
                  for h in d.hosts],
        "links": [{"name": x.name, "pre": x.pre, "post": x.post, "port": x.port, "synapse": x.synapse,
                   "shape": list(np.shape(x.weights))} for x in d.links],
    }


def write(d: Description, outdir: Path) -> list[str]:
    """Write ``network.json`` and ``arrays.npz`` into ``outdir``; the files written."""
    from hwmap.graph import save_npz
    from hwmap.jsonio import dumps

    (outdir / JSON_FILE).write_text(dumps(to_json(d)))
    save_npz(outdir / ARRAYS_FILE, _arrays(d))
    return [JSON_FILE, ARRAYS_FILE]


class DescriptionError(ValueError):
    pass


def _get(obj: Any, key: str, types: Any, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DescriptionError(f"{where}: missing key {key!r}")
    v = obj[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple)
                                                                        else (types,))):
        raise DescriptionError(f"{where}: {key} = {v!r:.60} is not a {types}")
    return v


def _array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in arrays:
        raise DescriptionError(f"{where}: {ARRAYS_FILE} has no array {key!r}")
    a = np.asarray(arrays[key], np.float64)
    if a.shape != shape or not np.all(np.isfinite(a)):
        raise DescriptionError(f"{where}: array {key!r} has shape {list(a.shape)} (expected {list(shape)}) or "
                               "non-finite values")
    return a


def from_parts(doc: Any, arrays: dict[str, np.ndarray], where: str) -> Description:
    """A description from its JSON document and arrays; :class:`DescriptionError` naming the
    key for anything malformed."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise DescriptionError(f"{where}: not a {FORMAT} version {VERSION}")
    dt = float(_get(doc, "dt", (int, float), where))
    if not dt > 0:
        raise DescriptionError(f"{where}: dt = {dt!r} must be positive")
    steps = doc.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS):
        raise DescriptionError(f"{where}: steps = {steps!r:.30} must be an integer from 1 to {MAX_STEPS:,} or null")
    d = Description(str(_get(doc, "name", str, where)), dt, steps, meta=dict(doc.get("meta") or {}))
    names: set[str] = set()
    for i, p in enumerate(_get(doc, "populations", list, where)):
        at = f"{where}: populations[{i}]"
        n = _get(p, "n", int, at)
        dims = _get(p, "dims", int, at)
        if n < 1 or dims < 0:
            raise DescriptionError(f"{at}: n = {n}, dims = {dims} out of range")
        state = {k: _array(arrays, f"p{i}.state.{k}", (n,), at) for k in _get(p, "state", list, at)}
        name = _get(p, "name", str, at)
        names.add(name)
        d.populations.append(Population(
            name, n, dims, _get(p, "neuron", dict, at), _array(arrays, f"p{i}.gain", (n,), at),
            _array(arrays, f"p{i}.bias", (n,), at), _array(arrays, f"p{i}.encoders", (n, dims), at), state,
            _get(p, "seed", int, at), [list(c) for c in _get(p, "cores", list, at)], str(p.get("label", ""))))
    for i, h in enumerate(_get(doc, "hosts", list, where)):
        at = f"{where}: hosts[{i}]"
        kind = _get(h, "kind", str, at)
        if kind not in HOST_KINDS:
            raise DescriptionError(f"{at}: kind {kind!r} is not one of {HOST_KINDS}")
        name = _get(h, "name", str, at)
        names.add(name)
        host = Host(name, kind, _get(h, "size_in", int, at), _get(h, "size_out", int, at), dict(h.get("attrs") or {}))
        _check_host(host, at)
        d.hosts.append(host)
    for i, x in enumerate(_get(doc, "links", list, where)):
        at = f"{where}: links[{i}]"
        pre, post, port = _get(x, "pre", str, at), _get(x, "post", str, at), _get(x, "port", str, at)
        if pre not in names or post not in names or port not in PORTS:
            raise DescriptionError(f"{at}: pre {pre!r}, post {post!r} or port {port!r} unknown")
        shape = tuple(int(s) for s in _get(x, "shape", list, at))
        syn = x.get("synapse")
        if syn is not None and not isinstance(syn, dict):
            raise DescriptionError(f"{at}: synapse {syn!r:.60} is not a filter spec")
        d.links.append(Link(_get(x, "name", str, at), pre, post, port, _array(arrays, f"l{i}.weights", shape, at),
                            syn))
    _check_output_shapes(d, where)
    return d


def _check_host(h: Host, at: str) -> None:
    """The attributes the simulator reads from a host, as the converter writes them."""
    if h.size_in < 0 or h.size_out < 0:
        raise DescriptionError(f"{at}: size_in = {h.size_in}, size_out = {h.size_out} must not be negative")
    a = h.attrs
    if h.kind == "input":
        if a.get("encoding", "direct") not in ENCODINGS:
            raise DescriptionError(f"{at}: attrs.encoding = {a.get('encoding')!r:.40} is not one of {ENCODINGS}")
        for key in ("scale", "seed"):
            v = a.get(key, 0)
            if not _finite_number(v):
                raise DescriptionError(f"{at}: attrs.{key} = {v!r:.40} is not a finite number")
    if h.kind == "output":
        if a.get("mode", "membrane") not in READOUTS:
            raise DescriptionError(f"{at}: attrs.mode = {a.get('mode')!r:.40} is not one of {READOUTS}")
        bias = a.get("bias", 0.0)
        if not (_finite_number(bias) or isinstance(bias, list) and len(bias) == h.size_in
                and all(_finite_number(v) for v in bias)):
            raise DescriptionError(f"{at}: attrs.bias must be a finite number or a list of {h.size_in} "
                                   f"(size_in) finite numbers")


def _finite_number(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and bool(np.isfinite(v))


def _check_output_shapes(d: Description, where: str) -> None:
    """``meta.output_shapes``: for outputs only, each a list of positive sizes holding exactly
    the output's ``size_in`` values."""
    shapes = d.meta.get("output_shapes", {})
    outs = {h.name: h.size_in for h in d.hosts if h.kind == "output"}
    if not isinstance(shapes, dict):
        raise DescriptionError(f"{where}: meta.output_shapes is not a table of output names")
    for name, shape in shapes.items():
        if name not in outs:
            raise DescriptionError(f"{where}: meta.output_shapes names {name!r:.60}, which is not an output")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                  for s in shape) or int(np.prod(shape, dtype=object)) != outs[name]:
            raise DescriptionError(f"{where}: meta.output_shapes[{name!r}] = {shape!r:.60} does not hold the "
                                   f"output's {outs[name]} values")


def read(artifacts: Any) -> Description:
    """The description in ``artifacts`` (read only through :class:`hwmap.Artifacts`)."""
    from hwmap import TargetError

    doc = artifacts.read_json(JSON_FILE)
    arrays = artifacts.load_npz(ARRAYS_FILE)
    try:
        return from_parts(doc, dict(arrays), JSON_FILE)
    except DescriptionError as e:
        raise TargetError(str(e), where=str(artifacts.directory)) from None
