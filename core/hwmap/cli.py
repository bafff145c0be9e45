"""The ``hwmap`` command line (DESIGN.md, Command line).

Exit codes: 0 done, 1 the model does not fit the target (compile), 2 bad input, 3 an
internal error (a bug: set HWMAP_DEBUG=1 for the traceback). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import HwmapError

__all__ = ["main"]


# -- helpers ---------------------------------------------------------------------------------
def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=max(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


@contextmanager
def _progress(quiet: bool = False) -> Iterator[Any]:
    """A status line on stderr for work over a second (only on a terminal)."""
    console = _stderr_console()
    if quiet or not console.is_terminal:
        start = time.perf_counter()
        last = [start]

        def say(msg: str) -> None:
            now = time.perf_counter()
            if not quiet and now - last[0] > 1.0:
                print(f"hwmap: {msg} ({now - start:.1f} s)", file=sys.stderr)
                last[0] = now
        yield say
        return
    with console.status("working") as status:
        yield lambda msg: status.update(msg)


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


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", metavar="N,C,H,W", help="input shape for a torch factory or another resolution")
    p.add_argument("--dt", type=float, help="time step in seconds for NIR graphs")


def _write_output(text: str, path: str | None) -> None:
    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


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
    from rich.markup import escape  # plugin-supplied text may contain "[...]": not markup

    for r in rows:
        table.add_row(*(escape(x) for x in (r["kind"], r["package"], r["version"], ", ".join(r["presets"]),
                                            r["description"])))
    presets = Table(title="presets (use as KIND:PRESET)")
    for col in ("preset", "description"):
        presets.add_column(col)
    for r in rows:
        for name, description in r["preset_descriptions"].items():
            presets.add_row(escape(f"{r['kind']}:{name}"), escape(description or ""))
    con = _stdout_console()
    if rows:
        con.print(table)
        if presets.rows:
            con.print(presets)
    else:
        con.print("no target plugins installed (pip install a package that provides the 'hwmap.targets' entry point)")
    for e in errors:
        con.print(f"[red]load error[/red] {escape(e['plugin'])}: {escape(e['error'])}")
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
    from .config import load_target

    target = load_target(args.config, args.set or [])
    print(f"{args.config}: valid {target.kind} config {target.name!r}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .config import schema_for

    print(json.dumps(schema_for(args.kind), indent=1, sort_keys=True))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .data import load_data
    from .flow import model_inputs
    from .profile import profile
    from .source import load_model

    options = _options(args)
    options.allow_unknown = not args.strict  # unknown ops become rows without MACs, with a warning
    with _progress(args.quiet) as say:
        say(f"parsing {args.model}")
        graph = load_model(args.model, options)
        x = None
        if args.data:
            data = load_data(args.data)
            x = next(iter(model_inputs(graph, data).values()))
        say("profiling")
        prof = profile(graph, fps=args.fps, act_bits=args.act_bits, input_bits=args.input_bits,
                       weight_bits=args.weight_bits, macs=args.macs, data=x)
    for line in prof.warnings:
        print(f"hwmap: warning: {line}", file=sys.stderr)
    if args.plot:
        prof.plot(Path(args.plot))
    if args.json:
        _write_output(json.dumps(prof.to_json(), indent=1, sort_keys=True) + "\n", args.output)
    elif args.csv:
        _write_output(prof.to_csv(), args.output)
    elif not args.plot or args.output:
        _stdout_console().print(prof.table())
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .config import load_target
    from .data import load_data
    from .flow import compile_model

    target = load_target(args.target, args.set or [])
    data = load_data(args.data) if args.data else None
    outdir = Path(args.output)
    with _progress(args.quiet) as say:
        res = compile_model(args.model, target, outdir, data=data, options=_options(args), progress=say)
    if args.plot:
        from .registry import get_registry

        plotter = getattr(get_registry().owners[target.kind], "plot_mapping", None)
        if plotter is None:
            print(f"hwmap: target {target.kind!r} draws no mapping picture; --plot ignored", file=sys.stderr)
        else:
            plotter(res.mapping, target, Path(args.plot))
            print(f"wrote {args.plot}", file=sys.stderr)
    from .report import table

    _stdout_console().print(table([res.kpis]))
    print(f"wrote {outdir}", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_data
    from .flow import simulate_dir
    from .graph import save_npz

    if args.output and not Path(args.output).parent.is_dir():
        raise HwmapError("no such folder for the output file", where=args.output)
    data = load_data(args.data)
    outdir = Path(args.dir)
    with _progress(args.quiet) as say:
        sim, fid, acc = simulate_dir(outdir, data, progress=say)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        save_npz(tmp, {k: np.asarray(v) for k, v in sim.outputs.items()})
        os.replace(tmp, out)
    summary = {"fidelity": vars(fid), "accuracy": acc, "samples": fid.samples}
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def _emit_records(records: list[Any], args: argparse.Namespace) -> None:
    from . import report

    if args.plot:
        report.plot(records, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        _write_output(report.to_json(records), args.output)
    elif args.csv:
        _write_output(report.to_csv(records), args.output)
    elif args.markdown:
        _write_output(report.to_markdown(records), args.output)
    else:
        _stdout_console().print(report.table(records))


def _default_targets() -> list[str]:
    from .registry import get_registry

    reg = get_registry()
    return [f"{k}:default" for k in reg.kinds() if "default" in reg.specs[k].presets]


def cmd_compare(args: argparse.Namespace) -> int:
    from .config import load_target
    from .data import load_data
    from .flow import compare

    refs = args.configs or _default_targets()
    if not refs:
        raise HwmapError("no target plugins installed and no CONFIG given: nothing to compare")
    targets = [load_target(r, args.set or []) for r in refs]
    data = load_data(args.data) if args.data else None
    with _progress(args.quiet) as say:
        records = compare(args.model, targets, data=data, options=_options(args), progress=say)
    _emit_records(records, args)
    return 0


DEMO_MODEL = "zoo:digits_cnn"
DEMO_DATA = "zoo:digits"


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import load_target
    from .data import load_data
    from .flow import compare
    from .profile import profile
    from .source import load_model

    refs = _default_targets()
    con = _stdout_console()
    with _progress(args.quiet) as say:
        say(f"parsing {DEMO_MODEL}")
        graph = load_model(DEMO_MODEL)
        data = load_data(DEMO_DATA)
        if not refs:
            from .flow import model_inputs

            prof = profile(graph, data=next(iter(model_inputs(graph, data).values())))
        else:
            records = compare(graph, [load_target(r) for r in refs], data=data, progress=say)
    if not refs:
        con.print("no target plugins are installed: profiling the demo model instead "
                  f"({DEMO_MODEL} on {DEMO_DATA})")
        con.print(prof.table())
        return 0
    con.print(f"{DEMO_MODEL} with {DEMO_DATA} ({len(data)} held-out samples) on every installed target's default preset")
    _emit_records(records, args)
    return 0


# -- parser ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``hwmap: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="hwmap", description="Map trained networks onto edge AI targets and compare "
                                                          "what they cost.")
    p.add_argument("--version", action="version", version=f"hwmap {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("targets", help="installed target kinds, presets and load errors")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("zoo", help="the bundled models and data sets, one line each")
    s.add_argument("--json", action="store_true", help="print the listing as JSON (default: one line each)")
    s.set_defaults(func=cmd_zoo)

    s = sub.add_parser("check", help="validate a target config (TOML path or KIND:PRESET)")
    s.add_argument("config")
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("schema", help="print the JSON Schema of a target kind's config")
    s.add_argument("kind")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("profile", help="per-layer params, MACs, data volume, bandwidth, sparsity")
    s.add_argument("model")
    s.add_argument("--fps", type=float, default=30.0)
    s.add_argument("--act-bits", type=int, default=8)
    s.add_argument("--input-bits", type=int, default=8)
    s.add_argument("--weight-bits", type=int, default=8)
    s.add_argument("--macs", default="conv_fc", choices=["conv_fc", "fvcore", "all"],
                   help="MAC counting convention (default: conv + fc only)")
    s.add_argument("--data", help="zoo:NAME or .npz with x: measure activation and temporal sparsity")
    s.add_argument("--strict", action="store_true",
                   help="refuse a model using ops hwmap does not know (exit code 2, as compile does) instead of "
                        "listing those nodes as unknown rows without MACs and a warning (default: off)")
    _add_output_options(s, markdown=False)
    _add_model_options(s)
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("compile", help="parse, legalize, map, emit and estimate one model on one target")
    s.add_argument("model")
    s.add_argument("--target", required=True, help="TOML config or KIND:PRESET")
    s.add_argument("-o", "--output", required=True, help="output directory")
    s.add_argument("--data", help="zoo:NAME or .npz: calibrate quantization, simulate, measure activity")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (dotted path)")
    s.add_argument("--plot", metavar="FILE.png", help="draw the mapping, where the target can")
    s.add_argument("-q", "--quiet", action="store_true")
    _add_model_options(s)
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("simulate", help="run a compile directory's artifacts on data")
    s.add_argument("dir")
    s.add_argument("--data", required=True)
    s.add_argument("-o", "--output", help="OUT.npz: one array per graph output")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("compare", help="one model on several targets, KPIs side by side")
    s.add_argument("model")
    s.add_argument("configs", nargs="*", help="TOML configs or KIND:PRESET (default: every target's default)")
    s.add_argument("--data")
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    _add_output_options(s, markdown=True)
    _add_model_options(s)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("demo", help=f"{DEMO_MODEL} with {DEMO_DATA} on every installed target")
    _add_output_options(s, markdown=True)
    s.set_defaults(func=cmd_demo)
    return p


def _add_output_options(s: argparse.ArgumentParser, markdown: bool) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    if markdown:
        g.add_argument("--markdown", action="store_true")
    s.add_argument("--plot", metavar="FILE.png")
    s.add_argument("--output", metavar="FILE", help="write --json/--csv/--markdown here instead of stdout")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(markdown=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwmapError as e:
        for line in e.lines():
            print(f"hwmap: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hwmap: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # an output path that cannot be written (-o, --output, --plot): bad input
        if os.environ.get("HWMAP_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"hwmap: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("HWMAP_DEBUG"):
            raise
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        print(f"hwmap: internal error: {msg} (set HWMAP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
