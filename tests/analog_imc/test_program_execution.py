"""Issue 12, "The simulator runs the emitted program": programs re-encoded with one change
(through the binary codec, as a file on disk would carry them) are refused with an error
naming the record, or run with the outputs their instructions say.

(a) a block moved onto another layer's elements, (b) a block outside the element grid, (c) a
block declaring fewer elements than its weights take, (d) every READ on another core,
(e) the schedule (or the dataflow order) reversed, (f) the NOC records dropped — and the moves the program's
semantics allow: a layer relocated to another core with the transfer its input then needs,
cells programmed with other levels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hwmap import TargetError, load_model
from hwmap.config import load_target
from hwmap_analog_imc import emit, plugin, simulator
from hwmap_analog_imc.legalize import legalize
from hwmap_analog_imc.program import AccumRec, Program, ReadRec, TransferRec, WeightsRec

CHAPTER = ("chapter_cnn", "chapter-fig3.13", ("hardware.cores=2",))  # conv1 (16 rows), conv2 (144 rows), 16×16 elements
RESNET = ("resnet_small", "default", ())  # 10 layers on 5 of 8 cores, 25 transfers


def build(model: str, preset: str, sets: tuple[str, ...]) -> Program:
    t = load_target(f"analog_imc:{preset}", list(sets))
    program, _ = emit.build_program(plugin.hwmap_map(legalize(load_model(f"zoo:{model}"), t).graph, t))
    return program


def reencoded(program: Program) -> Program:
    """``program`` through the binary codec: encoded, decoded and checked as a file is."""
    return Program.from_bytes(program.to_bytes(), "tampered.bin")


def run(program: Program, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).random((2, *program.tensors[0].shape[1:]), dtype=np.float32)
    outputs, _, _ = simulator.run_program(reencoded(program), {program.tensors[0].name: x})
    return next(iter(outputs.values()))


def moved(program: Program, b: int, **where: int) -> Program:
    """Block ``b``'s switches and its WEIGHTS record moved (``core``, ``elem_row``, ``elem_col``;
    its READ and ACCUM follow a new core)."""
    p = replace(program, blocks=list(program.blocks), weights=list(program.weights), schedule=list(program.schedule))
    p.blocks[b] = replace(p.blocks[b], **where)
    w = p.weights[b]
    p.weights[b] = WeightsRec(w.block, w.cycle, where.get("core", w.core), where.get("elem_row", w.elem_row),
                              where.get("elem_col", w.elem_col), w.bits, w.cells)
    if "core" in where:
        p.schedule = [replace(ins, core=where["core"]) if (isinstance(ins, ReadRec) and b in ins.blocks) or (
            isinstance(ins, AccumRec) and ins.block == b) else ins for ins in p.schedule]
        p.schedule = [replace(ins, dst_core=where["core"]) if isinstance(ins, AccumRec) and ins.block == b else ins
                      for ins in p.schedule]
    return p


@pytest.fixture(scope="module")
def chapter() -> Program:
    return build(*CHAPTER)


@pytest.fixture(scope="module")
def resnet() -> Program:
    return build(*RESNET)


def test_a_block_moved_onto_another_layers_elements_is_refused(chapter: Program) -> None:
    conv1, conv2 = chapter.blocks[0], chapter.blocks[1]
    assert (conv1.layer, conv2.layer, conv1.core, conv2.core) == (0, 1, 0, 0)
    bad = moved(chapter, 1, elem_row=conv1.elem_row, elem_col=conv1.elem_col)
    with pytest.raises(TargetError, match=r"BLOCK 1 \(conv2\) and BLOCK 0 \(conv1_fused\) both sit on element "
                                          r"\(0, 0\) of core 0 in computation cycle 0"):
        reencoded(bad)


def test_a_block_outside_the_element_grid_is_refused(chapter: Program) -> None:
    with pytest.raises(TargetError, match=r"BLOCK 1 \(conv2\) takes elements 100\.\.108 .* outside the 16×16 "
                                          "element grid"):
        reencoded(moved(chapter, 1, elem_row=100))


def test_a_block_declaring_fewer_elements_than_its_weights_is_refused(chapter: Program) -> None:
    assert chapter.blocks[1].row_count == 144
    bad = replace(chapter, blocks=[replace(b, elem_rows=1) if i == 1 else b for i, b in enumerate(chapter.blocks)])
    with pytest.raises(TargetError, match=r"BLOCK 1 \(conv2\) declares 1×2 elements for 144 rows × 8 columns of "
                                          "weights, which take 9×2"):
        reencoded(bad)


def test_reads_on_another_core_are_refused(resnet: Program) -> None:
    cores = resnet.config.cores
    bad = replace(resnet, schedule=[replace(ins, core=(ins.core + 1) % cores) if isinstance(ins, ReadRec) else ins
                                    for ins in resnet.schedule])
    with pytest.raises(TargetError, match=r"READ instruction 0 runs on core 1 in cycle 0 but drives BLOCK 0, "
                                          "programmed on core 0"):
        reencoded(bad)


def test_a_reversed_schedule_is_refused(resnet: Program) -> None:
    bad = replace(resnet, schedule=resnet.schedule[::-1])
    with pytest.raises(TargetError, match=r"ACCUM instruction \d+ waits for BLOCK \d+ to be read"):
        run(bad)


def test_dropped_transfers_are_refused(resnet: Program) -> None:
    assert resnet.noc
    with pytest.raises(TargetError, match=r"in computation cycle 0, READ instruction \d+ \(\w+\) on core \d waits for "
                                          r"channels .* of tensor"):
        run(replace(resnet, noc=[]))


def test_every_transfer_is_needed(resnet: Program) -> None:
    """Each NOC record moves data some instruction waits for: without any one of them the
    program does not run."""
    for k in range(len(resnet.noc)):
        with pytest.raises(TargetError, match="waits for|no NOC record carries"):
            simulator.Simulator(replace(resnet, noc=resnet.noc[:k] + resnet.noc[k + 1:]))


def test_partial_sums_sent_where_no_transfer_goes_are_refused(resnet: Program) -> None:
    """The last layer's ACCUM sends its partial sums to another core: nothing carries them."""
    k, acc = [(k, ins) for k, ins in enumerate(resnet.schedule) if isinstance(ins, AccumRec)][-1]
    dst = (acc.core + 1) % resnet.config.cores
    bad = replace(resnet, schedule=[replace(ins, dst_core=dst) if j == k else ins
                                    for j, ins in enumerate(resnet.schedule)])
    with pytest.raises(TargetError, match=f"ACCUM instruction {k} sends the partial sums of BLOCK {acc.block} "
                                          f"from core {acc.core} to core {dst}, and no NOC record carries them"):
        run(bad)


