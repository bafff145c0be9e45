"""The analog IMC emitter and its program format: binary and listing round trips, identical
bytes on two emits, corrupt files rejected with one-line errors, weight programming that
covers every used cell exactly once with the right values, and the ADC full-scale rule."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap import Graph, ParseOptions, TargetError, load_model
from hwmap.config import load_target
from hwmap.zoo import load_data
from hwmap_analog_imc import emit, plugin
from hwmap_analog_imc.legalize import legalize, output_axis, weight_slot
from hwmap_analog_imc.mapping import AnalogMapping
from hwmap_analog_imc.program import VERSION, Program, parse_listing, read_program

SMALL_CHIP = ("hardware.cores=2", "hardware.crossbar_rows=64", "hardware.crossbar_cols=64")


def mapping_for(model: str, preset: str = "default", overrides: tuple[str, ...] = (),
                calibration: np.ndarray | None = None,
                shape: tuple[int, ...] | None = None) -> tuple[AnalogMapping, hwmap.Target]:
    """legalize → map, as the flow does."""
    target = load_target(f"analog_imc:{preset}", list(overrides))
    target.calibration = calibration
    graph = load_model(model, ParseOptions(input_shape=shape))
    legal = legalize(graph, target)
    assert legal.fits, legal.violations
    return plugin.hwmap_map(legal.graph, target), target


CASES = {
    # trained CNN, calibrated ADC, one core
    "digits_cnn": lambda: mapping_for("zoo:digits_cnn", calibration=load_data("digits").x[:64]),
    # residual adds, pooling, multi-core with spills, partial sums and NoC transfers, cycles
    "resnet_small": lambda: mapping_for("zoo:resnet_small", overrides=SMALL_CHIP, shape=(1, 3, 8, 8)),
    # offset encoding, one column per weight, 8-bit DAC (the chapter's core)
    "chapter_cnn": lambda: mapping_for("zoo:chapter_cnn", preset="chapter-fig3.13"),
    # duplicated copies of the early layers
    "duplicated": lambda: mapping_for("zoo:chapter_cnn", overrides=("mapper.strategy=\"duplicated\"",)),
    # 16-bit weights in 2-bit cells, offset encoding, 16 bit-planes
    "isaac": lambda: mapping_for("zoo:digits_mlp", preset="isaac-like"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def emitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    mapping, target = CASES[request.param]()
    out = tmp_path_factory.mktemp(request.param)
    art = emit.write_program(mapping, target, out)
    return mapping, target, art


# ------------------------------------------------------------------------------ round trips
def test_files_and_manifest(emitted) -> None:
    _, _, art = emitted
    assert art.files == ["program.bin", "program.lst"]
    assert all(art.path(f).is_file() for f in art.files)
    assert art.manifest["program"] == "program.bin" and art.manifest["version"] == VERSION == 2


def test_binary_round_trip_is_byte_identical(emitted) -> None:
    _, _, art = emitted
    raw = art.path("program.bin").read_bytes()
    program = read_program(art.path("program.bin"))
    assert program.to_bytes() == raw
    assert Program.from_bytes(program.to_bytes()).to_bytes() == raw


def test_listing_parses_to_the_same_program(emitted) -> None:
    _, _, art = emitted
    raw = art.path("program.bin").read_bytes()
    text = art.path("program.lst").read_text()
    parsed = parse_listing(text)
    assert parsed.to_bytes() == raw
    assert read_program(art.path("program.bin")).to_listing() == text
    for keyword in ("CONFIG ", "TENSOR ", "LAYER ", "BLOCK ", "WEIGHTS ", "ADC ", "READ ", "ACCUM "):
        assert f"\n{keyword}" in text


def test_two_emits_give_identical_bytes(emitted, tmp_path: Path) -> None:
    mapping, target, art = emitted
    again = emit.write_program(mapping, target, tmp_path)
    for f in art.files:
        assert again.path(f).read_bytes() == art.path(f).read_bytes(), f


def test_every_section_is_exercised() -> None:
    """The multi-core case really has partial sums, transfers, digital ops and several cycles."""
    mapping, target = CASES["resnet_small"]()
    program, _ = emit.build_program(mapping)
    assert program.config.computation_cycles > 1 and len({b.core for b in program.blocks}) == 2
    assert any(t.kind == 1 for t in program.noc) and any(t.kind == 0 for t in program.noc)
    assert {d.op for d in program.digital} >= {"Add", "Relu", "GlobalAveragePool", "Flatten"}
    assert any(len({(b.row_start) for b in program.blocks if b.layer == i}) > 1 for i in range(len(program.layers)))
    dup, _ = CASES["duplicated"]()
    assert max(lay.replicas for lay in emit.build_program(dup)[0].layers) > 1


# ------------------------------------------------------------------------------ corruption
@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    mapping, target = mapping_for("zoo:digits_mlp")
    out = tmp_path_factory.mktemp("good")
    emit.write_program(mapping, target, out)
    return out, (out / "program.bin").read_bytes()


def _raises_one_line(path: Path, data: bytes, match: str) -> None:
    path.write_bytes(data)
    with pytest.raises(TargetError, match=match) as err:
        read_program(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_corrupt_binaries_are_rejected(good, tmp_path: Path) -> None:
    _, raw = good
    p = tmp_path / "bad.bin"
    for i in (30, len(raw) // 2, len(raw) - 5):  # header table, a section, the last payload byte
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        _raises_one_line(p, bytes(flipped), "checksum")
    _raises_one_line(p, raw[:-1], "truncated")
    _raises_one_line(p, raw[:10], "truncated")
    _raises_one_line(p, raw + b"\0", "trailing")
    _raises_one_line(p, b"NOTAPROG" + raw[8:], "bad magic")
    _raises_one_line(p, b"", "bad magic")
    v1 = bytearray(raw[:-4])  # a version-1 file (whole-tensor transfers, no NOC regions)
    struct.pack_into("<H", v1, 8, 1)
    _raises_one_line(p, bytes(v1) + struct.pack("<I", zlib.crc32(v1)), "program format version 1, this reader reads version 2")
    with pytest.raises(TargetError, match="cannot read"):
        read_program(tmp_path / "missing.bin")


def test_inconsistent_program_with_a_valid_checksum_is_rejected(good, tmp_path: Path) -> None:
    """A well-formed file whose records point nowhere (here: a READ of a missing block)."""
    program = read_program(good[0] / "program.bin")
    read = next(i for i in program.schedule if type(i).__name__ == "ReadRec")
    k = program.schedule.index(read)
    program.schedule[k] = type(read)(**{**read.__dict__, "blocks": (len(program.blocks) + 3,)})
    p = tmp_path / "p.bin"
    with pytest.raises(TargetError, match="missing layer or block"):
        p.write_bytes(program.to_bytes())
        read_program(p)


def test_corrupt_listings_are_rejected(good) -> None:
    text = (good[0] / "program.lst").read_text()
    weights_at = text.index("\nWEIGHTS ")
    first_row = text.index("\n  ", weights_at) + 3
    cases = [
        (text.replace("\nEND\n", "\n"), "no END"),
        (text[:first_row] + "z" + text[first_row + 1:], "hex digit"),
        (text[:weights_at] + "\nWEIGHTS block=0 cycle=0 core=0 elem_row=0 elem_col=0 bits=4 cells=999x4\n",
         "truncated"),
        (text.replace("HWMAP-IMC-LISTING version=2", "HWMAP-IMC-LISTING version=1"), "version"),
        ("hello\n", "not an analog_imc program listing"),
        (text.replace("\nREAD ", "\nREAD bogus=1 ", 1), "line"),
        (text.replace("\nLAYER ", "\nLAYRE ", 1), "unknown keyword"),
    ]
    for bad, match in cases:
        with pytest.raises(TargetError, match=match) as err:
            parse_listing(bad)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------ weights
def test_weight_programming_covers_every_used_cell_once(emitted) -> None:
    """Rebuild every (cycle, core) crossbar from the WEIGHTS records alone: no cell written
    twice, the used cells exactly the mapper's, each block where its placement says."""
    mapping, _, art = emitted
    program = read_program(art.path("program.bin"))
    cfg = program.config
    er, ec = cfg.element_rows, cfg.element_cols
    grids: dict[tuple[int, int], np.ndarray] = {}
    assert len(program.weights) == len(mapping.result.placements)
    for w, place in zip(program.weights, mapping.result.placements):
        assert (w.cycle, w.core, w.elem_row, w.elem_col) == (place.cycle, place.core, place.elem_row, place.elem_col)
        rows, cols = w.cells.shape
        lay = mapping.layers[place.layer]
        assert (rows, cols) == (place.row_count, place.filter_count * lay.cols_per_filter)
        # the cells fall inside the placement's element rectangle, and need all of it
        assert -(-rows // er) == place.elem_rows and -(-cols // ec) == place.elem_cols
        grid = grids.setdefault((w.cycle, w.core), np.zeros((cfg.crossbar_rows, cfg.crossbar_cols), np.int32))
        grid[w.elem_row * er:w.elem_row * er + rows, w.elem_col * ec:w.elem_col * ec + cols] += 1
        assert int(w.cells.max(initial=0)) < 2**cfg.bits_per_cell
    assert max(int(g.max()) for g in grids.values()) == 1
    assert sum(int(g.sum()) for g in grids.values()) == mapping.result.cells_used


def test_cells_decode_to_the_quantized_weights(emitted) -> None:
    """Shift-and-add the cell levels back (differential pairs or offset) and compare with
    round(W / s_w) computed here from the legalized graph's annotation."""
    mapping, _, art = emitted
    program = read_program(art.path("program.bin"))
    hw = mapping.config.hardware
    for lid, rec in enumerate(program.layers):
        node = mapping.graph.node(rec.name)
        slot = weight_slot(node)
        w = np.moveaxis(np.asarray(node.params[slot], np.float64), output_axis(node), 0)
        q = node.param_quant[slot]
        w_int = np.clip(np.round(w.reshape(w.shape[0], -1) / np.asarray(q.scale).reshape(-1, 1)),
                        -(2 ** (hw.weight_bits - 1) - 1), 2 ** (hw.weight_bits - 1) - 1)  # (C_out, M)
        if node.op.endswith("Conv"):
            expect = w_int.reshape(rec.groups, rec.filters, rec.rows).transpose(0, 2, 1)
        else:
            expect = w_int.T[None]
        coef = program.const(rec.coef)
        seen = np.zeros((rec.replicas, *expect.shape), np.int32)
        for b, blk in enumerate(program.blocks):
            if blk.layer != lid:
                continue
            cells = program.weights[b].cells.astype(np.int64)
            got = (cells.reshape(blk.row_count, blk.filter_count, -1) * coef).sum(axis=2) - rec.weight_offset
            want = expect[blk.group, blk.row_start:blk.row_start + blk.row_count,
                          blk.filter_start:blk.filter_start + blk.filter_count]
            np.testing.assert_array_equal(got, want)
            seen[blk.replica, blk.group, blk.row_start:blk.row_start + blk.row_count,
                 blk.filter_start:blk.filter_start + blk.filter_count] += 1
        assert (seen == 1).all(), rec.name


def test_differential_pairs_hold_one_sign_each() -> None:
    mapping, target = mapping_for("zoo:digits_mlp")
    program, _ = emit.build_program(mapping)
    for w in program.weights:
        pairs = w.cells.reshape(w.cells.shape[0], -1, 2)
        assert not np.any((pairs[..., 0] > 0) & (pairs[..., 1] > 0))


# ------------------------------------------------------------------------------ ADC full scale
def test_analytic_full_scale_is_the_smallest_power_of_two_that_never_clips() -> None:
    mapping, _ = mapping_for("zoo:digits_cnn")
    program, _ = emit.build_program(mapping, None)
    cfg = program.config
    top = 2**cfg.adc_bits - 1
    assert cfg.adc_calibration == 0
    for b, blk in enumerate(program.blocks):
        lay = program.layers[blk.layer]
        worst = program.weights[b].cells.astype(np.int64).sum(axis=0).reshape(blk.filter_count, -1).max(axis=0)
        worst = worst * min(2**cfg.dac_bits - 1, lay.in_qmax - lay.in_qmin)  # (cols_per_filter,)
        shifts = program.adc[b].shifts.astype(np.int64)
        assert np.all(top * 2.0**shifts >= worst)
        assert np.all((shifts == 0) | (top * 2.0 ** (shifts - 1) < worst))


def test_calibrated_full_scale_is_never_wider_than_the_worst_case() -> None:
    x = load_data("digits").x
    mapping, _ = mapping_for("zoo:digits_cnn", calibration=x)
    analytic, _ = emit.build_program(mapping, None)
    calibrated, notes = emit.build_program(mapping, x)
    assert calibrated.config.adc_calibration == 1 and calibrated.config.calibration_vectors > 0 and not notes
    pairs = [(a.shifts, c.shifts) for a, c in zip(analytic.adc, calibrated.adc)]
    assert all((c <= a).all() for a, c in pairs) and any((c < a).any() for a, c in pairs)
    # calibration data of the wrong shape: the worst case, and a note saying why
    fallback, notes = emit.build_program(mapping, np.zeros((4, 3, 3), np.float32))
    assert fallback.config.adc_calibration == 0 and "calibration" in notes[0]
    assert fallback.to_bytes() == analytic.to_bytes()


# ------------------------------------------------------------------------------ bad mappings
def test_unquantized_crossbar_input_is_a_target_error() -> None:
    mapping, _ = mapping_for("zoo:digits_mlp")
    g: Graph = mapping.graph
    g.tensor(g.node(mapping.layers[0].node).inputs[0]).quant = None
    with pytest.raises(TargetError, match="no quantization annotation"):
        emit.build_program(mapping)


# ------------------------------------------------------------------------------ dataflow
def _elements(shape: tuple[int, ...], layout: int, c0: int, cc: int, p0: int, pc: int) -> set[int]:
    """Flat element indices (per sample, C order) of a NOC region, enumerated from its definition."""
    idx = np.arange(int(np.prod(shape[1:]))).reshape(shape[1:])
    if layout == 0:
        return set(idx.reshape(-1).tolist())
    if layout == 1:
        sub = idx.reshape(shape[1], -1)[c0:c0 + cc, p0:p0 + pc]
    else:
        sub = idx.reshape(-1, shape[-1])[p0:p0 + pc, c0:c0 + cc]
    return set(sub.reshape(-1).tolist())


def _read_needs(program: Program, read) -> set[int]:
    """Input elements a READ drives, from the convolution's definition (every kernel tap of
    every row of the tile at every position, padding excluded) or the Gemm's input rows."""
    lay = program.layers[read.layer]
    shape = program.tensors[lay.input].shape
    pos = np.arange(read.pos_start, read.pos_start + read.pos_count)
    rows = np.arange(read.row_start, read.row_start + read.row_count)
    if not lay.kernel:
        k = shape[-1]
        return set((pos[:, None] * k + rows[None, :]).reshape(-1).tolist())
    cg = shape[1] // lay.groups
    taps = np.unravel_index(rows % int(np.prod(lay.kernel)), lay.kernel)
    ch = read.group * cg + rows // int(np.prod(lay.kernel))
    out = np.unravel_index(pos, lay.out_spatial)
    ok = np.ones((pos.size, rows.size), dtype=bool)
    flat = ch[None, :] * int(np.prod(shape[2:]))
    for ax in range(len(lay.kernel)):
        coord = (out[ax][:, None] * lay.strides[ax] - lay.pads_begin[ax] + taps[ax][None, :] * lay.dilations[ax])
        ok &= (coord >= 0) & (coord < shape[2 + ax])
        flat = flat + coord * int(np.prod(shape[3 + ax:]))
    return set(flat[ok].tolist())


def _sharing(program: Program, b: int) -> set[int]:
    """Blocks linked to block ``b`` by common filters (same layer, copy and group), transitively."""
    blk = program.blocks[b]
    mates = [o for o, ob in enumerate(program.blocks) if (ob.layer, ob.replica, ob.group) == (blk.layer, blk.replica,
                                                                                              blk.group)]
    out, todo = {b}, [b]
    while todo:
        x = program.blocks[todo.pop()]
        for o in mates:
            ob = program.blocks[o]
            if o not in out and ob.filter_start < x.filter_start + x.filter_count and \
                    x.filter_start < ob.filter_start + ob.filter_count:
                out.add(o)
                todo.append(o)
    return out


def _check_dataflow(program: Program) -> None:
    """Independently of the emitter's planner: every core holds every input element its READs
    drive and every operand its digital ops read, either made there (the layer filters its
    ACCUMs finish there, a digital op's outputs, a graph input) or received by a NOC record;
    partial sums move exactly for filters whose row tiles sit on several cores."""
    held: dict[tuple[int, int], set[int]] = {}  # (tensor, core) -> elements
    accum = {ins.block: ins for ins in program.schedule if not hasattr(ins, "blocks")}
    for t in program.noc:
        if t.kind == 0:
            held.setdefault((t.tensor, t.dst), set()).update(
                _elements(program.tensors[t.tensor].shape, t.layout, t.ch_start, t.ch_count, t.pos_start,
                          t.pos_count))
    for r in (ins for ins in program.schedule if hasattr(ins, "blocks")):
        lay = program.layers[r.layer]
        out_shape = program.tensors[lay.output].shape
        for b in r.blocks:
            blk = program.blocks[b]
            dst = accum[b].dst_core
            sharing = _sharing(program, b)
            cores = {program.blocks[o].core for o in sharing}
            if cores == {blk.core}:
                assert dst == blk.core  # every row tile of these filters here: finished here
            else:  # split: accumulated on one of the cores holding them, the same for every tile
                assert dst in cores and all(accum[o].dst_core == dst for o in sharing if o in accum)
            layout = 1 if lay.kernel else 2
            held.setdefault((lay.output, dst), set()).update(_elements(
                out_shape, layout, blk.group * lay.filters + blk.filter_start, blk.filter_count, r.pos_start,
                r.pos_count))
            psums = [t for t in program.noc if t.kind == 1 and t.src == blk.core and t.tensor == lay.output
                     and (t.ch_start, t.pos_start) == (blk.group * lay.filters + blk.filter_start, r.pos_start)]
            assert bool(psums) == (dst != blk.core)
    for d in program.digital:
        for t in d.outputs:
            held.setdefault((t, d.core), set()).update(range(int(np.prod(program.tensors[t].shape[1:]))))
    inputs = {i for i, t in enumerate(program.tensors) if t.flags & 1}
    for r in (ins for ins in program.schedule if hasattr(ins, "blocks")):
        x = program.layers[r.layer].input
        if x not in inputs:
            missing = _read_needs(program, r) - held.get((x, r.core), set())
            assert not missing, (program.layers[r.layer].name, r.core, len(missing))
    for d in program.digital:
        for t in d.inputs:
            if t not in inputs:
                assert len(held.get((t, d.core), ())) == int(np.prod(program.tensors[t].shape[1:])), d.name


@pytest.mark.parametrize(("model", "overrides"), [
    ("zoo:chapter_cnn", ("hardware.cores=16", "mapper.strategy=\"duplicated\"")),
    ("zoo:resnet_small", ("hardware.cores=16", "mapper.strategy=\"duplicated\"")),
    ("zoo:resnet_small", SMALL_CHIP),  # row tiles over two cores, several cycles
    ("zoo:digits_cnn", ("mapper.strategy=\"duplicated\"",)),
])
def test_every_core_holds_what_it_reads(model: str, overrides: tuple[str, ...]) -> None:
    mapping, _ = mapping_for(model, overrides=overrides)
    program, _ = emit.build_program(mapping)
    _check_dataflow(program)


def test_copies_finish_their_outputs_and_read_only_their_rows() -> None:
    """chapter_cnn on 16 cores: copies of whole filters send finished 8-bit outputs, not
    partial sums, and each copy's core receives only the input rows its positions cover."""
    mapping, _ = mapping_for("zoo:chapter_cnn", overrides=("hardware.cores=16", "mapper.strategy=\"duplicated\""))
    program, _ = emit.build_program(mapping)
    copied = [i for i, lay in enumerate(program.layers) if lay.replicas > 1]
    assert copied
    for i in copied:
        lay = program.layers[i]
        assert not any(t.kind == 1 and t.tensor == lay.output for t in program.noc)
        x = program.tensors[lay.input]
        size = int(np.prod(x.shape[1:]))
        to_copies = [t for t in program.noc if t.tensor == lay.input and t.kind == 0]
        if to_copies:  # a graph input comes from off chip
            assert all(t.ch_count * t.pos_count < size for t in to_copies)
        out = program.tensors[lay.output]
        assert all(t.bytes * 8 == t.ch_count * t.pos_count * out.q_bits for t in program.noc
                   if t.tensor == lay.output and out.flags & 4)
