"""``zoo:digits_mlp``, ``zoo:digits_cnn`` and the data ``zoo:digits``.

scikit-learn's ``load_digits()`` (1,797 8×8 grey images, 17 levels) as N×1×8×8 float32 in
[0, 1] (pixel / 16), split once by :func:`digits_split`; the test part is ``zoo:digits``.
``scripts/train_digits.py`` trains both models on the training part with PyTorch, imports
this split and these layer shapes from here, and writes ``data/digits_mlp.npz`` and
``data/digits_cnn.npz``; the zoo builds the ONNX models from those arrays.

* ``digits_mlp``: Flatten → ``fc1`` Gemm 64→32 → ``relu1`` → ``fc2`` Gemm 32→10
  (2,410 parameters).
* ``digits_cnn``: ``conv1`` 3×3, 8 filters, pad 1 → ``relu1`` → ``conv2`` 3×3, 16 filters,
  pad 1, stride 2 (8×8 → 4×4) → ``relu2`` → ``flatten`` → ``fc`` Gemm 256→10
  (3,818 parameters). ReLU only, no pooling or normalization: it maps as is onto every
  target, spiking ones included.

Weight files hold float32 arrays keyed ``<layer>.<slot>`` (``fc1.W`` shaped out×in as a
torch Linear, ``conv1.W`` shaped O×I×k×k, ``*.B`` biases).
"""

from __future__ import annotations

import io
import zipfile
from importlib import resources

import numpy as np
import onnx

from ..errors import DataError, ModelError
from ..graph import load_npz
from ._builder import OnnxBuilder

__all__ = [
    "INPUT_SHAPE", "MLP_LAYERS", "CNN_LAYERS", "SPLIT_TEST_SIZE", "SPLIT_RANDOM_STATE",
    "digits_split", "digits_test_set", "load_weights", "build_digits_mlp", "build_digits_cnn",
]

INPUT_SHAPE = (1, 1, 8, 8)
CLASSES = 10
#: Shapes of every trained array, by key: what the training script must produce.
MLP_LAYERS: dict[str, tuple[int, ...]] = {
    "fc1.W": (32, 64), "fc1.B": (32,), "fc2.W": (CLASSES, 32), "fc2.B": (CLASSES,),
}
CNN_LAYERS: dict[str, tuple[int, ...]] = {
    "conv1.W": (8, 1, 3, 3), "conv1.B": (8,), "conv2.W": (16, 8, 3, 3), "conv2.B": (16,),
    "fc.W": (CLASSES, 16 * 4 * 4), "fc.B": (CLASSES,),
}
#: The one split of the data set: 20 % held out, stratified by class, ``random_state`` 0.
SPLIT_TEST_SIZE = 0.2
SPLIT_RANDOM_STATE = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: x N×1×8×8 float32 in [0, 1], y int64.

    ``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=y)``
    on ``load_digits()``: 1,437 training and 360 test images.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)",
                        where="zoo:digits") from None
    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = np.asarray(d.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SPLIT_TEST_SIZE, random_state=SPLIT_RANDOM_STATE, stratify=y)
    return (np.ascontiguousarray(x_train), np.ascontiguousarray(x_test),
            np.ascontiguousarray(y_train), np.ascontiguousarray(y_test))


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out part of :func:`digits_split`: ``(x, y)``, 360 images."""
    _, x_test, _, y_test = digits_split()
    return x_test, y_test


def load_weights(model: str, layers: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The shipped trained arrays of ``model`` (``data/<model>.npz``), checked against ``layers``."""
    where = f"zoo:{model}"
    try:
        blob = (resources.files(__package__) / "data" / f"{model}.npz").read_bytes()
        arrays = load_npz(io.BytesIO(blob))
    except FileNotFoundError:
        raise ModelError(f"trained weights data/{model}.npz are not installed; run scripts/train_digits.py",
                         where=where) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ModelError(f"cannot read trained weights data/{model}.npz: {e}", where=where) from None
    for key, shape in layers.items():
        if key not in arrays:
            raise ModelError(f"data/{model}.npz has no array {key!r}", where=where)
        if arrays[key].shape != shape or arrays[key].dtype != np.float32:
            raise ModelError(f"data/{model}.npz: {key} is {arrays[key].dtype}{list(arrays[key].shape)}, "
                             f"expected float32{list(shape)}", where=where)
    return arrays


def _layer(weights: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == name}


def _check_input(model: str, input_shape: tuple[int, ...]) -> None:
    if tuple(input_shape[1:]) != INPUT_SHAPE[1:]:
        raise ModelError(f"input {list(input_shape)}: the trained model takes N×1×8×8 images",
                         where=f"zoo:{model}")


def build_digits_mlp(input_shape: tuple[int, ...] = INPUT_SHAPE,
                     weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The trained MLP; ``weights`` (default: the shipped ones) keyed as :data:`MLP_LAYERS`."""
    _check_input("digits_mlp", input_shape)
    w = weights if weights is not None else load_weights("digits_mlp", MLP_LAYERS)
    b = OnnxBuilder("digits_mlp", input_shape, seed=0)  # seed unused: every weight is given
    x = b.flatten(b.input_name, "flatten")
    x = b.relu(b.gemm(x, "fc1", MLP_LAYERS["fc1.W"][0], weights=_layer(w, "fc1")), "relu1")
    x = b.gemm(x, "fc2", CLASSES, weights=_layer(w, "fc2"))
    return b.build(x, doc="MLP 64-32-10 trained on scikit-learn digits (scripts/train_digits.py)")


def build_digits_cnn(input_shape: tuple[int, ...] = INPUT_SHAPE,
                     weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The trained CNN; ``weights`` (default: the shipped ones) keyed as :data:`CNN_LAYERS`."""
    _check_input("digits_cnn", input_shape)
    w = weights if weights is not None else load_weights("digits_cnn", CNN_LAYERS)
    b = OnnxBuilder("digits_cnn", input_shape, seed=0)  # seed unused: every weight is given
    x = b.conv(b.input_name, "conv1", CNN_LAYERS["conv1.W"][0], 3, pad=1, weights=_layer(w, "conv1"))
    x = b.relu(x, "relu1")
    x = b.conv(x, "conv2", CNN_LAYERS["conv2.W"][0], 3, stride=2, pad=1, weights=_layer(w, "conv2"))
    x = b.relu(x, "relu2")
    x = b.gemm(b.flatten(x, "flatten"), "fc", CLASSES, weights=_layer(w, "fc"))
    return b.build(x, doc="CNN conv8-conv16/2-fc10 trained on scikit-learn digits (scripts/train_digits.py)")
