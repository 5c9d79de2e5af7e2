"""What the IVR needs from a questionnaire file: reachability, read-back, recordings, closing messages; and
the ``sanlv questionnaire validate`` / ``prompts`` commands that report them.

(The file format's basic checks are in tests/campaigns/test_questionnaire.py.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from campaigns.questionnaire import (
    QuestionnaireError,
    builtin_questionnaire,
    find_recording,
    parse_questionnaire,
    prompts,
    recording_folder,
    unreachable_steps,
)

Q = builtin_questionnaire()


def content(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(dict(Q.content))
    data.update(top)
    return data


def step(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["key"] == key)


def problems_of(data: Any) -> list[str]:
    with pytest.raises(QuestionnaireError) as caught:
        parse_questionnaire(data, "q.yaml")
    return caught.value.problems


def sanlv(*args: str, env: dict[str, str] | None = None) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args), env=env)


# ------------------------------------------------------------------------------------------- reachability


def test_the_default_questionnaire_has_no_unreachable_step() -> None:
    assert unreachable_steps(Q.steps) == []


def test_a_branch_on_keys_that_end_the_survey_is_unreachable() -> None:
    data = content()
    step(data, "concern")["ask_if"] = {"consent": ["2"]}  # consent 2 ends as refused: concern never asked

    assert problems_of(data) == [
        "steps[3] (concern): unreachable: no answers to the earlier questions lead to it",
    ]


def test_everything_after_a_gate_with_no_way_through_is_unreachable() -> None:
    data = content()
    step(data, "screen")["end_on"] = {"1": "ineligible", "2": "ineligible"}

    problems = problems_of(data)

    assert problems == [
        f"steps[{i}] ({key}): unreachable: no answers to the earlier questions lead to it"
        for i, key in enumerate([s["key"] for s in data["steps"]])
        if i >= 2
    ]


def test_a_branch_on_an_unreachable_step_is_unreachable_too() -> None:
    data = content()
    step(data, "concern")["ask_if"] = {"consent": ["2"]}
    step(data, "visit")["ask_if"] = {"concern": ["1"]}

    problems = problems_of(data)

    assert [p.split(":")[0] for p in problems] == ["steps[3] (concern)", "steps[8] (visit)"]


def test_conditions_combine_along_the_path() -> None:
    # visit only when concern is 5, and concern only when security is 3 or 4: reachable through both.
    data = content()
    step(data, "visit")["ask_if"] = {"concern": ["5"]}
    assert parse_questionnaire(data).step("visit").ask_if == {"concern": frozenset({"5"})}
    # A gate asked only when security is 3 or 4, whose every answer ends the survey, closes exactly the
    # path that visit needs: each condition alone is satisfiable, the combination is not.
    data = content()
    data["steps"].insert(4, {"key": "gate", "prompt": "按1", "options": {"1": "是"}, "end_on": {"1": "refused"},
                             "ask_if": {"security": ["3", "4"]}})
    step(data, "visit")["ask_if"] = {"security": ["3", "4"]}
    assert problems_of(data) == ["steps[9] (visit): unreachable: no answers to the earlier questions lead to it"]


def test_a_gate_that_every_answer_ends_closes_the_rest() -> None:
    data = content()
    data["steps"].insert(3, {"key": "only", "prompt": "按1", "options": {"1": "是"}, "end_on": {"1": "refused"}})

    assert [p.split(":")[0] for p in problems_of(data)] == [
        f"steps[{i}] ({s['key']})" for i, s in enumerate(data["steps"]) if i > 3
    ]


# ----------------------------------------------------------------------------------------- other problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown field (known: key, title"),
        (lambda d: step(d, "visit").update(promt="x"), "steps[8] (visit).promt: unknown field (known: key, prompt"),
        (lambda d: d["messages"].update(goodbye="再见"), "messages.goodbye: unknown message (known: intro"),
        (lambda d: d.update(readback="yes"), "readback: 'yes' must be true or false"),
        (lambda d: (d.update(readback=True), d["messages"].pop("readback")), "messages.readback: missing (readback is on)"),
        (lambda d: d["messages"].update(readback="您选择的是{choice}"), "messages.readback: must contain {answer}"),
        (lambda d: d["messages"].update(readback="请确认"), "messages.readback: must contain {answer}"),
        (lambda d: step(d, "security").update(ask_if={"consent": ["1"]}), "steps[2] (security).ask_if: a rate question must always be asked"),
        (lambda d: step(d, "visit").update(audio="../../etc/passwd"), "steps[8] (visit).audio: '../../etc/passwd' must be a .wav or .mp3"),
        (lambda d: step(d, "visit").update(audio="visit.ogg"), "steps[8] (visit).audio: 'visit.ogg' must be a .wav or .mp3"),
        (lambda d: step(d, "visit").update(key="visit me"), "steps[8] (visit me).key: must be 1-40 letters"),
        (lambda d: step(d, "visit").update(key="visit.confirm"), "steps[8] (visit.confirm).key: must be 1-40 letters"),
        (lambda d: d.update(key="../default"), "key: '../default' must be 1-40 letters"),
        (lambda d: d["messages"].update(completed=""), "messages.completed: missing"),
        (lambda d: d["messages"].pop("unknown_caller"), "messages.unknown_caller: missing"),
    ],
    ids=[
        "unknown top field", "unknown step field", "unknown message", "readback not a bool", "readback without message",
        "readback other placeholder", "readback without placeholder", "rate question skipped", "audio path",
        "audio format", "step key with space", "step key with dot", "questionnaire key path", "empty closing message",
        "missing unknown-caller message",
    ],
)
def test_each_problem_is_reported_with_its_location(mutate, expected: str) -> None:
    data = content()
    mutate(data)

    problems = problems_of(data)

    assert [p for p in problems if p.startswith(expected)], problems
    assert len(problems) == 1, problems


def test_a_branch_to_a_missing_step_and_a_rate_without_a_question() -> None:
    data = content()
    step(data, "visit")["ask_if"] = {"nowhere": ["1"]}
    data["rates"]["awareness"]["target"] = 0.9
    step(data, "awareness").pop("rate")
    step(data, "awareness").pop("positive")

    assert problems_of(data) == [
        "steps[8] (visit).ask_if: branch on 'nowhere', which is not an earlier step",
        "rates.awareness: no question feeds this rate",
    ]


def test_readback_on_is_a_valid_questionnaire() -> None:
    questionnaire = parse_questionnaire(content(readback=True))

    assert questionnaire.readback
    assert [s.key for s in questionnaire.steps if questionnaire.reads_back(s)] == [s.key for s in Q.rate_steps]
    assert not Q.readback


# ------------------------------------------------------------------------------------------------ prompts


def test_prompts_list_every_message_question_and_read_back() -> None:
    names = [p.name for p in prompts(parse_questionnaire(content(readback=True)))]

    assert names[:3] == ["message-intro", "message-welcome_back", "message-invalid"]
    assert "message-machine" not in names  # empty: nothing is said to a machine
    assert {f"step-{s.key}" for s in Q.steps} <= set(names)
    assert "readback-security-3" in names and "readback-consent-1" not in names
    assert len([n for n in names if n.startswith("readback-")]) == sum(len(s.options) for s in Q.rate_steps)
    readback = next(p for p in prompts(parse_questionnaire(content(readback=True))) if p.name == "readback-security-3")
    assert readback.text == "您选择的是不太安全,确认请按1,重新选择请按2。"
    assert "readback-security-3" not in [p.name for p in prompts(Q)]


def test_find_recording_prefers_wav_and_honours_an_explicit_file(tmp_path: Path) -> None:
    data = content()
    step(data, "visit")["audio"] = "visit-dialect.mp3"
    questionnaire = parse_questionnaire(data)
    folder = recording_folder(tmp_path, questionnaire)
    folder.mkdir()
    by_name = {p.name: p for p in prompts(questionnaire)}
    (folder / "step-consent.mp3").write_bytes(b"mp3")
    assert find_recording(folder, by_name["step-consent"]) == folder / "step-consent.mp3"
    (folder / "step-consent.wav").write_bytes(b"wav")
    assert find_recording(folder, by_name["step-consent"]) == folder / "step-consent.wav"
    (folder / "step-visit.wav").write_bytes(b"wav")
    assert find_recording(folder, by_name["step-visit"]) is None  # the file named in the questionnaire wins
    (folder / "visit-dialect.mp3").write_bytes(b"mp3")
    assert find_recording(folder, by_name["step-visit"]) == folder / "visit-dialect.mp3"


# -------------------------------------------------------------------------------------------------- CLI


def test_validate_lists_every_problem_with_its_location(tmp_path: Path) -> None:
    data = content()
    data["colour"] = "red"
    step(data, "concern")["ask_if"] = {"consent": ["2"]}
    step(data, "visit")["ask_if"] = {"ghost": ["1"]}
    del data["rates"]["cadre_contact"]
    step(data, "cadre_contact").pop("rate")
    step(data, "cadre_contact").pop("positive")
    data["rates"]["cadre_contact"] = {"label": "重视率", "target": 0.9}
    path = tmp_path / "town.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    result = sanlv("questionnaire", "validate", str(path))

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}: colour: unknown field (known: key, title, max_tries, gather_timeout, readback, messages, rates, steps)",
        f"{path}: steps[8] (visit).ask_if: branch on 'ghost', which is not an earlier step",
        f"{path}: rates.cadre_contact: no question feeds this rate",
        f"{path}: steps[3] (concern): unreachable: no answers to the earlier questions lead to it",
        f"Error: {path}: 4 problem(s)",
    ]


def test_prompts_command_says_which_prompts_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "step-security.wav").write_bytes(b"RIFF")
    (tmp_path / "default" / "message-intro.mp3").write_bytes(b"ID3")

    result = sanlv("questionnaire", "prompts", "--format", "json", env={"SANLV_RECORDINGS_DIR": str(tmp_path)})

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["key"] == "default" and listed["folder"] == str(tmp_path / "default")
    by_name = {row["prompt"]: row for row in listed["prompts"]}
    assert by_name["step-security"]["recording"] == str(tmp_path / "default" / "step-security.wav")
    assert by_name["message-intro"]["recording"] == str(tmp_path / "default" / "message-intro.mp3")
    assert by_name["step-consent"]["recording"] is None
    assert by_name["step-consent"]["text"] == Q.step("consent").prompt
    assert by_name["message-completed"]["text"] == Q.messages["completed"]
    assert len(listed["prompts"]) == len(prompts(Q))

    text = sanlv("questionnaire", "prompts", env={"SANLV_RECORDINGS_DIR": str(tmp_path)})
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0] == f"default: 2 of {len(prompts(Q))} prompts recorded (folder {tmp_path / 'default'})"
    assert any("step-security" in line and "recorded" in line for line in text.stdout.splitlines())


def test_prompts_command_refuses_a_missing_recordings_folder(tmp_path: Path) -> None:
    result = sanlv("questionnaire", "prompts", env={"SANLV_RECORDINGS_DIR": str(tmp_path / "absent")})

    assert result.exit_code == 1
    assert "SANLV_RECORDINGS_DIR" in result.stderr and result.stderr.count("\n") == 1
