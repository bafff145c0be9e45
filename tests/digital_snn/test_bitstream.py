"""The bitstream: an exact round trip, identical bytes on two runs, and every corruption
refused with an error naming the file."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from hwmap import TargetError
from hwmap.config import load_target
from hwmap_digital_snn import plugin
from hwmap_digital_snn.program import read_program, write_program

from dsnn_nets import residual


def _program(sets: list[str] | None = None):
    t = load_target("digital_snn:default", sets or [])
    return plugin.hwmap_map(plugin.hwmap_legalize(residual(), t).graph, t).program


def _equal(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def test_round_trip_is_exact_and_bytes_are_identical() -> None:
    p = _program()
    blob = write_program(p)
    assert blob == write_program(_program())  # a second run: the same bytes
    q = read_program(blob, "program.bin")
    _equal(p, q)
    assert write_program(q) == blob
    assert blob[:8] == b"HWSNNBS\x00" and struct.unpack_from("<H", blob, 8)[0] == 2


def test_round_trip_with_aliases() -> None:
    p = _program()
    p.aliases = np.array([[0, 5], [0, 2], [3, 3], [7, 1]], np.int64)  # order kept: it is the order they act in
    blob = write_program(p)
    q = read_program(blob, "x")
    _equal(p, q)
    assert write_program(q) == blob
    tag = blob.index(b"ALIA")
    assert struct.unpack_from("<II", blob, tag + 4) == (4 + 8 * 4, 4)
    bad = bytearray(blob)
    struct.pack_into("<I", bad, tag + 12 + 8 * 3 + 4, p.n_hid)  # a target beyond the hidden neurons
    with pytest.raises(TargetError, match="ALIA: alias neuron ids"):
        read_program(_resealed(bytes(bad)), "x")
    with pytest.raises(TargetError, match="ALIA: needs"):  # a count the section does not hold
        read_program(_resealed(blob[:tag + 8] + struct.pack("<I", 2**31) + blob[tag + 12:]), "x")


def test_round_trip_with_two_synapses_and_shifts() -> None:
    p = _program(['hardware.decay="multiplicative"', "hardware.decay_bits=8"])
    p.n_syn = 2
    p.w_in = np.concatenate([p.w_in, -p.w_in], axis=2)
    p.w_rec = np.concatenate([p.w_rec, p.w_rec[::-1, :, :]], axis=2)
    p.hid_dsyn = np.concatenate([p.hid_dsyn, p.hid_dsyn + 1], axis=1)
    p.shift_in, p.shift_rec = 2, 3
    q = read_program(write_program(p), "x")
    _equal(p, q)


def test_memory_is_the_fan_in_lists() -> None:
    p = _program()
    blob = write_program(p)
    # WREC holds one 7-byte entry per non-zero recurrent weight after the per-neuron counts
    assert p.memory_words == int(np.count_nonzero(p.w_rec)) == int(p.fan_in().sum())
    tag = blob.index(b"WREC")
    (n,) = struct.unpack_from("<I", blob, tag + 4)
    assert n == 4 * p.n_hid + 7 * p.memory_words


def _resealed(blob: bytes) -> bytes:
    body = blob[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-1], "declares a body"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "checksum"),
    (lambda b: b"XXXXXXXX" + b[8:], "wrong magic"),
    (lambda b: _resealed(b[:8] + struct.pack("<H", 9) + b[10:-4] + b"\0\0\0\0"), "version 9"),
    (lambda b: _resealed(b[:b.index(b"HNRN") + 8] + struct.pack("<i", 0) + b[b.index(b"HNRN") + 12:-4] + b"0000"),
     "thresholds"),
])
def test_corrupt_bitstreams_are_refused(corrupt, message) -> None:
    blob = write_program(_program())
    with pytest.raises(TargetError, match=message) as e:
        read_program(corrupt(blob), "artifacts/program.bin")
    assert "artifacts/program.bin" in str(e.value)


def test_simulate_refuses_a_missing_bitstream(tmp_path: Path) -> None:
    from hwmap import Artifacts

    t = load_target("digital_snn:default")
    art = Artifacts(tmp_path, ["program.bin"], {"outputs": ["s3"]})
    with pytest.raises(TargetError, match="program.bin"):
        plugin.hwmap_simulate(art, t, {"x": np.zeros((1, 4, 6), np.float32)})
