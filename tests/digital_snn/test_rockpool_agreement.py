"""Peer test: hwmap accepts and rejects the same networks as Rockpool's Xylo mappers on the
matching preset (``syns61201.mapper`` for ``digital_snn:xylo-audio2``, ``syns63300.mapper``
for ``digital_snn:xylo-imu``, each with its default sizes), and allocates the same number
of hidden neurons.

The networks are built in Rockpool (``LinearTorch``, ``LIFTorch``, ``Residual``). hwmap
reads each as Rockpool exports it to NIR (``rockpool.nn.modules.to_nir``), or, where the
exporter refuses (two synaptic states) or is not faithful (it drops a ``LIFTorch``'s
recurrent weights without a word, and wires a ``Residual`` block wrongly: its output goes to
the graph's output and the next layer gets no input), as the ``.xylo.json`` specification
Rockpool's Audio 2 mapper gives on an unbounded device, quantized by ``channel_quantize``.
A network neither way imports is rejected by hwmap's frontend.

Rockpool's mapper carries a ``Residual`` bypass by *neuron aliasing* (``aliases``); hwmap
reads the residual network's specification with its aliases (Rockpool's NIR export of it is
mis-wired) and maps it with the same hidden neurons (its spikes: ``test_aliases.py``).

Rockpool's known bug is documented, not copied: its IMU mapper fails every network with one
hidden layer (``ValueError: <n> is not in list`` while allocating output expansion neurons);
hwmap accepts those that fit the IMU device.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from hwmap import HwmapError, ParseOptions, load_model
from hwmap.config import load_target
from hwmap_digital_snn import plugin
from hwmap_digital_snn.xylo_json import save_xylo_json

from xylo_specs import import_rockpool_xylo

pytest.importorskip("rockpool")
pytest.importorskip("torch")
pytest.importorskip("nirtorch")  # Rockpool's NIR exporter needs it

PRESETS = {"audio2": "digital_snn:xylo-audio2", "imu": "digital_snn:xylo-imu"}
DT = 1e-3


def _nets() -> dict[str, Callable[[], Any]]:
    from rockpool.nn.combinators import Residual, Sequential  # type: ignore[import-untyped]
    from rockpool.nn.modules import LIFTorch, LinearTorch  # type: ignore[import-untyped]

    def lin(a: int, b: int) -> Any:
        return LinearTorch((a, b), has_bias=False)

    def ff(*sizes: int, last_linear: bool = False, rec_out: bool = False, rec_hidden: bool = False) -> Any:
        mods = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            mods.append(lin(a, b))
            if not (last and last_linear):
                mods.append(LIFTorch(b, dt=DT, has_rec=rec_out if last else rec_hidden))
        return Sequential(*mods)

    return {
        "16-32-8": lambda: ff(16, 32, 8),
        "deeper 16-32-32-32-8": lambda: ff(16, 32, 32, 32, 8),
        "residual": lambda: Sequential(lin(16, 32), LIFTorch(32, dt=DT), Residual(lin(32, 32), LIFTorch(32, dt=DT)),
                                       lin(32, 8), LIFTorch(8, dt=DT)),
        "recurrent": lambda: ff(16, 32, 8, rec_hidden=True),
        "two synapses per neuron": lambda: Sequential(lin(16, 64), LIFTorch((64, 32), dt=DT), lin(32, 8),
                                                      LIFTorch(8, dt=DT)),
        "600 hidden neurons": lambda: ff(16, 600, 8),
        "1100 hidden neurons": lambda: ff(16, 1100, 8),
        "12 outputs": lambda: ff(16, 32, 12),
        "a linear last layer": lambda: ff(16, 32, 8, last_linear=True),
        "one neuron layer": lambda: ff(16, 8),
        "a recurrent output": lambda: ff(16, 32, 8, rec_out=True),
    }


#: What Rockpool's mappers do (measured with Rockpool 3.1): hidden neurons allocated, or the
#: error. "bug": the IMU mapper's single-hidden-layer failure; hwmap accepts instead.
EXPECTED: dict[str, dict[str, Any]] = {
    "16-32-8": {"audio2": 32, "imu": "bug"},
    "deeper 16-32-32-32-8": {"audio2": 96, "imu": 96},
    "residual": {"audio2": 64, "imu": 64},
    "recurrent": {"audio2": 32, "imu": "bug"},
    "two synapses per neuron": {"audio2": 32, "imu": "max_synapses_per_neuron"},
    "600 hidden neurons": {"audio2": 600, "imu": "hidden neurons"},
    "1100 hidden neurons": {"audio2": "hidden neurons", "imu": "hidden neurons"},
    "12 outputs": {"audio2": "output neurons", "imu": "bug"},
    "a linear last layer": {"audio2": "output_nodes_have_neurons_as_source", "imu": "output_nodes_have_neurons_as_source"},
    "one neuron layer": {"audio2": "at_least_two_neuron_layers_needed", "imu": "at_least_two_neuron_layers_needed"},
    "a recurrent output": {"audio2": "output_neurons_cannot_be_recurrent", "imu": "output_neurons_cannot_be_recurrent"},
}
#: hwmap on the IMU device where Rockpool's bug stops it: hidden neurons (the network fits).
HWMAP_WHERE_BUG = {"16-32-8": 32, "recurrent": 32, "12 outputs": 32}


def rockpool_map(net: Any, device: str) -> int | str:
    """Hidden neurons Rockpool's mapper allocates, or its error message."""
    audio2, imu = import_rockpool_xylo()
    mapper = audio2.mapper if device == "audio2" else imu.mapper
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = mapper(net.as_graph())
    except Exception as e:  # noqa: BLE001 - any refusal counts
        cause = e.__cause__ if e.__cause__ is not None else e
        return f"{type(e).__name__}: {e} ({type(cause).__name__}: {cause})"
    return int(np.asarray(spec["weights_rec"]).shape[0])


