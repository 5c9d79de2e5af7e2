"""``/api/roster/households``: the roster household page's data as JSON, paged by key, numbers masked."""

from __future__ import annotations

from tests.factories import make_cadre, make_household, make_village


def test_the_households_json_is_the_pages_data(client_for, township, sessions) -> None:
    with sessions.begin() as session:
        village = make_village(session, name="南村")
        cadre = make_cadre(session, name="黄三")
        for n in range(60):
            make_household(session, village=village, cadre=cadre, phone=f"+86137000000{n:02d}", name=f"户{n}")
    office = client_for(township.user("office"))

    first = office.get("/api/roster/households").get_json()
    second = office.get(f"/api/roster/households?after={first['after']}").get_json()
    found = office.get("/api/roster/households?phone=0042").get_json()
    page = office.get(f"/roster/households?after={first['after']}").get_data(as_text=True)

    assert first["total"] == 67 and len(first["items"]) == 50 and first["before"] is None
    assert len(second["items"]) == 17 and second["after"] is None
    assert all("****" in item["phone"] for item in first["items"] + second["items"])
    assert [item["name"] for item in found["items"]] == ["户42"]
    assert all(item["phone"] in page for item in second["items"])
    assert office.get("/api/roster/households?after=x").status_code == 400
    assert client_for(township.user("supervisor")).get("/api/roster/households").status_code == 403
