"""The roster pages: upload with a preview and a confirmation (the CLI's all-or-nothing rules), the lists, the
do-not-call list."""

from __future__ import annotations

import io
import os
import re
import time

import openpyxl
import pytest
from sqlalchemy import func, select

from campaigns import audit
from campaigns.models import AuditEntry, Cadre, DoNotCall, Household, Village
from tests.factories import make_cadre, make_household, make_village
from tests.web.conftest import form_token, sign_in
from web.office import uploads

HEADER = "村,户主,电话,包户干部,干部电话\n"
GOOD_ROWS = (
    "东山村,张三,13812345678,林一,13900000011\n"
    "东山村,李四,13812345679,林一,13900000011\n"
    "西溪村,王五,0593-1234567,陈二,13900000012\n"
)


@pytest.fixture(autouse=True)
def upload_folder(tmp_path, monkeypatch):
    """Kept uploads go to this test's own folder (the module reads the root at each call)."""
    monkeypatch.setattr(uploads, "upload_root", lambda: tmp_path / "uploads")
    return tmp_path / "uploads"


@pytest.fixture
def office(app, people):
    client = app.test_client()
    assert sign_in(client, "office1").status_code == 302
    return client


def upload(client, data: bytes, name: str = "名单.csv"):
    return client.post("/roster/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def token_of(html: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', html)
    assert match, "no confirmation form"
    return match.group(1)


def households(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Household))


def audit_actions(sessions, action: str) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# --- upload -----------------------------------------------------------------------------------------------


def test_a_gbk_file_with_one_bad_row_shows_that_row_and_imports_nothing(office, sessions) -> None:
    data = (HEADER + GOOD_ROWS + "西溪村,赵六,12345,陈二,13900000012\n").encode("gbk")

    response = upload(office, data)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    errors = re.findall(r'<tr class="row-error" data-line="(\d+)">(.*?)</tr>', html, re.DOTALL)
    assert [line for line, _ in errors] == ["5"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", errors[0][1], re.DOTALL)
    assert cells[0] == "5" and cells[1] == "电话" and "12345" in cells[2] and "号码" in cells[3]
    assert 'id="roster-confirm"' not in html  # nothing to confirm
    assert households(sessions) == 0
    assert audit_actions(sessions, audit.ROSTER_IMPORT) == []


def test_a_good_file_is_previewed_then_imported_and_audited(office, sessions) -> None:
    preview = upload(office, (HEADER + GOOD_ROWS).encode("gbk"))

    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and 'id="roster-confirm"' in html
    assert re.search(r'data-field="created">3<', html) and re.search(r'data-field="villages_created">2<', html)
    assert households(sessions) == 0  # the preview writes nothing
    kept = list(uploads.upload_root().glob(f"{token_of(html)}/*"))
    assert [path.name for path in kept] == ["名单.csv"]

    confirmed = office.post("/roster/import", data={"token": token_of(html)})

    assert confirmed.status_code == 302 and confirmed.headers["Location"] == "/roster"
    assert households(sessions) == 3
    assert "新增 3 户" in office.get("/roster").get_data(as_text=True)
    entries = audit_actions(sessions, audit.ROSTER_IMPORT)
    assert len(entries) == 1 and entries[0].username == "office1" and entries[0].object_id == "名单.csv"
    assert entries[0].detail["created"] == 3
    assert not (uploads.upload_root() / token_of(html)).exists()  # the kept file is gone
    again = office.post("/roster/import", data={"token": token_of(html)})
    assert again.status_code == 302 and households(sessions) == 3  # nothing to import twice
    assert len(audit_actions(sessions, audit.ROSTER_IMPORT)) == 1


def test_the_same_file_again_changes_nothing(office, sessions) -> None:
    first = upload(office, (HEADER + GOOD_ROWS).encode("utf-8"))
    office.post("/roster/import", data={"token": token_of(first.get_data(as_text=True))})

    second = upload(office, (HEADER + GOOD_ROWS).encode("utf-8")).get_data(as_text=True)

    assert re.search(r'data-field="created">0<', second) and re.search(r'data-field="unchanged">3<', second)


def test_an_xlsx_roster_is_previewed_and_imported(office, sessions) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["village", "household", "phone", "cadre"])
    sheet.append(["北岭村", "孙七", 13712345678, "周九"])
    sheet.append(["北岭村", "钱八", "137 1234 5679", "周九"])
    data = io.BytesIO()
    book.save(data)

    preview = upload(office, data.getvalue(), "roster.xlsx").get_data(as_text=True)
    office.post("/roster/import", data={"token": token_of(preview)})

    with sessions() as session:
        assert sorted(session.scalars(select(Household.phone))) == ["+8613712345678", "+8613712345679"]
        assert "周九" in session.scalars(select(Cadre.name)).all()


