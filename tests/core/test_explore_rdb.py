"""``hwmap.explore.rdb`` (a trial's writes, one transaction each, in SQL on optuna's tables)
against optuna's own public calls on the same SQLite database: the trials read back through
optuna are the same, and the conditional state changes refuse what optuna refuses."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from optuna.exceptions import UpdateFinishedTrialError  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hwmap.explore import rdb  # noqa: E402
from hwmap.explore.study import CONSTRAINTS_PREFIX, open_storage  # noqa: E402

PARAMS = {"x": 3, "mode": "packed"}
DISTS = {"x": optuna.distributions.IntDistribution(1, 8), "mode": optuna.distributions.CategoricalDistribution(
    ["greedy", "packed"])}
RECORD = {"config": "toy@x=3", "kpis": {"energy_per_inference_j": 1.5e-6, "violations": [], "notes": "ü"}}


def _studies(tmp_path: Path) -> tuple[Any, Any]:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    made = [optuna.create_study(storage=storage, study_name=n, directions=["minimize", "maximize"])
            for n in ("public", "rdb")]
    return made[0], made[1]


def _ask(study: Any) -> Any:
    study.enqueue_trial(PARAMS)
    trial = study.ask()
    for name, dist in DISTS.items():
        trial._suggest(name, dist)
    return trial


def _close(when: datetime | None) -> bool:
    return when is not None and abs(when - datetime.now()) < timedelta(minutes=1)  # local time, as optuna's


@pytest.mark.parametrize("state, values", [(TrialState.COMPLETE, [1.5e-6, float("inf")]), (TrialState.FAIL, None),
                                           (TrialState.PRUNED, None)])
def test_a_finished_trial_reads_back_as_optunas_own(tmp_path: Path, state: Any, values: Any) -> None:
    public, ours = _studies(tmp_path)
    a, b = _ask(public), _ask(ours)
    a.set_user_attr("hwmap", RECORD)
    if state == TrialState.COMPLETE:
        a.set_constraint("accuracy >= 0.9", -0.02)
        a.set_constraint("latency_s <= 0.001", 0.5)
    public.tell(a, values, state=state)
    constraints = {f"{CONSTRAINTS_PREFIX}accuracy >= 0.9": -0.02, f"{CONSTRAINTS_PREFIX}latency_s <= 0.001": 0.5}
    rdb.finish(ours._storage, b._trial_id, state, values, {"hwmap": RECORD},
               constraints if state == TrialState.COMPLETE else {})
    want, got = public.get_trials()[0], ours.get_trials()[0]
    for field in ("state", "values", "params", "distributions", "user_attrs", "system_attrs", "constraints",
                  "number"):
        assert getattr(got, field) == getattr(want, field), field
    assert _close(got.datetime_complete) and got.datetime_complete >= got.datetime_start
    with pytest.raises(UpdateFinishedTrialError):  # a finished trial is never written again
        rdb.finish(ours._storage, b._trial_id, TrialState.FAIL, None, {"hwmap": {"overwritten": True}}, {})
    assert ours.get_trials()[0].user_attrs == want.user_attrs


def test_a_queued_trial_is_taken_once_with_its_owner(tmp_path: Path) -> None:
    _, study = _studies(tmp_path)
    study.enqueue_trial(PARAMS)
    trial_id = study.get_trials()[0]._trial_id
    owner = {"host": "h", "pid": 1, "heartbeat": 2.0}
    assert rdb.start_waiting(study._storage, trial_id, {"hwmap:owner": owner})
    assert not rdb.start_waiting(study._storage, trial_id, {"hwmap:owner": {"host": "other"}})  # taken
    got = study.get_trials()[0]
    assert got.state == TrialState.RUNNING and got.system_attrs["hwmap:owner"] == owner
    assert got.system_attrs["fixed_params"] == PARAMS and _close(got.datetime_start)


def test_heartbeats_touch_running_trials_only(tmp_path: Path) -> None:
    _, study = _studies(tmp_path)
    running, done = _ask(study), _ask(study)
    study.tell(done, [1.0, 2.0])
    rdb.set_system_attr(study._storage, [running._trial_id, done._trial_id], "hwmap:owner", {"heartbeat": 1.0})
    rdb.set_system_attr(study._storage, [running._trial_id], "hwmap:owner", {"heartbeat": 2.0})  # replaced
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[running.number].system_attrs["hwmap:owner"] == {"heartbeat": 2.0}
    assert "hwmap:owner" not in by_number[done.number].system_attrs


def test_a_popped_queued_trial_starts_as_the_storage_holds_it(toy_registry: Any, tmp_path: Path) -> None:
    """The trial ``StudyHandle.ask`` gives optuna (built, not read back) is the stored one."""
    from hwmap.explore.space import read_space
    from hwmap.explore.study import open_study

    space_file = tmp_path / "space.toml"
    space_file.write_text('sampler = "grid"\n[objectives]\nlatency_s = "minimize"\n[[targets]]\n'
                          'target = "toy_cpu:default"\n[targets.space]\n"hardware.macs_per_cycle" = [1, 2, 4]\n')
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    first = open_study(storage, "s", read_space(str(space_file), []))
    first.enqueue_grid(2)  # one queued by the handle that runs it, one by an earlier run
    handle = open_study(storage, "s", read_space(str(space_file), []))
    handle.enqueue_grid(3)
    for _ in range(3):
        built = handle.ask(set()).trial._cached_frozen_trial
        stored = handle._read_trial(built._trial_id)
        for field in ("number", "state", "params", "distributions", "user_attrs", "system_attrs", "values"):
            assert getattr(built, field) == getattr(stored, field), field
        assert abs(built.datetime_start - stored.datetime_start) < timedelta(milliseconds=1)


def test_parameters_written_together_read_back_as_suggested_ones(tmp_path: Path) -> None:
    public, ours = _studies(tmp_path)
    want = _ask(public)  # suggested one by one through optuna
    trial = ours.ask()
    rdb.set_params(ours._storage, trial._trial_id,
                   [(name, DISTS[name].to_internal_repr(value), DISTS[name]) for name, value in PARAMS.items()])
    got, stored = ours.get_trials()[0], public.get_trials()[0]
    assert (got.params, got.distributions) == (stored.params, stored.distributions) == (PARAMS, want.distributions)
    ours.tell(trial, [1.0, 2.0])
    with pytest.raises(UpdateFinishedTrialError):
        rdb.set_params(ours._storage, trial._trial_id, [("y", 1.0, DISTS["x"])])
