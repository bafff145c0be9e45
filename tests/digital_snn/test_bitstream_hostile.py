"""A bitstream is untrusted input (it is read back from a compile directory): the sizes
its device section declares are checked against the memory limit before the dense tables
they imply are allocated. Found by hostile review: a 34 MB ``program.bin`` declaring 60,000
hidden neurons with 4 synapses each made ``hwmap simulate`` allocate the dense recurrent
matrix, 60,000 × 60,000 × 4 int64 (107 GiB): MemoryError, exit 3."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from hwmap import TargetError
from hwmap.limits import set_max_memory
from hwmap_digital_snn import program as P
from test_bitstream import _program


def _sections(data: bytes) -> dict[bytes, bytes]:
    _, _, count, _ = P._HEADER.unpack_from(data, 0)
    pos, out = P._HEADER.size, {}
    for _ in range(count):
        tag, n = P._SECTION.unpack_from(data, pos)
        pos += P._SECTION.size
        out[tag] = data[pos:pos + n]
        pos += n
    return out


def _sealed(sections: dict[bytes, bytes]) -> bytes:
    body = b"".join(P._SECTION.pack(t, len(sections[t])) + sections[t] for t in P._ORDER)
    blob = P._HEADER.pack(P.MAGIC, P.VERSION, len(P._ORDER), len(body)) + body
    return blob + struct.pack("<I", zlib.crc32(blob))


def _grown(blob: bytes, n_hid: int, n_syn: int) -> bytes:
    """``blob`` rewritten, consistently and with a valid checksum, for ``n_hid`` hidden
    neurons of ``n_syn`` synapses, every weight zero: a well-formed bitstream of that size."""
    s = _sections(blob)
    dev = list(P._DEVC.unpack(s[b"DEVC"]))
    n_in, n_out = dev[0], dev[2]
    dev[1], dev[3] = n_hid, n_syn
    s[b"DEVC"] = P._DEVC.pack(*dev)
    i32 = np.ones(n_hid, "<i4").tobytes()
    s[b"HNRN"] = i32 + bytes(4 * n_hid) * 2 + bytes(4 * n_hid * n_syn)
    s[b"WIN "] = bytes(2 * n_in * n_hid * n_syn)
    s[b"WREC"] = bytes(4 * n_hid)
    s[b"WOUT"] = bytes(2 * n_hid * n_out)
    s[b"LAYR"] = struct.pack("<I", 0)
    return _sealed(s)


def test_a_bitstream_declaring_a_huge_population_is_refused_before_allocating() -> None:
    blob = _grown(P.write_program(_program()), 60_000, 4)
    assert len(blob) < 64 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TargetError, match="memory limit") as e:
            P.read_program(blob, "artifacts/program.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "artifacts/program.bin" in str(e.value) and "recurrent" in str(e.value)
    assert peak < 3 * len(blob), f"{peak:,} bytes for a {len(blob):,}-byte bitstream"


def test_the_bound_is_the_memory_limit() -> None:
    """A population whose dense tables fit is read; lower the limit below them and the same
    bitstream is refused."""
    blob = _grown(P.write_program(_program()), 512, 2)
    assert P.read_program(blob, "p").n_hid == 512
    try:
        set_max_memory(512 * 512 * 2 * 8 - 1)
        with pytest.raises(TargetError, match="memory limit"):
            P.read_program(blob, "p")
    finally:
        set_max_memory(None)
