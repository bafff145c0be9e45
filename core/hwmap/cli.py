"""The ``hwmap`` command line: the commands (the parser and its help texts are in
:mod:`hwmap.cli_parser`).

Exit codes: 0 done, 1 the model does not fit the target (compile), 2 bad input, 3 an
internal error (a bug: set HWMAP_DEBUG=1 for the traceback). Errors are one line on stderr
per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_parser import DEMO_DATA, DEMO_MODEL
from .cli_progress import make_progress
from .errors import HwmapError
from .files import check_output_file, write_atomic, write_text_atomic
from .text import markup_escape, one_line, printable

__all__ = ["main", "COMMANDS", "DEMO_MODEL", "DEMO_DATA"]


# -- helpers ---------------------------------------------------------------------------------
def _stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=max(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def _warn(message: str) -> None:
    print(f"hwmap: warning: {one_line(message)}", file=sys.stderr)


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise HwmapError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise HwmapError(f"--input-shape {text!r}: dimensions must be positive integers")
    return shape


def _options(args: argparse.Namespace) -> Any:
    from .source import ParseOptions

    return ParseOptions(input_shape=_parse_shape(getattr(args, "input_shape", None)), dt=getattr(args, "dt", None))


def _write_output(text: str, path: str | None) -> None:
    if path is None or path == "-":
        sys.stdout.write(printable(text))
    else:
        write_text_atomic(Path(path), text)


def _check_outputs(args: argparse.Namespace, *options: str) -> None:
    """Refuse every output file the command was given (``--output``, ``--plot``, ...) before
    any work: a missing folder is never created, a directory never written over."""
    for name in options:
        value = getattr(args, name, None)
        if value and value != "-":
            check_output_file(value, "--" + name if name != "output" or args.command != "simulate" else "-o")


def _plot_to(path: str, draw: Any) -> None:
    """``draw(tmp_path)`` into a temporary file beside ``path``, renamed into place."""
    write_atomic(Path(path), draw)
    print(one_line(f"wrote {path}"), file=sys.stderr)


def _data(args: argparse.Namespace) -> Any:
    from .data import load_data

    return load_data(args.data) if getattr(args, "data", None) else None


def _check_calibrate(args: argparse.Namespace, data: Any) -> None:
    if args.calibrate is not None and data is None:
        raise HwmapError("--calibrate needs --data: it sets how many of its samples calibrate")


# -- commands ----------------------------------------------------------------------------------
def _preset_descriptions(spec: Any, errors: list[dict[str, str]]) -> dict[str, str | None]:
    """Each preset's own one-line ``description`` (``None`` if it has none); a preset that
    cannot be read is recorded in ``errors``."""
    from .config import read_config
    from .errors import ConfigError

    out: dict[str, str | None] = {}
    for name in sorted(spec.presets):
        try:
            out[name] = read_config(f"{spec.kind}:{name}").description
        except ConfigError as e:
            out[name] = None
            errors.append({"plugin": spec.plugin_name, "error": f"preset {spec.kind}:{name}: {e}"})
    return out


def cmd_targets(args: argparse.Namespace) -> int:
    from .registry import get_registry

    reg = get_registry()
    errors = [{"plugin": e.plugin, "error": e.error} for e in reg.errors]
    rows: list[dict[str, Any]] = [
        {"kind": s.kind, "description": s.description, "plugin": s.plugin_name, "package": s.package,
         "version": s.version, "presets": sorted(s.presets), "preset_descriptions": _preset_descriptions(s, errors),
         "hooks": reg.hooks_of(s.plugin_name)}
        for s in (reg.specs[k] for k in reg.kinds())]
    if args.json:
        print(json.dumps({"targets": rows, "errors": errors}, indent=1))
        return 0
    from rich.table import Table

    table = Table(title="installed hwmap targets")
    for col in ("kind", "package", "version", "presets", "description"):
        table.add_column(col)

    for r in rows:
        table.add_row(*(markup_escape(x) for x in (r["kind"], r["package"], r["version"], ", ".join(r["presets"]),
                                            r["description"])))
    presets = Table(title="presets (use as KIND:PRESET)")
    for col in ("preset", "description"):
        presets.add_column(col)
    for r in rows:
        for name, description in r["preset_descriptions"].items():
            presets.add_row(markup_escape(f"{r['kind']}:{name}"), markup_escape(description or ""))
    con = _stdout_console()
    if rows:
        con.print(table)
        if presets.rows:
            con.print(presets)
    else:
        con.print("no target plugins installed (pip install a package that provides the 'hwmap.targets' entry point)")
    for e in errors:
        con.print(f"[red]load error[/red] {markup_escape(e['plugin'])}: {markup_escape(e['error'])}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    models = [{"name": f"zoo:{m.name}", "input_shape": list(m.input_shape), "description": m.description,
               "data": f"zoo:{m.data}" if m.data else None} for m in zoo.list_models()]
    data = [{"name": f"zoo:{d.name}", "samples": d.samples, "sample_shape": list(d.sample_shape),
             "classes": d.classes, "description": d.description} for d in zoo.list_data_sets()]
    if args.json:
        print(json.dumps({"models": models, "data": data}, indent=1))
        return 0
    lines = [("models:", "", "")]
    lines += [(f"zoo:{m.name}", "×".join(map(str, m.input_shape)), m.description) for m in zoo.list_models()]
    lines += [("data sets:", "", "")]
    lines += [(f"zoo:{d.name}", f"{d.samples} × " + "×".join(map(str, d.sample_shape)),
               f"{d.description} ({d.samples} samples)") for d in zoo.list_data_sets()]
    name_w = max(len(n) for n, shape, _ in lines if shape)
    shape_w = max(len(shape) for _, shape, _ in lines)
    for name, shape, what in lines:
        print(f"  {name:<{name_w}}  {shape:<{shape_w}}  {what}" if shape else name)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .config import default_fallbacks, load_target

    target = load_target(args.config, args.set or [])
    if not args.set:
        for line in default_fallbacks(args.config):
            _warn(f"{args.config}: {line}")
    if args.show:
        sys.stdout.write(printable(show_config(target)))
    else:
        print(one_line(f"{args.config}: valid {target.kind} config {target.name!r}"))
    return 0


def show_config(target: Any) -> str:
    """The effective config as TOML, each value followed by its unit and source."""
    from .tomlwrite import dumps_toml

    constants = target.constants()
    comments = {path: "; ".join(x for x in (a.unit, a.source) if x) for path, a in constants.items()}
    head = {"kind": target.kind, "name": target.name}
    if target.description:
        head["description"] = target.description
    text = f"# effective config of {target.source}: every value with its unit and source\n"
    return text + dumps_toml({**head, **target.config.model_dump(mode="json")}, comments)


def cmd_schema(args: argparse.Namespace) -> int:
    from .config import schema_for

    print(json.dumps(schema_for(args.kind), indent=1, sort_keys=True))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .flow import model_inputs
    from .profile import profile
    from .source import load_model

    _check_outputs(args, "output", "plot")
    options = _options(args)
    options.allow_unknown = not args.strict  # unknown ops become rows without MACs, with a warning
    with make_progress(args.quiet) as progress:
        with progress.stage(f"parsing {args.model}"):
            graph = load_model(args.model, options)
        data = _data(args)
        x = next(iter(model_inputs(graph, data, sequences=True).values())) if data is not None else None
        with progress.stage("profiling"):
            prof = profile(graph, fps=args.fps, act_bits=args.act_bits, input_bits=args.input_bits,
                           weight_bits=args.weight_bits, macs=args.macs, data=x)
    for line in prof.warnings:
        _warn(line)
    if args.plot:
        _plot_to(args.plot, prof.plot)
    if args.json:
        _write_output(json.dumps(prof.to_json(), indent=1, sort_keys=True) + "\n", args.output)
    elif args.csv:
        _write_output(prof.to_csv(), args.output)
    elif not args.plot or args.output:
        _stdout_console().print(prof.table())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .config import load_target
    from .flow import compile_model
    from .report import table
    from .report_detail import layers_table, sensitivity_table

    _check_outputs(args, "plot")
    target = load_target(args.target, args.set or [])
    data = _data(args)
    _check_calibrate(args, data)
    outdir = Path(args.output)
    with make_progress(args.quiet) as progress:
        res = compile_model(args.model, target, outdir, data=data, calibrate=args.calibrate, options=_options(args),
                            progress=progress, sensitivity=args.sensitivity)
    if args.plot:
        from .registry import get_registry

        plotter = getattr(get_registry().owners[target.kind], "plot_mapping", None)
        if plotter is None:
            _warn(f"target {target.kind!r} draws no mapping picture; --plot ignored")
        else:
            _plot_to(args.plot, lambda tmp: plotter(res.mapping, target, tmp))
    con = _stdout_console()
    con.print(table([res.kpis]))
    if res.kpis.layers:
        con.print(layers_table(res.kpis))
    if res.kpis.sensitivity:
        con.print(sensitivity_table(res.kpis))
    print(one_line(f"wrote {outdir}"), file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_data
    from .flow import simulate_dir
    from .graph import save_npz

    _check_outputs(args, "output")
    data = load_data(args.data)
    outdir = Path(args.dir)
    with make_progress(args.quiet) as progress:
        scored = simulate_dir(outdir, data, progress=progress)
    if args.output:
        outputs = {k: np.asarray(v) for k, v in scored.simulation.outputs.items()}
        write_atomic(Path(args.output), lambda tmp: save_npz(tmp, outputs))
    summary = {"fidelity": vars(scored.fidelity), "accuracy": scored.accuracy,
               "reference_accuracy": scored.reference_accuracy, "samples": scored.samples,
               "calibration_samples": 0}
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def _emit_records(records: list[Any], args: argparse.Namespace) -> None:
    from . import report
    from .report_detail import layers_csv, sensitivity_table

    if args.plot:
        _plot_to(args.plot, lambda tmp: report.plot(records, tmp))
    if args.json:
        _write_output(report.to_json(records), args.output)
    elif args.csv:
        _write_output(layers_csv(records) if args.layers else report.to_csv(records), args.output)
    elif args.markdown:
        _write_output(report.to_markdown(records), args.output)
    else:
        con = _stdout_console()
        con.print(report.table(records))
        if args.layers:
            from .report_detail import layers_table

            for r in records:
                if r.layers:
                    con.print(layers_table(r))
        for r in records:
            if r.sensitivity:
                con.print(sensitivity_table(r))


def _default_targets() -> list[str]:
    from .registry import get_registry

    reg = get_registry()
    return [f"{k}:default" for k in reg.kinds() if "default" in reg.specs[k].presets]


def cmd_compare(args: argparse.Namespace) -> int:
    from .config import load_target
    from .flow import compare

    _check_outputs(args, "output", "plot")
    refs = args.configs or _default_targets()
    if not refs:
        raise HwmapError("no target plugins installed and no CONFIG given: nothing to compare")
    targets = [load_target(r, args.set or []) for r in refs]
    data = _data(args)
    _check_calibrate(args, data)
    with make_progress(args.quiet) as progress:
        records = compare(args.model, targets, data=data, calibrate=args.calibrate, options=_options(args),
                          progress=progress, sensitivity=args.sensitivity)
    _emit_records(records, args)
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from .explore import explore
    from .explore.results import front_table, to_csv, to_json

    _check_outputs(args, "plot")
    plot = Path(args.plot) if args.plot else None
    inside = plot.name if plot is not None and args.output and plot.resolve().parent == Path(args.output).resolve() \
        else None
    with make_progress(args.quiet) as progress:
        run = explore(args.model, args.space, data=args.data, calibrate=args.calibrate, trials=args.trials,
                      timeout=args.timeout, workers=args.workers, scheduler=args.scheduler, storage=args.storage,
                      outdir=args.output, options=_options(args), plot_name=inside, quiet=args.quiet,
                      progress=progress, overrides=args.set or [])
    results, summary = run.results, run.summary
    if summary.recovered:
        _warn(f"re-ran the configs of trial(s) {', '.join(map(str, summary.recovered))}, interrupted by a "
              "previous run")
    if summary.timed_out:
        _warn(f"--timeout {args.timeout:g} s passed: the study holds {len(results.rows)} of {run.total} trials; "
              "run the same command again to go on")
    elif summary.exhausted:
        _warn("the sampler kept proposing configs the study already holds; stopped early")
    if plot is not None:
        from .explore.plot import plot as draw

        _plot_to(str(plot), lambda tmp: draw(results, tmp))
    if args.json:
        sys.stdout.write(to_json(results))
    elif args.csv:
        sys.stdout.write(printable(to_csv(results)))
    else:
        _stdout_console().print(front_table(results))
    print(one_line(f"study {results.study} in {results.storage}: {len(results.rows)} trials"
                   + "".join(f"; wrote {p}" for p in run.written)), file=sys.stderr)
    return 0


def _graph_dir_foreign(outdir: Path) -> list[str]:
    """What in an existing ``convert -o`` directory is not a saved graph's (empty: it may be replaced)."""
    return [e for e in sorted(os.listdir(outdir)) if e not in ("graph.json", "params.npz")]


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import conversion_config, convert_and_score, parse_timesteps
    from .data import load_data
    from .files import check_output_dir, commit_dir, remove_stale, temp_dir
    from .passes.snn_convert import ENCODINGS
    from .source import load_model

    outdir = check_output_dir(args.output, _graph_dir_foreign) if args.output else None
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
            graph = load_model(args.model, _options(args))
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
        _warn(f"{args.nir}: NIR cannot say " + "; ".join(lost))
        print(one_line(f"wrote {args.nir}"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True))
        return 0
    _print_conversion(report)
    return 0


