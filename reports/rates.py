"""Village rates: the 三率 of one round, per village and for the whole township, with rankings and flags.

Rates are computed over **completed** responses only. For each rate, the question is the step of the round's
stored questionnaire version that feeds it (never the file on disk, which may have changed since launch):

- ``positive``: answers whose key is one of the step's positive keys;
- ``valid``: every answer to the question, except that "说不清" (the step's unsure keys) is left out when the
  round has ``exclude_unsure`` set (by default it counts in ``valid`` as not positive);
- ``rate``: ``positive / valid``, or ``None`` when ``valid`` is 0;
- ``target``: the questionnaire's target, unless the round overrides it (``Round.rate_targets``);
- ``meets_target``: the rate is not ``None`` and is at least the target, compared exactly;
- ``ci_low``/``ci_high``: the 95% Wilson score interval of the rate (``None`` without valid answers);
- ``too_few``: ``valid`` is below the minimum sample (``SANLV_REPORT_MIN_SAMPLE``): too few answers to judge;
- ``unsure`` and ``unsure_share``: how many answered "说不清", and their share of all answers to the question,
  reported whether or not they count in ``valid``;
- ``negative``: answers neither positive nor unsure (for security and satisfaction: 不太安全/不安全,
  不太满意/不满意);
- ``rank``: the village's place on this rate, best first (equal rates share a place; ``None`` without data).

Each village also carries how its sample went (see :class:`Progress`), ``dissatisfied`` (the negative answers
to the security and satisfaction questions, the answers that ask for a visit) with its rank, most first, the
residents who asked for a visit (``visit_requested``) and who declined one (``visit_declined``, counted here,
never listed), and the township's accountability ``flags``:

- ``most_dissatisfied_twice``: the village had the most dissatisfied answers (rank 1, ties included, more than
  none) in this round and in the previous round;
- ``below_target_twice``: the rates (keys) below target, with valid answers, in this round and in the
  previous round.

The *previous round* is the latest round that ended (``completed`` or ``cancelled``) and was launched before
this one (by ``launched_at``, then id; a round never launched counts by its creation time). Villages are
matched across rounds by their roster id.

The figures come from two GROUP BY queries, each over one table and no joins (targets per village, target
state and response status; answers of completed responses per village, question and key pressed: targets and
answers carry copies of their village and response status, see "Report figures" in campaigns.models); only
those small count tables are folded in Python, so the cost stays that of one pass over the round's answers.

Villages are listed by name (numbers within a name compare as numbers: 村2 before 村10), sorted in Python so the
order depends neither on import order nor on the database's collation.

The report is a :class:`RatesReport`, typed rows whose ``to_json()`` is the ``report rates --format json``
contract; :func:`tables` is its column specification, which every renderer draws (see ``reports.columns``).
A household's village is its village now (the roster's current state), not a snapshot from sampling time: a
roster import that moves a household moves its targets and answers too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from campaigns.errors import SanlvError
from campaigns.followups import DISSATISFACTION_RATES, VISIT_NO, VISIT_STEP, VISIT_YES
from campaigns.models import (
    FINAL_TARGET_STATES,
    Answer,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
    Village,
)
from campaigns.questionnaire import Questionnaire, Step, from_version, rate_steps
from campaigns.settings import Settings
from reports.columns import FILES, Column, Kind, Table, below_target, lookup, only, per_rate
from reports.rows import INLINE, NOT_JSON, Row
from reports.stats import CONFIDENCE, wilson_interval

if TYPE_CHECKING:
    from reports.followups import FollowUpReport

TOWNSHIP = "全镇"
DEFAULT_MIN_SAMPLE: int = Settings.report_min_sample
# Rounds that have ended; the "previous round" of the accountability rules is one of these.
ENDED_ROUND_STATUSES = (RoundStatus.COMPLETED, RoundStatus.CANCELLED)


class ReportError(SanlvError, LookupError):
    """A report was asked about something that does not exist, such as an unknown round id."""


# --- the rows -------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RateFigures(Row):
    """One rate's figures (see the module notes); ``rank`` is None until :func:`apply_ranks` fills it."""

    positive: int
    valid: int
    rate: float | None
    target: float
    meets_target: bool
    ci_low: float | None
    ci_high: float | None
    too_few: bool
    unsure: int
    unsure_share: float | None
    negative: int
    rank: int | None = None


