"""Activity of an analog IMC program per inference: what the simulator reports beside the values.

The part that depends on the program only (:func:`static_activity`, computed once per session):
``mvms`` (analog reads: input vectors × bit-planes per READ), ``adc_conversions`` (reads ×
columns converted), ``cell_reads`` (reads × cells of the blocks read), ``noc_bits`` and
``noc_bit_hops`` (the NOC records), and ``cycle_time_s``: per computation cycle, the slowest
core's reads (each ``read_pulse_s + k·adc_conversion_s``, ``k`` the most columns one ADC
converts; ADC ``a`` serves columns ``a·columns_per_adc ..``, blocks on one core read one after
another) plus the cycle's NoC transfers (one at a time: ``hops·hop_latency +
ceil(bits/link_width)`` clock cycles each). The part that depends on the data
(:func:`activity_record`): ``dac_conversions`` (nonzero input digits driven), ``adc_clipped`` and
the programmings per inference at a batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .program import Program, ReadRec

__all__ = ["StaticActivity", "static_activity", "activity_record"]

@dataclass
class StaticActivity:
    """The activity that depends on the program only (per inference)."""

    mvms: dict[str, int]
    adc: dict[str, int]
    cells: dict[str, int]
    cycles: list[float]
    noc_bits: int
    noc_bit_hops: int


def static_activity(program: Program) -> StaticActivity:
    """MVMs, ADC conversions and cell reads per layer, and the time of every computation
    cycle (the slowest core's reads, one after another, plus the cycle's NoC transfers)."""
    with np.errstate(all="ignore"):  # a program's absurd timings give inf, not a warning
        return _static_activity(program)


def _static_activity(program: Program) -> StaticActivity:
    cfg = program.config
    mvms: dict[str, int] = {lay.name: 0 for lay in program.layers}
    adc: dict[str, int] = dict(mvms)
    cells: dict[str, int] = dict(mvms)
    reads = [ins for ins in program.schedule if isinstance(ins, ReadRec)]
    pairs = [(k, program.blocks[b]) for k, r in enumerate(reads) for b in r.blocks]  # (READ, block)
    owner = np.array([k for k, _ in pairs], dtype=np.int64)
    width = np.array([b.filter_count * program.layers[b.layer].cols_per_filter for _, b in pairs], dtype=np.int64)
    start = np.array([b.elem_col * cfg.element_cols for _, b in pairs], dtype=np.int64)
    height = np.array([b.row_count for _, b in pairs], dtype=np.int64)
    loads = _adc_loads(owner, start, width, cfg.columns_per_adc, len(reads)).tolist()
    ncols = np.bincount(owner, weights=width, minlength=len(reads)).astype(np.int64).tolist()
    ncells = np.bincount(owner, weights=width * height, minlength=len(reads)).astype(np.int64).tolist()
    core_time: dict[tuple[int, int], float] = {}
    for r, load, nc, ce in zip(reads, loads, ncols, ncells):
        lay = program.layers[r.layer]
        n = r.pos_count * lay.planes
        mvms[lay.name] += n
        adc[lay.name] += n * nc
        cells[lay.name] += n * ce
        t = cfg.read_pulse_s + load * cfg.adc_conversion_s
        core_time[(r.cycle, r.core)] = core_time.get((r.cycle, r.core), 0.0) + n * t
    cycles = [0.0] * cfg.computation_cycles
    for (c, _), t in core_time.items():
        cycles[c] = max(cycles[c], t)
    for tr in program.noc:
        bits = tr.bytes * 8
        clk = tr.hops * cfg.hop_latency_cycles + math.ceil(bits / cfg.link_width_bits)
        if tr.cycle < len(cycles):
            cycles[tr.cycle] += clk / cfg.clock_hz
    return StaticActivity(mvms, adc, cells, cycles, int(sum(t.bytes * 8 for t in program.noc)),
                           int(sum(t.bytes * 8 * t.hops for t in program.noc)))


def _adc_loads(owner: np.ndarray, start: np.ndarray, width: np.ndarray, per_adc: int, n_reads: int) -> np.ndarray:
    """Per READ, the most columns one ADC converts: block ``i`` of READ ``owner[i]`` has
    columns ``start[i] .. start[i] + width[i]``, ADC ``a`` serves columns ``a·per_adc ..``
    (summed per (READ, ADC) pair over the pairs that occur: memory in the number of pairs,
    however wide the crossbar)."""
    first = start // per_adc
    count = np.maximum(0, (start + width - 1) // per_adc - first + 1)  # ADCs each block touches
    pair = np.repeat(np.arange(owner.size), count)
    a = first[pair] + np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    cols = np.minimum(start[pair] + width[pair], (a + 1) * per_adc) - np.maximum(start[pair], a * per_adc)
    out = np.zeros(n_reads, dtype=np.int64)
    if not pair.size:
        return out
    reads = owner[pair]
    order = np.lexsort((a, reads))
    reads, a, cols = reads[order], a[order], cols[order]
    head = np.flatnonzero(np.r_[True, (reads[1:] != reads[:-1]) | (a[1:] != a[:-1])])
    per = np.add.reduceat(cols, head)  # columns per (READ, ADC)
    np.maximum.at(out, reads[head], per)
    return out


def activity_record(static: StaticActivity, program: Program, n: int, counts: list[Any], clipped: list[int],
              batch: int = 1) -> dict[str, Any]:
    """The activity dict: the static part, and per inference the DAC conversions (per
    layer, its READs' nonzero digits summed one READ after the other, as the digital logic
    counts), the clipped conversions, and the computation cycles programmed: with several
    cycles, every cycle once per batch of ``batch`` samples (the last batch possibly short);
    with one, none per inference (programmed once before the run)."""
    dac: dict[str, float] = {}
    for lay, c in zip(program.layers, counts):
        dac[lay.name] = _sum_in_order(np.asarray(c, dtype=np.int64).reshape(-1), n)
    return {
        "samples": n,
        "mvms": dict(static.mvms),
        "adc_conversions": dict(static.adc),
        "dac_conversions": dac,
        "cell_reads": dict(static.cells),
        "adc_clipped": {lay.name: float(clipped[i]) / n for i, lay in enumerate(program.layers)},
        "cycle_time_s": list(static.cycles),
        "noc_bits": static.noc_bits,
        "noc_bit_hops": static.noc_bit_hops,
        "programmings_per_inference": (program.config.computation_cycles * math.ceil(n / batch) / n
                                       if program.config.computation_cycles > 1 and n else 0.0),
    }


def _sum_in_order(values: np.ndarray, n: int) -> float:
    """``Σ_k values[k]/n`` accumulated left to right in float64 (a fixed order: the same
    bits however many READs there are)."""
    if values.size > 64:
        return float(np.add.accumulate(values / n)[-1])
    total = 0.0
    for v in values.tolist():
        total += v / n
    return total
