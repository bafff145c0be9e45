"""The conformance suite compares values and checks that the simulation reads its artifacts:
throw-away wrong targets (zeros, permuted outputs, simulators that ignore the artifacts,
claims a target does not keep, a preset value without a source) are each caught with one
clear line, while right ones (the toy target, and a variant whose bit-exact claim holds)
still conform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwmap import Artifacts, FidelityClaim, Graph, QuantAnnotation, Simulation, TargetError, hookimpl
from hwmap.data import Dataset
from hwmap.execute import run
from hwmap.flow import simulate_dir
from hwmap.registry import Registry
from hwmap.source import load_model
from hwmap.testing import REL_RMS_FLOOR, TOP1_FLOOR, other_weights
from hwmap_toy_cpu import plugin
from toy_variants import Variant, failures_of, write_presets

pytestmark = pytest.mark.usefixtures("toy_registry")

DIGITS = {"model": "zoo:digits_cnn", "data": "zoo:digits"}


@pytest.fixture
def presets(tmp_path: Path) -> dict[str, Path]:
    return write_presets(tmp_path / "presets")


def check(registry: Registry, variant: type[Variant], presets: dict[str, Path], tmp_path: Path,
          **kw: Any) -> list[str]:
    failures = failures_of(registry, variant, presets, tmp_path, **kw)
    assert all("\n" not in f for f in failures), failures
    return failures


def only(failures: list[str], prefix: str) -> list[str]:
    return [f for f in failures if f.startswith(prefix)]


# -- wrong values ---------------------------------------------------------------------------------
class Zeros(Variant):
    """Simulates nothing: every output all zeros (shape and dtype right)."""

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        sim = plugin.hwmap_simulate(artifacts, target, inputs)
        return Simulation({k: np.zeros_like(v) for k, v in sim.outputs.items()}, sim.activity)


class RolledSamples(Variant):
    """The right outputs, each given to the next sample."""

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        sim = plugin.hwmap_simulate(artifacts, target, inputs)
        return Simulation({k: np.roll(v, 1, axis=0) for k, v in sim.outputs.items()}, sim.activity)


class PermutedClasses(Variant):
    """The right logits under the wrong class indices."""

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        sim = plugin.hwmap_simulate(artifacts, target, inputs)
        return Simulation({k: np.roll(v, 3, axis=1) for k, v in sim.outputs.items()}, sim.activity)


@pytest.mark.parametrize("variant", [Zeros, RolledSamples])
def test_wrong_feature_maps_are_caught(toy_registry: Registry, presets: dict[str, Path], tmp_path: Path,
                                       variant: type[Variant]) -> None:
    failures = check(toy_registry, variant, presets, tmp_path)
    (line,) = only(failures, "fidelity:")
    assert line.startswith("fidelity: output 'output' relative RMS error ||sim - ref|| / ||ref|| = ")
    assert line.endswith(f"(64 samples) is above {REL_RMS_FLOOR:g} (the suite's floor)")
    measured = float(line.split(" = ")[1].split()[0])
    assert measured == pytest.approx(1.0 if variant is Zeros else 0.69, abs=0.02)


@pytest.mark.parametrize("variant", [Zeros, RolledSamples, PermutedClasses])
def test_wrong_classifier_outputs_are_caught(toy_registry: Registry, presets: dict[str, Path], tmp_path: Path,
                                             variant: type[Variant]) -> None:
    failures = check(toy_registry, variant, presets, tmp_path, **DIGITS)
    (line,) = only(failures, "fidelity:")
    assert line.startswith("fidelity: output 'output' top-1 agreement with the reference model ")
    assert line.endswith(f"(270 samples) is below {TOP1_FLOOR:g} (the suite's floor)")
    assert float(line.split("reference model ")[1].split()[0]) < 0.2  # chance is 0.1


def test_a_weak_claim_does_not_lower_the_floor(toy_registry: Registry, presets: dict[str, Path],
                                               tmp_path: Path) -> None:
    class WeakClaimZeros(Zeros):
        fidelity = FidelityClaim(top1_agreement=0.05, max_rel_error=10.0)

    failures = check(toy_registry, WeakClaimZeros, presets, tmp_path, **DIGITS)
    assert len(only(failures, "fidelity:")) == 1 and "(the suite's floor)" in only(failures, "fidelity:")[0]


# -- claims at registration -------------------------------------------------------------------------
class Overclaims(Variant):
    """int8 weights, but claims outputs within 0.1 % of the reference's peak."""

    fidelity = FidelityClaim(max_rel_error=1e-3)


class ClaimsTop1(Variant):
    fidelity = FidelityClaim(top1_agreement=0.999)


class ClaimsBitExactWithoutAnnotations(Variant):
    """Rounds weights to int8 in its artifacts but does not say so in the legalized graph: the
    quantized reference is the float model, which the simulation does not reproduce."""

    fidelity = FidelityClaim(bit_exact=True)


