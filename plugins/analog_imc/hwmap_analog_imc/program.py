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
5. LAYERS — per crossbar layer: u32 order (position in dataflow order, shared with
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
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator, Union

import numpy as np

from hwmap import TargetError

__all__ = [
    "MAGIC", "VERSION", "NONE", "ENC_DIFFERENTIAL", "ENC_OFFSET", "KIND_ACT", "KIND_PSUM",
    "LAYOUT_WHOLE", "LAYOUT_CHANNELS_FIRST", "LAYOUT_CHANNELS_LAST", "region_elements",
    "Config", "TensorRec", "LayerRec", "BlockRec", "WeightsRec", "AdcRec", "ReadRec", "AccumRec",
    "PostOpRec", "DigitalRec", "TransferRec", "Program", "read_program", "parse_listing",
]

MAGIC = b"HWMAPIMC"
VERSION = 2
NONE = 0xFFFFFFFF
ENC_DIFFERENTIAL, ENC_OFFSET = 0, 1
KIND_ACT, KIND_PSUM = 0, 1
LAYOUT_WHOLE, LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST = 0, 1, 2
FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, FLAG_AXIS = 1, 2, 4, 8

_HEADER = struct.Struct("<8sHHIQ")
_ENTRY = struct.Struct("<IIQQ")


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
_OPCODES: dict[int, type] = {ReadRec.OPCODE: ReadRec, AccumRec.OPCODE: AccumRec}


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

    # -- codecs
    def to_bytes(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "program.bin") -> "Program":
        return _decode(data, where)

    def to_listing(self) -> str:
        return _to_listing(self)

    def check(self, where: str = "program") -> "Program":
        """Check every cross-reference; raise :class:`hwmap.TargetError` naming the first bad one."""
        _check(self, where)
        return self


def read_program(path: Path | str) -> Program:
    """Read a binary program file; :class:`hwmap.TargetError` with a one-line message if it
    is missing, truncated, corrupt (CRC), of another format or version, or inconsistent."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TargetError(f"cannot read program: {e.strerror or e}", where=str(path)) from None
    return Program.from_bytes(data, str(path))


def parse_listing(text: str, where: str = "program.lst") -> Program:
    """Read a text listing back into the :class:`Program` it shows."""
    return _from_listing(text, where)


# ------------------------------------------------------------------------------------ binary
class _Malformed(Exception):
    """Raised inside the decoder; turned into a TargetError naming the section."""


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def ref(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.index)
        return self.index[s]


def _put(out: bytearray, kind: str, value: Any, strings: _Strings) -> None:
    if kind in ("u32", "ref"):
        out += struct.pack("<I", value)
    elif kind == "i32":
        out += struct.pack("<i", value)
    elif kind == "u64":
        out += struct.pack("<Q", value)
    elif kind == "f64":
        out += struct.pack("<d", value)
    elif kind == "str":
        out += struct.pack("<I", strings.ref(value))
    elif kind == "u32s":
        out += struct.pack(f"<I{len(value)}I", len(value), *value)
    elif kind == "params":
        out += struct.pack("<I", len(value))
        for slot, ref in value:
            out += struct.pack("<II", strings.ref(slot), ref)
    else:  # pragma: no cover - a SPEC typo
        raise AssertionError(kind)


_FIXED = {"u32": "I", "ref": "I", "i32": "i", "u64": "Q", "f64": "d"}
_PLANS: dict[type, tuple[tuple[str, ...], list[tuple[struct.Struct | None, str, int, int]]]] = {}


def _plan(cls: type) -> tuple[tuple[str, ...], list[tuple[struct.Struct | None, str, int, int]]]:
    """Field names of ``cls`` and its SPEC as runs: ``(Struct, "", start, stop)`` for a run of
    fixed-width fields packed at once, ``(None, kind, i, i + 1)`` for a variable-length one."""
    if cls not in _PLANS:
        names = tuple(f.name for f in fields(cls))
        spec: tuple[str, ...] = getattr(cls, "SPEC")
        runs: list[tuple[struct.Struct | None, str, int, int]] = []
        i = 0
        while i < len(spec):
            j = i
            while j < len(spec) and spec[j] in _FIXED:
                j += 1
            if j > i:
                runs.append((struct.Struct("<" + "".join(_FIXED[k] for k in spec[i:j])), "", i, j))
                i = j
            else:
                runs.append((None, spec[i], i, i + 1))
                i += 1
        _PLANS[cls] = (names, runs)
    return _PLANS[cls]


def _put_record(out: bytearray, rec: Any, strings: _Strings) -> None:
    names, runs = _plan(type(rec))
    for st, kind, i, j in runs:
        if st is not None:
            out += st.pack(*(getattr(rec, n) for n in names[i:j]))
        else:
            _put(out, kind, getattr(rec, names[i]), strings)


def _encode(p: Program) -> bytes:
    strings = _Strings()
    sections: list[tuple[int, int, bytes]] = []  # (type, count, payload) in type order
    b = bytearray()
    _put_record(b, p.config, strings)
    sections.append((1, 1, bytes(b)))
    sections.append((2, 0, b""))  # STRINGS, filled in last
    b = bytearray()
    for a in p.consts:
        b += struct.pack("<II", strings.ref(a.dtype.str), a.ndim)
        b += struct.pack(f"<{a.ndim}QQ", *a.shape, a.nbytes)
        b += a.tobytes()
    sections.append((3, len(p.consts), bytes(b)))
    recs: list[Any]
    for typ, recs in ((4, p.tensors), (5, p.layers), (6, p.blocks)):
        b = bytearray()
        for r in recs:
            _put_record(b, r, strings)
        sections.append((typ, len(recs), bytes(b)))
    b = bytearray()
    for w in p.weights:
        packed = _pack_cells(w.cells, w.bits)
        b += struct.pack("<8IQ", w.block, w.cycle, w.core, w.elem_row, w.elem_col, w.cells.shape[0],
                         w.cells.shape[1], w.bits, len(packed))
        b += packed
    sections.append((7, len(p.weights), bytes(b)))
    b = bytearray()
    for adc in p.adc:
        b += struct.pack("<4I", adc.block, adc.adc_bits, adc.shifts.shape[0], adc.shifts.shape[1])
        b += np.ascontiguousarray(adc.shifts, dtype=np.uint8).tobytes()
    sections.append((8, len(p.adc), bytes(b)))
    b = bytearray()
    for ins in p.schedule:
        b += struct.pack("<I", ins.OPCODE)
        _put_record(b, ins, strings)
    sections.append((9, len(p.schedule), bytes(b)))
    for typ, recs in ((10, p.postops), (11, p.digital), (12, p.noc)):
        b = bytearray()
        for rec in recs:
            _put_record(b, rec, strings)
        sections.append((typ, len(recs), bytes(b)))
    b = bytearray()
    for s in strings.index:
        raw = s.encode("utf-8")
        b += struct.pack("<I", len(raw)) + raw
    sections[1] = (2, len(strings.index), bytes(b))

    offset = _HEADER.size + _ENTRY.size * len(sections)
    table = bytearray()
    for typ, count, payload in sections:
        table += _ENTRY.pack(typ, count, offset, len(payload))
        offset += len(payload)
    total = offset + 4
    body = _HEADER.pack(MAGIC, VERSION, len(sections), 0, total) + bytes(table) + b"".join(s[2] for s in sections)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def _pack_cells(cells: np.ndarray, bits: int) -> bytes:
    c = np.ascontiguousarray(cells, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return c.tobytes()
    if bits in (1, 2, 4):  # whole cells per byte: the same bits as the general path, faster
        per = 8 // bits
        padded = np.zeros(-(-c.size // per) * per, dtype=np.uint8)
        padded[:c.size] = c
        lanes = padded.reshape(-1, per)
        out = np.zeros(lanes.shape[0], dtype=np.uint8)
        for k in range(per):
            out |= lanes[:, k] << np.uint8(k * bits)
        return out.tobytes()
    planes = np.unpackbits(c[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def _unpack_cells(raw: bytes, rows: int, cols: int, bits: int) -> np.ndarray:
    n = rows * cols
    if bits == 8:
        return np.frombuffer(raw, dtype=np.uint8, count=n).reshape(rows, cols).copy()
    if bits in (1, 2, 4):
        return _lanes(np.frombuffer(raw, dtype=np.uint8), bits)[:n].reshape(rows, cols).copy()
    stream = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, :bits] = stream
    return np.packbits(full, axis=1, bitorder="little").reshape(rows, cols)


def _lanes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The ``8/bits`` cells of ``bits`` bits (1, 2 or 4) in each byte, LSB first, flattened:
    each byte is widened to ``8/bits`` bytes and cell ``k`` shifted into byte ``k`` (copy
    ``k`` shifted by ``k·(8 − bits)``, then masked), so the wide word's bytes are the cells."""
    if bits == 1:
        return np.unpackbits(packed, bitorder="little")
    per = 8 // bits
    wide: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = packed.astype(np.uint16 if per == 2 else np.uint32)
    spread = wide.copy()
    for k in range(1, per):
        spread |= wide << (k * (8 - bits))
    spread &= sum((2**bits - 1) << (8 * k) for k in range(per))
    return spread.astype(spread.dtype.newbyteorder("<"), copy=False).view(np.uint8)


_STRUCTS: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    """The little-endian ``struct.Struct`` of ``fmt``, compiled once."""
    st = _STRUCTS.get(fmt)
    if st is None:
        st = _STRUCTS[fmt] = struct.Struct("<" + fmt)
    return st


class _In:
    """A bounds-checked little-endian reader over one section's payload."""

    def __init__(self, data: bytes, strings: list[str] | None) -> None:
        self.data, self.pos, self.strings = data, 0, strings

    def skip(self, n: int) -> int:
        """Advance over ``n`` bytes; their offset."""
        if n < 0 or self.pos + n > len(self.data):
            raise _Malformed(f"record runs past the end of the section ({len(self.data)} bytes)")
        self.pos += n
        return self.pos - n

    def take(self, n: int) -> bytes:
        at = self.skip(n)
        return self.data[at:at + n]

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        st = _struct(fmt)
        return st.unpack_from(self.data, self.skip(st.size))

    def get(self, kind: str) -> Any:
        if kind in ("u32", "ref"):
            return self.unpack("I")[0]
        if kind == "i32":
            return self.unpack("i")[0]
        if kind == "u64":
            return self.unpack("Q")[0]
        if kind == "f64":
            return self.unpack("d")[0]
        if kind == "str":
            return self.string(self.unpack("I")[0])
        if kind == "u32s":
            (n,) = self.unpack("I")
            return self.unpack(f"{n}I") if n else ()
        if kind == "params":
            (n,) = self.unpack("I")
            vals = self.unpack(f"{2 * n}I") if n else ()
            return tuple((self.string(vals[2 * i]), vals[2 * i + 1]) for i in range(n))
        raise AssertionError(kind)  # pragma: no cover

    def string(self, i: int) -> str:
        assert self.strings is not None
        if i >= len(self.strings):
            raise _Malformed(f"string index {i} out of range ({len(self.strings)} strings)")
        return self.strings[i]

    def record(self, cls: type) -> Any:
        _, runs = _plan(cls)
        values: list[Any] = []
        for st, kind, _, _ in runs:
            if st is not None:
                values.extend(st.unpack_from(self.data, self.skip(st.size)))
            else:
                values.append(self.get(kind))
        return cls(*values)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise _Malformed(f"{len(self.data) - self.pos} bytes left over after the last record")


_SECTION_NAMES = ("CONFIG", "STRINGS", "CONSTS", "TENSORS", "LAYERS", "SWITCHES", "WEIGHTS", "ADC", "SCHEDULE",
                  "POSTOPS", "DIGITAL", "NOC")


def _decode(data: bytes, where: str) -> Program:
    if len(data) < 8 or data[:8] != MAGIC:
        raise TargetError(f"not an analog_imc program (bad magic {data[:8]!r}, expected {MAGIC!r})", where=where)
    if len(data) < _HEADER.size + 4:
        raise TargetError(f"truncated: {len(data)} bytes, shorter than the header", where=where)
    _, version, nsec, _, total = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise TargetError(f"program format version {version}, this reader reads version {VERSION}", where=where)
    if len(data) != total:
        what = "truncated" if len(data) < total else "trailing bytes"
        raise TargetError(f"{what}: the file has {len(data)} bytes, its header says {total}", where=where)
    (crc,) = struct.unpack_from("<I", data, total - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise TargetError("checksum mismatch (CRC-32): the file is corrupt", where=where)
    if nsec != len(_SECTION_NAMES) or _HEADER.size + nsec * _ENTRY.size > total - 4:
        raise TargetError(f"{nsec} sections, expected {len(_SECTION_NAMES)}", where=where)
    payloads: list[tuple[int, bytes]] = []
    for i in range(nsec):
        typ, count, off, length = _ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)
        if typ != i + 1:
            raise TargetError(f"section {i} has type {typ}, expected {i + 1} ({_SECTION_NAMES[i]})", where=where)
        if off + length > total - 4:
            raise TargetError(f"section {_SECTION_NAMES[i]} runs past the end of the file", where=where)
        payloads.append((count, data[off:off + length]))
    name = "STRINGS"
    try:
        count, raw = payloads[1]
        rd = _In(raw, None)
        strings = []
        for _ in range(count):
            (n,) = rd.unpack("I")
            strings.append(rd.take(n).decode("utf-8"))
        rd.done()
        results: dict[str, Any] = {}
        for i in range(len(payloads)):
            name = _SECTION_NAMES[i]
            if name == "STRINGS":
                continue
            count, raw = payloads[i]
            rd = _In(raw, strings)
            results[name] = _read_section(name, rd, count)
            rd.done()
    except _Malformed as e:
        raise TargetError(f"malformed section {name}: {e}", where=where) from None
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise TargetError(f"malformed section {name}: {e}", where=where) from None
    if len(results["CONFIG"]) != 1:
        raise TargetError(f"section CONFIG holds {len(results['CONFIG'])} records, expected 1", where=where)
    p = Program(results["CONFIG"][0], results["CONSTS"], results["TENSORS"], results["LAYERS"], results["SWITCHES"],
                results["WEIGHTS"], results["ADC"], results["SCHEDULE"], results["POSTOPS"], results["DIGITAL"],
                results["NOC"])
    return p.check(where)


def _read_section(name: str, rd: _In, count: int) -> list[Any]:
    """The ``count`` records of one section (the bulky ones decoded in bulk)."""
    if name == "WEIGHTS":
        return _read_weights(rd, count)
    if name == "ADC":
        return _read_adc(rd, count)
    if name == "SCHEDULE":
        return _read_words(rd, count)
    if name == "CONSTS":
        return _read_consts(rd, count)
    if name in ("SWITCHES", "NOC"):
        return _read_fixed(rd, BlockRec if name == "SWITCHES" else TransferRec, count)
    return [_read_one(name, rd) for _ in range(count)]


def _read_consts(rd: _In, count: int) -> list[np.ndarray]:
    """The CONSTS section: per array its dtype, shape and bytes."""
    out = []
    dtypes: dict[str, np.dtype] = {}
    for _ in range(count):
        name, ndim = rd.unpack("II")
        name = rd.string(name)
        dtype = dtypes.get(name)
        if dtype is None:
            dtype = dtypes[name] = np.dtype(name)
            if dtype.kind not in "biuf":
                raise _Malformed(f"constant of dtype {dtype} is not numeric")
        dims = rd.unpack(f"{ndim}QQ")
        dims, nbytes = dims[:-1], dims[-1]
        if nbytes != math.prod(dims) * dtype.itemsize:
            raise _Malformed(f"constant of shape {list(dims)} {dtype} declares {nbytes} bytes")
        at = rd.skip(nbytes)
        out.append(np.frombuffer(rd.data, dtype=dtype, count=nbytes // dtype.itemsize, offset=at).reshape(dims).copy())
    return out


def _read_fixed(rd: _In, cls: type, count: int) -> list[Any]:
    """``count`` records of a class whose fields are all fixed-width, at once."""
    (st, _, _, _), = _plan(cls)[1]
    assert st is not None  # all fields fixed-width: one packed run
    at = rd.skip(st.size * count)
    return [cls(*v) for v in st.iter_unpack(rd.data[at:at + st.size * count])]


def _read_adc(rd: _In, count: int) -> list[AdcRec]:
    """The ADC section: per record its header, then its shifts (planes × cols_per_filter)."""
    out = []
    section = np.frombuffer(rd.data, dtype=np.uint8)
    for _ in range(count):
        block, adc_bits, planes, cpf = rd.unpack("4I")
        at = rd.skip(planes * cpf)
        out.append(AdcRec(block, adc_bits, section[at:at + planes * cpf].reshape(planes, cpf).copy()))
    return out


def _read_words(rd: _In, count: int) -> list[Instruction]:
    """The SCHEDULE section, whose fields are all 4 bytes (an opcode, u32/ref/i32 fields and
    a last u32s list for READ), from the section as one list of integers."""
    words = np.frombuffer(rd.data, dtype="<u4", count=len(rd.data) // 4).tolist()
    out: list[Instruction] = []
    p = 0
    for _ in range(count):
        op = words[p] if p < len(words) else None
        cls = _OPCODES.get(op) if op is not None else None
        if cls is None:
            if op is None:
                rd.skip(4 * p + 4)  # raises: past the end
            raise _Malformed(f"unknown opcode {op}")
        nfix, signed, listed = _WORD_LAYOUT[cls]
        end = p + 1 + nfix
        values = words[p + 1:end]
        for i in signed:
            values[i] -= (values[i] >> 31) << 32
        if listed:
            n = words[end] if end < len(words) else 0
            values.append(tuple(words[end + 1:end + 1 + n]))
            end += 1 + n
        if end > len(words):
            rd.skip(4 * end)  # raises: past the end
        out.append(cls(*values))
        p = end
    rd.skip(4 * p)
    return out


def _word_layout(cls: type) -> tuple[int, tuple[int, ...], bool]:
    """How a record of 4-byte fields sits in the SCHEDULE words: fixed fields, which of
    them are signed, and whether a u32s list ends it."""
    spec: tuple[str, ...] = getattr(cls, "SPEC")
    listed = spec[-1] == "u32s"
    fixed = spec[:-1] if listed else spec
    assert all(k in ("u32", "ref", "i32") for k in fixed), cls  # a SPEC change needs a new decoder
    return len(fixed), tuple(i for i, k in enumerate(fixed) if k == "i32"), listed


_WORD_LAYOUT = {cls: _word_layout(cls) for cls in _OPCODES.values()}


def _read_weights(rd: _In, count: int) -> list[WeightsRec]:
    """The WEIGHTS section: the records' headers one by one, then the cells of every block
    with 1, 2 or 4 bits per cell unpacked from the whole section at once (the same numbers
    as :func:`_unpack_cells` per block)."""
    heads = []
    for _ in range(count):
        block, cycle, core, er, ec, rows, cols, bits, nbytes = rd.unpack("8IQ")
        if not 1 <= bits <= 8 or nbytes != (rows * cols * bits + 7) // 8:
            raise _Malformed(f"weights of block {block}: {rows}x{cols} cells of {bits} bits in {nbytes} bytes")
        heads.append((block, cycle, core, er, ec, rows, cols, bits, rd.skip(nbytes), nbytes))
    section = np.frombuffer(rd.data, dtype=np.uint8)
    lanes = {bits: _lanes(section, bits) for bits in {h[7] for h in heads} if bits in (1, 2, 4)}
    out = []
    for block, cycle, core, er, ec, rows, cols, bits, at, nbytes in heads:
        if bits in lanes:
            first = at * (8 // bits)
            cells = lanes[bits][first:first + rows * cols].reshape(rows, cols).copy()
        else:
            cells = _unpack_cells(rd.data[at:at + nbytes], rows, cols, bits)
        out.append(WeightsRec(block, cycle, core, er, ec, bits, cells))
    return out


def _read_one(section: str, rd: _In) -> Any:
    if section == "CONFIG":
        return rd.record(Config)
    if section == "CONSTS":
        dtype = np.dtype(rd.get("str"))
        if dtype.kind not in "biuf":
            raise _Malformed(f"constant of dtype {dtype} is not numeric")
        (ndim,) = rd.unpack("I")
        dims = rd.unpack(f"{ndim}Q") if ndim else ()
        (nbytes,) = rd.unpack("Q")
        if nbytes != math.prod(dims) * dtype.itemsize:
            raise _Malformed(f"constant of shape {list(dims)} {dtype} declares {nbytes} bytes")
        return np.frombuffer(rd.take(nbytes), dtype=dtype).reshape(dims).copy()
    if section == "ADC":
        block, adc_bits, planes, cpf = rd.unpack("4I")
        shifts = np.frombuffer(rd.take(planes * cpf), dtype=np.uint8).reshape(planes, cpf).copy()
        return AdcRec(block, adc_bits, shifts)
    if section == "SCHEDULE":
        (op,) = rd.unpack("I")
        if op not in _OPCODES:
            raise _Malformed(f"unknown opcode {op}")
        return rd.record(_OPCODES[op])
    cls = {"TENSORS": TensorRec, "LAYERS": LayerRec, "SWITCHES": BlockRec, "POSTOPS": PostOpRec,
           "DIGITAL": DigitalRec, "NOC": TransferRec}[section]
    return rd.record(cls)


# ------------------------------------------------------------------------------------ checks
def _check(p: Program, where: str) -> None:
    def bad(msg: str) -> TargetError:
        return TargetError(msg, where=where)

    c = p.config
    nt, nc, nl, nb = len(p.tensors), len(p.consts), len(p.layers), len(p.blocks)

    def ref(r: int, what: str, optional: bool = False) -> None:
        if not (r < nc or (optional and r == NONE)):
            raise bad(f"{what} refers to constant {r}, the program has {nc}")

    if min(c.cores, c.element_rows, c.element_cols, c.bits_per_cell, c.dac_bits, c.adc_bits) < 1:
        raise bad("CONFIG has a zero core count, element size or bit width")
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
    for i, b in enumerate(p.blocks):
        if b.layer >= nl:
            raise bad(f"block {i} refers to layer {b.layer}, the program has {nl}")
        lay = p.layers[b.layer]
        if (b.group >= lay.groups or b.row_start + b.row_count > lay.rows
                or b.filter_start + b.filter_count > lay.filters or b.replica >= lay.replicas):
            raise bad(f"block {i} lies outside layer {b.layer} ({lay.name})")
        if b.core >= c.cores or b.cycle >= c.computation_cycles:
            raise bad(f"block {i} sits on core {b.core} in cycle {b.cycle}, outside the chip/program")
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
        if ins.core >= c.cores:
            raise bad(f"instruction {k} runs on core {ins.core}, the chip has {c.cores}")
        if isinstance(ins, ReadRec):
            if ins.layer >= nl or any(b >= nb for b in ins.blocks):
                raise bad(f"READ instruction {k} refers to a missing layer or block")
            if ins.pos_start + ins.pos_count > p.layers[ins.layer].positions:
                raise bad(f"READ instruction {k} reads positions past the layer's {p.layers[ins.layer].positions}")
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
            json.loads(op.attrs)
        except ValueError:
            raise bad(f"{op.KEYWORD} {op.name!r} has attributes that are not JSON") from None


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


# ------------------------------------------------------------------------------------ listing
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UNHEX = np.full(256, 255, dtype=np.uint8)
_UNHEX[_HEX] = np.arange(16, dtype=np.uint8)


def _fmt(kind: str, v: Any) -> str:
    if kind in ("u32", "i32", "u64"):
        return str(int(v))
    if kind == "f64":
        return repr(float(v))
    if kind == "str":
        return json.dumps(v, ensure_ascii=True).replace(" ", "\\u0020")
    if kind == "ref":
        return "-" if v == NONE else f"@{v}"
    if kind == "u32s":
        return ",".join(str(int(x)) for x in v) or "-"
    if kind == "params":
        return json.dumps(dict(v), ensure_ascii=True, separators=(",", ":")).replace(" ", "\\u0020")
    raise AssertionError(kind)  # pragma: no cover


def _parse(kind: str, s: str) -> Any:
    if kind in ("u32", "i32", "u64"):
        return int(s)
    if kind == "f64":
        return float(s)
    if kind == "str":
        v = json.loads(s)
        if not isinstance(v, str):
            raise ValueError(f"expected a JSON string, got {s}")
        return v
    if kind == "ref":
        return NONE if s == "-" else int(s[1:]) if s.startswith("@") else int("x")
    if kind == "u32s":
        return () if s == "-" else tuple(int(x) for x in s.split(","))
    if kind == "params":
        d = json.loads(s)
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {s}")
        return tuple((str(k), int(v)) for k, v in d.items())
    raise AssertionError(kind)  # pragma: no cover


def _line(rec: Any) -> str:
    names, _ = _plan(type(rec))
    return rec.KEYWORD + " " + " ".join(f"{n}={_fmt(k, getattr(rec, n))}" for n, k in zip(names, rec.SPEC))


def _to_listing(p: Program) -> str:
    out = [f"HWMAP-IMC-LISTING version={VERSION}",
           "; hwmap analog_imc program: one instruction per line (see hwmap_analog_imc.program)",
           "; --- CONFIG: the chip this program was compiled for", _line(p.config),
           f"; --- CONSTS: {len(p.consts)} arrays"]
    for i, a in enumerate(p.consts):
        shape = "x".join(str(d) for d in a.shape) or "-"
        vals = " ".join(repr(float(x)) for x in a.reshape(-1)) if a.dtype.kind == "f" else \
            " ".join(str(int(x)) for x in a.reshape(-1))
        out.append(f"CONST id={i} dtype={a.dtype.str} shape={shape} :" + (" " + vals if vals else ""))
    out.append(f"; --- TENSORS: {len(p.tensors)}")
    out += [_line(t) for t in p.tensors]
    out.append(f"; --- LAYERS: {len(p.layers)} crossbar layers")
    out += [_line(x) for x in p.layers]
    out.append(f"; --- SWITCHES: {len(p.blocks)} blocks of concatenated elements (block id = position)")
    out += [_line(x) for x in p.blocks]
    out.append("; --- WEIGHTS: cell levels, one row of hex digits per cell row")
    text = "\n".join(out) + "\n"
    parts = [text]
    for w in p.weights:
        rows, cols = w.cells.shape
        parts.append(f"WEIGHTS block={w.block} cycle={w.cycle} core={w.core} elem_row={w.elem_row} "
                     f"elem_col={w.elem_col} bits={w.bits} cells={rows}x{cols}\n")
        if rows and cols:
            parts.append(_hex_rows(w.cells, 1 if w.bits <= 4 else 2))
    out = ["; --- ADC: shifts (LSB = 2^shift column-sum units) per plane × filter column"]
    for adc in p.adc:
        out.append(f"ADC block={adc.block} adc_bits={adc.adc_bits} planes={adc.shifts.shape[0]} "
                   f"cols={adc.shifts.shape[1]} "
                   f"shifts={','.join(str(int(s)) for s in adc.shifts.reshape(-1)) or '-'}")
    out.append("; --- SCHEDULE: per computation cycle and core, READ (DAC + ADC) then ACCUM (partial sums)")
    last: tuple[int, int] | None = None
    for ins in p.schedule:
        if (ins.cycle, ins.core) != last:
            last = (ins.cycle, ins.core)
            out.append(f"; cycle {ins.cycle} core {ins.core}")
        out.append(_line(ins))
    out.append(f"; --- POSTOPS: {len(p.postops)} fused post-operations")
    out += [_line(x) for x in p.postops]
    out.append(f"; --- DIGITAL: {len(p.digital)} ops on the cores' digital logic")
    out += [_line(x) for x in p.digital]
    out.append(f"; --- NOC: {len(p.noc)} transfers per inference")
    out += [_line(x) for x in p.noc]
    out.append("END")
    parts.append("\n".join(out) + "\n")
    return "".join(parts)


def _hex_rows(cells: np.ndarray, digits: int) -> str:
    rows, cols = cells.shape
    c = cells.astype(np.uint8)
    if digits == 1:
        body = _HEX[c & 15]
    else:
        body = np.stack([_HEX[c >> 4], _HEX[c & 15]], axis=-1).reshape(rows, 2 * cols)
    buf = np.empty((rows, body.shape[1] + 3), dtype=np.uint8)
    buf[:, :2] = ord(" ")
    buf[:, 2:-1] = body
    buf[:, -1] = ord("\n")
    return buf.tobytes().decode("ascii")


_LISTING_CLASSES = {cls.KEYWORD: cls for cls in (Config, TensorRec, LayerRec, BlockRec, ReadRec, AccumRec,
                                                 PostOpRec, DigitalRec, TransferRec)}


def _from_listing(text: str, where: str) -> Program:
    lines = text.split("\n")
    it: Iterator[tuple[int, str]] = iter(enumerate(lines, start=1))
    first = next(it, (1, ""))[1].strip()
    if not first.startswith("HWMAP-IMC-LISTING"):
        raise TargetError("not an analog_imc program listing (first line is not HWMAP-IMC-LISTING)", where=where)
    if first != f"HWMAP-IMC-LISTING version={VERSION}":
        raise TargetError(f"listing {first.split(' ', 1)[-1]!r}, this reader reads version={VERSION}", where=where)
    recs: dict[str, list[Any]] = {k: [] for k in ("CONFIG", "CONST", "TENSOR", "LAYER", "BLOCK", "WEIGHTS", "ADC",
                                                  "SCHEDULE", "POSTOP", "DIGITAL", "NOC")}
    ended = False
    lineno = 1
    try:
        for lineno, raw in it:
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            if line == "END":
                ended = True
                break
            kw, _, rest = line.partition(" ")
            if kw == "CONST":
                head, sep, vals = rest.partition(" :")
                kv = _pairs(head)
                if not sep or int(kv["id"]) != len(recs["CONST"]):
                    raise ValueError("CONST lines must be numbered 0, 1, ... and end their header with ' :'")
                dtype = np.dtype(kv["dtype"])
                if dtype.kind not in "biuf":
                    raise ValueError(f"constant dtype {dtype} is not numeric")
                shape = () if kv["shape"] == "-" else tuple(int(d) for d in kv["shape"].split("x"))
                items = vals.split()
                conv = float if dtype.kind == "f" else int
                recs["CONST"].append(np.array([conv(v) for v in items], dtype=dtype).reshape(shape))
            elif kw == "WEIGHTS":
                kv = _pairs(rest)
                rows, cols = (int(d) for d in kv["cells"].split("x"))
                bits = int(kv["bits"])
                digits = 1 if bits <= 4 else 2
                body = []
                for _ in range(rows):
                    lineno, row = next(it)
                    body.append(row.strip())
                cells = _unhex(body, cols, digits) if rows and cols else np.zeros((rows, cols), dtype=np.uint8)
                recs["WEIGHTS"].append(WeightsRec(int(kv["block"]), int(kv["cycle"]), int(kv["core"]),
                                                  int(kv["elem_row"]), int(kv["elem_col"]), bits, cells))
            elif kw == "ADC":
                kv = _pairs(rest)
                planes, cols = int(kv["planes"]), int(kv["cols"])
                sh = [] if kv["shifts"] == "-" else [int(s) for s in kv["shifts"].split(",")]
                recs["ADC"].append(AdcRec(int(kv["block"]), int(kv["adc_bits"]),
                                          np.array(sh, dtype=np.uint8).reshape(planes, cols)))
            elif kw in _LISTING_CLASSES:
                cls = _LISTING_CLASSES[kw]
                kv = _pairs(rest)
                names = [f.name for f in fields(cls)]
                if sorted(kv) != sorted(names):
                    raise ValueError(f"{kw} takes the keys {', '.join(names)}")
                rec = cls(*(_parse(k, kv[n]) for n, k in zip(names, cls.SPEC)))
                recs["SCHEDULE" if kw in ("READ", "ACCUM") else kw].append(rec)
            else:
                raise ValueError(f"unknown keyword {kw!r}")
    except StopIteration:
        raise TargetError("truncated: a WEIGHTS record is missing cell rows", where=where) from None
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
        raise TargetError(f"line {lineno}: {e}", where=where) from None
    if not ended:
        raise TargetError("truncated: no END line", where=where)
    if len(recs["CONFIG"]) != 1:
        raise TargetError(f"{len(recs['CONFIG'])} CONFIG lines, expected 1", where=where)
    p = Program(recs["CONFIG"][0], recs["CONST"], recs["TENSOR"], recs["LAYER"], recs["BLOCK"], recs["WEIGHTS"],
                recs["ADC"], recs["SCHEDULE"], recs["POSTOP"], recs["DIGITAL"], recs["NOC"])
    return p.check(where)


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in text.split():
        key, sep, value = tok.partition("=")
        if not sep or key in out:
            raise ValueError(f"expected distinct key=value tokens, got {tok!r}")
        out[key] = value
    return out


def _unhex(rows: list[str], cols: int, digits: int) -> np.ndarray:
    width = cols * digits
    if any(len(r) != width for r in rows):
        raise ValueError(f"a cell row does not hold {cols} cells of {digits} hex digits")
    codes = _UNHEX[np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8)]
    if (codes == 255).any():
        raise ValueError("a cell row holds a character that is not a hex digit")
    codes = codes.reshape(len(rows), cols, digits)
    return (codes[..., 0] if digits == 1 else (codes[..., 0] << 4) | codes[..., 1]).astype(np.uint8)
