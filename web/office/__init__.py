"""The office pages (admin and office staff; supervisors read the reports): home, roster, questionnaires,
rounds with their live progress, reports.

Each handler parses its input, calls one domain or report function, and renders a template under
``templates/office/``; every change is audited in the transaction that makes it. The modules:

- :mod:`web.office.home`: the office home page (``/``, through ``web.pages``);
- :mod:`web.office.roster`: roster upload (preview, then import), villages, households, cadres, do-not-call;
- :mod:`web.office.questionnaires`: prompts, recordings (player, upload), an office's own questionnaire file;
- :mod:`web.office.rounds`: the round list, the create form, launch/pause/resume/cancel, the progress page and
  its JSON;
- :mod:`web.office.reports`: a round's report page, the comparison of two rounds, its follow-up list.
"""

from __future__ import annotations

from flask import Blueprint
from flask_babel import lazy_gettext as _l

from reports.format import percent, target_text
from web.layout import nav_entry

bp = Blueprint("office", __name__)

WRITERS = ("admin", "office")
READERS = ("admin", "office", "supervisor")


@bp.app_context_processor
def _report_text():
    # Figures read as the reports print them: rounded down (a rate just under its target never reads as met).
    return {"report_percent": percent, "report_target": target_text}


nav_entry("office.rounds", _l("调查"), order=30)
nav_entry("office.roster", _l("名单"), order=40)
nav_entry("office.questionnaires", _l("问卷与录音"), order=50)

from web.office import home, questionnaires, reports, roster, rounds  # noqa: F401  (they add bp's routes)
