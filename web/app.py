"""The Flask application factory: a short list of registrations."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from campaigns.runtime import Runtime, get_runtime
from ivr.views import bp as ivr_bp
from web.api import bp as api_bp
from web.wiring import wire


def create_app(runtime: Runtime | None = None) -> Flask:
    """Build the app. ``runtime`` (settings, engine, sessions) defaults to the process runtime."""
    runtime = runtime or get_runtime()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = runtime.settings.secret_key or "sanlv-demo-only"
    app.extensions["sanlv"] = runtime
    wire()

    app.register_blueprint(ivr_bp)
    app.register_blueprint(api_bp)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Webhook errors get a short plain body: Twilio logs it; residents never hear it.
        return jsonify(error=exc.name, description=exc.description), exc.code

    logging.getLogger("sanlv").setLevel(logging.INFO)
    return app
