"""Round comparison: per village and rate, the change from round A to round B and whether it is larger than
the sampling noise (the pooled two-proportion z-test at 5%, two-sided).

Both rounds are figured exactly as :func:`reports.rates.village_rates` figures them (each with its own
``exclude_unsure`` and targets). Villages are matched by roster id; a village present in one round only is
listed with the other side empty and no test. Only rates both questionnaires report are compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from reports.rates import (
    DEFAULT_MIN_SAMPLE,
    TOWNSHIP,
    ReportError,
    natural_key,
    village_rates,
)
from reports.stats import SIGNIFICANCE, two_proportion_test


def compare_rounds(
    session: Session, round_a: int, round_b: int, *, min_sample: int = DEFAULT_MIN_SAMPLE, alpha: float = SIGNIFICANCE
) -> dict[str, Any]:
    """``{"round_a": {...}, "round_b": {...}, "alpha", "rate_labels", "villages": [...], "total": {...}}``.

    Each village (and ``total``) has ``village``, ``village_id`` and ``rates``: rate key ->
    ``{"a": {"positive", "valid", "rate"} | None, "b": ..., "change": float | None, "z", "p_value",
    "significant": bool, "direction": "up" | "down" | None}``. ``direction`` is set only for a significant
    change; ``change`` is B − A whenever both sides have valid answers.

    Raises:
        ReportError: a round does not exist, or A and B are the same round.
    """
    if round_a == round_b:
        raise ReportError(f"round {round_a} is compared with itself; give two different rounds")
    a = village_rates(session, round_a, min_sample=min_sample, flags=False)
    b = village_rates(session, round_b, min_sample=min_sample, flags=False)
    keys = [key for key in a["round"]["rate_labels"] if key in b["round"]["rate_labels"]]
    a_villages = {entry["village_id"]: entry for entry in a["villages"]}
    b_villages = {entry["village_id"]: entry for entry in b["villages"]}
    names = {vid: entry["village"] for vid, entry in {**a_villages, **b_villages}.items()}
    villages = [
        _compare(names[vid], vid, a_villages.get(vid), b_villages.get(vid), keys, alpha)
        for vid in sorted(names, key=lambda vid: (natural_key(names[vid]), vid))
    ]
    return {
        "round_a": a["round"],
        "round_b": b["round"],
        "alpha": alpha,
        "rate_labels": {key: b["round"]["rate_labels"][key] for key in keys},
        "villages": villages,
        "total": _compare(TOWNSHIP, None, a["total"], b["total"], keys, alpha),
    }


def _side(entry: Mapping[str, Any] | None, key: str) -> dict[str, Any] | None:
    if entry is None:
        return None
    figures = entry["rates"][key]
    return {"positive": figures["positive"], "valid": figures["valid"], "rate": figures["rate"]}


def _compare(
    name: str,
    village_id: int | None,
    a: Mapping[str, Any] | None,
    b: Mapping[str, Any] | None,
    keys: list[str],
    alpha: float,
) -> dict[str, Any]:
    rates = {}
    for key in keys:
        side_a, side_b = _side(a, key), _side(b, key)
        test = None
        if side_a and side_b:
            test = two_proportion_test(side_a["positive"], side_a["valid"], side_b["positive"], side_b["valid"], alpha)
        direction = None
        if test is not None and test.significant:
            direction = "up" if test.change > 0 else "down"
        rates[key] = {
            "a": side_a,
            "b": side_b,
            "change": test.change if test else None,
            "z": test.z if test else None,
            "p_value": test.p_value if test else None,
            "significant": bool(test and test.significant),
            "direction": direction,
        }
    return {"village": name, "village_id": village_id, "rates": rates}
