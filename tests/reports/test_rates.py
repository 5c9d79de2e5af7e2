"""Village rates: every figure checked against a hand count, on a real database."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.models import (
    Household,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
    Village,
)
from campaigns.questionnaire import (
    builtin_questionnaire,
    parse_questionnaire,
    store_version,
)
from reports import rates
from reports.cli import report_group
from reports.format import display_width, percent, text_table
from reports.rates import ReportError, meets_target
from tests.factories import (
    make_household,
    make_response,
    make_round,
    make_target,
    make_village,
)

RATE_KEYS = ["security", "satisfaction", "awareness", "participation", "cadre_contact"]
CONTRACT_FIGURES = {"positive", "valid", "rate", "target", "meets_target"}


def village_rates(session: Session, round_id: int, **options) -> dict:
    """The report as its JSON contract (what ``report rates --format json`` prints)."""
    return rates.village_rates(session, round_id, **options).to_json()


def answers(security: str, awareness: str, participation: str, satisfaction: str, cadre_contact: str) -> dict:
    """A completed interview's answers, in the default questionnaire's asking order."""
    out = {"consent": "1", "screen": "1", "security": security}
    if security in ("3", "4"):
        out["concern"] = "2"
    out.update(awareness=awareness, participation=participation, satisfaction=satisfaction)
    out["cadre_contact"] = cadre_contact
    return out


def seed_township(session: Session, **round_over) -> Round:
    """Four villages with hand-countable answers (the expected figures are in the tests).

    东村: 5 targets, 4 completed (one "说不清" on security and on satisfaction, one "记不清" on cadre_contact),
          1 never reached.
    北村: 2 targets, only an in-progress interview (every rate answered, not completed) and a refusal.
    西村: 2 targets, nobody reached.
    南村: 20 targets, 20 completed: security 20/20, satisfaction 19/20, awareness 19/20, participation 18/20,
          cadre_contact 17/20.
    """
    round_ = make_round(session, name="2024年上半年", status=RoundStatus.RUNNING, **round_over)

    east = make_village(session, name="东村")
    for given in [
        answers("1", "1", "1", "1", "1"),
        answers("2", "1", "2", "2", "1"),
        answers("3", "2", "2", "0", "0"),
        answers("0", "1", "1", "4", "2"),
    ]:
        target = make_target(session, round_, make_household(session, village=east), state=TargetState.COMPLETED)
        make_response(session, target, ResponseStatus.COMPLETED, given)
    make_target(session, round_, make_household(session, village=east))

    north = make_village(session, name="北村")
    partial = make_target(session, round_, make_household(session, village=north), state=TargetState.PENDING)
    make_response(session, partial, ResponseStatus.IN_PROGRESS, answers("1", "1", "1", "1", "1"))
    refused = make_target(session, round_, make_household(session, village=north), state=TargetState.REFUSED)
    make_response(session, refused, ResponseStatus.REFUSED, {"consent": "2"})

    west = make_village(session, name="西村")
    for _ in range(2):
        make_target(session, round_, make_household(session, village=west))

    south = make_village(session, name="南村")
    for i in range(20):
        given = answers(
            security="1" if i < 10 else "2",
            awareness="2" if i == 1 else "1",
            participation="2" if i in (2, 3) else "1",
            satisfaction="3" if i == 0 else "1",
            cadre_contact="2" if i in (4, 5, 6) else "1",
        )
        target = make_target(session, round_, make_household(session, village=south), state=TargetState.COMPLETED)
        make_response(session, target, ResponseStatus.COMPLETED, given)

    # A village with no target in this round does not appear.
    make_household(session, village=make_village(session, name="中村"))
    session.flush()
    return round_


def figures(positive: int, valid: int, target: float, meets: bool) -> dict:
    return {
        "positive": positive,
        "valid": valid,
        "rate": positive / valid if valid else None,
        "target": target,
        "meets_target": meets,
    }


def contract_part(rates: dict) -> dict:
    return {key: {name: value[name] for name in CONTRACT_FIGURES} for key, value in rates.items()}


def by_village(report: dict) -> dict[str, dict]:
    return {entry["village"]: entry for entry in report["villages"]}


# --- the figures ----------------------------------------------------------------------------------------


def test_villages_listed_by_name_with_sampled_and_completed(session: Session) -> None:
    round_ = seed_township(session)

    report = village_rates(session, round_.id)

    assert [entry["village"] for entry in report["villages"]] == ["东村", "北村", "南村", "西村"]
    assert [(e["sampled"], e["completed"]) for e in report["villages"]] == [(5, 4), (2, 0), (20, 20), (2, 0)]
    assert (report["total"]["village"], report["total"]["sampled"], report["total"]["completed"]) == ("全镇", 29, 24)


def test_numbers_in_village_names_sort_as_numbers(session: Session) -> None:
    round_ = make_round(session)
    for name in ("新村10组", "新村2组", "新村1组"):
        make_target(session, round_, make_household(session, village=make_village(session, name=name)))

    report = village_rates(session, round_.id)

    assert [entry["village"] for entry in report["villages"]] == ["新村1组", "新村2组", "新村10组"]


def test_unsure_counts_as_valid_and_not_positive_by_default(session: Session) -> None:
    round_ = seed_township(session)

    east = by_village(village_rates(session, round_.id))["东村"]

    assert contract_part(east["rates"]) == {
        "security": figures(2, 4, 1.0, False),
        "satisfaction": figures(2, 4, 0.95, False),
        "awareness": figures(3, 4, 0.95, False),
        "participation": figures(2, 4, 0.9, False),
        "cadre_contact": figures(2, 4, 0.9, False),
    }
    assert east["rates"]["security"]["unsure"] == 1
    assert east["rates"]["security"]["unsure_share"] == 0.25
    assert east["rates"]["satisfaction"]["unsure"] == 1
    # cadre_contact's "记不清" is not declared unsure: an ordinary not-positive answer.
    assert east["rates"]["cadre_contact"]["unsure"] == 0


def test_exclude_unsure_drops_unsure_from_valid_and_still_reports_it(session: Session) -> None:
    round_ = seed_township(session, exclude_unsure=True)

    report = village_rates(session, round_.id)
    east = by_village(report)["东村"]

    assert report["round"]["exclude_unsure"] is True
    assert contract_part(east["rates"]) == {
        "security": figures(2, 3, 1.0, False),
        "satisfaction": figures(2, 3, 0.95, False),
        "awareness": figures(3, 4, 0.95, False),
        "participation": figures(2, 4, 0.9, False),
        "cadre_contact": figures(2, 4, 0.9, False),
    }
    assert (east["rates"]["security"]["unsure"], east["rates"]["security"]["unsure_share"]) == (1, 0.25)
    total = report["total"]["rates"]
    assert (total["security"]["positive"], total["security"]["valid"]) == (22, 23)
    assert (total["satisfaction"]["positive"], total["satisfaction"]["valid"]) == (21, 23)
    assert total["security"]["unsure_share"] == 1 / 24


def test_targets_met_exactly_at_the_target(session: Session) -> None:
    round_ = seed_township(session)

    south = by_village(village_rates(session, round_.id))["南村"]

    assert contract_part(south["rates"]) == {
        "security": figures(20, 20, 1.0, True),
        "satisfaction": figures(19, 20, 0.95, True),
        "awareness": figures(19, 20, 0.95, True),
        "participation": figures(18, 20, 0.9, True),
        "cadre_contact": figures(17, 20, 0.9, False),
    }


def test_villages_without_completed_interviews_have_null_rates(session: Session) -> None:
    round_ = seed_township(session)

    villages = by_village(village_rates(session, round_.id))

    # 北村's in-progress interview answered every rate question; it still must not count.
    for name in ("北村", "西村"):
        assert contract_part(villages[name]["rates"]) == {
            "security": figures(0, 0, 1.0, False),
            "satisfaction": figures(0, 0, 0.95, False),
            "awareness": figures(0, 0, 0.95, False),
            "participation": figures(0, 0, 0.9, False),
            "cadre_contact": figures(0, 0, 0.9, False),
        }
        assert villages[name]["rates"]["security"]["unsure_share"] is None


def test_total_row_sums_every_village(session: Session) -> None:
    round_ = seed_township(session)

    total = village_rates(session, round_.id)["total"]

    assert contract_part(total["rates"]) == {
        "security": figures(22, 24, 1.0, False),
        "satisfaction": figures(21, 24, 0.95, False),
        "awareness": figures(22, 24, 0.95, False),
        "participation": figures(20, 24, 0.9, False),
        "cadre_contact": figures(19, 24, 0.9, False),
    }
    assert (total["rates"]["security"]["unsure"], total["rates"]["satisfaction"]["unsure"]) == (1, 1)


def test_other_rounds_do_not_leak_in(session: Session) -> None:
    round_ = seed_township(session)
    other = make_round(session, name="另一轮")
    village = make_village(session, name="东村二组")
    for household in [make_household(session, village=village) for _ in range(3)]:
        make_response(
            session, make_target(session, other, household), ResponseStatus.COMPLETED, answers("4", "2", "2", "4", "2")
        )

    report = village_rates(session, round_.id)

    assert [entry["village"] for entry in report["villages"]] == ["东村", "北村", "南村", "西村"]
    assert report["total"]["rates"]["security"]["valid"] == 24
    other_report = village_rates(session, other.id)
    assert [(e["village"], e["completed"]) for e in other_report["villages"]] == [("东村二组", 3)]
    assert contract_part(other_report["total"]["rates"])["security"] == figures(0, 3, 1.0, False)


def test_uses_the_rounds_stored_questionnaire_version(session: Session) -> None:
    content = copy.deepcopy(dict(builtin_questionnaire().content))
    content["rates"]["awareness"]["target"] = 0.5
    security = next(step for step in content["steps"] if step["key"] == "security")
    security["positive"] = ["1"]  # this version counts only 安全, not 基本安全
    version = store_version(session, parse_questionnaire(content, "test"))
    round_ = make_round(session, questionnaire_id=version.id)
    village = make_village(session, name="试点村")
    for given in (answers("1", "1", "1", "1", "1"), answers("2", "2", "1", "1", "1")):
        make_response(
            session,
            make_target(session, round_, make_household(session, village=village)),
            ResponseStatus.COMPLETED,
            given,
        )

    rates = village_rates(session, round_.id)["villages"][0]["rates"]

    assert (rates["security"]["positive"], rates["security"]["valid"]) == (1, 2)
    assert (rates["awareness"]["rate"], rates["awareness"]["target"], rates["awareness"]["meets_target"]) == (
        0.5,
        0.5,
        True,
    )


def test_round_section(session: Session) -> None:
    round_ = seed_township(session)

    section = village_rates(session, round_.id)["round"]

    assert {key: section[key] for key in ("id", "name", "status", "questionnaire", "exclude_unsure")} == {
        "id": round_.id,
        "name": "2024年上半年",
        "status": "running",
        "questionnaire": "default",
        "exclude_unsure": False,
    }
    assert list(section["rate_labels"]) == RATE_KEYS


def test_round_without_targets_has_no_villages(session: Session) -> None:
    round_ = make_round(session)

    report = village_rates(session, round_.id)

    assert report["villages"] == []
    assert (report["total"]["sampled"], report["total"]["completed"]) == (0, 0)
    assert report["total"]["rates"]["security"]["rate"] is None


def test_unknown_round_raises(session: Session) -> None:
    with pytest.raises(ReportError, match="round 999 does not exist"):
        village_rates(session, 999)


@pytest.mark.parametrize(
    ("positive", "valid", "target", "meets"),
    [
        (19, 20, 0.95, True),
        (18, 20, 0.9, True),
        (94, 100, 0.95, False),
        (1, 1, 1.0, True),
        (99, 100, 1.0, False),
        (55, 100, 0.55, True),  # in floats 0.55 * 100 is 55.00000000000001, so 55 >= 0.55 * 100 is False
        (0, 0, 0.0, False),  # no valid answers never meets a target
    ],
)
def test_meets_target_is_exact(positive: int, valid: int, target: float, meets: bool) -> None:
    assert meets_target(positive, valid, target) is meets


# --- formatting -----------------------------------------------------------------------------------------


def test_percent_rounds_down() -> None:
    assert [percent(24, 25), percent(19, 20), percent(1999, 2000), percent(2, 3)] == [
        "96.0%",
        "95.0%",
        "99.9%",
        "66.6%",
    ]


def test_text_table_aligns_chinese_text() -> None:
    table = text_table(["村", "完成"], [["东村", "4"], ["南村二组", "20"]], [["全镇", "24"]])

    lines = table.splitlines()
    assert len(lines) == 6
    assert len({display_width(line) for line in lines}) == 1


# --- the command ----------------------------------------------------------------------------------------


def test_cli_json_is_the_contract(session: Session, env) -> None:
    round_ = seed_township(session)
    round_id = round_.id
    session.commit()

    result = CliRunner().invoke(report_group, ["rates", str(round_id), "--format", "json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"round", "villages", "total"}
    assert report["round"]["id"] == round_id
    for entry in [*report["villages"], report["total"]]:
        # The contract's keys stay; later fields are additions.
        assert {"village", "sampled", "completed", "rates"} <= set(entry)
        assert list(entry["rates"]) == RATE_KEYS
        for rate in entry["rates"].values():
            assert CONTRACT_FIGURES <= set(rate)
    satisfaction = by_village(report)["南村"]["rates"]["satisfaction"]
    assert satisfaction == {
        **figures(19, 20, 0.95, True),
        "unsure": 0,
        "unsure_share": 0.0,
        "negative": 1,
        "too_few": False,
        "rank": 1,
        "ci_low": satisfaction["ci_low"],
        "ci_high": satisfaction["ci_high"],
    }
    assert (round(satisfaction["ci_low"], 4), round(satisfaction["ci_high"], 4)) == (0.7639, 0.9911)
    assert report["total"]["village"] == "全镇"
    assert "\\u" not in result.stdout  # Chinese as written, not escaped


def test_cli_table(session: Session, env) -> None:
    round_ = seed_township(session)
    round_id = round_.id
    session.commit()

    result = CliRunner().invoke(report_group, ["rates", str(round_id)])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("村"))
    for label in (
        "抽样",
        "完成",
        "群众安全感率",
        "执法满意率",
        "平安建设知晓率",
        "平安建设参与率",
        "干部联系率(重视率)",
    ):
        assert label in header
    south = next(line for line in lines if line.startswith("南村"))
    assert "100.0% (20/20)" in south
    assert "95.0% (19/20)" in south and "95.0% (19/20) ✗" not in south
    assert "85.0% (17/20) ✗" in south
    east = next(line for line in lines if line.startswith("东村"))
    assert "50.0% (2/4) ✗" in east
    west = next(line for line in lines if line.startswith("西村"))
    assert west.split()[:3] == ["西村", "2", "0"] and "—" in west
    total = next(line for line in lines if line.startswith("全镇"))
    assert total.split()[:5] == ["全镇", "29", "24", "91.6%", "(22/24)"]


def test_cli_output_file(session: Session, env, tmp_path: Path) -> None:
    round_ = seed_township(session)
    round_id = round_.id
    session.commit()
    path = tmp_path / "rates.json"

    result = CliRunner().invoke(report_group, ["rates", str(round_id), "--format", "json", "--output", str(path)])

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(path.read_text(encoding="utf-8"))["total"]["completed"] == 24


def test_cli_unknown_round_exits_non_zero(env) -> None:
    result = CliRunner().invoke(report_group, ["rates", "999"])

    assert result.exit_code != 0
    assert result.stderr.strip() == "Error: round 999 does not exist"


# --- progress, intervals, small samples -----------------------------------------------------------------

PROGRESS_KEYS = [
    "sampled",
    "dialled",
    "reached",
    "completed",
    "refused",
    "ineligible",
    "opted_out",
    "partial",
    "not_reached",
    "waiting",
]


def progress(entry: dict) -> dict:
    return {key: entry[key] for key in PROGRESS_KEYS}


def test_progress_of_each_village_in_the_seeded_township(session: Session) -> None:
    round_ = seed_township(session)

    report = village_rates(session, round_.id)
    villages = by_village(report)

    # Factories leave attempts at 0: a target counts as dialled once it has a response.
    assert progress(villages["东村"]) == dict(zip(PROGRESS_KEYS, [5, 4, 4, 4, 0, 0, 0, 0, 0, 1], strict=True))
    assert villages["东村"]["response_rate"] == 0.8
    assert progress(villages["北村"]) == dict(zip(PROGRESS_KEYS, [2, 2, 2, 0, 1, 0, 0, 1, 0, 0], strict=True))
    assert villages["北村"]["response_rate"] == 0.0
    assert progress(villages["西村"]) == dict(zip(PROGRESS_KEYS, [2, 0, 0, 0, 0, 0, 0, 0, 0, 2], strict=True))
    assert progress(report["total"]) == dict(zip(PROGRESS_KEYS, [29, 26, 26, 24, 1, 0, 0, 1, 0, 3], strict=True))
    assert report["total"]["response_rate"] == 24 / 29


def test_every_way_a_target_can_end(session: Session) -> None:
    round_ = make_round(session)
    village = make_village(session, name="试验村")

    def target(state: TargetState, attempts: int, status: ResponseStatus | None = None, given: dict | None = None):
        t = make_target(session, round_, make_household(session, village=village), state=state, attempts=attempts)
        if status is not None:
            make_response(session, t, status, given if given is not None else {"consent": "1"})

    target(TargetState.COMPLETED, 2, ResponseStatus.COMPLETED, answers("1", "1", "1", "1", "1"))
    target(TargetState.REFUSED, 1, ResponseStatus.REFUSED, {"consent": "2"})
    target(TargetState.INELIGIBLE, 1, ResponseStatus.INELIGIBLE, {"consent": "1", "screen": "2"})
    target(TargetState.OPTED_OUT, 1, ResponseStatus.OPTED_OUT)
    target(TargetState.UNREACHABLE, 3, ResponseStatus.IN_PROGRESS)  # dropped mid-survey, attempts used up
    target(TargetState.PENDING, 1, ResponseStatus.IN_PROGRESS)  # dropped, a retry is scheduled
    target(TargetState.UNREACHABLE, 3)  # never answered
    target(TargetState.INVALID, 1)  # a dead number
    target(TargetState.CANCELLED, 0)  # the round was cancelled before it was dialled
    target(TargetState.DIALING, 1)  # ringing now
    target(TargetState.PENDING, 0)

    entry = village_rates(session, round_.id)["villages"][0]

    assert progress(entry) == {
        "sampled": 11,
        "dialled": 9,
        "reached": 6,
        "completed": 1,
        "refused": 1,
        "ineligible": 1,
        "opted_out": 1,
        "partial": 2,
        "not_reached": 3,
        "waiting": 2,
    }
    assert sum(entry[key] for key in PROGRESS_KEYS[3:]) == entry["sampled"]
    assert entry["response_rate"] == 1 / 10  # the ineligible household is out of scope


def test_wilson_interval_of_each_rate(session: Session) -> None:
    round_ = seed_township(session)

    report = village_rates(session, round_.id)
    south = by_village(report)["南村"]["rates"]

    assert (south["security"]["ci_low"], south["security"]["ci_high"]) == (pytest.approx(0.8389, abs=1e-4), 1.0)
    assert south["participation"]["ci_low"] == pytest.approx(0.6990, abs=1e-4)  # 18/20
    assert south["participation"]["ci_high"] == pytest.approx(0.9721, abs=1e-4)
    west = by_village(report)["西村"]["rates"]["security"]
    assert (west["ci_low"], west["ci_high"]) == (None, None)


def test_too_few_answers_to_judge_below_the_minimum_sample(session: Session) -> None:
    round_ = seed_township(session, exclude_unsure=True)

    default = by_village(village_rates(session, round_.id))
    assert default["东村"]["too_few"] and default["东村"]["rates"]["awareness"]["too_few"]
    assert not default["南村"]["too_few"] and not default["南村"]["rates"]["awareness"]["too_few"]
    assert village_rates(session, round_.id)["round"]["min_sample"] == 10

    # With 4 the bar is the valid answers of each rate: 东村 has 4 for awareness but 3 for security once
    # its 说不清 is excluded.
    four = by_village(village_rates(session, round_.id, min_sample=4))
    assert not four["东村"]["too_few"]
    assert not four["东村"]["rates"]["awareness"]["too_few"]
    assert four["东村"]["rates"]["security"]["too_few"]
    assert four["西村"]["rates"]["security"]["too_few"]  # no answers at all
    with pytest.raises(ValueError):
        village_rates(session, round_.id, min_sample=0)


# --- rankings and the accountability rules --------------------------------------------------------------


def test_ranks_on_each_rate_and_on_dissatisfied_answers(session: Session) -> None:
    round_ = seed_township(session)

    villages = by_village(village_rates(session, round_.id))

    assert {name: villages[name]["rates"]["satisfaction"]["rank"] for name in villages} == {
        "东村": 2,
        "北村": None,
        "南村": 1,
        "西村": None,
    }
    # 东村: 不太安全 once and 不满意 once; 南村: 不太满意 once. 说不清 is not dissatisfied.
    assert {name: (v["dissatisfied"], v["dissatisfied_rank"]) for name, v in villages.items()} == {
        "东村": (2, 1),
        "北村": (0, None),
        "南村": (1, 2),
        "西村": (0, None),
    }
    assert villages["东村"]["rates"]["security"]["negative"] == 1
    assert villages["东村"]["rates"]["cadre_contact"]["negative"] == 2  # 没有 and 记不清


def test_equal_rates_share_a_rank(session: Session) -> None:
    round_ = make_round(session)
    results = {"甲村": ["1", "2"], "乙村": ["1", "2", "2", "1"], "丙村": ["1"], "丁村": ["2", "2"]}
    for name, awareness in results.items():
        village = make_village(session, name=name)
        for digit in awareness:
            make_response(
                session,
                make_target(session, round_, make_household(session, village=village)),
                ResponseStatus.COMPLETED,
                answers("1", digit, "1", "1", "1"),
            )

    villages = by_village(village_rates(session, round_.id))

    assert {name: villages[name]["rates"]["awareness"]["rank"] for name in results} == {
        "丙村": 1,
        "甲村": 2,
        "乙村": 2,
        "丁村": 4,
    }
    assert {name: villages[name]["dissatisfied_rank"] for name in results} == dict.fromkeys(results, 1)
    assert village_rates(session, round_.id)["total"]["rates"]["awareness"]["rank"] is None


def _round_with(
    session: Session, name: str, status: RoundStatus, launched_day: int | None, villages: dict[str, list[dict]]
) -> Round:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    round_ = make_round(
        session,
        name=name,
        status=status,
        created_at=start + timedelta(days=launched_day or 0),
        launched_at=start + timedelta(days=launched_day) if launched_day is not None else None,
    )
    for village_name, interviews in villages.items():
        village = _village(session, village_name)
        for given in interviews:
            make_response(
                session,
                make_target(session, round_, make_household(session, village=village)),
                ResponseStatus.COMPLETED,
                given,
            )
    return round_


def _village(session: Session, name: str):
    from sqlalchemy import select

    from campaigns.models import Village

    return session.scalar(select(Village).where(Village.name == name)) or make_village(session, name=name)


GOOD = answers("1", "1", "1", "1", "1")
UNAWARE = answers("1", "2", "1", "1", "1")
UNSAFE = answers("4", "1", "1", "1", "1")


def test_accountability_flags_over_two_consecutive_rounds(session: Session) -> None:
    # 甲村 is the most dissatisfied in both rounds; 乙村 misses the awareness target in both; 丙村 only now.
    _round_with(session, "2025年上半年", RoundStatus.COMPLETED, 0, {"甲村": [UNSAFE, GOOD], "乙村": [UNAWARE, GOOD]})
    previous = _round_with(
        session,
        "2025年下半年",
        RoundStatus.COMPLETED,
        100,
        {"甲村": [UNSAFE, UNSAFE], "乙村": [UNAWARE, GOOD], "丙村": [GOOD, GOOD]},
    )
    _round_with(session, "试点（未结束）", RoundStatus.PAUSED, 150, {"乙村": [GOOD], "丙村": [UNSAFE, UNSAFE, UNSAFE]})
    current = _round_with(
        session,
        "2026年上半年",
        RoundStatus.RUNNING,
        200,
        {"甲村": [UNSAFE, GOOD], "乙村": [UNAWARE, GOOD], "丙村": [UNAWARE, GOOD]},
    )
    _round_with(session, "2026年下半年", RoundStatus.COMPLETED, 300, {"乙村": [GOOD]})

    report = village_rates(session, current.id)
    villages = by_village(report)

    assert report["round"]["previous_round"] == {"id": previous.id, "name": "2025年下半年"}
    assert villages["甲村"]["flags"] == {"most_dissatisfied_twice": True, "below_target_twice": ["security"]}
    assert villages["乙村"]["flags"] == {"most_dissatisfied_twice": False, "below_target_twice": ["awareness"]}
    # 丙村 met every target last time: once below is not twice.
    assert villages["丙村"]["flags"] == {"most_dissatisfied_twice": False, "below_target_twice": []}


def test_no_flags_without_a_previous_ended_round(session: Session) -> None:
    first = _round_with(session, "第一轮", RoundStatus.COMPLETED, 10, {"甲村": [UNSAFE]})
    _round_with(session, "草稿", RoundStatus.DRAFT, None, {"甲村": [UNSAFE]})

    report = village_rates(session, first.id)

    assert report["round"]["previous_round"] is None
    assert by_village(report)["甲村"]["flags"] == {"most_dissatisfied_twice": False, "below_target_twice": []}


def test_most_dissatisfied_needs_dissatisfied_answers(session: Session) -> None:
    _round_with(session, "上一轮", RoundStatus.COMPLETED, 0, {"甲村": [GOOD], "乙村": [GOOD]})
    current = _round_with(session, "本轮", RoundStatus.COMPLETED, 10, {"甲村": [GOOD], "乙村": [GOOD]})

    villages = by_village(village_rates(session, current.id))

    # Both tie at rank 1 with no dissatisfied answer: nobody is "the most dissatisfied".
    assert villages["甲村"]["dissatisfied_rank"] == 1
    assert not villages["甲村"]["flags"]["most_dissatisfied_twice"]


# --- targets --------------------------------------------------------------------------------------------


def test_effective_targets_apply_valid_overrides_only() -> None:
    from reports.rates import effective_targets

    questionnaire = builtin_questionnaire()

    targets = effective_targets(
        questionnaire, {"participation": 0.8, "cadre_contact": 1, "awareness": 1.5, "security": "x", "bogus": 0.1}
    )

    assert targets == {
        "security": 1.0,
        "satisfaction": 0.95,
        "awareness": 0.95,
        "participation": 0.8,
        "cadre_contact": 1.0,
    }


def test_round_target_overrides_are_used(session: Session) -> None:
    round_ = seed_township(session, rate_targets={"participation": 0.8})

    south = by_village(village_rates(session, round_.id))["南村"]["rates"]["participation"]

    assert (south["target"], south["meets_target"]) == (0.8, True)


def test_cli_min_sample_option_and_table_sections(session: Session, env) -> None:
    round_ = seed_township(session)
    round_id = round_.id
    session.commit()

    as_json = CliRunner().invoke(report_group, ["rates", str(round_id), "--format", "json", "--min-sample", "4"])
    table = CliRunner().invoke(report_group, ["rates", str(round_id)])
    bad = CliRunner().invoke(report_group, ["rates", str(round_id), "--min-sample", "0"])

    assert as_json.exit_code == 0, as_json.output
    east = by_village(json.loads(as_json.stdout))["东村"]
    assert not east["too_few"] and east["rates"]["security"]["too_few"] is False
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    east_line = next(line for line in lines if line.startswith("东村"))
    assert "50.0% (2/4) ✗*" in east_line  # below target, and 4 answers are too few (default 10)
    assert "调查完成情况" in table.stdout and "排名与问责提示" in table.stdout
    assert "没有更早结束的轮次" in table.stdout
    assert bad.exit_code != 0 and "--min-sample" in bad.output


# --- the copies the report reads (see "Report figures" in campaigns.models) --------------------------------


def test_a_household_moved_by_a_roster_import_counts_in_its_new_village(session: Session, tmp_path: Path) -> None:
    from campaigns.roster import import_roster

    round_ = seed_township(session)
    moved = session.scalars(
        select(Household)
        .join(RoundTarget, RoundTarget.household_id == Household.id)
        .join(Village, Village.id == Household.village_id)
        .where(Village.name == "东村", RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.COMPLETED)
        .order_by(Household.id)
        .limit(1)
    ).one()  # the first: security 1, satisfaction 1, awareness 1, participation 1, cadre_contact 1
    roster = tmp_path / "moved.csv"
    roster.write_text(f"村,电话,干部,干部电话\n南村,{moved.phone},新干部,13900009999\n", encoding="utf-8")

    import_roster(session, roster)
    session.flush()
    report = by_village(village_rates(session, round_.id))

    east, south = report["东村"], report["南村"]
    assert (east["sampled"], east["completed"]) == (4, 3)
    assert (south["sampled"], south["completed"]) == (21, 21)
    assert (east["rates"]["security"]["positive"], east["rates"]["security"]["valid"]) == (1, 3)  # 2, 3, 0 left
    assert (south["rates"]["security"]["positive"], south["rates"]["security"]["valid"]) == (21, 21)
    assert (south["rates"]["satisfaction"]["positive"], south["rates"]["satisfaction"]["valid"]) == (20, 21)
    assert report["东村"]["sampled"] + report["南村"]["sampled"] == 25  # nothing lost or counted twice


def test_answers_count_once_their_response_completes(session: Session) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING)
    village = make_village(session, name="一村")
    target = make_target(session, round_, make_household(session, village=village), state=TargetState.IN_CALL)
    response = make_response(session, target, ResponseStatus.IN_PROGRESS, answers("1", "1", "1", "1", "1"))

    before = by_village(village_rates(session, round_.id))["一村"]
    response.status = ResponseStatus.COMPLETED
    session.flush()
    after = by_village(village_rates(session, round_.id))["一村"]

    assert (before["partial"], before["completed"], before["rates"]["security"]["valid"]) == (1, 0, 0)
    assert (after["partial"], after["completed"], after["rates"]["security"]["valid"]) == (0, 1, 1)
    assert target.response_status == ResponseStatus.COMPLETED  # the loaded target sees the copy too
