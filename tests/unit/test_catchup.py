"""The catch-up (misfire) policy of periodic tasks, pure (bgtasks.policies.catchup.plan)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bgtasks import stored
from bgtasks.models import CreateTaskOptions
from bgtasks.policies.catchup import MAX_RUN_ALL, plan, policy_of
from bgtasks.models import CreateTaskOptions

T = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(10)]
MISSED = [("b", T[2]), ("a", T[1]), ("c", T[3])]


def test_skip_drops_every_missed_run_and_creates_none() -> None:
    p = plan("skip", MISSED, [T[4]])
    assert sorted(p.delete) == ["a", "b", "c"] and p.create == [] and p.kept == 0
    assert plan(None, MISSED).delete == plan("skip", MISSED).delete  # skip is the default


def test_run_once_keeps_the_latest_missed_run() -> None:
    p = plan("run-once", MISSED)
    assert sorted(p.delete) == ["a", "b"] and p.kept == 1 and p.create == []
    # The latest occurrence had no run (the server was down): that one is created instead.
    p = plan("run-once", MISSED, [T[5], T[4]])
    assert sorted(p.delete) == ["a", "b", "c"] and p.create == [T[5]]
    assert plan("run-once", [], []).kept == 0


def test_run_all_runs_every_occurrence_oldest_first_capped() -> None:
    p = plan("run-all", MISSED, [T[0], T[4], T[2]])  # T[2] already has a run
    assert p.delete == [] and p.kept == 3 and p.create == [T[0], T[4]]
    many = [T[0] + timedelta(seconds=i) for i in range(MAX_RUN_ALL + 5)]
    p = plan("run-all", [("old", many[0] - timedelta(seconds=1))], many)
    assert p.delete == ["old"] and len(p.create) == MAX_RUN_ALL and p.create[0] == many[5]


def test_policy_is_read_from_the_stored_definition() -> None:
    def stored_with(**schedule: object) -> dict[str, object]:
        return stored.parameters_for(CreateTaskOptions.model_validate(
            {"name": "p", "handler": "demo", "schedule": {"type": "periodic", "interval": 60000, **schedule}}))

    assert policy_of(stored_with(catchUp="run-all")) == "run-all"
    assert policy_of(stored_with(catchUp="run-once")) == "run-once"
    assert policy_of(stored_with()) == "skip"
    assert policy_of(None) == "skip"
    assert policy_of({"task": {"schedule": "not a schedule"}}) == "skip"  # unreadable: the default


def test_catch_up_is_for_periodic_tasks_only() -> None:
    ok = CreateTaskOptions.model_validate({"name": "p", "schedule": {"type": "periodic", "interval": 60000,
                                                                      "catchUp": "run-once"}})
    assert ok.schedule.catch_up == "run-once" and ok.to_json_dict()["schedule"]["catchUp"] == "run-once"
    for bad in ({"type": "one-time", "catchUp": "skip"}, {"type": "periodic", "interval": 60000, "catchUp": "later"}):
        with pytest.raises(ValueError) as info:
            CreateTaskOptions.model_validate({"name": "p", "schedule": bad})
        assert "catchUp" in str(info.value)


def test_run_once_keeps_its_first_choice_while_it_waits() -> None:
    """Every slot busy: the run an earlier pass kept still waits when newer runs misfire; it
    stays the one run (tagged, so not among the missed) and the newer ones are dropped."""
    p = plan("run-once", MISSED, [T[5]], catching_up=True)
    assert p.delete == [rid for rid, _ in sorted(MISSED, key=lambda m: m[1])] and p.keep == [] and p.create == []
    assert plan("run-all", MISSED, catching_up=True).kept == len(MISSED)  # run-all runs them all anyway
