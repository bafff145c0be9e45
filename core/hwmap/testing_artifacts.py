"""Checks 3 and 6 of the conformance suite (:mod:`hwmap.testing`), on the artifacts a compile
wrote: two compiles are byte-identical, ``artifacts.json`` lists exactly the files written,
and the simulation is a function of the artifacts (it fails without them, and follows the
artifacts of the same model with :func:`other_weights` swapped in).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .config import load_target
from .data import Dataset
from .errors import HwmapError, describe_error
from .graph import Graph
from .target import Artifacts, Simulation

__all__ = ["simulate", "other_weights", "check_determinism", "check_manifest", "check_artifacts_needed",
           "check_artifacts_swapped"]


def simulate(outdir: Path, data: Dataset) -> Simulation:
    from .flow import simulate_dir

    return simulate_dir(outdir, data).simulation



# -- 6. the simulation is a function of the artifacts ---------------------------------------------------
def other_weights(graph: Graph, seed: int = 0) -> Graph:
    """The same architecture with other weights: the values of every floating parameter
    (ndim >= 1) of every compute node (fused ones included) shuffled by a seeded generator.

    Shuffling keeps each tensor's shape, value distribution and scale, so the copy compiles
    wherever the original does; with a per-axis ``param_quant`` annotation the values are
    shuffled within each slice along its axis, so they stay on their slice's grid.
    """
    from .ops import get_op

    rng = np.random.default_rng(seed)
    g = graph.copy()
    for node in g.nodes:
        for sub in node.walk():
            if get_op(sub.op, where=f"node {sub.name!r}").category != "compute":
                continue
            for slot in sorted(sub.params):
                a = sub.params[slot]
                if a.ndim < 1 or not np.issubdtype(a.dtype, np.floating):
                    continue
                q = sub.param_quant.get(slot)
                axis = q.axis % a.ndim if q is not None and q.axis is not None else None
                lead = np.moveaxis(a, axis, 0) if axis is not None else a.reshape(1, -1)
                shuffled = np.stack([rng.permutation(row.ravel()).reshape(row.shape) for row in lead])
                sub.params[slot] = np.ascontiguousarray(
                    np.moveaxis(shuffled, 0, axis) if axis is not None else shuffled.reshape(a.shape))
    return g


def check_artifacts_needed(moved: Path, probe: Dataset, tmp_path: Path) -> list[str]:
    """With every file ``emit`` listed deleted (``artifacts.json`` kept), simulate must fail
    with an :class:`HwmapError`: a simulator that still succeeds does not read them."""
    gone = tmp_path / "artifacts-deleted"
    shutil.rmtree(gone, ignore_errors=True)
    shutil.copytree(moved, gone)
    try:
        listed = [str(f) for f in Artifacts.read(gone / "artifacts").files]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # the manifest check reports an unreadable artifacts.json
    if not listed:
        return []  # the manifest check reports an empty list
    for f in listed:
        (gone / "artifacts" / f).unlink(missing_ok=True)
    try:
        simulate(gone, probe)
    except HwmapError:
        return []
    except Exception as e:
        return [f"artifacts: with the emitted files deleted simulate fails with {describe_error(e)}, "
                "not an hwmap error naming the missing file"]
    return [f"artifacts: simulate still succeeds with the {len(listed)} emitted files deleted "
            f"({', '.join(listed)}): it does not read its artifacts"]


def check_artifacts_swapped(moved: Path, graph: Graph, probe: Dataset, ref: str, tmp_path: Path,
                            calibrate: bool) -> list[str]:
    """Simulating ``moved`` with the artifacts of the same model with other weights (compiled
    into its own directory) swapped in must give exactly what that directory gives, or be
    refused with an :class:`HwmapError`."""
    from .compiledir import stamp
    from .flow import compile_model

    other = tmp_path / "other-weights"
    shutil.rmtree(other, ignore_errors=True)
    try:
        compile_model(other_weights(graph), load_target(ref), other, data=probe if calibrate else None)
        expected = simulate(other, probe)
    except Exception as e:
        return [f"artifacts: the same model with other weights does not compile and simulate on {ref}: "
                f"{describe_error(e)}"]
    swapped = tmp_path / "artifacts-swapped"
    shutil.rmtree(swapped, ignore_errors=True)
    shutil.copytree(moved, swapped)
    shutil.rmtree(swapped / "artifacts")
    shutil.copytree(other / "artifacts", swapped / "artifacts")
    stamp(swapped)  # past the core's digest check (it would refuse the swap): the target's simulator is judged
    try:
        got = simulate(swapped, probe)
    except HwmapError:
        return []  # refused: the target checks that the artifacts belong to the graph
    except Exception as e:
        return [f"artifacts: with another model's artifacts swapped in simulate fails with {describe_error(e)}, "
                "not an hwmap error naming the mismatch"]
    out = []
    for name in graph.outputs:
        a, b = got.outputs.get(name), expected.outputs.get(name)
        if a is not None and b is not None and np.shape(a) == np.shape(b):
            if np.array_equal(a, b):
                continue
            worst = f"max |difference| {float(np.max(np.abs(np.asarray(a, np.float64) - b))):.4g}"
        else:
            worst = "output missing or of another shape"
        out.append(f"artifacts: output {name!r} simulated with the artifacts of the same model with other weights "
                   f"swapped in is not what that model's own directory gives ({worst}, bound 0): the simulation "
                   "is not a function of the artifacts")
    return out


def check_determinism(a: Path, b: Path) -> list[str]:
    out = []
    files_a = _files(a / "artifacts")
    files_b = _files(b / "artifacts")
    if files_a != files_b:
        out.append(f"determinism: two compiles wrote different artifact files: "
                   f"{sorted(set(files_a) ^ set(files_b))}")
    for rel in sorted(set(files_a) & set(files_b)):
        if (a / "artifacts" / rel).read_bytes() != (b / "artifacts" / rel).read_bytes():
            out.append(f"determinism: artifacts/{rel} differs between two compiles of the same model")
    for rel in ("kpis.json", "mapping.json"):
        if (a / rel).exists() and (a / rel).read_bytes() != (b / rel).read_bytes():
            out.append(f"determinism: {rel} differs between two compiles of the same model")
    return out


def check_manifest(art: Path) -> list[str]:
    manifest = art / "artifacts.json"
    if not manifest.exists():
        return ["artifacts: artifacts/artifacts.json is missing"]
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"artifacts: artifacts.json is not readable: {describe_error(e)}"]
    if not isinstance(listed, list) or not listed:
        return ["artifacts: emit returned no files"]
    out = []
    missing = [f for f in listed if not (art / str(f)).is_file()]
    if missing:
        out.append(f"artifacts: listed but not written: {', '.join(map(str, missing))}")
    unlisted = sorted(set(_files(art)) - {str(f) for f in listed} - {"artifacts.json"})
    if unlisted:
        out.append(f"artifacts: written but not listed by emit: {', '.join(unlisted)}")
    if len(set(map(str, listed))) != len(listed):
        out.append("artifacts: a file is listed twice")
    return out



def _files(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
