"""Fig. 3.2 of the chapter: the tuning curves of the RegularSpiking versions of Tanh, Sigmoid,
RectifiedLinear and LIFRate (tau_ref = 2.5 ms) written as a PNG, and the data behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwmap_nengo_like.pictures import tuning_curves


def test_tuning_curves_png_and_data(tmp_path: Path) -> None:
    path = tmp_path / "fig" / "fig3_2.png"
    curves = tuning_curves(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert list(curves) == ["Tanh", "Sigmoid", "RectifiedLinear", "LIFRate"]
    for c in curves.values():
        assert c["x"].shape == c["rate"].shape == c["spiking"].shape == (101,)
        # the measured rate follows the rate curve (1 s: one spike's resolution, the blank start)
        assert np.max(np.abs(c["spiking"] - c["rate"])) <= 2.0
    lif = curves["LIFRate"]["spiking"]
    assert abs(lif.max() - 400.0) <= 4.0 and np.all(lif <= 400.0)  # saturates at 1/tau_ref, within 1 %
    assert np.all(lif[curves["LIFRate"]["x"] <= 0] == 0)
    tanh, x = curves["Tanh"]["spiking"], curves["Tanh"]["x"]
    assert np.all(tanh[x < -0.05] < 0) and np.all(tanh[x > 0.05] > 0)  # negative spikes for negative input
    assert tanh.min() < -380
    assert curves["Sigmoid"]["spiking"].min() >= 0 and curves["RectifiedLinear"]["spiking"].min() == 0
    # deterministic: the same call writes the same file
    again = tmp_path / "again.png"
    tuning_curves(again)
    assert again.read_bytes() == data
