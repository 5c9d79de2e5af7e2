"""The lift of a notice: each rate of a survey round compared between the households that were sent the notice
and those held out of it (``sanlv report lift ROUND --notice NOTICE``).

A notice's hold-out is drawn at random within each village (``campaigns.notices``), so the two groups differ
only by chance and by the notice: the difference of a rate between them estimates what the notice bought.

Who is compared: the households that are targets of the notice *and* of the round. A household is on the
*notified* side when it was not held out, on the *held-out* side when it was. Two comparisons are made:

- **intention to treat** (``itt``, 按分配): every household assigned the notice against the held-out ones,
  whether or not the notice reached it (an SMS undelivered, a number opted out, a call unanswered). This is
  the effect of *deciding* to send the notice, and it is what the randomisation protects;
- **delivered only** (``delivered``, 仅送达): only the notified households whose notice was delivered (an SMS
  delivered, a voice notice answered) against the same held-out ones. It is larger when deliveries fail, but
  it is not protected by the randomisation (households the notice could reach may differ from the others), so
  it is shown beside the intention to treat, labelled, never instead of it.

What is compared (``measures``): each rate of the round's questionnaire, figured as the rates report figures
it (completed interviews only, the round's rule for 说不清), and the **response rate** (应答率: completed
interviews over the sampled households that are in scope, ineligible ones left out, as in the rates report):
it answers "did the pre-survey SMS raise the answer rate?".

For each measure and side: ``positive``, ``valid`` and ``rate``; the ``difference`` (notified − held out),
its 95% interval (Newcombe's hybrid score interval from the two Wilson intervals), the pooled two-proportion
z-test (``z``, ``p_value``, ``significant`` at 5%, two-sided) and ``too_few`` when either side has fewer valid
answers than the minimum sample. Figures are given for the township and for each village (the village of the
notice's draw, which is the stratum the hold-out was drawn in).

The report reads only. It is a :class:`LiftReport` (typed rows, ``to_json()`` its JSON); :func:`tables` is its
column specification, which every renderer draws.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Subquery, func, select, union_all
from sqlalchemy.orm import Session

from campaigns.models import (
    Answer,
    Notice,
    NoticeArm,
    NoticeTarget,
    Response,
    ResponseStatus,
    Round,
    RoundTarget,
    Village,
)
from campaigns.questionnaire import from_version, rate_steps
from reports.columns import FILES, READING, Column, Kind, Table, only
from reports.rates import (
    DEFAULT_MIN_SAMPLE,
    TOWNSHIP,
    ReportError,
    RoundInfo,
    effective_targets,
    natural_key,
    rate_figures,
    round_info,
    target_overrides,
)
from reports.rows import NOT_JSON, Row
from reports.stats import CONFIDENCE, SIGNIFICANCE, newcombe_interval, two_proportion_test

RESPONSE_RATE = "response_rate"
RESPONSE_RATE_LABEL = "应答率"
# The two comparisons, in the order they are shown.
COMPARISONS = {"itt": "按分配（意向处理）", "delivered": "仅送达"}
# Arms: households sent the notice (all of them, or those it reached) and those held out.
NOTIFIED, DELIVERED, HELD_OUT = "notified", "delivered", "held_out"


@dataclass(kw_only=True)
class Side(Row):
    """One group's figures on one measure."""

    positive: int
    valid: int
    rate: float | None


@dataclass(kw_only=True)
class Lift(Row):
    """One measure compared: notified (or delivered-only) against held out. The statistics are None when a
    side has no valid answers."""

    notified: Side
    held_out: Side
    difference: float | None  # notified − held out
    ci_low: float | None
    ci_high: float | None
    z: float | None
    p_value: float | None
    significant: bool
    too_few: bool  # a side has fewer valid answers than the minimum sample

    @property
    def direction(self) -> str | None:
        if not self.significant or self.difference is None:
            return None
        return "up" if self.difference > 0 else "down"


@dataclass(kw_only=True)
class Households(Row):
    """How many households of the notice are in the round, on each side."""

    notified: int  # assigned the notice (not held out)
    delivered: int  # of which the notice reached
    held_out: int


