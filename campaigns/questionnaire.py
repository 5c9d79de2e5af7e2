"""Questionnaires as data: loading, validation and stored versions.

A questionnaire file (YAML or JSON) declares its steps, prompts, valid keys, which rate each answer feeds,
branching (``ask_if``: asked when ANY listed earlier answer is one of the given keys), ending keys
(``end_on``), the messages spoken around the questions (greeting, re-prompts, closing messages), and
whether rate answers are read back for confirmation (``readback: true``). Validation reports every problem
with its location (unknown fields, unreachable steps, branches on missing steps, rates without a question,
...), so an office can fix a file in one pass.

Recorded prompts: every prompt (a step's question, a message, a read-back sentence) has a file name stem
(``step-security``, ``message-intro``, ``readback-security-3``); a ``.wav`` or ``.mp3`` file of that name
in ``SANLV_RECORDINGS_DIR/<questionnaire key>/`` is played instead of text-to-speech. A step may name its
recording explicitly with ``audio: file.wav``. :func:`prompts` lists them all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.errors import SanlvError
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
# Messages a file may give; without them the IVR falls back as noted.
OPTIONAL_MESSAGES = (
    "machine",  # said to an answering machine before hanging up (default: nothing)
    # said to every inbound caller who is not interviewed, on the roster or not (default: unknown_caller)
    "call_back",
    "already_done",  # an inbound caller whose interview in the active round is over (default: unknown_caller)
    "call_later",  # an inbound caller we are dialling right now (default: unknown_caller)
    "readback",  # "您选择的是{answer},确认请按1,重新选择请按2": required when readback is on
)
KNOWN_MESSAGES = REQUIRED_MESSAGES + OPTIONAL_MESSAGES
TOP_FIELDS = ("key", "title", "max_tries", "gather_timeout", "readback", "messages", "rates", "steps")
STEP_FIELDS = ("key", "prompt", "options", "rate", "positive", "unsure", "ask_if", "end_on", "audio", "optional")
# The check on the claim that publicity material was delivered door to door: an optional step, asked after the
# rates, whose answers the supervisors' view counts per cadre. 1 confirms a delivery, 2 denies it, 0 记不清.
DELIVERY_STEP = "delivery"
DELIVERY_YES = "1"
DELIVERY_NO = "2"
DELIVERY_UNSURE = "0"
VALID_DIGITS = frozenset("0123456789")
# Step keys travel in webhook URLs and in Response.current_step (50 characters with a ".confirm" suffix).
STEP_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
AUDIO_EXTENSIONS = (".wav", ".mp3")  # WAV first: Twilio plays it without transcoding
AUDIO_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(wav|mp3)$")
# The reachability analysis enumerates the answers that branching depends on; past this many distinct
# combinations it stops rather than take long (no questionnaire of ours comes near it).
MAX_BRANCH_STATES = 20000


class QuestionnaireError(SanlvError, ValueError):
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
    optional: bool = False  # a round may leave it out (see without_steps)


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
    readback: bool = False  # read rate answers back: "您选择的是……,确认请按1,重新选择请按2"
    content: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {step.key: index for index, step in enumerate(self.steps)}

    def step(self, key: str) -> Step:
        return self.steps[self._index[key]]

    def index(self, key: str) -> int:
        """The position of step ``key`` in asking order. Raises KeyError for an unknown step."""
        return self._index[key]

    def has_step(self, key: str) -> bool:
        return key in self._index

    @cached_property
    def rate_steps(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.rate)

    def reads_back(self, step: Step) -> bool:
        """Whether an answer to ``step`` is read back for confirmation."""
        return self.readback and step.rate is not None

    @property
    def checksum(self) -> str:
        return content_checksum(self.content)


# Speaking rate assumed when estimating how long a prompt takes to say: slower than Mandarin TTS (about 4 to 5
# characters a second), so the estimate errs long. A recorded prompt is assumed to be about as long.
SPEECH_CHARS_PER_SECOND = 3.0
# Messages that may be said before a question in the same <Gather> (a greeting, then a retry's reason).
_PREFACE_GREETINGS = ("intro", "welcome_back")
_PREFACE_RETRIES = ("invalid", "silence")


def longest_silence(questionnaire: Questionnaire) -> float:
    """Seconds a live call of ``questionnaire`` can go without any webhook: the longest prompt a <Gather> plays
    (a greeting, a retry's reason and the longest question or read-back), spoken slowly, then the keypad wait.
    After that Twilio requests the Gather's action (a key) or its Redirect (silence), or the call has ended."""
    messages = questionnaire.messages
    questions = [step.prompt for step in questionnaire.steps]
    if questionnaire.readback:
        longest_option = max((len(o) for step in questionnaire.rate_steps for o in step.options.values()), default=0)
        questions.append(messages.get("readback", "") + "x" * longest_option)
    characters = (
        max(len(messages.get(name, "")) for name in _PREFACE_GREETINGS)
        + max(len(messages.get(name, "")) for name in _PREFACE_RETRIES)
        + max(len(text) for text in questions)
    )
    return characters / SPEECH_CHARS_PER_SECOND + questionnaire.gather_timeout


def content_checksum(content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _digits(value: Any) -> str:
    return str(value).strip()


def unreachable_steps(steps: Iterable[Step]) -> list[Step]:
    """The steps that no sequence of answers ever asks, in asking order.

    Walks the steps in order, carrying every distinct combination of the answers that branching depends on
    (``ask_if``). At each step, for each combination: a step whose condition fails is skipped; otherwise it
    is asked (so it is reachable) and each key that does not end the survey continues, as does leaving the
    question unanswered, unless it is a gate (a step with ``end_on``: unanswered, it ends the call).
    """
    steps = list(steps)
    relevant = {key for step in steps for key in step.ask_if}
    states: set[frozenset[tuple[str, str]]] = {frozenset()}
    unreachable: list[Step] = []
    for step in steps:
        following: set[frozenset[tuple[str, str]]] = set()
        asked = False
        for state in states:
            answers = dict(state)
            if step.ask_if and not any(answers.get(key) in digits for key, digits in step.ask_if.items()):
                following.add(state)
                continue
            asked = True
            for digit in step.options:
                if digit not in step.end_on:
                    following.add(state | {(step.key, digit)} if step.key in relevant else state)
            if not step.end_on:
                following.add(state)
        if not asked:
            unreachable.append(step)
        states = following
        if len(states) > MAX_BRANCH_STATES:
            break
    return unreachable


def parse_questionnaire(content: Any, source: str = "<questionnaire>") -> Questionnaire:
    """Validate ``content`` (the parsed file) and build a Questionnaire.

    Raises:
        QuestionnaireError: listing every problem found, each with its location.
    """
    problems: list[str] = []
    if not isinstance(content, Mapping):
        raise QuestionnaireError(source, ["the file must contain a mapping with key, steps, rates and messages"])

    for name in content:
        if name not in TOP_FIELDS:
            problems.append(f"{name}: unknown field (known: {', '.join(TOP_FIELDS)})")
    key = content.get("key")
    if not isinstance(key, str) or not key.strip():
        problems.append("key: missing or empty")
        key = ""
    elif not STEP_KEY.match(key):
        # The key names the recordings folder: no spaces, slashes or dots.
        problems.append(f"key: {key!r} must be 1-40 letters, digits, '_' or '-'")
    title = str(content.get("title") or key)
    max_tries = content.get("max_tries", 2)
    if not isinstance(max_tries, int) or not 1 <= max_tries <= 5:
        problems.append(f"max_tries: {max_tries!r} must be a whole number from 1 to 5")
        max_tries = 2
    gather_timeout = content.get("gather_timeout", 8)
    if not isinstance(gather_timeout, int) or not 3 <= gather_timeout <= 30:
        problems.append(f"gather_timeout: {gather_timeout!r} must be a whole number of seconds from 3 to 30")
        gather_timeout = 8
    readback = content.get("readback", False)
    if not isinstance(readback, bool):
        problems.append(f"readback: {readback!r} must be true or false")
        readback = False

    messages_in = content.get("messages") or {}
    messages: dict[str, str] = {}
    if not isinstance(messages_in, Mapping):
        problems.append("messages: must be a mapping of message name to text")
        messages_in = {}
    for name, text in messages_in.items():
        if str(name) not in KNOWN_MESSAGES:
            problems.append(f"messages.{name}: unknown message (known: {', '.join(KNOWN_MESSAGES)})")
        messages[str(name)] = "" if text is None else str(text)
    for name in REQUIRED_MESSAGES + (("readback",) if readback else ()):
        if not messages.get(name, "").strip():
            problems.append(f"messages.{name}: missing" + (" (readback is on)" if name == "readback" else ""))
    if messages.get("readback", "").strip():
        try:
            messages["readback"].format(answer="")
            if "{answer}" not in messages["readback"]:
                raise KeyError("answer")
        except (KeyError, IndexError, ValueError):
            problems.append(
                "messages.readback: must contain {answer} (the meaning of the key pressed) and no other {...}"
            )
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
        if not STEP_KEY.match(step_key):
            problems.append(f"{where}.key: must be 1-40 letters, digits, '_' or '-'")
        for name in raw:
            if name not in STEP_FIELDS:
                problems.append(f"{where}.{name}: unknown field (known: {', '.join(STEP_FIELDS)})")
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
                if meaning is None or not str(meaning).strip():
                    problems.append(f"{where}.options.{d}: the meaning of key {d} is missing")
                options[d] = "" if meaning is None else str(meaning)

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
            if not isinstance(rate, str) or rate not in RATE_KEYS:
                problems.append(f"{where}.rate: unknown rate {rate!r} (known: {', '.join(RATE_KEYS)})")
                rate = str(rate)  # a list here must not break the checks below; the problem is reported
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
        if rate is not None and ask_if:
            # Completion needs every rate question answered: a skipped one could never complete.
            problems.append(f"{where}.ask_if: a rate question must always be asked")

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

        optional = raw.get("optional", False)
        if not isinstance(optional, bool):
            problems.append(f"{where}.optional: {optional!r} must be true or false")
            optional = False
        elif optional and rate is not None:
            problems.append(f"{where}.optional: a rate question cannot be left out (rates need every answer)")
        elif optional and end_on:
            problems.append(f"{where}.optional: a step that ends the survey (end_on) cannot be left out")
        if step_key == DELIVERY_STEP:
            for d in (DELIVERY_YES, DELIVERY_NO):
                if d not in options:
                    problems.append(
                        f"{where}.options: the delivery check needs key {DELIVERY_YES} (delivered) and "
                        f"{DELIVERY_NO} (not delivered)"
                    )
                    break
            if rate is not None:
                problems.append(f"{where}.rate: the delivery check feeds no rate")

        audio = raw.get("audio")
        if audio is not None and (not isinstance(audio, str) or not AUDIO_NAME.match(audio)):
            problems.append(f"{where}.audio: {audio!r} must be a .wav or .mp3 file name (no folders)")
            audio = None
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
                optional=optional,
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
    optional_keys = {step.key for step in steps if step.optional}
    for step in steps:
        for other in sorted(optional_keys & set(step.ask_if)):
            problems.append(
                f"steps[{seen[step.key]}] ({step.key}).ask_if: branches on {other}, which a round may leave out"
            )
    for step in unreachable_steps(steps):
        problems.append(
            f"steps[{seen[step.key]}] ({step.key}): unreachable: no answers to the earlier questions lead to it"
        )

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
        readback=readback,
        content=json.loads(json.dumps(content, ensure_ascii=False, default=str)),  # YAML dates become text
    )


def without_steps(questionnaire: Questionnaire, keys: Iterable[str]) -> Questionnaire:
    """``questionnaire`` with its optional steps ``keys`` left out (keys it does not have are ignored).

    The result is a questionnaire of its own (its content, and so its checksum, differ): a round that leaves a
    step out is created with it and stores it as its version, so what the round asks is what its version says.

    Raises:
        QuestionnaireError: a step named is not optional.
    """
    leave_out = {key for key in keys if questionnaire.has_step(key)}
    if not leave_out:
        return questionnaire
    required = sorted(key for key in leave_out if not questionnaire.step(key).optional)
    if required:
        raise QuestionnaireError(
            questionnaire.key, [f"steps ({key}): not optional, so a round cannot leave it out" for key in required]
        )
    content = json.loads(json.dumps(dict(questionnaire.content), ensure_ascii=False))
    content["steps"] = [step for step in content["steps"] if step.get("key") not in leave_out]
    return parse_questionnaire(content, f"{questionnaire.key} without {', '.join(sorted(leave_out))}")


def load_questionnaire_file(path: Path | str) -> Questionnaire:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionnaireError(str(path), [f"cannot read the file: {exc}"]) from None
    return load_questionnaire_text(text, str(path))


def load_questionnaire_text(text: str, source: str) -> Questionnaire:
    """Parse and validate the text of a questionnaire file (JSON when ``source`` ends in ``.json``, else YAML).

    Raises:
        QuestionnaireError: listing every problem found, each with its location.
    """
    is_json = source.lower().endswith(".json")
    try:
        content = json.loads(text) if is_json else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise QuestionnaireError(source, [f"not valid {'JSON' if is_json else 'YAML'}: {exc}"]) from None
    return parse_questionnaire(content, source)


def builtin_keys() -> list[str]:
    """The keys of the questionnaires shipped with sanlv, sorted."""
    folder = resources.files("campaigns") / "questionnaires"
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


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


STORED_REF = re.compile(r"^version:(\d{1,9})$")


def resolve_in(session: Session, ref: str) -> Questionnaire:
    """As :func:`resolve_questionnaire`, and ``version:N``: the questionnaire stored as version N (one an office
    uploaded through the web pages, or any version a round was created with).

    Raises:
        QuestionnaireError: no such built-in questionnaire, file or stored version, or an invalid file.
    """
    match = STORED_REF.match(ref.strip())
    if match is None:
        return resolve_questionnaire(ref)
    version = session.get(QuestionnaireVersion, int(match.group(1)))
    if version is None:
        raise QuestionnaireError(ref, [f"no stored questionnaire version {match.group(1)}"])
    return from_version(version)


def latest_versions(session: Session) -> list[QuestionnaireVersion]:
    """The newest stored version of each questionnaire key that is not a built-in one, by key.

    These are the offices' own questionnaires: uploaded through the web pages, or used by a round created from
    a file on the command line.
    """
    newest = (
        select(QuestionnaireVersion.key, func.max(QuestionnaireVersion.id).label("id"))
        .group_by(QuestionnaireVersion.key)
        .subquery()
    )
    versions = session.scalars(
        select(QuestionnaireVersion)
        .join(newest, newest.c.id == QuestionnaireVersion.id)
        .where(QuestionnaireVersion.key.not_in(builtin_keys()))
        .order_by(QuestionnaireVersion.key)
    )
    return list(versions)


def by_key(session: Session, key: str) -> tuple[Questionnaire, str]:
    """The questionnaire an office means by ``key``, and the reference a round is created with: a built-in
    questionnaire (``default``), else the newest stored version of that key (``version:N``).

    Raises:
        QuestionnaireError: no built-in questionnaire and no stored version has this key.
    """
    if key in builtin_keys():
        return builtin_questionnaire(key), key
    version = session.scalar(
        select(QuestionnaireVersion)
        .where(QuestionnaireVersion.key == key)
        .order_by(QuestionnaireVersion.id.desc())
        .limit(1)
    )
    if version is None:
        raise QuestionnaireError(key, [f"no questionnaire with the key {key!r}"])
    return from_version(version), f"version:{version.id}"


def store_office_questionnaire(session: Session, text: str, source: str) -> QuestionnaireVersion:
    """Validate an office's own questionnaire file and store it as a version rounds can be created with.

    Raises:
        QuestionnaireError: every problem of the file, each with its location; or its key is a built-in
            questionnaire's (the office's file would be confused with it).
    """
    questionnaire = load_questionnaire_text(text, source)
    if questionnaire.key in builtin_keys():
        raise QuestionnaireError(
            source, [f"key: {questionnaire.key!r} is the key of a built-in questionnaire; choose another key"]
        )
    return store_version(session, questionnaire)


_LOCATION_PART = re.compile(r"\.?([^.\[\]\s]+)|\[(\d+)\]|\s*\([^)]*\)")


def problem_lines(text: str, problems: Iterable[str]) -> list[tuple[int | None, str]]:
    """Each problem of a YAML or JSON questionnaire text with the line (1-based) of the place it names.

    A problem reads ``<location>: <what is wrong>``, the location a path such as ``steps[3] (security).options.9``
    or ``messages.intro``. The line is that of the deepest part of the path the file has (a missing message
    points at ``messages``); None when the text cannot be parsed or the problem names no place in it.
    """
    error_line = None
    try:
        root = yaml.compose(text)  # JSON is YAML too, so one parser gives both their lines
    except yaml.YAMLError as exc:
        root = None
        mark = getattr(exc, "problem_mark", None)
        error_line = mark.line + 1 if mark is not None else None
    located: list[tuple[int | None, str]] = []
    for problem in problems:
        if problem.startswith("not valid "):
            located.append((error_line, problem))
            continue
        path, sep, _rest = problem.partition(": ")
        node = root if sep else None
        line = None
        for match in _LOCATION_PART.finditer(path):
            name, index = match.group(1), match.group(2)
            if node is None or (name is None and index is None):
                continue
            found = _child(node, name, index)
            if found is None:
                break
            node, mark = found
            line = mark.line + 1
        located.append((line, problem))
    return located


def _child(node: yaml.Node, name: str | None, index: str | None) -> tuple[yaml.Node, yaml.Mark] | None:
    """The part of ``node`` a location names, and where it is written (a mapping entry: its key's place)."""
    if index is not None and isinstance(node, yaml.SequenceNode):
        position = int(index)
        return (node.value[position], node.value[position].start_mark) if position < len(node.value) else None
    if name is not None and isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return value, key.start_mark
    return None


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


@dataclass(frozen=True)
class PromptInfo:
    """One thing the IVR says: a step's question, a message, or the read-back of one answer."""

    name: str  # the recording's file name stem: step-security, message-intro, readback-security-3
    kind: str  # step | message | readback
    text: str  # what text-to-speech says when there is no recording
    audio: str | None = None  # a file name the questionnaire gives explicitly (steps only)

    def candidates(self) -> tuple[str, ...]:
        """File names that hold this prompt's recording, in order of preference."""
        if self.audio:
            return (self.audio,)
        return tuple(self.name + ext for ext in AUDIO_EXTENSIONS)


def step_prompt(step: Step) -> PromptInfo:
    return PromptInfo(f"step-{step.key}", "step", step.prompt, step.audio)


def message_prompt(questionnaire: Questionnaire, name: str) -> PromptInfo:
    return PromptInfo(f"message-{name}", "message", questionnaire.messages.get(name, ""))


def readback_prompt(questionnaire: Questionnaire, step: Step, digit: str) -> PromptInfo:
    meaning = step.options.get(digit, digit)
    text = questionnaire.messages.get("readback", "").replace("{answer}", meaning)
    return PromptInfo(f"readback-{step.key}-{digit}", "readback", text)


def prompts(questionnaire: Questionnaire) -> list[PromptInfo]:
    """Every prompt the IVR may say for ``questionnaire``: messages, questions, read-backs (non-empty only)."""
    out = [message_prompt(questionnaire, name) for name in KNOWN_MESSAGES if name != "readback"]
    for step in questionnaire.steps:
        out.append(step_prompt(step))
        if questionnaire.reads_back(step):
            out.extend(readback_prompt(questionnaire, step, digit) for digit in step.options)
    return [prompt for prompt in out if prompt.text.strip() or prompt.audio]


def recording_folder(recordings_dir: Path | str, questionnaire: Questionnaire) -> Path:
    """Where the recordings of ``questionnaire`` live: ``<recordings dir>/<questionnaire key>/``."""
    return Path(recordings_dir) / questionnaire.key


def find_recording(folder: Path, prompt: PromptInfo) -> Path | None:
    """The recording of ``prompt`` in ``folder``, or None (the IVR falls back to text-to-speech)."""
    for name in prompt.candidates():
        path = folder / name
        if path.is_file():
            return path
    return None


def recording_path(recordings_dir: Path | str, key: str, name: str) -> Path | None:
    """The stored recording ``name`` of questionnaire ``key``, or None: only an audio file name inside that
    questionnaire's folder is ever served (not a link out of it, not another file)."""
    if not STEP_KEY.match(key) or not AUDIO_NAME.match(name):
        return None
    folder = (Path(recordings_dir) / key).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        return None
    return path


def to_show_json(questionnaire: Questionnaire) -> dict[str, Any]:
    """The ``questionnaire show --format json`` contract."""
    return {
        "key": questionnaire.key,
        "questions": [
            {"key": step.key, "prompt": step.prompt, "options": dict(step.options)} for step in questionnaire.steps
        ],
    }


def rate_steps(questionnaire: Questionnaire) -> dict[str, Step]:
    """The step feeding each of the questionnaire's rates, in the canonical order of ``RATE_KEYS``.

    A questionnaire may declare fewer than the five standard rates; only the ones it declares are reported.
    """
    by_rate = {step.rate: step for step in questionnaire.rate_steps}
    return {key: by_rate[key] for key in RATE_KEYS if key in questionnaire.rates and key in by_rate}