class BitExact(Variant):
    """The toy target, whose legalize annotates every weight with the int8 quantization its
    artifacts store: the quantized reference is then exactly what it simulates."""

    fidelity = FidelityClaim(bit_exact=True, max_rel_error=0.05)

    @hookimpl
    def hwmap_legalize(self, graph: Any, target: Any) -> Any:
        legal = plugin.hwmap_legalize(graph, target)
        for node in legal.graph.nodes:
            for slot, a in node.params.items():
                stored = plugin._encode("w", a)  # the toy's own storage: int8 codes, one float32 scale
                if "w.scale" in stored:
                    node.param_quant[slot] = QuantAnnotation(stored["w.scale"], 0.0, 8, True, narrow=True)
        return legal


@pytest.mark.parametrize("kw", [{}, DIGITS])
def test_a_kept_bit_exact_claim_conforms(toy_registry: Registry, presets: dict[str, Path], tmp_path: Path,
                                         kw: dict[str, str]) -> None:
    assert check(toy_registry, BitExact, presets, tmp_path, **kw) == []


def test_claims_not_kept_are_caught(toy_registry: Registry, presets: dict[str, Path], tmp_path: Path) -> None:
    (line,) = check(toy_registry, Overclaims, presets, tmp_path)
    assert line.startswith("fidelity: output 'output' max|sim - ref| / max|ref| = 0.0")
    assert line.endswith(" is above 0.001 (claimed at registration)")


def test_a_top1_claim_above_the_floor_is_checked(toy_registry: Registry, presets: dict[str, Path],
                                                 tmp_path: Path) -> None:
    # on 64 noise images the toy target's int8 weights flip one near-tied arg-max (63/64)
    (line,) = check(toy_registry, ClaimsTop1, presets, tmp_path, model="zoo:digits_cnn")
    assert line == ("fidelity: output 'output' top-1 agreement with the reference model 0.9844 (64 samples) "
                    "is below 0.999 (claimed at registration)")


def test_a_false_bit_exact_claim_is_caught(toy_registry: Registry, presets: dict[str, Path], tmp_path: Path) -> None:
    (line,) = check(toy_registry, ClaimsBitExactWithoutAnnotations, presets, tmp_path)
    assert line.startswith("fidelity: output 'output' differs from the quantized reference (the legalized graph, "
                           "annotations applied) in ")
    assert line.endswith("; bound 0 (bit_exact claimed at registration)")


# -- simulators that ignore their artifacts ------------------------------------------------------------
class RunsTheLegalizedGraph(Variant):
    """Runs ``legalized/`` from the compile directory beside ``artifacts/`` (so its values are
    the reference's): the artifacts are never read."""

    beside = "legalized"

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        return Simulation(run(Graph.load(artifacts.directory.parent / self.beside), inputs), {})


class RunsTheParsedGraph(RunsTheLegalizedGraph):
    beside = "graph"


class CachesTheGraph(Variant):
    """Keeps the graph it last emitted in process memory and simulates that."""

    def __init__(self, presets: dict[str, Path]) -> None:
        super().__init__(presets)
        self.emitted: Graph | None = None

    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        self.emitted = mapping.graph
        return plugin.hwmap_emit(mapping, target, outdir)

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        assert self.emitted is not None
        return Simulation(run(self.emitted, inputs), {})


DELETED = ("artifacts: simulate still succeeds with the 2 emitted files deleted (program.json, weights.npz): "
           "it does not read its artifacts")
SWAPPED = ("artifacts: output 'output' simulated with the artifacts of the same model with other weights swapped "
           "in is not what that model's own directory gives (max |difference| ")


@pytest.mark.parametrize("variant", [RunsTheLegalizedGraph, RunsTheParsedGraph])
def test_a_simulator_reading_the_graph_beside_its_artifacts_is_caught(
        toy_registry: Registry, presets: dict[str, Path], tmp_path: Path, variant: type[Variant]) -> None:
    failures = check(toy_registry, variant, presets, tmp_path)
    assert only(failures, "fidelity:") == []  # its values are right...
    assert DELETED in failures  # ...but not from its artifacts
    (swap,) = only(failures, SWAPPED)
    assert swap.endswith(", bound 0): the simulation is not a function of the artifacts")


def test_a_simulator_caching_the_graph_in_memory_is_caught(toy_registry: Registry, presets: dict[str, Path],
                                                           tmp_path: Path) -> None:
    failures = check(toy_registry, CachesTheGraph, presets, tmp_path)
    # its last emitted graph is the swapped-in model when the swap is simulated, so only
    # the deletion tells; its float values pass the floor
    assert failures == [DELETED]


