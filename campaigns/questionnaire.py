"""Questionnaires as data: loading, validation and stored versions.

A questionnaire file (YAML or JSON) declares its steps, prompts, valid keys, which rate each answer feeds,
branching (``ask_if``: asked when ANY listed earlier answer is one of the given keys), ending keys
(``end_on``), and the messages spoken around the questions. Validation reports every problem with its
location, so an office can fix a file in one pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.models import QuestionnaireVersion

RATE_KEYS = ("security", "satisfaction", "awareness", "participation", "cadre_contact")
# Keys with a global meaning at every question; no option may use them.
REPEAT_KEY = "*"
STOP_KEY = "9"
END_OUTCOMES = ("refused", "ineligible")
REQUIRED_MESSAGES = (
    "intro",
    "welcome_back",
    "invalid",
    "silence",
    "completed",
    "refused",
    "ineligible",
    "opted_out",
    "incomplete",
    "unknown_caller",
)
VALID_DIGITS = frozenset("0123456789")


class QuestionnaireError(ValueError):
    """A questionnaire file is invalid. ``problems`` lists each one with its location."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class Step:
    key: str
    prompt: str
    options: Mapping[str, str]
    rate: str | None = None
    positive: frozenset[str] = frozenset()
    unsure: frozenset[str] = frozenset()
    ask_if: Mapping[str, frozenset[str]] = field(default_factory=dict)
    end_on: Mapping[str, str] = field(default_factory=dict)
    audio: str | None = None  # a recorded prompt (file name under the recordings folder)


@dataclass(frozen=True)
class RateSpec:
    key: str
    label: str
    target: float


@dataclass(frozen=True)
class Questionnaire:
    key: str
    title: str
    steps: tuple[Step, ...]
    rates: Mapping[str, RateSpec]
    messages: Mapping[str, str]
    max_tries: int = 2
    gather_timeout: int = 8
    content: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)

    def has_step(self, key: str) -> bool:
        return any(step.key == key for step in self.steps)

    @property
    def rate_steps(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.rate)

    @property
    def checksum(self) -> str:
        return content_checksum(self.content)


