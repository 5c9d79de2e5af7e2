"""The JSON API for the office dashboard, cadres and supervisors (reports, follow-ups)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")
