"""``hwmap explore`` as users run it: bad input through the command line, a run killed
mid-trial and resumed, and trials on a Dask LocalCluster of two worker processes against one.
The installed analog_imc target is the target (worker processes load it through its entry
point, as a user's would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hwmap.cli import main
from test_cli import STAGE_LINE

MODEL = "zoo:digits_mlp"
SPACE = """
sampler = "grid"
[objectives]
energy_per_inference_j = "minimize"
latency_s = "minimize"
[[targets]]
target = "analog_imc:default"
[targets.space]
"hardware.dac_bits" = [1, 2, 4, 8]
"hardware.columns_per_adc" = [1, 4]
"""

pytest.importorskip("hwmap_analog_imc")


def space(tmp: Path, text: str = SPACE) -> str:
    (tmp / "space.toml").write_text(text)
    return str(tmp / "space.toml")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str) -> str:
    """The command failed with exit code 2 and said why in one line (stage timings aside)."""
    lines = [line for line in err.splitlines() if line.strip() and not STAGE_LINE.match(line)]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hwmap: error: "), (code, err)
    return lines[0]


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (('"hardware.dac_bits"', '"hardware.dac_bit"'), "space key 'hardware.dac_bit' is not a key of a analog_imc "
                                                    "config (did you mean 'hardware.dac_bits'?)"),
    (('[1, 4]', '{low = 4, high = 1}'), "an empty range (low 4 > high 1)"),
    (('latency_s = "minimize"', 'latency_ms = "minimize"'), "objective 'latency_ms' is not a KPI column"),
])
def test_a_bad_space_is_one_line_and_exit_2_and_nothing_written(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path, change: tuple[str, str],
                                                                  message: str) -> None:
    code, out, err = run_cli(capsys, "explore", MODEL, space(tmp_path, SPACE.replace(*change)), "-o",
                             str(tmp_path / "out"), "--workers", "0")
    assert message in one_error(code, err)
    assert not (tmp_path / "out").exists()


def test_more_local_workers_than_the_machine_can_hold_is_refused(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "explore", MODEL, space(tmp_path), "-o", str(tmp_path / "out"),
                           "--workers", "100000")
    assert "--workers 100000: at most" in one_error(code, err)
    assert not (tmp_path / "out").exists()


def test_a_storage_that_cannot_be_opened(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "explore", MODEL, space(tmp_path), "--storage", "nosuchdb://user:secret@host/x",
                           "-o", str(tmp_path / "out"), "--workers", "0")
    line = one_error(code, err)
    assert "cannot open the study storage" in line and "secret" not in line
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(capsys, "explore", MODEL, space(tmp_path), "--storage",
                           f"sqlite:///{tmp_path}/missing/folder/study.db", "--workers", "0")
    assert "cannot open the study storage" in one_error(code, err)


def test_a_scheduler_that_cannot_be_reached(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from hwmap.explore import run

    monkeypatch.setattr(run, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(capsys, "explore", MODEL, space(tmp_path), "-o", str(tmp_path / "out"), "--scheduler",
                           f"tcp://127.0.0.1:{port}")
    assert f"--scheduler tcp://127.0.0.1:{port}: cannot reach the Dask scheduler" in one_error(code, err)
    assert not (tmp_path / "out" / "study.db").exists()  # no study was created


def test_an_output_folder_holding_other_files_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "explore", MODEL, space(tmp_path), "-o", str(tmp_path / "out"), "--workers", "0")
    assert "holds files hwmap did not write (notes.txt)" in one_error(code, err)


# -- kill and resume --------------------------------------------------------------------------------
#: ``hwmap explore`` whose trial number BLOCK_AT writes MARK and then blocks until killed.
BLOCKING = """
import os, sys, time
from pathlib import Path
import hwmap.explore.runner as runner
real = runner.evaluate
def blocking(graph, task, *args, **kw):
    if task.number == int(os.environ["BLOCK_AT"]):
        Path(os.environ["MARK"]).write_text(str(task.number))
        time.sleep(3600)
    return real(graph, task, *args, **kw)
runner.evaluate = blocking
from hwmap.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _trials(db: Path) -> list[Any]:
    import optuna

    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}").get_trials()


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_a_run_killed_mid_trial_resumes_without_loss_or_duplicates(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path, sampler: str) -> None:
    from hwmap.explore.study import counted, info

    path = space(tmp_path, SPACE.replace('sampler = "grid"', f'sampler = "{sampler}"\nseed = 3'))
    out, mark = tmp_path / "out", tmp_path / "started"
    script = tmp_path / "blocking.py"
    script.write_text(BLOCKING)
    env = {**os.environ, "BLOCK_AT": "3", "MARK": str(mark)}
    args = ["explore", MODEL, path, "-o", str(out), "--trials", "6", "--workers", "0", "-q"]
    p = subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        for _ in range(1200):  # until trial 3 is in flight (or the run ended, which fails below)
            if mark.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert mark.exists(), p.stderr.read().decode() if p.stderr else ""
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    before = {t.number: t for t in _trials(out / "study.db")}
    completed = {n: t for n, t in before.items() if counted(t)}
    assert sorted(completed) == [0, 1, 2] and before[3].state.name == "RUNNING"

    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "re-ran the configs of trial(s) 3, interrupted by a previous run" in err
    after = _trials(out / "study.db")
    kept = [t for t in after if counted(t)]
    assert len(kept) == 6  # --trials is the study's total
    for n, t in completed.items():  # every completed trial kept as it was
        assert after[n].state == t.state and after[n].params == t.params and after[n].values == t.values
    assert info(after[3]).get("interrupted") and after[3].state.name == "FAIL"
    (retry,) = [t for t in kept if t.user_attrs.get("retry_of") == 3]
    assert retry.params == before[3].params and retry.state.name == "COMPLETE"
    keys = [json.dumps(t.params, sort_keys=True) for t in kept]
    assert len(set(keys)) == len(keys)  # no config twice
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and not any(r.startswith("3,") for r in rows)


# -- Dask ----------------------------------------------------------------------------------------------
def test_two_workers_give_the_configs_and_kpis_of_one(tmp_path: Path) -> None:
    from hwmap.explore import explore

    runs = {}
    for workers in (1, 2):
        runs[workers] = explore(MODEL, space(tmp_path), trials=8, workers=workers, outdir=str(tmp_path / f"w{workers}"),
                                quiet=True)
    one, two = ({r.number: (r.config, r.kpis) for r in runs[w].results.rows} for w in (1, 2))
    assert len(one) == 8 and one == two
    assert (tmp_path / "w1" / "trials.csv").read_text() == (tmp_path / "w2" / "trials.csv").read_text()
    for run in runs.values():  # the worker processes' processor time covers their trials'
        assert run.summary.workers_process_cpu_s >= run.summary.worker_cpu_s > 0


def test_the_local_clusters_workers_run_without_dasks_interactive_upkeep() -> None:
    import dask

    from hwmap.explore.runner import LOCAL_CLUSTER_CONFIG, DaskExecutor

    executor = DaskExecutor(1)
    try:
        seen = executor.client.run(lambda: {k: dask.config.get(k) for k in LOCAL_CLUSTER_CONFIG})
        assert list(seen.values()) == [LOCAL_CLUSTER_CONFIG]
        assert executor.processor_time() > 0
    finally:
        executor.close()
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process's settings are its own
