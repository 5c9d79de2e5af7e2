"""The typed reports and their one column specification: the JSON contract key by key, every format of every
report drawn from the same tables, and a new column showing up everywhere from one edit."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields

import pytest
from openpyxl import load_workbook
from sqlalchemy.orm import Session

from campaigns.followups import sync_followups
from campaigns.models import FollowUpStatus, RoundStatus
from reports import rates
from reports.cadres import CadresReport, cadre_overview
from reports.columns import Column, Kind
from reports.compare import CompareReport, compare_rounds
from reports.followups import FollowUpCounts, FollowUpReport, VillageFollowUps, followup_report
from reports.format import floor_percent
from reports.rates import RatesReport, village_rates
from reports.render import FORMATS, formats_of, rates_for, render_bytes
from tests.factories import interview_answers, make_interview, make_round
from tests.reports.scenarios import visits_township

RATE_FIGURE_KEYS = [
    "positive",
    "valid",
    "rate",
    "target",
    "meets_target",
    "ci_low",
    "ci_high",
    "too_few",
    "unsure",
    "unsure_share",
    "negative",
    "rank",
]
ROUND_KEYS = [
    "id",
    "name",
    "status",
    "questionnaire",
    "questionnaire_version",
    "exclude_unsure",
    "launched_at",
    "finished_at",
    "rate_labels",
    "targets",
]
ITEM_KEYS = [
    "id",
    "round_id",
    "cadre",
    "cadre_id",
    "village",
    "village_id",
    "household",
    "household_id",
    "phone",
    "negatives",
    "concern",
    "concern_key",
    "status",
    "status_label",
    "note",
    "created_at",
    "updated_at",
    "overdue",
]


@pytest.fixture
def visits(session: Session):
    visits = visits_township(session)
    sync_followups(session, visits.round.id)
    return visits


# --- the JSON contract, key for key and in order ----------------------------------------------------------


def test_rates_json_keys_in_contract_order(session: Session, visits) -> None:
    report = village_rates(session, visits.round.id).to_json()

    assert list(report) == ["round", "villages", "total"]
    assert list(report["round"]) == [
        *ROUND_KEYS,
        "min_sample",
        "confidence",
        "dissatisfaction_questions",
        "previous_round",
    ]
    entry_keys = [
        "village",
        "village_id",
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
        "completed_inbound",
        "response_rate",
        "too_few",
        "rates",
        "dissatisfied",
        "dissatisfied_rank",
        "visit_requested",
        "visit_declined",
        "flags",
    ]
    for entry in [*report["villages"], report["total"]]:
        assert list(entry) == entry_keys
        assert list(entry["flags"]) == ["most_dissatisfied_twice", "below_target_twice"]
        for figures in entry["rates"].values():
            assert list(figures) == RATE_FIGURE_KEYS
    assert report["round"]["launched_at"] is None and isinstance(report["round"]["targets"]["security"], float)
    json.dumps(report)  # plain JSON data all the way down


def test_followups_json_keys_in_contract_order(session: Session, visits) -> None:
    office = followup_report(session, visits.round.id).to_json()
    own = followup_report(session, visits.round.id, cadre_id=visits.cadres["lin"].id, own=True).to_json()

    assert list(office) == ["round", "cadre", "phones_masked", "items", "summary", "villages"]
    assert list(own) == ["round", "cadre", "phones_masked", "items", "summary"]
    assert list(office["round"]) == [*ROUND_KEYS, "overdue_days", "concern_labels", "status_labels"]
    assert list(office["items"][0]) == ITEM_KEYS
    assert list(office["summary"]) == ["total", "pending", "visited", "resolved", "unreachable", "open", "overdue"]
    assert list(office["villages"][0]) == [
        "village",
        "village_id",
        "requested",
        "declined",
        "pending",
        "visited",
        "resolved",
        "unreachable",
        "open",
        "overdue",
    ]
    assert own["cadre"] == {"id": visits.cadres["lin"].id, "name": "林建明"}
    assert isinstance(office["items"][0]["created_at"], str)


def test_a_streamed_list_is_the_same_list(session: Session, visits) -> None:
    listed = followup_report(session, visits.round.id)
    streamed = followup_report(session, visits.round.id, stream=True)

    assert streamed.to_json() == listed.to_json()
    assert render_bytes(streamed, "csv") == render_bytes(listed, "csv")
    assert render_bytes(streamed, "table") == render_bytes(listed, "table")  # read twice: items and summary


def test_cadres_and_compare_json_keys(session: Session, visits) -> None:
    cadres = cadre_overview(session, visits.round.id).to_json()
    later = make_round(session, status=RoundStatus.COMPLETED)
    make_interview(session, later, interview_answers())
    compared = compare_rounds(session, visits.round.id, later.id).to_json()

    assert list(cadres) == ["round", "cadres", "total"]
    assert list(cadres["round"]) == [*ROUND_KEYS, "min_sample", "overdue_days", "delivery_check"]
    assert list(cadres["cadres"][0]) == [
        "cadre_id",
        "cadre",
        "phone",
        "villages",
        "households",
        "sampled",
        "reached",
        "completed",
        "contact",
        "delivery",
        "followups",
    ]
    assert list(cadres["cadres"][0]["contact"]) == RATE_FIGURE_KEYS
    assert list(cadres["cadres"][0]["delivery"]) == [
        "positive", "valid", "rate", "ci_low", "ci_high", "too_few", "unsure", "check"
    ]  # fmt: skip
    assert list(cadres["total"]) == [
        "cadre", "households", "sampled", "reached", "completed", "contact", "delivery", "followups"
    ]  # fmt: skip
    assert list(compared) == ["round_a", "round_b", "alpha", "rate_labels", "villages", "total"]
    assert list(compared["villages"][0]) == ["village", "village_id", "rates"]
    assert list(compared["total"]["rates"]["security"]) == [
        "a",
        "b",
        "change",
        "z",
        "p_value",
        "significant",
        "direction",
    ]
    assert list(compared["total"]["rates"]["security"]["a"]) == ["positive", "valid", "rate"]


def test_follow_up_counts_have_a_field_for_every_status() -> None:
    statuses = [status.value for status in FollowUpStatus]

    assert [f.name for f in fields(FollowUpCounts)] == ["total", *statuses, "open", "overdue"]
    assert [f.name for f in fields(VillageFollowUps)][4:-2] == statuses


# --- every format of every report ------------------------------------------------------------------------


def test_every_report_renders_in_each_of_its_formats(session: Session, visits) -> None:
    later = make_round(session, status=RoundStatus.COMPLETED)
    make_interview(session, later, interview_answers(satisfaction="4"))
    reports = {
        RatesReport: rates_for(session, visits.round.id, "html"),
        CompareReport: compare_rounds(session, visits.round.id, later.id),
        FollowUpReport: followup_report(session, visits.round.id),
        CadresReport: cadre_overview(session, visits.round.id),
    }

    assert formats_of(RatesReport) == ("table", "json", "csv", "xlsx", "html")
    for kind, report in reports.items():
        assert formats_of(kind) == formats_of(RatesReport)[: 4 + (kind is RatesReport)]
        for fmt in formats_of(kind):
            body = render_bytes(report, fmt)
            if FORMATS[fmt].binary:
                assert load_workbook(io.BytesIO(body)).sheetnames
            else:
                text = body.decode("utf-8")
                assert text.endswith("\n") and "东村" in text, (kind.__name__, fmt)
    with pytest.raises(ValueError, match="no html format"):
        render_bytes(reports[CadresReport], "html")


def test_a_new_column_is_one_edit(session: Session, visits, monkeypatch) -> None:
    """Adding a column to a table of the specification shows it in the terminal, CSV, XLSX and HTML alike."""
    extra = Column("progress.reached", "新增一列", Kind.INT)
    monkeypatch.setattr(rates, "PROGRESS", [*rates.PROGRESS, extra])
    report = rates_for(session, visits.round.id, "html")

    table = render_bytes(report, "table").decode("utf-8")
    header = next(csv.reader(io.StringIO(render_bytes(report, "csv").decode("utf-8-sig"))))
    sheet = load_workbook(io.BytesIO(render_bytes(report, "xlsx")))["调查进度"]
    html = render_bytes(report, "html").decode("utf-8")

    assert "新增一列" in table
    assert header.count("新增一列") == 1
    assert [c.value for c in sheet[1]][-1] == "新增一列"
    assert [row[-1].value for row in sheet.iter_rows(min_row=2)] == [
        entry.progress.reached for entry in [*report.villages, report.total]
    ]
    assert "<th>新增一列</th>" in html


def test_a_column_shown_in_some_formats_only(session: Session, visits) -> None:
    """The rate is one cell for people and a figure per column in a spreadsheet; notes stay off the page."""
    report = followup_report(session, visits.round.id)
    cadres = cadre_overview(session, visits.round.id)

    cadres_header = next(line for line in render_bytes(cadres, "table").decode("utf-8").splitlines() if line.startswith("干部"))
    cadres_csv = next(csv.reader(io.StringIO(render_bytes(cadres, "csv").decode("utf-8-sig"))))
    assert "重视率" in cadres_header and "联系过" not in cadres_header
    assert "重视率" in cadres_csv and "联系过" in cadres_csv
    assert "更新时间" not in render_bytes(report, "table").decode("utf-8")
    rates_page = render_bytes(rates_for(session, visits.round.id, "html"), "html").decode("utf-8")
    assert "回访名单" in rates_page and "备注" not in rates_page


def test_floor_percent_rounds_down_on_both_sides_of_zero() -> None:
    assert [floor_percent(x) for x in (0.43083, -0.43083, -0.05, 0.0, -0.0004, 1.0)] == [
        "43.0%",
        "-43.1%",
        "-5.0%",
        "0.0%",
        "-0.1%",
        "100.0%",
    ]
