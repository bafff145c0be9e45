"""A feed-forward chain of layers over time, and its export to NIR and the neutral graph.

:class:`SNN` runs ``torch.nn.Linear``, ``torch.nn.Conv2d`` and ``torch.nn.Flatten`` once
per time step (the time axis folded into the batch) and :class:`~hwmap.nn.LIF` layers over
the whole sequence: input ``(N, T, *features)``, output ``(N, T, *features')``, the same
convention as hwmap's executor for graphs with neurons.

:func:`to_nir` describes the network as :class:`~hwmap.nn.nirbuild.LayerSpec` s and
float32 arrays (:meth:`SNN.arrays`) and builds a ``nir.NIRGraph`` from them; :func:`to_graph`
reads that with hwmap's NIR frontend. Parameters are rounded to float32 once (NIR files and
the neutral graph hold float32); magnitudes below :data:`DEAD` become 0, as the zoo's
training scripts write them (such values sit in the subnormal range, where CPUs differ in
their last bits, and cannot change an output). :meth:`SNN.load_arrays` is the inverse, so
a torch network and its export can be run on the very same float32 numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .lif import LIF
from .nirbuild import LayerSpec, build_nir, graph_from_layers

if TYPE_CHECKING:
    from ..graph import Graph

__all__ = ["SNN", "DEAD", "to_nir", "to_graph"]

#: Magnitude below which an exported value is written as 0.
DEAD = 1e-12
_STATELESS = (nn.Linear, nn.Conv2d, nn.Flatten)


class SNN(nn.Module):
    """Layers applied in order to a sequence ``(N, T, *features)``.

    ``layers`` is a mapping name -> module (the names become the NIR nodes and the array
    prefixes) or a sequence (named ``linear0``, ``lif1``, ... by kind and position). Every
    LIF layer must share one ``dt``.
    """

    def __init__(self, layers: Mapping[str, nn.Module] | Sequence[nn.Module]) -> None:
        super().__init__()
        if not isinstance(layers, Mapping):
            layers = OrderedDict((f"{_kind(m)}{i}", m) for i, m in enumerate(layers))
        if not layers:
            raise ValueError("an SNN needs at least one layer")
        for name, m in layers.items():
            if not isinstance(m, (*_STATELESS, LIF)):
                raise ValueError(f"layer {name!r}: {type(m).__name__} is not supported "
                                 "(Linear, Conv2d, Flatten, hwmap.nn.LIF)")
        self.layers = nn.ModuleDict(layers)
        steps = {m.dt for m in self.layers.values() if isinstance(m, LIF)}
        if len(steps) > 1:
            raise ValueError(f"LIF layers use different time steps {sorted(steps)}: one dt per network")
        self.dt: float | None = steps.pop() if steps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output sequence ``(N, T, ...)`` of input sequence ``(N, T, ...)``."""
        if x.dim() < 3:
            raise ValueError(f"input of shape {list(x.shape)}: expected (N, T, *features)")
        for m in self.layers.values():
            if isinstance(m, LIF):
                x = m(x)
            else:
                n, t = x.shape[:2]
                y = m(x.reshape(n * t, *x.shape[2:]))
                x = y.reshape(n, t, *y.shape[1:])
        return x

    # -- export ------------------------------------------------------------------------------
    def specs(self) -> list[LayerSpec]:
        """The layers as :class:`LayerSpec` s (see :mod:`hwmap.nn.nirbuild`)."""
        return [_spec(name, m) for name, m in self.layers.items()]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every exported number as float32, keyed ``<layer>.<slot>`` (``W``, ``B``, ``tau``,
        ``v_threshold``, ``W_rec``); magnitudes below :data:`DEAD` written as 0."""
        out: dict[str, torch.Tensor] = {}
        for name, m in self.layers.items():
            if isinstance(m, LIF):
                out[f"{name}.tau"], out[f"{name}.v_threshold"] = m.tau, m.threshold
                if m.w_rec is not None:
                    out[f"{name}.W_rec"] = m.w_rec
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                out[f"{name}.W"] = m.weight
                if m.bias is not None:
                    out[f"{name}.B"] = m.bias
        result = {}
        for key, value in out.items():
            a = value.detach().cpu().double().numpy()
            result[key] = np.where(np.abs(a) < DEAD, 0.0, a).astype(np.float32)
        return result

    @torch.no_grad()
    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set every parameter from ``arrays`` keyed as :meth:`arrays` writes them."""
        def get(key: str, like: torch.Tensor) -> torch.Tensor:
            if key not in arrays:
                raise KeyError(f"array {key!r} is missing")
            a = torch.as_tensor(np.asarray(arrays[key]), dtype=like.dtype)
            if key.endswith((".tau", ".v_threshold")):
                return a
            if tuple(a.shape) != tuple(like.shape):
                raise ValueError(f"{key} has shape {list(a.shape)}, the layer needs {list(like.shape)}")
            return a

        for name, m in self.layers.items():
            if isinstance(m, LIF):
                m.set_constants(get(f"{name}.tau", m.rho), get(f"{name}.v_threshold", m.psi))
                if m.w_rec is not None:
                    m.w_rec.copy_(get(f"{name}.W_rec", m.w_rec))
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(get(f"{name}.W", m.weight))
                if m.bias is not None:
                    m.bias.copy_(get(f"{name}.B", m.bias))


def _kind(m: nn.Module) -> str:
    return {nn.Linear: "linear", nn.Conv2d: "conv", nn.Flatten: "flatten"}.get(type(m), "lif")


def _spec(name: str, m: nn.Module) -> LayerSpec:
    if isinstance(m, LIF):
        return LayerSpec(name, "lif", {"reset": m.reset, "recurrent": m.w_rec is not None})
    if isinstance(m, nn.Linear):
        return LayerSpec(name, "linear")
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise ModelError(f"layer {name!r}: Conv2d padding_mode {m.padding_mode!r} has no NIR form "
                             "(zero padding only)", where="NIR export")
        return LayerSpec(name, "conv2d", {"stride": m.stride, "padding": m.padding, "dilation": m.dilation,
                                          "groups": m.groups})
    assert isinstance(m, nn.Flatten)
    if m.start_dim < 1 or 0 <= m.end_dim < m.start_dim:
        raise ModelError(f"layer {name!r}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) would flatten "
                         "the batch axis", where="NIR export")
    return LayerSpec(name, "flatten", {"start_dim": m.start_dim - 1, "end_dim": m.end_dim - (m.end_dim > 0)})


def to_nir(net: SNN, input_shape: Sequence[int]) -> Any:
    """``net`` as a ``nir.NIRGraph`` taking one sample's frame of ``input_shape`` per step.

    Raises :class:`~hwmap.errors.ModelError` naming the layer for what NIR cannot say:
    a LIF layer that resets by subtraction is refused, not exported as another network.
    """
    return build_nir(net.specs(), net.arrays(), tuple(input_shape))


def to_graph(net: SNN, input_shape: Sequence[int], *, batch: int = 1, name: str = "snn") -> "Graph":
    """``net`` exported through NIR (:func:`to_nir`) into hwmap's neutral graph, whose
    executor runs it on ``(N, T, *input_shape)`` with the network's ``dt``."""
    if net.dt is None:
        raise ModelError("the network has no LIF layer, so no time step: nothing spikes", where="NIR export")
    return graph_from_layers(net.specs(), net.arrays(), tuple(input_shape), dt=net.dt, batch=batch, name=name)