def content_checksum(content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _digits(value: Any) -> str:
    return str(value).strip()


def parse_questionnaire(content: Any, source: str = "<questionnaire>") -> Questionnaire:
    """Validate ``content`` (the parsed file) and build a Questionnaire.

    Raises:
        QuestionnaireError: listing every problem found, each with its location.
    """
    problems: list[str] = []
    if not isinstance(content, Mapping):
        raise QuestionnaireError(source, ["the file must contain a mapping with key, steps, rates and messages"])

    key = content.get("key")
    if not isinstance(key, str) or not key.strip():
        problems.append("key: missing or empty")
        key = ""
    title = str(content.get("title") or key)
    max_tries = content.get("max_tries", 2)
    if not isinstance(max_tries, int) or not 1 <= max_tries <= 5:
        problems.append(f"max_tries: {max_tries!r} must be a whole number from 1 to 5")
        max_tries = 2
    gather_timeout = content.get("gather_timeout", 8)
    if not isinstance(gather_timeout, int) or not 3 <= gather_timeout <= 30:
        problems.append(f"gather_timeout: {gather_timeout!r} must be a whole number of seconds from 3 to 30")
        gather_timeout = 8

    messages_in = content.get("messages") or {}
    messages: dict[str, str] = {}
    if not isinstance(messages_in, Mapping):
        problems.append("messages: must be a mapping of message name to text")
        messages_in = {}
    for name, text in messages_in.items():
        messages[str(name)] = "" if text is None else str(text)
    for name in REQUIRED_MESSAGES:
        if not messages.get(name, "").strip():
            problems.append(f"messages.{name}: missing")
    messages.setdefault("machine", "")

    rates_in = content.get("rates") or {}
    rates: dict[str, RateSpec] = {}
    if not isinstance(rates_in, Mapping):
        problems.append("rates: must be a mapping of rate key to {label, target}")
        rates_in = {}
    for rate_key, spec in rates_in.items():
        where = f"rates.{rate_key}"
        if rate_key not in RATE_KEYS:
            problems.append(f"{where}: unknown rate (known: {', '.join(RATE_KEYS)})")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: must be a mapping with label and target")
            continue
        target = spec.get("target")
        if not isinstance(target, int | float) or not 0 <= target <= 1:
            problems.append(f"{where}.target: {target!r} must be a fraction from 0 to 1 (0.95 for 95%)")
            target = 0.0
        rates[rate_key] = RateSpec(rate_key, str(spec.get("label") or rate_key), float(target))

    steps_in = content.get("steps")
    steps: list[Step] = []
    if not isinstance(steps_in, list) or not steps_in:
        problems.append("steps: must be a non-empty list")
        steps_in = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(steps_in):
        where = f"steps[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        step_key = raw.get("key")
        if not isinstance(step_key, str) or not step_key.strip():
            problems.append(f"{where}.key: missing")
            continue
        where = f"steps[{index}] ({step_key})"
        if step_key in seen:
            problems.append(f"{where}.key: duplicate of steps[{seen[step_key]}]")
            continue
        seen[step_key] = index
        prompt = raw.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"{where}.prompt: missing")
            prompt = ""
        options_in = raw.get("options")
        options: dict[str, str] = {}
        if not isinstance(options_in, Mapping) or not options_in:
            problems.append(f"{where}.options: must map at least one key to its meaning")
            options_in = {}
        for digit, meaning in options_in.items():
            d = _digits(digit)
            if d == STOP_KEY or d == REPEAT_KEY:
                problems.append(f"{where}.options.{d}: key {d} is reserved (* repeats, 9 stops the survey)")
            elif len(d) != 1 or d not in VALID_DIGITS:
                problems.append(f"{where}.options.{d}: a key must be one digit 0-8")
            else:
                options[d] = str(meaning)

        def key_set(name: str, values: Any) -> frozenset[str]:
            if values is None:
                return frozenset()
            if not isinstance(values, list):
                problems.append(f"{where}.{name}: must be a list of keys")
                return frozenset()
            out = frozenset(_digits(v) for v in values)
            for d in sorted(out - options.keys()):
                problems.append(f"{where}.{name}: key {d} is not one of the step's options")
            return out

        rate = raw.get("rate")
        positive = key_set("positive", raw.get("positive"))
        unsure = key_set("unsure", raw.get("unsure"))
        if rate is not None:
            if rate not in RATE_KEYS:
                problems.append(f"{where}.rate: unknown rate {rate!r} (known: {', '.join(RATE_KEYS)})")
            elif rate not in rates:
                problems.append(f"{where}.rate: {rate} has no entry under rates (label and target)")
            if not positive:
                problems.append(f"{where}.positive: a rate question must list its positive keys")
            if positive & unsure:
                problems.append(f"{where}: a key cannot be both positive and unsure")
        elif positive or unsure:
            problems.append(f"{where}: positive/unsure keys given but the step feeds no rate")

        ask_if: dict[str, frozenset[str]] = {}
        ask_if_in = raw.get("ask_if") or {}
        if not isinstance(ask_if_in, Mapping):
            problems.append(f"{where}.ask_if: must map an earlier step to a list of keys")
            ask_if_in = {}
        for other, values in ask_if_in.items():
            if other not in seen or other == step_key:
                problems.append(f"{where}.ask_if: branch on {other!r}, which is not an earlier step")
                continue
            if not isinstance(values, list) or not values:
                problems.append(f"{where}.ask_if.{other}: must be a non-empty list of keys")
                continue
            wanted = frozenset(_digits(v) for v in values)
            earlier = next((s for s in steps if s.key == other), None)
            if earlier is not None:
                for d in sorted(wanted - earlier.options.keys()):
                    problems.append(f"{where}.ask_if.{other}: key {d} is not an option of {other}")
            ask_if[other] = wanted

        end_on: dict[str, str] = {}
        end_on_in = raw.get("end_on") or {}
        if not isinstance(end_on_in, Mapping):
            problems.append(f"{where}.end_on: must map a key to an outcome")
            end_on_in = {}
        for digit, outcome in end_on_in.items():
            d = _digits(digit)
            if d not in options:
                problems.append(f"{where}.end_on.{d}: key {d} is not one of the step's options")
            if outcome not in END_OUTCOMES:
                problems.append(f"{where}.end_on.{d}: outcome {outcome!r} must be one of {', '.join(END_OUTCOMES)}")
            end_on[d] = str(outcome)

        audio = raw.get("audio")
        steps.append(
            Step(
                key=step_key,
                prompt=prompt,
                options=options,
                rate=rate,
                positive=positive,
                unsure=unsure,
                ask_if=ask_if,
                end_on=end_on,
                audio=str(audio) if audio else None,
            )
        )

    fed = {step.rate for step in steps if step.rate}
    for rate_key in rates:
        if rate_key not in fed:
            problems.append(f"rates.{rate_key}: no question feeds this rate")
    rate_steps_by_rate: dict[str, str] = {}
    for step in steps:
        if step.rate:
            if step.rate in rate_steps_by_rate:
                problems.append(f"steps ({step.key}).rate: {step.rate} is already fed by {rate_steps_by_rate[step.rate]}")
            rate_steps_by_rate[step.rate] = step.key

    if problems:
        raise QuestionnaireError(source, problems)
    return Questionnaire(
        key=key,
        title=title,
        steps=tuple(steps),
        rates=rates,
        messages=messages,
        max_tries=max_tries,
        gather_timeout=gather_timeout,
        content=json.loads(json.dumps(content, ensure_ascii=False)),
    )


