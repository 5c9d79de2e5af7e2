"""Questionnaires and recordings on the office pages: every prompt, a player, recording uploads checked for
format, length and silence, an office's own questionnaire file with its problems beside their lines."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import select

from campaigns import audit
from campaigns.models import AuditEntry
from campaigns.questionnaire import builtin_questionnaire, prompts
from tests.campaigns.test_questionnaire_office import DEFAULT, office_file
from tests.support.audio import mp3, wav
from tests.web.conftest import sign_in


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    return folder


@pytest.fixture
def office(make_app, people, recordings):
    app = make_app(recordings_dir=str(recordings))
    client = app.test_client()
    assert sign_in(client, "office1").status_code == 302
    return client


def send(client, prompt: str, data: bytes, name: str = "录音.wav", key: str = "default"):
    return client.post(
        f"/questionnaires/{key}/prompts/{prompt}/recording",
        data={"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )


def uploads(sessions, action: str) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_every_prompt_is_listed_with_its_text_and_whether_it_is_recorded(office) -> None:
    html = office.get("/questionnaires/default").get_data(as_text=True)

    every = prompts(builtin_questionnaire())
    assert len(re.findall(r'<tr id="prompt-', html)) == len(every)
    for prompt in every:
        assert f'id="prompt-{prompt.name}" class="tts"' in html and prompt.text in html
    assert "<audio" not in html
    assert "MP3 不检查音量" in html  # the page says what is not checked


def test_a_good_wav_is_stored_played_back_and_audited(office, recordings, sessions) -> None:
    response = send(office, "step-security", wav(3.0))

    assert response.status_code == 302
    assert response.headers["Location"] == "/questionnaires/default#prompt-step-security"
    assert (recordings / "default" / "step-security.wav").read_bytes() == wav(3.0)
    html = office.get("/questionnaires/default").get_data(as_text=True)
    assert 'id="prompt-step-security" class="recorded"' in html
    assert '<audio controls preload="none" src="/questionnaires/default/recordings/step-security.wav">' in html
    with office.get("/questionnaires/default/recordings/step-security.wav") as played:
        assert played.status_code == 200 and played.data == wav(3.0)
        assert played.mimetype in ("audio/wav", "audio/x-wav")
    [entry] = uploads(sessions, audit.RECORDING_UPLOAD)
    assert entry.detail["prompt"] == "step-security" and entry.detail["file"] == "step-security.wav"


def test_an_mp3_is_accepted(office, recordings) -> None:
    assert send(office, "message-intro", mp3(3.0), "intro.mp3").status_code == 302

    assert (recordings / "default" / "message-intro.mp3").is_file()


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"just some text\n", "notes.wav", "不是 WAV 或 MP3"),
        (wav(61.0, width=1), "long.wav", "录音太长"),  # 8-bit: small enough for the test client to keep in memory
        (wav(3.0, amplitude=0), "silent.wav", "几乎没有声音"),
        (wav(0.2), "short.wav", "录音太短"),
    ],
)
def test_a_recording_no_one_could_hear_is_refused_beside_its_prompt(office, recordings, sessions, data, name, words):
    response = send(office, "step-security", data, name)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(rf'<p class="field-error" id="step-security-error">[^<]*{words}', html)
    assert 'id="prompt-step-security" class="tts has-error"' in html
    assert not (recordings / "default").exists() or list((recordings / "default").iterdir()) == []
    assert uploads(sessions, audit.RECORDING_UPLOAD) == []


def test_an_unknown_prompt_or_questionnaire_is_a_404(office) -> None:
    assert send(office, "step-nothing", wav()).status_code == 404
    assert send(office, "step-security", wav(), key="nope").status_code == 404
    assert office.get("/questionnaires/nope").status_code == 404
    assert office.get("/questionnaires/default/recordings/step-security.wav").status_code == 404
    assert office.get("/questionnaires/default/recordings/..%2Fsecret.wav").status_code == 404


def test_recordings_are_served_to_signed_in_staff_only(make_app, people, recordings, client_for) -> None:
    (recordings / "default").mkdir()
    (recordings / "default" / "step-security.wav").write_bytes(wav())
    app = make_app(recordings_dir=str(recordings))

    anonymous = app.test_client().get("/questionnaires/default/recordings/step-security.wav")
    cadre = app.test_client()
    sign_in(cadre, "lin")

    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    assert cadre.get("/questionnaires/default/recordings/step-security.wav").status_code == 403


def questionnaire_upload(client, text: str, name: str = "wuli.yaml"):
    return client.post(
        "/questionnaires", data={"file": (io.BytesIO(text.encode("utf-8")), name)}, content_type="multipart/form-data"
    )


def test_an_office_questionnaire_is_validated_stored_and_offered_for_rounds(office, sessions) -> None:
    response = questionnaire_upload(office, office_file())

    assert response.status_code == 302 and response.headers["Location"] == "/questionnaires/wuli"
    listed = office.get("/questionnaires").get_data(as_text=True)
    assert "五里镇问卷" in listed and 'href="/questionnaires/wuli"' in listed
    assert "五里镇问卷" in office.get("/questionnaires/wuli").get_data(as_text=True)
    form = office.get("/rounds/new").get_data(as_text=True)
    version = re.search(r'<option value="(version:\d+)">wuli · 五里镇问卷</option>', form)
    assert version
    [entry] = uploads(sessions, audit.QUESTIONNAIRE_UPLOAD)
    assert entry.object_id == "wuli" and entry.detail["file"] == "wuli.yaml"


def test_a_questionnaire_with_problems_shows_each_beside_its_line(office, sessions) -> None:
    text = office_file().replace("rate: security", "rate: safety", 1)
    bad_line = next(number for number, line in enumerate(text.splitlines(), 1) if "rate: safety" in line)

    response = questionnaire_upload(office, text)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    line = re.search(rf'<li id="line-{bad_line}" class="has-problem">.*?</li>', html, re.DOTALL).group(0)
    assert "rate: safety" in line and re.search(rf'<div class="problem" data-line="{bad_line}">[^<]*unknown rate', line)
    assert uploads(sessions, audit.QUESTIONNAIRE_UPLOAD) == []
    assert "wuli" not in office.get("/rounds/new").get_data(as_text=True)


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"key: [unclosed\n", "x.yaml", "not valid YAML"),
        (DEFAULT.encode("gbk"), "default.yaml", "UTF-8"),
        (b"key: x", "x.txt", ".yaml"),
    ],
)
def test_an_unreadable_questionnaire_file_says_why(office, data, name, words) -> None:
    response = office.post(
        "/questionnaires", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )

    assert response.status_code == 400 and words in response.get_data(as_text=True)


def test_the_built_in_key_cannot_be_replaced(office) -> None:
    response = questionnaire_upload(office, office_file(key="default"))

    assert response.status_code == 400 and "built-in questionnaire" in response.get_data(as_text=True)


def test_a_round_is_created_with_the_uploaded_questionnaire(office, sessions, township_for_people) -> None:
    questionnaire_upload(office, office_file())
    form = office.get("/rounds/new").get_data(as_text=True)
    ref = re.search(r'<option value="(version:\d+)">wuli', form).group(1)

    from tests.web.test_office_rounds import FORM

    response = office.post("/rounds", data={**FORM, "questionnaire": ref})

    assert response.status_code == 302, response.get_data(as_text=True)
    from campaigns.models import Round

    with sessions() as session:
        round_ = session.scalars(select(Round)).one()
        assert round_.questionnaire.key == "wuli" and f"version:{round_.questionnaire_id}" == ref


@pytest.fixture
def township_for_people(sessions, people):
    """A few households for the people fixture's cadres, so a round has someone to call."""
    from tests.factories import make_household, make_village

    with sessions.begin() as session:
        village = make_village(session, name="五里村")
        for number in range(3):
            make_household(session, village=village, cadre=session.merge(people.lin), phone=f"+86137000000{number:02d}")
