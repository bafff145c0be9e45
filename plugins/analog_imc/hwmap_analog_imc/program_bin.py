"""The binary codec of :class:`~hwmap_analog_imc.program.Program`: ``program.bin``.

The layout (header, section table, the twelve sections, CRC) is documented field by field in
:mod:`hwmap_analog_imc.program`. Records with a ``SPEC`` are written and read generically from
it (runs of fixed-width fields packed with one ``struct``); CONSTS, WEIGHTS, ADC and SCHEDULE
have their own layouts, and the bulky sections are decoded in bulk.
"""

from __future__ import annotations

import math
import struct
import zlib
from functools import cache
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hwmap import TargetError
from hwmap.limits import check_size

from .program_records import (
    MAGIC, VERSION, AccumRec, AdcRec, BlockRec, Config, DigitalRec, Instruction, LayerRec, PostOpRec, ReadRec,
    TensorRec, TransferRec, WeightsRec, field_names,
)

if TYPE_CHECKING:
    from .program import Program

__all__ = ["encode", "decode"]

_HEADER = struct.Struct("<8sHHIQ")
_ENTRY = struct.Struct("<IIQQ")
_SECTION_NAMES = ("CONFIG", "STRINGS", "CONSTS", "TENSORS", "LAYERS", "SWITCHES", "WEIGHTS", "ADC", "SCHEDULE",
                  "POSTOPS", "DIGITAL", "NOC")
#: The record class of each section written and read generically from its SPEC.
_RECORD_CLASSES: dict[str, type] = {"CONFIG": Config, "TENSORS": TensorRec, "LAYERS": LayerRec, "SWITCHES": BlockRec,
                                    "POSTOPS": PostOpRec, "DIGITAL": DigitalRec, "NOC": TransferRec}
_OPCODES: dict[int, type] = {ReadRec.OPCODE: ReadRec, AccumRec.OPCODE: AccumRec}


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
    """Append one variable-length field (fixed-width ones are packed in runs by :func:`_plan`)."""
    if kind == "str":
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


@cache
def _plan(cls: type) -> tuple[tuple[str, ...], list[tuple[struct.Struct | None, str, int, int]]]:
    """Field names of ``cls`` and its SPEC as runs: ``(Struct, "", start, stop)`` for a run of
    fixed-width fields packed at once, ``(None, kind, i, i + 1)`` for a variable-length one."""
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
    return field_names(cls), runs


def _put_record(out: bytearray, rec: Any, strings: _Strings) -> None:
    names, runs = _plan(type(rec))  # type: ignore[arg-type]  # a record class is hashable
    for st, kind, i, j in runs:
        if st is not None:
            out += st.pack(*(getattr(rec, n) for n in names[i:j]))
        else:
            _put(out, kind, getattr(rec, names[i]), strings)


def _put_const(out: bytearray, a: np.ndarray, strings: _Strings) -> None:
    out += struct.pack("<II", strings.ref(a.dtype.str), a.ndim)
    out += struct.pack(f"<{a.ndim}QQ", *a.shape, a.nbytes)
    out += a.tobytes()


def _put_weights(out: bytearray, w: WeightsRec, strings: _Strings) -> None:
    packed = _pack_cells(w.cells, w.bits)
    out += struct.pack("<8IQ", w.block, w.cycle, w.core, w.elem_row, w.elem_col, w.cells.shape[0],
                       w.cells.shape[1], w.bits, len(packed))
    out += packed


def _put_adc(out: bytearray, adc: AdcRec, strings: _Strings) -> None:
    out += struct.pack("<4I", adc.block, adc.adc_bits, adc.shifts.shape[0], adc.shifts.shape[1])
    out += np.ascontiguousarray(adc.shifts, dtype=np.uint8).tobytes()


def _put_instruction(out: bytearray, ins: Instruction, strings: _Strings) -> None:
    out += struct.pack("<I", ins.OPCODE)
    _put_record(out, ins, strings)


#: The writer of each section's records that has its own layout (the others: :func:`_put_record`).
_WRITERS: dict[str, Callable[[bytearray, Any, _Strings], None]] = {
    "CONSTS": _put_const, "WEIGHTS": _put_weights, "ADC": _put_adc, "SCHEDULE": _put_instruction}


def encode(p: Program) -> bytes:
    """The ``program.bin`` bytes of ``p``."""
    strings = _Strings()
    contents: tuple[list[Any], ...] = ([p.config], [], p.consts, p.tensors, p.layers, p.blocks, p.weights, p.adc,
                                      p.schedule, p.postops, p.digital, p.noc)
    sections: list[tuple[int, int, bytes]] = []  # (type, count, payload) in type order
    for typ, (name, recs) in enumerate(zip(_SECTION_NAMES, contents), start=1):
        put = _WRITERS.get(name, _put_record)
        b = bytearray()
        for rec in recs:
            put(b, rec, strings)
        sections.append((typ, len(recs), bytes(b)))
    b = bytearray()  # STRINGS last: the strings the other sections used, in order of first use
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
    """The ``rows × cols`` cells of ``bits`` bits packed in ``raw`` (see :func:`_pack_cells`);
    cells of 1, 2 or 4 bits are unpacked a whole section at once by :func:`_lanes`."""
    n = rows * cols
    if bits == 8:
        return np.frombuffer(raw, dtype=np.uint8, count=n).reshape(rows, cols).copy()
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

    def words(self, n: int) -> tuple[int, ...]:
        """``n`` u32 values (a variable count: checked against what is left before anything
        the size of ``n`` is made)."""
        at = self.skip(4 * n)
        return tuple(np.frombuffer(self.data, dtype="<u4", count=n, offset=at).tolist()) if n else ()

    def get(self, kind: str) -> Any:
        """One variable-length field (fixed-width ones are unpacked in runs by :meth:`record`)."""
        if kind == "str":
            return self.string(self.unpack("I")[0])
        if kind == "u32s":
            (n,) = self.unpack("I")
            return self.words(n)
        if kind == "params":
            (n,) = self.unpack("I")
            vals = self.words(2 * n)
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


