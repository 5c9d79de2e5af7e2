"""Questionnaires: the built-in default against the documented questionnaire (README), validation of broken files, stored versions, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import QuestionnaireVersion
from campaigns.questionnaire import (
    RATE_KEYS,
    QuestionnaireError,
    builtin_questionnaire,
    from_version,
    load_questionnaire_file,
    parse_questionnaire,
    resolve_questionnaire,
    store_version,
    to_show_json,
    without_steps,
)

DEFAULT_ORDER = [
    "consent",
    "screen",
    "security",
    "concern",
    "awareness",
    "participation",
    "satisfaction",
    "cadre_contact",
    "visit",
    "delivery",
]

# The documented questionnaire: step -> the keys a resident may press (labels where the documentation fixes them).
DOCUMENTED_OPTIONS: dict[str, dict[str, str | None]] = {
    "consent": {"1": None, "2": None},
    "screen": {"1": None, "2": None},
    "security": {"1": "安全", "2": "基本安全", "3": "不太安全", "4": "不安全", "0": "说不清"},
    "concern": {"1": "盗抢", "2": "电信诈骗", "3": "黄赌毒", "4": "矛盾纠纷", "5": "其他"},
    "awareness": {"1": "知道", "2": "不知道"},
    "participation": {"1": None, "2": None},
    "satisfaction": {"1": "满意", "2": "基本满意", "3": "不太满意", "4": "不满意", "0": "说不清"},
    "cadre_contact": {"1": None, "2": None, "0": "记不清"},
    "visit": {"1": None, "2": None},
    "delivery": {"1": "有", "2": "没有", "0": "记不清"},
}


def sanlv(*args: str) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args))


def default_content() -> dict[str, Any]:
    return copy.deepcopy(dict(builtin_questionnaire().content))


def problems_of(content: Any) -> list[str]:
    with pytest.raises(QuestionnaireError) as caught:
        parse_questionnaire(content, "test.yaml")
    return caught.value.problems


# --- the built-in default ----------------------------------------------------------------------------------


def test_the_default_asks_designs_steps_in_order() -> None:
    questionnaire = builtin_questionnaire()

    assert questionnaire.key == "default"
    assert [step.key for step in questionnaire.steps] == DEFAULT_ORDER


@pytest.mark.parametrize("step_key", DEFAULT_ORDER)
def test_each_default_step_has_designs_keys(step_key: str) -> None:
    step = builtin_questionnaire().step(step_key)
    expected = DOCUMENTED_OPTIONS[step_key]

    assert set(step.options) == set(expected)
    for digit, label in expected.items():
        if label is not None:
            assert step.options[digit] == label
    # The resident hears which key means what: every key is named in the prompt.
    for digit in step.options:
        assert f"按{digit}" in step.prompt, (step_key, digit)


def test_no_default_option_uses_a_global_key() -> None:
    for step in builtin_questionnaire().steps:
        assert "9" not in step.options and "*" not in step.options, step.key


def test_the_default_rates_and_their_positive_keys() -> None:
    questionnaire = builtin_questionnaire()

    fed = {step.rate: (step.key, set(step.positive), set(step.unsure)) for step in questionnaire.rate_steps}
    assert fed == {
        "security": ("security", {"1", "2"}, {"0"}),
        "awareness": ("awareness", {"1"}, set()),
        "participation": ("participation", {"1"}, set()),
        "satisfaction": ("satisfaction", {"1", "2"}, {"0"}),
        "cadre_contact": ("cadre_contact", {"1"}, set()),
    }
    assert set(questionnaire.rates) == set(RATE_KEYS)
    # Targets from the township plan (participation and cadre contact are configurable).
    assert questionnaire.rates["security"].target == 1.0
    assert questionnaire.rates["satisfaction"].target == 0.95
    assert questionnaire.rates["awareness"].target == 0.95
    for key in ("participation", "cadre_contact"):
        assert 0 < questionnaire.rates[key].target <= 1


def test_the_default_branches_and_endings() -> None:
    questionnaire = builtin_questionnaire()

    assert questionnaire.step("concern").ask_if == {"security": frozenset({"3", "4"})}
    assert questionnaire.step("visit").ask_if == {
        "security": frozenset({"3", "4"}),
        "satisfaction": frozenset({"3", "4"}),
    }
    assert questionnaire.step("consent").end_on == {"2": "refused"}
    assert questionnaire.step("screen").end_on == {"2": "ineligible"}
    for step in questionnaire.steps:
        if step.key not in ("concern", "visit"):
            assert not step.ask_if, step.key
        if step.key not in ("consent", "screen"):
            assert not step.end_on, step.key
    # Questions about the rates are never skipped.
    assert all(not step.ask_if for step in questionnaire.rate_steps)


def test_the_default_messages_cover_the_global_keys_and_the_close() -> None:
    messages = builtin_questionnaire().messages

    assert "星号" in messages["intro"] and "按9" in messages["intro"]
    assert "110" in messages["completed"]


def test_resolve_takes_a_builtin_key_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(default_content(), allow_unicode=True, sort_keys=False), encoding="utf-8")

    assert resolve_questionnaire("default") == builtin_questionnaire()
    assert resolve_questionnaire(str(path)) == builtin_questionnaire()
    with pytest.raises(QuestionnaireError, match="no built-in questionnaire named 'nosuch'"):
        resolve_questionnaire("nosuch")


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps(default_content(), ensure_ascii=False), encoding="utf-8")

    assert load_questionnaire_file(path) == builtin_questionnaire()


def test_yaml_integer_keys_mean_the_same_as_quoted_ones() -> None:
    content = default_content()
    content["steps"][0]["options"] = {1: "愿意", 2: "不愿意"}
    content["steps"][0]["end_on"] = {2: "refused"}
    content["steps"][2]["positive"] = [1, 2]

    questionnaire = parse_questionnaire(content)

    assert questionnaire.step("consent").options == {"1": "愿意", "2": "不愿意"}
    assert questionnaire.step("consent").end_on == {"2": "refused"}
    assert questionnaire.step("security").positive == {"1", "2"}


# --- validation ------------------------------------------------------------------------------------------

BROKEN_YAML = """\
key: broken
title: 坏问卷
messages: {intro: 您好, welcome_back: 欢迎回来, invalid: 输入有误, silence: 没有按键, completed: 再见,
           refused: 再见, ineligible: 再见, opted_out: 再见, incomplete: 再见, unknown_caller: 再见}
