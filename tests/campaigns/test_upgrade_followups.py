"""``sanlv db upgrade`` creates the follow-up items of answers stored before the interview kept them."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import FollowUp, RoundStatus
from tests.factories import interview_answers, make_interview, make_round


def sanlv(*args: str):
    from web.cli import main

    return CliRunner().invoke(main, list(args))


def test_db_upgrade_creates_the_items_of_stored_answers_once(session: Session, env) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING)
    asked = make_interview(session, round_, interview_answers("4", concern="1", visit="1"))
    make_interview(session, round_, interview_answers("3", visit="2"))  # declined: counted, never listed
    draft = make_round(session)  # a round never launched has no items to make
    make_interview(session, draft, interview_answers("4", visit="1"))
    session.commit()

    first = sanlv("db", "upgrade")
    again = sanlv("db", "upgrade")

    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[-2:] == ["已根据已存答案补建回访事项 1 条 / follow-ups: 1 created from stored answers",
                          lines[-1]] and lines[-1].startswith("database at revision ")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "follow-ups" not in again.stdout and again.stdout.splitlines()[-1] == lines[-1]
    items = session.execute(select(FollowUp.response_id, FollowUp.negatives, FollowUp.concern)).all()
    assert items == [(asked.id, ["security"], "1")]
    assert session.scalar(select(func.count()).select_from(FollowUp)) == 1
