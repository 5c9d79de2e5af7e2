"""An office's own questionnaires: stored as versions, picked by key or ``version:N``, problems placed on their
lines; recordings served only from a questionnaire's folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session

from campaigns.questionnaire import (
    QuestionnaireError,
    builtin_keys,
    by_key,
    latest_versions,
    problem_lines,
    recording_path,
    resolve_in,
    store_office_questionnaire,
)

DEFAULT = (resources.files("campaigns") / "questionnaires" / "default.yaml").read_text(encoding="utf-8")


def office_file(key: str = "wuli", title: str = "五里镇问卷") -> str:
    content = yaml.safe_load(DEFAULT)
    content.update(key=key, title=title)
    return yaml.safe_dump(content, allow_unicode=True, sort_keys=False)


def test_an_office_questionnaire_is_stored_and_found_by_key_and_version(session: Session) -> None:
    first = store_office_questionnaire(session, office_file(), "wuli.yaml")
    second = store_office_questionnaire(session, office_file(title="五里镇问卷（修订）"), "wuli.yaml")
    again = store_office_questionnaire(session, office_file(title="五里镇问卷（修订）"), "wuli.yaml")

    assert again.id == second.id != first.id  # the same content is one version
    questionnaire, ref = by_key(session, "wuli")
    assert (questionnaire.title, ref) == ("五里镇问卷（修订）", f"version:{second.id}")
    assert resolve_in(session, f"version:{first.id}").title == "五里镇问卷"
    assert [v.id for v in latest_versions(session)] == [second.id]
    assert by_key(session, "default")[1] == "default" and builtin_keys() == ["default"]


def test_the_built_in_keys_are_not_an_offices_to_take(session: Session) -> None:
    with pytest.raises(QuestionnaireError, match="built-in questionnaire"):
        store_office_questionnaire(session, office_file(key="default"), "mine.yaml")


@pytest.mark.parametrize("ref", ["version:999", "nope"])
def test_an_unknown_reference_is_a_questionnaire_error(session: Session, ref: str) -> None:
    with pytest.raises(QuestionnaireError):
        resolve_in(session, ref)
    with pytest.raises(QuestionnaireError):
        by_key(session, ref)


def test_every_problem_is_placed_on_its_line() -> None:
    text = DEFAULT.replace("  intro:", "  intro_x:", 1).replace("    rate: security\n", "    rate: safety\n", 1)
    lines = text.splitlines()

    with pytest.raises(QuestionnaireError) as raised:
        store_office_questionnaire(None, text, "bad.yaml")  # type: ignore[arg-type]  # fails before storing
    placed = {problem: line for line, problem in problem_lines(text, raised.value.problems)}

    unknown = next(p for p in placed if p.startswith("messages.intro_x"))
    assert lines[placed[unknown] - 1].strip().startswith("intro_x:")
    rate = next(p for p in placed if ".rate: unknown rate" in p)
    assert lines[placed[rate] - 1].strip() == "rate: safety"
    missing = next(p for p in placed if p.startswith("messages.intro:"))
    assert lines[placed[missing] - 1].strip() == "messages:"  # a missing message points at its section


def test_a_yaml_syntax_error_is_placed_on_its_line() -> None:
    text = "key: x\nsteps: [\n  {key: a\n"

    with pytest.raises(QuestionnaireError) as raised:
        store_office_questionnaire(None, text, "broken.yaml")  # type: ignore[arg-type]

    [(line, problem)] = problem_lines(text, raised.value.problems)
    assert problem.startswith("not valid YAML") and line in (3, 4)


def test_only_audio_in_a_questionnaires_folder_is_served(tmp_path: Path) -> None:
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "step-a.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    (folder / "link.wav").symlink_to(tmp_path / "secret.wav")

    assert recording_path(tmp_path, "default", "step-a.wav") == (folder / "step-a.wav").resolve()
    for key, name in [("default", "../secret.wav"), ("default", "link.wav"), ("..", "secret.wav"),
                      ("default", "questionnaire.yaml"), ("default", "missing.wav")]:  # fmt: skip
        assert recording_path(tmp_path, key, name) is None, name
