"""The report settings: read from the environment, validated, and used by the commands."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings, SettingsError, load_settings
from reports.cli import report_group
from tests.factories import interview_answers, make_interview, make_round, make_village


def test_defaults() -> None:
    settings = load_settings({})

    assert (settings.report_min_sample, settings.followup_overdue_days) == (10, 7)


def test_read_from_the_environment() -> None:
    settings = load_settings({"SANLV_REPORT_MIN_SAMPLE": "25", "SANLV_FOLLOWUP_OVERDUE_DAYS": "3"})

    assert (settings.report_min_sample, settings.followup_overdue_days) == (25, 3)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANLV_REPORT_MIN_SAMPLE", "0"),
        ("SANLV_REPORT_MIN_SAMPLE", "ten"),
        ("SANLV_FOLLOWUP_OVERDUE_DAYS", "-1"),
        ("SANLV_FOLLOWUP_OVERDUE_DAYS", "1.5"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_the_commands_use_the_settings(session: Session, env: Settings) -> None:
    round_ = make_round(session)
    village = make_village(session, name="东村")
    for _ in range(3):
        make_interview(session, round_, interview_answers(), village=village)
    round_id = round_.id
    session.commit()
    runtime = Runtime(replace(env, report_min_sample=3, followup_overdue_days=2))
    set_runtime(runtime)

    rates = json.loads(CliRunner().invoke(report_group, ["rates", str(round_id), "--format", "json"]).stdout)
    followups = json.loads(CliRunner().invoke(report_group, ["followups", str(round_id), "--format", "json"]).stdout)

    assert rates["round"]["min_sample"] == 3 and rates["villages"][0]["too_few"] is False
    assert followups["round"]["overdue_days"] == 2
