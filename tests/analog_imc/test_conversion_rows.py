"""``mapper.conversion_rows``: tall blocks read as stacked row groups, one ADC conversion per
column each, their codes added digitally. The rectangles stay the mapper's; what changes is
counted from the layers' geometry here, not from the code that emits or charges it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap import ConfigError, load_model
from hwmap.config import load_target
from hwmap_analog_imc import plugin, simulator
from hwmap_analog_imc.blocks import Placement
from hwmap_analog_imc.emit import read_program

CHAPTER = "analog_imc:chapter-fig3.13"


def _mapped(rows: int) -> tuple[hwmap.Mapping, hwmap.Target]:
    target = load_target(CHAPTER, [f"mapper.conversion_rows={rows}"])
    legal = plugin.hwmap_legalize(load_model("zoo:chapter_cnn"), target)
    return plugin.hwmap_map(legal.graph, target), target


def _cells(placements: tuple[Placement, ...]) -> set[tuple[int, int, int, int]]:
    """(cycle, core, element row, element column) of every element a block takes."""
    return {(p.cycle, p.core, p.elem_row + i, p.elem_col + j)
            for p in placements for i in range(p.elem_rows) for j in range(p.elem_cols)}


def test_row_groups_keep_the_chapter_rectangles() -> None:
    whole, _ = _mapped(0)
    split, _ = _mapped(16)
    rw, rs = whole.result, split.result  # type: ignore[attr-defined]
    assert rw.elements_allocated == rs.elements_allocated == 22
    assert _cells(rw.placements) == _cells(rs.placements)
    # Conv1 (16 rows) stays one block; Conv2's 144 rows become 9 stacked groups of one element row
    conv2 = [p for p in rs.placements if p.layer == 1]
    assert [(p.row_start, p.row_count, p.elem_row, p.elem_rows) for p in conv2] == \
        [(16 * i, 16, i, 1) for i in range(9)]
    assert {lm.node: lm.row_tiles for lm in rs.layers} == {"conv1_fused": 1, "conv2": 9}
    assert {lm.node: lm.row_tiles for lm in rw.layers} == {"conv1_fused": 1, "conv2": 1}


def test_row_groups_must_be_whole_elements() -> None:
    with pytest.raises(ConfigError, match="mapper.conversion_rows = 8 is not a multiple of hardware.element_rows"):
        load_target(CHAPTER, ["mapper.conversion_rows=8"])


def test_row_groups_are_converted_and_charged(tmp_path: Path) -> None:
    """Conv1: 5×31 positions × 16 columns; Conv2: 3×29 positions × 8 columns, once per row
    group. The estimate and the simulator both count 2480 + 696 conversions whole and
    2480 + 9·696 in groups of 16; the DACs drive every row once either way; the reads of
    one core follow each other, so latency grows."""
    x = np.random.default_rng(0).random((4, 1, 13, 64), dtype=np.float32)
    kpis, sims = {}, {}
    for rows in (0, 16):
        mapping, target = _mapped(rows)
        out = tmp_path / str(rows)
        plugin.hwmap_emit(mapping, target, out).write_manifest()
        sim = simulator.simulate(hwmap.Artifacts.read(out), target, {"input": x})
        sims[rows] = sim
        kpis[rows] = plugin.hwmap_estimate(mapping, target, None)
        program = read_program(out / "program.bin")
        assert len(program.blocks) == (2 if rows == 0 else 10)
    expected = {0: 155 * 16 + 87 * 8, 16: 155 * 16 + 9 * 87 * 8}
    for rows, want in expected.items():
        assert kpis[rows].resources["adc_conversions"] == want
        assert sum(sims[rows].activity["adc_conversions"].values()) == want  # per inference
    assert kpis[16].resources["dac_conversions"] == kpis[0].resources["dac_conversions"]
    assert kpis[16].latency_s > 3 * kpis[0].latency_s
    assert kpis[16].energy_per_inference_j > kpis[0].energy_per_inference_j
