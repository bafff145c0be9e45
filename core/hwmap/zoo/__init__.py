"""The bundled model zoo: ``zoo:NAME`` models and data sets.

Models are ONNX (opset 17, IR version 8) built with ``onnx.helper`` when asked for, never
at import: MobileNet V1 alone is 4.2 M weights. Seeded models draw their weights from
``numpy.random.default_rng(seed)`` (see :mod:`hwmap.zoo._builder`), so every build gives the
same bytes; the digits models are built from the small trained weight files shipped in
``hwmap/zoo/data`` (``scripts/train_digits.py`` reproduces them).

Every model reads the graph input ``input`` and writes the graph output ``output``.

===============  ===========  ==========================================================
name             input        what
===============  ===========  ==========================================================
chapter_cnn      1×1×13×64    the chapter's Fig. 3.13 two-conv example, output 1×8×3×29
mobilenet_v1     1×3×224×224  MobileNet V1 1.0, 1000 classes, seeded, BN as nodes
resnet_small     1×3×32×32    three one-block residual stages, 10 classes, seeded
digits_mlp       1×1×8×8      MLP 64-32-10 trained on scikit-learn digits
digits_cnn       1×1×8×8      CNN conv8-conv16/2-fc10 trained on scikit-learn digits
digits_snn       1×1×8×8      spiking 64-LIF128-10 trained on the digits (surrogate gradients),
                              built through NIR, 8 time steps inside the graph (see below)
===============  ===========  ==========================================================

``digits_snn`` is a neutral graph built through the NIR frontend, not ONNX
(:mod:`hwmap.zoo.digits_snn`): it has no ONNX form (:func:`load_onnx` refuses it), and
:func:`load_graph` builds it. An ``Encoder`` (direct, 8 steps) and a ``Readout`` (membrane)
inside the graph make it take ``zoo:digits`` as the ANNs do and give ``(N, 10)`` scores.

Data: ``digits``, the held-out 20 % of scikit-learn's digits (360 images, N×1×8×8 in
[0, 1], int64 labels).

``hwmap zoo`` lists both (:func:`list_models`, :func:`list_data_sets`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

from ..errors import DataError, ModelError

if TYPE_CHECKING:  # onnx, the frontend and the graph load only when a model is built
    import onnx

    from ..dataset import Dataset
    from ..graph import Graph
    from ..parsing import ParseOptions

__all__ = ["ZooModel", "ZooData", "list_models", "list_data", "list_data_sets", "load_onnx", "load_graph",
           "load_data"]


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: ``build(input_shape)`` returns its ONNX model.

    ``input_shape`` is the default, batch first with batch 1. ``data`` names the zoo data
    set the model was trained for, if any.
    """

    name: str
    description: str
    input_shape: tuple[int, ...]
    build: Callable[[tuple[int, ...]], "onnx.ModelProto"]
    data: str | None = None
    #: Set for a model built through another frontend than ONNX: ``graph(input_shape, options)``
    #: gives its neutral graph, and ``build`` refuses.
    graph: Callable[[tuple[int, ...], "ParseOptions"], "Graph"] | None = None


@dataclass(frozen=True)
class ZooData:
    """One zoo data set: ``samples`` inputs of ``sample_shape`` each (no batch dimension),
    labelled with ``classes`` classes (0 if unlabelled)."""

    name: str
    description: str
    samples: int
    sample_shape: tuple[int, ...]
    classes: int = 0


def _chapter_cnn(shape: tuple[int, ...]) -> "onnx.ModelProto":
    from .chapter import build_chapter_cnn

    return build_chapter_cnn(shape)


def _mobilenet_v1(shape: tuple[int, ...]) -> "onnx.ModelProto":
    from .mobilenet import build_mobilenet_v1

    return build_mobilenet_v1(shape)


def _resnet_small(shape: tuple[int, ...]) -> "onnx.ModelProto":
    from .resnet import build_resnet_small

    return build_resnet_small(shape)


def _digits_mlp(shape: tuple[int, ...]) -> "onnx.ModelProto":
    from .digits import build_digits_mlp

    return build_digits_mlp(shape)


def _digits_cnn(shape: tuple[int, ...]) -> "onnx.ModelProto":
    from .digits import build_digits_cnn

    return build_digits_cnn(shape)


def _digits_snn_onnx(shape: tuple[int, ...]) -> "onnx.ModelProto":
    raise ModelError("a spiking network built through NIR has no ONNX form; load it as a graph "
                     "(hwmap.load_model('zoo:digits_snn'))", where="zoo:digits_snn")


