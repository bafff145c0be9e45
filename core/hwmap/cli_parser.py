"""The ``hwmap`` command line's parser: every subcommand, every option with what it does,
its default and its unit, and an example at the end of each subcommand's help. It only
describes the syntax: :mod:`hwmap.cli` runs the function its ``COMMANDS`` names for the
subcommand parsed.

Options may stand anywhere on the line (``hwmap compare MODEL A --set k=v B`` is MODEL with
the configs A and B and one override): each subcommand's arguments are parsed intermixed.
"""

from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["build_parser", "parse", "DEMO_MODEL", "DEMO_DATA"]

#: What ``hwmap demo`` runs: this zoo model on this zoo data set.
DEMO_MODEL = "zoo:digits_cnn"
DEMO_DATA = "zoo:digits"

_MODEL_HELP = ("the model: an .onnx or .nir file, zoo:NAME (hwmap zoo lists them), a saved hwmap graph folder, "
               "or module:factory / path/to/file.py:factory returning a torch.nn.Module (with --input-shape)")
_DATA_HELP = ("zoo:NAME or an .npz holding x (samples, batch first) and optionally y (integer labels); "
              "the first --calibrate samples calibrate, the rest are scored")
_CALIBRATE_HELP = ("how many of the first --data samples calibrate (quantization ranges, conversion scales); "
                   "the rest are scored. Default: the first quarter, at most 512 samples; 0 scores everything")
_SET_HELP = ("override one config key by its dotted path, e.g. hardware.cores=16 (VALUE read as TOML: 8, 2.5, "
             "true, \"text\", [1, 2]); repeatable; applies to every config given")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``hwmap: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def _sub(sub: "argparse._SubParsersAction[_Parser]", name: str, help: str, description: str,
         example: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help, description=description, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--max-memory", metavar="SIZE",
                   help="the most memory one input may make hwmap allocate (a model's tensors, an .npz's arrays, "
                        "a program's tables), bytes with an optional K/M/G suffix; larger inputs are refused "
                        "before they are read (default: HWMAP_MAX_MEMORY, else 1G)")
    return s


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", metavar="N,C,H,W",
                   help="input shape, batch first, for a torch factory or to run a model at another resolution "
                        "(default: the model's own)")
    p.add_argument("--dt", type=float, metavar="SECONDS", help="time step of NIR graphs, in seconds (default: the "
                                                               "graph's own, else an error)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (default: a progress bar "
                                                              "on a terminal, one line per stage otherwise)")


def _add_output_options(s: argparse.ArgumentParser, markdown: bool, layers: bool = False) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print the full KPI records as JSON (default: a table)")
    g.add_argument("--csv", action="store_true", help="print one CSV row per target (with --layers: per target "
                                                      "and layer)" if layers else "print CSV")
    if markdown:
        g.add_argument("--markdown", action="store_true", help="print a GitHub Markdown table")
    if layers:
        s.add_argument("--layers", action="store_true",
                       help="also show each target's per-layer breakdown (latency, energy by kind); with --csv, "
                            "one row per layer instead of per target")
    s.add_argument("--plot", metavar="FILE.png", help="also draw the comparison into this image (PNG, or any "
                                                      "format matplotlib knows by suffix)")
    s.add_argument("--output", metavar="FILE", help="write --json/--csv/--markdown here instead of stdout")
    _add_quiet(s)
    s.set_defaults(markdown=False, layers=False)