@dataclass(kw_only=True)
class Progress(Row):
    """How a village's sample went. ``sampled`` is the sum of ``completed`` to ``waiting``.

    A target counts as *reached* once a person answered and the interview began (it has a response).
    """

    sampled: int = 0  # the round's targets
    dialled: int = 0  # at least one call placed (or the resident called back)
    reached: int = 0  # a person answered and the interview began
    completed: int = 0  # every rate question answered
    refused: int = 0  # declined consent
    ineligible: int = 0  # failed screening (not resident, under 18)
    opted_out: int = 0  # pressed 9 before completing
    partial: int = 0  # began, not finished (dropped and not resumed, or still to be resumed)
    not_reached: int = 0  # finished without anyone answering (attempts used up, bad number, cancelled)
    waiting: int = 0  # not reached yet, still to be dialled
    # Of the completed: answered (at least in part) on a call the resident made to us, in a round that opted
    # into answering on inbound calls (the caller's number was not proven).
    completed_inbound: int = 0

    def add(self, other: Progress) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    @property
    def response_rate(self) -> float | None:
        """Completed interviews over the sampled households that are in scope (ineligible ones are not)."""
        eligible = self.sampled - self.ineligible
        return self.completed / eligible if eligible > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "response_rate": self.response_rate}


@dataclass(kw_only=True)
class Flags(Row):
    """The township's accountability flags of a village (see the module notes)."""

    most_dissatisfied_twice: bool = False
    below_target_twice: list[str] = field(default_factory=list)  # rate keys


@dataclass(kw_only=True)
class VillageRates(Row):
    """One village's entry of the rates report, or the township's (``village_id`` None, no ranks)."""

    village: str
    village_id: int | None
    progress: Progress = field(metadata=INLINE)
    too_few: bool  # fewer completed interviews than the minimum sample
    rates: dict[str, RateFigures]
    dissatisfied: int
    dissatisfied_rank: int | None = None
    visit_requested: int
    visit_declined: int
    flags: Flags = field(default_factory=Flags)


@dataclass(kw_only=True)
class Ref(Row):
    """Something named in a report: a round, a cadre."""

    id: int
    name: str


@dataclass(kw_only=True)
class RoundInfo(Row):
    """The ``round`` part shared by the reports: what a reader needs to know about the round."""

    id: int
    name: str
    status: str
    questionnaire: str
    questionnaire_version: int
    exclude_unsure: bool
    launched_at: datetime | None
    finished_at: datetime | None
    rate_labels: dict[str, str]
    targets: dict[str, float]


@dataclass(kw_only=True)
class RatesRound(RoundInfo):
    min_sample: int
    confidence: float
    dissatisfaction_questions: list[str]
    previous_round: Ref | None = None


@dataclass(kw_only=True)
class RatesReport(Row):
    """The ``report rates --format json`` contract: ``{"round": {...}, "villages": [...], "total": {...}}``.

    ``followups`` (the office's follow-up list) is carried for the printable page only; it is not part of
    the JSON.
    """

    round: RatesRound
    villages: list[VillageRates]
    total: VillageRates
    followups: FollowUpReport | None = field(default=None, metadata=NOT_JSON)


# --- the report -----------------------------------------------------------------------------------------


def village_rates(
    session: Session, round_id: int, *, min_sample: int = DEFAULT_MIN_SAMPLE, flags: bool = True
) -> RatesReport:
    """The rates report of one round.

    Args:
        session: an open session; the report only reads.
        round_id: the round to report on.
        min_sample: rates with fewer valid answers are marked ``too_few``.
        flags: compute the accountability flags (which needs the previous round's figures too).

    Returns:
        Every village with at least one target in the round has an entry (with null rates when nothing was
        completed there); ``total`` has the same shape with ``village`` "全镇" and no ranks.

    Raises:
        ReportError: no round has this id; ValueError: ``min_sample`` below 1.
    """
    if min_sample < 1:
        raise ValueError(f"min_sample must be at least 1, got {min_sample}")
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise ReportError(f"round {round_id} does not exist")
    report = _round_figures(session, round_, min_sample)
    previous = previous_round(session, round_) if flags else None
    report.round.previous_round = None if previous is None else Ref(id=previous.id, name=previous.name)
    if flags:
        prior = _round_figures(session, previous, min_sample) if previous is not None else None
        apply_flags(report, prior)
    return report


