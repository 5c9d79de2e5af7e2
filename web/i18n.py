"""Language and time on the pages: Simplified Chinese by default, English selectable (Flask-Babel).

Page text is written in Chinese in the templates and code (``{{ _("登录") }}``, ``gettext("...")``): the
message ids *are* the Chinese text, so Chinese needs no catalogue and can never show a missing translation.
English comes from ``web/translations/en/LC_MESSAGES/messages.po``, compiled to the ``.mo`` beside it, which is
committed (no build step at install or test time). After adding or changing text::

    pybabel extract -F web/babel.cfg -k _l -o web/translations/messages.pot --no-location --omit-header web
    pybabel update -i web/translations/messages.pot -d web/translations --no-fuzzy-matching
    # translate the new entries in web/translations/en/LC_MESSAGES/messages.po, then
    pybabel compile -d web/translations

``tests/web/test_i18n.py`` fails while any text lacks an English translation or the ``.mo`` is stale.

The language is chosen with ``?lang=en`` / ``?lang=zh`` (remembered in a ``lang`` cookie; the layout has a
switcher). Times are shown in SANLV_TIMEZONE: ``{{ moment|localtime }}`` gives ``2026年5月3日 14:05`` in
Chinese, ``2026-05-03 14:05`` in English; ``{{ moment|localdate }}`` the date alone.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask, request
from flask_babel import Babel, format_datetime, get_locale

from campaigns.settings import Settings

LANGUAGES = {"zh": "zh_Hans_CN", "en": "en"}  # the ?lang= value -> the Babel locale
DEFAULT_LANGUAGE = "zh"
LANG_COOKIE = "lang"
TIME_PATTERNS = {"zh": ("yyyy年M月d日 HH:mm", "yyyy年M月d日"), "en": ("yyyy-MM-dd HH:mm", "yyyy-MM-dd")}

babel = Babel()


def current_language() -> str:
    """``zh`` or ``en``: the ``lang`` query parameter, else the ``lang`` cookie, else Chinese."""
    for candidate in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE


def localtime(moment: datetime | str | None) -> str:
    """An aware datetime (or the ISO text the reports carry) as local time to the minute."""
    return _format(moment, 0)


def localdate(moment: datetime | str | None) -> str:
    return _format(moment, 1)


def _format(moment: datetime | str | None, which: int) -> str:
    if not moment:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return format_datetime(moment, TIME_PATTERNS[_language_of_locale()][which])


def _language_of_locale() -> str:
    return "en" if str(get_locale()).startswith("en") else "zh"


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(BABEL_DEFAULT_LOCALE=LANGUAGES[DEFAULT_LANGUAGE], BABEL_DEFAULT_TIMEZONE=settings.timezone)
    babel.init_app(app, locale_selector=lambda: LANGUAGES[current_language()])
    app.add_template_filter(localtime, "localtime")
    app.add_template_filter(localdate, "localdate")

    @app.context_processor
    def _language():
        return {"language": current_language()}

    @app.after_request
    def _remember_language(response):
        chosen = request.args.get("lang")
        if chosen in LANGUAGES and request.cookies.get(LANG_COOKIE) != chosen:
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, samesite="Lax", httponly=True)
        return response
