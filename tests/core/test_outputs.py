"""Output paths are the user's: nothing written outside what they named, nothing of theirs
replaced or left behind, every destination checked before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_dist import TOY_CPU_EXAMPLE, TOY_ENTRY_POINT, subprocess_env, write_dist
from hwmap.cli import main
from hwmap.files import MARKER, TEMP_PREFIX, remove_stale

pytestmark = pytest.mark.usefixtures("toy_registry")

MODEL = "zoo:digits_cnn"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))  # in-process: the toy_registry fixture's registry
    out, err = capsys.readouterr()
    return code, out, err


def error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run(capsys, *args)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hwmap: error: "), (code, err)
    return lines[0]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", [".", "/", ".."])
def test_o_must_name_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 name: str) -> None:
    monkeypatch.chdir(tmp_path)
    line = error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", name, "-q")
    assert f"-o must name a directory to create or replace, not {name!r}" in line
    assert tree(tmp_path) == []


def test_a_missing_parent_is_never_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(tmp_path / "a" / "b"), "-q")
    assert f"-o: no such folder '{tmp_path / 'a'}' (hwmap does not create it)" in line
    assert tree(tmp_path) == []


def test_a_symlink_is_not_followed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert "-o: is a symbolic link" in error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o",
                                                  str(tmp_path / "link"), "-q")
    assert tree(tmp_path) == ["link", "real"]


def test_only_hwmap_s_own_output_is_replaced(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")[0] == 0
    first = tree(out)
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:small@hardware.sram_bytes=8192", "-o", str(out),
               "-q")[0] == 0  # an hwmap output directory is replaced
    assert tree(out) == first and json.loads((out / "kpis.json").read_text())["config"].startswith("toy_cpu:small")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporaries left
    for extra in ("NOTES.md", "artifacts/mine.txt", "graph/data.npz"):
        (out / extra).write_text("the user's")
        line = error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")
        assert f"-o: holds files hwmap did not write ({extra})" in line
        assert (out / extra).read_text() == "the user's"
        (out / extra).unlink()


@pytest.mark.parametrize("change, foreign", [
    # the manifest made to list a file of the user's: names do not make a file hwmap's
    (lambda o: ((o / "artifacts" / "mine.bin").write_bytes(b"the user's"),
                (o / "artifacts" / "artifacts.json").write_text(json.dumps(
                    {**json.loads((o / "artifacts" / "artifacts.json").read_text()),
                     "files": ["mine.bin"]}))), "artifacts/artifacts.json, artifacts/mine.bin"),
    (lambda o: (o / "kpis.json").write_text("{}"), "kpis.json"),  # an output the user edited is theirs
    (lambda o: (o / ".hwmap-output.json").unlink(), "artifacts/artifacts.json, artifacts/program.json"),  # no record
    (lambda o: (o / "graph" / "old").mkdir(), "graph/old/"),
    (lambda o: (o / "graph" / "params.npz").replace(o / "elsewhere.npz"), "elsewhere.npz"),
    (lambda o: (o / "link").symlink_to(o / "kpis.json"), "link"),
])
def test_only_what_hwmap_recorded_is_replaced(capsys: pytest.CaptureFixture[str], tmp_path: Path, change,
                                              foreign: str) -> None:
    out = tmp_path / "out"
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")[0] == 0
    record = json.loads((out / ".hwmap-output.json").read_text())
    assert sorted(record["files"]) == [p for p in tree(out) if (out / p).is_file() and p != ".hwmap-output.json"]
    change(out)
    before = {p: (out / p).read_bytes() for p in tree(out) if (out / p).is_file() and not (out / p).is_symlink()}
    line = error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")
    assert f"did not write ({foreign}" in line, line
    assert {p: (out / p).read_bytes() for p in before} == before


def test_a_folder_of_the_users_named_like_an_output_is_not_replaced(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "target.json").write_text('{"my": "config"}')
    line = error_line(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")
    assert "holds files hwmap did not write (target.json)" in line
    assert tree(out) == ["target.json"] and (out / "target.json").read_text() == '{"my": "config"}'


def test_a_long_name_works(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / ("x" * 250)
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")[0] == 0
    assert (out / "kpis.json").is_file()


@pytest.mark.parametrize("args", [
    ["compile", MODEL, "--target", "toy_cpu:default", "-o", "{tmp}/out", "--plot", "{tmp}/nope/p.png"],
    ["compile", MODEL, "--target", "toy_cpu:default", "-o", "{tmp}/out", "--plot", "{tmp}"],
    ["compare", MODEL, "toy_cpu:default", "--json", "--output", "{tmp}/nope/r.json"],
    ["compare", MODEL, "toy_cpu:default", "--plot", "{tmp}/nope/r.png"],
    ["profile", MODEL, "--json", "--output", "{tmp}/nope/p.json"],
    ["profile", MODEL, "--plot", "{tmp}"],
])
def test_output_files_are_checked_before_any_work(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  args: list[str]) -> None:
    line = error_line(capsys, *(a.format(tmp=tmp_path) for a in args), "-q")
    assert "no such folder" in line or "is a directory; name a file" in line
    assert tree(tmp_path) == []


def test_outputs_are_written_whole_with_unpredictable_temporaries(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")[0] == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for planted in (".res.npz.tmp", ".res.npz.tmp-1", "res.npz.tmp"):
        (tmp_path / planted).symlink_to(victim)
    res = tmp_path / "res.npz"
    assert run(capsys, "simulate", str(out), "--data", "zoo:digits", "-o", str(res), "-q")[0] == 0
    assert victim.read_text() == "keep me" and res.read_bytes()[:2] == b"PK"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert "-o: is a directory; name a file" in error_line(capsys, "simulate", str(out), "--data", "zoo:digits",
                                                           "-o", str(out), "-q")
    report = tmp_path / "r.csv"
    assert run(capsys, "compare", MODEL, "toy_cpu:default", "--csv", "--output", str(report), "-q")[0] == 0
    assert report.read_text().startswith("target,config,model,fits")


def test_outputs_get_the_modes_the_umask_gives(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The private temporaries (mkstemp 0600, mkdtemp 0700) are not what the user receives:
    the compile directory and the written files take the process's umask, as any tool's."""
    from hwmap.files import umask

    out, res = tmp_path / "out", tmp_path / "res.npz"
    assert run(capsys, "compile", MODEL, "--target", "toy_cpu:default", "-o", str(out), "-q")[0] == 0
    assert run(capsys, "simulate", str(out), "--data", "zoo:digits", "-o", str(res), "-q")[0] == 0
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()
    assert res.stat().st_mode & 0o777 == 0o666 & ~umask()
    assert (out / "kpis.json").stat().st_mode & 0o777 == 0o666 & ~umask()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f"{TEMP_PREFIX}{pid}-abc"
    stale.mkdir()
    (stale / MARKER).write_bytes(b"")
    (stale / "artifacts").mkdir()
    unmarked = tmp_path / f"{TEMP_PREFIX}{pid}-def"
    unmarked.mkdir()
    alive = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-ghi"
    alive.mkdir()
    (alive / MARKER).write_bytes(b"")
    not_ours = tmp_path / f"{TEMP_PREFIX}notapid-x"
    not_ours.mkdir()
    (not_ours / MARKER).write_bytes(b"")
    remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([unmarked.name, alive.name, not_ours.name])