def round_info(round_: Round, questionnaire: Questionnaire, targets: Mapping[str, float]) -> dict[str, Any]:
    """The fields of :class:`RoundInfo` for ``round_`` (each report adds its own to them)."""
    steps = rate_steps(questionnaire)
    return {
        "id": round_.id,
        "name": round_.name,
        "status": round_.status.value,
        "questionnaire": questionnaire.key,
        "questionnaire_version": round_.questionnaire_id,
        "exclude_unsure": round_.exclude_unsure,
        "launched_at": round_.launched_at,
        "finished_at": round_.finished_at,
        "rate_labels": {key: questionnaire.rates[key].label for key in steps},
        "targets": {key: targets[key] for key in steps},
    }


def target_overrides(round_: Round) -> dict[str, float]:
    """The round's per-rate target overrides (``Round.rate_targets``), or none."""
    value = round_.rate_targets
    return dict(value) if isinstance(value, Mapping) else {}


def effective_targets(questionnaire: Questionnaire, overrides: Mapping[str, Any]) -> dict[str, float]:
    """Each rate's target: the questionnaire's, replaced by a valid override (a fraction from 0 to 1).

    Overrides for rates the questionnaire does not declare, or that are not numbers in [0, 1], are ignored:
    a bad stored value must not break a report (round creation validates what it stores).
    """
    targets = {key: spec.target for key, spec in questionnaire.rates.items()}
    for key, value in overrides.items():
        if key in targets and isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            targets[key] = float(value)
    return targets


def rate_figures(
    step: Step, target: float, digits: Mapping[str, int], exclude_unsure: bool, min_sample: int = 1
) -> RateFigures:
    """One rate's figures from the answers to its question, counted by key pressed.

    Args:
        step: the questionnaire step feeding the rate (its positive and unsure keys).
        target: the rate's target, a fraction from 0 to 1.
        digits: how many completed responses answered each key.
        exclude_unsure: leave "说不清" out of ``valid`` instead of counting it as not positive.
        min_sample: fewer valid answers than this are ``too_few`` to judge.
    """
    answered = sum(digits.values())
    positive = sum(count for digit, count in digits.items() if digit in step.positive)
    unsure = sum(count for digit, count in digits.items() if digit in step.unsure)
    valid = answered - unsure if exclude_unsure else answered
    interval = wilson_interval(positive, valid)
    return RateFigures(
        positive=positive,
        valid=valid,
        rate=positive / valid if valid else None,
        target=target,
        meets_target=meets_target(positive, valid, target),
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        too_few=valid < min_sample,
        unsure=unsure,
        unsure_share=unsure / answered if answered else None,
        negative=answered - positive - unsure,
    )


def meets_target(positive: int, valid: int, target: float) -> bool:
    """Whether ``positive / valid`` reaches ``target``, compared exactly.

    The target is read as the decimal it was written as (0.95 is 19/20, not the nearest binary float), so
    19 of 20 meets a 95% target. No valid answers never meets a target.
    """
    if valid <= 0:
        return False
    exact = _decimal_fraction(target)
    return positive * exact.denominator >= exact.numerator * valid


@lru_cache(maxsize=64)
def _decimal_fraction(target: float) -> Fraction:
    return Fraction(str(target))


def competition_ranks(values: Mapping[int, Any], *, descending: bool = True) -> dict[int, int]:
    """Standard competition ranking ("1224"): equal values share a place and the next place is skipped.

    Args:
        values: key -> a comparable value; keys whose value is None are left out of the result.
        descending: the largest value is first.
    """
    ordered = sorted(((value, key) for key, value in values.items() if value is not None), reverse=descending)
    ranks: dict[int, int] = {}
    previous: Any = None
    for position, (value, key) in enumerate(ordered, 1):
        ranks[key] = ranks[ordered[position - 2][1]] if position > 1 and value == previous else position
        previous = value
    return ranks


def apply_ranks(villages: list[VillageRates]) -> None:
    """Fill each village's ``rank`` per rate (best first) and ``dissatisfied_rank`` (most first)."""
    if not villages:
        return
    for key in villages[0].rates:
        # positive / valid as a float orders rates exactly: two different fractions with denominators below
        # 10**7 differ by more than 1e-14, far above rounding, and equal fractions divide to the same float.
        ranks = competition_ranks(
            {
                index: entry.rates[key].positive / entry.rates[key].valid if entry.rates[key].valid else None
                for index, entry in enumerate(villages)
            }
        )
        for index, entry in enumerate(villages):
            entry.rates[key].rank = ranks.get(index)
    dissatisfied = competition_ranks(
        {index: entry.dissatisfied if entry.progress.completed else None for index, entry in enumerate(villages)}
    )
    for index, entry in enumerate(villages):
        entry.dissatisfied_rank = dissatisfied.get(index)


