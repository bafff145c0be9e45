"""The mapping picture (chapter Fig. 3.13 style): written, a PNG, the same bytes twice."""

from __future__ import annotations

from pathlib import Path

from hwmap_analog_imc.hardware import AnalogIMCConfig, Blueprint
from hwmap_analog_imc.layers import CrossbarLayer
from hwmap_analog_imc.mapper import map_layers
from hwmap import load_model
from hwmap.config import load_target
from hwmap_analog_imc import plugin
from hwmap_analog_imc.plot import MAX_PANELS, plot_mapping

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


def test_plot_many_cycles_pages_crossbars_and_summarizes_every_cycle(tmp_path: Path) -> None:
    bp = Blueprint.from_config(AnalogIMCConfig(hardware=dict(cores=3, crossbar_rows=64, crossbar_cols=64,
                                                              columns_per_adc=1)))
    layers = [CrossbarLayer(i, f"l{i}", "Conv", 1 + i % 2, 60 + 20 * i, 40, 4, 10) for i in range(6)]
    res = map_layers(layers, bp, "packed")
    assert res.computation_cycles > 4
    pic = plot_mapping(res, layers, bp, tmp_path / "many.png")
    assert (tmp_path / "many.png").read_bytes().startswith(PNG_MAGIC)
    assert len(pic.panels) <= MAX_PANELS and pic.detail_cycles == tuple(range(len(pic.detail_cycles)))
    # 3 cores on a 2×2 mesh: whole cycles of 4 panels, bands at most twice as tall as wide
    assert len(pic.detail_cycles) == 2 and len(pic.panels) == 3 * 2
    assert pic.summary_cycles == tuple(range(res.computation_cycles))  # every cycle is in the table
    assert 0.33 < pic.figsize[0] / pic.figsize[1] < 3


def _mapped(model: str, preset: str, *sets: str) -> tuple[list[CrossbarLayer], Blueprint, object]:
    t = load_target(f"analog_imc:{preset}", list(sets))
    m = plugin.hwmap_map(plugin.hwmap_legalize(load_model(model), t).graph, t)
    return m.layers, m.blueprint, m.result


def test_plot_duplicated_cores_in_a_grid_with_copies_marked(tmp_path: Path) -> None:
    """The duplicated mapper's 8 cores (one 2992×495 row before) sit on the 3×3 mesh grid,
    every copy beyond the first is counted as marked, the figure is near-square."""
    layers, bp, res = _mapped("zoo:digits_cnn", "default", 'mapper.strategy="duplicated"')
    pic = plot_mapping(res, layers, bp, tmp_path / "dup.png")
    assert (bp.mesh_cols, bp.mesh_rows) == (3, 3)
    assert {(core, (r, c)) for _, core, r, c in pic.panels} == {(k.index, k.mesh_xy[::-1]) for k in bp.cores}
    copies = [p for p in res.placements if p.replica > 0]
    assert copies and pic.copies == len(copies)
    assert 0.5 < pic.figsize[0] / pic.figsize[1] < 2


def test_plot_mobilenet_summarizes_all_33_cycles(tmp_path: Path) -> None:
    layers, bp, res = _mapped("zoo:mobilenet_v1", "default")
    pic = plot_mapping(res, layers, bp, tmp_path / "mbn.png")
    assert res.computation_cycles == 33 and pic.summary_cycles == tuple(range(33))
    assert pic.detail_cycles == (0,) and len(pic.panels) == 8
    assert 0.33 < pic.figsize[0] / pic.figsize[1] < 3
    assert max(pic.figsize) < 25  # inches: readable, not one endless row