rates:
  security: {label: 安全感, target: 1.0}
  happiness: {label: 幸福感, target: 0.9}
  participation: {label: 参与率, target: 0.9}
steps:
  - key: consent
    prompt: 愿意请按1,不愿意请按2。
    options: {"1": 愿意, "2": 不愿意}
    end_on: {"2": refused}
  - key: security
    prompt: 安全吗?
    options: {"1": 安全, "2": 基本安全, "3": 不安全, "9": 说不清}
    rate: security
    positive: ["1", "5"]
    ask_if: {visit: ["1"]}
  - key: concern
    prompt: 担心什么?
    options: {"1": 盗抢}
    ask_if: {nowhere: ["1"]}
  - key: consent
    prompt: 又问一次
    options: {"1": 是}
  - key: visit
    prompt: 上门吗?
    options: {"1": 希望, "2": 不需要}
"""

BROKEN_PROBLEMS = [
    "rates.happiness: unknown rate (known: security, satisfaction, awareness, participation, cadre_contact)",
    "steps[1] (security).options.9: key 9 is reserved (* repeats, 9 stops the survey)",
    "steps[1] (security).positive: key 5 is not one of the step's options",
    "steps[1] (security).ask_if: branch on 'visit', which is not an earlier step",
    "steps[2] (concern).ask_if: branch on 'nowhere', which is not an earlier step",
    "steps[3] (consent).key: duplicate of steps[0]",
    "rates.participation: no question feeds this rate",
]


def test_validation_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML, encoding="utf-8")

    with pytest.raises(QuestionnaireError) as caught:
        load_questionnaire_file(path)

    assert caught.value.source == str(path)
    assert caught.value.problems == BROKEN_PROBLEMS


def test_validate_command_lists_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML, encoding="utf-8")

    result = sanlv("questionnaire", "validate", str(path))

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [f"{path}: {problem}" for problem in BROKEN_PROBLEMS] + [
        f"Error: {path}: {len(BROKEN_PROBLEMS)} problem(s)"
    ]


def test_validate_command_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(default_content(), allow_unicode=True, sort_keys=False), encoding="utf-8")

    result = sanlv("questionnaire", "validate", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{path}: ok ({len(DEFAULT_ORDER)} steps, rates: security, satisfaction, awareness, participation, cadre_contact)"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("key: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "the file must contain a mapping"),
    ],
)
def test_validate_command_reports_an_unreadable_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")

    result = sanlv("questionnaire", "validate", str(path))

    assert result.exit_code == 1
    assert problem in result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: {path}: 1 problem(s)"


def test_validate_command_reports_a_missing_file(tmp_path: Path) -> None:
    result = sanlv("questionnaire", "validate", str(tmp_path / "absent.yaml"))

    assert result.exit_code == 1
    assert "cannot read the file" in result.stderr


def _step(content: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in content["steps"] if s["key"] == key)


def _mutations() -> list[tuple[str, Any, str]]:
    def unknown_step_rate(c: dict) -> None:
        _step(c, "awareness")["rate"] = "happiness"

    def list_as_rate(c: dict) -> None:
        _step(c, "awareness")["rate"] = ["awareness"]

    def star_option(c: dict) -> None:
        _step(c, "consent")["options"]["*"] = "重听"

    def two_digit_option(c: dict) -> None:
        _step(c, "consent")["options"]["10"] = "十"

    def empty_meaning(c: dict) -> None:
        _step(c, "consent")["options"]["1"] = None

    def unsure_not_option(c: dict) -> None:
        _step(c, "awareness")["unsure"] = ["0"]

    def positive_and_unsure(c: dict) -> None:
        _step(c, "security")["unsure"] = ["0", "2"]

    def rate_without_positive(c: dict) -> None:
        del _step(c, "awareness")["positive"]

    def positive_without_rate(c: dict) -> None:
        _step(c, "concern")["positive"] = ["1"]

    def rate_not_declared(c: dict) -> None:
        del c["rates"]["awareness"]

    def rate_fed_twice(c: dict) -> None:
        _step(c, "participation")["rate"] = "awareness"

    def ask_if_self(c: dict) -> None:
        _step(c, "concern")["ask_if"] = {"concern": ["1"]}

    def ask_if_not_an_option(c: dict) -> None:
        _step(c, "concern")["ask_if"] = {"security": ["3", "7"]}

    def ask_if_empty(c: dict) -> None:
        _step(c, "concern")["ask_if"] = {"security": []}

    def end_on_bad_outcome(c: dict) -> None:
        _step(c, "consent")["end_on"] = {"2": "hung_up"}

    def end_on_not_option(c: dict) -> None:
        _step(c, "screen")["end_on"] = {"3": "ineligible"}

    def missing_prompt(c: dict) -> None:
        _step(c, "visit")["prompt"] = " "

    def missing_message(c: dict) -> None:
        del c["messages"]["opted_out"]

    def bad_target(c: dict) -> None:
        c["rates"]["awareness"]["target"] = 95

    def bad_max_tries(c: dict) -> None:
        c["max_tries"] = 9

    def bad_gather_timeout(c: dict) -> None:
        c["gather_timeout"] = 1

    def no_key(c: dict) -> None:
        del c["key"]

    def optional_not_bool(c: dict) -> None:
        _step(c, "delivery")["optional"] = "yes"

    def optional_rate(c: dict) -> None:
        _step(c, "awareness")["optional"] = True

    def optional_gate(c: dict) -> None:
        _step(c, "screen")["optional"] = True

    def branch_on_optional(c: dict) -> None:
        _step(c, "visit")["optional"] = True
        c["steps"][-1]["ask_if"] = {"visit": ["1"]}
        del c["steps"][-1]["optional"]

    def delivery_without_no(c: dict) -> None:
        del _step(c, "delivery")["options"]["2"]

    return [
        ("unknown step rate", unknown_step_rate, "steps[4] (awareness).rate: unknown rate 'happiness'"),
        ("rate given as a list", list_as_rate, "steps[4] (awareness).rate: unknown rate ['awareness']"),
        ("* as an option", star_option, "steps[0] (consent).options.*: key * is reserved"),
        ("two-digit option", two_digit_option, "steps[0] (consent).options.10: a key must be one digit 0-8"),
        ("option without meaning", empty_meaning, "steps[0] (consent).options.1: the meaning of key 1 is missing"),
        ("unsure not an option", unsure_not_option, "steps[4] (awareness).unsure: key 0 is not one of"),
        ("positive and unsure", positive_and_unsure, "steps[2] (security): a key cannot be both positive and unsure"),
        ("rate without positive", rate_without_positive, "steps[4] (awareness).positive: a rate question must list"),
        ("positive without rate", positive_without_rate, "steps[3] (concern): positive/unsure keys given but"),
        ("rate not declared", rate_not_declared, "steps[4] (awareness).rate: awareness has no entry under rates"),
        ("rate fed twice", rate_fed_twice, "steps (participation).rate: awareness is already fed by awareness"),
        ("ask_if on itself", ask_if_self, "steps[3] (concern).ask_if: branch on 'concern', which is not an earlier"),
        ("ask_if key not an option", ask_if_not_an_option, "steps[3] (concern).ask_if.security: key 7 is not an"),
        ("ask_if empty", ask_if_empty, "steps[3] (concern).ask_if.security: must be a non-empty list of keys"),
        ("end_on bad outcome", end_on_bad_outcome, "steps[0] (consent).end_on.2: outcome 'hung_up' must be one of"),
        ("end_on not an option", end_on_not_option, "steps[1] (screen).end_on.3: key 3 is not one of"),
        ("missing prompt", missing_prompt, "steps[8] (visit).prompt: missing"),
        ("missing message", missing_message, "messages.opted_out: missing"),
        ("bad target", bad_target, "rates.awareness.target: 95 must be a fraction from 0 to 1"),
        ("bad max_tries", bad_max_tries, "max_tries: 9 must be a whole number from 1 to 5"),
        ("bad gather_timeout", bad_gather_timeout, "gather_timeout: 1 must be a whole number of seconds"),
        ("no key", no_key, "key: missing or empty"),
        ("optional not a boolean", optional_not_bool, "steps[9] (delivery).optional: 'yes' must be true or false"),
        ("optional rate", optional_rate, "steps[4] (awareness).optional: a rate question cannot be left out"),
        ("optional gate", optional_gate, "steps[1] (screen).optional: a step that ends the survey"),
        ("branch on an optional step", branch_on_optional, "steps[9] (delivery).ask_if: branches on visit, which"),
        ("delivery check without no", delivery_without_no, "steps[9] (delivery).options: the delivery check needs"),
    ]


@pytest.mark.parametrize(("label", "mutate", "problem"), _mutations(), ids=[m[0] for m in _mutations()])
def test_each_kind_of_problem_is_reported_with_its_location(label: str, mutate: Any, problem: str) -> None:
    content = default_content()
    mutate(content)

    problems = problems_of(content)

    assert any(p.startswith(problem) for p in problems), problems


def test_problems_in_several_places_are_all_reported() -> None:
    independent = {
        "* as an option",
        "two-digit option",
        "unsure not an option",
        "positive and unsure",
        "ask_if key not an option",
        "end_on not an option",
        "missing prompt",
        "missing message",
        "bad target",
    }
    chosen = [m for m in _mutations() if m[0] in independent]
    assert len(chosen) == len(independent)
    content = default_content()
    for _label, mutate, _problem in chosen:
        mutate(content)

    problems = problems_of(content)

    for _label, _mutate, problem in chosen:
        assert sum(p.startswith(problem) for p in problems) == 1, (problem, problems)
    assert len(problems) == len(chosen)


def test_a_round_may_leave_out_an_optional_step_only() -> None:
    questionnaire = builtin_questionnaire()
    assert [step.key for step in questionnaire.steps if step.optional] == ["delivery"]

    without = without_steps(questionnaire, ["delivery"])

    assert [step.key for step in without.steps] == DEFAULT_ORDER[:-1]
    assert without.key == "default" and without.checksum != questionnaire.checksum
    assert without_steps(without, ["delivery"]) is without  # nothing left to leave out
    with pytest.raises(QuestionnaireError, match=r"steps \(awareness\): not optional"):
        without_steps(questionnaire, ["delivery", "awareness"])


def test_a_yaml_date_in_the_file_does_not_crash_validation() -> None:
    content = default_content()
    content["title"] = __import__("datetime").date(2026, 6, 1)  # what `title: 2026-06-01` loads as

    assert parse_questionnaire(content).title == "2026-06-01"


# --- stored versions -------------------------------------------------------------------------------------


def version_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(QuestionnaireVersion)) or 0


def test_store_version_is_idempotent_for_the_same_content(session: Session) -> None:
    first = store_version(session, builtin_questionnaire())
    session.commit()

    again = store_version(session, resolve_questionnaire("default"))
    session.commit()

    assert again.id == first.id
    assert version_count(session) == 1
    assert first.key == "default"
    assert first.checksum == builtin_questionnaire().checksum
    assert len(first.checksum) == 64


def test_the_same_content_in_another_key_order_is_the_same_version(session: Session) -> None:
    reordered = dict(reversed(list(default_content().items())))

    first = store_version(session, builtin_questionnaire())
    again = store_version(session, parse_questionnaire(reordered))

    assert again.id == first.id


def test_changed_content_is_a_new_version(session: Session) -> None:
    first = store_version(session, builtin_questionnaire())
    content = default_content()
    _step(content, "visit")["prompt"] = "需要干部上门吗?需要请按1,不需要请按2。"

    changed = store_version(session, parse_questionnaire(content))
    session.commit()

    assert changed.id != first.id
    assert changed.checksum != first.checksum
    assert version_count(session) == 2
    assert store_version(session, parse_questionnaire(content)).id == changed.id


def test_a_stored_version_reads_back_as_the_same_questionnaire(sessions) -> None:
    with sessions() as s:
        version_id = store_version(s, builtin_questionnaire()).id
        s.commit()

    with sessions() as s:
        version = s.get(QuestionnaireVersion, version_id)
        assert version is not None
        restored = from_version(version)

    assert restored == builtin_questionnaire()
    assert restored.checksum == builtin_questionnaire().checksum


# --- `sanlv questionnaire show` --------------------------------------------------------------------------


def test_show_json_is_exactly_the_contract_shape() -> None:
    result = sanlv("questionnaire", "show", "--format", "json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown) == {"key", "questions"}
    assert shown["key"] == "default"
    assert [q["key"] for q in shown["questions"]] == DEFAULT_ORDER
    questionnaire = builtin_questionnaire()
    for question in shown["questions"]:
        assert set(question) == {"key", "prompt", "options"}
        step = questionnaire.step(question["key"])
        assert question["prompt"] == step.prompt
        assert question["options"] == dict(step.options)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in question["options"].items())
    assert shown["questions"][2]["options"] == DOCUMENTED_OPTIONS["security"]
    assert shown == to_show_json(questionnaire)


def test_show_json_prints_chinese_as_text() -> None:
    result = sanlv("questionnaire", "show", "default", "--format", "json")

    assert "安全" in result.stdout
    assert "\\u" not in result.stdout


def test_show_json_of_a_file(tmp_path: Path) -> None:
    content = default_content()
    content["key"] = "town-b"
    content["steps"] = content["steps"][:3]
    content["rates"] = {"security": content["rates"]["security"]}
    path = tmp_path / "town-b.yaml"
    path.write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")

    result = sanlv("questionnaire", "show", str(path), "--format", "json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["key"] == "town-b"
    assert [q["key"] for q in shown["questions"]] == ["consent", "screen", "security"]


def test_show_text_lists_the_steps_in_order() -> None:
    result = sanlv("questionnaire", "show")

    assert result.exit_code == 0, result.output
    numbered = [line for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert [line.split("[", 1)[1].split("]", 1)[0] for line in numbered] == DEFAULT_ORDER
    assert "ask if security in ['3', '4']" in result.stdout
    assert "ends on 2=refused" in result.stdout


def test_show_an_unknown_questionnaire_exits_non_zero_with_one_line() -> None:
    result = sanlv("questionnaire", "show", "nosuch")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["Error: nosuch: no built-in questionnaire named 'nosuch'"]
