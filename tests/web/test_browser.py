"""The web app in a real browser (Debian's chromium through Playwright), walked as its users would:

1. an admin signs in;
2. uploads a GBK roster with one bad row and sees that row's error; uploads a good one;
3. creates and launches a round on the simulator (real ``sanlv worker`` processes, real Redis, the app over
   real HTTP) and watches it reach "completed" on the progress page;
4. opens the report and downloads the XLSX (opened and checked here);
5. a cadre signs in on a 360 px phone, sees only their own items, calls none, and marks one visited;
6. a supervisor sees that change.

Screenshots of each step are written to the test's temporary directory (``SANLV_BROWSER_SHOTS=DIR`` keeps
them in DIR instead).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select

from campaigns import accounts
from campaigns.models import Cadre, FollowUp, FollowUpStatus
from sim.residents import set_script
from tests.support.browser import DESKTOP, PHONE, launch, require_chromium
from tests.support.workers import start_workers, stop_workers
from tests.web.conftest import PASSWORD

HEADER = ["村", "户主", "电话", "包户干部", "干部电话"]
# 东村 is 林建明's, 西村 陈志强's. Three residents ask for a visit: two of 林建明's, one of 陈志强's.
ROWS = [
    ["东村", "张三", "13811110001", "林建明", "13900000001"],
    ["东村", "李四", "13811110002", "林建明", "13900000001"],
    ["东村", "王五", "13811110003", "林建明", "13900000001"],
    ["东村", "赵六", "13811110004", "林建明", "13900000001"],
    ["西村", "钱七", "13811110005", "陈志强", "13900000002"],
    ["西村", "周八", "13811110006", "陈志强", "13900000002"],
    ["西村", "吴九", "13811110007", "陈志强", "13900000002"],
    ["西村", "郑十", "13811110008", "陈志强", "13900000002"],
]
ASKS_FOR_A_VISIT = {"13811110001", "13811110002", "13811110005"}
WAIT_MS = 150_000


def write_gbk(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="gbk", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SANLV_BROWSER_SHOTS") or tmp_path / "shots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_a_round_from_roster_to_a_cadres_visit_in_a_browser(live_server, sessions, tmp_path, shots) -> None:
    require_chromium()
    base = live_server.public_base_url
    with sessions.begin() as session:
        accounts.create_user(session, "admin", "admin", PASSWORD)
        accounts.create_user(session, "jiwei", "supervisor", PASSWORD)
    # Every resident answers; the content ones decline a visit, three ask for one (the simulator's scripts).
    for _village, _head, phone, _cadre, _cadre_phone in ROWS:
        answers = {"security": "4", "concern": "2", "visit": "1"} if phone in ASKS_FOR_A_VISIT else {}
        set_script(live_server, f"+86{phone}", {"outcome": "answer", "answers": answers})
    bad = write_gbk(tmp_path / "名单-有错.csv", [*ROWS[:3], ["东村", "孙错", "12345", "林建明", ""], *ROWS[3:]])
    good = write_gbk(tmp_path / "名单.csv", ROWS)
    workers = start_workers(2, dict(os.environ), tmp_path / "workers.log")

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            office = browser.new_context(**DESKTOP, accept_downloads=True).new_page()
            office.set_default_timeout(30_000)

            # 1. The admin signs in.
            sign_in(office, base, "admin")
            assert office.url == f"{base}/"
            office.screenshot(path=shots / "1-home.png")

            # 2. A roster with a bad row: that row's line, column and reason; nothing imported. Then a good one.
            office.goto(f"{base}/roster")
            office.set_input_files("#roster-file", str(bad))
            office.click("#roster-upload button[type=submit]")
            error = office.locator('#roster-errors tr.row-error[data-line="5"]')
            expect(error).to_be_visible()
            assert "电话" in error.inner_text() and "12345" in error.inner_text()
            assert office.locator("#roster-errors tr.row-error").count() == 1
            office.screenshot(path=shots / "2-roster-error.png", full_page=True)
            office.goto(f"{base}/roster")
            office.set_input_files("#roster-file", str(good))
            office.click("#roster-upload button[type=submit]")
            expect(office.locator('[data-field="created"]')).to_have_text("8")
            office.click("#roster-confirm")
            office.wait_for_load_state()
            with sessions() as session:
                assert session.scalar(select(Cadre.id).where(Cadre.name == "林建明")) is not None

            # 3. A round on the simulator, launched, watched to the end on its progress page.
            office.goto(f"{base}/rounds/new")
            office.fill("#f-name", "浏览器测试调查")
            office.fill("#f-windows", "00:00-24:00")
            office.fill("#f-cps", "5")
            office.click("#round-create button[type=submit]")
            office.wait_for_url(re.compile(r"/rounds/\d+$"))
            round_id = int(office.url.rsplit("/", 1)[1])
            office.click("#round-launch")
            office.wait_for_load_state()
            office.wait_for_selector('#round-progress[data-status="completed"]', timeout=WAIT_MS)
            expect(office.locator("#round-status")).to_contain_text("已完成")
            office.screenshot(path=shots / "3-round-completed.png", full_page=True)

            # 4. The report, and its XLSX download opened here.
            office.goto(f"{base}/rounds/{round_id}/report")
            expect(office.locator("h1")).to_contain_text("浏览器测试调查")
            office.screenshot(path=shots / "4-report.png", full_page=True)
            with office.expect_download() as download_info:
                office.click("#download-xlsx")
            saved = tmp_path / "report.xlsx"
            download_info.value.save_as(saved)
            workbook = load_workbook(saved, read_only=True)
            rows = [row for sheet in workbook.worksheets for row in sheet.iter_rows(values_only=True)]
            workbook.close()
            total = next(row for row in rows if row and row[0] == "全镇")
            assert {"东村", "西村"} <= {row[0] for row in rows if row}
            assert total[1:3] == (8, 8)  # sampled, reached: every household answered

            # 5. A cadre on a phone: only their own items; a call link for each, none tapped; one marked visited.
            with sessions.begin() as session:
                lin_id = session.scalar(select(Cadre.id).where(Cadre.name == "林建明"))
                accounts.create_user(session, "lin", "cadre", PASSWORD, cadre_id=lin_id)
            phone = browser.new_context(**PHONE).new_page()
            phone.set_default_timeout(30_000)
            sign_in(phone, base, "lin")
            assert phone.url == f"{base}/my"
            cards = phone.locator("li.followup")
            expect(cards).to_have_count(2)
            calls = sorted(phone.locator("a.button.call").evaluate_all("links => links.map(a => a.href)"))
            assert calls == ["tel:13811110001", "tel:13811110002"]
            assert "13811110005" not in phone.content() and "重视率" not in phone.content()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the cadre page scrolls sideways on a phone: {width} px"
            call_box = phone.locator("a.button.call").first.bounding_box()
            assert call_box["height"] >= 44 and call_box["width"] >= 300  # a thumb-sized target
            phone.screenshot(path=shots / "5-cadre-list.png", full_page=True)
            first = cards.first
            item_id = int(first.get_attribute("data-item"))
            first.locator("a.button.wide").click()
            phone.fill("#f-note", "已上门，群众反映的问题已转派出所")
            phone.screenshot(path=shots / "5-cadre-item.png", full_page=True)
            phone.click('button[name="status"][value="visited"]')
            phone.wait_for_url(f"{base}/my")
            expect(phone.locator(f'li.followup[data-item="{item_id}"]')).to_have_attribute(
                "data-status", "visited"
            )
            expect(phone.locator(".flash-success")).to_contain_text("已走访")
            phone.screenshot(path=shots / "5-cadre-marked.png", full_page=True)

            # 6. The supervisor sees the change.
            supervisor = browser.new_context(**DESKTOP).new_page()
            supervisor.set_default_timeout(30_000)
            sign_in(supervisor, base, "jiwei")
            assert supervisor.url == f"{base}/supervisor"
            expect(supervisor.locator("#cadres")).to_contain_text("林建明")
            supervisor.screenshot(path=shots / "6-supervisor.png", full_page=True)
            supervisor.goto(f"{base}/supervisor/rounds/{round_id}/followups?cadre={lin_id}")
            row = supervisor.locator(f'tr[data-item="{item_id}"]')
            expect(row).to_have_attribute("data-status", "visited")
            assert "138****0001" in supervisor.content() or "138****0002" in supervisor.content()
            row.locator("a").click()
            expect(supervisor.locator("ol.history")).to_contain_text("已上门，群众反映的问题已转派出所")
            supervisor.screenshot(path=shots / "6-supervisor-item.png", full_page=True)
        finally:
            browser.close()
            stop_workers(workers)

    with sessions() as session:
        item = session.get(FollowUp, item_id)
    assert item.status is FollowUpStatus.VISITED and item.cadre_id == lin_id
