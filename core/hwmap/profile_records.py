"""The profiler's records: a :class:`Profile` of per-layer :class:`LayerProfile` rows, the
network's :class:`InputProfile` stream, :class:`ProfileTotals` and the
:class:`ProfileSettings` it was computed with, and the profile as JSON, CSV, a table or a
plot. What each field counts is :mod:`hwmap.profile`'s module docstring.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import GraphError
from .profile_table import summary as _summary
from .profile_table import table as _table

__all__ = ["Profile", "LayerProfile", "InputProfile", "ProfileTotals", "ProfileSettings"]


@dataclass
class LayerProfile:
    """One row: a layer as the chapter counts them (see the module docstring).

    ``index`` is 1-based (the chapter's layer numbers); ``kind`` is ``conv``, ``depthwise``,
    ``pointwise``, ``fc``, ``matmul``, ``unknown`` or the head op's name in lower case;
    ``nodes`` the graph nodes of the row, head first; ``post_ops`` the ops of the nodes that
    joined it. ``unknown`` rows (a node hwmap cannot count, ``note`` says why) hold ``None``
    for what was not counted (see the module docstring).
    """

    index: int
    name: str
    op: str
    kind: str
    nodes: list[str]
    post_ops: list[str]
    output: str
    output_shape: list[int] | None
    stride: list[int] | None
    weights: int | None
    params: int | None
    macs: int | None
    input_elements: int | None
    output_elements: int | None
    data_volume: int | None
    data_volume_rel: float | None
    act_bits: int
    bandwidth_bps: float | None
    weight_bits: int
    weight_bytes: int | None
    activation_sparsity: float | None = None
    temporal_sparsity: float | None = None
    unknown: bool = False
    note: str | None = None
    #: How many times per inference the row runs: an encoded graph's time steps for a row
    #: computed per step (its macs, data volume and bandwidth count them all), else 1.
    steps: int = 1
    #: The row's input tensor (the head's first dynamic input) and, with data, its spatial
    #: and temporal sparsity.
    input: str = ""
    input_sparsity: float | None = None
    input_temporal_sparsity: float | None = None
    #: With data, the compute node's MACs (per inference) whose activation operand is zero
    #: (what a zero-skipping implementation would not do) or unchanged from the previous
    #: frame (what a change-driven, delta implementation would not do); ``None`` for rows
    #: without a Conv/Gemm/MatMul compute node.
    zero_operand_macs: int | None = None
    unchanged_operand_macs: int | None = None


@dataclass
class InputProfile:
    """The network input stream: ``elements`` per sample over all graph inputs, at ``bits``."""

    names: list[str]
    shapes: list[list[int]]
    elements: int
    bits: int
    bandwidth_bps: float


@dataclass
class ProfileTotals:
    """Whole-network figures; ``peak_*`` name the row where the maximum occurs (first on ties).

    Sums and peaks are over the rows that are counted; ``uncounted_nodes`` is how many are
    not (unknown rows) and ``unknown_ops`` the ops hwmap does not know among them."""

    layers: int
    params: int
    weights: int
    weight_bytes: int
    macs: int
    macs_per_s: float
    peak_bandwidth_layer: str
    peak_bandwidth_bps: float
    peak_data_volume_layer: str
    peak_data_volume: int
    peak_params_layer: str
    peak_params: int
    activation_sparsity: float | None = None
    temporal_sparsity: float | None = None
    uncounted_nodes: int = 0
    unknown_ops: list[str] = field(default_factory=list)
    zero_operand_macs: int | None = None
    unchanged_operand_macs: int | None = None


@dataclass
class ProfileSettings:
    """What the profile was computed with; ``samples`` is how many data samples ran."""

    model: str
    fps: float
    act_bits: int
    input_bits: int
    weight_bits: int
    macs: str
    samples: int | None = None


@dataclass
class Profile:
    """A network profile: per-layer ``rows``, the ``input`` stream, ``totals``, ``settings``,
    and ``warnings``: one line each about what could not be counted (empty when all was)."""

    rows: list[LayerProfile]
    input: InputProfile
    totals: ProfileTotals
    settings: ProfileSettings
    warnings: list[str] = field(default_factory=list)

    def row(self, name: str) -> LayerProfile:
        """The row named ``name`` (a compute node's name, or the head node of its row)."""
        found = next((r for r in self.rows if r.name == name), None)
        if found is None:
            raise GraphError(f"profile of {self.settings.model!r} has no layer {name!r}")
        return found

    def to_json(self) -> dict[str, Any]:
        """Everything, as plain JSON types in a fixed key order (same profile, same dict)."""
        return {
            "format": "hwmap.profile",
            "settings": asdict(self.settings),
            "input": asdict(self.input),
            "totals": asdict(self.totals),
            "layers": [asdict(r) for r in self.rows],
            "warnings": list(self.warnings),
        }

    def to_csv(self) -> str:
        """One line per row, the fields of :class:`LayerProfile` as columns (lists joined by ``;``)."""
        names = [f.name for f in fields(LayerProfile)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in self.rows:
            w.writerow([_csv_cell(getattr(r, n)) for n in names])
        return buf.getvalue()

    def table(self) -> Any:
        """A ``rich.table.Table`` of the rows, in human-readable units, totals as caption
        (:func:`hwmap.profile_table.table`)."""
        return _table(self)

    def summary(self) -> str:
        """The totals in one line of human-readable units."""
        return _summary(self)

    def render(self, console: Any) -> None:
        """Print :meth:`table` on a ``rich.console.Console``."""
        console.print(self.table())

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of parameters, normalized data volume and bandwidth per layer
        (Figs. 3.16-3.18); see :func:`hwmap.profile_plot.plot_profile`."""
        from .profile_plot import plot_profile

        return plot_profile(self, Path(path))


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(str(x) for x in v)
    return v
