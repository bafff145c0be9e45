"""Random Xylo specifications (Rockpool's dictionaries of device integers) and XyloSim on
them: the ``xylosim`` package's ``XyloLayer``, wired as Rockpool's
``syns61201.XyloSim.from_specification`` wires it; and the stub that lets Rockpool's Xylo
modules import without ``samna`` (never installed: its PyPI stub downloads on import)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any
from unittest import mock

import numpy as np


def random_spec(seed: int, n_in: int = 16, n_hid: int = 40, n_out: int = 8, n_syn: int = 2, recurrent: bool = True,
                shifts: tuple[int, int, int] = (1, 1, 0), n_res: int | None = None, dt: float = 1e-3, fan_in: int = 32) -> dict[str, Any]:
    """A specification whose hidden neurons fire a few spikes per step: two feed-forward
    blocks in W_rec (hidden 1 -> hidden 2), recurrent weights on top, biases, both synapses."""
    rng = np.random.default_rng(seed)
    n_res = n_hid // 2 if n_res is None else n_res
    w_in = np.zeros((n_in, n_res, n_syn), np.int64)
    w_in[:] = rng.integers(-30, 90, w_in.shape) * (rng.random(w_in.shape) < 0.6)
    w_rec = np.zeros((n_hid, n_hid, n_syn), np.int64)
    w_rec[:n_hid // 2, n_hid // 2:] = rng.integers(-50, 80, (n_hid // 2, n_hid - n_hid // 2, n_syn))
    if recurrent:
        w_rec += rng.integers(-40, 40, w_rec.shape) * (rng.random(w_rec.shape) < 0.15)
    for j in range(n_hid):  # at most fan_in non-zero recurrent weights into each neuron (Xylo Audio 2: 32)
        src, syn = np.nonzero(w_rec[:, j, :])
        if len(src) > fan_in:
            drop = rng.choice(len(src), len(src) - fan_in, replace=False)
            w_rec[src[drop], j, syn[drop]] = 0
    w_out = np.zeros((n_hid, n_out), np.int64)
    w_out[n_hid // 2:] = rng.integers(-60, 64, (n_hid - n_hid // 2, n_out))
    spec: dict[str, Any] = {
        "weights_in": w_in if n_syn == 2 else w_in[:, :, 0], "weights_rec": w_rec if n_syn == 2 else w_rec[:, :, 0],
        "weights_out": w_out, "dash_mem": rng.integers(1, 6, n_hid), "dash_syn": rng.integers(1, 5, n_hid),
        "dash_syn_2": rng.integers(1, 7, n_hid), "dash_mem_out": rng.integers(1, 5, n_out),
        "dash_syn_out": rng.integers(1, 4, n_out), "threshold": rng.integers(2000, 6000, n_hid),
        "threshold_out": rng.integers(800, 3000, n_out), "bias": rng.integers(-20, 40, n_hid),
        "bias_out": rng.integers(-10, 10, n_out), "weight_shift_in": shifts[0], "weight_shift_rec": shifts[1],
        "weight_shift_out": shifts[2], "aliases": [[] for _ in range(n_hid)], "dt": dt,
    }
    return spec


def _three(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    return w[:, :, None] if w.ndim == 2 else w


def xylo_layer(spec: dict[str, Any]) -> tuple[Any, Any]:
    """XyloSim's ``XyloLayer`` on ``spec`` (as Rockpool's ``from_specification`` builds it);
    keep the returned wiring alive with the layer."""
    import xylosim.v2 as xs  # type: ignore[import-untyped]

    def synapses(w3: np.ndarray) -> list[list[Any]]:
        return [[xs.XyloSynapse(int(j), int(k), int(w3[i, j, k])) for j, k in zip(*np.nonzero(w3[i]))]
                for i in range(w3.shape[0])]

    w_in, w_rec, w_out = _three(spec["weights_in"]), _three(spec["weights_rec"]), np.asarray(spec["weights_out"])
    n_hid = w_out.shape[0]
    if w_in.shape[1] < n_hid:
        w_in = np.concatenate([w_in, np.zeros((w_in.shape[0], n_hid - w_in.shape[1], w_in.shape[2]), int)], axis=1)
    aliases = [[int(t) for t in a] for a in spec.get("aliases", [[] for _ in range(n_hid)])]
    wiring: Any = (synapses(w_in), synapses(w_rec), synapses(w_out[:, :, None]), aliases)
    bias = np.asarray(spec.get("bias", np.zeros(n_hid)))
    bias_out = np.asarray(spec.get("bias_out", np.zeros(w_out.shape[1])))
    layer = xs.XyloLayer(*wiring, [int(v) for v in spec["threshold"]], [int(v) for v in spec["threshold_out"]],
                         bool(np.any(bias) or np.any(bias_out)), [int(v) for v in bias], [int(v) for v in bias_out],
                         int(spec["weight_shift_in"]), int(spec["weight_shift_rec"]), int(spec["weight_shift_out"]),
                         [int(v) for v in spec["dash_mem"]], [int(v) for v in spec["dash_mem_out"]],
                         [[int(a), int(b)] for a, b in zip(spec["dash_syn"], spec["dash_syn_2"])],
                         [[int(d)] for d in spec["dash_syn_out"]], "hwmap-test")
    return layer, wiring


def xylosim_run(spec: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, int]:
    """Output spikes ``(N, T, Nout)`` of XyloSim on event counts ``x`` ``(N, T, Nin)``, one
    input at a time from the reset state, and the hidden spikes in all."""
    rec = xylosim_record(spec, x)
    return rec["out"], int(rec["hidden"].sum())


def xylosim_record(spec: dict[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
    """What XyloSim records on event counts ``x`` ``(N, T, Nin)``, one input at a time from
    the reset state: ``out`` ``(N, T, Nout)`` output spikes, ``hidden`` ``(N, T, Nhid)`` hidden
    spikes (``rec_recurrent_spikes``: a neuron's own and its alias sources'), ``v_mem``
    ``(N, T, Nhid)`` (XyloSim records it neurons × steps) and the largest synaptic current magnitude ``isyn_max``."""
    layer, _wiring = xylo_layer(spec)
    outs, hidden, vmem, isyn = [], [], [], 0
    for b in range(x.shape[0]):
        layer.reset_all()
        outs.append(np.array(layer.evolve(np.asarray(x[b], int).tolist())))
        hidden.append(np.array(layer.rec_recurrent_spikes))
        vmem.append(np.array(layer.rec_v_mem).T)  # recorded neurons × steps
        isyn = max([isyn] + [int(np.abs(np.array(r)).max(initial=0)) for r in (layer.rec_i_syn, layer.rec_i_syn2)])
    return {"out": np.stack(outs), "hidden": np.stack(hidden), "v_mem": np.stack(vmem), "isyn_max": np.asarray(isyn)}


class _SamnaStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``samna`` and every ``samna.*`` as empty mocks: Rockpool's Xylo packages import; its
    samna backends (config_from_specification, XyloSamna) stay shims."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "samna" or name.startswith("samna."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> Any:
        m = mock.MagicMock(name=spec.name)
        m.__path__ = []
        m.__spec__ = spec
        return m

    def exec_module(self, module: Any) -> None:
        pass


def import_rockpool_xylo() -> tuple[Any, Any]:
    """``rockpool.devices.xylo.syns61201`` and ``syns63300`` with samna stubbed (the stub is
    left in place: Rockpool's modules keep references to it)."""
    if not any(isinstance(f, _SamnaStub) for f in sys.meta_path) and "samna" not in sys.modules:
        sys.meta_path.insert(0, _SamnaStub())
    import rockpool.devices.xylo.syns61201 as audio2  # type: ignore[import-untyped]
    import rockpool.devices.xylo.syns63300 as imu  # type: ignore[import-untyped]

    return audio2, imu