class ChecksTheArtifactsBelongToTheGraph(Variant):
    """Right: records a digest of the legalized weights in the manifest and refuses, with a
    TargetError naming the mismatch, artifacts whose digest is not that of the graph beside."""

    @staticmethod
    def digest(graph: Graph) -> str:
        import hashlib

        return hashlib.sha256(b"".join(a.tobytes() for _, a in sorted(graph.arrays().items()))).hexdigest()

    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        art = plugin.hwmap_emit(mapping, target, outdir)
        return Artifacts(outdir, art.files, {**art.manifest, "weights": self.digest(mapping.graph)})

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        beside = self.digest(Graph.load(artifacts.directory.parent / "legalized"))
        if artifacts.manifest["weights"] != beside:
            raise TargetError(f"the artifacts hold weights {artifacts.manifest['weights'][:12]}, the compiled graph "
                              f"{beside[:12]}: artifacts of another model", where=str(artifacts.directory))
        return plugin.hwmap_simulate(artifacts, target, inputs)


class LetsOsErrorsEscape(Variant):
    """Reads its weights with numpy before the toy's own reader: a missing file escapes as
    FileNotFoundError instead of an hwmap error naming it."""

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        np.load(artifacts.path("weights.npz")).close()
        return plugin.hwmap_simulate(artifacts, target, inputs)


def test_refusing_artifacts_of_another_model_conforms(toy_registry: Registry, presets: dict[str, Path],
                                                      tmp_path: Path) -> None:
    assert check(toy_registry, ChecksTheArtifactsBelongToTheGraph, presets, tmp_path) == []
    # the suite did swap: the directory it built refuses to simulate
    g = load_model("zoo:chapter_cnn")
    x = np.zeros((1, *g.tensor(g.inputs[0]).shape[1:]), np.float32)
    with pytest.raises(TargetError, match="artifacts of another model"):
        simulate_dir(tmp_path / "check" / "artifacts-swapped", Dataset(x, None, "zeros"))


def test_a_missing_artifact_must_be_an_hwmap_error(toy_registry: Registry, presets: dict[str, Path],
                                                   tmp_path: Path) -> None:
    (line,) = check(toy_registry, LetsOsErrorsEscape, presets, tmp_path)
    assert line.startswith("artifacts: with the emitted files deleted simulate fails with FileNotFoundError: ")
    assert line.endswith(", not an hwmap error naming the missing file")


def test_other_weights_keep_shapes_and_values_but_change_the_model() -> None:
    g = load_model("zoo:digits_cnn")
    h = other_weights(g)
    assert other_weights(g).arrays().keys() == h.arrays().keys()
    for key, a in g.arrays().items():
        b = h.arrays()[key]
        assert b.shape == a.shape and b.dtype == a.dtype
        assert np.array_equal(np.sort(a, axis=None), np.sort(b, axis=None)), key
    assert any(not np.array_equal(a, h.arrays()[k]) for k, a in g.arrays().items())
    assert all(np.array_equal(a, b) for a, b in zip(h.arrays().values(), other_weights(g).arrays().values()))
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    assert not np.allclose(run(g, {g.inputs[0]: x})[g.outputs[0]], run(h, {h.inputs[0]: x})[h.outputs[0]])


# -- presets ---------------------------------------------------------------------------------------
def test_preset_values_without_a_source_are_caught(toy_registry: Registry, presets: dict[str, Path],
                                                   tmp_path: Path) -> None:
    text = presets["default"].read_text()
    for sourced, bare in (('clock_hz = { value = 100e6, source = "assumed: a microcontroller-class clock" }',
                           "clock_hz = 100e6"),
                          ('mac_pj = { value = 0.23, source = "Horowitz, ISSCC 2014, 45 nm: 8-bit multiply 0.2 pJ + '
                           '8-bit add 0.03 pJ" }', "mac_pj = 0.23")):
        assert sourced in text
        text = text.replace(sourced, bare)
    presets["default"].write_text(text)
    # a preset extending it, adding one more bare value: each file is reported once, with its own keys
    (presets["default"].parent / "fast.toml").write_text(
        'extends = "toy_bad:default"\n[hardware]\nmacs_per_cycle = 8\n')
    failures = check(toy_registry, Variant, {**presets, "fast": presets["default"].parent / "fast.toml"}, tmp_path)
    assert failures == [
        "preset toy_bad:default: 2 values set in preset toy_bad:default without a source: energy.mac_pj, "
        "hardware.clock_hz (write key = { value = ..., source = \"...\" })",
        "preset toy_bad:fast: 1 value set in preset toy_bad:fast without a source: hardware.macs_per_cycle "
        "(write key = { value = ..., source = \"...\" })",
    ]


def test_the_toy_target_and_the_unbroken_variant_conform(toy_registry: Registry, presets: dict[str, Path],
                                                         tmp_path: Path) -> None:
    assert check(toy_registry, Variant, presets, tmp_path, **DIGITS) == []