def _digits_snn_graph(shape: tuple[int, ...], options: "ParseOptions") -> "Graph":
    from .digits_snn import DT, build_digits_snn

    if options.dt is not None and options.dt != DT:
        raise ModelError(f"the network was trained at dt = {DT} s; dt = {options.dt} s would change its dynamics "
                         "(leave --dt out)", where="zoo:digits_snn")
    if tuple(shape[1:]) != (1, 8, 8):
        raise ModelError(f"input {list(shape)}: the network takes one N×1×8×8 frame per time step",
                         where="zoo:digits_snn")
    return build_digits_snn(batch=shape[0])


_MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("chapter_cnn", "the chapter's Fig. 3.13 example: two convolutions, 3×29×8 output (seeded weights)",
             (1, 1, 13, 64), _chapter_cnn),
    ZooModel("mobilenet_v1", "MobileNet V1 1.0, 1000 classes (seeded weights, 4.2 M; BN as separate nodes)",
             (1, 3, 224, 224), _mobilenet_v1),
    ZooModel("resnet_small", "small ResNet: 3 residual stages 16/32/64, 10 classes (seeded weights)",
             (1, 3, 32, 32), _resnet_small),
    ZooModel("digits_mlp", "MLP 64-32-10 trained on scikit-learn digits (use with zoo:digits)", (1, 1, 8, 8),
             _digits_mlp, "digits"),
    ZooModel("digits_cnn", "CNN conv8-conv16/2-fc10 trained on scikit-learn digits (use with zoo:digits)",
             (1, 1, 8, 8), _digits_cnn, "digits"),
    ZooModel("digits_snn", "spiking 64-LIF128-10 trained on scikit-learn digits with surrogate gradients (NIR, "
             "8 time steps inside the graph; use with zoo:digits)", (1, 1, 8, 8), _digits_snn_onnx, "digits",
             graph=_digits_snn_graph),
)}

_DATA: dict[str, ZooData] = {d.name: d for d in (
    ZooData("digits", "held-out 20 % of scikit-learn digits, pixels in [0, 1], labels 0-9", 360, (1, 8, 8), 10),
)}


def list_models() -> list[ZooModel]:
    """Every zoo model, in a fixed order."""
    return list(_MODELS.values())


def list_data() -> list[str]:
    """Names of the zoo data sets."""
    return list(_DATA)


def list_data_sets() -> list[ZooData]:
    """Every zoo data set, described, in a fixed order (nothing is loaded)."""
    return list(_DATA.values())


def _model(name: str) -> ZooModel:
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(f"no zoo model {name!r} (known: {', '.join(_MODELS)})", where=f"zoo:{name}") from None


def _check_shape(model: ZooModel, input_shape: object) -> tuple[int, ...]:
    where = f"zoo:{model.name}"
    try:
        shape: tuple[Any, ...] = tuple(cast(Iterable[Any], input_shape))  # a TypeError is caught below
    except TypeError:
        raise ModelError(f"input shape {input_shape!r} is not a sequence of ints", where=where) from None
    if len(shape) != len(model.input_shape) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) > 0 for d in shape):
        raise ModelError(f"input shape {list(shape)} must be {len(model.input_shape)} positive ints, batch first, "
                         f"like the default {list(model.input_shape)}", where=where)
    return tuple(int(d) for d in shape)


def load_onnx(name: str, input_shape: tuple[int, ...] | None = None) -> "onnx.ModelProto":
    """Build zoo model ``name`` as ONNX, at its default input shape or ``input_shape``.

    Convolutional models with a global pool (``mobilenet_v1``, ``resnet_small``) and
    ``chapter_cnn`` take any spatial size their layers leave positive; the digits models
    take any batch of 1×8×8 images. Raises :class:`ModelError` on an unknown name or an
    input shape the model cannot take.
    """
    model = _model(name)
    shape = model.input_shape if input_shape is None else _check_shape(model, input_shape)
    return model.build(shape)


def load_graph(name: str, options: "ParseOptions") -> "Graph":
    """Zoo model ``name`` as a neutral graph named ``zoo:NAME``, through the ONNX frontend
    (a model with ``graph``, ``digits_snn``: through its own builder, NIR).

    The input shape is ``options.input_shape``, else the default with the batch set to
    ``options.batch``.
    """
    model = _model(name)  # an unknown name is the user's error, whatever else is installed
    from ..frontends.onnx import graph_from_onnx

    shape = options.input_shape
    if shape is None:
        shape = (options.batch, *model.input_shape[1:])
    if model.graph is not None:
        return model.graph(_check_shape(model, shape), options)
    return graph_from_onnx(load_onnx(name, shape), name=f"zoo:{name}", options=options, where=f"zoo:{name}")


def load_data(name: str) -> "Dataset":
    """Zoo data set ``name`` (see :func:`list_data`); :class:`DataError` if unknown."""
    from ..dataset import Dataset

    if name not in _DATA:
        raise DataError(f"no zoo data set {name!r} (known: {', '.join(_DATA)})", where=f"zoo:{name}")
    from .digits import digits_test_set

    x, y = digits_test_set()
    return Dataset(x, y, f"zoo:{name}")
