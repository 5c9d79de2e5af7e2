"""Screenshots of the supervisor and cadre pages for docs/screenshots/ (not a test: run it by hand).

    sanlv demo --dir /tmp/demo
    python -m tests.web.supervisor_cadre_screenshots /tmp/demo/sanlv-demo.db docs/screenshots

DEMO_DB is the database ``sanlv demo --dir DIR`` leaves (a whole round on a synthetic roster). A copy of it gets
a supervisor and a cadre user; four of the round's follow-ups are put on that cadre's list (one asked for ten
days ago, so overdue; one visited with a note; one resolved). The app is served on loopback and Debian's
chromium (``/usr/bin/chromium`` driven by Playwright; no browser is downloaded) photographs the supervisor's
page at 1280 px wide and the cadre's pages on a 360 px phone.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import select, update

from campaigns import accounts, clock
from campaigns.followups import mark_followup
from campaigns.models import FollowUp, Household, Round, RoundStatus
from campaigns.runtime import Runtime
from campaigns.settings import Settings
from tests.support.browser import DESKTOP, PHONE, launch
from tests.web.office_screenshots import shoot_from_demo_copy

PASSWORD = "screenshot pass 2026"


def seed(settings: Settings) -> dict[str, int]:
    """Users and a cadre's list worth showing; returns the round's and the shown item's ids."""
    runtime = Runtime(settings)
    now = clock.now()
    with runtime.sessions.begin() as session:
        round_id = session.scalar(select(Round.id).where(Round.status == RoundStatus.COMPLETED).order_by(Round.id))
        items = session.scalars(select(FollowUp).where(FollowUp.round_id == round_id).order_by(FollowUp.id)).all()
        if len(items) < 4:
            raise SystemExit(f"the demo round has {len(items)} follow-ups; run a bigger demo (--households 200)")
        mine = items[:4]
        cadre_id = mine[0].cadre_id
        for item in mine:  # one cadre's list: move the households too, as a roster re-import would
            session.execute(update(Household).where(Household.id == item.household_id).values(cadre_id=cadre_id))
            item.cadre_id = cadre_id
        mine[0].created_at = now - timedelta(days=10)
        mine[1].created_at = now - timedelta(days=2)
        mine[2].created_at = now - timedelta(days=3)
        mine[3].created_at = now - timedelta(days=4)
        session.flush()
        mark_followup(session, mine[2].id, "visited", "已上门，群众担心电信诈骗，已讲解防骗知识。", actor="cadre")
        mark_followup(session, mine[3].id, "visited", "已上门。", actor="cadre")
        mark_followup(session, mine[3].id, "resolved", "邻里纠纷已由村调委会调解。", actor="cadre")
        accounts.create_user(session, "jiwei", "supervisor", PASSWORD)
        accounts.create_user(session, "cadre", "cadre", PASSWORD, cadre_id=cadre_id)
        shown = mine[2].id
    runtime.dispose()
    return {"round": round_id, "item": shown}


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def shoot(base: str, out: Path, ids: dict[str, int]) -> None:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        desk = browser.new_context(**DESKTOP, locale="zh-CN").new_page()
        sign_in(desk, base, "jiwei")
        for name, path in (
            ("supervisor.png", f"/supervisor?round={ids['round']}"),
            ("supervisor-followups.png", f"/supervisor/rounds/{ids['round']}/followups"),
        ):
            desk.goto(base + path)
            desk.wait_for_load_state("networkidle")
            desk.screenshot(path=str(out / name), full_page=False)
            print(out / name)
        phone = browser.new_context(**PHONE, locale="zh-CN").new_page()
        sign_in(phone, base, "cadre")
        for name, path in (("cadre.png", "/my"), ("cadre-item.png", f"/my/{ids['item']}")):
            phone.goto(base + path)
            phone.wait_for_load_state("networkidle")
            phone.screenshot(path=str(out / name), full_page=True)
            print(out / name)
        browser.close()


def main(demo_db: str, out_dir: str) -> None:
    shoot_from_demo_copy(demo_db, out_dir, seed, shoot)


if __name__ == "__main__":
    main(*sys.argv[1:3])
