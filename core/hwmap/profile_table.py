"""The profiler in human-readable form: a :class:`hwmap.profile.Profile` as a rich table,
its totals as one line, and the SI and bit-rate units both print in.

The machine-readable forms (``Profile.to_json``, ``Profile.to_csv``) stay with the records in
:mod:`hwmap.profile`; rich is imported here, on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .text import markup_escape

if TYPE_CHECKING:
    from .profile_records import Profile

__all__ = ["table", "summary", "si", "bitrate"]


def table(prof: "Profile") -> Any:
    """A ``rich.table.Table`` of the rows, in human-readable units, totals as caption.

    What an unknown row does not count is shown as ``?``; its kind cell names the op."""
    from rich.table import Table

    measured = prof.settings.samples is not None
    t = Table(title=markup_escape(f"profile of {prof.settings.model} ({prof.settings.macs} MACs, "
                                  f"{_num(prof.settings.fps)} FPS, {prof.settings.act_bits}-bit activations)"),
              caption=markup_escape(summary(prof)))
    for col in ("#", "layer", "kind", "stride", "params", "MACs", "output", "data vol ×in", "bandwidth"):
        t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    if measured:
        t.add_column("act. sparsity", justify="right")
        t.add_column("temp. sparsity", justify="right")
        t.add_column("in. sparsity", justify="right")
        t.add_column("zero-operand MACs", justify="right")
    for r in prof.rows:
        cells = [str(r.index), markup_escape(r.name), f"unknown ({markup_escape(r.op)})" if r.unknown else r.kind,
                 "×".join(map(str, r.stride)) if r.stride else "", _known(r.params, si), _known(r.macs, si),
                 _known(r.output_elements, si), _known(r.data_volume_rel, lambda v: f"{v:.3g}"),
                 _known(r.bandwidth_bps, bitrate)]
        if measured:
            cells += [_pct(r.activation_sparsity), _pct(r.temporal_sparsity), _pct(r.input_sparsity),
                      "" if r.zero_operand_macs is None else si(r.zero_operand_macs)]
        t.add_row(*cells, style="yellow" if r.unknown else None)
    return t


def _known(value: Any, fmt: Any) -> str:
    """``fmt(value)``, or ``?`` for what was not counted."""
    return "?" if value is None else str(fmt(value))


def summary(prof: "Profile") -> str:
    """The totals in one line of human-readable units."""
    tt = prof.totals
    s = prof.settings
    text = (f"{tt.layers} layers · params {si(tt.params)} (weights {si(tt.weights)}, "
            f"{si(tt.weight_bytes, 'B')} at {s.weight_bits} bits) · MACs {si(tt.macs)} "
            f"({si(tt.macs_per_s, 'MAC/s')} at {_num(s.fps)} FPS) · input {bitrate(prof.input.bandwidth_bps)} · "
            f"peak bandwidth {tt.peak_bandwidth_layer} {bitrate(tt.peak_bandwidth_bps)} · "
            f"peak data volume {tt.peak_data_volume_layer} {si(tt.peak_data_volume)} elements")
    steps = max((r.steps for r in prof.rows), default=1)
    if steps > 1:
        text += f" · {steps} time steps per inference (counted in MACs, data volume and bandwidth)"
    if tt.activation_sparsity is not None:
        text += f" · activation sparsity {_pct(tt.activation_sparsity)} over {s.samples} samples"
    if tt.temporal_sparsity is not None:
        text += f", temporal {_pct(tt.temporal_sparsity)}"
    if tt.zero_operand_macs is not None and tt.macs:
        text += (f" · zero-skipping would save {si(tt.zero_operand_macs)} MACs "
                 f"({_pct(tt.zero_operand_macs / tt.macs)})")
        if tt.unchanged_operand_macs is not None:
            text += f", change-driven {si(tt.unchanged_operand_macs)} ({_pct(tt.unchanged_operand_macs / tt.macs)})"
    if tt.uncounted_nodes:
        ops = f"; ops hwmap does not know: {', '.join(tt.unknown_ops)}" if tt.unknown_ops else ""
        text += f" · {tt.uncounted_nodes} node(s) not counted (? in the table{ops})"
    return text


# -- human-readable units ----------------------------------------------------------------
_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(x: float, unit: str = "") -> str:
    """``x`` with an SI prefix, then ``unit``: si(4231976) -> '4.23 M', si(928, 'B') -> '928 B'."""
    for scale, p in _PREFIXES:
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.3g} {p}{unit}" if abs(v) < 100 else f"{v:.1f} {p}{unit}"
    text = f"{x:.3g}" if isinstance(x, float) else str(x)
    return f"{text} {unit}" if unit else text


def bitrate(bps: float) -> str:
    """A bit rate in kbit/s, Mbit/s or Gbit/s: 663552000 -> '663.6 Mbit/s'."""
    for scale, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if bps >= scale:
            return f"{bps / scale:.2f} {p}bit/s" if p == "G" else f"{bps / scale:.1f} {p}bit/s"
    return f"{bps:.0f} bit/s"


def _num(x: float) -> str:
    return f"{x:g}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"