def decode(data: bytes, where: str) -> dict[str, Any]:
    """The fields of the :class:`Program` in ``data`` (its constructor's keywords;
    :meth:`Program.from_bytes` builds and checks it); :class:`hwmap.TargetError` naming what is
    wrong (never quoting the file). Before any section is decoded, each section's record
    count is checked against its length (:func:`_min_record`) and what the decoded records
    will take against the memory bound (:func:`_decoded_bytes`)."""
    if len(data) < 8 or data[:8] != MAGIC:
        raise TargetError(f"not an analog_imc program (bad magic: it does not start with {MAGIC!r})", where=where)
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
    entries: list[tuple[int, int, int]] = []  # (count, offset, length)
    expected = _HEADER.size + nsec * _ENTRY.size
    for i in range(nsec):
        typ, count, off, length = _ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)
        name = _SECTION_NAMES[i]
        if typ != i + 1:
            raise TargetError(f"section {i} has type {typ}, expected {i + 1} ({name})", where=where)
        if off != expected or off + length > total - 4:
            raise TargetError(f"section {name} does not follow the one before it (offset {off:,}, expected "
                              f"{expected:,}) or runs past the end of the file", where=where)
        if count * _min_record(name) > length:
            raise TargetError(f"section {name} declares {count:,} records, more than its {length:,} bytes can hold",
                              where=where)
        entries.append((count, off, length))
        expected = off + length
    if expected != total - 4:
        raise TargetError(f"{total - 4 - expected:,} bytes between the last section and the checksum", where=where)
    check_size(sum(_decoded_bytes(name, count, length) for name, (count, _, length) in zip(_SECTION_NAMES, entries)),
               f"the decoded program ({sum(e[0] for e in entries):,} records in {total:,} bytes)", where=where,
               error=TargetError)
    payloads = [(count, data[off:off + length]) for count, off, length in entries]
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
    except (_Malformed, UnicodeDecodeError, ValueError, TypeError, struct.error) as e:
        raise TargetError(f"malformed section {name}: {e}", where=where) from None
    if len(results["CONFIG"]) != 1:
        raise TargetError(f"section CONFIG holds {len(results['CONFIG'])} records, expected 1", where=where)
    return {"config": results["CONFIG"][0], "consts": results["CONSTS"], "tensors": results["TENSORS"],
            "layers": results["LAYERS"], "blocks": results["SWITCHES"], "weights": results["WEIGHTS"],
            "adc": results["ADC"], "schedule": results["SCHEDULE"], "postops": results["POSTOPS"],
            "digital": results["DIGITAL"], "noc": results["NOC"]}


#: Bytes one decoded record takes at most (the object, its field dict and the ints in it),
#: and per section the bytes its decoding takes per byte of payload (WEIGHTS: the cells
#: unpacked, up to 8 per byte, and the whole section's lanes; SCHEDULE: the section as one
#: list of Python ints, 40 bytes per 4; the others: ints and tuples of variable fields).
_RECORD_BYTES = 1024
_BYTES_PER_BYTE = {"WEIGHTS": 24, "SCHEDULE": 12, "CONSTS": 2, "ADC": 2}
_DEFAULT_BYTES_PER_BYTE = 10


def _decoded_bytes(name: str, count: int, length: int) -> int:
    """An upper estimate of the memory decoding a section of ``count`` records in
    ``length`` bytes takes."""
    return count * _RECORD_BYTES + length * _BYTES_PER_BYTE.get(name, _DEFAULT_BYTES_PER_BYTE)


@cache
def _min_record(name: str) -> int:
    """The fewest bytes one record of section ``name`` takes in the file (variable-length
    fields empty): a declared count above the section's length over this is a lie."""
    fixed = {"u32": 4, "ref": 4, "i32": 4, "u64": 8, "f64": 8, "str": 4, "u32s": 4, "params": 4}
    if name in _RECORD_CLASSES:
        return sum(fixed[k] for k in getattr(_RECORD_CLASSES[name], "SPEC"))
    if name == "SCHEDULE":
        return 4 + min(sum(fixed[k] for k in getattr(cls, "SPEC")) for cls in _OPCODES.values())
    return {"STRINGS": 4, "CONSTS": 16, "WEIGHTS": 40, "ADC": 16}[name]


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
    return _read_records(rd, _RECORD_CLASSES[name], count)


#: The most dimensions a program constant may have (numpy's own limit is 64).
_MAX_NDIM = 32


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
        if ndim > _MAX_NDIM:
            raise _Malformed(f"constant of {ndim} dimensions (at most {_MAX_NDIM})")
        dims = rd.unpack(f"{ndim}QQ")
        dims, nbytes = dims[:-1], dims[-1]
        if nbytes != math.prod(dims) * dtype.itemsize:
            raise _Malformed(f"constant of shape {list(dims)} {dtype} declares {nbytes} bytes")
        at = rd.skip(nbytes)
        out.append(np.frombuffer(rd.data, dtype=dtype, count=nbytes // dtype.itemsize, offset=at).reshape(dims).copy())
    return out


def _read_records(rd: _In, cls: type, count: int) -> list[Any]:
    """``count`` records of ``cls`` from its SPEC; at once when every field is fixed-width."""
    runs = _plan(cls)[1]
    st = runs[0][0]
    if len(runs) > 1 or st is None:
        return [rd.record(cls) for _ in range(count)]
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
