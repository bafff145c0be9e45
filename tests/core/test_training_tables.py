"""examples/training: the generated moving-digits videos (translations of the digits, seeded) and
run_tables.py in its tiny configuration: every table row present, delta inference agreeing
with dense inference, the same output twice."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("torch")

HERE = Path(__file__).resolve().parents[2] / "examples" / "training"


def _load(name: str) -> ModuleType:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_moving_digits_translate_one_digit_per_video() -> None:
    md = _load("moving_digits")
    xtr, ytr, xte, yte = md.moving_digits(limit=20, seed=3)
    assert xtr.shape == (20, 8, 1, 16, 16) and xte.shape == (20, 8, 1, 16, 16) and xtr.dtype == np.float32
    from hwmap.zoo.digits import digits_split

    digits, _, labels, _ = digits_split()
    np.testing.assert_array_equal(ytr, labels[:20])
    for video, digit in zip(xtr, digits[:20]):
        for frame in video:  # each frame holds the digit, whole, somewhere, on black
            r, c = np.argwhere(frame[0] > 0).min(axis=0)
            rows, cols = np.nonzero(digit[0] > 0)
            r0, c0 = r - rows.min(), c - cols.min()
            np.testing.assert_array_equal(frame[0, r0:r0 + 8, c0:c0 + 8], digit[0])
            assert frame.sum() == pytest.approx(digit.sum())
        moved = [np.abs(np.argwhere(a[0] > 0).min(0) - np.argwhere(b[0] > 0).min(0)).max()
                 for a, b in zip(video[:-1], video[1:])]
        assert max(moved) == 1  # at most a pixel per frame along each axis
    again = md.moving_digits(limit=20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((xtr, ytr, xte, yte), again))


@pytest.fixture
def torch_settings() -> object:
    """run_tables sets one thread and deterministic algorithms: put them back afterwards."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_run_tables_quick_prints_every_table_the_same_twice(torch_settings: object) -> None:
    rt = _load("run_tables")
    results, sweep = rt.run(quick=True)
    text = rt.tables(results, sweep)
    assert [r.bits for r in results] == ["32", "32", "8", "7", "6", "5", "mixed"]
    for r in results[1:]:
        # to float rounding, but summed in another order an activation on a rounding boundary of
        # the next quantizer may land one code away: small against logits of order 1
        assert r.delta_vs_dense is not None and r.delta_vs_dense < 1e-3 and r.delta_agreement == 1.0
        assert r.sparsity > results[0].sparsity  # the delta maps are sparser than the ReLU outputs
        assert r.macs_skipping < r.macs_dense
    assert results[0].macs_dense == 16 * 16 * 8 * 9 + 8 * 8 * 16 * 72 + 4 * 4 * 32 * 144 + 512 * 10
    assert len(results[-1].lsq_bits) == 3 and [len(b) for b in results[-1].lsq_bits] == [8, 16, 32]
    assert [lam for lam, _ in sweep] == sorted({rt.LAMBDA, *rt.LAMBDA_SWEEP})
    for title in ("Table 3.1/3.2 shape", "Table 3.3 shape", "zero-skipping", "Bits each channel", "λ (eq. 3.15)"):
        assert title in text
    results2, sweep2 = rt.run(quick=True)
    assert rt.tables(results2, sweep2) == text
    assert [asdict(r) for r in results2] == [asdict(r) for r in results]  # every number, not only the printed ones