@dataclass(kw_only=True)
class VillageLift(Row):
    """One village's comparison, or the township's (``village_id`` None)."""

    village: str
    village_id: int | None
    households: Households
    itt: dict[str, Lift]  # measure -> intention to treat
    delivered: dict[str, Lift]  # measure -> delivered only


@dataclass(kw_only=True)
class NoticeInfo(Row):
    id: int
    name: str
    channel: str
    status: str
    holdout: float
    seed: int | None
    pre_survey: bool  # the round's own pre-survey notice (round create --notify)


@dataclass(kw_only=True)
class LiftRound(RoundInfo):
    min_sample: int
    confidence: float
    alpha: float


@dataclass(kw_only=True)
class LiftReport(Row):
    """``{"round": {...}, "notice": {...}, "measures": {...}, "comparisons": {...}, "villages": [...],
    "total": {...}}``."""

    round: LiftRound
    notice: NoticeInfo
    measures: dict[str, str]  # measure key -> label: the rates, then the response rate
    comparisons: dict[str, str]  # itt, delivered -> label
    villages: list[VillageLift]
    total: VillageLift
    lines: list[LiftLine] = field(default_factory=list, metadata=NOT_JSON)


@dataclass(kw_only=True)
class LiftLine(Row):
    """One row of the report's table: one village (or the township) and one measure, both comparisons."""

    village: str
    measure: str
    label: str
    households: Households
    itt: Lift
    delivered: Lift


def _pairs(round_id: int, notice_id: int) -> Subquery:
    """The round's targets that were in the notice's draw, with where they stood in it (``target_id``,
    ``village_id`` of the draw, ``held_out``, ``delivered``): matched by household while both sides have one,
    else as ``data retain`` recorded it (NoticeArm) before taking the household away."""
    live = (
        select(
            RoundTarget.id.label("target_id"), NoticeTarget.village_id, NoticeTarget.held_out, NoticeTarget.delivered
        )
        .join(NoticeTarget, NoticeTarget.household_id == RoundTarget.household_id)
        .where(RoundTarget.round_id == round_id, NoticeTarget.notice_id == notice_id)
    )
    kept = (
        select(NoticeArm.round_target_id, NoticeArm.village_id, NoticeArm.held_out, NoticeArm.delivered)
        .join(RoundTarget, RoundTarget.id == NoticeArm.round_target_id)
        .where(RoundTarget.round_id == round_id, NoticeArm.notice_id == notice_id)
    )
    return union_all(live, kept).subquery("pairs")


