"""The analog IMC program: the instructions the cores' FSMs decode, its binary format and listing.

A :class:`Program` is what :mod:`~hwmap_analog_imc.emit` writes and what the simulator
reads back: the chip configuration it was compiled for, the tensors, the crossbar layers,
per core and computation cycle the switch configuration (blocks of concatenated elements),
weight programming (cell levels per element), the ADC read-out setting per block, the input
(DAC) schedule with partial-sum accumulation, the fused post-operations, the digital
operations and the NoC transfers. Everything is plain data; nothing refers back to the
graph or the mapping it came from.

Binary format ``program.bin`` (version 2)
=========================================

All integers and floats are little-endian, fixed width (``struct``): ``u8``/``u16``/``u32``/
``u64`` unsigned, ``i32`` signed two's complement, ``f64`` IEEE 754 double. ``ref`` is a
``u32`` index into the CONSTS table, ``0xFFFFFFFF`` for none; ``str`` is a ``u32`` index into
the STRINGS table; ``u32s`` is a ``u32`` count followed by that many ``u32``.

File layout::

    header      24 bytes   magic "HWMAPIMC" (8 bytes), u16 version (= 2),
                           u16 number of sections (= 12), u32 reserved (= 0),
                           u64 file length in bytes (CRC included)
    table       24 bytes per section: u32 type, u32 record count, u64 offset, u64 length
    sections    the payloads, in table order (offsets from the file start)
    crc         u32 CRC-32 (zlib/IEEE 802.3) of every byte before it

Sections, each present exactly once, in this order (type: name — one record's fields):

1. CONFIG — one record: u32 cores, crossbar_rows, crossbar_cols, element_rows,
   element_cols, bits_per_cell, weight_bits, encoding (0 differential, 1 offset), input_bits,
   dac_bits, adc_bits, columns_per_adc, mesh_cols, mesh_rows, link_width_bits,
   hop_latency_cycles, computation_cycles, batch (batch size the program was compiled at),
   input_buffer_bytes, output_buffer_bytes, adc_calibration (0 analytic worst case,
   1 calibrated on data), calibration_vectors (input vectors the calibration saw);
   f64 clock_hz, read_pulse_s, adc_conversion_s.
2. STRINGS — per string: u32 byte length, UTF-8 bytes. Strings are numbered in order of
   first use while the other sections are written (type order), so a program has one
   encoding.
3. CONSTS — per array: str dtype (numpy ``dtype.str``, little-endian, e.g. ``<f8``),
   u32 ndim, u64 each dimension, u64 byte count, the C-order bytes.
4. TENSORS — per tensor: str name, str dtype, u32s shape (batch first, as compiled),
   u32 flags (bit 0 graph input, bit 1 graph output, bit 2 quantized, bit 3 per-axis),
   ref quant scale, ref quant zero point, u32 quant bits, u32 signed, u32 narrow,
   i32 quant axis (meaningful with flag bit 3).
5. LAYERS — per crossbar layer: u32 order (position in dataflow order, one sequence with
   DIGITAL), str name, str op (Conv, Gemm, MatMul: the compute op), u32 input tensor,
   u32 output tensor (after the fused post-ops), u32 home core (the core of copy 0's first
   block: where digital ops fed by the layer default to; partial sums are accumulated and
   the post-ops run on each ACCUM's dst core), u32 groups, u32 rows (M per group), u32 filters (N per
   group), u32 cols_per_filter, u32 positions (input vectors per sample), u32 replicas,
   u32 planes (DAC bit-planes per input vector), u32s kernel, u32s strides, u32s pads_begin,
   u32s pads_end, u32s dilations, u32s out_spatial (all empty for Gemm/MatMul);
   f64 in_scale, i32 in_zero_point, i32 in_qmin, i32 in_qmax (the DAC input quantization:
   code ``q = clip(round_half_even(x / in_scale) + in_zero_point, in_qmin, in_qmax)``,
   driven as ``u = q − in_qmin``), i32 weight_offset (offset encoding: the offset ``o``
   subtracted from every stored weight; 0 for differential), ref w_scale (f64 per output
   channel, Gemm ``alpha`` included), ref bias (f64 per output channel or none), ref coef
   (i64 per column of a filter: the signed weight ``±2^(slice·bits_per_cell)`` of that column
   in the shift-and-add).
6. SWITCHES — per block (its index is the block id): u32 layer, replica, group, row_start,
   row_count, filter_start, filter_count, cycle, core, elem_row, elem_col, elem_rows,
   elem_cols: the switches of core ``core`` in computation cycle ``cycle`` concatenate the
   ``elem_rows × elem_cols`` elements from (``elem_row``, ``elem_col``) into one block
   holding rows ``row_start..+row_count`` of filters ``filter_start..+filter_count`` of
   group ``group`` of the layer.
7. WEIGHTS — per block: u32 block, cycle, core, elem_row, elem_col, rows, cols, bits (per
   cell), u64 byte count, the cell levels (integers ``0 .. 2^bits − 1``) row-major, each on
   ``bits`` bits LSB first, packed into bytes (numpy ``packbits``, little bit order), zero
   padded to a byte. Cell (r, c) is cell (r mod element_rows, c mod element_cols) of
   element (elem_row + r div element_rows, elem_col + c div element_cols); column c is
   column ``c mod cols_per_filter`` of filter ``filter_start + c div cols_per_filter``.
8. ADC — per block: u32 block, adc_bits, planes, cols_per_filter, then planes ×
   cols_per_filter u8 shifts (plane major): the ADC reading column j of the block during
   bit-plane p has its LSB at ``2^shift[p, j]`` column-sum units, so its full scale is
   ``(2^adc_bits − 1)·2^shift`` (a power-of-two reference, realizable as a shift).
9. SCHEDULE — per instruction: u32 opcode, u32 cycle, u32 core, then by opcode:
   READ (1): u32 layer, replica, group, row_start, row_count, pos_start, pos_count, u32s
   blocks — drive rows ``row_start..+row_count`` with input vectors ``pos_start..+pos_count``
   of every sample, one DAC bit-plane per read, and convert the columns of ``blocks``
   (blocks sharing these word lines). ACCUM (2): u32 block, u32 dst core, ref offset (i64
   per filter of the block: the digital offset correction), i32 xsum factor — the block's
   shift-and-added read-out plus ``offset`` plus ``xsum factor × Σ driven input codes`` is
   added to the layer's partial sums on ``dst``. Every block holding a row tile of a given
   filter of a given copy and group has the same ``dst``: its own core when all of them sit
   on one core (the outputs are finished there), else the core accumulating the partial
   sums. The core ``dst`` then applies the scales, bias, fused post-ops (POSTOPS) and the
   output quantization to those filters at the copy's positions, and sends the finished
   outputs on (NOC).
10. POSTOPS — per fused post-op, in order: u32 layer, str name, str op, str attrs (JSON,
    sorted keys), u32 position (where the chained value goes among the dynamic operands),
    u32s extra (the other dynamic operands: tensors), then params: u32 count and per param
    str slot, ref value.
11. DIGITAL — per digital op: u32 order, str name, str op, u32 core, u32 cycle, str attrs
    (JSON), u32s inputs, u32s outputs (tensors), params as in POSTOPS.
12. NOC — per transfer (per inference): u32 cycle, src core, dst core, hops, tensor, kind
    (0 finished values of a tensor to a core that reads them, at the tensor's quantization
    bits; 1 a block's read-out — partial sums — to the core accumulating them), layout,
    ch_start, ch_count, pos_start, pos_count, u64 bytes. The five region fields say which
    part of ``tensor`` (every sample of the batch) moves: layout 0 (whole) the whole tensor
    (``ch = 0, 1``, ``pos = 0, Π shape[1:]``); layout 1 (channels first, a convolution's
    tensors ``(N, C, *spatial)``) channels ``ch_start..+ch_count`` at the flat spatial
    positions ``pos_start..+pos_count`` (C-order over the spatial axes); layout 2 (channels
    last, a Gemm/MatMul's ``(N, *rows, K)``) the last-axis entries ``ch_start..+ch_count``
    of the flat rows ``pos_start..+pos_count`` (C-order over axes 1..−2). ``bytes`` =
    ``ceil(ch_count · pos_count · bits / 8)`` per sample.

Listing ``program.lst``
=======================

The same records as text, one per line, in section order: ``KEYWORD key=value ...``
(keywords CONFIG, CONST, TENSOR, LAYER, BLOCK, WEIGHTS, ADC, READ, ACCUM, POSTOP, DIGITAL,
NOC), values as integers, floats (Python ``repr``, exact), JSON strings (spaces written as
``\\u0020`` so no value holds a space), ``a,b,c`` tuples (``-`` when empty), ``@k`` const
references (``-`` for none). A CONST line ends with ``:`` and its values; a WEIGHTS line is
followed by one indented line of hexadecimal cell levels per cell row (one digit per cell up
to 4 bits per cell, two above). Lines starting with ``;`` are comments. The first line is
``HWMAP-IMC-LISTING version=2``, the last ``END``.

Version history: 1 — every transfer carried a whole tensor and all partial sums went to the
layer's home core (no region fields in NOC); 2 — per-copy dataflow (region fields).

This module holds the records, :class:`Program` and its consistency check; the codecs live in
:mod:`~hwmap_analog_imc.program_bin` (``program.bin``) and
:mod:`~hwmap_analog_imc.program_lst` (``program.lst``), both generic over the records' ``SPEC``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Callable, ClassVar, Union

import numpy as np

import hwmap
from hwmap import TargetError
from hwmap.compiledir import MAX_JSON_DEPTH, json_depth

__all__ = [
    "PROGRAM_FILE",
    "MAGIC", "VERSION", "NONE", "ENC_DIFFERENTIAL", "ENC_OFFSET", "KIND_ACT", "KIND_PSUM",
    "LAYOUT_WHOLE", "LAYOUT_CHANNELS_FIRST", "LAYOUT_CHANNELS_LAST", "region_elements",
    "Config", "TensorRec", "LayerRec", "BlockRec", "WeightsRec", "AdcRec", "ReadRec", "AccumRec",
    "PostOpRec", "DigitalRec", "TransferRec", "Program", "read_program", "load_program", "parse_listing",
    "footprint",
]

MAGIC = b"HWMAPIMC"
#: The binary program's file name inside an artifacts directory.
PROGRAM_FILE = "program.bin"
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


@dataclass(eq=False)
class Program:
    """Every instruction of one compiled network (see the module docstring)."""

    config: Config
    consts: list[np.ndarray] = field(default_factory=list)
    tensors: list[TensorRec] = field(default_factory=list)
    layers: list[LayerRec] = field(default_factory=list)
    blocks: list[BlockRec] = field(default_factory=list)
    weights: list[WeightsRec] = field(default_factory=list)
    adc: list[AdcRec] = field(default_factory=list)
    schedule: list[Instruction] = field(default_factory=list)
    postops: list[PostOpRec] = field(default_factory=list)
    digital: list[DigitalRec] = field(default_factory=list)
    noc: list[TransferRec] = field(default_factory=list)

    def const(self, ref: int) -> np.ndarray:
        return self.consts[ref]

    def add_const(self, array: np.ndarray) -> int:
        """Append ``array`` (little-endian, C order) to the const table; its reference."""
        a = np.ascontiguousarray(array)
        if a.dtype.kind not in "biuf":
            raise TargetError(f"a program constant must be numeric, got dtype {a.dtype}")
        self.consts.append(a.astype(a.dtype.newbyteorder("<"), copy=False))
        return len(self.consts) - 1

    # -- codecs (imported here: they import the records from this module)
    def to_bytes(self) -> bytes:
        from .program_bin import encode
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "program.bin") -> "Program":
        from .program_bin import decode
        return decode(data, where)

    def to_listing(self) -> str:
        from .program_lst import to_listing
        return to_listing(self)

    def check(self, where: str = "program") -> "Program":
        """Check every cross-reference; raise :class:`hwmap.TargetError` naming the first bad one."""
        _check(self, where)
        return self


def read_program(path: Path | str) -> Program:
    """Read a binary program file; :class:`hwmap.TargetError` with a one-line message if it
    is missing, not a regular file, larger than the memory bound, truncated, corrupt (CRC),
    of another format or version, or inconsistent."""
    from hwmap.safeio import read_file

    path = Path(path)
    data = read_file(path, what="file", error=_cannot_read)
    return Program.from_bytes(data, str(path))


def load_program(artifacts: hwmap.Artifacts) -> Program:
    """The program of emitted ``artifacts``: the file their manifest's ``program`` names
    (``program.bin`` by default), read through :meth:`hwmap.Artifacts.read_bytes` (listed,
    a regular file inside the artifacts directory, within the memory bound), then decoded
    and checked as :func:`read_program` does."""
    name = artifacts.manifest.get("program", PROGRAM_FILE)
    if not isinstance(name, str):
        raise TargetError("the manifest's 'program' is not a file name", where=str(artifacts.directory))
    data = artifacts.read_bytes(name)
    return Program.from_bytes(data, str(artifacts.path(name)))


def _cannot_read(message: str, *, where: str | None = None) -> TargetError:
    return TargetError(f"cannot read program: {message}", where=where)


def parse_listing(text: str, where: str = "program.lst") -> Program:
    """Read a text listing back into the :class:`Program` it shows."""
    from .program_lst import from_listing
    return from_listing(text, where)


@cache
def field_names(cls: type) -> tuple[str, ...]:
    """The field names of record class ``cls``, in the order of its ``SPEC``."""
    return tuple(f.name for f in fields(cls))


# ------------------------------------------------------------------------------------ checks
def _check(p: Program, where: str) -> None:
    def bad(msg: str) -> TargetError:
        return TargetError(msg, where=where)

    c = p.config
    nt, nc, nl, nb = len(p.tensors), len(p.consts), len(p.layers), len(p.blocks)

    def ref(r: int, what: str, optional: bool = False) -> None:
        if not (r < nc or (optional and r == NONE)):
            raise bad(f"{what} refers to constant {r}, the program has {nc}")

    _check_config(c, bad)
    if c.computation_cycles > max(1, nb):
        raise bad(f"CONFIG declares {c.computation_cycles:,} computation cycles for {nb:,} blocks (each cycle holds "
                  "at least one)")
    for i, t in enumerate(p.tensors):
        if t.flags & FLAG_QUANT:
            ref(t.q_scale, f"tensor {i} quant scale")
            ref(t.q_zero_point, f"tensor {i} quant zero point")
    for i, lay in enumerate(p.layers):
        if lay.input >= nt or lay.output >= nt:
            raise bad(f"layer {i} ({lay.name}) refers to tensor {max(lay.input, lay.output)}, the program has {nt}")
        ref(lay.w_scale, f"layer {i} w_scale")
        ref(lay.bias, f"layer {i} bias", optional=True)
        ref(lay.coef, f"layer {i} coef")
        if lay.home_core >= c.cores:
            raise bad(f"layer {i} ({lay.name}) has home core {lay.home_core}, the chip has {c.cores}")
        nsp = len(lay.kernel)
        if any(len(t) != nsp for t in (lay.strides, lay.pads_begin, lay.pads_end, lay.dilations, lay.out_spatial)):
            raise bad(f"layer {i} ({lay.name}) has geometry tuples of different lengths")
        if p.consts[lay.coef].shape != (lay.cols_per_filter,):
            raise bad(f"layer {i} ({lay.name}) coef has shape {p.consts[lay.coef].shape}, expected "
                      f"({lay.cols_per_filter},)")
        if p.consts[lay.w_scale].shape != (lay.groups * lay.filters,):
            raise bad(f"layer {i} ({lay.name}) w_scale has shape {p.consts[lay.w_scale].shape}")
        if lay.bias != NONE and p.consts[lay.bias].shape != (lay.groups * lay.filters,):
            raise bad(f"layer {i} ({lay.name}) bias has shape {p.consts[lay.bias].shape}")
        if not _geometry_ok(lay, p.tensors[lay.input].shape):
            raise bad(f"layer {i} ({lay.name}) does not fit its input tensor of shape "
                      f"{list(p.tensors[lay.input].shape)}")
        span = lay.in_qmax - lay.in_qmin
        if not (math.isfinite(lay.in_scale) and lay.in_scale > 0) or span < 0 or not 1 <= lay.planes <= c.input_bits \
                or span.bit_length() > lay.planes * c.dac_bits:
            raise bad(f"layer {i} ({lay.name}) has an input quantization its DAC bit-planes cannot drive (scale "
                      f"{lay.in_scale!r}, codes {lay.in_qmin}..{lay.in_qmax}, {lay.planes} planes of "
                      f"{c.dac_bits} bits)")
    held = [0] * nl  # weights (rows x filters) the blocks of each layer hold
    for i, b in enumerate(p.blocks):
        if b.layer >= nl:
            raise bad(f"block {i} refers to layer {b.layer}, the program has {nl}")
        lay = p.layers[b.layer]
        if (b.group >= lay.groups or b.row_start + b.row_count > lay.rows
                or b.filter_start + b.filter_count > lay.filters or b.replica >= lay.replicas):
            raise bad(f"block {i} lies outside layer {b.layer} ({lay.name})")
        if b.core >= c.cores or b.cycle >= c.computation_cycles:
            raise bad(f"block {i} sits on core {b.core} in cycle {b.cycle}, outside the chip/program")
        if ((b.elem_row + b.elem_rows) * c.element_rows > c.crossbar_rows
                or (b.elem_col + b.elem_cols) * c.element_cols > c.crossbar_cols):
            raise bad(f"block {i} lies outside its {c.crossbar_rows}x{c.crossbar_cols} crossbar")
        held[b.layer] += b.row_count * b.filter_count
    for i, lay in enumerate(p.layers):  # before anything the size of a layer is made
        if held[i] < lay.groups * lay.rows * lay.filters:
            raise bad(f"layer {i} ({lay.name}) declares {lay.groups * lay.rows * lay.filters:,} weights per filter "
                      f"column, its blocks hold {held[i]:,}")
    if len(p.weights) != nb or len(p.adc) != nb:
        raise bad(f"{nb} blocks but {len(p.weights)} weight and {len(p.adc)} ADC records")
    for i, (w, a) in enumerate(zip(p.weights, p.adc)):
        b = p.blocks[i]
        cpf = p.layers[b.layer].cols_per_filter
        if w.block != i or a.block != i:
            raise bad(f"weight/ADC record {i} is for block {w.block}/{a.block}")
        if w.cells.shape != (b.row_count, b.filter_count * cpf) or (w.cycle, w.core, w.elem_row, w.elem_col) != (
                b.cycle, b.core, b.elem_row, b.elem_col):
            raise bad(f"weight record of block {i} does not match its switch configuration")
        if a.shifts.shape != (p.layers[b.layer].planes, cpf):
            raise bad(f"ADC record of block {i} has {a.shifts.shape} shifts, expected (planes, cols_per_filter)")
    for k, ins in enumerate(p.schedule):
        if ins.core >= c.cores or ins.cycle >= c.computation_cycles:
            raise bad(f"instruction {k} runs on core {ins.core} in cycle {ins.cycle}, the chip has {c.cores} cores "
                      f"and the program {c.computation_cycles} cycles")
        if isinstance(ins, ReadRec):
            if ins.layer >= nl or any(b >= nb for b in ins.blocks):
                raise bad(f"READ instruction {k} refers to a missing layer or block")
            if ins.pos_start + ins.pos_count > p.layers[ins.layer].positions:
                raise bad(f"READ instruction {k} reads positions past the layer's {p.layers[ins.layer].positions}")
            if any((p.blocks[b].layer, p.blocks[b].group, p.blocks[b].row_start, p.blocks[b].row_count)
                   != (ins.layer, ins.group, ins.row_start, ins.row_count) for b in ins.blocks):
                raise bad(f"READ instruction {k} drives word lines (layer, group, rows) its blocks do not hold")
        else:
            if ins.block >= nb or ins.dst_core >= c.cores:
                raise bad(f"ACCUM instruction {k} refers to a missing block or core")
            ref(ins.offset, f"ACCUM instruction {k} offset")
    for k, po in enumerate(p.postops):
        if po.layer >= nl or any(t >= nt for t in po.extra):
            raise bad(f"post-op {k} ({po.name}) refers to a missing layer or tensor")
        for _, r in po.params:
            ref(r, f"post-op {k} ({po.name}) param")
    for k, d in enumerate(p.digital):
        if any(t >= nt for t in d.inputs + d.outputs) or d.core >= c.cores:
            raise bad(f"digital op {k} ({d.name}) refers to a missing tensor or core")
        for _, r in d.params:
            ref(r, f"digital op {k} ({d.name}) param")
    for k, tr in enumerate(p.noc):
        if tr.tensor >= nt or max(tr.src, tr.dst) >= c.cores:
            raise bad(f"NoC transfer {k} refers to a missing tensor or core")
        if region_elements(p.tensors[tr.tensor].shape, tr.layout, tr.ch_start, tr.ch_count, tr.pos_start,
                           tr.pos_count) is None:
            raise bad(f"NoC transfer {k} moves a region outside tensor {p.tensors[tr.tensor].name!r} "
                      f"(layout {tr.layout}, channels {tr.ch_start}+{tr.ch_count}, "
                      f"positions {tr.pos_start}+{tr.pos_count})")
    named: list[PostOpRec | DigitalRec] = [*p.postops, *p.digital]
    for op in named:
        try:
            attrs = json.loads(op.attrs)
        except (ValueError, RecursionError):
            attrs = None
        if not isinstance(attrs, dict) or json_depth(attrs, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
            raise bad(f"{op.KEYWORD} {op.name[:80]!r} has attributes that are not a JSON object (of at most "
                      f"{MAX_JSON_DEPTH} levels)")


#: The bounds of every CONFIG field the simulator computes with: bit widths as the
#: ``[hardware]`` config allows them, counts at least 1 where they divide.
_CONFIG_BOUNDS = {"bits_per_cell": (1, 8), "weight_bits": (1, 32), "input_bits": (1, 32), "dac_bits": (1, 16),
                  "adc_bits": (1, 32), "cores": (1, None), "element_rows": (1, None), "element_cols": (1, None),
                  "columns_per_adc": (1, None), "link_width_bits": (1, None), "batch": (1, None)}


def _check_config(c: Config, bad: Callable[[str], TargetError]) -> None:
    for name, (lo, hi) in _CONFIG_BOUNDS.items():
        v = getattr(c, name)
        if v < lo or (hi is not None and v > hi):
            raise bad(f"CONFIG {name} = {v} is outside {lo}..{hi if hi is not None else ''}")
    if not (math.isfinite(c.clock_hz) and c.clock_hz > 0):
        raise bad(f"CONFIG clock_hz = {c.clock_hz!r} is not a positive frequency")
    for name in ("read_pulse_s", "adc_conversion_s"):
        v = getattr(c, name)
        if not (math.isfinite(v) and v >= 0):
            raise bad(f"CONFIG {name} = {v!r} is not a duration")


def footprint(p: Program, noise: bool = False) -> tuple[int, int]:
    """Upper estimates, in bytes, of the memory the simulator takes for ``p``: to prepare
    it (per layer its integer weight matrix once per run of positions read by the same
    READs, the cover check, the im2col index plan and the DAC activity plan; the cells
    stacked and as floats) and per sample simulated (every tensor, and the largest layer's
    codes, digit planes and accumulations: float32 planes for the fast kernel, float64 ones
    and the column sums for the per-plane kernel device ``noise`` takes). The simulator
    checks both against the memory bound before it allocates anything the size of a layer
    (measured: zoo:mobilenet_v1 on analog_imc:default estimates 416 MB and 196 MB, takes
    149 MB to decode and prepare and 48 MB per sample; with noise 331 MB estimated and
    278 MB taken per sample)."""
    cuts: list[set[int]] = [{0, lay.positions} for lay in p.layers]
    geoms: list[set[tuple[int, int, int, int]]] = [set() for _ in p.layers]
    for ins in p.schedule:
        if isinstance(ins, ReadRec):
            cuts[ins.layer] |= {ins.pos_start, ins.pos_start + ins.pos_count}
            geoms[ins.layer].add((ins.row_start, ins.row_count, ins.pos_start, ins.pos_count))
    prepare = 12 * sum(w.cells.size for w in p.weights)
    per_sample = 8 * sum(math.prod(t.shape[1:]) for t in p.tensors)
    worst = 0
    for lay, cut, geom in zip(p.layers, cuts, geoms):
        grf = lay.groups * lay.rows * lay.filters
        prepare += 16 * grf * len(cut) + 24 * lay.positions * lay.rows + 8 * sum(rc * pc for _, rc, _, pc in geom)
        per_vector = (8 * lay.rows * (lay.planes + 3) + 32 * lay.filters if noise
                      else 4 * lay.rows * (lay.planes + 2) + 24 * lay.filters)
        worst = max(worst, lay.groups * lay.positions * per_vector)
    return prepare, per_sample + worst


def region_extent(shape: tuple[int, ...], layout: int) -> tuple[int, int] | None:
    """(channels, positions) of a tensor of batch-first ``shape`` in ``layout`` (see NOC in
    the module docstring); None for an unknown layout or one the rank does not allow."""
    if layout == LAYOUT_WHOLE:
        return 1, math.prod(shape[1:])
    if len(shape) < 2 or layout not in (LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST):
        return None
    if layout == LAYOUT_CHANNELS_FIRST:
        return shape[1], math.prod(shape[2:])
    return shape[-1], math.prod(shape[1:-1])


def region_elements(shape: tuple[int, ...], layout: int, ch_start: int, ch_count: int, pos_start: int,
                    pos_count: int) -> int | None:
    """Elements per sample of a NOC region of a tensor of ``shape``; None when the region
    lies outside the tensor (or the layout does not apply)."""
    ext = region_extent(shape, layout)
    if ext is None or ch_start + ch_count > ext[0] or pos_start + pos_count > ext[1]:
        return None
    if layout == LAYOUT_WHOLE and (ch_start, ch_count, pos_start, pos_count) != (0, 1, 0, ext[1]):
        return None
    return ch_count * pos_count


def _geometry_ok(lay: LayerRec, x: tuple[int, ...]) -> bool:
    """Whether the layer's rows and positions are what its input tensor gives."""
    if min(lay.groups, lay.rows, lay.filters, lay.positions, lay.planes, lay.cols_per_filter, lay.replicas) < 1:
        return False
    if not lay.kernel:  # Gemm / MatMul: the last axis is the input vector
        return (lay.groups == 1 and len(x) >= 2 and x[-1] == lay.rows
                and max(1, math.prod(x[1:-1])) == lay.positions)
    nsp = len(lay.kernel)
    if len(x) != 2 + nsp or x[1] % lay.groups or (x[1] // lay.groups) * math.prod(lay.kernel) != lay.rows:
        return False
    if math.prod(lay.out_spatial) != lay.positions or min(lay.strides + lay.dilations) < 1:
        return False
    return all((size + b + e - (k - 1) * d - 1) // s + 1 == o and size + b + e >= (k - 1) * d + 1
               for size, k, s, d, b, e, o in zip(x[2:], lay.kernel, lay.strides, lay.dilations, lay.pads_begin,
                                                 lay.pads_end, lay.out_spatial))
