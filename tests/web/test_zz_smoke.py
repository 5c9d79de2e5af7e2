from tests.web.conftest import *  # noqa
def test_smoke(township, client_for):
    c = client_for(township.user("admin"))
    for url in ["/", "/roster", "/roster/villages", "/roster/households", "/roster/cadres", "/roster/dnc",
                "/questionnaires", "/questionnaires/default", "/rounds", "/rounds/new",
                f"/rounds/{township.round_id}", f"/api/rounds/{township.round_id}/progress",
                f"/rounds/{township.round_id}/report", f"/rounds/{township.round_id}/followups"]:
        r = c.get(url)
        print(url, r.status_code, len(r.data))
        assert r.status_code == 200, r.get_data(as_text=True)[-3000:]
