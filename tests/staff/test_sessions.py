"""A signed-out session is over on the server too, and `next` never leads off the site."""

import pytest

from tests.helpers import Auth, csrf_token_from


def test_a_copied_session_cookie_is_refused_after_logout(app, make_staff):
    account = make_staff("admin")
    auth = Auth(app.test_client())
    auth.login(account)
    assert auth.client.get("/console/").status_code == 200
    copied = auth.client.get_cookie("lifeline_session").value
    assert auth.logout().status_code == 302
    replay = app.test_client()
    replay.set_cookie("lifeline_session", copied)
    for path in ("/console/", "/console/staff", "/console/audit"):
        answer = replay.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith(
            "/login?next="), path
    # The account itself signs in again as usual.
    assert Auth(app.test_client()).login(account).status_code == 302


OFF_SITE = ["//evil.example", "//evil.example/steal", "/\\evil.example", "\\\\evil.example",
            "/\\/evil.example", "https://evil.example", "https:evil.example",
            "javascript:alert(1)", "/\t/evil.example", "/\r\n/evil.example",
            "/\r\nSet-Cookie: lifeline_session=stolen", "\r\nLocation: https://evil.example",
            " //evil.example", "/\x0b/evil.example", "/console/\u0085x", "/" + "a" * 5000]


@pytest.mark.parametrize("target", OFF_SITE)
def test_after_sign_in_a_next_off_the_site_or_broken_leads_to_the_console(
        app, make_staff, target):
    auth = Auth(app.test_client())
    answer = auth.login(make_staff("support"), next=target)
    assert answer.status_code == 302, answer.status_code
    assert answer.headers["Location"] == "/console/"


def test_a_same_site_next_is_still_followed(app, make_staff):
    for target, location in (("/console/staff", "/console/staff"),
                             ("/console/accounts?q=café", "/console/accounts?q=caf%C3%A9")):
        answer = Auth(app.test_client()).login(make_staff("admin"), next=target)
        assert answer.headers["Location"] == location


QUERY_SPELLINGS = ["%0d%0aSet-Cookie:%20x=y", "/%0d%0aSet-Cookie:%20x=y", "%2F%2Fevil.example",
                   "/%5Cevil.example", "https%3A%2F%2Fevil.example", "/%09/evil.example",
                   "//evil.example", "/%E2%80%A8//evil.example", "%00"]


@pytest.mark.parametrize("spelling", QUERY_SPELLINGS)
def test_the_login_page_never_carries_an_off_site_next(client, spelling):
    page = client.get(f"/login?next={spelling}")
    assert page.status_code in (200, 400), page.status_code
    html = page.get_data(as_text=True)
    assert "evil.example" not in html and "Set-Cookie" not in html
    if page.status_code == 200:
        csrf_token_from(html)  # the form is there