def hwmap_graph(net: Any, tmp_path: Path) -> tuple[Any, str]:
    """hwmap's graph of the Rockpool network and how it came (module docstring), or
    ``(None, why)``."""
    from hwmap.frontends.nir import graph_from_nir
    from rockpool.nn.modules import to_nir  # type: ignore[import-untyped]

    mods = [m for _, m in net.named_modules()] if hasattr(net, "named_modules") else []
    if any(bool(getattr(m, "_has_rec", False)) for m in mods):
        why = "Rockpool's NIR exporter drops recurrent weights"
    elif any("Residual" in type(m).__name__ for m in mods):
        why = "Rockpool's NIR exporter mis-wires Residual"
    else:
        try:
            return graph_from_nir(to_nir(net), name="net", options=ParseOptions(dt=DT)), "NIR"
        except NotImplementedError as e:
            why = f"Rockpool's NIR exporter: {e}"
        except HwmapError as e:
            why = f"hwmap's NIR frontend: {e}"
    audio2, _ = import_rockpool_xylo()
    from rockpool.transform.quantize_methods import channel_quantize  # type: ignore[import-untyped]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = audio2.mapper(net.as_graph(), max_hidden_neurons=1 << 14, max_output_neurons=1 << 14)
    except Exception as e:  # noqa: BLE001
        return None, f"{why}; Rockpool's mapper gives no specification: {type(e).__name__}"
    spec.update(channel_quantize(**spec))
    path = save_xylo_json(spec, tmp_path / "net.xylo.json")
    try:
        return load_model(str(path)), ".xylo.json"
    except HwmapError as e:
        return None, f"{why}; hwmap's .xylo.json frontend: {e}"


def hwmap_map(net: Any, preset: str, tmp_path: Path) -> tuple[int | str, str]:
    graph, how = hwmap_graph(net, tmp_path)
    if graph is None:
        return "frontend: " + how, how
    t = load_target(preset)
    legal = plugin.hwmap_legalize(graph, t)
    if not legal.fits:
        return "; ".join(str(v) for v in legal.violations), how
    return int(plugin.hwmap_map(legal.graph, t).to_json()["hidden_neurons_used"]), how


@pytest.mark.parametrize("device", list(PRESETS))
@pytest.mark.parametrize("name", list(EXPECTED))
def test_hwmap_accepts_and_rejects_as_rockpool(name: str, device: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _nets()[name]()
    want = EXPECTED[name][device]
    rp = rockpool_map(net, device)
    ours, how = hwmap_map(net, PRESETS[device], tmp_path)
    if want == "bug":
        assert isinstance(rp, str) and "is not in list" in rp, rp  # Rockpool's bug, still there
        assert ours == HWMAP_WHERE_BUG[name], (ours, how)
    elif isinstance(want, int):
        assert rp == want, rp
        assert ours == want, (ours, how)  # accepted, the same hidden neurons
    else:
        assert isinstance(rp, str) and want in rp, rp
        assert isinstance(ours, str), (ours, how)  # rejected too
