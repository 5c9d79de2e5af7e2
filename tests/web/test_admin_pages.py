"""The admin pages: users (filters, pagination, add, disable, new password) and the audit log (filters, pages)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from campaigns import audit
from campaigns.clock import set_clock_file
from campaigns.models import AuditEntry, User
from tests.web.conftest import PASSWORD, add_user, sign_in


@pytest.fixture
def admin(app, people):
    client = app.test_client()
    sign_in(client, "admin")
    return client


def usernames(html: str) -> list[str]:
    return re.findall(r"<tr(?: class=\"disabled\")?>\s*<td>([^<]+)</td>", html)


def test_the_users_page_lists_users_with_their_roles_and_cadres(admin, people) -> None:
    html = admin.get("/admin/users").get_data(as_text=True)

    assert usernames(html) == ["admin", "chen", "jiwei", "lin", "office1"]
    assert f"{people.lin.id} · 林一" in html and "督查" in html and "包户干部" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [("role=cadre", ["chen", "lin"]), ("q=OFF", ["office1"]), ("state=disabled", []), ("q=%25", [])],
)
def test_the_users_page_filters(admin, query, expected) -> None:
    assert usernames(admin.get(f"/admin/users?{query}").get_data(as_text=True)) == expected


def test_the_users_page_pages(admin, sessions) -> None:
    with sessions.begin() as session:
        for number in range(60):
            add_user(session, f"staff{number:02d}", "office")

    first = admin.get("/admin/users").get_data(as_text=True)
    second = admin.get("/admin/users?page=2&role=office").get_data(as_text=True)
    bad = admin.get("/admin/users?page=zero")

    assert len(usernames(first)) == 50 and "第 1 / 2 页，共 65 条" in first
    assert usernames(second) == [f"staff{n:02d}" for n in range(49, 60)]  # office1 sorts before staff00
    assert 'href="/admin/users?page=1&amp;role=office"' in second  # the filter is kept
    assert bad.status_code == 400 and "page" in bad.get_data(as_text=True)


def test_adding_a_user(admin, people, sessions) -> None:
    response = admin.post(
        "/admin/users",
        data={"username": "Wang", "role": "cadre", "cadre_id": str(people.chen.id), "password": PASSWORD,
              "password2": PASSWORD},
    )

    assert response.status_code == 302
    assert "用户 wang 已添加" in admin.get(response.headers["Location"]).get_data(as_text=True)
    with sessions() as session:
        wang = session.scalar(select(User).where(User.username == "wang"))
        assert (wang.role.value, wang.cadre_id) == ("cadre", people.chen.id)


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"username": "office1"}, "username", "已被使用"),
        ({"username": "a"}, "username", "2 至 50"),
        ({"role": "cadre"}, "cadre_id", "包户干部账号必须指定关联的干部"),
        ({"cadre_id": "abc"}, "cadre_id", "干部编号必须是数字"),
        ({"password": "short", "password2": "short"}, "password", "至少 10 个字符"),
        ({"password2": "something else!!"}, "password2", "两次输入的密码不一致"),
        ({"role": "root"}, "role", "must be one of admin, office"),
    ],
)
def test_a_bad_new_user_is_shown_beside_the_field(admin, sessions, form, field, message) -> None:
    data = {"username": "newbie", "role": "office", "cadre_id": "", "password": PASSWORD, "password2": PASSWORD}
    data.update(form)

    response = admin.post("/admin/users", data=data)

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(rf'<p class="field-error" id="{field}-error">[^<]*{re.escape(message)}', html), html
    assert f'value="{data["username"]}"' in html  # what was typed is kept
    with sessions() as session:
        assert session.scalar(select(User).where(User.username == "newbie")) is None


def test_an_admin_cannot_disable_themselves(admin, people, sessions) -> None:
    response = admin.post(f"/admin/users/{people.admin.id}/disable")

    assert response.status_code == 302
    assert "不能停用自己的账号" in admin.get("/admin/users").get_data(as_text=True)
    with sessions() as session:
        assert not session.get(User, people.admin.id).disabled


def test_unknown_users_are_404(admin) -> None:
    assert admin.post("/admin/users/999/disable").status_code == 404
    new_password = {"password": PASSWORD, "password2": PASSWORD}
    assert admin.post("/admin/users/999/password", data=new_password).status_code == 404


def test_a_weak_new_password_is_refused_and_nothing_changes(admin, people, sessions) -> None:
    response = admin.post(f"/admin/users/{people.office.id}/password", data={"password": "short", "password2": "short"})

    assert "至少 10 个字符" in admin.get(response.headers["Location"]).get_data(as_text=True)
    with sessions() as session:
        assert session.get(User, people.office.id).session_epoch == 1


# --- the audit page -------------------------------------------------------------------------------------------


@pytest.fixture
def logged(sessions, tmp_path, monkeypatch):
    """Sixty entries by two users over two days (08:00-08:29 UTC, 16:00-16:29 Shanghai), then the admin's
    own sign-in (the admin fixture, after this one)."""
    clock = tmp_path / "clock"
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))
    with sessions.begin() as session:
        for number in range(60):
            set_clock_file(clock, datetime(2026, 5, 1 + number // 30, 8, number % 30, tzinfo=UTC))
            who, action = ("lin", audit.PHONES_VIEW) if number % 2 else ("office1", audit.EXPORT)
            audit.record(session, who, action, object_type="round", object_id=number, detail={"n": number})
    set_clock_file(clock, datetime(2026, 5, 3, 2, 0, tzinfo=UTC))


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="action-[^"]+">', html)


def test_the_audit_page_pages_newest_first(logged, admin) -> None:
    first = admin.get("/admin/audit").get_data(as_text=True)

    assert len(rows(first)) == 50 and "共 61 条" in first
    assert first.index("admin") < first.index("2026年5月2日 16:29")  # the sign-in today, then the newest entry
    assert "查看完整号码" in first and "n=59" in first


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("user=lin", 30),
        ("action=export", 30),
        ("user=lin&action=export", 0),
        ("since=2026-05-02&until=2026-05-02", 30),  # local days: 16:00-16:29 Shanghai on 5月2日
        ("until=2026-05-01", 30),
    ],
)
def test_the_audit_page_filters(logged, admin, query, count) -> None:
    html = admin.get(f"/admin/audit?{query}").get_data(as_text=True)

    assert f"共 {count} 条" in html


@pytest.mark.parametrize("query", ["since=May", "action=drop.tables"])
def test_a_bad_audit_filter_says_so(logged, admin, query) -> None:
    response = admin.get(f"/admin/audit?{query}")

    assert response.status_code == 400
    assert 'class="field-error"' in response.get_data(as_text=True)


def test_the_audit_page_in_english(logged, admin) -> None:
    html = admin.get("/admin/audit?lang=en&user=lin").get_data(as_text=True)

    assert "Audit log" in html and "Full phone numbers viewed" in html and "2026-05-02 16:29" in html
    assert admin.get("/admin/audit").get_data(as_text=True).count("Audit log") >= 1  # remembered in a cookie


def test_the_audit_log_is_not_written_by_reading_it(logged, admin, sessions) -> None:
    with sessions() as session:
        before = session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()))
    admin.get("/admin/audit")
    with sessions() as session:
        assert session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc())) == before
