"""Round comparison: per village and rate, the change from round A to round B and whether it is larger than
the sampling noise (the pooled two-proportion z-test at 5%, two-sided).

Both rounds are figured exactly as :func:`reports.rates.village_rates` figures them (each with its own
``exclude_unsure`` and targets). Villages are matched by roster id; a village present in one round only is
listed with the other side empty and no test. Only rates both questionnaires report are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from reports.columns import FILES, READING, Column, Kind, Table, only, per_rate
from reports.rates import (
    DEFAULT_MIN_SAMPLE,
    TOWNSHIP,
    VILLAGE,
    RatesRound,
    ReportError,
    VillageRates,
    natural_key,
    village_rates,
)
from reports.rows import Row
from reports.stats import SIGNIFICANCE, two_proportion_test


@dataclass(kw_only=True)
class Side(Row):
    """One round's side of a compared rate."""

    positive: int
    valid: int
    rate: float | None


@dataclass(kw_only=True)
class RateChange(Row):
    """A rate compared: ``change`` is B − A whenever both sides have valid answers; ``direction`` ("up" or
    "down") is set only for a significant change."""

    a: Side | None
    b: Side | None
    change: float | None
    z: float | None
    p_value: float | None
    significant: bool
    direction: str | None


@dataclass(kw_only=True)
class VillageChange(Row):
    village: str
    village_id: int | None
    rates: dict[str, RateChange]


@dataclass(kw_only=True)
class CompareReport(Row):
    """``{"round_a": {...}, "round_b": {...}, "alpha", "rate_labels", "villages": [...], "total": {...}}``."""

    round_a: RatesRound
    round_b: RatesRound
    alpha: float
    rate_labels: dict[str, str]
    villages: list[VillageChange]
    total: VillageChange


def compare_rounds(
    session: Session, round_a: int, round_b: int, *, min_sample: int = DEFAULT_MIN_SAMPLE, alpha: float = SIGNIFICANCE
) -> CompareReport:
    """The change of every rate from round A to round B, per village and for the township.

    Raises:
        ReportError: a round does not exist, or A and B are the same round.
    """
    if round_a == round_b:
        raise ReportError(f"round {round_a} is compared with itself; give two different rounds")
    a = village_rates(session, round_a, min_sample=min_sample, flags=False)
    b = village_rates(session, round_b, min_sample=min_sample, flags=False)
    keys = [key for key in a.round.rate_labels if key in b.round.rate_labels]
    a_villages = {entry.village_id: entry for entry in a.villages}
    b_villages = {entry.village_id: entry for entry in b.villages}
    names = {vid: entry.village for vid, entry in {**a_villages, **b_villages}.items()}
    villages = [
        _compare(names[vid], vid, a_villages.get(vid), b_villages.get(vid), keys, alpha)
        for vid in sorted(names, key=lambda vid: (natural_key(names[vid]), vid))
    ]
    return CompareReport(
        round_a=a.round,
        round_b=b.round,
        alpha=alpha,
        rate_labels={key: b.round.rate_labels[key] for key in keys},
        villages=villages,
        total=_compare(TOWNSHIP, None, a.total, b.total, keys, alpha),
    )


def tables(report: CompareReport) -> list[Table]:
    """The comparison table: one cell per rate for people, its figures one per column in a spreadsheet."""

    def columns(key: str, label: str) -> list[Column]:
        return [
            *only(READING, Column(f"rates.{key}", label, Kind.CHANGE)),
            *only(
                FILES,
                Column(f"rates.{key}.a.rate", f"{label}（前）", Kind.PERCENT),
                Column(f"rates.{key}.b.rate", f"{label}（后）", Kind.PERCENT),
                Column(f"rates.{key}.change", f"{label}变化", Kind.PERCENT),
                Column(f"rates.{key}.p_value", f"{label}p值", Kind.FLOAT),
                Column(f"rates.{key}.significant", f"{label}显著", Kind.BOOL),
            ),
        ]

    return [Table("两轮对比", [VILLAGE, *per_rate(report.rate_labels, columns)], report.villages, [report.total])]


def _side(entry: VillageRates | None, key: str) -> Side | None:
    if entry is None:
        return None
    figures = entry.rates[key]
    return Side(positive=figures.positive, valid=figures.valid, rate=figures.rate)


def _compare(
    name: str,
    village_id: int | None,
    a: VillageRates | None,
    b: VillageRates | None,
    keys: list[str],
    alpha: float,
) -> VillageChange:
    rates = {}
    for key in keys:
        side_a, side_b = _side(a, key), _side(b, key)
        test = None
        if side_a and side_b:
            test = two_proportion_test(side_a.positive, side_a.valid, side_b.positive, side_b.valid, alpha)
        direction = None
        if test is not None and test.significant:
            direction = "up" if test.change > 0 else "down"
        rates[key] = RateChange(
            a=side_a,
            b=side_b,
            change=test.change if test else None,
            z=test.z if test else None,
            p_value=test.p_value if test else None,
            significant=bool(test and test.significant),
            direction=direction,
        )
    return VillageChange(village=name, village_id=village_id, rates=rates)
