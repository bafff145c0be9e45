"""``program.bin`` is input: the simulator opens it only through the artifacts manifest, and a
program that gets past its checksum but declares huge counts or tables is refused (exit 2,
one line) before memory grows: every declared count and size is checked against the file
size and the memory bound before anything that size is allocated."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest

import guard
from guard import CLIMB_TO_PASSWD, Run
from hwmap import TargetError
from hwmap.limits import ENV
from hwmap_analog_imc.program import Program, read_program
from hwmap_analog_imc.program_check import footprint
from hwmap_analog_imc.program_bin import _ENTRY, _HEADER, _SECTION_NAMES

#: Peak of Python's traced allocations a refused program may cause (the program is 8 KB).
REFUSED_PEAK = 32 << 20


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """zoo:digits_mlp compiled for analog_imc:default (calibrated), and 4 samples to simulate."""
    return guard.compiled_analog(tmp_path_factory.mktemp("analog"))


@pytest.fixture
def cdir(built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return guard.fresh_copy(built["dir"], tmp_path / "cdir", monkeypatch)


def simulate(cdir: Path, built: dict[str, Path]) -> Run:
    return guard.simulate(cdir, built["data"])


def refused(cdir: Path, built: dict[str, Path], *fragments: str) -> str:
    return guard.refused(cdir, built["data"], *fragments, peak=REFUSED_PEAK)


def program_path(cdir: Path) -> Path:
    return cdir / "artifacts" / "program.bin"


def rewrite(cdir: Path, change: Callable[[Program], None]) -> None:
    """Decode program.bin, change it, encode it again (a valid checksum)."""
    p = read_program(program_path(cdir))
    change(p)
    program_path(cdir).write_bytes(p.to_bytes())


def with_crc(body: bytes) -> bytes:
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]) & 0xFFFFFFFF)


def edit_entry(cdir: Path, section: str, **fields: int) -> None:
    """Set fields (count, offset, length) of one section's table entry, checksum recomputed."""
    raw = bytearray(program_path(cdir).read_bytes())
    at = _HEADER.size + _SECTION_NAMES.index(section) * _ENTRY.size
    typ, count, off, length = _ENTRY.unpack_from(raw, at)
    values = {"count": count, "offset": off, "length": length, **fields}
    _ENTRY.pack_into(raw, at, typ, values["count"], values["offset"], values["length"])
    program_path(cdir).write_bytes(with_crc(bytes(raw)))


def test_the_program_simulates(cdir: Path, built: dict[str, Path]) -> None:
    run = simulate(cdir, built)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["samples"] == 4


def test_five_hundred_million_computation_cycles_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    rewrite(cdir, lambda p: setattr(p, "config", dataclasses.replace(p.config, computation_cycles=500_000_000)))
    refused(cdir, built, "program.bin", "500,000,000 computation cycles")


@pytest.mark.parametrize("section", ["SCHEDULE", "TENSORS", "STRINGS", "CONSTS", "WEIGHTS", "NOC"])
def test_a_record_count_the_section_cannot_hold_is_refused(cdir: Path, built: dict[str, Path], section: str) -> None:
    edit_entry(cdir, section, count=0xFFFFFFFF)
    refused(cdir, built, "program.bin", f"section {section} declares 4,294,967,295 records")


def test_sections_that_overlap_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    """Twelve sections all naming the whole file would decode it twelve times."""
    edit_entry(cdir, "WEIGHTS", offset=_HEADER.size + 12 * _ENTRY.size)
    refused(cdir, built, "section WEIGHTS does not follow the one before it")


def test_what_decoding_takes_is_checked_against_the_bound(cdir: Path, built: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "64K")
    refused(cdir, built, "the decoded program (", "memory limit")


@pytest.mark.parametrize("field, value", [("adc_bits", 0xFFFFFFFF), ("dac_bits", 4000), ("bits_per_cell", 99),
                                          ("columns_per_adc", 0), ("link_width_bits", 0), ("cores", 0)])