def apply_flags(report: RatesReport, previous: RatesReport | None) -> None:
    """Set each village's accountability ``flags`` from this round's figures and the previous round's."""
    before = {entry.village_id: entry for entry in previous.villages} if previous else {}
    for entry in report.villages:
        prior = before.get(entry.village_id)
        entry.flags = Flags(
            most_dissatisfied_twice=prior is not None and _most_dissatisfied(entry) and _most_dissatisfied(prior),
            below_target_twice=[
                key
                for key, figures in entry.rates.items()
                if prior is not None
                and key in prior.rates
                and below_target(figures)
                and below_target(prior.rates[key])
            ],
        )


def previous_round(session: Session, round_: Round) -> Round | None:
    """The latest ended round (completed or cancelled) launched before ``round_`` (see the module notes)."""
    launched = func.coalesce(Round.launched_at, Round.created_at)
    reference = round_.launched_at or round_.created_at
    return session.scalar(
        select(Round)
        .where(
            Round.id != round_.id,
            Round.status.in_(ENDED_ROUND_STATUSES),
            or_(launched < reference, (launched == reference) & (Round.id < round_.id)),
        )
        .order_by(launched.desc(), Round.id.desc())
        .limit(1)
    )


def natural_key(name: str) -> list[str | int]:
    """Sort key under which "村2" comes before "村10": runs of digits compare as numbers."""
    # re.split with a group alternates text and digits, so two keys always hold the same type at the same position.
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))]


# --- the tables (every renderer draws these; a new column is one line here) --------------------------

VILLAGE = Column("village", "村")
# How each target of a round ended up, in the order of the survey (see Progress).
PROGRESS = [
    Column("progress.sampled", "抽样", Kind.INT),
    Column("progress.dialled", "已拨打", Kind.INT),
    Column("progress.reached", "接通", Kind.INT),
    Column("progress.completed", "完成", Kind.INT),
    Column("progress.completed_inbound", "其中呼入完成", Kind.INT),
    Column("progress.refused", "拒访", Kind.INT),
    Column("progress.ineligible", "不符合条件", Kind.INT),
    Column("progress.opted_out", "中途退出", Kind.INT),
    Column("progress.partial", "未答完", Kind.INT),
    Column("progress.not_reached", "未接通", Kind.INT),
    Column("progress.waiting", "待拨打", Kind.INT),
    Column("progress.response_rate", "应答率", Kind.PERCENT),
]
# One rate's figures (RateFigures), as (field, title, kind).
FIGURES = (
    ("positive", "肯定", Kind.INT),
    ("valid", "有效", Kind.INT),
    ("rate", "比率", Kind.PERCENT),
    ("target", "目标", Kind.PERCENT),
    ("meets_target", "达标", Kind.BOOL),
    ("ci_low", "95%下限", Kind.PERCENT),
    ("ci_high", "95%上限", Kind.PERCENT),
    ("unsure", "说不清", Kind.INT),
    ("unsure_share", "说不清占比", Kind.PERCENT),
    ("negative", "否定", Kind.INT),
    ("rank", "排名", Kind.INT),
    ("too_few", "样本不足", Kind.BOOL),
)
FLAG_LABELS = {
    "most_dissatisfied_twice": "连续两轮不满意答复最多",
    "below_target_twice": "连续两轮未达标",
}


def figure_columns(path: str, title: str = "") -> list[Column]:
    """The columns of the rate figures at ``path`` in a row, their titles prefixed with ``title``.

    The rate itself is highlighted when below its target.
    """
    return [
        Column(
            f"{path}.{name}",
            f"{title}{label}",
            kind,
            alert=(lambda row: below_target(lookup(row, path))) if name == "rate" else None,
        )
        for name, label, kind in FIGURES
    ]


def flags_text(flags: Flags, labels: Mapping[str, str]) -> str:
    """The accountability flags of a village in words ("" when none)."""
    parts = []
    if flags.most_dissatisfied_twice:
        parts.append(FLAG_LABELS["most_dissatisfied_twice"])
    if flags.below_target_twice:
        parts.append(
            FLAG_LABELS["below_target_twice"] + "：" + "、".join(labels.get(k, k) for k in flags.below_target_twice)
        )
    return "；".join(parts)