def test_a_layer_moved_to_another_core_needs_its_input_moved(chapter: Program) -> None:
    """conv2 moved to the idle core 1 (its switches, cells, READ and ACCUM): its input is
    made on core 0, so the program is refused naming conv2's READ until a NOC record
    carries that tensor; then it runs, with the same outputs (placement changes where, not
    what)."""
    base = run(chapter)
    there = moved(chapter, 1, core=1)
    with pytest.raises(TargetError, match=r"READ instruction \d+ \(conv2\) on core 1 waits for channels 0\.\.15 "
                                          "of tensor"):
        run(there)
    x = chapter.layers[1].input
    shape = chapter.tensors[x].shape
    size = int(np.prod(shape[1:]))
    carried = replace(there, noc=[TransferRec(0, 0, 1, 1, x, 0, 0, 0, 1, 0, size, size)])
    assert run(carried).tobytes() == base.tobytes()


def test_reads_drive_the_cells_as_programmed(chapter: Program) -> None:
    """The READs compute with the levels the WEIGHTS records wrote into the crossbar: other
    levels, other outputs; the same levels written back, the same outputs."""
    base = run(chapter)
    w = chapter.weights[1]
    cells = w.cells.copy()
    cells[:, 0] = (cells[:, 0] + 1) % 16
    other = replace(chapter, weights=[chapter.weights[0], replace(w, cells=cells)])
    assert run(other).tobytes() != base.tobytes()
    same = replace(chapter, weights=[chapter.weights[0], replace(w, cells=w.cells.copy())])
    assert run(same).tobytes() == base.tobytes()


def test_reversed_dataflow_order_is_refused(resnet: Program) -> None:
    """The LAYERS' and DIGITAL records' ``order`` reversed: a layer would read a tensor
    made after it."""
    n = len(resnet.layers) + len(resnet.digital)
    bad = replace(resnet, layers=[replace(lay, order=n - lay.order) for lay in resnet.layers],
                  digital=[replace(d, order=n - d.order) for d in resnet.digital])
    with pytest.raises(TargetError, match=r"LAYER 1 \(s1_conv1_fused\) \(order \d+\) reads tensor 'stem_relu', which "
                                          r"LAYER 0 \(stem_fused\) makes later"):
        reencoded(bad)
