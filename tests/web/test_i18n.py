"""Languages: Chinese by default, English selectable; every page text translated; the committed .mo current."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

import web
from campaigns import accounts, audit, followups
from campaigns.models import RoundStatus
from tests.web.conftest import sign_in
from web import labels

WEB = Path(web.__file__).parent
PO = WEB / "translations" / "en" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def extracted_ids() -> set[str]:
    """What ``pybabel extract -F web/babel.cfg -k _l`` finds in web/ (the page text)."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(str(WEB), method_map, keywords=keywords):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_babel_cfg_is_what_the_test_extracts_with() -> None:
    text = (WEB / "babel.cfg").read_text(encoding="utf-8")

    assert "[python: **.py]" in text and "[jinja2: templates/**.html]" in text and "-k _l" in text


def test_every_page_text_has_an_english_translation() -> None:
    with PO.open("rb") as handle:
        catalog = read_po(handle)
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}

    missing = sorted(extracted_ids() - set(translated))

    assert missing == [], "translate these in web/translations/en/LC_MESSAGES/messages.po (see web/i18n.py)"
    assert len(translated) > 100


def test_the_committed_mo_is_compiled_from_the_po() -> None:
    with PO.open("rb") as handle:
        po = {m.id: m.string for m in read_po(handle) if m.id}
    with MO.open("rb") as handle:
        mo = {m.id: m.string for m in read_mo(handle) if m.id}

    assert mo == po, "run: pybabel compile -d web/translations"


def test_the_pages_labels_are_the_domains_labels() -> None:
    assert {k: str(v) for k, v in labels.ROLE_LABELS.items()} == accounts.ROLE_LABELS
    assert {k: str(v) for k, v in labels.ACTION_LABELS.items()} == audit.ACTION_LABELS
    assert {k: str(v) for k, v in labels.FOLLOWUP_STATUS_LABELS.items()} == followups.STATUS_LABELS
    assert set(labels.ROUND_STATUS_LABELS) == set(RoundStatus)


def test_chinese_by_default_english_on_request_and_remembered(app, people) -> None:
    client = app.test_client()

    chinese = client.get("/login").get_data(as_text=True)
    english = client.get("/login?lang=en")
    after = client.get("/login").get_data(as_text=True)
    back = client.get("/login?lang=zh").get_data(as_text=True)

    assert '<html lang="zh-CN">' in chinese and "用户名" in chinese and ">English</a>" in chinese
    assert "lang=en" in english.headers["Set-Cookie"] and "HttpOnly" in english.headers["Set-Cookie"]
    text = english.get_data(as_text=True)
    assert '<html lang="en">' in text and "Username" in text and "用户名" not in text and ">中文</a>" in text
    assert "Username" in after
    assert "用户名" in back


def test_an_unknown_language_falls_back_to_chinese(app) -> None:
    page = app.test_client().get("/login?lang=fr").get_data(as_text=True)

    assert "用户名" in page


@pytest.mark.parametrize(
    ("lang", "expected"), [("zh", "2026年5月3日 14:05"), ("en", "2026-05-03 14:05")]
)
def test_times_are_local_in_the_languages_format(app, lang, expected) -> None:
    from flask import render_template_string

    with app.test_request_context(f"/?lang={lang}"):
        shown = render_template_string(
            "{{ t|localtime }} {{ iso|localdate }}",
            t=datetime(2026, 5, 3, 6, 5, tzinfo=UTC),
            iso="2026-05-02T17:00:00+00:00",
        )

    assert shown == expected + (" 2026年5月3日" if lang == "zh" else " 2026-05-03")


def test_a_throttled_sign_in_speaks_the_users_language(app, people) -> None:
    from tests.web.conftest import form_token

    client = app.test_client()
    for _ in range(6):
        response = client.post(
            "/login?lang=en",
            data={
                "username": "office1",
                "password": "not it at all",
                "csrf_token": form_token(client, "/login?lang=en"),
            },
        )

    assert response.status_code == 429
    assert "Too many sign-in attempts; try again in 15 minutes." in response.get_data(as_text=True)


def test_signed_in_pages_in_english(app, people) -> None:
    client = app.test_client()
    sign_in(client, "admin")

    page = client.get("/admin/users?lang=en").get_data(as_text=True)

    assert "Users" in page and "Audit log" in page and "Sign out" in page and "admin · Admin" in page