class RateLine(NamedTuple):
    """One village's figures on one rate: a row of the long table of figures."""

    village: str
    label: str
    figures: RateFigures


class RatesTables(NamedTuple):
    summary: Table  # the rates of each village against their targets
    details: Table  # every figure, one row per village and rate
    progress: Table  # how the sample went
    ranking: Table  # places on each rate, dissatisfied answers, flags
    wide: Table  # everything in one table, one row per village (CSV holds one table)


def tables(report: RatesReport) -> RatesTables:
    """The tables of the rates report."""
    labels = report.round.rate_labels
    entries = [*report.villages, report.total]
    accountability = [
        Column("dissatisfied", "不满意答复", Kind.INT),
        Column("dissatisfied_rank", "不满意排名", Kind.INT),
        Column("visit_requested", "要求回访", Kind.INT),
        Column("visit_declined", "不需回访", Kind.INT),
        # In words for people and in CSV; a spreadsheet gets one column per flag, to filter on.
        *only(
            frozenset({"table", "html", "csv"}),
            Column(
                "flags",
                "问责提示",
                get=lambda entry: flags_text(entry.flags, labels),
                alert=lambda entry: flags_text(entry.flags, labels),
                alert_class="flag",
            ),
        ),
        *only(
            frozenset({"xlsx"}),
            Column("flags.most_dissatisfied_twice", FLAG_LABELS["most_dissatisfied_twice"], Kind.BOOL, width=16),
            Column(
                "flags.below_target_twice",
                FLAG_LABELS["below_target_twice"],
                get=lambda entry: "、".join(labels.get(k, k) for k in entry.flags.below_target_twice),
                width=24,
            ),
        ),
    ]
    by_key = {column.key: column for column in PROGRESS}
    summary = Table(
        "各村三率",
        [
            VILLAGE,
            by_key["progress.sampled"],
            by_key["progress.completed"],
            *per_rate(labels, lambda key, label: Column(f"rates.{key}", label, Kind.RATE, width=12)),
            *only(FILES, accountability[0], Column("too_few", "样本不足", Kind.BOOL)),
        ],
        report.villages,
        [report.total],
    )
    details = Table(
        "指标明细",
        [VILLAGE, Column("label", "指标", width=18), *figure_columns("figures")],
        [RateLine(entry.village, label, entry.rates[key]) for entry in entries for key, label in labels.items()],
        freeze="C2",
    )
    progress = Table("调查进度", [VILLAGE, *PROGRESS], report.villages, [report.total])
    ranking = Table(
        "排名与问责",
        [
            VILLAGE,
            *per_rate(labels, lambda key, label: Column(f"rates.{key}.rank", f"{label}排名", Kind.INT, width=12)),
            *accountability,
        ],
        report.villages,
    )
    wide = Table(
        "各村三率",
        [
            VILLAGE,
            *PROGRESS,
            *per_rate(labels, lambda key, label: figure_columns(f"rates.{key}", label)),
            *accountability,
        ],
        report.villages,
        [report.total],
    )
    return RatesTables(summary, details, progress, ranking, wide)


# --- internals ------------------------------------------------------------------------------------------


def _round_figures(session: Session, round_: Round, min_sample: int) -> RatesReport:
    """The report without flags: figures, progress and ranks of every village and the township."""
    questionnaire = from_version(round_.questionnaire)
    steps = rate_steps(questionnaire)
    targets = effective_targets(questionnaire, target_overrides(round_))
    dissatisfaction = [step.key for key, step in steps.items() if key in DISSATISFACTION_RATES]
    questions = [step.key for step in steps.values()]
    if questionnaire.has_step(VISIT_STEP):
        questions.append(VISIT_STEP)

    villages = _village_progress(session, round_.id)
    answers = _answer_counts(session, round_.id, questions)

    def entry(
        village_id: int | None, name: str, progress: Progress, by_question: Mapping[str, Counter[str]]
    ) -> VillageRates:
        rates = {
            key: rate_figures(step, targets[key], by_question.get(step.key, {}), round_.exclude_unsure, min_sample)
            for key, step in steps.items()
        }
        visits = by_question.get(VISIT_STEP, {})
        return VillageRates(
            village=name,
            village_id=village_id,
            progress=progress,
            too_few=progress.completed < min_sample,
            rates=rates,
            dissatisfied=sum(rates[key].negative for key in DISSATISFACTION_RATES if key in rates),
            visit_requested=visits.get(VISIT_YES, 0),
            visit_declined=visits.get(VISIT_NO, 0),
        )

    township: dict[str, Counter[str]] = {}
    for by_question in answers.values():
        for question, digits in by_question.items():
            township.setdefault(question, Counter()).update(digits)
    total = Progress()
    for village in villages:
        total.add(village.progress)

    entries = [entry(v.id, v.name, v.progress, answers.get(v.id, {})) for v in villages]
    apply_ranks(entries)
    section = RatesRound(
        **round_info(round_, questionnaire, targets),
        min_sample=min_sample,
        confidence=CONFIDENCE,
        dissatisfaction_questions=dissatisfaction,
    )
    return RatesReport(round=section, villages=entries, total=entry(None, TOWNSHIP, total, township))


