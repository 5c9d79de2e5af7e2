"""Round comparison: the change per village and rate, and whether it exceeds the noise."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from campaigns.models import RoundStatus
from reports import compare
from reports.cli import report_group
from reports.rates import ReportError
from tests.factories import interview_answers, make_interview, make_round, make_village


def satisfied(count: int, of: int) -> list[dict]:
    return [interview_answers(satisfaction="1" if i < count else "4") for i in range(of)]


@pytest.fixture
def two_rounds(session: Session):
    """东村 satisfaction 12/20 -> 19/20 (a real change); 西村 18/20 -> 17/20 (noise); 南村 only in A; 北村 only
    in B."""
    villages = {name: make_village(session, name=name) for name in ("东村", "西村", "南村", "北村")}
    a = make_round(session, name="2025年下半年", status=RoundStatus.COMPLETED)
    b = make_round(session, name="2026年上半年", status=RoundStatus.COMPLETED)
    for round_, plan in (
        (a, {"东村": (12, 20), "西村": (18, 20), "南村": (5, 5)}),
        (b, {"东村": (19, 20), "西村": (17, 20), "北村": (2, 2)}),
    ):
        for name, (count, of) in plan.items():
            for given in satisfied(count, of):
                make_interview(session, round_, given, village=villages[name])
    session.flush()
    return a, b


def compare_rounds(session: Session, round_a: int, round_b: int, **options) -> dict:
    """The comparison as its JSON contract."""
    return compare.compare_rounds(session, round_a, round_b, **options).to_json()


def test_change_and_significance_per_village(session: Session, two_rounds) -> None:
    a, b = two_rounds

    report = compare_rounds(session, a.id, b.id)
    villages = {entry["village"]: entry for entry in report["villages"]}

    assert (report["round_a"]["id"], report["round_b"]["id"], report["alpha"]) == (a.id, b.id, 0.05)
    assert list(villages) == ["东村", "北村", "南村", "西村"]
    east = villages["东村"]["rates"]["satisfaction"]
    assert east["a"] == {"positive": 12, "valid": 20, "rate": 0.6}
    assert east["b"] == {"positive": 19, "valid": 20, "rate": 0.95}
    assert east["change"] == pytest.approx(0.35)
    # R: prop.test(c(12, 19), c(20, 20), correct = FALSE): X-squared = 7.0251, p-value = 0.008037
    assert east["z"] ** 2 == pytest.approx(7.0251, abs=1e-4)
    assert east["p_value"] == pytest.approx(0.008037, abs=1e-6)
    assert (east["significant"], east["direction"]) == (True, "up")
    west = villages["西村"]["rates"]["satisfaction"]
    assert west["change"] == pytest.approx(-0.05)
    assert (west["significant"], west["direction"]) == (False, None)
    # Same rate in both rounds (100%): no change, no test evidence.
    assert villages["西村"]["rates"]["security"]["change"] == 0.0
    assert villages["西村"]["rates"]["security"]["significant"] is False
    for name, present in (("南村", "a"), ("北村", "b")):
        figures = villages[name]["rates"]["satisfaction"]
        assert figures[present] is not None and figures["b" if present == "a" else "a"] is None
        assert (figures["change"], figures["z"], figures["p_value"], figures["significant"]) == (
            None,
            None,
            None,
            False,
        )
    total = report["total"]["rates"]["satisfaction"]
    assert (total["a"]["positive"], total["a"]["valid"], total["b"]["positive"], total["b"]["valid"]) == (
        35,
        45,
        38,
        42,
    )


def test_comparing_a_round_with_itself_or_an_unknown_round(session: Session, two_rounds) -> None:
    a, _b = two_rounds

    with pytest.raises(ReportError, match="compared with itself"):
        compare_rounds(session, a.id, a.id)
    with pytest.raises(ReportError, match="round 999 does not exist"):
        compare_rounds(session, a.id, 999)


def test_cli_compare(session: Session, two_rounds, env) -> None:
    a, b = two_rounds
    ids = [str(a.id), str(b.id)]
    session.commit()

    table = CliRunner().invoke(report_group, ["compare", *ids])
    as_json = CliRunner().invoke(report_group, ["compare", *ids, "--format", "json"])
    same = CliRunner().invoke(report_group, ["compare", ids[0], ids[0]])

    assert table.exit_code == 0, table.output
    east = next(line for line in table.stdout.splitlines() if line.startswith("东村"))
    assert "60.0%→95.0% +35.0↑" in east
    west = next(line for line in table.stdout.splitlines() if line.startswith("西村"))
    assert "90.0%→85.0% -5.0 " in west and "↓" not in west
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["villages"][0]["rates"]["satisfaction"]["significant"] is True
    assert same.exit_code == 1 and "compared with itself" in same.stderr
