"""Village rates: the 三率 of one round, per village and for the whole township.

Rates are computed over **completed** responses only. For each rate, the question is the step of the round's
stored questionnaire version that feeds it (never the file on disk, which may have changed since launch):

- ``positive``: answers whose key is one of the step's positive keys;
- ``valid``: every answer to the question, except that "说不清" (the step's unsure keys) is left out when the
  round has ``exclude_unsure`` set (by default it counts in ``valid`` as not positive);
- ``rate``: ``positive / valid``, or ``None`` when ``valid`` is 0;
- ``meets_target``: the rate is not ``None`` and is at least the questionnaire's target, compared exactly.

Each rate also carries ``unsure`` (how many answered "说不清") and ``unsure_share`` (their share of all answers
to the question), reported whether or not they count in ``valid``.

The figures come from two GROUP BY queries (targets and completed responses per village; answers of completed
responses per village, question and key pressed); only those small count tables are folded in Python, so the
cost stays that of one pass over the round's answers.

Villages are listed by name (numbers within a name compare as numbers: 村2 before 村10), sorted in Python so the
order depends neither on import order nor on the database's collation.
A household's village is its village now (the roster's current state), not a snapshot from sampling time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import Answer, Household, Response, ResponseStatus, Round, RoundTarget, Village
from campaigns.questionnaire import RATE_KEYS, Questionnaire, Step, from_version

TOWNSHIP = "全镇"


class ReportError(LookupError):
    """A report was asked about something that does not exist, such as an unknown round id."""


def village_rates(session: Session, round_id: int) -> dict[str, Any]:
    """The ``report rates --format json`` contract for one round.

    Args:
        session: an open session; the report only reads.
        round_id: the round to report on.

    Returns:
        ``{"round": {...}, "villages": [...], "total": {...}}``. Every village with at least one target in
        the round has an entry (with null rates when nothing was completed there); ``total`` has the same
        shape with ``"village": "全镇"``.

    Raises:
        ReportError: no round has this id.
    """
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise ReportError(f"round {round_id} does not exist")
    questionnaire = from_version(round_.questionnaire)
    steps = rate_steps(questionnaire)

    villages = sorted(_villages(session, round_id), key=lambda village: (_natural_key(village.name), village.id))
    answers = _answer_counts(session, round_id, [step.key for step in steps.values()])

    def entry(name: str, sampled: int, completed: int, by_question: Mapping[str, Counter[str]]) -> dict[str, Any]:
        return {
            "village": name,
            "sampled": sampled,
            "completed": completed,
            "rates": {
                key: rate_figures(
                    step, questionnaire.rates[key].target, by_question.get(step.key, {}), round_.exclude_unsure
                )
                for key, step in steps.items()
            },
        }

    township: dict[str, Counter[str]] = {}
    for by_question in answers.values():
        for question, digits in by_question.items():
            township.setdefault(question, Counter()).update(digits)

    return {
        "round": {
            "id": round_.id,
            "name": round_.name,
            "status": round_.status.value,
            "questionnaire": questionnaire.key,
            "questionnaire_version": round_.questionnaire_id,
            "exclude_unsure": round_.exclude_unsure,
            "rate_labels": {key: questionnaire.rates[key].label for key in steps},
        },
        "villages": [
            entry(village.name, village.sampled, village.completed, answers.get(village.id, {}))
            for village in villages
        ],
        "total": entry(
            TOWNSHIP,
            sum(village.sampled for village in villages),
            sum(village.completed for village in villages),
            township,
        ),
    }


def rate_steps(questionnaire: Questionnaire) -> dict[str, Step]:
    """The step feeding each of the questionnaire's rates, in the canonical order of ``RATE_KEYS``.

    A questionnaire may declare fewer than the five standard rates; only the ones it declares are reported.
    """
    by_rate = {step.rate: step for step in questionnaire.rate_steps}
    return {key: by_rate[key] for key in RATE_KEYS if key in questionnaire.rates and key in by_rate}


def rate_figures(step: Step, target: float, digits: Mapping[str, int], exclude_unsure: bool) -> dict[str, Any]:
    """One rate's figures from the answers to its question, counted by key pressed.

    Args:
        step: the questionnaire step feeding the rate (its positive and unsure keys).
        target: the rate's target, a fraction from 0 to 1.
        digits: how many completed responses answered each key.
        exclude_unsure: leave "说不清" out of ``valid`` instead of counting it as not positive.

    Returns:
        ``{"positive", "valid", "rate", "target", "meets_target", "unsure", "unsure_share"}``.
    """
    answered = sum(digits.values())
    positive = sum(count for digit, count in digits.items() if digit in step.positive)
    unsure = sum(count for digit, count in digits.items() if digit in step.unsure)
    valid = answered - unsure if exclude_unsure else answered
    return {
        "positive": positive,
        "valid": valid,
        "rate": positive / valid if valid else None,
        "target": target,
        "meets_target": meets_target(positive, valid, target),
        "unsure": unsure,
        "unsure_share": unsure / answered if answered else None,
    }


def meets_target(positive: int, valid: int, target: float) -> bool:
    """Whether ``positive / valid`` reaches ``target``, compared exactly.

    The target is read as the decimal it was written as (0.95 is 19/20, not the nearest binary float), so
    19 of 20 meets a 95% target. No valid answers never meets a target.
    """
    if valid <= 0:
        return False
    return Fraction(positive, valid) >= Fraction(str(target))


def _natural_key(name: str) -> list[str | int]:
    # "村2" before "村10": runs of digits compare as numbers. re.split with a group alternates text and
    # digits, so two keys always hold the same type at the same position.
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))]


@dataclass(frozen=True)
class _VillageCounts:
    id: int
    name: str
    sampled: int  # the round's targets in the village
    completed: int  # their completed responses


def _villages(session: Session, round_id: int) -> list[_VillageCounts]:
    """Every village with a target in the round, with its targets and completed responses counted."""
    rows = session.execute(
        select(Village.id, Village.name, func.count(RoundTarget.id), func.count(Response.id))
        .select_from(RoundTarget)
        .join(Household, Household.id == RoundTarget.household_id)
        .join(Village, Village.id == Household.village_id)
        .outerjoin(
            Response,
            (Response.target_id == RoundTarget.id) & (Response.status == ResponseStatus.COMPLETED),
        )
        .where(RoundTarget.round_id == round_id)
        .group_by(Village.id, Village.name)
    )
    return [_VillageCounts(*row) for row in rows]


def _answer_counts(session: Session, round_id: int, questions: list[str]) -> dict[int, dict[str, Counter[str]]]:
    """village id -> question -> key pressed -> answers from completed responses."""
    counts: dict[int, dict[str, Counter[str]]] = {}
    if not questions:
        return counts
    rows = session.execute(
        select(Household.village_id, Answer.question, Answer.digit, func.count())
        .select_from(Answer)
        .join(Response, Response.id == Answer.response_id)
        .join(RoundTarget, RoundTarget.id == Response.target_id)
        .join(Household, Household.id == RoundTarget.household_id)
        .where(
            Answer.round_id == round_id,
            Answer.question.in_(questions),
            Response.round_id == round_id,
            Response.status == ResponseStatus.COMPLETED,
        )
        .group_by(Household.village_id, Answer.question, Answer.digit)
    )
    for village_id, question, digit, count in rows:
        counts.setdefault(village_id, {}).setdefault(question, Counter())[digit] += count
    return counts
