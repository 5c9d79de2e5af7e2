"""The roster pages: upload (a preview first, then the import), villages, households, cadres, do-not-call.

The upload follows the command line's rules exactly (``campaigns.roster.import_roster``): every row is checked
first and a file with any bad row imports nothing. The first step is a dry run whose result is shown (what would
change, or each bad row with its line, column and reason); the file stays on the server (``web.office.uploads``)
and the confirmation imports that same file, in one transaction with its audit entry.

Phone numbers are masked (138****1234) on every list here. The do-not-call list names an entry in its links and
forms by a keyed hash of its number (:func:`dnc_ref`), never by the number itself.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import select

from campaigns import audit, dnc
from campaigns.db import session_scope
from campaigns.models import Cadre, DoNotCall, Village
from campaigns.phones import mask
from campaigns.roster import (
    COLUMN_LABELS,
    TEXT_EXTENSIONS,
    XLSX_EXTENSIONS,
    RosterError,
    RosterLimits,
    import_roster,
)
from reports.roster import (
    cadre_query,
    cadre_rows,
    digits,
    household_page,
    roster_totals,
    village_query,
    village_rows,
)
from web.i18n import current_language
from web.layout import paginate
from web.office import WRITERS, bp, uploads
from web.office.common import int_arg, runtime, settings
from web.security import audit_request, current_user, roles

UPLOAD_KIND = "roster"
ACCEPTED = sorted(TEXT_EXTENSIONS | XLSX_EXTENSIONS)


def _reason(problem) -> str:
    return problem.reason_en if current_language() == "en" else problem.reason_zh


# --- upload -----------------------------------------------------------------------------------------------


@bp.get("/roster")
@roles(*WRITERS)
def roster():
    with runtime().sessions() as session:
        totals = roster_totals(session)
    return render_template("office/roster.html", totals=totals, accepted=ACCEPTED, columns=COLUMN_LABELS)


@bp.post("/roster/upload")
@roles(*WRITERS)
def roster_upload():
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        uploads.discard(UPLOAD_KIND)
        flash(gettext("请选择要上传的名单文件（CSV 或 XLSX）。"), "error")
        return redirect(url_for("office.roster"))
    kept = uploads.keep(UPLOAD_KIND, upload, "roster.csv")
    result = error = None
    try:
        with runtime().sessions() as session:
            result = import_roster(session, kept.path, dry_run=True, limits=RosterLimits.from_settings(settings()))
            session.rollback()
    except RosterError as exc:
        error = exc
        uploads.discard(UPLOAD_KIND)  # nothing to confirm
    body = render_template(
        "office/roster_preview.html", name=kept.name, token=kept.token, result=result, error=error, reason=_reason
    )
    return body, (400 if error else 200)


@bp.post("/roster/import")
@roles(*WRITERS)
def roster_import():
    kept = uploads.kept(UPLOAD_KIND, request.form.get("token"))
    if kept is None:
        flash(gettext("预览已过期或已导入，请重新上传文件。"), "error")
        return redirect(url_for("office.roster"))
    try:
        with session_scope(runtime().sessions) as session:
            result = import_roster(session, kept.path, limits=RosterLimits.from_settings(settings()))
            audit_request(
                session, audit.ROSTER_IMPORT, object_type="file", object_id=kept.name,
                detail={"summary": result.summary(), "rows": result.rows, "created": result.created,
                        "updated": result.updated, "source": "web"},
            )  # fmt: skip
    except RosterError as exc:
        # The roster changed between the preview and now so that the file no longer imports (a duplicate
        # elsewhere, say): nothing was written; show why, as the preview would have.
        uploads.discard(UPLOAD_KIND)
        body = render_template(
            "office/roster_preview.html", name=kept.name, token=None, result=None, error=exc, reason=_reason
        )
        return body, 400
    uploads.discard(UPLOAD_KIND)
    flash(
        gettext(
            "导入完成：共 %(rows)d 行，新增 %(created)d 户，更新 %(updated)d 户，%(unchanged)d 户不变。",
            rows=result.rows, created=result.created, updated=result.updated, unchanged=result.unchanged,
        ),
        "success",
    )  # fmt: skip
    return redirect(url_for("office.roster"))


@bp.post("/roster/discard")
@roles(*WRITERS)
def roster_discard():
    uploads.discard(UPLOAD_KIND)
    flash(gettext("已放弃这次上传，没有导入任何数据。"), "info")
    return redirect(url_for("office.roster"))


# --- lists ------------------------------------------------------------------------------------------------


@bp.get("/roster/villages")
@roles(*WRITERS)
def villages():
    query = request.args.get("q", "").strip()
    with runtime().sessions() as session:
        page = paginate(session, village_query(query))
        page.items = village_rows(session, page.items)
    return render_template("office/villages.html", page=page, filters={"q": query})


@bp.get("/roster/cadres")
@roles(*WRITERS)
def cadres():
    query = request.args.get("q", "").strip()
    with runtime().sessions() as session:
        page = paginate(session, cadre_query(query))
        page.items = cadre_rows(session, page.items)
    return render_template("office/cadres.html", page=page, filters={"q": query})


@bp.get("/roster/households")
@roles(*WRITERS)
def households():
    filters = {
        "village_id": int_arg("village"),
        "cadre_id": int_arg("cadre"),
        "name": request.args.get("q", "").strip() or None,
        "phone": digits(request.args.get("phone")) or None,
    }
    after, before = int_arg("after"), int_arg("before")
    with runtime().sessions() as session:
        page = household_page(session, after=after, before=None if after is not None else before, **filters)
        village_names = session.execute(select(Village.id, Village.name).order_by(Village.name, Village.id)).all()
        cadre = session.get(Cadre, filters["cadre_id"]) if filters["cadre_id"] else None
        cadre_name = cadre.name if cadre else None
    return render_template(
        "office/households.html",
        page=page,
        villages=village_names,
        cadre_name=cadre_name,
        filters={
            "village": filters["village_id"] or "",
            "cadre": filters["cadre_id"] or "",
            "q": filters["name"] or "",
            "phone": filters["phone"] or "",
        },
    )


# --- do-not-call ------------------------------------------------------------------------------------------


def dnc_ref(phone: str) -> str:
    """The name of a do-not-call entry in links and forms: the last four digits, which the masked number shows
    anyway, then a keyed hash of the whole number."""
    key = (settings().secret_key or "").encode()
    return phone[-4:] + hmac.new(key, b"dnc:" + phone.encode(), hashlib.sha256).hexdigest()[:20]


def _dnc_entry(session, ref: str) -> DoNotCall | None:
    suffix = ref[:4]
    if len(ref) != 24 or not suffix.isdigit():
        return None
    for entry in session.scalars(dnc.query(suffix=suffix)):
        if hmac.compare_digest(dnc_ref(entry.phone), ref):
            return entry
    return None


@bp.get("/roster/dnc")
@roles(*WRITERS)
def dnc_list():
    return _dnc_page()


def _dnc_page(errors: dict[str, str] | None = None, form: dict[str, str] | None = None, status: int = 200):
    suffix = digits(request.args.get("phone"))
    with runtime().sessions() as session:
        page = paginate(session, dnc.query(suffix=suffix))
        rows = [
            {"phone": mask(entry.phone), "ref": dnc_ref(entry.phone), "reason": entry.reason,
             "source": dnc.SOURCE_LABELS[entry.source], "round_id": entry.round_id, "created_at": entry.created_at}
            for entry in page.items
        ]  # fmt: skip
    page.items = rows
    body = render_template(
        "office/dnc.html", page=page, filters={"phone": suffix}, errors=errors or {}, form=form or {}
    )
    return body, status


@bp.post("/roster/dnc")
@roles(*WRITERS)
def dnc_add():
    form = {name: request.form.get(name, "").strip() for name in ("phone", "reason")}
    try:
        with session_scope(runtime().sessions) as session:
            entry = dnc.add(session, form["phone"], form["reason"], actor=current_user.username)
            audit_request(
                session,
                audit.DNC_ADD,
                object_type="phone",
                object_id=mask(entry.phone),
                detail={"reason": entry.reason},
            )
            shown = mask(entry.phone)
    except dnc.DncError as exc:
        return _dnc_page({exc.field or "form": str(exc)}, form, status=400)
    flash(gettext("%(phone)s 已加入免打扰名单，今后不会再拨打。", phone=shown), "success")
    return redirect(url_for("office.dnc_list"))


@bp.get("/roster/dnc/<ref>/remove")
@roles(*WRITERS)
def dnc_remove_confirm(ref: str):
    with runtime().sessions() as session:
        entry = _dnc_entry(session, ref)
        if entry is None:
            abort(404, description=gettext("免打扰名单上没有这个号码。"))
        shown = {"phone": mask(entry.phone), "reason": entry.reason, "created_at": entry.created_at}
    return render_template("office/dnc_remove.html", ref=ref, entry=shown, errors={})


@bp.post("/roster/dnc/<ref>/remove")
@roles(*WRITERS)
def dnc_remove(ref: str):
    reason = request.form.get("reason", "").strip()
    try:
        with session_scope(runtime().sessions) as session:
            entry = _dnc_entry(session, ref)
            if entry is None:
                abort(404, description=gettext("免打扰名单上没有这个号码。"))
            shown = {"phone": mask(entry.phone), "reason": entry.reason, "created_at": entry.created_at}
            dnc.remove(session, entry.phone, reason, actor=current_user.username)
            audit_request(
                session,
                audit.DNC_REMOVE,
                object_type="phone",
                object_id=shown["phone"],
                detail={"reason": reason, "was": shown["reason"]},
            )
    except dnc.DncError as exc:
        body = render_template("office/dnc_remove.html", ref=ref, entry=shown, errors={exc.field or "form": str(exc)})
        return body, 400
    flash(gettext("%(phone)s 已移出免打扰名单。", phone=shown["phone"]), "success")
    return redirect(url_for("office.dnc_list"))
