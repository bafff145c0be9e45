"""A trial's few writes to optuna's RDB storage, each one transaction of plain SQL statements.

Through optuna's public calls, recording one finished trial takes a transaction per user
attribute, two per constraint (read the system attributes, then write one), one to read the
trial back for the sampler and one for its state and values; starting a queued trial takes
one for its state and one for its owner tag; each goes through SQLAlchemy's ORM (a session,
a ``SELECT`` of the trial and its relations, a flush and a commit). With two worker processes
on two cores, that processor time is taken from the trials. Here each step is one
transaction of SQLAlchemy Core statements on optuna's own tables, written as optuna writes
them (attributes as JSON, values through ``TrialValueModel.value_to_stored_repr``, times as
naive UTC), so a step is all written or not at all: a trial is never left complete without
its KPI record. The state changes are conditional updates (``WHERE state = ...``), so of two
processes taking the same queued trial, or finishing the same one, exactly one succeeds.

These use optuna's RDB schema (``optuna.storages._rdb.models``, optuna 5); the tests of
``hwmap explore`` run every function here against a SQLite study and read it back through
optuna.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

__all__ = ["backend", "start_waiting", "set_params", "finish", "set_system_attr"]


def backend(storage: Any) -> Any:
    """The RDB storage behind ``storage`` (optuna wraps it in a cache that writes through)."""
    return getattr(storage, "_backend", storage)


def _utc(local: datetime) -> datetime:
    return local.astimezone(timezone.utc).replace(tzinfo=None)  # what optuna's TrialModel stores


def _set_attrs(conn: Any, table: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Set the attributes ``attrs`` of a trial in ``table`` (replacing any of the same key)."""
    if attrs:
        conn.execute(table.delete().where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
        conn.execute(table.insert(), [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                      for k, v in attrs.items()])


def _move(conn: Any, trial_id: int, old: Any, new: Any, when: str, at: datetime | None = None) -> bool:
    """Trial ``trial_id`` from state ``old`` to ``new``, stamping ``when`` with ``at`` (local
    time, default now); whether it was in ``old``."""
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    result = conn.execute(trials.update().where(trials.c.trial_id == trial_id, trials.c.state == old)
                          .values({"state": new, when: _utc(at or datetime.now())}))
    return bool(result.rowcount == 1)


def start_waiting(storage: Any, trial_id: int, system_attrs: dict[str, Any]) -> tuple[int, datetime] | None:
    """Take queued trial ``trial_id``: make it running with ``system_attrs`` (its owner), in one
    transaction; its number and start time (local, as optuna gives it), or ``None`` (nothing
    written) if it is no longer waiting (another process took it)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials, now = models.TrialModel.__table__, datetime.now()
    with backend(storage).engine.begin() as conn:
        if not _move(conn, trial_id, TrialState.WAITING, TrialState.RUNNING, "datetime_start", now):
            return None
        _set_attrs(conn, models.TrialSystemAttributeModel.__table__, trial_id, system_attrs)
        number = conn.execute(trials.select().with_only_columns(trials.c.number)
                              .where(trials.c.trial_id == trial_id)).scalar_one()
    return int(number), now


def set_params(storage: Any, trial_id: int, params: Sequence[tuple[str, float, Any]]) -> None:
    """Write a running trial's suggested parameters, each ``(name, internal value,
    distribution)``, in one transaction (``Trial.suggest_*`` writes each in its own, and
    checks it against the study's earlier trials: here every distribution comes from the
    space, which the study's name hashes, so it is the same on every trial). A trial that is
    not running raises optuna's ``UpdateFinishedTrialError`` and nothing is written."""
    from optuna.distributions import distribution_to_json
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    if not params:
        return
    trials, table = models.TrialModel.__table__, models.TrialParamModel.__table__
    with backend(storage).engine.begin() as conn:
        state = conn.execute(trials.select().with_only_columns(trials.c.state)
                             .where(trials.c.trial_id == trial_id)).scalar_one()
        if state != TrialState.RUNNING:
            raise UpdateFinishedTrialError(f"trial id {trial_id} is not running: its parameters cannot be set")
        conn.execute(table.insert(), [{"trial_id": trial_id, "param_name": name, "param_value": value,
                                       "distribution_json": distribution_to_json(dist)}
                                      for name, value, dist in params])


def finish(storage: Any, trial_id: int, state: Any, values: Sequence[float] | None,
           user_attrs: dict[str, Any], system_attrs: dict[str, Any]) -> None:
    """Finish running trial ``trial_id`` in ``state`` with its objective ``values``, user and
    system attributes, in one transaction (what ``Trial.set_user_attr``,
    ``Trial.set_constraint`` and ``Study.tell`` write). A trial that is not running raises
    optuna's ``UpdateFinishedTrialError`` and nothing is written."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    with backend(storage).engine.begin() as conn:
        if not _move(conn, trial_id, TrialState.RUNNING, state, "datetime_complete"):
            raise UpdateFinishedTrialError(f"trial id {trial_id} is not running: it cannot be finished again")
        _set_attrs(conn, models.TrialUserAttributeModel.__table__, trial_id, user_attrs)
        _set_attrs(conn, models.TrialSystemAttributeModel.__table__, trial_id, system_attrs)
        if values:
            table = models.TrialValueModel.__table__
            rows = []
            for objective, v in enumerate(values):
                stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                rows.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
            conn.execute(table.delete().where(table.c.trial_id == trial_id))
            conn.execute(table.insert(), rows)


def set_system_attr(storage: Any, trial_ids: Iterable[int], key: str, value: Any) -> None:
    """Set system attribute ``key`` of every running trial of ``trial_ids``, in one transaction
    (trials that finished meanwhile are left alone)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    ids = list(trial_ids)
    if not ids:
        return
    trials, table = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
    with backend(storage).engine.begin() as conn:
        running = [r[0] for r in conn.execute(trials.select().with_only_columns(trials.c.trial_id).where(
            trials.c.trial_id.in_(ids), trials.c.state == TrialState.RUNNING))]
        for trial_id in running:
            _set_attrs(conn, table, trial_id, {key: value})