def notice_lift(
    session: Session,
    round_id: int,
    notice_id: int,
    *,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    alpha: float = SIGNIFICANCE,
) -> LiftReport:
    """The lift report of ``notice_id`` on round ``round_id``.

    Raises:
        ReportError: no such round or notice, or no household is a target of both.
    """
    if min_sample < 1:
        raise ValueError(f"min_sample must be at least 1, got {min_sample}")
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise ReportError(f"round {round_id} does not exist")
    notice = session.get(Notice, notice_id)
    if notice is None:
        raise ReportError(f"notice {notice_id} does not exist")
    questionnaire = from_version(round_.questionnaire)
    steps = rate_steps(questionnaire)
    targets = effective_targets(questionnaire, target_overrides(round_))

    # Households of both, by (village of the draw, arm): targets, ineligible, completed.
    pairs = _pairs(round_id, notice_id)
    both = (
        select(pairs.c.village_id, pairs.c.held_out, pairs.c.delivered, RoundTarget.response_status, func.count())
        .select_from(pairs)
        .join(RoundTarget, RoundTarget.id == pairs.c.target_id)
        .group_by(pairs.c.village_id, pairs.c.held_out, pairs.c.delivered, RoundTarget.response_status)
    )
    sample: dict[int, dict[str, Counter[str]]] = {}
    for village_id, held_out, delivered, status, count in session.execute(both):
        for arm in _arms(held_out, delivered):
            counts = sample.setdefault(village_id, {}).setdefault(arm, Counter())
            counts["sampled"] += count
            if status is not None and ResponseStatus(status) is ResponseStatus.INELIGIBLE:
                counts["ineligible"] += count
            if status is not None and ResponseStatus(status) is ResponseStatus.COMPLETED:
                counts["completed"] += count
    if not sample:
        raise ReportError(
            f"notice {notice_id} and round {round_id} have no household in common: nothing to compare"
        )

    # Answers of completed interviews, by (village of the draw, arm, question, key).
    answers: dict[int, dict[str, dict[str, Counter[str]]]] = {}
    questions = [step.key for step in steps.values()]
    if questions:
        rows = session.execute(
            select(pairs.c.village_id, pairs.c.held_out, pairs.c.delivered, Answer.question, Answer.digit, func.count())
            .select_from(Answer)
            .join(Response, Response.id == Answer.response_id)
            .join(pairs, pairs.c.target_id == Response.target_id)
            .where(Answer.round_id == round_id, Answer.counted, Answer.question.in_(questions))
            .group_by(pairs.c.village_id, pairs.c.held_out, pairs.c.delivered, Answer.question, Answer.digit)
        )
        for village_id, held_out, delivered, question, digit, count in rows:
            for arm in _arms(held_out, delivered):
                by_question = answers.setdefault(village_id, {}).setdefault(arm, {})
                by_question.setdefault(question, Counter())[digit] += count

    def side(arm_sample: Counter[str], arm_answers: Mapping[str, Counter[str]], measure: str) -> Side:
        if measure == RESPONSE_RATE:
            positive, valid = arm_sample["completed"], arm_sample["sampled"] - arm_sample["ineligible"]
        else:
            step = steps[measure]
            figures = rate_figures(step, targets[measure], arm_answers.get(step.key, {}), round_.exclude_unsure)
            positive, valid = figures.positive, figures.valid
        return Side(positive=positive, valid=valid, rate=positive / valid if valid else None)

    measures = {**{key: questionnaire.rates[key].label for key in steps}, RESPONSE_RATE: RESPONSE_RATE_LABEL}

    def entry(
        village_id: int | None,
        name: str,
        arms: Mapping[str, Counter[str]],
        arm_answers: Mapping[str, Mapping[str, Counter[str]]],
    ) -> VillageLift:
        compared: dict[str, dict[str, Lift]] = {"itt": {}, "delivered": {}}
        for measure in measures:
            held = side(arms.get(HELD_OUT, Counter()), arm_answers.get(HELD_OUT, {}), measure)
            for comparison, arm in (("itt", NOTIFIED), ("delivered", DELIVERED)):
                sent = side(arms.get(arm, Counter()), arm_answers.get(arm, {}), measure)
                compared[comparison][measure] = compare_sides(sent, held, min_sample, alpha)
        return VillageLift(
            village=name,
            village_id=village_id,
            households=Households(
                notified=arms.get(NOTIFIED, Counter())["sampled"],
                delivered=arms.get(DELIVERED, Counter())["sampled"],
                held_out=arms.get(HELD_OUT, Counter())["sampled"],
            ),
            itt=compared["itt"],
            delivered=compared["delivered"],
        )

    names = dict(session.execute(select(Village.id, Village.name).where(Village.id.in_(sample))).all())
    villages = [
        entry(village_id, names[village_id], sample[village_id], answers.get(village_id, {}))
        for village_id in sorted(sample, key=lambda vid: (natural_key(names[vid]), vid))
    ]
    township_sample: dict[str, Counter[str]] = {}
    township_answers: dict[str, dict[str, Counter[str]]] = {}
    for arms in sample.values():
        for arm, counts in arms.items():
            township_sample.setdefault(arm, Counter()).update(counts)
    for arms_answers in answers.values():
        for arm, by_question in arms_answers.items():
            for question, digits in by_question.items():
                township_answers.setdefault(arm, {}).setdefault(question, Counter()).update(digits)
    total = entry(None, TOWNSHIP, township_sample, township_answers)

    report = LiftReport(
        round=LiftRound(
            **round_info(round_, questionnaire, targets), min_sample=min_sample, confidence=CONFIDENCE, alpha=alpha
        ),
        notice=NoticeInfo(
            id=notice.id,
            name=notice.name,
            channel=notice.channel.value,
            status=notice.status.value,
            holdout=notice.holdout,
            seed=notice.seed,
            pre_survey=notice.round_id == round_.id,
        ),
        measures=measures,
        comparisons=dict(COMPARISONS),
        villages=villages,
        total=total,
    )
    report.lines = list(lines(report, [total, *villages]))
    return report


