"""The records of an analog IMC program and the constants of its wire format.

Plain data: the chip configuration, the tensors, the crossbar layers, the blocks, weight
programming, ADC settings, the schedule (READ and ACCUM instructions), the fused post-ops, the
digital ops and the NoC transfers, each with its wire ``SPEC``. :class:`~.program.Program`
holds them (the format is documented field by field in :mod:`hwmap_analog_imc.program`); the
codecs (:mod:`.program_bin`, :mod:`.program_lst`) and the check (:mod:`.program_check`) are
generic over these records and import them from here, never from :mod:`.program` (which
imports them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import ClassVar, Union

import numpy as np

__all__ = [
    "MAGIC", "VERSION", "NONE", "ENC_DIFFERENTIAL", "ENC_OFFSET", "KIND_ACT", "KIND_PSUM",
    "LAYOUT_WHOLE", "LAYOUT_CHANNELS_FIRST", "LAYOUT_CHANNELS_LAST", "FLAG_INPUT", "FLAG_OUTPUT", "FLAG_QUANT",
    "FLAG_AXIS", "Config", "TensorRec", "LayerRec", "BlockRec", "WeightsRec", "AdcRec", "ReadRec", "AccumRec",
    "PostOpRec", "DigitalRec", "TransferRec", "Instruction", "field_names",
]

MAGIC = b"HWMAPIMC"
VERSION = 2
NONE = 0xFFFFFFFF
ENC_DIFFERENTIAL, ENC_OFFSET = 0, 1
KIND_ACT, KIND_PSUM = 0, 1
LAYOUT_WHOLE, LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST = 0, 1, 2
FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, FLAG_AXIS = 1, 2, 4, 8


# ------------------------------------------------------------------------------------ records
# Each record class lists its fields with their wire kinds in ``SPEC``: the binary and the
# listing codecs are generic over it (kinds: u32, i32, u64, f64, str, ref, u32s, params).

@dataclass(frozen=True)
class Config:
    """The chip the program was compiled for (see the module docstring, section CONFIG)."""

    cores: int
    crossbar_rows: int
    crossbar_cols: int
    element_rows: int
    element_cols: int
    bits_per_cell: int
    weight_bits: int
    encoding: int
    input_bits: int
    dac_bits: int
    adc_bits: int
    columns_per_adc: int
    mesh_cols: int
    mesh_rows: int
    link_width_bits: int
    hop_latency_cycles: int
    computation_cycles: int
    batch: int
    input_buffer_bytes: int
    output_buffer_bytes: int
    adc_calibration: int
    calibration_vectors: int
    clock_hz: float
    read_pulse_s: float
    adc_conversion_s: float
    KEYWORD: ClassVar[str] = "CONFIG"
    SPEC: ClassVar[tuple[str, ...]] = ("u32",) * 22 + ("f64",) * 3


@dataclass(frozen=True)
class TensorRec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    flags: int
    q_scale: int = NONE
    q_zero_point: int = NONE
    q_bits: int = 0
    q_signed: int = 0
    q_narrow: int = 0
    q_axis: int = 0
    KEYWORD: ClassVar[str] = "TENSOR"
    SPEC: ClassVar[tuple[str, ...]] = ("str", "str", "u32s", "u32", "ref", "ref", "u32", "u32", "u32", "i32")


@dataclass(frozen=True)
class LayerRec:
    order: int
    name: str
    op: str
    input: int
    output: int
    home_core: int
    groups: int
    rows: int
    filters: int
    cols_per_filter: int
    positions: int
    replicas: int
    planes: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    dilations: tuple[int, ...]
    out_spatial: tuple[int, ...]
    in_scale: float
    in_zero_point: int
    in_qmin: int
    in_qmax: int
    weight_offset: int
    w_scale: int
    bias: int
    coef: int
    KEYWORD: ClassVar[str] = "LAYER"
    SPEC: ClassVar[tuple[str, ...]] = ("u32", "str", "str") + ("u32",) * 10 + ("u32s",) * 6 + (
        "f64", "i32", "i32", "i32", "i32", "ref", "ref", "ref")


@dataclass(frozen=True)
class BlockRec:
    layer: int
    replica: int
    group: int
    row_start: int
    row_count: int
    filter_start: int
    filter_count: int
    cycle: int
    core: int
    elem_row: int
    elem_col: int
    elem_rows: int
    elem_cols: int
    KEYWORD: ClassVar[str] = "BLOCK"
    SPEC: ClassVar[tuple[str, ...]] = ("u32",) * 13


@dataclass(frozen=True, eq=False)
class WeightsRec:
    """Programming of one block's cells: ``cells`` is ``rows × cols`` uint8 levels."""

    block: int
    cycle: int
    core: int
    elem_row: int
    elem_col: int
    bits: int
    cells: np.ndarray
    KEYWORD: ClassVar[str] = "WEIGHTS"


@dataclass(frozen=True, eq=False)
class AdcRec:
    """ADC setting of one block: ``shifts`` is ``planes × cols_per_filter`` uint8."""

    block: int
    adc_bits: int
    shifts: np.ndarray
    KEYWORD: ClassVar[str] = "ADC"


@dataclass(frozen=True)
class ReadRec:
    cycle: int
    core: int
    layer: int
    replica: int
    group: int
    row_start: int
    row_count: int
    pos_start: int
    pos_count: int
    blocks: tuple[int, ...]
    KEYWORD: ClassVar[str] = "READ"
    OPCODE: ClassVar[int] = 1
    SPEC: ClassVar[tuple[str, ...]] = ("u32",) * 9 + ("u32s",)


@dataclass(frozen=True)
class AccumRec:
    cycle: int
    core: int
    block: int
    dst_core: int
    offset: int
    xsum_factor: int
    KEYWORD: ClassVar[str] = "ACCUM"
    OPCODE: ClassVar[int] = 2
    SPEC: ClassVar[tuple[str, ...]] = ("u32", "u32", "u32", "u32", "ref", "i32")


@dataclass(frozen=True)
class PostOpRec:
    layer: int
    name: str
    op: str
    attrs: str
    position: int
    extra: tuple[int, ...]
    params: tuple[tuple[str, int], ...]
    KEYWORD: ClassVar[str] = "POSTOP"
    SPEC: ClassVar[tuple[str, ...]] = ("u32", "str", "str", "str", "u32", "u32s", "params")


@dataclass(frozen=True)
class DigitalRec:
    order: int
    name: str
    op: str
    core: int
    cycle: int
    attrs: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    params: tuple[tuple[str, int], ...]
    KEYWORD: ClassVar[str] = "DIGITAL"
    SPEC: ClassVar[tuple[str, ...]] = ("u32", "str", "str", "u32", "u32", "str", "u32s", "u32s", "params")


@dataclass(frozen=True)
class TransferRec:
    cycle: int
    src: int
    dst: int
    hops: int
    tensor: int
    kind: int
    layout: int
    ch_start: int
    ch_count: int
    pos_start: int
    pos_count: int
    bytes: int
    KEYWORD: ClassVar[str] = "NOC"
    SPEC: ClassVar[tuple[str, ...]] = ("u32",) * 11 + ("u64",)


Instruction = Union[ReadRec, AccumRec]


@cache
def field_names(cls: type) -> tuple[str, ...]:
    """The field names of record class ``cls``, in the order of its ``SPEC``."""
    return tuple(f.name for f in fields(cls))