def _most_dissatisfied(entry: VillageRates) -> bool:
    return entry.dissatisfied_rank == 1 and entry.dissatisfied > 0


@dataclass(frozen=True)
class _Village:
    id: int
    name: str
    progress: Progress


_RESPONSE_FIELD = {
    ResponseStatus.COMPLETED: "completed",
    ResponseStatus.REFUSED: "refused",
    ResponseStatus.INELIGIBLE: "ineligible",
    ResponseStatus.OPTED_OUT: "opted_out",
    ResponseStatus.IN_PROGRESS: "partial",
}


def progress_of(rows: Iterable[tuple[TargetState, ResponseStatus | None, int, int]]) -> Progress:
    """Fold (target state, response status or None, targets, of which dialled) counts into a Progress."""
    progress = Progress()
    for state, status, count, dialled in rows:
        progress.sampled += count
        progress.dialled += dialled
        if status is not None:
            progress.reached += count
            name = _RESPONSE_FIELD[ResponseStatus(status)]
        elif TargetState(state) in FINAL_TARGET_STATES:
            name = "not_reached"
        else:
            name = "waiting"
        setattr(progress, name, getattr(progress, name) + count)
    return progress


def _village_progress(session: Session, round_id: int) -> list[_Village]:
    """Every village with a target in the round, with its sample's progress, sorted by name.

    One GROUP BY over the round's targets alone: each target carries its village and its response's status
    (see "Report figures" in campaigns.models).
    """
    dialled = case((or_(RoundTarget.attempts > 0, RoundTarget.response_status.is_not(None)), 1), else_=0)
    rows = session.execute(
        select(RoundTarget.village_id, RoundTarget.state, RoundTarget.response_status, func.count(), func.sum(dialled))
        .where(RoundTarget.round_id == round_id)
        .group_by(RoundTarget.village_id, RoundTarget.state, RoundTarget.response_status)
    )
    grouped: dict[int, list[tuple[Any, Any, int, int]]] = {}
    for village_id, state, status, count, dialled_count in rows:
        grouped.setdefault(village_id, []).append((state, status, count, int(dialled_count or 0)))
    # Names come in a second, tiny query: grouping every target by a text column costs more than a round trip.
    names = (
        dict(session.execute(select(Village.id, Village.name).where(Village.id.in_(grouped))).all()) if grouped else {}
    )
    villages = [_Village(village_id, names[village_id], progress_of(counts)) for village_id, counts in grouped.items()]
    inbound = dict(
        session.execute(
            select(RoundTarget.village_id, func.count())
            .join(Response, Response.target_id == RoundTarget.id)
            .where(Response.round_id == round_id, Response.status == ResponseStatus.COMPLETED, Response.inbound)
            .group_by(RoundTarget.village_id)
        ).all()
    )
    for village in villages:
        village.progress.completed_inbound = inbound.get(village.id, 0)
    return sorted(villages, key=lambda village: (natural_key(village.name), village.id))


def _answer_counts(session: Session, round_id: int, questions: list[str]) -> dict[int, dict[str, Counter[str]]]:
    """village id -> question -> key pressed -> answers from completed responses.

    One GROUP BY over the round's answers alone: each answer carries its village and whether its response is
    completed (``counted``; see "Report figures" in campaigns.models).
    """
    counts: dict[int, dict[str, Counter[str]]] = {}
    if not questions:
        return counts
    rows = session.execute(
        select(Answer.village_id, Answer.question, Answer.digit, func.count())
        .where(Answer.round_id == round_id, Answer.counted, Answer.question.in_(questions))
        .group_by(Answer.village_id, Answer.question, Answer.digit)
    )
    for village_id, question, digit, count in rows:
        counts.setdefault(village_id, {}).setdefault(question, Counter())[digit] += count
    return counts