def compare_sides(notified: Side, held_out: Side, min_sample: int, alpha: float = SIGNIFICANCE) -> Lift:
    """The difference notified − held out with its Newcombe interval and the two-proportion test."""
    interval = newcombe_interval(notified.positive, notified.valid, held_out.positive, held_out.valid)
    test = two_proportion_test(held_out.positive, held_out.valid, notified.positive, notified.valid, alpha)
    return Lift(
        notified=notified,
        held_out=held_out,
        difference=test.change if test else None,
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        z=test.z if test else None,
        p_value=test.p_value if test else None,
        significant=bool(test and test.significant),
        too_few=min(notified.valid, held_out.valid) < min_sample,
    )


def lines(report: LiftReport, entries: Iterable[VillageLift]) -> Iterable[LiftLine]:
    """The table's rows: for each entry, one line per measure."""
    for entry in entries:
        for measure, label in report.measures.items():
            yield LiftLine(
                village=entry.village,
                measure=measure,
                label=label,
                households=entry.households,
                itt=entry.itt[measure],
                delivered=entry.delivered[measure],
            )


def _arms(held_out: bool, delivered: bool) -> tuple[str, ...]:
    """The arms a household of the notice counts in."""
    if held_out:
        return (HELD_OUT,)
    return (NOTIFIED, DELIVERED) if delivered else (NOTIFIED,)


# --- the table (every renderer draws it; a new column is one line here) ---------------------------------


def comparison_columns(key: str, title: str) -> list[Column]:
    """One comparison's columns: the notified side's share and the difference in one cell each for people
    (the held-out side is the same for both comparisons and is shown once); every figure in its own column in
    a spreadsheet."""
    return [
        *only(
            READING,
            Column(f"{key}.notified", f"{title}·通知组", Kind.SHARE),
            Column(key, f"{title}·差值 [95%区间]", Kind.DIFFERENCE),
            Column(f"{key}.p_value", f"{title}·p值", Kind.FLOAT),
        ),
        *only(
            FILES,
            Column(f"{key}.notified.positive", f"{title}·通知组肯定", Kind.INT),
            Column(f"{key}.notified.valid", f"{title}·通知组有效", Kind.INT),
            Column(f"{key}.notified.rate", f"{title}·通知组比率", Kind.PERCENT),
            Column(f"{key}.held_out.positive", f"{title}·留出组肯定", Kind.INT),
            Column(f"{key}.held_out.valid", f"{title}·留出组有效", Kind.INT),
            Column(f"{key}.held_out.rate", f"{title}·留出组比率", Kind.PERCENT),
            Column(f"{key}.difference", f"{title}·差值", Kind.PERCENT),
            Column(f"{key}.ci_low", f"{title}·95%下限", Kind.PERCENT),
            Column(f"{key}.ci_high", f"{title}·95%上限", Kind.PERCENT),
            Column(f"{key}.z", f"{title}·z", Kind.FLOAT),
            Column(f"{key}.p_value", f"{title}·p值", Kind.FLOAT),
            Column(f"{key}.significant", f"{title}·显著", Kind.BOOL),
            Column(f"{key}.too_few", f"{title}·样本不足", Kind.BOOL),
        ),
    ]


HOUSEHOLDS = [
    Column("households.notified", "通知户数", Kind.INT),
    Column("households.delivered", "送达户数", Kind.INT),
    Column("households.held_out", "留出户数", Kind.INT),
]


def tables(report: LiftReport) -> list[Table]:
    """The comparison, one row per village (the township first) and measure, both comparisons side by side;
    and the households on each side per village."""
    lines_table = Table(
        "通知效果",
        [
            Column("village", "村"),
            Column("label", "指标", width=16),
            *only(FILES, *HOUSEHOLDS),
            *only(READING, Column("itt.held_out", "留出组", Kind.SHARE)),
            *comparison_columns("itt", "按分配"),
            *comparison_columns("delivered", "仅送达"),
        ],
        report.lines,
        freeze="C2",
    )
    households = Table("各组户数", [Column("village", "村"), *HOUSEHOLDS], report.villages, [report.total])
    return [lines_table, households]