# -- signals -----------------------------------------------------------------------------------------
SLOW_PLUGIN = '''
"""A toy CPU whose emit writes a file and then waits: a compile to interrupt."""
import time
from hwmap import hookimpl
from hwmap_toy_cpu import plugin as toy
from hwmap_toy_cpu.hardware import ToyConfig

@hookimpl
def hwmap_register_targets(register):
    register(kind="slow_toy", config=ToyConfig, description="a toy CPU that emits slowly",
             presets={"default": __file__.replace("slow_toy.py", "slow_toy.toml")})

@hookimpl
def hwmap_legalize(graph, target):
    return toy.hwmap_legalize(graph, target)

@hookimpl
def hwmap_map(graph, target):
    return toy.hwmap_map(graph, target)

@hookimpl
def hwmap_emit(mapping, target, outdir):
    (outdir / "partial.bin").write_bytes(b"half")
    time.sleep(60)
    return toy.hwmap_emit(mapping, target, outdir)
'''


@pytest.fixture
def slow_env(tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_toy.py").write_text(SLOW_PLUGIN)
    (plugins / "slow_toy.toml").write_text('kind = "slow_toy"\n')
    write_dist(plugins, "slow-toy", {"slow_toy": "slow_toy"})
    write_dist(plugins, "toy-target", TOY_ENTRY_POINT)
    env = subprocess_env(plugins, autoload=True)
    env["PYTHONPATH"] = os.pathsep.join([str(plugins), str(TOY_CPU_EXAMPLE), env["PYTHONPATH"]])
    return env


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default. A test run started in the
    background by a non-interactive shell inherits SIGINT ignored, and Python (rightly)
    keeps a signal ignored that it was started with, so the child would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait(work: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "hwmap.cli", "compile", MODEL, "--target", "slow_toy:default",
                             "-o", "out", "-q"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_interruptible)
    deadline = time.monotonic() + 120
    while not list(work.glob(f"{TEMP_PREFIX}*/artifacts/partial.bin")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the compile never reached emit"
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "hwmap: terminated"),
                                             (signal.SIGINT, 130, "hwmap: interrupted")])
def test_an_interrupted_compile_leaves_nothing(tmp_path: Path, slow_env: dict[str, str], sig: int, code: int,
                                               said: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = _start_and_wait(work, slow_env)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip().endswith(said), (proc.returncode, err)
    assert list(work.iterdir()) == []


def test_after_a_kill_the_next_run_removes_what_was_left(tmp_path: Path, slow_env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = _start_and_wait(work, slow_env)
    proc.kill()
    proc.communicate(timeout=60)
    assert [p.name.startswith(TEMP_PREFIX) for p in work.iterdir()] == [True]
    done = subprocess.run([sys.executable, "-m", "hwmap.cli", "compile", MODEL, "--target", "toy_cpu:default",
                           "-o", "out", "-q"], cwd=work, env=slow_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in work.iterdir()] == ["out"]
