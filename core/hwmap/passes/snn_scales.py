"""The rewrite of the ANN-to-SNN conversion (:mod:`hwmap.passes.snn_convert` explains the
method): each layer's scale from a percentile of its calibration activations, scale
propagation through the graph, and the weights, biases and neurons rewritten for one
percentile (:class:`ScaleBuilder`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GraphError, HwmapError
from ..graph import Graph, Node, Tensor
from .base import prune_tensors, unique_node_name
from . import snn_settings as settings
from .snn_settings import JOIN_OPS, LINEAR_OPS, Conversion, ConversionSettings, LayerScale

__all__ = ["ScaleBuilder"]

_POOLS = ("AveragePool", "GlobalAveragePool")
_RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


# -- scales: arrays broadcast to a sample (trailing alignment), kept as small as they can be -----------
def _compact(s: Any) -> np.ndarray:
    """``s`` with every axis along which it is constant reduced to size 1, leading size-1
    axes dropped (a scalar when it is constant)."""
    a = np.asarray(s, dtype=np.float64)
    for ax in range(a.ndim):
        if a.shape[ax] > 1 and np.all(a == a.take([0], axis=ax)):
            a = a.take([0], axis=ax)
    while a.ndim and a.shape[0] == 1:
        a = a[0]
    return a


def _channel_vector(s: np.ndarray, sample: tuple[int, ...]) -> np.ndarray | None:
    """``s`` as one value per channel (axis 0 of the sample), or ``None`` if it varies along
    another axis."""
    full = np.broadcast_to(s, sample) if sample else np.asarray(s)
    if not sample:
        return full.reshape(1)
    flat = full.reshape(sample[0], -1)
    if not np.all(flat == flat[:, :1]):
        return None
    return flat[:, 0].copy()


def _per_channel(vec: np.ndarray, rank: int) -> np.ndarray:
    """A channel vector as a sample-shaped scale of ``rank`` axes: ``(C, 1, ..., 1)``."""
    return _compact(vec.reshape((-1,) + (1,) * (rank - 1))) if rank else _compact(vec)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        x, y = np.broadcast_arrays(a, b)
    except ValueError:
        return False
    return bool(np.allclose(x, y, rtol=1e-12, atol=0.0))


def _percentiles(a: np.ndarray, p: float, per_channel: bool) -> tuple[np.ndarray, int, int]:
    """The ``p``-th percentile of the positive values of ``a`` (batch first), per channel
    (axis 1) or over the tensor (numpy's linear interpolation); how many values were
    positive; how many channels had none (they get the tensor's percentile, or 1)."""
    a = np.asarray(a, dtype=np.float64)
    pos = a[a > 0]
    whole = float(np.percentile(pos, p)) if pos.size else 1.0
    if not per_channel or a.ndim < 2:
        return np.asarray(whole), int(pos.size), int(pos.size == 0)
    per = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    out = np.empty(a.shape[1])
    dead = 0
    for c in range(a.shape[1]):
        v = per[c][per[c] > 0]
        if v.size:
            out[c] = np.percentile(v, p)
        else:
            out[c], dead = whole, dead + 1
    return _per_channel(out, a.ndim - 1), int(pos.size), dead


class ScaleBuilder:
    """Scale propagation and the rewrite, for one percentile (one use: :meth:`build`).

    Every tensor ``t`` of the spiking graph stands for the ANN's ``t`` divided by a scale
    ``σ(t)`` (an array broadcast to one sample: a scalar, or one value per channel): a
    neuron layer's spikes have ``σ = λ``, the encoded input ``λ_0``. A backward pass first
    finds the scale each tensor is *needed* at by its first reader that cares (an IF: its
    ``λ``; a graph output: 1; a join or a pass-through op: what its output is needed at;
    a weighted op: none). The forward pass then rewrites each node so that its output has
    the scale needed: a weighted op absorbs ``σ_in/σ_out`` in its weights and ``1/σ_out``
    in its bias; where a tensor's scale is not the one its reader needs (a tensor with
    several readers, or behind an op without weights) a ``Mul`` by ``σ(t)/σ_needed`` is
    inserted on that edge.
    """

    def __init__(self, ann: Graph, acts: dict[str, np.ndarray], x: np.ndarray, config: ConversionSettings,
                 percentile: float, notes: list[str]) -> None:
        self.ann, self.acts, self.x, self.config, self.p, self.notes = ann, acts, x, config, percentile, notes
        self.g = ann.copy()
        self.sigma: dict[str, np.ndarray] = {}
        self.taken: set[str] = {sub.name for n in ann.nodes for sub in n.walk()}
        self.scales: list[LayerScale] = []
        self.neurons: list[str] = []
        self.lam: dict[str, np.ndarray] = {}
        self.out_lam: dict[str, np.ndarray] = {}
        self.spiking_outputs = config.readout == "spike_count"

    def _sample(self, t: str) -> tuple[int, ...]:
        return tuple(self.g.tensors[t].shape[1:])

    def _layer_scale(self, node: str, tensor: str) -> np.ndarray:
        a = self.acts[tensor]
        per_channel = self.config.normalization == "channel" and a.ndim >= 3
        lam, active, dead = _percentiles(a, self.p, per_channel)
        self.scales.append(LayerScale(node, tuple(float(v) for v in lam.ravel()), active, int(a.size), dead))
        if dead and not per_channel or active == 0:
            self.notes.append(f"{node!r} was never positive on the calibration samples: its scale is 1")
        elif dead:
            were = "were" if dead > 1 else "was"
            self.notes.append(f"{node!r}: {dead} of {a.shape[1]} channels {were} never positive on the calibration "
                              "samples and got the layer's scale")
        return lam

    def _needed(self) -> dict[str, np.ndarray | None]:
        """The scale each tensor is needed at by its first reader that cares (backward)."""
        need: dict[str, np.ndarray | None] = {}
        for n in self.ann.nodes:
            if n.op == "Relu":
                self.lam[n.name] = self._layer_scale(n.name, n.outputs[0])
        for o in self.ann.outputs:
            if self.spiking_outputs:
                self.out_lam[o] = self._layer_scale(f"{o}_neurons", o)
            need[o] = self.out_lam.get(o, np.asarray(1.0))
        for n in reversed(self.ann.nodes):
            out = need.get(n.outputs[0]) if n.outputs else None
            wants: list[np.ndarray | None]
            if n.op == "Relu":
                wants = [self.lam[n.name]]
            elif n.op in LINEAR_OPS:
                wants = [None if out is None else self._through(n, out, backward=True)]
            elif n.op == "Concat":
                wants = list(self._split(n, out)) if out is not None else [None] * len(n.inputs)
            elif n.op in JOIN_OPS:
                shape = self.ann.tensors[n.outputs[0]].shape
                wants = [out if self.ann.tensors[t].shape == shape else None for t in n.inputs]
            else:
                wants = [None] * len(n.inputs)
            for t, w in zip(n.inputs, wants):
                if w is not None and need.get(t) is None:
                    need[t] = w
        return need

    def build(self) -> Conversion:
        cfg = self.config
        need = self._needed()
        inp = self.ann.inputs[0]
        lam0 = 1.0
        pre: list[Node] = []
        enc_in = inp
        if cfg.encoding != "direct":
            negative = float(np.mean(self.x < 0))
            if negative > 0:
                self.notes.append(f"{negative:.1%} of the calibration input values are negative: the {cfg.encoding} "
                                  "encoder gives them no spikes")
            lam0 = float(_percentiles(self.x, self.p, False)[0])
            if lam0 != 1.0:
                enc_in = self._fresh_tensor(f"{inp}_scaled", inp)
                pre.append(Node(self._fresh_node("input_scale"), "Mul", [inp], [enc_in],
                                params={"B": np.asarray(1.0 / lam0, dtype=np.float32)}))
                self.notes.append(f"inputs divided by λ_0 = {lam0:.6g} before the {cfg.encoding} encoder")
        encoded = self._fresh_tensor(f"{inp}_encoded", inp)
        attrs: dict[str, Any] = {"encoding": cfg.encoding, "timesteps": int(cfg.timesteps)}
        if cfg.encoding == "poisson":
            attrs["seed"] = int(cfg.seed)
        encoder = Node(self._fresh_node("encoder"), "Encoder", [enc_in], [encoded], attrs)
        self.sigma[encoded] = np.asarray(lam0)
        rename = {inp: encoded}
        body: list[Node] = []
        for n in self.ann.nodes:
            body.extend(self._convert(n, rename, need))
        readouts = self._readouts(body, rename)
        g = self.g
        g.name = f"{self.ann.name}_snn"
        g.nodes = pre + [encoder] + body + readouts
        prune_tensors(g)
        conv = Conversion(g, self.scales, lam0, self.p, self.notes, cfg, int(len(self.x)), self.neurons)
        g.meta = {**{k: v for k, v in g.meta.items() if k != "dt"}, "conversion": conv.to_json()}
        try:
            g.validate()
        except HwmapError as e:  # a graph this pass did not foresee: say where it went wrong
            raise GraphError(f"the converted graph is not well formed: {e}", where=f"graph {self.ann.name!r}") from None
        return conv

    def _readouts(self, body: list[Node], rename: dict[str, str]) -> list[Node]:
        cfg = self.config
        readouts: list[Node] = []
        multi = len(self.ann.outputs) > 1
        for o in self.ann.outputs:
            name = f"readout_{o}" if multi else "readout"
            src = rename.get(o, o)
            if src == o:  # the producer's output becomes the readout's input
                src = self._fresh_tensor(f"{o}_current", o)
                for n in body:
                    n.outputs = [src if t == o else t for t in n.outputs]
                    n.inputs = [src if t == o else t for t in n.inputs]
                self.sigma[src] = self.sigma[o]
            if self.spiking_outputs:
                src = self._rescaled(body, src, self.out_lam[o], f"{o}_neurons")
                spikes = self._fresh_tensor(f"{o}_spikes", o)
                body.append(self._if_node(self._fresh_node(f"{o}_neurons"), src, spikes))
                src = spikes
            else:
                src = self._rescaled(body, src, np.asarray(1.0), name)
            readouts.append(Node(self._fresh_node(name), "Readout", [src], [o], {"mode": cfg.readout}))
        return readouts

    # -- rewriting one node ---------------------------------------------------------------
    def _convert(self, n: Node, rename: dict[str, str], need: dict[str, np.ndarray | None]) -> list[Node]:
        out: list[Node] = []
        inputs = [rename.get(t, t) for t in n.inputs]
        at = f"node {n.name!r} ({n.op})"
        if n.op == "Relu":
            src = self._rescaled(out, inputs[0], self.lam[n.name], n.name)
            out.append(self._if_node(n.name, src, n.outputs[0]))
            self.sigma[n.outputs[0]] = self.lam[n.name]
            return out
        m = n.copy()
        m.outputs = m.outputs[:1]  # Dropout's mask is not converted
        y = m.outputs[0]
        target = need.get(y)
        if n.op in LINEAR_OPS:
            src = inputs[0]
            if target is not None:
                src = self._rescaled(out, src, self._through(n, target, backward=True), n.name)
            elif n.op in _POOLS and _channel_vector(self.sigma[src], self._sample(src)) is None:
                src = self._rescaled(out, src, self._channel_max(src), n.name)
            m.inputs = [src] + inputs[1:]
            self.sigma[y] = self._through(n, self.sigma[src], backward=False)
        elif n.op == "Concat":
            if target is not None:
                m.inputs = [self._rescaled(out, t, w, n.name) for t, w in zip(inputs, self._split(n, target))]
            else:
                m.inputs = inputs
            axis = int(n.attrs.get("axis", 0))
            parts = [np.broadcast_to(self.sigma[t], self._sample(t)) for t in m.inputs]
            self.sigma[y] = _compact(np.concatenate(parts, axis=(axis % (len(parts[0].shape) + 1)) - 1))
        elif n.op in JOIN_OPS:
            common = target if target is not None else self.sigma[inputs[0]]
            m.inputs = [self._rescaled(out, t, common, n.name) for t in inputs]
            for k in list(m.params):  # a constant operand (a bias) is on the ANN's scale
                m.params[k] = _cast(m.params[k].astype(np.float64) / common, m.params[k])
            self.sigma[y] = common
        else:
            self.sigma[y] = self._weighted(m, inputs, target, out, at)
        out.append(m)
        return out

    def _weighted(self, m: Node, inputs: list[str], target: np.ndarray | None, out: list[Node], at: str) -> np.ndarray:
        """Scale ``m``'s weights (in place; a Mul making its input's scale usable may be
        appended to ``out``); returns its output's scale."""
        src = inputs[0]
        y = m.outputs[0]
        ysample = self._sample(y)
        if m.op == "Mul":
            s_out = target if target is not None else np.asarray(1.0)
            m.inputs = [src]
            k = "B" if "B" in m.params else "A"
            gain = _compact(self.sigma[src] / s_out)
            m.params[k] = _cast(m.params[k].astype(np.float64) * gain, m.params[k])
            return s_out
        if m.op == "Conv":
            vec_in = _channel_vector(self.sigma[src], self._sample(src))
            if vec_in is None:
                src = self._rescaled(out, src, self._channel_max(src), m.name)
                vec_in = _channel_vector(self.sigma[src], self._sample(src))
                assert vec_in is not None
        else:  # Gemm, MatMul: the features are the input's last axis
            vec_in = _last_axis_vector(self.sigma[src], self._sample(src))
            if vec_in is None:
                src = self._rescaled(out, src, self._last_axis_max(src), m.name)
                vec_in = _last_axis_vector(self.sigma[src], self._sample(src))
                assert vec_in is not None
        m.inputs = [src]
        want = target if target is not None else np.asarray(1.0)
        if m.op == "Conv":
            vec_out = _channel_vector(want, ysample)
            if vec_out is None:
                vec_out = np.broadcast_to(want, ysample).reshape(ysample[0], -1).max(axis=1)
            _scale_conv(m, vec_in, vec_out)
            return _per_channel(vec_out, len(ysample))
        vec_out = _last_axis_vector(want, ysample) if ysample else np.broadcast_to(want, (1,)).copy()
        if vec_out is None:
            vec_out = np.broadcast_to(want, ysample).reshape(-1, ysample[-1]).max(axis=0)
        if m.op == "Gemm":
            _scale_gemm(m, vec_in, vec_out, at)
        else:
            _scale_matmul(m, vec_in, vec_out, at)
        return _compact(vec_out.reshape((1,) * (len(ysample) - 1) + (-1,))) if ysample else _compact(vec_out)

    def _channel_max(self, t: str) -> np.ndarray:
        sample = self._sample(t)
        full = np.broadcast_to(self.sigma[t], sample)
        return _per_channel(full.reshape(sample[0], -1).max(axis=1), len(sample))

    def _last_axis_max(self, t: str) -> np.ndarray:
        sample = self._sample(t)
        full = np.broadcast_to(self.sigma[t], sample)
        return _compact(full.reshape(-1, sample[-1]).max(axis=0))

    def _through(self, n: Node, s: np.ndarray, *, backward: bool) -> np.ndarray:
        """A scale carried through pass-through node ``n`` (from its input to its output, or
        back): pools and identities keep it; reshapes and transposes move it with the values."""
        if n.op not in _RESHAPES and n.op != "Transpose":
            return s
        src, dst = (n.outputs[0], n.inputs[0]) if backward else (n.inputs[0], n.outputs[0])
        shp_src, shp_dst = tuple(self.ann.tensors[src].shape[1:]), tuple(self.ann.tensors[dst].shape[1:])
        full = np.broadcast_to(s, shp_src)
        if n.op == "Transpose":
            perm = [int(p) - 1 for p in n.attrs.get("perm", [])[1:]]
            if backward:
                perm = list(np.argsort(perm))
            return _compact(np.transpose(full, perm))
        return _compact(full.reshape(shp_dst))

    def _split(self, n: Node, s: np.ndarray) -> list[np.ndarray]:
        """The part of an output scale that falls on each input of Concat ``n``."""
        axis = int(n.attrs.get("axis", 0))
        out_sample = tuple(self.ann.tensors[n.outputs[0]].shape[1:])
        ax = (axis % (len(out_sample) + 1)) - 1
        full = np.broadcast_to(s, out_sample)
        sizes = [self.ann.tensors[t].shape[1:][ax] for t in n.inputs]
        return [_compact(p) for p in np.split(full, np.cumsum(sizes)[:-1], axis=ax)]

    def _if_node(self, name: str, src: str, dst: str) -> Node:
        self.neurons.append(name)
        f32 = np.float32
        dt = float(self.config.dt)
        return Node(name, "IF", [src], [dst], {"dt": dt, "reset": "subtract"},
                    params={"r": np.asarray(1.0 / dt, f32), "v_threshold": np.asarray(settings.IF_THRESHOLD, f32),
                            "v_init": np.asarray(settings.IF_V_INIT, f32)})

    def _rescaled(self, out: list[Node], t: str, wanted: np.ndarray, reader: str) -> str:
        """``t``, or a ``Mul`` of it taking it from its scale to ``wanted`` (appended to ``out``)."""
        have = self.sigma[t]
        if _same(have, wanted):
            return t
        gain = _compact(have / wanted)
        sample = self._sample(t)
        if np.broadcast_shapes(gain.shape, sample) != sample:
            raise GraphError(f"cannot rescale tensor {t!r}: its scale does not broadcast to it",
                             where=f"node {reader!r}")
        dst = self._fresh_tensor(f"{t}_to_{reader}", t)
        name = self._fresh_node(f"{reader}_rescale")
        out.append(Node(name, "Mul", [t], [dst], params={"B": gain.astype(np.float32)}))
        self.sigma[dst] = _compact(np.broadcast_to(wanted, np.broadcast_shapes(have.shape, np.shape(wanted))))
        what = f"by {float(gain):.6g}" if gain.ndim == 0 else f"by per-channel gains in [{gain.min():.6g}, {gain.max():.6g}]"
        self.notes.append(f"inserted {name!r}: {t!r} multiplied {what} for the scale {reader!r} needs")
        return dst

    def _fresh_node(self, base: str) -> str:
        name = unique_node_name(self.g, base, self.taken)
        self.taken.add(name)
        return name

    def _fresh_tensor(self, base: str, like: str) -> str:
        name, i = base, 0
        while name in self.g.tensors:
            i += 1
            name = f"{base}_{i}"
        t = self.g.tensors[like]
        self.g.tensors[name] = Tensor(name, t.shape, t.dtype)
        return name


def _last_axis_vector(s: np.ndarray, sample: tuple[int, ...]) -> np.ndarray | None:
    """``s`` as one value per feature of the sample's last axis, or ``None`` if it varies
    along another axis."""
    if not sample:
        return np.asarray(s, dtype=np.float64).reshape(1)
    full = np.broadcast_to(s, sample).reshape(-1, sample[-1])
    if not np.all(full == full[:1]):
        return None
    return full[0].copy()


def _cast(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


def _scale_conv(m: Node, vec_in: np.ndarray, vec_out: np.ndarray) -> None:
    """``W[o, j] ← W[o, j] · σ_in[c(o, j)] / σ_out[o]`` (``c``: the input channel weight
    ``j`` of group ``o`` reads) and ``B[o] ← B[o] / σ_out[o]``."""
    w = m.params["W"]
    cout, cin_g = w.shape[:2]
    groups = int(m.attrs.get("group", 1))
    vin = np.broadcast_to(vec_in, (cin_g * groups,))
    vout = np.broadcast_to(vec_out, (cout,))
    idx = (np.arange(cout)[:, None] // (cout // groups)) * cin_g + np.arange(cin_g)[None, :]
    gain = vin[idx] / vout[:, None]
    m.params["W"] = _cast(w.astype(np.float64) * gain.reshape(gain.shape + (1,) * (w.ndim - 2)), w)
    if "B" in m.params:
        m.params["B"] = _cast(m.params["B"].astype(np.float64) / vout, m.params["B"])


def _scale_gemm(m: Node, vec_in: np.ndarray, vec_out: np.ndarray, at: str) -> None:
    """``Y = α A·B' + β C``: ``B`` times ``σ_in/σ_out`` along its input and output axes,
    ``C`` over ``σ_out`` along its last axis."""
    if "B" not in m.params:
        raise GraphError("its weights are not constant: the conversion scales them", where=at)
    w = m.params["B"]
    trans = int(m.attrs.get("transB", 0))
    k, n = (w.shape[1], w.shape[0]) if trans else w.shape
    vin, vout = np.broadcast_to(vec_in, (k,)), np.broadcast_to(vec_out, (n,))
    gain = vin[None, :] / vout[:, None] if trans else vin[:, None] / vout[None, :]
    m.params["B"] = _cast(w.astype(np.float64) * gain, w)
    if "C" in m.params:
        c = m.params["C"].astype(np.float64)
        m.params["C"] = _cast(np.broadcast_to(c, np.broadcast_shapes(c.shape, (n,))) / vout, m.params["C"])


def _scale_matmul(m: Node, vec_in: np.ndarray, vec_out: np.ndarray, at: str) -> None:
    """``x @ B``: ``B[..., k, n]`` times ``σ_in[k] / σ_out[n]`` (a 1-D ``B`` has no ``n``)."""
    if "B" not in m.params:
        raise GraphError("its weights are not constant: the conversion scales them", where=at)
    w = m.params["B"]
    if w.ndim == 1:
        gain = np.broadcast_to(vec_in, w.shape) / float(np.broadcast_to(vec_out, (1,))[0])
    else:
        vin = np.broadcast_to(vec_in, (w.shape[-2],))
        vout = np.broadcast_to(vec_out, (w.shape[-1],))
        gain = vin[:, None] / vout[None, :]
    m.params["B"] = _cast(w.astype(np.float64) * gain, w)