def test_config_values_the_simulator_computes_with_are_bounded(cdir: Path, built: dict[str, Path], field: str,
                                                               value: int) -> None:
    rewrite(cdir, lambda p: setattr(p, "config", dataclasses.replace(p.config, **{field: value})))
    refused(cdir, built, f"CONFIG {field} = {value}")


def test_a_layer_larger_than_its_blocks_is_refused(cdir: Path, built: dict[str, Path]) -> None:
    """A Gemm of 2^20 rows on an input of 2^20 features (which agree): its blocks hold 64."""
    def grow(p: Program) -> None:
        lay = p.layers[0]
        t = p.tensors[lay.input]
        p.tensors[lay.input] = dataclasses.replace(t, shape=(t.shape[0], 1 << 20))
        p.layers[0] = dataclasses.replace(lay, rows=1 << 20)
    rewrite(cdir, grow)
    refused(cdir, built, "declares", "its blocks hold")


def test_a_layer_over_two_billion_positions_is_refused_before_it_is_prepared(cdir: Path,
                                                                             built: dict[str, Path]) -> None:
    """The input tensor and the layer agree (so the geometry check passes): 2^31 input
    vectors per sample would take terabytes."""
    def spread(p: Program) -> None:
        lay = p.layers[0]
        t = p.tensors[lay.input]
        p.tensors[lay.input] = dataclasses.replace(t, shape=(t.shape[0], 1 << 31, t.shape[-1]))
        p.layers[0] = dataclasses.replace(lay, positions=1 << 31)
    rewrite(cdir, spread)
    refused(cdir, built, "program.bin", "simulating the program", "memory limit")


def test_footprint_is_within_the_default_bound_for_a_real_program(cdir: Path) -> None:
    prepare, per_sample = footprint(read_program(program_path(cdir)))
    assert 0 < prepare + per_sample < 16 << 20


def test_deeply_nested_attributes_are_refused(cdir: Path, built: dict[str, Path]) -> None:
    def nest(p: Program) -> None:
        ops = p.digital or p.postops
        target = p.digital if p.digital else p.postops
        target[0] = dataclasses.replace(ops[0], attrs='{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    rewrite(cdir, nest)
    refused(cdir, built, "attributes that are not a JSON object")


# -- opened only through the manifest ----------------------------------------------------------------------
def set_manifest(cdir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = cdir / "artifacts" / "artifacts.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("name", [CLIMB_TO_PASSWD, "/dev/zero", "/etc/passwd"])
def test_a_program_named_outside_the_artifacts_is_not_opened(cdir: Path, built: dict[str, Path], name: str) -> None:
    set_manifest(cdir, lambda d: d["manifest"].update(program="kpis.json"))
    refused(cdir, built, "artifact 'kpis.json' is not listed in artifacts.json")
    set_manifest(cdir, lambda d: d["manifest"].update(program=name))
    line = refused(cdir, built, "artifacts.json", "refused")
    assert "root:" not in line
    set_manifest(cdir, lambda d: d.update(files=[name, *d["files"]]))
    line = refused(cdir, built, "artifacts.json", "refused")
    assert "root:" not in line


def test_a_symlinked_program_is_not_followed(cdir: Path, built: dict[str, Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    program_path(cdir).unlink()
    program_path(cdir).symlink_to(secret)
    line = refused(cdir, built, "program.bin", "symbolic link")
    assert "root:" not in line


def test_a_program_larger_than_the_bound_is_refused_before_it_is_read(cdir: Path, built: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "128M")
    with open(program_path(cdir), "r+b") as f:
        f.truncate(7_700_000_000)  # sparse
    refused(cdir, built, "program.bin", "7,700,000,000 bytes", "memory limit")


def test_a_foreign_file_is_named_but_not_quoted(cdir: Path, built: dict[str, Path]) -> None:
    program_path(cdir).write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    line = refused(cdir, built, "program.bin", "bad magic")
    assert "root:" not in line


def test_read_program_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="cannot read program: file is a directory"):
        read_program(tmp_path)
    with pytest.raises(TargetError, match="cannot read program: no such file"):
        read_program(tmp_path / "missing.bin")