def test_an_xlsx_with_a_bad_row_names_it(office, sessions) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["村", "电话", "包户干部"])
    sheet.append(["北岭村", 13712345678, "周九"])
    sheet.append(["", 13712345679, "周九"])
    data = io.BytesIO()
    book.save(data)

    html = upload(office, data.getvalue(), "roster.xlsx").get_data(as_text=True)

    assert re.findall(r'<tr class="row-error" data-line="(\d+)">', html) == ["3"]
    assert "村名为空" in html
    assert households(sessions) == 0


def test_another_users_preview_cannot_be_confirmed(app, office, people, sessions) -> None:
    preview = upload(office, (HEADER + GOOD_ROWS).encode("utf-8")).get_data(as_text=True)
    admin = app.test_client()
    sign_in(admin, "admin")

    stolen = admin.post("/roster/import", data={"token": token_of(preview)})

    assert stolen.status_code == 302 and households(sessions) == 0
    assert "预览已过期" in admin.get("/roster").get_data(as_text=True)


def test_discarding_a_preview_deletes_the_kept_file(office, sessions) -> None:
    preview = upload(office, (HEADER + GOOD_ROWS).encode("utf-8")).get_data(as_text=True)
    token = token_of(preview)

    office.post("/roster/discard")

    assert not (uploads.upload_root() / token).exists()
    assert office.post("/roster/import", data={"token": token}).status_code == 302
    assert households(sessions) == 0


def test_stale_kept_uploads_are_swept(upload_folder) -> None:
    old, fresh = upload_folder / ("a" * 32), upload_folder / ("b" * 32)
    old.mkdir(parents=True)
    fresh.mkdir()

    os.utime(old, (time.time() - uploads.MAX_AGE - 10,) * 2)

    assert uploads.sweep() == 1
    assert not old.exists() and fresh.exists()


def test_an_upload_without_the_csrf_token_is_refused(app, people, sessions) -> None:
    client = app.test_client()
    sign_in(client, "office1")
    del client.environ_base["HTTP_X_CSRFTOKEN"]  # as a form from another site would come

    response = upload(client, (HEADER + GOOD_ROWS).encode("utf-8"))

    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert households(sessions) == 0


def test_a_file_over_the_size_limit_gets_a_chinese_413_page(make_app, people) -> None:
    app = make_app(max_upload_mb=1)
    client = app.test_client()
    sign_in(client, "office1")
    token = form_token(client, "/roster")

    boundary = "sanlvboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        ).encode()
        + b"x" * (1024 * 1024 + 10)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    # Written out: the test client would spool a form this size to a temporary file it then leaves open.
    response = client.post("/roster/upload", data=body, content_type=f"multipart/form-data; boundary={boundary}")

    assert response.status_code == 413
    assert "文件太大" in response.get_data(as_text=True) and "超过了 1 MB 的上限" in response.get_data(as_text=True)


def test_a_roster_over_the_row_limit_is_refused_naming_the_limit(make_app, people, sessions) -> None:
    client = make_app(roster_max_rows=2).test_client()
    assert sign_in(client, "office1").status_code == 302

    response = upload(client, (HEADER + GOOD_ROWS).encode("utf-8"))

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "数据行超过上限 2 行" in page and "SANLV_ROSTER_MAX_ROWS" in page
    assert 'name="token"' not in page  # nothing to confirm
    assert households(sessions) == 0


def test_a_file_of_no_roster_format_is_refused_with_a_reason(office, sessions) -> None:
    html = upload(office, b"%PDF-1.4 ...", "名单.pdf").get_data(as_text=True)

    assert "不支持的文件类型" in html and households(sessions) == 0


# --- lists ------------------------------------------------------------------------------------------------


@pytest.fixture
def roster(sessions):
    with sessions.begin() as session:
        east, west = make_village(session, name="东山村"), make_village(session, name="西溪村")
        lin = make_cadre(session, name="林小一", phone="+8613900000021")
        for number in range(60):
            make_household(session, village=east, cadre=lin, phone=f"+86138{number:08d}", name=f"东{number:02d}")
        make_household(session, village=west, cadre=lin, phone="+8613855551234", name="王小明")
        return {"east": east.id, "west": west.id, "lin": lin.id}


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr>\s*<td class="num">(\d+)</td>', html)]


