"""``zoo:digits_snn``: a spiking network trained with surrogate gradients on the digits.

The network (:data:`LAYERS`, arrays :data:`ARRAYS`)::

    frame (1×8×8) -> flatten -> fc1 Affine 64→128 -> lif1 LIF (128) -> fc2 Affine 128→10

``lif1`` is NIR's LIF (``r = 1``, ``v_leak = 0``, reset to ``v_reset = 0``) with a trained
time constant and threshold per neuron, run by forward Euler at :data:`DT` = 1 ms, exactly
as hwmap's LIF op steps it (:mod:`hwmap.ops.neuron`). It was trained with the chapter's
ReLU-shaped surrogate gradient (Section 3.2.4, eqs. 3.2-3.3) by
``scripts/train_digits_snn.py``, on the training part of the zoo's split
(:func:`hwmap.zoo.digits.digits_split`), so ``zoo:digits`` is its held-out set.

Time is part of the graph (:mod:`hwmap.ops.time`), so the network takes ``zoo:digits`` as
it is, like the ANNs, and gives ``(N, 10)`` class scores:

* an ``Encoder`` with :data:`ENCODING` = ``"direct"``: the image (pixels in [0, 1]) is the
  input current of every one of :data:`TIMESTEPS` = 8 steps, unchanged;
* a ``Readout`` with :data:`READOUT` = ``"membrane"``: the class scores are ``fc2``'s output
  averaged over the steps — the membrane potential after the last step of a non-leaky
  integrator (no threshold, starting at 0) fed by ``fc2``, divided by the step count, so
  the 10 output neurons never spike. The largest score is the class.

The per-step network (:func:`build_digits_snn_steps`) is built as a ``nir.NIRGraph``
(:func:`build_digits_snn_nir`) read by hwmap's NIR frontend: input ``input`` of shape
``(batch, 1, 8, 8)`` — one frame; the executor runs it on ``(N, T, 1, 8, 8)`` — and output
``output``, ``(N, T, 10)`` per step. :func:`build_digits_snn` puts it between the Encoder
and the Readout (:func:`hwmap.passes.encode_graph`); NIR has no node for either. Its arrays
are float32, keyed as :data:`ARRAYS`, in ``data/digits_snn.npz``.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, ModelError
from ..nn.nirbuild import LayerSpec, build_nir, graph_from_layers
from .digits import CLASSES, INPUT_SHAPE, load_weights

if TYPE_CHECKING:
    from ..graph import Graph

__all__ = ["TIMESTEPS", "DT", "ENCODING", "READOUT", "HIDDEN", "INPUT_SHAPE", "LAYERS", "ARRAYS",
           "encode_digits", "readout", "load_snn_weights", "build_digits_snn_nir", "build_digits_snn_steps",
           "build_digits_snn"]

#: Time steps each image is presented for (direct encoding).
TIMESTEPS = 8
#: The time step of the LIF neurons, seconds (the NIR frontend's ``dt``).
DT = 1e-3
#: How a static image becomes the input sequence: the ``Encoder`` op's ``encoding``.
ENCODING = "direct"
#: How the output sequence becomes class scores: the ``Readout`` op's ``mode`` (the mean over steps).
READOUT = "membrane"
#: Hidden LIF neurons.
HIDDEN = 128
#: The layers, in order (:class:`hwmap.nn.nirbuild.LayerSpec`).
LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("flatten", "flatten", {"start_dim": 0, "end_dim": -1}),
    LayerSpec("fc1", "linear"),
    LayerSpec("lif1", "lif", {"reset": "zero"}),
    LayerSpec("fc2", "linear"),
)
#: Shapes of every trained float32 array, by key: what the training script must produce.
ARRAYS: dict[str, tuple[int, ...]] = {
    "fc1.W": (HIDDEN, 64), "fc1.B": (HIDDEN,), "lif1.tau": (HIDDEN,), "lif1.v_threshold": (HIDDEN,),
    "fc2.W": (CLASSES, HIDDEN), "fc2.B": (CLASSES,),
}
_WHERE = "zoo:digits_snn"


def encode_digits(x: np.ndarray, timesteps: int = TIMESTEPS) -> np.ndarray:
    """Direct encoding: images ``(N, 1, 8, 8)`` → ``(N, timesteps, 1, 8, 8)`` float32, the
    same frame at every step (the pixel values are the input current)."""
    a = np.asarray(x)
    if a.ndim != 4 or a.shape[1:] != INPUT_SHAPE[1:]:
        raise DataError(f"images of shape {list(a.shape)}: zoo:digits_snn takes N×1×8×8", where=_WHERE)
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise DataError(f"timesteps must be a positive int, got {timesteps!r}", where=_WHERE)
    return np.ascontiguousarray(np.broadcast_to(a.astype(np.float32)[:, None], (a.shape[0], int(timesteps), *a.shape[1:])))


def readout(y: np.ndarray) -> np.ndarray:
    """Class scores ``(N, 10)`` of the graph's output ``(N, T, 10)``: the sum over steps."""
    a = np.asarray(y)
    if a.ndim != 3 or a.shape[2] != CLASSES:
        raise DataError(f"output of shape {list(a.shape)}: expected (N, T, {CLASSES})", where=_WHERE)
    return a.astype(np.float64).sum(axis=1)


def load_snn_weights() -> dict[str, np.ndarray]:
    """The shipped arrays ``data/digits_snn.npz``, checked against :data:`ARRAYS`."""
    if not (resources.files(__package__) / "data" / "digits_snn.npz").is_file():
        raise ModelError("trained weights data/digits_snn.npz are not installed; run scripts/train_digits_snn.py",
                         where=_WHERE)
    return load_weights("digits_snn", ARRAYS)


def build_digits_snn_nir(weights: dict[str, np.ndarray] | None = None) -> Any:
    """The network as a ``nir.NIRGraph`` (one 1×8×8 frame per step in, fc2's 10 currents out);
    ``weights`` default to the shipped ones."""
    return build_nir(LAYERS, load_snn_weights() if weights is None else weights, INPUT_SHAPE[1:])


def build_digits_snn_steps(batch: int = 1, weights: dict[str, np.ndarray] | None = None) -> "Graph":
    """The per-step network as a neutral graph (through NIR), input ``(batch, 1, 8, 8)`` per
    step; run it on :func:`encode_digits` and apply :func:`readout`."""
    return graph_from_layers(LAYERS, load_snn_weights() if weights is None else weights, INPUT_SHAPE[1:], dt=DT,
                             batch=batch, name=_WHERE)


def build_digits_snn(batch: int = 1, weights: dict[str, np.ndarray] | None = None) -> "Graph":
    """``zoo:digits_snn``: the per-step network (:func:`build_digits_snn_steps`) between a
    direct ``Encoder`` of :data:`TIMESTEPS` steps and a membrane ``Readout``; static input
    ``(batch, 1, 8, 8)``, output ``(batch, 10)``."""
    from ..passes.encode import encode_graph

    return encode_graph(build_digits_snn_steps(batch, weights), timesteps=TIMESTEPS, encoding=ENCODING,
                        readout=READOUT)
