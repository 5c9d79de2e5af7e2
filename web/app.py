"""The Flask application factory: a short list of registrations.

What each registration brings (details in each module's docstring):

- :mod:`web.security`: the lock. Every view declares who may reach it (``@roles`` / ``@public``); one guard
  refuses anything undeclared; sessions, sign-in throttling, CSRF, API tokens, ``/login`` and ``/logout``.
- :mod:`web.i18n`: Simplified Chinese by default, English selectable; local times.
- :mod:`web.layout`: the menu, pagination and template helpers the pages share (``templates/base.html``).
- Blueprints: the Twilio webhooks (``ivr``), the JSON API (``web.api``), the home pages (``web.pages``), the
  admin pages (``web.admin``), the office pages (``web.office``).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template
from flask_babel import gettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from campaigns.runtime import Runtime, get_runtime
from campaigns.settings import SettingsError
from ivr.notices import bp as ivr_notices_bp
from ivr.views import bp as ivr_bp
from web import i18n, layout, monitoring, security
from web.admin import bp as admin_bp
from web.api import bp as api_bp
from web.cadre import bp as cadre_bp
from web.ids import IdConverter
from web.notices import bp as notices_bp
from web.office import bp as office_bp
from web.pages import bp as pages_bp
from web.security.proxy import TrustedProxyFix
from web.supervisor import bp as supervisor_bp
from web.wiring import wire

# Open without signing in, and why. Any other route needs a signed-in user with an allowed role.
TWILIO_WEBHOOKS = ("ivr.voice", "ivr.gather", "ivr.status", "ivr.inbound")
NOTICE_WEBHOOKS = tuple(  # notices: SMS status and inbound SMS, the voice notice's call
    f"ivr_notices.{name}"
    for name in ("sms_status", "sms_inbound", "notice_voice", "notice_heard", "notice_key", "notice_status")
)
TWILIO_MEDIA = ("ivr.recording",)


def create_app(runtime: Runtime | None = None) -> Flask:
    """Build the app. ``runtime`` (settings, engine, sessions) defaults to the process runtime.

    Raises:
        SettingsError: no SECRET_KEY (``sanlv web`` also refuses a weak one before it gets here).
    """
    runtime = runtime or get_runtime()
    settings = runtime.settings
    if not settings.secret_key:
        raise SettingsError("SECRET_KEY is required to serve the web app (a random string of 32+ characters)")
    app = Flask(__name__)
    app.url_map.converters["int"] = IdConverter  # before any route: an id too big for the database is a 404
    app.config.update(SECRET_KEY=settings.secret_key, MAX_CONTENT_LENGTH=settings.max_content_length)
    app.extensions["sanlv"] = runtime
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    wire()

    i18n.init_app(app, settings)
    security.init_app(app, settings)
    layout.init_app(app)
    monitoring.init_app(app)
    app.register_blueprint(ivr_bp)
    app.register_blueprint(ivr_notices_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(office_bp)
    app.register_blueprint(notices_bp)
    app.register_blueprint(supervisor_bp)
    app.register_blueprint(cadre_bp)

    security.declare_public(app, TWILIO_WEBHOOKS, "Twilio's webhooks: every request is signature-checked", csrf=False)
    security.declare_public(app, NOTICE_WEBHOOKS, "Twilio's notice webhooks: every request is signature-checked",
                            csrf=False)
    security.declare_public(app, TWILIO_MEDIA, "recorded prompts that Twilio fetches, unsigned, for <Play>")
    security.declare_public(app, ["static"], "the pages' stylesheet, script and images")

    @app.get("/healthz")
    @security.public("health check for the process supervisor and load balancer")
    def healthz():
        return jsonify(status="ok")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if security.is_api_request():
            # Webhook errors get a short plain body: Twilio logs it; residents never hear it.
            description = exc.description
            if isinstance(exc, CSRFError):
                description = f"缺少或错误的 CSRF 令牌 / the CSRF token is missing or wrong: {exc.description}"
            return jsonify(error=exc.name, description=description), exc.code
        description = exc.description
        if isinstance(exc, CSRFError):
            description = gettext("页面已过期或缺少安全令牌（CSRF），请返回、刷新页面后重试。")
        elif exc.code == 413:
            description = gettext("上传的文件超过了 %(mb)d MB 的上限。", mb=settings.max_upload_mb)
        return render_template("error.html", code=exc.code, name=exc.name, description=description), exc.code

    logging.getLogger("sanlv").setLevel(logging.INFO)
    return app