def load_questionnaire_file(path: Path | str) -> Questionnaire:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionnaireError(str(path), [f"cannot read the file: {exc}"]) from None
    try:
        content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise QuestionnaireError(str(path), [f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}"]) from None
    return parse_questionnaire(content, str(path))


def builtin_questionnaire(key: str = "default") -> Questionnaire:
    """A questionnaire shipped with sanlv (``campaigns/questionnaires/KEY.yaml``)."""
    resource = resources.files("campaigns") / "questionnaires" / f"{key}.yaml"
    if not resource.is_file():
        raise QuestionnaireError(key, [f"no built-in questionnaire named {key!r}"])
    return parse_questionnaire(yaml.safe_load(resource.read_text(encoding="utf-8")), f"questionnaires/{key}.yaml")


def resolve_questionnaire(ref: str) -> Questionnaire:
    """``ref`` is a built-in key (``default``) or a path to a YAML/JSON file."""
    if ref.endswith((".yaml", ".yml", ".json")) or "/" in ref:
        return load_questionnaire_file(ref)
    return builtin_questionnaire(ref)


def store_version(session: Session, questionnaire: Questionnaire) -> QuestionnaireVersion:
    """Return the stored snapshot of ``questionnaire``, creating it if this exact content is new."""
    checksum = questionnaire.checksum
    existing = session.scalar(
        select(QuestionnaireVersion).where(
            QuestionnaireVersion.key == questionnaire.key, QuestionnaireVersion.checksum == checksum
        )
    )
    if existing is not None:
        return existing
    version = QuestionnaireVersion(key=questionnaire.key, checksum=checksum, content=dict(questionnaire.content))
    session.add(version)
    session.flush()
    return version


def from_version(version: QuestionnaireVersion) -> Questionnaire:
    return parse_questionnaire(version.content, f"questionnaire version {version.id}")


def to_show_json(questionnaire: Questionnaire) -> dict[str, Any]:
    """The ``questionnaire show --format json`` contract."""
    return {
        "key": questionnaire.key,
        "questions": [
            {"key": step.key, "prompt": step.prompt, "options": dict(step.options)} for step in questionnaire.steps
        ],
    }