def test_households_are_paged_by_key_with_masked_numbers(office, roster) -> None:
    first = office.get("/roster/households").get_data(as_text=True)

    ids = row_ids(first)
    assert len(ids) == 50 and ids == sorted(ids)
    assert "共 61 户" in first
    assert "138****0000" in first and "+8613800000000" not in first and "13800000000" not in first
    after = re.search(r'href="(/roster/households\?after=\d+)"', first).group(1)
    second = office.get(after).get_data(as_text=True)
    assert row_ids(second) == sorted(set(range(min(ids), min(ids) + 61)) - set(ids))
    back = re.search(r'href="(/roster/households\?before=\d+)"', second).group(1)
    assert row_ids(office.get(back).get_data(as_text=True)) == ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [("phone=1234", ["王小明"]), ("q=小明", ["王小明"]), ("village={west}", ["王小明"]), ("phone=99999", [])],
)
def test_households_are_searched_by_village_name_and_number_suffix(office, roster, query, expected) -> None:
    html = office.get("/roster/households?" + query.format(**roster)).get_data(as_text=True)

    names = re.findall(r'<td class="phone">[^<]*</td>', html)
    assert len(names) == len(expected)
    for name in expected:
        assert name in html


def test_a_bad_page_key_is_a_400(office, roster) -> None:
    assert office.get("/roster/households?after=abc").status_code == 400


def test_villages_and_cadres_are_listed_with_their_households(office, roster) -> None:
    villages = office.get("/roster/villages").get_data(as_text=True)
    cadres = office.get("/roster/cadres?q=林小").get_data(as_text=True)

    assert re.search(r"东山村</td><td class=\"num\"><a [^>]*>60</a>", villages)
    assert "139****0021" in cadres and ">61</a>" in cadres and "13900000021" not in cadres


# --- do-not-call --------------------------------------------------------------------------------------------


def test_adding_a_number_to_the_do_not_call_list(office, sessions) -> None:
    response = office.post("/roster/dnc", data={"phone": "138 1234 5678", "reason": "居民来电要求"})

    assert response.status_code == 302
    with sessions() as session:
        entry = session.scalar(select(DoNotCall).filter_by(phone="+8613812345678"))
        assert entry is not None and entry.reason == "居民来电要求"
    listed = office.get("/roster/dnc").get_data(as_text=True)
    assert "138****5678" in listed and "13812345678" not in listed
    [entry] = audit_actions(sessions, audit.DNC_ADD)
    assert entry.object_id == "138****5678" and entry.detail == {"reason": "居民来电要求"}


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"phone": "12345", "reason": "x"}, "phone", "号码"),
        ({"phone": "13812345678", "reason": " "}, "reason", "请填写原因"),
    ],
)
def test_a_bad_do_not_call_entry_is_refused_beside_its_field(office, sessions, form, field, message) -> None:
    response = office.post("/roster/dnc", data=form)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(rf'<p class="field-error" id="{field}-error">[^<]*{message}', html)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DoNotCall)) == 0


def test_removing_a_number_asks_for_a_reason_and_is_audited(office, sessions) -> None:
    office.post("/roster/dnc", data={"phone": "13812345678", "reason": "按了9"})
    listed = office.get("/roster/dnc").get_data(as_text=True)
    confirm_url = re.search(r'href="(/roster/dnc/[0-9a-f]{24}/remove)"', listed).group(1)

    confirm = office.get(confirm_url).get_data(as_text=True)
    without_reason = office.post(confirm_url, data={"reason": ""})
    removed = office.post(confirm_url, data={"reason": "居民愿意参加"})

    assert "138****5678" in confirm and "按了9" in confirm and "data-confirm" in confirm
    assert without_reason.status_code == 400 and "请填写原因" in without_reason.get_data(as_text=True)
    assert removed.status_code == 302
    with sessions() as session:
        assert session.scalar(select(DoNotCall).filter_by(phone="+8613812345678")) is None
    [entry] = audit_actions(sessions, audit.DNC_REMOVE)
    assert entry.detail == {"reason": "居民愿意参加", "was": "按了9"}
    assert office.get(confirm_url).status_code == 404


def test_a_made_up_removal_link_is_a_404(office, sessions) -> None:
    office.post("/roster/dnc", data={"phone": "13812345678", "reason": "按了9"})

    assert office.get("/roster/dnc/5678" + "0" * 20 + "/remove").status_code == 404
    assert office.post("/roster/dnc/5678" + "0" * 20 + "/remove", data={"reason": "x"}).status_code == 404
    with sessions() as session:
        assert session.scalar(select(DoNotCall).filter_by(phone="+8613812345678")) is not None


def test_the_roster_page_counts_everything(office, roster, sessions) -> None:
    html = office.get("/roster").get_data(as_text=True)

    assert "<strong>2</strong> 个村" in html and "<strong>61</strong> 户" in html
    assert 'id="roster-upload"' in html and 'name="file"' in html
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Village)) == 2