def _print_conversion(report: Any) -> None:
    from rich.table import Table

    from .text import rich_text

    con = _stdout_console()
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


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import load_target
    from .data import load_data
    from .flow import compare, split_data
    from .profile import profile
    from .source import load_model

    _check_outputs(args, "output", "plot")
    refs = _default_targets()
    con = _stdout_console()
    with make_progress(args.quiet) as progress:
        with progress.stage(f"parsing {DEMO_MODEL}"):
            graph = load_model(DEMO_MODEL)
        data = load_data(DEMO_DATA)
        if not refs:
            from .flow import model_inputs

            with progress.stage("profiling"):
                prof = profile(graph, data=next(iter(model_inputs(graph, data).values())))
        else:
            records = compare(graph, [load_target(r) for r in refs], data=data, progress=progress)
    if not refs:
        con.print("no target plugins are installed: profiling the demo model instead "
                  f"({DEMO_MODEL} on {DEMO_DATA})")
        con.print(prof.table())
        return 0
    calib, scored = split_data(data)
    con.print(f"{DEMO_MODEL} with {DEMO_DATA} on every installed target's default preset: the first "
              f"{len(calib) if calib is not None else 0} of its {len(data)} held-out samples calibrate, "
              f"the other {len(scored)} are scored")
    _emit_records(records, args)
    return 0


