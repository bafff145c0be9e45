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

How the records run (:mod:`~hwmap_analog_imc.machine`): one computation cycle after the
other; a cycle's WEIGHTS program their cells first, then each core's SCHEDULE instructions
run in stream order, its DIGITAL records in record order, and each NOC record once what it
moves is on its source core; an instruction whose data is not on its core by then is an
error naming it. A program is checked against the chip before it runs
(:mod:`~hwmap_analog_imc.program_placement`): blocks inside the element grid, declaring the
``⌈rows / element_rows⌉ × ⌈columns / element_cols⌉`` elements their weights take, no two on
one element of a core in one cycle, READ and ACCUM on the core and in the cycle of their
blocks.

Version history: 1 — every transfer carried a whole tensor and all partial sums went to the
layer's home core (no region fields in NOC); 2 — per-copy dataflow (region fields).

This module holds :class:`Program` and its readers; the records and the format's constants
are in :mod:`~hwmap_analog_imc.program_records` (re-exported here), the codecs in
:mod:`~hwmap_analog_imc.program_bin` (``program.bin``) and
:mod:`~hwmap_analog_imc.program_lst` (``program.lst``), both generic over the records' ``SPEC``,
and the consistency check in :mod:`~hwmap_analog_imc.program_check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import hwmap
from hwmap import TargetError

from .program_bin import decode, encode
from .program_check import check as check_program
from .program_lst import from_listing, to_listing
from .program_records import (
    ENC_DIFFERENTIAL, ENC_OFFSET, FLAG_AXIS, FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, KIND_ACT, KIND_PSUM,
    LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST, LAYOUT_WHOLE, MAGIC, NONE, VERSION, AccumRec, AdcRec, BlockRec,
    Config, DigitalRec, Instruction, LayerRec, PostOpRec, ReadRec, TensorRec, TransferRec, WeightsRec, field_names,
)

__all__ = [
    "PROGRAM_FILE",
    "MAGIC", "VERSION", "NONE", "ENC_DIFFERENTIAL", "ENC_OFFSET", "KIND_ACT", "KIND_PSUM",
    "LAYOUT_WHOLE", "LAYOUT_CHANNELS_FIRST", "LAYOUT_CHANNELS_LAST", "FLAG_INPUT", "FLAG_OUTPUT", "FLAG_QUANT",
    "FLAG_AXIS", "Config", "TensorRec", "LayerRec", "BlockRec", "WeightsRec", "AdcRec", "ReadRec", "AccumRec",
    "PostOpRec", "DigitalRec", "TransferRec", "Instruction", "field_names",
    "Program", "read_program", "load_program", "parse_listing",
]

#: The binary program's file name inside an artifacts directory.
PROGRAM_FILE = "program.bin"


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

    # -- codecs (generic over the records of .program_records; they never import this module)
    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "program.bin") -> "Program":
        """The checked program in ``data`` (:func:`.program_bin.decode`, then :meth:`check`)."""
        return cls(**decode(data, where)).check(where)

    def to_listing(self) -> str:
        return to_listing(self)

    def check(self, where: str = "program") -> "Program":
        """Check every cross-reference; raise :class:`hwmap.TargetError` naming the first bad one
        (:mod:`.program_check`)."""
        check_program(self, where)
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
    """Read a text listing back into the :class:`Program` it shows (checked)."""
    return Program(**from_listing(text, where)).check(where)
