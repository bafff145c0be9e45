"""Fixtures the core's tests share: the zoo's digits CNN and the held-out digits it was
trained for (the profiler's and the sparsity meters' tests measure on both)."""

from __future__ import annotations

import numpy as np
import pytest

import hwmap


@pytest.fixture(scope="module")
def digits_cnn() -> hwmap.Graph:
    return hwmap.load_model("zoo:digits_cnn")


@pytest.fixture(scope="module")
def digits_x() -> np.ndarray:
    return hwmap.load_data("zoo:digits").x
