"""Hostile and broken ``--data`` files through the command line: each is refused with exit code
2 and exactly one ``hwmap: error:`` line naming the file and the array (``x`` or ``y``), no
numpy warning; good data still loads. Inputs must be real and finite (in float32), labels
integer class indices, and classes of the model where the model's output says how many."""

from __future__ import annotations

import re
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwmap import DataError, load_data, load_model
from hwmap.cli import main
from hwmap.data import check_labels, classes_of
from test_safeio import _default_limit  # noqa: F401  (autouse: the default 1 GiB limit in every test)

STAGE_LINE = re.compile(r"^hwmap: [^:]+(:[^:]+)*: \d+\.\d\d s$")
X = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``hwmap ARGS`` in-process exits 2 with one error line and no warning; the line."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(list(args))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not STAGE_LINE.match(line)]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("hwmap: error: "), err
    assert "Traceback" not in err and not [str(w.message) for w in caught]
    return lines[0]


def data_refused(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    line = refused(capsys, "profile", "zoo:digits_cnn", "--data", str(path), "--csv", "-q")
    assert line.startswith(f"hwmap: error: {path}: "), line
    return line


def _npz(tmp_path: Path, name: str = "d.npz", **arrays: Any) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_a_npy_renamed_npz_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.npz"
    with open(path, "wb") as f:
        np.save(f, X)
    line = data_refused(capsys, path)
    assert line.endswith("is a single .npy array, not an .npz archive (save with numpy.savez)"), line


def _with(value: Any, dtype: Any = np.float32, at: tuple[int, ...] = (3, 0, 2, 5)) -> np.ndarray:
    x = X.astype(dtype)
    x[at] = value
    return x


@pytest.mark.parametrize("x, needle", [
    (_with(np.nan), "'x' holds 1 NaN value (the first in sample 3); inputs must be finite"),
    (_with(np.inf), "'x' holds 1 infinite value (the first in sample 3; values beyond the float32 range count as "
                    "infinite); inputs must be finite"),
    (_with(-np.inf, at=(0, 0, 0, 0)), "'x' holds 1 infinite value (the first in sample 0;"),
    (_with(1e300, np.float64), "'x' holds 1 infinite value (the first in sample 3; values beyond the float32 range"),
    (X.astype(np.complex64) + 1j, "'x' holds complex numbers (complex64); inputs must be real"),
], ids=["nan", "inf", "-inf", "float64-overflow", "complex"])
def test_inputs_must_be_real_and_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str], x: np.ndarray,
                                        needle: str) -> None:
    line = data_refused(capsys, _npz(tmp_path, x=x))
    assert line.endswith(needle) or needle in line, line


@pytest.mark.parametrize("y, needle", [
    (np.full(40, 0.5), "'y' must hold integer class indices, but label 0.5 of sample 0 is not a whole number"),
    (np.r_[np.zeros(7), np.nan, np.zeros(32)], "label nan of sample 7 is not a whole number"),
    (np.full(40, np.inf), "label inf of sample 0 is not a whole number"),
    (np.ones(40, bool), "'y' must hold integer class indices, not bool values"),
    (np.full(40, 1 + 1j), "'y' must hold integer class indices, not complex128 values"),
    (np.r_[np.zeros(5, np.int64), -1, np.zeros(34, np.int64)],
     "'y' must hold class indices (0, 1, ...), but label -1 of sample 5 is negative"),
    (np.full(40, 2**63 + 5, np.uint64), "'y' holds label 9223372036854775813, far beyond any class index"),
], ids=["fraction", "nan", "inf", "bool", "complex", "negative", "uint64"])
def test_labels_must_be_class_indices(tmp_path: Path, capsys: pytest.CaptureFixture[str], y: np.ndarray,
                                      needle: str) -> None:
    line = data_refused(capsys, _npz(tmp_path, x=X, y=y))
    assert line.endswith(needle), line


def test_good_data_loads(tmp_path: Path) -> None:
    """Whole numbers in a float array are labels; integer inputs become float32."""
    d = load_data(str(_npz(tmp_path, x=(X * 255).astype(np.uint8), y=np.arange(40.0) % 10)))
    assert d.x.dtype == np.float32 and d.y is not None and d.y.dtype == np.int64
    np.testing.assert_array_equal(d.y, np.arange(40) % 10)
    d = load_data(str(_npz(tmp_path, x=X.astype(np.float64), y=(np.arange(40) % 10).astype(np.uint8))))
    np.testing.assert_array_equal(d.x, X)
    assert load_data("zoo:digits").y is not None


def test_finite_check_stays_small(tmp_path: Path) -> None:
    """Checking a 64 MiB ``x`` allocates little beyond ``x`` itself (masks are made in chunks)."""
    x = np.zeros((16, 1024, 1024), np.float32)
    x[-1, -1, -1] = np.nan
    path = _npz(tmp_path, x=x)
    del x
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"'x' holds 1 NaN value \(the first in sample 15\)"):
            load_data(str(path))
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < (64 << 20) * 2 + (16 << 20), peak  # the file's bytes and x, then small masks


def test_labels_must_be_classes_of_the_model(tmp_path: Path) -> None:
    graph = load_model("zoo:digits_cnn")
    assert classes_of(graph) == 10
    data = load_data(str(_npz(tmp_path, x=X, y=np.r_[np.zeros(12, np.int64), 57, np.zeros(27, np.int64)])))
    with pytest.raises(DataError, match=r"d\.npz: label 57 of sample 12 is not a class of the model: its output "
                                        r"'output' scores 10 classes \(0 to 9\)$"):
        check_labels(data, graph)
    check_labels(load_data(str(_npz(tmp_path, "ok.npz", x=X, y=np.arange(40) % 10))), graph)
    check_labels(load_data(str(_npz(tmp_path, "none.npz", x=X))), graph)


def test_labels_beyond_the_classes_refuse_the_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      toy_registry: Any) -> None:
    path = _npz(tmp_path, x=X, y=np.full(40, 57))
    line = refused(capsys, "compile", "zoo:digits_cnn", "--target", "toy_cpu:default", "-o", str(tmp_path / "out"),
                   "--data", str(path), "-q")
    assert line == f"hwmap: error: {path}: label 57 of sample 0 is not a class of the model: its output 'output' " \
                   "scores 10 classes (0 to 9)", line
    assert not (tmp_path / "out").exists()
