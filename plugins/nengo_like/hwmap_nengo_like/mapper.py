"""Mapping a network description onto the substrate's cores, and the design-rule check.

Every population is cut into consecutive blocks of neurons, one block per core, as
nengo-loihi splits an ensemble's blocks: a block grows while the core holds it, that is while
it has at most ``neurons_per_core`` neurons, its neurons' incoming synapses (the non-zero
weights into them; a decoded connection reaches every neuron through the encoders, so each
source dimension counts once per neuron) fit ``synapses_per_core``, and the distinct
presynaptic sources they read (input axons) fit ``axons_per_core``. Cores are numbered in
population order. Hosts (input, nodes, readouts, probes) run on the host computer and occupy
no core.

The design-rule check names every violation at once: a single neuron needing more synapses
or axons than a core has (``synapse_memory``, ``axons``, with the population and the
neuron), and more cores needed than the substrate has (``cores``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmap import Diagnostic, Graph, Mapping

from .description import Description
from .hardware import NengoLikeConfig, SubstrateConfig

__all__ = ["NEFMapping", "place", "map_description"]


class NEFMapping(Mapping):
    """The description with its populations placed on cores, and what the check found."""

    def __init__(self, graph: Graph | None, description: Description, diagnostics: list[Diagnostic],
                 notes: list[str] | None = None, per_core: list[dict[str, Any]] | None = None) -> None:
        super().__init__(graph if graph is not None else Graph(description.name, [], [], [], {}))
        self.description = description
        self.diagnostics = diagnostics
        self.notes = notes or []
        self.per_core = per_core or []

    @property
    def violations(self) -> list[Diagnostic]:
        return [x for x in self.diagnostics if x.severity == "error"]

    @property
    def fits(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        d = self.description
        return {"graph": d.name, "dt": d.dt, "steps": d.steps,
                "populations": [{"name": p.name, "neurons": p.n, "neuron": p.neuron["type"], "cores": p.cores}
                                for p in d.populations],
                "cores": self.per_core, "violations": [str(v) for v in self.violations], "notes": self.notes}


def _incoming(d: Description, name: str) -> list[np.ndarray]:
    """Per link into population ``name``: a boolean ``neurons × sources`` of the synapses."""
    p = d.population(name)
    mats = []
    for link in d.links:
        if link.post != name:
            continue
        nz = link.weights != 0
        if link.port == "decoded":
            used = nz.any(axis=0)
            nz = np.broadcast_to(used[None, :] & (np.abs(p.encoders) > 0).any(axis=1)[:, None], (p.n, nz.shape[1]))
        mats.append(nz)
    return mats


def place(d: Description, sub: SubstrateConfig) -> tuple[list[Diagnostic], list[dict[str, Any]]]:
    """Assign cores to every population of ``d`` (in place); the violations and per-core use."""
    diags: list[Diagnostic] = []
    per_core: list[dict[str, Any]] = []
    core = 0
    for p in d.populations:
        mats = _incoming(d, p.name)
        syn_per_neuron = np.zeros(p.n, dtype=np.int64)
        for m in mats:
            syn_per_neuron += m.sum(axis=1)
        axons_per_neuron = syn_per_neuron if not mats else sum(m.sum(axis=1) for m in mats)
        bad_syn = np.flatnonzero(syn_per_neuron > sub.synapses_per_core)
        bad_ax = np.flatnonzero(np.asarray(axons_per_neuron) > sub.axons_per_core)
        if bad_syn.size:
            diags.append(Diagnostic("synapse_memory", f"population {p.name!r}: neuron {int(bad_syn[0])} needs "
                                    f"{int(syn_per_neuron[bad_syn[0]])} synapses, a core holds "
                                    f"{sub.synapses_per_core} ({bad_syn.size} neurons too large)", p.label or p.name))
        if bad_ax.size:
            diags.append(Diagnostic("axons", f"population {p.name!r}: neuron {int(bad_ax[0])} reads "
                                    f"{int(np.asarray(axons_per_neuron)[bad_ax[0]])} sources, a core takes "
                                    f"{sub.axons_per_core} ({bad_ax.size} neurons too large)", p.label or p.name))
        if bad_syn.size or bad_ax.size:
            p.cores = []
            continue
        blocks: list[list[int]] = []
        start = 0
        while start < p.n:
            used = [np.zeros(m.shape[1], dtype=bool) for m in mats]
            syn = 0
            stop = start
            while stop < p.n and stop - start < sub.neurons_per_core:
                s = int(syn_per_neuron[stop])
                new = [u | m[stop] for u, m in zip(used, mats)]
                if stop > start and (syn + s > sub.synapses_per_core or
                                     sum(int(u.sum()) for u in new) > sub.axons_per_core):
                    break
                used, syn, stop = new, syn + s, stop + 1
            blocks.append([core, start, stop])
            per_core.append({"core": core, "population": p.name, "neurons": stop - start, "synapses": syn,
                             "axons": sum(int(u.sum()) for u in used)})
            core += 1
            start = stop
        p.cores = blocks
    if core > sub.cores:
        diags.append(Diagnostic("cores", f"the network needs {core} cores, the substrate has {sub.cores}"))
    return diags, per_core


def map_description(d: Description, target: Any, graph: Graph | None = None,
                    notes: list[str] | None = None) -> NEFMapping:
    cfg = target.config_as(NengoLikeConfig)
    diags, per_core = place(d, cfg.substrate)
    return NEFMapping(graph, d, diags, notes, per_core)
