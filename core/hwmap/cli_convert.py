"""``hwmap convert``: an ANN converted to integrate-and-fire neurons and scored at each time
step count and encoding (the scoring is :mod:`hwmap.convert`'s); the network saved and
exported to NIR on request, the scores printed (run by :func:`hwmap.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli_io import parse_options, stdout_console, warn
from .cli_progress import make_progress
from .errors import HwmapError
from .files import check_output_file
from .text import markup_escape, one_line

__all__ = ["cmd_convert"]


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import conversion_config, convert_and_score, parse_timesteps
    from .data import load_data
    from .files import check_output_dir, commit_dir, remove_stale, temp_dir
    from .passes.snn_convert import ENCODINGS
    from .source import load_model

    outdir = check_output_dir(args.output) if args.output else None
    if args.nir:
        check_output_file(args.nir, "--nir")
    timesteps = parse_timesteps(args.timesteps)
    encodings = list(dict.fromkeys(e.strip() for e in args.encoding.split(",")))
    for e in encodings:
        if e not in ENCODINGS:
            raise HwmapError(f"--encoding {e!r}: must be one of {', '.join(ENCODINGS)}")
    config = conversion_config(args.set or [], timesteps=None, encoding=None)
    data = load_data(args.data)
    with make_progress(args.quiet) as progress:
        with progress.stage(f"parsing {args.model}"):
            graph = load_model(args.model, parse_options(args))
        report = convert_and_score(graph, data, timesteps, encodings, config, calibrate=args.calibrate,
                                   model=args.model, progress=progress)
    snn = report.conversion.graph
    if outdir is not None:
        remove_stale(outdir.parent)
        tmp = temp_dir(outdir.parent)
        try:
            snn.save(tmp)
            commit_dir(tmp, outdir)
        finally:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        print(one_line(f"wrote {outdir} (the {report.conversion.config.encoding} network at "
                       f"T = {report.conversion.config.timesteps})"), file=sys.stderr)
    if args.nir:
        from .snn_nir import write_nir

        lost = write_nir(snn, Path(args.nir))
        warn(f"{args.nir}: NIR cannot say " + "; ".join(lost))
        print(one_line(f"wrote {args.nir}"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True))
        return 0
    _print_conversion(report)
    return 0


def _print_conversion(report: Any) -> None:
    from rich.table import Table

    from .text import rich_text

    con = stdout_console()
    cfg, conv = report.config, report.conversion
    ann = f"{report.ann_accuracy:.2%}" if report.ann_accuracy is not None else "n/a (no labels)"
    con.print(rich_text(f"{report.model} converted to integrate-and-fire neurons: the first {report.calibration_samples} "
                        f"samples of {report.data} calibrate, the other {report.scored_samples} are scored; "
                        f"the ANN's accuracy on them is {ann}"))
    pct = "auto (chosen per run on the calibration samples)" if cfg.percentile == "auto" else f"{cfg.percentile:g}"
    con.print(rich_text(f"settings: {cfg.normalization}-wise scales at percentile {pct} of the non-zero "
                        f"activations, readout {cfg.readout}, reset by subtraction, v_init = threshold/2"))
    table = Table(title="converted network on the scored samples")
    for col in ("T", "encoding", "accuracy", "vs ANN", "top-1 agreement", "rel. error", "spikes/inference"):
        table.add_column(col, justify="left" if col == "encoding" else "right")
    for r in report.runs:
        delta = (f"{100 * (r.accuracy - report.ann_accuracy):+.2f} pts"
                 if r.accuracy is not None and report.ann_accuracy is not None else "")
        table.add_row(str(r.timesteps), r.encoding, f"{r.accuracy:.2%}" if r.accuracy is not None else "n/a", delta,
                      f"{r.agreement:.2%}" if r.agreement is not None else "n/a", f"{r.rel_rms_error:.3f}",
                      f"{r.spikes_per_inference:,.0f}")
    con.print(table)
    scales = Table(title=f"scales λ of the {conv.config.encoding} network at T = {conv.config.timesteps} "
                         f"(percentile {conv.percentile:g})")
    for col in ("layer", "λ", "channels", "active"):
        scales.add_column(col, justify="left" if col == "layer" else "right")
    for s in conv.scales:
        lam = f"{s.low:.4g}" if s.low == s.high else f"{s.low:.4g} – {s.high:.4g}"
        scales.add_row(markup_escape(s.node), lam, str(len(s.scales)), f"{s.active / max(s.total, 1):.1%}")
    con.print(scales)
    for note in report.notes:
        con.print(rich_text(f"note: {note}"))