def _add_run_options(s: argparse.ArgumentParser) -> None:
    """What compile and compare share: data and its split, overrides, sensitivity."""
    s.add_argument("--data", help=_DATA_HELP + " (default: no simulation, an analytic estimate)")
    s.add_argument("--calibrate", type=int, metavar="N", help=_CALIBRATE_HELP)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP)
    s.add_argument("--sensitivity", action="store_true",
                   help="also show how latency, throughput, energy and power move when each config constant whose "
                        "source is 'assumed' is halved and doubled (default: off)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; ``parse`` sets ``command`` to the subcommand's name
    (what :data:`hwmap.cli.COMMANDS` maps to the function running it)."""
    from . import __version__

    p = _Parser(prog="hwmap", description="Map trained networks onto edge AI targets and compare what they cost.",
                epilog="example:\n  hwmap demo", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hwmap {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _sub(sub, "targets", "installed target kinds, presets and load errors",
             "List the installed target kinds: package, version, presets and hooks, and any plugin that failed "
             "to load.", "hwmap targets --json")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = _sub(sub, "zoo", "the bundled models and data sets, one line each",
             "List the bundled models (zoo:NAME, input shape, what it is) and data sets (samples, shape).",
             "hwmap zoo --json")
    s.add_argument("--json", action="store_true", help="print the listing as JSON (default: one line each)")

    s = _sub(sub, "check", "validate a target config; --show prints it with units and sources",
             "Validate a target config (a TOML file, KIND:PRESET, or CONFIG@KEY=VALUE...) and report every problem, "
             "one line each. Warns when a file without 'extends' falls back to schema defaults that differ from "
             "its kind's default preset.", "hwmap check analog_imc:default --show")
    s.add_argument("config", help="a TOML file, KIND:PRESET, or CONFIG@KEY=VALUE[@KEY=VALUE...]")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP)
    s.add_argument("--show", action="store_true", help="print the effective config as TOML, each value with its "
                                                       "unit and source")

    s = _sub(sub, "schema", "print the JSON Schema of a target kind's config",
             "Print the JSON Schema of a target kind's config file (units and sources of the defaults included), "
             "for editors and validators.", "hwmap schema analog_imc > analog_imc.schema.json")
    s.add_argument("kind", help="an installed target kind (hwmap targets lists them)")

    s = _sub(sub, "profile", "per-layer params, MACs, data volume, bandwidth, sparsity",
             "Profile a model layer by layer: parameters, MACs, activation data volume (normalized to the "
             "input), bandwidth at a frame rate and, with --data, activation and temporal sparsity.",
             "hwmap profile zoo:mobilenet_v1 --input-shape 1,3,720,1280 --act-bits 4 --fps 30")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--fps", type=float, default=30.0, metavar="N",
                   help="frame rate for the bandwidth columns, inferences per second (default: 30)")
    s.add_argument("--act-bits", type=int, default=8, metavar="B", help="bits per activation (default: 8)")
    s.add_argument("--input-bits", type=int, default=8, metavar="B", help="bits per input element (default: 8)")
    s.add_argument("--weight-bits", type=int, default=8, metavar="B", help="bits per weight (default: 8)")
    s.add_argument("--macs", default="conv_fc", choices=["conv_fc", "fvcore", "all"],
                   help="MAC counting convention: conv_fc counts convolutions and fully connected layers only, "
                        "fvcore also batch norm as fvcore does, all every op with a MAC model (default: conv_fc)")
    s.add_argument("--data", help="zoo:NAME or .npz with x: also measure spatial and temporal sparsity per layer "
                                  "and the MACs zero-skipping and change-driven hardware would save; x is samples "
                                  "(N, ...) seen as consecutive frames, or sequences (N, T, ...) of T frames; "
                                  "temporal sparsity compares --act-bits codes (default: none)")
    s.add_argument("--strict", action="store_true",
                   help="refuse a model using ops hwmap does not know (exit code 2, as compile does) instead of "
                        "listing those nodes as unknown rows without MACs and a warning (default: off)")
    _add_output_options(s, markdown=False)
    _add_model_options(s)

    s = _sub(sub, "compile", "parse, legalize, map, emit, simulate and estimate one model on one target",
             "Run the whole flow for one model on one target and write DIR: graph/ (as parsed), legalized/, "
             "mapping.json, target.json, artifacts/ (what the hardware would load) and kpis.json. With --data the "
             "artifacts are simulated on the scored samples and compared with the reference model. Prints the "
             "KPIs and the per-layer breakdown. Exit code 1 when the model does not fit.",
             "hwmap compile zoo:digits_cnn --target analog_imc:default --data zoo:digits -o digits")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--target", required=True, metavar="CONFIG",
                   help="the target config: a TOML file, KIND:PRESET, or CONFIG@KEY=VALUE[@KEY=VALUE...]")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="the output directory (written atomically; "
                                                                        "an existing compile directory is replaced)")
    _add_run_options(s)
    s.add_argument("--plot", metavar="FILE.png", help="draw the mapping, where the target can (default: none)")
    _add_quiet(s)
    _add_model_options(s)

    s = _sub(sub, "simulate", "run a compile directory's artifacts on data",
             "Run the artifacts of a compile directory, read back from disk, on all the data given (nothing "
             "calibrates; at most 512 samples) and compare them with the reference model; prints fidelity and, "
             "with labels, the target's and the reference's accuracy as JSON.",
             "hwmap simulate digits --data zoo:digits -o digits-outputs.npz")
    s.add_argument("dir", help="a directory written by hwmap compile")
    s.add_argument("--data", required=True, help="zoo:NAME or an .npz holding x (and y): every sample is scored")
    s.add_argument("-o", "--output", metavar="OUT.npz", help="also write the simulated outputs, one array per graph "
                                                             "output named as the output (default: none)")
    _add_quiet(s)

    s = _sub(sub, "compare", "one model on several targets, KPIs side by side",
             "Run one model on several targets and show their KPIs side by side: latency, throughput, energy (and "
             "by kind), power, memory, operations, utilization, fidelity, accuracy beside the reference model's, "
             "and what limits each. A target that cannot take the model is a column that says why.",
             "hwmap compare zoo:digits_cnn analog_imc:default analog_imc:default@hardware.cores=16 "
             "--data zoo:digits")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="target configs: TOML files, KIND:PRESET, or CONFIG@KEY=VALUE[@KEY=VALUE...] for a variant "
                        "(default: every installed target's default preset)")
    _add_run_options(s)
    _add_output_options(s, markdown=True, layers=True)
    _add_model_options(s)

    s = _sub(sub, "convert", "convert an ANN to a spiking network and score it at several time-step counts",
             "Convert a ReLU network to integrate-and-fire neurons (data-based normalization by a percentile of "
             "each layer's activations, reset by subtraction, membrane starting at half the threshold) calibrated "
             "on the first --calibrate samples of --data, and print the ANN's accuracy beside the converted "
             "network's at each --timesteps count: accuracy, top-1 agreement with the ANN, relative error of the "
             "outputs and spikes per inference, on the scored samples only. -o writes the converted network as a "
             "saved hwmap graph (a MODEL for every command); --nir writes it as NIR, saying what NIR loses. The "
             "[conversion] settings of spiking targets' configs are the same (docs/snn.md).",
             "hwmap convert zoo:digits_cnn --data zoo:digits --timesteps 1,2,4,8 --encoding direct,rate -o digits-snn")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--data", required=True, help=_DATA_HELP)
    s.add_argument("--calibrate", type=int, metavar="N", help=_CALIBRATE_HELP.replace("; 0 scores everything", ""))
    s.add_argument("--timesteps", default="1,2,4,8", metavar="T[,T...]",
                   help="time-step counts to convert and score at, comma-separated, each at least 1 "
                        "(default: 1,2,4,8)")
    s.add_argument("--encoding", default="direct", metavar="E[,E...]",
                   help="how the input becomes per-step input, comma-separated to compare several: direct (the "
                        "analog input every step), rate (deterministic regular spikes at rate clip(x, 0, 1)) or "
                        "poisson (seeded Bernoulli spikes) (default: direct)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a conversion setting, e.g. percentile=99.5 or percentile=auto, normalization=layer, "
                        "readout=spike_count, max_pool=average, seed=3 (an optional conversion. prefix is "
                        "accepted); repeatable (default: the settings docs/snn.md lists)")
    s.add_argument("--json", action="store_true", help="print the report as JSON: every run, the scales and the "
                                                       "notes (default: a table)")
    s.add_argument("-o", "--output", metavar="DIR",
                   help="write the network converted with the first --encoding at the largest --timesteps as a "
                        "saved hwmap graph (graph.json and params.npz; written atomically, an existing one is "
                        "replaced) (default: none)")
    s.add_argument("--nir", metavar="FILE.nir",
                   help="write that network as NIR and print, on one line, what NIR cannot say of it (reset by "
                        "subtraction, initial membrane potential, encoder, readout, time step) (default: none)")
    _add_quiet(s)
    _add_model_options(s)

    s = _sub(sub, "explore", "design-space exploration: multi-objective search over config keys, Pareto front",
             "Search the configs of one or more targets for the best trade-offs of KPI columns: SPACE.toml names the "
             "targets, the config keys to vary (a list of choices or a range each), the objectives (KPI columns to "
             "minimize or maximize), constraints such as \"accuracy >= 0.95\", the sampler (nsga2 by default, tpe, "
             "random, grid) and the seed (examples/explore/). The study is an optuna study in a database (SQLite in "
             "-o DIR by default), so a rerun of the same command resumes it; trials run on Dask workers. Prints the "
             "Pareto front (each point's config differences and KPIs); -o DIR also holds every trial as "
             "trials.csv and trials.json.",
             "hwmap explore zoo:digits_cnn examples/explore/analog_imc.toml --data zoo:digits --trials 50 -o dse")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("space", metavar="SPACE.toml", help="the search space, objectives and constraints (TOML)")
    s.add_argument("--data", help=_DATA_HELP + "; needed by accuracy and fidelity objectives or constraints "
                                             "(default: none, an analytic estimate per trial)")
    s.add_argument("--calibrate", type=int, metavar="N", help=_CALIBRATE_HELP)
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=_SET_HELP.replace("applies to every config given", "applies to every target of the space, "
                                          "before its own keys (a key may not be both set and searched)"))
    s.add_argument("--trials", type=int, default=50, metavar="N",
                   help="the study's total number of trials, those of earlier runs included, at most the number of "
                        "configs in the space (default: 50)")
    s.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds; trials in flight "
                                                              "finish (default: none)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="a Dask LocalCluster of N single-threaded worker processes on the loopback interface; 0 runs "
                        "the trials in this process (default: this machine's cores)")
    s.add_argument("--scheduler", metavar="ADDR", help="run the trials on an existing Dask cluster, by its "
                                                       "scheduler's address, e.g. tcp://10.0.0.5:8786 (default: none)")
    s.add_argument("--storage", metavar="URL",
                   help="the study's database, any SQLAlchemy URL, e.g. postgresql://user@host/db or "
                        "sqlite:///path/study.db (default: sqlite in -o DIR, DIR/study.db)")
    s.add_argument("-o", "--output", metavar="DIR",
                   help="a folder for the SQLite study and trials.csv / trials.json, created if missing (its "
                        "parent must exist); a rerun resumes the study in it")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print every trial with its KPI record as JSON (default: "
                                                       "the Pareto front as a table)")
    g.add_argument("--csv", action="store_true", help="print every trial as one CSV row")
    s.add_argument("--plot", metavar="FILE.png", help="draw the trials in the plane of the first two objectives, the "
                                                      "front in colour by target kind, the rest grey (default: none)")
    _add_quiet(s)
    _add_model_options(s)

    s = _sub(sub, "demo", f"{DEMO_MODEL} with {DEMO_DATA} on every installed target",
             f"The bundled default: {DEMO_MODEL} (trained on scikit-learn's digits) with the held-out "
             f"{DEMO_DATA} on every installed target's default preset, side by side.", "hwmap demo --markdown")
    _add_output_options(s, markdown=True, layers=True)
    return p


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a subcommand's own arguments are parsed intermixed (options anywhere
    among its positionals)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if args and args[0] in sub.choices:
        ns = sub.choices[args[0]].parse_intermixed_args(args[1:])
        ns.command = args[0]
        return ns
    return parser.parse_args(args)
