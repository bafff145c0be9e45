"""The mapping picture (chapter Fig. 3.13 style): written, a PNG, the same bytes twice."""

from __future__ import annotations

from pathlib import Path

from hwmap_analog_imc.hardware import AnalogIMCConfig, Blueprint
from hwmap_analog_imc.layers import CrossbarLayer
from hwmap_analog_imc.mapper import map_layers
from hwmap_analog_imc.plot import MAX_PANELS, _panels, plot_mapping

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chapter() -> tuple[list[CrossbarLayer], Blueprint]:
    cfg = AnalogIMCConfig(hardware=dict(cores=1, crossbar_rows=256, crossbar_cols=64, weight_bits=8,
                                        bits_per_cell=8, weight_encoding="offset"))
    layers = [CrossbarLayer(0, "conv1", "Conv", 1, 16, 16, 1, 155), CrossbarLayer(1, "conv2", "Conv", 1, 144, 8, 1, 87)]
    return layers, Blueprint.from_config(cfg)


def test_plot_chapter_example_deterministic(tmp_path: Path) -> None:
    layers, bp = _chapter()
    res = map_layers(layers, bp, "greedy")
    a, b = tmp_path / "a" / "map.png", tmp_path / "b.png"
    plot_mapping(res, layers, bp, a)
    plot_mapping(res, layers, bp, b)
    data = a.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert data == b.read_bytes()
    assert b"Software" not in data  # no version stamp in the metadata


def test_plot_many_panels_capped(tmp_path: Path) -> None:
    bp = Blueprint.from_config(AnalogIMCConfig(hardware=dict(cores=3, crossbar_rows=64, crossbar_cols=64,
                                                              columns_per_adc=1)))
    layers = [CrossbarLayer(i, f"l{i}", "Conv", 1 + i % 2, 60 + 20 * i, 40, 4, 10) for i in range(6)]
    res = map_layers(layers, bp, "packed")
    rows, hidden = _panels(res)
    assert len(res.slots) > MAX_PANELS and hidden == len(res.slots) - MAX_PANELS
    assert sum(len(r) for r in rows) == MAX_PANELS
    assert all(len({c for c, _ in r}) == 1 for r in rows)  # one cycle per row of panels
    out = tmp_path / "many.png"
    plot_mapping(res, layers, bp, out)
    assert out.read_bytes().startswith(PNG_MAGIC)