#: The function each subcommand of :func:`hwmap.cli_parser.build_parser` runs, by name.
COMMANDS = {"targets": cmd_targets, "zoo": cmd_zoo, "check": cmd_check, "schema": cmd_schema, "profile": cmd_profile,
            "compile": cmd_compile, "simulate": cmd_simulate, "compare": cmd_compare, "convert": cmd_convert,
            "explore": cmd_explore, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_parser import build_parser, parse

    args = parse(build_parser(), argv)
    previous = signal.signal(signal.SIGTERM, _terminated) if _main_thread() else None
    try:
        if getattr(args, "max_memory", None):
            from .limits import parse_size, set_max_memory

            set_max_memory(parse_size(args.max_memory))
        return int(COMMANDS[args.command](args) or 0)
    except HwmapError as e:
        for line in e.lines():
            print(f"hwmap: error: {one_line(line)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # work in progress was removed on the way out (finally blocks)
        print("hwmap: terminated" if isinstance(e, _Terminated) else "hwmap: interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT)
    except BrokenPipeError:
        return 0
    except OSError as e:  # an output path that cannot be written (-o, --output, --plot): bad input
        if os.environ.get("HWMAP_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(one_line(f"hwmap: error: {where}{e.strerror or e}"), file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("HWMAP_DEBUG"):
            raise
        msg = one_line(f"{type(e).__name__}: {e}")
        print(f"hwmap: internal error: {msg} (set HWMAP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        from .limits import set_max_memory

        set_max_memory(None)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` removes what it was building."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
