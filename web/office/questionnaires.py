"""Questionnaires and their recorded prompts.

- ``/questionnaires``: the built-in questionnaires and the office's own (uploaded here, stored as questionnaire
  versions), and the form to upload one; a file with problems is shown with each problem beside its line.
- ``/questionnaires/<key>``: every prompt's text, whether it has a recording, a player for it (served by
  :func:`recording`, for signed-in staff; the unsigned route Twilio fetches is the IVR's own), and a form to
  upload a recording (checked by ``campaigns.recordings``: WAV or MP3, length, and, for WAV, silence).
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, send_from_directory, url_for
from flask_babel import gettext
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.db import session_scope
from campaigns.questionnaire import (
    STEP_KEY,
    QuestionnaireError,
    builtin_keys,
    builtin_questionnaire,
    by_key,
    find_recording,
    latest_versions,
    problem_lines,
    prompts,
    recording_folder,
    recording_path,
    store_office_questionnaire,
)
from campaigns.recordings import MAX_SECONDS, MIN_SECONDS, RecordingError, save_recording
from web.i18n import current_language
from web.office import WRITERS, bp
from web.office.common import runtime, settings
from web.office.uploads import clean_name
from web.security import audit_request, roles

QUESTIONNAIRE_EXTENSIONS = (".yaml", ".yml", ".json")


def _questionnaire_or_404(session: Session, key: str):
    if not STEP_KEY.match(key):
        abort(404)
    try:
        return by_key(session, key)
    except QuestionnaireError:
        abort(404, description=gettext("没有这个问卷。"))


@bp.get("/questionnaires")
@roles(*WRITERS)
def questionnaires():
    return _list_page()


def _list_page(upload: dict | None = None, status: int = 200):
    with runtime().sessions() as session:
        office = [
            {"key": v.key, "title": v.content.get("title") or v.key, "version": v.id, "created_at": v.created_at}
            for v in latest_versions(session)
        ]
    builtin = [{"key": key, "title": builtin_questionnaire(key).title} for key in builtin_keys()]
    return render_template("office/questionnaires.html", builtin=builtin, office=office, upload=upload), status


@bp.post("/questionnaires")
@roles(*WRITERS)
def questionnaire_upload():
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _list_page({"error": gettext("请选择问卷文件（YAML 或 JSON）。")}, 400)
    name = clean_name(upload.filename, "questionnaire.yaml")
    if not name.lower().endswith(QUESTIONNAIRE_EXTENSIONS):
        return _list_page({"name": name, "error": gettext("问卷文件应为 .yaml、.yml 或 .json 文件。")}, 400)
    raw = upload.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _list_page(
            {"name": name, "error": gettext("问卷文件必须是 UTF-8 编码，请另存为 UTF-8 后重新上传。")}, 400
        )
    try:
        with session_scope(runtime().sessions) as session:
            version = store_office_questionnaire(session, text, name)
            audit_request(
                session,
                audit.QUESTIONNAIRE_UPLOAD,
                object_type="questionnaire",
                object_id=version.key,
                detail={"file": name, "version": version.id},
            )
            key, version_id = version.key, version.id
    except QuestionnaireError as exc:
        lines = text.splitlines()
        by_line: dict[int, list[str]] = {}
        unplaced: list[str] = []
        for line, problem in problem_lines(text, exc.problems):
            if line is not None and 1 <= line <= len(lines):
                by_line.setdefault(line, []).append(problem)
            else:  # the file as a whole, or past its end (a YAML error at the end of the text)
                unplaced.append(problem)
        upload_view = {
            "name": name,
            "problems": exc.problems,
            "unplaced": unplaced,
            "lines": [(number, line, by_line.get(number, [])) for number, line in enumerate(lines, 1)],
        }
        return _list_page(upload_view, 400)
    flash(
        gettext("问卷 %(key)s 已保存（版本 %(version)d），创建调查时可以选用。", key=key, version=version_id), "success"
    )
    return redirect(url_for("office.questionnaire", key=key))


@bp.get("/questionnaires/<key>")
@roles(*WRITERS)
def questionnaire(key: str):
    return _prompts_page(key)


def _prompts_page(key: str, errors: dict[str, str] | None = None, status: int = 200):
    with runtime().sessions() as session:
        questionnaire, ref = _questionnaire_or_404(session, key)
    folder = recording_folder(settings().recordings_dir, questionnaire)
    rows = []
    for prompt in prompts(questionnaire):
        found = find_recording(folder, prompt)
        rows.append(
            {
                "prompt": prompt,
                "recording": found.name if found else None,
                "expected": " / ".join(prompt.candidates()),
            }
        )
    body = render_template(
        "office/questionnaire.html",
        questionnaire=questionnaire,
        ref=ref,
        rows=rows,
        recorded=sum(1 for row in rows if row["recording"]),
        errors=errors or {},
        limits={"min": MIN_SECONDS, "max": MAX_SECONDS},
    )
    return body, status


@bp.post("/questionnaires/<key>/prompts/<prompt_name>/recording")
@roles(*WRITERS)
def recording_upload(key: str, prompt_name: str):
    with runtime().sessions() as session:
        questionnaire, _ref = _questionnaire_or_404(session, key)
    prompt = next((p for p in prompts(questionnaire) if p.name == prompt_name), None)
    if prompt is None:
        abort(404, description=gettext("问卷中没有这个提示。"))
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _prompts_page(key, {prompt.name: gettext("请选择录音文件（WAV 或 MP3）。")}, 400)
    data = upload.read()
    try:
        path = save_recording(settings().recordings_dir, questionnaire, prompt, data)
    except RecordingError as exc:
        reason = exc.reason_en if current_language() == "en" else exc.reason_zh
        return _prompts_page(key, {prompt.name: reason}, 400)
    with session_scope(runtime().sessions) as session:
        audit_request(
            session, audit.RECORDING_UPLOAD, object_type="questionnaire", object_id=questionnaire.key,
            detail={"prompt": prompt.name, "file": path.name, "uploaded": clean_name(upload.filename, ""),
                    "bytes": len(data)},
        )  # fmt: skip
    flash(gettext("已保存“%(prompt)s”的录音，今后来电将播放此录音。", prompt=prompt.name), "success")
    return redirect(url_for("office.questionnaire", key=key) + f"#prompt-{prompt.name}")


@bp.get("/questionnaires/<key>/recordings/<name>")
@roles(*WRITERS)
def recording(key: str, name: str):
    """A recorded prompt, for the page's player (signed-in staff only)."""
    path = recording_path(settings().recordings_dir, key, name)
    if path is None:
        abort(404)
    return send_from_directory(path.parent, path.name, max_age=0)
