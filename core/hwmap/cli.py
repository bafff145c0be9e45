"""The ``hwmap`` command line: :func:`main` and the commands that run a model (``profile``,
``compile``, ``simulate``, ``compare``, ``explore``, ``demo``). The parser and its help texts
are in :mod:`hwmap.cli_parser`; the commands about what is installed and what a config says
in :mod:`hwmap.cli_info`; ``convert`` in :mod:`hwmap.cli_convert`; what they share (options,
console, output files) in :mod:`hwmap.cli_io`.

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

from .cli_convert import cmd_convert
from .cli_info import cmd_check, cmd_schema, cmd_targets, cmd_zoo, show_config
from .cli_io import check_calibrate, check_outputs, data_arg, parse_options, plot_to, stdout_console, warn, write_output
from .cli_parser import DEMO_DATA, DEMO_MODEL
from .cli_progress import make_progress
from .errors import HwmapError
from .files import write_atomic
from .text import one_line, printable

__all__ = ["main", "COMMANDS", "DEMO_MODEL", "DEMO_DATA", "show_config"]


# -- the commands that run a model -------------------------------------------------------------
def cmd_profile(args: argparse.Namespace) -> int:
    from .flow import model_inputs
    from .profile import profile
    from .source import load_model

    check_outputs(args, "output", "plot")
    options = parse_options(args)
    options.allow_unknown = not args.strict  # unknown ops become rows without MACs, with a warning
    with make_progress(args.quiet) as progress:
        with progress.stage(f"parsing {args.model}"):
            graph = load_model(args.model, options)
        data = data_arg(args)
        x = next(iter(model_inputs(graph, data, sequences=True).values())) if data is not None else None
        with progress.stage("profiling"):
            prof = profile(graph, fps=args.fps, act_bits=args.act_bits, input_bits=args.input_bits,
                           weight_bits=args.weight_bits, macs=args.macs, data=x)
    for line in prof.warnings:
        warn(line)
    if args.plot:
        plot_to(args.plot, prof.plot)
    if args.json:
        write_output(json.dumps(prof.to_json(), indent=1, sort_keys=True) + "\n", args.output)
    elif args.csv:
        write_output(prof.to_csv(), args.output)
    elif not args.plot or args.output:
        stdout_console().print(prof.table())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .config import load_target
    from .flow import compile_model
    from .report import table
    from .report_detail import layers_table, sensitivity_table

    check_outputs(args, "plot")
    target = load_target(args.target, args.set or [])
    data = data_arg(args)
    check_calibrate(args, data)
    outdir = Path(args.output)
    with make_progress(args.quiet) as progress:
        res = compile_model(args.model, target, outdir, data=data, calibrate=args.calibrate,
                            options=parse_options(args), progress=progress, sensitivity=args.sensitivity)
    if args.plot:
        from .registry import get_registry

        plotter = getattr(get_registry().owners[target.kind], "plot_mapping", None)
        if plotter is None:
            warn(f"target {target.kind!r} draws no mapping picture; --plot ignored")
        else:
            plot_to(args.plot, lambda tmp: plotter(res.mapping, target, tmp))
    con = stdout_console()
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

    check_outputs(args, "output")
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
        plot_to(args.plot, lambda tmp: report.plot(records, tmp))
    if args.json:
        write_output(report.to_json(records), args.output)
    elif args.csv:
        write_output(layers_csv(records) if args.layers else report.to_csv(records), args.output)
    elif args.markdown:
        write_output(report.to_markdown(records), args.output)
    else:
        con = stdout_console()
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

    check_outputs(args, "output", "plot")
    refs = args.configs or _default_targets()
    if not refs:
        raise HwmapError("no target plugins installed and no CONFIG given: nothing to compare")
    targets = [load_target(r, args.set or []) for r in refs]
    data = data_arg(args)
    check_calibrate(args, data)
    with make_progress(args.quiet) as progress:
        records = compare(args.model, targets, data=data, calibrate=args.calibrate, options=parse_options(args),
                          progress=progress, sensitivity=args.sensitivity)
    _emit_records(records, args)
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from .explore import explore
    from .explore.results import front_table, to_csv, to_json

    check_outputs(args, "plot")
    plot = Path(args.plot) if args.plot else None
    inside = plot.name if plot is not None and args.output and plot.resolve().parent == Path(args.output).resolve() \
        else None
    with make_progress(args.quiet) as progress:
        run = explore(args.model, args.space, data=args.data, calibrate=args.calibrate, trials=args.trials,
                      timeout=args.timeout, workers=args.workers, scheduler=args.scheduler, storage=args.storage,
                      outdir=args.output, options=parse_options(args), plot_name=inside, quiet=args.quiet,
                      progress=progress, overrides=args.set or [])
    results, summary = run.results, run.summary
    if summary.recovered:
        warn(f"re-ran the configs of trial(s) {', '.join(map(str, summary.recovered))}, interrupted by a "
             "previous run")
    if summary.timed_out:
        warn(f"--timeout {args.timeout:g} s passed: the study holds {len(results.rows)} of {run.total} trials; "
             "run the same command again to go on")
    elif summary.exhausted:
        warn("the sampler kept proposing configs the study already holds; stopped early")
    if plot is not None:
        from .explore.plot import plot as draw

        plot_to(str(plot), lambda tmp: draw(results, tmp))
    if args.json:
        sys.stdout.write(to_json(results))
    elif args.csv:
        sys.stdout.write(printable(to_csv(results)))
    else:
        stdout_console().print(front_table(results))
    print(one_line(f"study {results.study} in {results.storage}: {len(results.rows)} trials"
                   + "".join(f"; wrote {p}" for p in run.written)), file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import load_target
    from .data import load_data
    from .flow import compare, split_data
    from .profile import profile
    from .source import load_model

    check_outputs(args, "output", "plot")
    refs = _default_targets()
    con = stdout_console()
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
